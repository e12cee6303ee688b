//! From OpenStack resources to the neutral VM model. Pure functions: the caller fetches.

use crate::wire::{Port, Server};

/// A port of the server with the network name Nova shows for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerNic {
    pub port: Port,
    /// The key of Nova's `addresses` the port appears under; `None` for a port without an IP
    /// address (Nova does not list those).
    pub network_name: Option<String>,
}

/// The server's NICs in a stable order.
///
/// The order is Nova's `addresses`, which follows the instance's network info (the order the
/// NICs were requested or attached in), grouped by network: NICs on one network keep their
/// relative order, and networks appear in the order of their first NIC. Ports Nova does not
/// list (no IP address) follow, by creation time then id. Two runs give the same order.
pub fn ordered_nics(server: &Server, ports: &[Port]) -> Vec<ServerNic> {
    let mut out: Vec<ServerNic> = Vec::new();
    for (network_name, addresses) in &server.addresses {
        for a in addresses {
            let Some(mac) = a.mac.as_deref() else {
                continue;
            };
            if out
                .iter()
                .any(|n| n.port.mac_address.eq_ignore_ascii_case(mac))
            {
                continue; // a second IP (v6) of a port already placed
            }
            if let Some(port) = ports
                .iter()
                .find(|p| p.mac_address.eq_ignore_ascii_case(mac))
            {
                out.push(ServerNic {
                    port: port.clone(),
                    network_name: Some(network_name.clone()),
                });
            }
        }
    }
    let mut rest: Vec<&Port> = ports
        .iter()
        .filter(|p| !out.iter().any(|n| n.port.id == p.id))
        .collect();
    rest.sort_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id)));
    out.extend(rest.into_iter().map(|p| ServerNic {
        port: p.clone(),
        network_name: None,
    }));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Address;

    fn port(id: &str, net: &str, mac: &str, created: &str) -> Port {
        Port {
            id: id.into(),
            network_id: net.into(),
            mac_address: mac.into(),
            device_id: "s".into(),
            device_owner: "compute:nova".into(),
            created_at: Some(created.into()),
            name: String::new(),
        }
    }
    fn addr(mac: &str, version: u8) -> Address {
        Address {
            addr: "10.0.0.1".into(),
            version: Some(version),
            mac: Some(mac.into()),
        }
    }

    #[test]
    fn order_follows_nova_addresses_grouped_by_network_then_portless_ips() {
        let server: Server = serde_json::from_value(serde_json::json!({
            "id": "s", "name": "vm", "status": "ACTIVE", "addresses": {}
        }))
        .unwrap();
        let mut server = server;
        server.addresses = vec![
            ("net-b".into(), vec![addr("fa:16:3e:00:00:02", 4)]),
            (
                "net-a".into(),
                vec![
                    addr("fa:16:3e:00:00:01", 4),
                    addr("FA:16:3E:00:00:03", 4),
                    addr("fa:16:3e:00:00:01", 6),
                ],
            ),
        ];
        // Neutron lists ports by id, which says nothing about the guest's order.
        let ports = vec![
            port("0001", "A", "fa:16:3e:00:00:03", "2026-01-01T00:00:00Z"),
            port("0002", "A", "fa:16:3e:00:00:01", "2026-01-01T00:00:00Z"),
            port("0003", "C", "fa:16:3e:00:00:09", "2026-01-01T00:00:05Z"),
            port("0004", "B", "fa:16:3e:00:00:02", "2026-01-01T00:00:00Z"),
            port("0000", "C", "fa:16:3e:00:00:08", "2026-01-01T00:00:05Z"),
        ];
        let nics = ordered_nics(&server, &ports);
        let ids: Vec<_> = nics.iter().map(|n| n.port.id.as_str()).collect();
        assert_eq!(ids, ["0004", "0002", "0001", "0000", "0003"]);
        assert_eq!(nics[0].network_name.as_deref(), Some("net-b"));
        assert_eq!(nics[3].network_name, None);
    }
}
