//! Pure status computation: from the engine's state and what exists in the cluster to the
//! import's `status` (upstream fields first, vm-import's own after).

use std::collections::BTreeMap;

use vmi_api::{
    Condition, ConditionStatus, DestinationStatus, DiskInfo, DiskProgress, ImportStatus,
    TemporaryResource, VirtualMachineImportStatus,
};
use vmi_core::phase::Phase;
use vmi_core::preflight::{CheckStatus, Report};
use vmi_engine::ImportState;
use vmi_openstack::export::{ExportStep, ResourceState};

/// Where an import is, beyond the engine's phases: the cluster side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    /// The engine is running (preflight, power off, export, convert).
    Engine(Phase),
    /// The images are created; Harvester is downloading them.
    ImagesSubmitted,
    /// Every image reported `Imported=True`.
    ImagesReady,
    /// The VirtualMachine exists; KubeVirt is starting it.
    VirtualMachineCreated,
    /// The VirtualMachine is ready: the import is complete.
    Running,
    /// Preflight failed: nothing on the source was touched.
    Invalid,
    /// An image failed for good.
    ImageFailed,
    /// The import failed.
    Failed,
}

impl Stage {
    /// The upstream `status.importStatus`.
    pub fn import_status(self) -> Option<ImportStatus> {
        match self {
            Stage::Engine(p) => p.import_status(false),
            Stage::ImagesSubmitted => Some(ImportStatus::DiskImagesSubmitted),
            Stage::ImagesReady => Some(ImportStatus::DiskImagesReady),
            Stage::VirtualMachineCreated => Some(ImportStatus::VirtualMachineCreated),
            Stage::Running => Some(ImportStatus::VirtualMachineRunning),
            Stage::Invalid => Some(ImportStatus::VirtualMachineImportInvalid),
            Stage::ImageFailed => Some(ImportStatus::DiskImagesFailed),
            Stage::Failed => Some(ImportStatus::VirtualMachineMigrationFailed),
        }
    }

    /// Nothing more happens (but cleanup of what is left).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Stage::Running | Stage::Invalid | Stage::ImageFailed | Stage::Failed
        )
    }

    /// The stage a status shows, for a controller that (re)starts from it.
    pub fn of_status(status: &VirtualMachineImportStatus, engine_phase: Phase) -> Stage {
        match status.import_status {
            Some(ImportStatus::VirtualMachineImportInvalid) => Stage::Invalid,
            Some(ImportStatus::VirtualMachineMigrationFailed) => Stage::Failed,
            Some(ImportStatus::DiskImagesFailed) => Stage::ImageFailed,
            Some(ImportStatus::VirtualMachineRunning) => Stage::Running,
            Some(ImportStatus::VirtualMachineCreated) => Stage::VirtualMachineCreated,
            Some(ImportStatus::DiskImagesReady) => Stage::ImagesReady,
            Some(ImportStatus::DiskImagesSubmitted) => Stage::ImagesSubmitted,
            _ if engine_phase == Phase::Failed => Stage::Failed,
            _ => Stage::Engine(engine_phase),
        }
    }

    /// A short word for metrics labels.
    pub fn label(self) -> &'static str {
        match self {
            Stage::Engine(p) => p.key(),
            Stage::ImagesSubmitted => "imagesSubmitted",
            Stage::ImagesReady => "imagesReady",
            Stage::VirtualMachineCreated => "virtualMachineCreated",
            Stage::Running => "running",
            Stage::Invalid => "invalid",
            Stage::ImageFailed => "imageFailed",
            Stage::Failed => "failed",
        }
    }
}

/// Condition types this controller sets on imports.
pub mod condition {
    /// Preflight passed (`True`) or failed (`False`, with one more condition per failed check).
    pub const PREFLIGHT: &str = "PreflightPassed";
    /// Per failed preflight check: `PreflightCheckFailed/<check id>`.
    pub const CHECK_PREFIX: &str = "PreflightCheckFailed/";
    /// The source object is ready (`False` while it is not, the import waits).
    pub const SOURCE_READY: &str = "SourceReady";
    /// The disks are exported from the source (`True`), or the export failed (`False`).
    pub const EXPORTED: &str = "VMExported";
    /// The images are submitted / ready / failed.
    pub const IMAGES_READY: &str = "DiskImagesReady";
    /// The VirtualMachine was created and is running.
    pub const VM_RUNNING: &str = "VirtualMachineRunning";
    /// The import failed: reason is the error kind, message the chain.
    pub const FAILED: &str = "Failed";
    /// Temporary resources are left on the source after cleanup gave up for now.
    pub const CLEANUP: &str = "CleanupComplete";
}

/// Sets condition `type_` (keeping `lastTransitionTime` when the status did not change).
/// Returns whether anything changed.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: &str,
    now: &str,
) -> bool {
    if let Some(c) = conditions.iter_mut().find(|c| c.type_ == type_) {
        let same = c.status == status
            && c.reason.as_deref() == Some(reason)
            && c.message.as_deref() == Some(message);
        if same {
            return false;
        }
        if c.status != status {
            c.last_transition_time = Some(now.to_owned());
        }
        c.status = status;
        c.reason = Some(reason.to_owned());
        c.message = Some(message.to_owned());
        c.last_update_time = Some(now.to_owned());
        return true;
    }
    conditions.push(Condition {
        type_: type_.to_owned(),
        status,
        last_update_time: Some(now.to_owned()),
        last_transition_time: Some(now.to_owned()),
        reason: Some(reason.to_owned()),
        message: Some(message.to_owned()),
    });
    true
}

/// Removes condition `type_`.
pub fn remove_condition(conditions: &mut Vec<Condition>, type_: &str) {
    conditions.retain(|c| c.type_ != type_);
}

/// CamelCase of a check id: `network.source.exists` → `NetworkSourceExists`.
pub fn check_reason(id: &str) -> String {
    id.split(['.', '_', '-'])
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// The conditions of a failed preflight: `PreflightPassed=False` with a summary, and one
/// condition per failed check (type `PreflightCheckFailed/<id>`, the subject and what to do in
/// the message). Earlier check conditions are replaced.
pub fn preflight_failed(conditions: &mut Vec<Condition>, report: &Report, now: &str) {
    conditions.retain(|c| !c.type_.starts_with(condition::CHECK_PREFIX));
    let failed: Vec<_> = report
        .checks
        .iter()
        .filter(|c| c.status == CheckStatus::Fail)
        .collect();
    let summary = failed
        .iter()
        .map(|c| format!("{} ({})", c.id, c.subject))
        .collect::<Vec<_>>()
        .join(", ");
    set_condition(
        conditions,
        condition::PREFLIGHT,
        ConditionStatus::False,
        "PreflightFailed",
        &format!(
            "{} check(s) failed: {summary}; nothing on the source was touched. Fix the import or the source and edit the import to run preflight again",
            failed.len()
        ),
        now,
    );
    for c in failed {
        set_condition(
            conditions,
            &format!("{}{}", condition::CHECK_PREFIX, c.id),
            ConditionStatus::False,
            &check_reason(c.id.as_str()),
            &format!("{}: {}", c.subject, c.message),
            now,
        );
    }
}

/// The temporary resources of the engine's state that are not confirmed gone, and the local
/// files that exist.
pub fn temporary_resources(state: &ImportState, files: &[String]) -> Vec<TemporaryResource> {
    let mut out: Vec<TemporaryResource> = state
        .resources()
        .filter(|t| t.is_live())
        .map(|t| TemporaryResource {
            kind: t.kind.as_str().to_owned(),
            id: t.id.clone().unwrap_or_default(),
            name: Some(t.name.clone()).filter(|n| !n.is_empty()),
            state: match t.state {
                ResourceState::Deleting => "deleting".to_owned(),
                _ => "live".to_owned(),
            },
        })
        .collect();
    out.extend(files.iter().map(|f| TemporaryResource {
        kind: "file".into(),
        id: f.clone(),
        name: None,
        state: "live".into(),
    }));
    out
}

/// Per-disk progress: the engine's step, bytes from the live counters (`bytes`), and the
/// cluster side once the disk is handed over.
pub fn disk_progress(
    state: &ImportState,
    bytes: &BTreeMap<usize, (u64, Option<u64>)>,
    dest: Option<&DestinationStatus>,
) -> Vec<DiskProgress> {
    state
        .disks
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let image = dest.and_then(|x| x.images.iter().find(|im| im.disk as usize == i));
            let step = match (image, d.export.step) {
                (Some(im), _) if im.ready => "image ready".to_owned(),
                (Some(_), _) => "image submitted".to_owned(),
                (None, _) if d.output.is_some() => "exported".to_owned(),
                // An OVA's disks come out of the archive's one download.
                (None, _) if is_ova_file(d) && !d.download.done => "download".to_owned(),
                (None, ExportStep::Cleanup | ExportStep::Done) if d.download.done => {
                    "converting".to_owned()
                }
                (None, step) => step_word(step).to_owned(),
            };
            let (done, total) = if d.download.done || d.output.is_some() {
                let size = d.output.as_ref().map_or(d.download.size, |o| o.allocated);
                let size = size.max(d.download.size);
                (size, Some(size))
            } else {
                bytes
                    .get(&i)
                    .copied()
                    .unwrap_or((d.download.checkpoint, None))
            };
            DiskProgress {
                index: u32::try_from(i).unwrap_or(u32::MAX),
                step,
                bytes_done: done,
                bytes_total: total,
            }
        })
        .collect()
}

fn is_ova_file(d: &vmi_engine::state::DiskState) -> bool {
    matches!(
        d.export.source,
        vmi_openstack::export::ExportSource::Local { .. }
    )
}

fn step_word(step: ExportStep) -> &'static str {
    match step {
        ExportStep::CreateSnapshot | ExportStep::AwaitSnapshot => "snapshot",
        ExportStep::CreateVolume | ExportStep::AwaitVolume => "volume",
        ExportStep::UploadImage | ExportStep::CreateServerImage | ExportStep::AwaitImage => {
            "image upload"
        }
        ExportStep::Download => "download",
        ExportStep::Cleanup => "cleanup",
        ExportStep::Done => "exported",
    }
}

/// The upstream per-disk entries (`diskImportStatus`): name, size, image, bus.
pub fn disk_import_status(state: &ImportState, dest: Option<&DestinationStatus>) -> Vec<DiskInfo> {
    let Some(model) = &state.model else {
        return Vec::new();
    };
    model
        .disks
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let out = state.disks.get(i).and_then(|s| s.output.as_ref());
            DiskInfo {
                disk_name: if d.label.is_empty() {
                    format!("disk-{i}")
                } else {
                    d.label.clone()
                },
                disk_size: i64::try_from(d.size_bytes).unwrap_or(i64::MAX),
                disk_local_path: out.map(|o| o.file.clone()),
                disk_route: None,
                virtual_machine_image: dest.and_then(|x| {
                    x.images
                        .iter()
                        .find(|im| im.disk as usize == i)
                        .map(|im| im.name.clone())
                }),
                disk_conditions: Vec::new(),
                bus_type: d.bus.unwrap_or_default(),
            }
        })
        .collect()
}

/// The engine state as the status carries it.
pub fn engine_state_value(state: &ImportState) -> Option<serde_json::Value> {
    serde_json::to_value(state).ok()
}

/// The engine state a status carries, if any and readable.
pub fn engine_state_of(status: &VirtualMachineImportStatus) -> Result<Option<ImportState>, String> {
    match &status.engine_state {
        None => Ok(None),
        Some(v) => serde_json::from_value(v.clone())
            .map(Some)
            .map_err(|e| format!("status.engineState is not readable ({e})")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use vmi_core::preflight::{Check, CheckId};

    #[test]
    fn stages_map_to_the_upstream_values_in_order() {
        use ImportStatus as S;
        let path = [
            (Stage::Engine(Phase::Preflight), None),
            (
                Stage::Engine(Phase::PowerOff),
                Some(S::VirtualMachineImportValid),
            ),
            (Stage::Engine(Phase::Export), Some(S::SourceReady)),
            (Stage::Engine(Phase::Convert), Some(S::DisksExported)),
            (Stage::ImagesSubmitted, Some(S::DiskImagesSubmitted)),
            (Stage::ImagesReady, Some(S::DiskImagesReady)),
            (Stage::VirtualMachineCreated, Some(S::VirtualMachineCreated)),
            (Stage::Running, Some(S::VirtualMachineRunning)),
        ];
        for (stage, want) in path {
            assert_eq!(stage.import_status(), want, "{stage:?}");
        }
        assert_eq!(
            Stage::Invalid.import_status(),
            Some(S::VirtualMachineImportInvalid)
        );
        assert_eq!(
            Stage::Failed.import_status(),
            Some(S::VirtualMachineMigrationFailed)
        );
        assert_eq!(
            Stage::ImageFailed.import_status(),
            Some(S::DiskImagesFailed)
        );
        // A restarted controller reads the same stage back.
        for stage in [
            Stage::ImagesSubmitted,
            Stage::ImagesReady,
            Stage::VirtualMachineCreated,
            Stage::Running,
            Stage::Invalid,
            Stage::ImageFailed,
            Stage::Failed,
        ] {
            let status = VirtualMachineImportStatus {
                import_status: stage.import_status(),
                ..Default::default()
            };
            assert_eq!(Stage::of_status(&status, Phase::Done), stage);
        }
        let status = VirtualMachineImportStatus {
            import_status: Some(S::SourceReady),
            ..Default::default()
        };
        assert_eq!(
            Stage::of_status(&status, Phase::Export),
            Stage::Engine(Phase::Export)
        );
    }

    #[test]
    fn a_condition_keeps_its_transition_time_until_its_status_changes() {
        let mut c = Vec::new();
        assert!(set_condition(
            &mut c,
            "X",
            ConditionStatus::False,
            "A",
            "m",
            "t1"
        ));
        assert!(!set_condition(
            &mut c,
            "X",
            ConditionStatus::False,
            "A",
            "m",
            "t2"
        ));
        assert!(set_condition(
            &mut c,
            "X",
            ConditionStatus::False,
            "B",
            "m2",
            "t3"
        ));
        assert_eq!(c[0].last_transition_time.as_deref(), Some("t1"));
        assert!(set_condition(
            &mut c,
            "X",
            ConditionStatus::True,
            "C",
            "ok",
            "t4"
        ));
        assert_eq!(c[0].last_transition_time.as_deref(), Some("t4"));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn every_failed_check_becomes_a_condition() {
        let mut report = Report::new("apps/web".to_owned());
        report.checks.push(Check::fail(
            CheckId::NetworkSourceExists,
            "nope",
            "no network 'nope' in Neutron",
        ));
        report.checks.push(Check::fail(
            CheckId::NetworkUnmapped,
            "fa:16:3e:00:00:01",
            "NIC on vmi-net-b has no mapping",
        ));
        report
            .checks
            .push(Check::pass(CheckId::SourceAuth, "demo", "ok"));
        let mut c = vec![Condition {
            type_: format!("{}vm.found", condition::CHECK_PREFIX),
            status: ConditionStatus::False,
            last_update_time: None,
            last_transition_time: None,
            reason: None,
            message: None,
        }];
        preflight_failed(&mut c, &report, "now");
        let types: Vec<_> = c.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(
            types,
            [
                "PreflightPassed",
                "PreflightCheckFailed/network.source.exists",
                "PreflightCheckFailed/network.unmapped"
            ]
        );
        assert_eq!(c[1].reason.as_deref(), Some("NetworkSourceExists"));
        assert!(
            c[1].message
                .as_deref()
                .unwrap()
                .contains("nope: no network")
        );
        assert!(
            c[0].message
                .as_deref()
                .unwrap()
                .contains("2 check(s) failed")
        );
    }
}
