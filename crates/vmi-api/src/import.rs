use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Condition, DiskBus, NetworkInterfaceModel};
use k8s_openapi::api::core::v1::ObjectReference;

/// Imports one virtual machine from a source into the cluster.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "migration.harvesterhci.io",
    version = "v1beta1",
    kind = "VirtualMachineImport",
    namespaced,
    status = "VirtualMachineImportStatus",
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.importStatus"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineImportSpec {
    /// The source object: `kind` is `OpenstackSource`, `VmwareSource` or `OvaSource`.
    pub source_cluster: ObjectReference,
    /// Name or ID of the source virtual machine (names may be sanitised for the new VM).
    pub virtual_machine_name: String,
    /// VMware folder of the VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<String>,
    /// One entry per source network: every NIC on `sourceNetwork` lands on `destinationNetwork`.
    /// When empty the VM gets one NIC on the pod network.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network_mapping: Vec<NetworkMapping>,
    /// NIC model used when the source does not say (default `virtio`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_network_interface_model: Option<NetworkInterfaceModel>,
    /// Storage class for the imported disks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    /// Disk bus used when the source does not say (default `virtio`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_disk_bus_type: Option<DiskBus>,
    /// Power the VM off hard instead of asking the guest to shut down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_power_off: Option<bool>,
    /// How long a graceful shutdown may take before the import fails (or forces, if allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graceful_shutdown_timeout_seconds: Option<i64>,
    /// Skip preflight checks (not recommended: failures then surface mid-import).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_preflight_checks: Option<bool>,
}

/// One entry of `spec.networkMapping`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkMapping {
    /// Source network: for OpenStack a Neutron network name or ID.
    pub source_network: String,
    /// `name` or `namespace/name` of a NetworkAttachmentDefinition.
    pub destination_network: String,
    /// Overrides the NIC model of every NIC on this network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_interface_model: Option<NetworkInterfaceModel>,
}

/// Observed state of an import.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineImportStatus {
    /// Phase, with the upstream values so existing UIs keep working.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import_status: Option<ImportStatus>,
    /// One entry per disk, in boot order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disk_import_status: Vec<DiskInfo>,
    /// Conditions of the import (one per failed preflight check when invalid).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub import_conditions: Vec<Condition>,
    /// Name of the created KubeVirt VirtualMachine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_virtual_machine: Option<String>,
    /// The sanitised, DNS-1123 compliant name of the VM to create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported_virtual_machine_name: Option<String>,
    /// **(vm-import)** The `metadata.generation` of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// **(vm-import)** Temporary resources on the source and local files the import made and has
    /// not yet removed. The finalizer removes them, also when the import is deleted mid-way.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub temporary_resources: Vec<TemporaryResource>,
    /// **(vm-import)** Progress of each disk: bytes done of the total.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disk_progress: Vec<DiskProgress>,
    /// **(vm-import)** What was created in the cluster: the images and the VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<DestinationStatus>,
    /// **(vm-import)** The engine's state, from which a restarted controller resumes the import.
    /// Opaque and versioned; do not edit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::common::opaque_object")]
    pub engine_state: Option<serde_json::Value>,
}

/// **(vm-import)** A temporary resource of an import.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemporaryResource {
    /// `snapshot`, `volume`, `image` (on the source) or `file` (in the controller's scratch).
    pub kind: String,
    /// ID on the source, or the file's path.
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `live`, `deleting` or `gone`.
    pub state: String,
}

/// **(vm-import)** Progress of one disk.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DiskProgress {
    /// Index in boot order.
    pub index: u32,
    /// What the disk is doing (`snapshot`, `download`, `exported`, `image submitted`, `image ready`…).
    pub step: String,
    pub bytes_done: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_total: Option<u64>,
}

/// **(vm-import)** The objects an import created in the cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DestinationStatus {
    /// One Harvester VirtualMachineImage per disk, in boot order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<ImageRecord>,
    /// PersistentVolumeClaims created for the backing-image backend.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<String>,
    /// The KubeVirt VirtualMachine, once created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_machine: Option<String>,
}

/// **(vm-import)** One VirtualMachineImage of an import.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageRecord {
    pub disk: u32,
    pub name: String,
    /// How many times the image was (re)created.
    pub attempts: u32,
    /// The image reported `Imported=True`.
    #[serde(default)]
    pub ready: bool,
    /// The path the disk is served at (`/disks/<token>/<file>`); the token is random, 256 bits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// SHA-512 of the served file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha512: Option<String>,
}

/// Progress and result of one disk.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DiskInfo {
    pub disk_name: String,
    /// Size in bytes.
    pub disk_size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_local_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_route: Option<String>,
    /// Name of the Harvester VirtualMachineImage (upstream spells this key with a capital V).
    #[serde(
        rename = "VirtualMachineImage",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub virtual_machine_image: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disk_conditions: Vec<Condition>,
    #[serde(default)]
    pub bus_type: DiskBus,
}

/// `status.importStatus` values, exactly as upstream writes them.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum ImportStatus {
    #[serde(rename = "sourceReady")]
    SourceReady,
    #[serde(rename = "disksExported")]
    DisksExported,
    #[serde(rename = "diskImageSubmitted")]
    DiskImagesSubmitted,
    #[serde(rename = "diskImagesReady")]
    DiskImagesReady,
    #[serde(rename = "diskImageFailed")]
    DiskImagesFailed,
    #[serde(rename = "virtualMachineCreated")]
    VirtualMachineCreated,
    #[serde(rename = "virtualMachineRunning")]
    VirtualMachineRunning,
    #[serde(rename = "virtualMachineImportValid")]
    VirtualMachineImportValid,
    #[serde(rename = "virtualMachineImportInvalid")]
    VirtualMachineImportInvalid,
    #[serde(rename = "VMMigrationFailed")]
    VirtualMachineMigrationFailed,
}
