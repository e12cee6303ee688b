use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A condition as upstream writes it (`common.Condition`): times are RFC 3339 strings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Type of the condition, e.g. `VMExported` or `ClusterReady`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Status of the condition, one of True, False, Unknown.
    pub status: ConditionStatus,
    /// The last time this condition was updated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<String>,
    /// Last time the condition transitioned from one status to another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    /// The reason for the condition's last transition (a machine-readable CamelCase word).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable message: what failed, on which object, and what to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `True`, `False` or `Unknown`, as in core Kubernetes conditions.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

/// Readiness of a source, in `status.status` of every source kind.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum ClusterStatus {
    #[serde(rename = "clusterReady")]
    Ready,
    #[serde(rename = "clusterNotReady")]
    NotReady,
}

/// KubeVirt disk bus (`kubevirtv1.DiskBus`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DiskBus {
    #[default]
    Virtio,
    Sata,
    Scsi,
    Usb,
}

impl DiskBus {
    /// The value as written in KubeVirt manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            DiskBus::Virtio => "virtio",
            DiskBus::Sata => "sata",
            DiskBus::Scsi => "scsi",
            DiskBus::Usb => "usb",
        }
    }
}

/// KubeVirt network interface model, restricted to the values upstream accepts.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default, JsonSchema)]
pub enum NetworkInterfaceModel {
    #[serde(rename = "e1000")]
    E1000,
    #[serde(rename = "e1000e")]
    E1000e,
    #[serde(rename = "ne2k_pci")]
    Ne2kPci,
    #[serde(rename = "pcnet")]
    Pcnet,
    #[serde(rename = "rtl8139")]
    Rtl8139,
    #[default]
    #[serde(rename = "virtio")]
    Virtio,
}

impl NetworkInterfaceModel {
    /// The value as written in KubeVirt manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkInterfaceModel::E1000 => "e1000",
            NetworkInterfaceModel::E1000e => "e1000e",
            NetworkInterfaceModel::Ne2kPci => "ne2k_pci",
            NetworkInterfaceModel::Pcnet => "pcnet",
            NetworkInterfaceModel::Rtl8139 => "rtl8139",
            NetworkInterfaceModel::Virtio => "virtio",
        }
    }
}

/// Schema of an opaque object kept as is (`x-kubernetes-preserve-unknown-fields`).
pub(crate) fn opaque_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}
