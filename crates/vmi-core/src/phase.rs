//! The import as an explicit phase machine.
//!
//! `Preflight → PowerOff → Export → Convert → Manifests → Done`, or `Failed` from any phase.
//! Each phase is idempotent: running it again after a crash continues or re-checks what the
//! persisted state says was done. The shells (CLI, controller) drive the machine; the phase
//! itself is plain data.

use serde::{Deserialize, Serialize};
use vmi_api::ImportStatus;

/// Where an import is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub enum Phase {
    /// Checking that the import can work; nothing on the source is touched.
    Preflight,
    /// Stopping the source VM (only after preflight passed).
    PowerOff,
    /// Exporting every disk from the source to local files (in parallel, bounded).
    Export,
    /// Converting the files to the output format where they differ.
    Convert,
    /// Writing the KubeVirt VirtualMachine and Harvester VirtualMachineImage manifests.
    Manifests,
    Done,
    Failed,
}

impl Phase {
    /// The phase after this one when it succeeded.
    #[must_use]
    pub fn next(self) -> Phase {
        match self {
            Phase::Preflight => Phase::PowerOff,
            Phase::PowerOff => Phase::Export,
            Phase::Export => Phase::Convert,
            Phase::Convert => Phase::Manifests,
            Phase::Manifests | Phase::Done => Phase::Done,
            Phase::Failed => Phase::Failed,
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Done | Phase::Failed)
    }

    /// Whether the source VM may have been touched once this phase started.
    pub fn touches_source(self) -> bool {
        !matches!(self, Phase::Preflight)
    }

    /// The serialised name (`powerOff`), used as a key in timings and metrics.
    pub fn key(self) -> &'static str {
        match self {
            Phase::Preflight => "preflight",
            Phase::PowerOff => "powerOff",
            Phase::Export => "export",
            Phase::Convert => "convert",
            Phase::Manifests => "manifests",
            Phase::Done => "done",
            Phase::Failed => "failed",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Preflight => "preflight",
            Phase::PowerOff => "power off",
            Phase::Export => "export",
            Phase::Convert => "convert",
            Phase::Manifests => "manifests",
            Phase::Done => "done",
            Phase::Failed => "failed",
        }
    }

    /// The upstream `status.importStatus` shown while in this phase, so UIs written for the Go
    /// controller keep working. `preflight_failed` distinguishes an invalid import from one that
    /// failed later.
    pub fn import_status(self, preflight_failed: bool) -> Option<ImportStatus> {
        match self {
            Phase::Preflight => None,
            Phase::PowerOff => Some(ImportStatus::VirtualMachineImportValid),
            Phase::Export => Some(ImportStatus::SourceReady),
            Phase::Convert | Phase::Manifests | Phase::Done => Some(ImportStatus::DisksExported),
            Phase::Failed if preflight_failed => Some(ImportStatus::VirtualMachineImportInvalid),
            Phase::Failed => Some(ImportStatus::VirtualMachineMigrationFailed),
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_happy_path_visits_every_phase_once_in_order() {
        let mut p = Phase::Preflight;
        let mut seen = vec![p];
        while !p.is_terminal() {
            p = p.next();
            seen.push(p);
        }
        assert_eq!(
            seen,
            [
                Phase::Preflight,
                Phase::PowerOff,
                Phase::Export,
                Phase::Convert,
                Phase::Manifests,
                Phase::Done
            ]
        );
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "phases are ordered");
    }

    #[test]
    fn only_preflight_leaves_the_source_untouched() {
        assert!(!Phase::Preflight.touches_source());
        assert!(Phase::PowerOff.touches_source());
    }

    #[test]
    fn upstream_statuses() {
        assert_eq!(
            Phase::Failed.import_status(true),
            Some(ImportStatus::VirtualMachineImportInvalid)
        );
        assert_eq!(
            Phase::Failed.import_status(false),
            Some(ImportStatus::VirtualMachineMigrationFailed)
        );
        assert_eq!(
            Phase::Export.import_status(false),
            Some(ImportStatus::SourceReady)
        );
        assert_eq!(
            Phase::Done.import_status(false),
            Some(ImportStatus::DisksExported)
        );
    }

    #[test]
    fn phases_serialise_as_camel_case_words() {
        assert_eq!(
            serde_json::to_string(&Phase::PowerOff).unwrap(),
            "\"powerOff\""
        );
    }

    #[test]
    fn key_is_the_serialised_name() {
        for p in [
            Phase::Preflight,
            Phase::PowerOff,
            Phase::Export,
            Phase::Convert,
            Phase::Manifests,
            Phase::Done,
            Phase::Failed,
        ] {
            assert_eq!(
                serde_json::to_string(&p).unwrap(),
                format!("\"{}\"", p.key())
            );
        }
    }
}
