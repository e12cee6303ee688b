//! The 1:1 network mapping: one source network maps to one destination network, every NIC on
//! that source network lands there with its MAC, in the VM's NIC order. NICs on unmapped
//! networks are reported, never dropped silently.

use std::collections::BTreeMap;

use vmi_api::{NetworkInterfaceModel, NetworkMapping};

use crate::model::{NetworkRef, Nic};
use crate::names::is_dns1123_label;
use crate::preflight::{Check, CheckId};

/// What a source found for one `sourceNetwork` of the mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution {
    Found(NetworkRef),
    NotFound,
    /// Several networks answer to that name.
    Ambiguous(Vec<NetworkRef>),
}

/// A mapping entry with what the source found for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedMapping {
    pub mapping: NetworkMapping,
    pub resolution: Resolution,
}

impl ResolvedMapping {
    fn found(&self) -> Option<&NetworkRef> {
        match &self.resolution {
            Resolution::Found(n) => Some(n),
            _ => None,
        }
    }
}

/// Where a NIC of the imported VM is attached.
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Destination {
    /// The pod network (masquerade), used only when nothing is mapped.
    Pod,
    /// A Multus NetworkAttachmentDefinition.
    Multus {
        namespace: Option<String>,
        name: String,
    },
}

impl Destination {
    /// Parses `name` or `namespace/name`.
    pub fn parse(s: &str) -> Result<Destination, String> {
        let (namespace, name) = match s.split_once('/') {
            Some((ns, name)) => (Some(ns), name),
            None => (None, s),
        };
        if let Some(ns) = namespace
            && !is_dns1123_label(ns)
        {
            return Err(format!(
                "namespace '{ns}' is not a valid Kubernetes namespace (lower-case letters, \
                     digits and '-', at most 63)"
            ));
        }
        if name.contains('/') || !is_dns1123_label(name) {
            return Err(format!(
                "'{name}' is not a valid NetworkAttachmentDefinition name (lower-case letters, \
                 digits and '-', at most 63)"
            ));
        }
        Ok(Destination::Multus {
            namespace: namespace.map(str::to_owned),
            name: name.to_owned(),
        })
    }

    /// The Multus `networkName`: `namespace/name` or `name`.
    pub fn network_name(&self) -> Option<String> {
        match self {
            Destination::Pod => None,
            Destination::Multus {
                namespace: Some(ns),
                name,
            } => Some(format!("{ns}/{name}")),
            Destination::Multus {
                namespace: None,
                name,
            } => Some(name.clone()),
        }
    }
}

/// `network.mapping.duplicate`: a source network listed twice (the same string, or two strings
/// that resolve to the same network, e.g. its name and its ID).
pub fn check_duplicates(resolved: &[ResolvedMapping]) -> Vec<Check> {
    let mut checks = Vec::new();
    let mut by_text: BTreeMap<&str, usize> = BTreeMap::new();
    for r in resolved {
        *by_text
            .entry(r.mapping.source_network.as_str())
            .or_default() += 1;
    }
    for (text, n) in &by_text {
        if *n > 1 {
            checks.push(Check::fail(
                CheckId::NetworkMappingDuplicate,
                *text,
                format!(
                    "source network '{text}' is listed {n} times in spec.networkMapping; a source \
                     network maps to exactly one destination: keep one entry"
                ),
            ));
        }
    }
    // Different strings naming the same network.
    let mut by_network: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for r in resolved {
        if let Some(found) = r.found() {
            let key = found
                .id
                .clone()
                .unwrap_or_else(|| format!("name:{}", found.name));
            let texts = by_network.entry(key).or_default();
            if !texts.contains(&r.mapping.source_network.as_str()) {
                texts.push(r.mapping.source_network.as_str());
            }
        }
    }
    for (network, texts) in by_network {
        if texts.len() > 1 {
            let listed = texts
                .iter()
                .map(|t| format!("'{t}'"))
                .collect::<Vec<_>>()
                .join(" and ");
            checks.push(Check::fail(
                CheckId::NetworkMappingDuplicate,
                texts.join(", "),
                format!(
                    "{listed} are the same source network ({}); a source network maps to exactly \
                     one destination: keep one entry",
                    network.trim_start_matches("name:")
                ),
            ));
        }
    }
    if checks.is_empty() {
        checks.push(Check::pass(
            CheckId::NetworkMappingDuplicate,
            "",
            format!(
                "{} mapping entries, no source network listed twice",
                resolved.len()
            ),
        ));
    }
    checks
}

/// `network.source.exists`: one check per mapping entry.
pub fn check_sources_exist(resolved: &[ResolvedMapping], source_kind: &str) -> Vec<Check> {
    resolved
        .iter()
        .map(|r| {
            let subject = r.mapping.source_network.clone();
            match &r.resolution {
                Resolution::Found(n) => Check::pass(
                    CheckId::NetworkSourceExists,
                    subject,
                    format!("found network {} in {source_kind}", n.describe()),
                ),
                Resolution::NotFound => Check::fail(
                    CheckId::NetworkSourceExists,
                    subject.clone(),
                    format!(
                        "no network named or with ID '{subject}' in {source_kind}; check \
                         spec.networkMapping[].sourceNetwork (names are exact and case-sensitive)"
                    ),
                ),
                Resolution::Ambiguous(candidates) => {
                    let ids = candidates
                        .iter()
                        .map(|c| c.id.clone().unwrap_or_else(|| c.name.clone()))
                        .collect::<Vec<_>>();
                    Check::fail(
                        CheckId::NetworkSourceExists,
                        subject.clone(),
                        format!(
                            "{} networks are named '{subject}' in {source_kind}: {}; put the ID \
                             of the one you mean in sourceNetwork",
                            candidates.len(),
                            ids.join(", ")
                        ),
                    )
                }
            }
        })
        .collect()
}

/// `network.source.used`: warns for each mapped network that carries none of the VM's NICs.
pub fn check_sources_used(resolved: &[ResolvedMapping], nics: &[Nic]) -> Vec<Check> {
    resolved
        .iter()
        .filter_map(|r| {
            let found = r.found()?;
            let count = nics
                .iter()
                .filter(|n| n.network.same_network(found))
                .count();
            Some(if count == 0 {
                Check::warn(
                    CheckId::NetworkSourceUsed,
                    r.mapping.source_network.clone(),
                    format!(
                        "the VM has no NIC on network {}; this mapping entry has no effect",
                        found.describe()
                    ),
                )
            } else {
                Check::pass(
                    CheckId::NetworkSourceUsed,
                    r.mapping.source_network.clone(),
                    format!(
                        "{count} NIC(s) on {} go to '{}'",
                        found.describe(),
                        r.mapping.destination_network
                    ),
                )
            })
        })
        .collect()
}

/// `network.unmapped`: one warning per NIC whose network has no mapping entry, saying what will
/// happen to it.
pub fn check_unmapped(resolved: &[ResolvedMapping], nics: &[Nic]) -> Vec<Check> {
    if nics.is_empty() {
        return vec![Check::pass(
            CheckId::NetworkUnmapped,
            "",
            "the VM has no NICs",
        )];
    }
    if resolved.is_empty() {
        let macs = nics
            .iter()
            .map(|n| n.mac.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        return vec![Check::warn(
            CheckId::NetworkUnmapped,
            "",
            format!(
                "spec.networkMapping is empty: the imported VM gets one NIC on the pod network \
                 (MAC {}) instead of its {} NIC(s) ({macs}); map the source networks to keep them",
                nics[0].mac,
                nics.len()
            ),
        )];
    }
    let unmapped: Vec<Check> = nics
        .iter()
        .filter(|nic| {
            !resolved
                .iter()
                .any(|r| r.found().is_some_and(|f| nic.network.same_network(f)))
        })
        .map(|nic| {
            Check::warn(
                CheckId::NetworkUnmapped,
                nic.mac.clone(),
                format!(
                    "NIC {} on network {} has no mapping: it will not be created on the imported \
                     VM; add a networkMapping entry with sourceNetwork '{}' to keep it",
                    nic.mac,
                    nic.network.describe(),
                    nic.network.id.as_deref().unwrap_or(&nic.network.name)
                ),
            )
        })
        .collect();
    if unmapped.is_empty() {
        vec![Check::pass(
            CheckId::NetworkUnmapped,
            "",
            format!("all {} NIC(s) are on mapped networks", nics.len()),
        )]
    } else {
        unmapped
    }
}

/// `network.destination`: the destination is well formed; `exists` answers whether it exists
/// where a cluster is reachable (`None`: no cluster, the check is skipped once well formed).
pub fn check_destinations(
    mappings: &[NetworkMapping],
    exists: Option<&(dyn Fn(&Destination) -> bool + Sync)>,
) -> Vec<Check> {
    mappings
        .iter()
        .map(|m| {
            let subject = m.destination_network.clone();
            match Destination::parse(&m.destination_network) {
                Err(why) => Check::fail(
                    CheckId::NetworkDestination,
                    subject,
                    format!("destinationNetwork: {why}; write 'name' or 'namespace/name'"),
                ),
                Ok(dest) => match exists {
                    None => Check::skip(
                        CheckId::NetworkDestination,
                        subject,
                        "well formed; whether it exists is checked by the controller, where the \
                         cluster is reachable",
                    ),
                    Some(f) if f(&dest) => Check::pass(
                        CheckId::NetworkDestination,
                        subject,
                        "NetworkAttachmentDefinition exists",
                    ),
                    Some(_) => Check::fail(
                        CheckId::NetworkDestination,
                        subject.clone(),
                        format!(
                            "no NetworkAttachmentDefinition '{subject}' in the cluster; create it \
                             or fix destinationNetwork"
                        ),
                    ),
                },
            }
        })
        .collect()
}

/// One NIC of the imported VM.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PlannedNic {
    /// Interface name in the KubeVirt spec (`nic-0`, `nic-1`, …).
    pub name: String,
    pub mac: String,
    pub destination: Destination,
    pub model: NetworkInterfaceModel,
}

/// The NICs of the imported VM, and the source NICs left out (reported, never silent).
#[derive(Clone, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct NicPlan {
    pub nics: Vec<PlannedNic>,
    pub unmapped: Vec<Nic>,
}

/// Applies the 1:1 mapping to the VM's NICs, keeping their order and MACs.
///
/// Model precedence: the mapping's `networkInterfaceModel`, then the source's model, then
/// `default_model`. With no mapping at all the VM gets one pod-network NIC carrying the first
/// NIC's MAC. Mapping entries whose source network was not found are ignored here: preflight
/// has already failed for them.
pub fn plan_nics(
    nics: &[Nic],
    resolved: &[ResolvedMapping],
    default_model: NetworkInterfaceModel,
) -> Result<NicPlan, String> {
    let mut plan = NicPlan::default();
    if resolved.is_empty() {
        let model = nics.first().and_then(|n| n.model).unwrap_or(default_model);
        plan.nics.push(PlannedNic {
            name: "default".into(),
            mac: nics.first().map(|n| n.mac.clone()).unwrap_or_default(),
            destination: Destination::Pod,
            model,
        });
        plan.unmapped = nics.iter().skip(1).cloned().collect();
        return Ok(plan);
    }
    for nic in nics {
        let entry = resolved
            .iter()
            .find(|r| r.found().is_some_and(|f| nic.network.same_network(f)));
        match entry {
            None => plan.unmapped.push(nic.clone()),
            Some(r) => {
                let destination = Destination::parse(&r.mapping.destination_network)?;
                let model = r
                    .mapping
                    .network_interface_model
                    .or(nic.model)
                    .unwrap_or(default_model);
                plan.nics.push(PlannedNic {
                    name: format!("nic-{}", plan.nics.len()),
                    mac: nic.mac.clone(),
                    destination,
                    model,
                });
            }
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preflight::CheckStatus;

    fn net(id: &str, name: &str) -> NetworkRef {
        NetworkRef {
            id: Some(id.into()),
            name: name.into(),
        }
    }
    fn nic(mac: &str, id: &str, name: &str) -> Nic {
        Nic {
            mac: mac.into(),
            network: net(id, name),
            model: None,
        }
    }
    fn mapping(src: &str, dst: &str) -> NetworkMapping {
        NetworkMapping {
            source_network: src.into(),
            destination_network: dst.into(),
            network_interface_model: None,
        }
    }
    fn found(src: &str, dst: &str, id: &str, name: &str) -> ResolvedMapping {
        ResolvedMapping {
            mapping: mapping(src, dst),
            resolution: Resolution::Found(net(id, name)),
        }
    }
    fn statuses(checks: &[Check]) -> Vec<CheckStatus> {
        checks.iter().map(|c| c.status).collect()
    }

    #[test]
    fn the_same_source_network_twice_fails() {
        let r = vec![
            found("a", "default/x", "1", "a"),
            found("a", "default/y", "1", "a"),
        ];
        let checks = check_duplicates(&r);
        assert_eq!(statuses(&checks), vec![CheckStatus::Fail]);
        assert!(
            checks[0].message.contains("listed 2 times"),
            "{}",
            checks[0].message
        );
    }

    #[test]
    fn a_name_and_the_id_of_the_same_network_are_a_duplicate() {
        let r = vec![found("a", "x", "1", "a"), found("1", "y", "1", "a")];
        let checks = check_duplicates(&r);
        assert_eq!(statuses(&checks), vec![CheckStatus::Fail]);
        assert!(
            checks[0]
                .message
                .contains("'a' and '1' are the same source network")
        );
    }

    #[test]
    fn distinct_networks_pass_the_duplicate_check() {
        let r = vec![found("a", "x", "1", "a"), found("b", "y", "2", "b")];
        assert_eq!(statuses(&check_duplicates(&r)), vec![CheckStatus::Pass]);
    }

    #[test]
    fn ambiguous_names_fail_listing_the_ids_and_suggesting_the_id() {
        let r = vec![ResolvedMapping {
            mapping: mapping("dup", "x"),
            resolution: Resolution::Ambiguous(vec![net("id-1", "dup"), net("id-2", "dup")]),
        }];
        let checks = check_sources_exist(&r, "Neutron");
        assert_eq!(checks[0].status, CheckStatus::Fail);
        assert!(checks[0].message.contains("id-1, id-2"));
        assert!(checks[0].message.contains("put the ID"));
    }

    #[test]
    fn unmapped_nics_are_each_reported_with_mac_and_network() {
        let nics = vec![
            nic("m1", "1", "a"),
            nic("m2", "2", "b"),
            nic("m3", "1", "a"),
        ];
        let r = vec![found("a", "x", "1", "a")];
        let checks = check_unmapped(&r, &nics);
        assert_eq!(checks.len(), 1);
        assert_eq!(checks[0].status, CheckStatus::Warn);
        assert_eq!(checks[0].subject, "m2");
        assert!(checks[0].message.contains("will not be created"));
    }

    #[test]
    fn an_empty_mapping_warns_that_nics_become_one_pod_nic() {
        let nics = vec![nic("m1", "1", "a"), nic("m2", "2", "b")];
        let checks = check_unmapped(&[], &nics);
        assert_eq!(checks[0].status, CheckStatus::Warn);
        assert!(checks[0].message.contains("pod network"));
    }

    #[test]
    fn a_mapping_without_nics_warns() {
        let nics = vec![nic("m1", "1", "a")];
        let r = vec![found("a", "x", "1", "a"), found("b", "y", "2", "b")];
        let checks = check_sources_used(&r, &nics);
        assert_eq!(
            statuses(&checks),
            vec![CheckStatus::Pass, CheckStatus::Warn]
        );
    }

    #[test]
    fn destinations_are_parsed_and_skipped_without_a_cluster() {
        let m = vec![
            mapping("a", "default/vlan1"),
            mapping("b", "vlan2"),
            mapping("c", "Bad/x"),
        ];
        let checks = check_destinations(&m, None);
        assert_eq!(
            statuses(&checks),
            vec![CheckStatus::Skip, CheckStatus::Skip, CheckStatus::Fail]
        );
        let exists = |d: &Destination| d.network_name().as_deref() == Some("default/vlan1");
        let checks = check_destinations(&m[..2], Some(&exists));
        assert_eq!(
            statuses(&checks),
            vec![CheckStatus::Pass, CheckStatus::Fail]
        );
    }

    #[test]
    fn plan_keeps_order_and_macs_and_lists_unmapped() {
        let nics = vec![
            nic("m1", "1", "a"),
            nic("m2", "2", "b"),
            nic("m3", "1", "a"),
        ];
        let mut r = vec![found("a", "default/x", "1", "a")];
        r[0].mapping.network_interface_model = Some(NetworkInterfaceModel::E1000);
        let plan = plan_nics(&nics, &r, NetworkInterfaceModel::Virtio).unwrap();
        let macs: Vec<_> = plan.nics.iter().map(|n| n.mac.as_str()).collect();
        assert_eq!(macs, ["m1", "m3"]);
        assert_eq!(plan.nics[1].name, "nic-1");
        assert!(
            plan.nics
                .iter()
                .all(|n| n.model == NetworkInterfaceModel::E1000)
        );
        assert_eq!(plan.unmapped.len(), 1);
        assert_eq!(plan.unmapped[0].mac, "m2");
    }

    #[test]
    fn plan_without_mapping_is_one_pod_nic() {
        let nics = vec![nic("m1", "1", "a"), nic("m2", "2", "b")];
        let plan = plan_nics(&nics, &[], NetworkInterfaceModel::Virtio).unwrap();
        assert_eq!(plan.nics.len(), 1);
        assert_eq!(plan.nics[0].destination, Destination::Pod);
        assert_eq!(plan.nics[0].mac, "m1");
        assert_eq!(plan.unmapped.len(), 1);
    }

    #[test]
    fn source_model_is_used_when_the_mapping_has_none() {
        let mut n = nic("m1", "1", "a");
        n.model = Some(NetworkInterfaceModel::Rtl8139);
        let plan = plan_nics(
            &[n],
            &[found("a", "x", "1", "a")],
            NetworkInterfaceModel::Virtio,
        )
        .unwrap();
        assert_eq!(plan.nics[0].model, NetworkInterfaceModel::Rtl8139);
    }
}
