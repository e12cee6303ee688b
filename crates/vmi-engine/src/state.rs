//! The persisted state of one import.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use vmi_core::model::VmModel;
use vmi_core::network::NicPlan;
use vmi_core::phase::Phase;
use vmi_disk::Digests;
use vmi_openstack::export::{DiskExport, PowerOff, Tracked};

/// Version of the state file format.
pub const STATE_VERSION: u32 = 1;

/// Everything needed to resume, clean up or summarise an import.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportState {
    pub version: u32,
    /// `namespace/name` of the VirtualMachineImport.
    pub import: String,
    /// The input file, so that `--cleanup` can log in again without it on the command line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_file: Option<String>,
    /// The clouds.yaml entry used, if any (never a secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_cloud: Option<String>,
    pub phase: Phase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_id: Option<String>,
    /// What the VM came from, for people (`openstack server …`, `ova https://…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<VmModel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nic_plan: Option<NicPlan>,
    #[serde(default)]
    pub power: PowerOff,
    #[serde(default)]
    pub disks: Vec<DiskState>,
    /// Temporary resources of earlier disk plans (kept until they are confirmed gone).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub orphans: Vec<Tracked>,
    /// Seconds spent in each phase, accumulated over runs.
    #[serde(default)]
    pub timings: BTreeMap<String, f64>,
}

impl ImportState {
    pub fn new(import: String) -> Self {
        Self {
            version: STATE_VERSION,
            import,
            input_file: None,
            os_cloud: None,
            phase: Phase::Preflight,
            failure: None,
            server_id: None,
            source: None,
            name_prefix: None,
            model: None,
            imported_name: None,
            nic_plan: None,
            power: PowerOff::default(),
            disks: Vec::new(),
            orphans: Vec::new(),
            timings: BTreeMap::new(),
        }
    }

    /// Every temporary resource ever recorded.
    pub fn resources(&self) -> impl Iterator<Item = &Tracked> {
        self.disks
            .iter()
            .flat_map(|d| d.export.resources())
            .chain(self.orphans.iter())
    }

    /// Resources not confirmed gone.
    pub fn live_resources(&self) -> Vec<&Tracked> {
        self.resources().filter(|t| t.is_live()).collect()
    }
}

/// Why an import failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    pub phase: Phase,
    /// CamelCase kind (Event and condition reason).
    pub reason: String,
    /// What failed, on which object, and what to do.
    pub message: String,
}

/// One disk: its export on the source and its local files.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiskState {
    pub export: DiskExport,
    #[serde(default)]
    pub download: DownloadState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<OutputDisk>,
}

/// The download of a disk's image into the work file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DownloadState {
    /// Image the download is of; a different image (a recreated export) restarts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// Bytes durably in the work file.
    #[serde(default)]
    pub checkpoint: u64,
    #[serde(default)]
    pub done: bool,
    #[serde(default)]
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digests: Option<Digests>,
    /// Ranged re-opens after cut connections, over all runs.
    #[serde(default)]
    pub resumes: u32,
}

/// The final disk file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputDisk {
    /// Relative to the output directory.
    pub file: String,
    pub format: String,
    pub virtual_size: u64,
    /// Bytes the file occupies on disk.
    pub allocated: u64,
    pub sha256: String,
    pub sha512: String,
}
