//! The neutral VM model every source produces and every manifest is generated from.

use serde::{Deserialize, Serialize};
use vmi_api::{DiskBus, NetworkInterfaceModel};

/// A virtual machine as described by its source, before any mapping is applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmModel {
    /// The source's identifier of the VM (OpenStack server UUID, OVF VirtualSystem id).
    pub source_id: String,
    /// The VM's name at the source, unsanitised.
    pub name: String,
    pub description: Option<String>,
    pub cpu: CpuTopology,
    /// Memory in MiB, exactly as the source gives it.
    pub memory_mib: u64,
    pub firmware: Firmware,
    /// Disks in boot order: the boot disk first.
    pub disks: Vec<Disk>,
    /// NICs in a stable order (see each source's documentation for the rule).
    pub nics: Vec<Nic>,
}

/// CPU topology; `sockets * cores * threads` equals the vCPU count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuTopology {
    pub sockets: u32,
    pub cores: u32,
    pub threads: u32,
}

impl CpuTopology {
    /// Total vCPUs.
    pub fn vcpus(self) -> u32 {
        self.sockets * self.cores * self.threads
    }

    /// A topology for `vcpus` honouring the source's hints where they divide the count: hints
    /// that do not fit are ignored. Without hints: one socket, `vcpus` cores, one thread, which
    /// is what Harvester creates and what guests with socket limits (Windows clients) need.
    pub fn from_hints(
        vcpus: u32,
        sockets: Option<u32>,
        cores: Option<u32>,
        threads: Option<u32>,
    ) -> Self {
        let vcpus = vcpus.max(1);
        let threads = threads
            .filter(|t| *t > 0 && vcpus.is_multiple_of(*t))
            .unwrap_or(1);
        let per_thread = vcpus / threads;
        match (sockets.filter(|s| *s > 0), cores.filter(|c| *c > 0)) {
            (Some(s), Some(c)) if s * c == per_thread => Self {
                sockets: s,
                cores: c,
                threads,
            },
            (Some(s), _) if per_thread.is_multiple_of(s) => Self {
                sockets: s,
                cores: per_thread / s,
                threads,
            },
            (_, Some(c)) if per_thread.is_multiple_of(c) => Self {
                sockets: per_thread / c,
                cores: c,
                threads,
            },
            _ => Self {
                sockets: 1,
                cores: per_thread,
                threads,
            },
        }
    }
}

/// Boot firmware.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Firmware {
    pub boot: BootMode,
    pub secure_boot: bool,
    pub tpm: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootMode {
    #[default]
    Bios,
    Uefi,
}

/// One disk of the VM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    /// Human-readable description used in messages ("volume 1234… (/dev/vdb)").
    pub label: String,
    /// Where the bytes come from.
    pub source: DiskSource,
    /// Virtual size in bytes.
    pub size_bytes: u64,
    /// Bus as the source describes it; `None` when the source does not say.
    pub bus: Option<DiskBus>,
}

/// Where a disk's bytes come from; each variant belongs to one source kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum DiskSource {
    /// An OpenStack Cinder volume, exported through snapshot → volume → image.
    OpenstackVolume { volume_id: String },
    /// The root disk of an image-booted OpenStack server, exported through `createImage`.
    OpenstackServerImage { server_id: String },
    /// A file inside an OVA archive.
    OvaFile { file_name: String },
}

impl DiskSource {
    /// Where the bytes come from, for messages.
    pub fn describe(&self) -> String {
        match self {
            DiskSource::OpenstackVolume { volume_id } => format!("volume {volume_id}"),
            DiskSource::OpenstackServerImage { server_id } => {
                format!("root disk of server {server_id} (image-booted)")
            }
            DiskSource::OvaFile { file_name } => format!("{file_name} in the OVA"),
        }
    }
}

/// A network reference at the source: an id where the source has one, and a name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NetworkRef {
    pub id: Option<String>,
    pub name: String,
}

impl NetworkRef {
    /// Two references designate the same network: by id when both have one, else by name.
    pub fn same_network(&self, other: &NetworkRef) -> bool {
        match (&self.id, &other.id) {
            (Some(a), Some(b)) => a == b,
            _ => self.name == other.name,
        }
    }

    /// `name (id)` or `name`.
    pub fn describe(&self) -> String {
        match &self.id {
            Some(id) => format!("'{}' ({id})", self.name),
            None => format!("'{}'", self.name),
        }
    }
}

/// One network card of the VM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nic {
    /// MAC address, lower-case, colon-separated.
    pub mac: String,
    pub network: NetworkRef,
    /// Model as the source describes it; `None` when the source does not say.
    pub model: Option<NetworkInterfaceModel>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case(4, None, None, None, (1, 4, 1))]
    #[case(4, Some(2), None, None, (2, 2, 1))]
    #[case(4, None, Some(2), None, (2, 2, 1))]
    #[case(8, Some(2), Some(2), Some(2), (2, 2, 2))]
    #[case(6, Some(4), None, None, (1, 6, 1))]
    #[case(6, None, None, Some(4), (1, 6, 1))]
    #[case(0, None, None, None, (1, 1, 1))]
    fn topology_multiplies_to_the_vcpus(
        #[case] vcpus: u32,
        #[case] s: Option<u32>,
        #[case] c: Option<u32>,
        #[case] t: Option<u32>,
        #[case] want: (u32, u32, u32),
    ) {
        let got = CpuTopology::from_hints(vcpus, s, c, t);
        assert_eq!((got.sockets, got.cores, got.threads), want);
        assert_eq!(got.vcpus(), vcpus.max(1));
    }

    #[test]
    fn network_refs_compare_by_id_when_both_have_one() {
        let a = NetworkRef {
            id: Some("1".into()),
            name: "dup".into(),
        };
        let b = NetworkRef {
            id: Some("2".into()),
            name: "dup".into(),
        };
        let by_name = NetworkRef {
            id: None,
            name: "dup".into(),
        };
        assert!(!a.same_network(&b));
        assert!(a.same_network(&by_name));
    }
}
