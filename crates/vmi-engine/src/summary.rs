//! The machine-readable summary of a run (`--output json`, and `summary.json` in the output
//! directory).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use vmi_openstack::export::{ResourceState, Tracked};

use crate::state::ImportState;

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub import: String,
    pub virtual_machine: Option<String>,
    pub server_id: Option<String>,
    pub phase: String,
    pub disks: Vec<DiskSummary>,
    pub resources: Resources,
    /// NICs left out because their network has no mapping.
    pub unmapped_nics: Vec<String>,
    pub manifests: BTreeMap<String, String>,
    /// Seconds per phase, and `total`.
    pub timings: BTreeMap<String, f64>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DiskSummary {
    pub index: usize,
    pub source: String,
    pub file: Option<String>,
    pub format: Option<String>,
    pub virtual_size: Option<u64>,
    /// Bytes the file occupies on disk (holes excluded).
    pub bytes_written: Option<u64>,
    /// Bytes of the image downloaded from Glance.
    pub bytes_downloaded: u64,
    pub sha256: Option<String>,
    pub sha512: Option<String>,
    pub download_resumes: u32,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Resources {
    pub created: Vec<ResourceSummary>,
    pub removed: Vec<ResourceSummary>,
    pub left: Vec<ResourceSummary>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ResourceSummary {
    pub kind: &'static str,
    pub name: String,
    pub id: Option<String>,
}

impl From<&Tracked> for ResourceSummary {
    fn from(t: &Tracked) -> Self {
        Self {
            kind: t.kind.as_str(),
            name: t.name.clone(),
            id: t.id.clone(),
        }
    }
}

impl Summary {
    pub fn of(state: &ImportState, out_dir: &Path) -> Summary {
        let mut resources = Resources::default();
        for t in state.resources().filter(|t| t.id.is_some()) {
            resources.created.push(t.into());
            if t.state == ResourceState::Deleted {
                resources.removed.push(t.into());
            } else {
                resources.left.push(t.into());
            }
        }
        let disks = state
            .disks
            .iter()
            .map(|d| DiskSummary {
                index: d.export.index,
                source: state
                    .model
                    .as_ref()
                    .and_then(|m| m.disks.get(d.export.index))
                    .map(|m| m.source.describe())
                    .unwrap_or_default(),
                file: d.output.as_ref().map(|o| o.file.clone()),
                format: d.output.as_ref().map(|o| o.format.clone()),
                virtual_size: d.output.as_ref().map(|o| o.virtual_size),
                bytes_written: d.output.as_ref().map(|o| o.allocated),
                bytes_downloaded: d.download.size,
                sha256: d.output.as_ref().map(|o| o.sha256.clone()),
                sha512: d.output.as_ref().map(|o| o.sha512.clone()),
                download_resumes: d.download.resumes,
            })
            .collect();
        let mut manifests = BTreeMap::new();
        for f in ["virtualmachine.yaml", "images.yaml"] {
            if out_dir.join(f).exists() {
                manifests.insert(f.trim_end_matches(".yaml").to_owned(), f.to_owned());
            }
        }
        Summary {
            import: state.import.clone(),
            virtual_machine: state.imported_name.clone(),
            server_id: state.server_id.clone(),
            phase: state.phase.as_str().to_owned(),
            disks,
            resources,
            unmapped_nics: state
                .nic_plan
                .as_ref()
                .map(|p| {
                    p.unmapped
                        .iter()
                        .map(|n| format!("{} on {}", n.mac, n.network.describe()))
                        .collect()
                })
                .unwrap_or_default(),
            manifests,
            timings: state.timings.clone(),
        }
    }
}
