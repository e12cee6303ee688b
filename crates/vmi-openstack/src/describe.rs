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

/// Everything [`describe`] reads, fetched by the caller.
#[derive(Clone, Copy, Debug)]
pub struct DescribeInput<'a> {
    pub server: &'a Server,
    /// The flavor with vcpus and ram (embedded at microversion 2.47+, else fetched).
    pub flavor: &'a crate::wire::Flavor,
    /// The attached volumes.
    pub volumes: &'a [crate::wire::Volume],
    /// The image the server was booted from, when it is image-booted and still readable.
    pub boot_image: Option<&'a crate::wire::Image>,
    /// The NICs in order (from preflight).
    pub nics: &'a [vmi_core::model::Nic],
}

/// The server's disks in boot order: `(source, device, size in bytes)`.
///
/// An image-booted server's root disk comes first. Otherwise the root volume is the one
/// attached at Nova's `root_device_name` (visible to admins), else the first bootable volume by
/// device name, else the first by device name. The other volumes follow by device name
/// (`vdb` < `vdc` < … < `vdaa`).
pub fn boot_order<'a>(
    server: &Server,
    volumes: &'a [crate::wire::Volume],
) -> Vec<&'a crate::wire::Volume> {
    let device = |v: &crate::wire::Volume| {
        v.attachments
            .iter()
            .find(|a| a.server_id.as_deref() == Some(server.id.as_str()))
            .and_then(|a| a.device.clone())
            .unwrap_or_default()
    };
    let mut sorted: Vec<&crate::wire::Volume> = volumes.iter().collect();
    sorted.sort_by(|a, b| {
        let (da, db) = (device(a), device(b));
        (da.len(), da, &a.id).cmp(&(db.len(), db, &b.id))
    });
    if server.image.is_none() {
        let root = server
            .root_device_name
            .as_deref()
            .and_then(|root| sorted.iter().position(|v| device(v) == root))
            .or_else(|| sorted.iter().position(|v| v.bootable))
            .unwrap_or(0);
        if root < sorted.len() {
            let r = sorted.remove(root);
            sorted.insert(0, r);
        }
    }
    sorted
}

/// `hw_disk_bus` → KubeVirt bus. IDE has no KubeVirt equivalent: SATA is the compatible choice.
pub fn disk_bus(value: &str) -> Option<vmi_api::DiskBus> {
    match value.to_ascii_lowercase().as_str() {
        "virtio" => Some(vmi_api::DiskBus::Virtio),
        "scsi" => Some(vmi_api::DiskBus::Scsi),
        "sata" | "ide" => Some(vmi_api::DiskBus::Sata),
        "usb" => Some(vmi_api::DiskBus::Usb),
        _ => None,
    }
}

/// `hw_vif_model` → KubeVirt NIC model (`None` for models KubeVirt does not have).
pub fn nic_model(value: &str) -> Option<vmi_api::NetworkInterfaceModel> {
    use vmi_api::NetworkInterfaceModel as M;
    match value.to_ascii_lowercase().as_str() {
        "virtio" => Some(M::Virtio),
        "e1000" => Some(M::E1000),
        "e1000e" => Some(M::E1000e),
        "ne2k_pci" => Some(M::Ne2kPci),
        "pcnet" => Some(M::Pcnet),
        "rtl8139" => Some(M::Rtl8139),
        _ => None,
    }
}

/// The neutral model of the server. Image properties (`hw_firmware_type`, `os_secure_boot`,
/// `hw_tpm_model`, `hw_disk_bus`, `hw_vif_model`, `hw_cpu_*`) are read from the root volume's
/// `volume_image_metadata` first, so that a deleted or private source image does not matter,
/// then from the boot image.
pub fn describe(input: &DescribeInput<'_>) -> vmi_core::model::VmModel {
    use vmi_core::model::{BootMode, CpuTopology, Disk, DiskSource, Firmware, VmModel};
    let ordered = boot_order(input.server, input.volumes);
    let root_volume = if input.server.image.is_none() {
        ordered.first().copied()
    } else {
        None
    };
    let prop = |key: &str| -> Option<String> {
        root_volume
            .and_then(|v| v.volume_image_metadata.get(key).cloned())
            .or_else(|| {
                input
                    .boot_image
                    .and_then(|i| i.property(key))
                    .map(str::to_owned)
            })
            .filter(|v| !v.is_empty())
    };
    let spec = |key: &str| input.flavor.extra_specs.get(key).cloned();
    let num = |v: Option<String>| v.and_then(|s| s.parse::<u32>().ok());

    let bus = prop("hw_disk_bus").as_deref().and_then(disk_bus);
    let nic = prop("hw_vif_model").as_deref().and_then(nic_model);
    let uefi = prop("hw_firmware_type").is_some_and(|v| v.eq_ignore_ascii_case("uefi"));
    let secure_boot = prop("os_secure_boot").is_some_and(|v| v.eq_ignore_ascii_case("required"))
        || spec("os:secure_boot").is_some_and(|v| v.eq_ignore_ascii_case("required"));
    let tpm = prop("hw_tpm_model").is_some()
        || prop("hw_tpm_version").is_some()
        || spec("hw:tpm_version").is_some();

    let vcpus = input.flavor.vcpus.unwrap_or(1);
    let cpu = CpuTopology::from_hints(
        vcpus,
        num(spec("hw:cpu_sockets")).or(num(prop("hw_cpu_sockets"))),
        num(spec("hw:cpu_cores")).or(num(prop("hw_cpu_cores"))),
        num(spec("hw:cpu_threads")).or(num(prop("hw_cpu_threads"))),
    );

    let mut disks = Vec::new();
    if input.server.image.is_some() {
        let size = input
            .boot_image
            .and_then(|i| i.virtual_size)
            .unwrap_or(0)
            .max(input.flavor.disk.unwrap_or(0) << 30);
        disks.push(Disk {
            label: "root disk (image-booted)".into(),
            source: DiskSource::OpenstackServerImage {
                server_id: input.server.id.clone(),
            },
            size_bytes: size,
            bus,
        });
    }
    for v in ordered {
        let name = v
            .name
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or(&v.id)
            .to_owned();
        disks.push(Disk {
            label: format!("volume {name}"),
            source: DiskSource::OpenstackVolume {
                volume_id: v.id.clone(),
            },
            size_bytes: v.size << 30,
            bus,
        });
    }
    let nics = input
        .nics
        .iter()
        .map(|n| vmi_core::model::Nic {
            model: n.model.or(nic),
            ..n.clone()
        })
        .collect();
    VmModel {
        source_id: input.server.id.clone(),
        name: input.server.name.clone(),
        description: input.server.description.clone().filter(|d| !d.is_empty()),
        cpu,
        memory_mib: input.flavor.ram.unwrap_or(0),
        firmware: Firmware {
            boot: if uefi { BootMode::Uefi } else { BootMode::Bios },
            secure_boot,
            tpm,
        },
        disks,
        nics,
    }
}

#[cfg(test)]
mod describe_tests {
    use super::*;
    use crate::wire::{Flavor, Image, Volume};
    use vmi_core::model::{BootMode, DiskSource};

    fn server(image: Option<&str>, root: Option<&str>) -> Server {
        let mut s: Server = serde_json::from_value(serde_json::json!({
            "id": "s1", "name": "vm", "status": "SHUTOFF", "description": "web server",
            "image": image.map_or(serde_json::json!(""), |i| serde_json::json!({"id": i}))
        }))
        .unwrap();
        s.root_device_name = root.map(str::to_owned);
        s
    }
    fn volume(id: &str, device: &str, bootable: bool, meta: &[(&str, &str)]) -> Volume {
        serde_json::from_value(serde_json::json!({
            "id": id, "status": "in-use", "size": 2, "bootable": bootable.to_string(),
            "attachments": [{"server_id": "s1", "device": device}],
            "volume_image_metadata": meta.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect::<std::collections::BTreeMap<_, _>>()
        }))
        .unwrap()
    }
    fn flavor() -> Flavor {
        Flavor {
            vcpus: Some(4),
            ram: Some(3072),
            disk: Some(2),
            extra_specs: [("hw:cpu_sockets".to_owned(), "2".to_owned())].into(),
            ..Flavor::default()
        }
    }

    #[test]
    fn the_root_volume_comes_first_and_its_image_metadata_wins() {
        let vols = vec![
            volume("data2", "/dev/vdc", false, &[]),
            volume("data1", "/dev/vdb", true, &[]),
            volume(
                "root",
                "/dev/vda",
                true,
                &[
                    ("hw_firmware_type", "uefi"),
                    ("hw_disk_bus", "scsi"),
                    ("hw_vif_model", "e1000"),
                    ("os_secure_boot", "required"),
                ],
            ),
        ];
        let s = server(None, None);
        let f = flavor();
        let img: Image = serde_json::from_value(
            serde_json::json!({"id": "i", "status": "active", "hw_disk_bus": "sata"}),
        )
        .unwrap();
        let nics = vec![vmi_core::model::Nic {
            mac: "m".into(),
            network: vmi_core::model::NetworkRef {
                id: None,
                name: "n".into(),
            },
            model: None,
        }];
        let m = describe(&DescribeInput {
            server: &s,
            flavor: &f,
            volumes: &vols,
            boot_image: Some(&img),
            nics: &nics,
        });
        let ids: Vec<_> = m
            .disks
            .iter()
            .map(|d| match &d.source {
                DiskSource::OpenstackVolume { volume_id } => volume_id.as_str(),
                _ => "?",
            })
            .collect();
        assert_eq!(ids, ["root", "data1", "data2"]);
        assert_eq!(m.disks[0].bus, Some(vmi_api::DiskBus::Scsi));
        assert_eq!(m.firmware.boot, BootMode::Uefi);
        assert!(m.firmware.secure_boot);
        assert_eq!(m.nics[0].model, Some(vmi_api::NetworkInterfaceModel::E1000));
        assert_eq!((m.cpu.sockets, m.cpu.cores, m.cpu.threads), (2, 2, 1));
        assert_eq!(m.memory_mib, 3072);
        assert_eq!(m.description.as_deref(), Some("web server"));
    }

    #[test]
    fn root_device_name_decides_when_visible() {
        let vols = vec![
            volume("a", "/dev/vda", true, &[]),
            volume("b", "/dev/vdb", true, &[]),
        ];
        let order = boot_order(&server(None, Some("/dev/vdb")), &vols);
        assert_eq!(order[0].id, "b");
        // Device names sort naturally: vdb < vdz < vdaa.
        let vols = vec![
            volume("aa", "/dev/vdaa", false, &[]),
            volume("z", "/dev/vdz", false, &[]),
            volume("r", "/dev/vda", true, &[]),
        ];
        let order: Vec<_> = boot_order(&server(None, None), &vols)
            .iter()
            .map(|v| v.id.clone())
            .collect();
        assert_eq!(order, ["r", "z", "aa"]);
    }

    #[test]
    fn an_image_booted_server_has_its_root_disk_first_with_image_properties() {
        let vols = vec![volume("data", "/dev/vdb", false, &[])];
        let s = server(Some("img"), None);
        let f = flavor();
        let img: Image = serde_json::from_value(serde_json::json!({"id": "img", "status": "active", "virtual_size": 67_108_864_u64, "hw_disk_bus": "ide", "hw_tpm_model": "tpm-crb"})).unwrap();
        let m = describe(&DescribeInput {
            server: &s,
            flavor: &f,
            volumes: &vols,
            boot_image: Some(&img),
            nics: &[],
        });
        assert!(matches!(
            m.disks[0].source,
            DiskSource::OpenstackServerImage { .. }
        ));
        assert_eq!(
            m.disks[0].size_bytes,
            2 << 30,
            "the flavor's disk is larger than the image"
        );
        assert_eq!(m.disks[0].bus, Some(vmi_api::DiskBus::Sata));
        assert!(m.firmware.tpm);
        assert_eq!(m.firmware.boot, BootMode::Bios);
        // A deleted image: still described, with defaults.
        let m = describe(&DescribeInput {
            server: &s,
            flavor: &f,
            volumes: &vols,
            boot_image: None,
            nics: &[],
        });
        assert_eq!(m.disks[0].bus, None);
    }
}

/// Fetches what [`describe`] needs beyond preflight's facts (the flavor on clouds older than
/// microversion 2.47, the boot image of an image-booted server) and describes the server. A boot
/// image that is gone or private is not an error: its properties are then read from the root
/// volume only, or default.
pub async fn describe_server(
    api: &dyn crate::api::OpenstackApi,
    facts: &crate::preflight::Facts,
) -> Result<vmi_core::model::VmModel, crate::error::OpenstackError> {
    let server = &facts.server;
    let flavor = if server.flavor.vcpus.is_none() {
        match &server.flavor.id {
            Some(id) => api.get_flavor(id).await?,
            None => server.flavor.clone(),
        }
    } else {
        server.flavor.clone()
    };
    let boot_image = match &server.image {
        Some(id) => match api.get_image(id).await {
            Ok(i) => i,
            Err(e) if matches!(e.status(), Some(403 | 404)) => None,
            Err(e) => return Err(e),
        },
        None => None,
    };
    Ok(describe(&DescribeInput {
        server,
        flavor: &flavor,
        volumes: &facts.volumes,
        boot_image: boot_image.as_ref(),
        nics: &facts.model_nics,
    }))
}
