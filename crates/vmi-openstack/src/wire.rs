//! Wire types: the JSON the services answer, trimmed to the fields vm-import reads. Shapes were
//! checked against real Zed services (see `/work/shared/reference` and the fixtures in tests/).

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

/// A status string of a server, volume, snapshot or image: known values as variants, anything
/// else kept verbatim.
macro_rules! status_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $text:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $($variant,)*
            Other(String),
        }

        impl $name {
            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$variant => $text,)*
                    $name::Other(s) => s,
                }
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                match s {
                    $($text => $name::$variant,)*
                    other => $name::Other(other.to_owned()),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Ok($name::from(s.as_str()))
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

status_enum!(
    /// Nova server status.
    ServerStatus {
        Active = "ACTIVE",
        Shutoff = "SHUTOFF",
        Build = "BUILD",
        Error = "ERROR",
        Paused = "PAUSED",
        Suspended = "SUSPENDED",
        Shelved = "SHELVED",
        ShelvedOffloaded = "SHELVED_OFFLOADED",
        Stopped = "STOPPED",
        Rescue = "RESCUE",
        Resize = "RESIZE",
        VerifyResize = "VERIFY_RESIZE",
        Migrating = "MIGRATING",
        Reboot = "REBOOT",
        HardReboot = "HARD_REBOOT",
        Rebuild = "REBUILD",
        Deleted = "DELETED",
        SoftDeleted = "SOFT_DELETED",
        Unknown = "UNKNOWN",
    }
);

status_enum!(
    /// Cinder volume status.
    VolumeStatus {
        Available = "available",
        InUse = "in-use",
        Creating = "creating",
        Attaching = "attaching",
        Detaching = "detaching",
        Reserved = "reserved",
        Deleting = "deleting",
        Error = "error",
        ErrorDeleting = "error_deleting",
        ErrorRestoring = "error_restoring",
        ErrorExtending = "error_extending",
        ErrorManaging = "error_managing",
        BackingUp = "backing-up",
        RestoringBackup = "restoring-backup",
        Uploading = "uploading",
        Downloading = "downloading",
        Maintenance = "maintenance",
        Extending = "extending",
        Retyping = "retyping",
        AwaitingTransfer = "awaiting-transfer",
    }
);

status_enum!(
    /// Cinder snapshot status.
    SnapshotStatus {
        Available = "available",
        Creating = "creating",
        Deleting = "deleting",
        Error = "error",
        ErrorDeleting = "error_deleting",
        BackingUp = "backing-up",
        Restoring = "restoring",
        Unmanaging = "unmanaging",
    }
);

status_enum!(
    /// Glance image status.
    ImageStatus {
        Queued = "queued",
        Saving = "saving",
        Uploading = "uploading",
        Importing = "importing",
        Active = "active",
        Killed = "killed",
        Deleted = "deleted",
        PendingDelete = "pending_delete",
        Deactivated = "deactivated",
    }
);

/// A Nova server (`GET /servers/{id}`, `/servers/detail`), microversion 2.47 or newer for the
/// embedded flavor.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct Server {
    pub id: String,
    pub name: String,
    pub status: ServerStatus,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(rename = "OS-EXT-STS:task_state", default)]
    pub task_state: Option<String>,
    #[serde(rename = "OS-EXT-STS:vm_state", default)]
    pub vm_state: Option<String>,
    #[serde(default)]
    pub flavor: Flavor,
    /// `""` for a server booted from a volume, `{"id": …}` for one booted from an image.
    #[serde(default, deserialize_with = "image_ref")]
    pub image: Option<String>,
    #[serde(rename = "os-extended-volumes:volumes_attached", default)]
    pub volumes_attached: Vec<AttachedVolume>,
    /// Addresses by network name, **in the order Nova lists them** (its network_info order).
    #[serde(default, deserialize_with = "ordered_map")]
    pub addresses: Vec<(String, Vec<Address>)>,
    /// Only visible to admins with the default policy.
    #[serde(rename = "OS-EXT-SRV-ATTR:root_device_name", default)]
    pub root_device_name: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// The flavor embedded in a server (2.47+), or only its id before 2.47.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct Flavor {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub original_name: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub vcpus: Option<u32>,
    /// MiB.
    #[serde(default)]
    pub ram: Option<u64>,
    /// GiB.
    #[serde(default)]
    pub disk: Option<u64>,
    /// GiB.
    #[serde(default, rename = "OS-FLV-EXT-DATA:ephemeral", alias = "ephemeral")]
    pub ephemeral: Option<u64>,
    /// MiB; old microversions write `""` for none.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub swap: Option<u64>,
    #[serde(default)]
    pub extra_specs: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct AttachedVolume {
    pub id: String,
    #[serde(default)]
    pub delete_on_termination: Option<bool>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct Address {
    pub addr: String,
    #[serde(default)]
    pub version: Option<u8>,
    #[serde(rename = "OS-EXT-IPS-MAC:mac_addr", default)]
    pub mac: Option<String>,
}

/// `GET /servers/{id}/os-volume_attachments` entry.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct VolumeAttachment {
    pub volume_id: String,
    #[serde(default)]
    pub device: Option<String>,
}

/// A Neutron port.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct Port {
    pub id: String,
    pub network_id: String,
    pub mac_address: String,
    #[serde(default)]
    pub device_id: String,
    #[serde(default)]
    pub device_owner: String,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub name: String,
}

/// A Neutron network.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct Network {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub shared: bool,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub project_id: Option<String>,
}

/// A Cinder volume.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct Volume {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    pub status: VolumeStatus,
    /// GiB.
    pub size: u64,
    /// Cinder writes `"true"`/`"false"`.
    #[serde(default, deserialize_with = "lenient_bool")]
    pub bootable: bool,
    #[serde(default)]
    pub encrypted: bool,
    #[serde(default)]
    pub multiattach: bool,
    #[serde(default)]
    pub attachments: Vec<VolumeAttachmentInfo>,
    /// Properties of the image the volume was created from, copied at creation.
    #[serde(default)]
    pub volume_image_metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub volume_type: Option<String>,
    #[serde(default)]
    pub snapshot_id: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct VolumeAttachmentInfo {
    #[serde(default)]
    pub server_id: Option<String>,
    #[serde(default)]
    pub device: Option<String>,
}

/// A Cinder snapshot.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct Snapshot {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    pub status: SnapshotStatus,
    #[serde(default)]
    pub size: u64,
    pub volume_id: String,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// A Glance image; properties such as `hw_disk_bus` are top-level keys in Glance v2 and land
/// in `properties`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct Image {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    pub status: ImageStatus,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub virtual_size: Option<u64>,
    #[serde(default)]
    pub disk_format: Option<String>,
    #[serde(default)]
    pub container_format: Option<String>,
    /// MD5, legacy.
    #[serde(default)]
    pub checksum: Option<String>,
    #[serde(default)]
    pub os_hash_algo: Option<String>,
    #[serde(default)]
    pub os_hash_value: Option<String>,
    #[serde(default)]
    pub block_device_mapping: Option<String>,
    #[serde(flatten)]
    pub properties: BTreeMap<String, serde_json::Value>,
}

impl Image {
    /// A string property (`hw_disk_bus`, `hw_firmware_type`, …).
    pub fn property(&self, key: &str) -> Option<&str> {
        self.properties.get(key).and_then(serde_json::Value::as_str)
    }
}

/// One resource's quota in `os-quota-sets/{project}?usage=True`.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
pub struct QuotaUsage {
    /// -1 means unlimited.
    pub limit: i64,
    #[serde(default)]
    pub in_use: i64,
    #[serde(default)]
    pub reserved: i64,
}

impl QuotaUsage {
    /// How many more fit, `None` when unlimited.
    pub fn room(&self) -> Option<i64> {
        (self.limit >= 0).then(|| self.limit - self.in_use - self.reserved)
    }
}

/// Cinder's quota set with usage; per-volume-type entries (`volumes_<type>`) are kept by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VolumeQuota {
    pub entries: BTreeMap<String, QuotaUsage>,
}

impl VolumeQuota {
    pub fn get(&self, key: &str) -> Option<QuotaUsage> {
        self.entries.get(key).copied()
    }
}

fn image_ref<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(match v {
        serde_json::Value::Object(m) => m.get("id").and_then(|i| i.as_str()).map(str::to_owned),
        serde_json::Value::String(s) if !s.is_empty() => Some(s),
        _ => None,
    })
}

fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(match v {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    })
}

fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(match v {
        serde_json::Value::Bool(b) => b,
        serde_json::Value::String(s) => s.eq_ignore_ascii_case("true"),
        _ => false,
    })
}

/// Reads a JSON object into its entries in document order (a map type would lose the order
/// Nova gives its addresses in).
fn ordered_map<'de, D, V>(d: D) -> Result<Vec<(String, V)>, D::Error>
where
    D: Deserializer<'de>,
    V: Deserialize<'de>,
{
    struct Ordered<V>(std::marker::PhantomData<V>);
    impl<'de, V: Deserialize<'de>> Visitor<'de> for Ordered<V> {
        type Value = Vec<(String, V)>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some((k, v)) = map.next_entry::<String, V>()? {
                out.push((k, v));
            }
            Ok(out)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
    }
    d.deserialize_any(Ordered(std::marker::PhantomData))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_booted_from_volume_has_no_image_and_keeps_address_order() {
        let s: Server = serde_json::from_str(
            r#"{"id": "s1", "name": "vm", "status": "ACTIVE", "image": "",
                "flavor": {"vcpus": 2, "ram": 1536, "disk": 1, "ephemeral": 0, "swap": "",
                           "original_name": "vmi.small", "extra_specs": {}},
                "addresses": {"zeta": [{"addr": "10.0.0.1", "version": 4,
                                        "OS-EXT-IPS-MAC:mac_addr": "fa:16:3e:00:00:01"}],
                              "alpha": [{"addr": "10.0.1.1", "version": 4,
                                         "OS-EXT-IPS-MAC:mac_addr": "fa:16:3e:00:00:02"}]},
                "os-extended-volumes:volumes_attached": [{"id": "v1", "delete_on_termination": true}]}"#,
        )
        .unwrap();
        assert_eq!(s.image, None);
        assert_eq!(s.flavor.swap, None);
        assert_eq!(s.flavor.ram, Some(1536));
        let names: Vec<_> = s.addresses.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["zeta", "alpha"]);
        assert_eq!(s.status, ServerStatus::Active);
    }

    #[test]
    fn an_image_booted_server_has_its_image_id_and_unknown_statuses_are_kept() {
        let s: Server = serde_json::from_str(
            r#"{"id": "s1", "name": "vm", "status": "SOMETHING_NEW", "image": {"id": "img", "links": []},
                "addresses": {}}"#,
        )
        .unwrap();
        assert_eq!(s.image.as_deref(), Some("img"));
        assert_eq!(s.status, ServerStatus::Other("SOMETHING_NEW".into()));
    }

    #[test]
    fn cinder_bootable_strings_are_booleans() {
        let v: Volume = serde_json::from_str(
            r#"{"id": "v", "status": "in-use", "size": 1, "bootable": "true",
                "volume_image_metadata": {"hw_firmware_type": "uefi"}}"#,
        )
        .unwrap();
        assert!(v.bootable);
        assert_eq!(v.status, VolumeStatus::InUse);
    }

    #[test]
    fn glance_properties_are_top_level() {
        let i: Image = serde_json::from_str(
            r#"{"id": "i", "status": "active", "size": 4521984, "hw_disk_bus": "scsi",
                "os_hash_algo": "sha512", "os_hash_value": "ab", "min_ram": 64}"#,
        )
        .unwrap();
        assert_eq!(i.property("hw_disk_bus"), Some("scsi"));
        assert_eq!(i.property("min_ram"), None);
    }

    #[test]
    fn quota_room() {
        assert_eq!(
            QuotaUsage {
                limit: 10,
                in_use: 3,
                reserved: 1
            }
            .room(),
            Some(6)
        );
        assert_eq!(
            QuotaUsage {
                limit: -1,
                in_use: 3,
                reserved: 1
            }
            .room(),
            None
        );
    }
}
