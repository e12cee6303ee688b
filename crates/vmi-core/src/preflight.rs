//! Preflight reports: stable check ids, statuses and the report both front doors print.

use serde::{Serialize, Serializer};
use std::fmt::{self, Write as _};

/// Stable identifiers of preflight checks; documented in `docs/preflight.md`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum CheckId {
    /// TLS verification of the source endpoint is on (a warning when turned off).
    SourceTls,
    /// Credentials work and the catalog has the services an import needs.
    SourceAuth,
    /// The OVA archive or descriptor can be read.
    SourceReadable,
    /// The VM resolves to exactly one source VM.
    VmFound,
    /// The VM is in a state that allows an export.
    VmState,
    /// The imported name is a valid DNS-1123 label after sanitising.
    VmName,
    /// A source network is listed more than once in the mapping.
    NetworkMappingDuplicate,
    /// Each mapped source network exists (for OpenStack: in Neutron) and is unambiguous.
    NetworkSourceExists,
    /// Each mapped source network carries at least one of the VM's NICs.
    NetworkSourceUsed,
    /// NICs on networks that have no mapping.
    NetworkUnmapped,
    /// Destination networks are well formed and exist where a cluster is reachable.
    NetworkDestination,
    /// Every disk can be exported.
    DiskExportable,
    /// The source project's quota leaves room for the temporary resources.
    Quota,
    /// The storage class exists where a cluster is reachable.
    StorageClass,
}

impl CheckId {
    pub const fn as_str(self) -> &'static str {
        match self {
            CheckId::SourceTls => "source.tls",
            CheckId::SourceAuth => "source.auth",
            CheckId::SourceReadable => "source.readable",
            CheckId::VmFound => "vm.found",
            CheckId::VmState => "vm.state",
            CheckId::VmName => "vm.name",
            CheckId::NetworkMappingDuplicate => "network.mapping.duplicate",
            CheckId::NetworkSourceExists => "network.source.exists",
            CheckId::NetworkSourceUsed => "network.source.used",
            CheckId::NetworkUnmapped => "network.unmapped",
            CheckId::NetworkDestination => "network.destination",
            CheckId::DiskExportable => "disk.exportable",
            CheckId::Quota => "quota",
            CheckId::StorageClass => "storage.class",
        }
    }
}

impl fmt::Display for CheckId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for CheckId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    Pass,
    Warn,
    Fail,
    Skip,
}

impl CheckStatus {
    fn label(self) -> &'static str {
        match self {
            CheckStatus::Pass => "PASS",
            CheckStatus::Warn => "WARN",
            CheckStatus::Fail => "FAIL",
            CheckStatus::Skip => "SKIP",
        }
    }
}

/// One check: what was checked (`subject`), its outcome and a message that says what was found
/// and, when it is not a pass, what to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    pub id: CheckId,
    pub status: CheckStatus,
    pub subject: String,
    pub message: String,
}

impl Check {
    pub fn new(
        id: CheckId,
        status: CheckStatus,
        subject: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            id,
            status,
            subject: subject.into(),
            message: message.into(),
        }
    }
    pub fn pass(id: CheckId, subject: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(id, CheckStatus::Pass, subject, message)
    }
    pub fn warn(id: CheckId, subject: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(id, CheckStatus::Warn, subject, message)
    }
    pub fn fail(id: CheckId, subject: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(id, CheckStatus::Fail, subject, message)
    }
    pub fn skip(id: CheckId, subject: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(id, CheckStatus::Skip, subject, message)
    }
}

/// The result of a preflight run for one import.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// `namespace/name` of the VirtualMachineImport.
    pub import: String,
    pub checks: Vec<Check>,
}

#[derive(Serialize)]
struct ReportJson<'a> {
    import: &'a str,
    passed: bool,
    checks: &'a [Check],
}

impl Serialize for Report {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        ReportJson {
            import: &self.import,
            passed: self.passed(),
            checks: &self.checks,
        }
        .serialize(s)
    }
}

/// Counts of each status in a report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub pass: usize,
    pub warn: usize,
    pub fail: usize,
    pub skip: usize,
}

impl Report {
    pub fn new(import: impl Into<String>) -> Self {
        Self {
            import: import.into(),
            checks: Vec::new(),
        }
    }

    /// Orders the checks by id, in the documented order (stable: checks of one id keep the
    /// order they were added in).
    #[must_use]
    pub fn sorted(mut self) -> Self {
        self.checks.sort_by_key(|c| c.id);
        self
    }

    /// True when no check failed (warnings and skips allowed).
    pub fn passed(&self) -> bool {
        !self.checks.iter().any(|c| c.status == CheckStatus::Fail)
    }

    pub fn failed(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| c.status == CheckStatus::Fail)
    }

    pub fn tally(&self) -> Tally {
        let mut t = Tally::default();
        for c in &self.checks {
            match c.status {
                CheckStatus::Pass => t.pass += 1,
                CheckStatus::Warn => t.warn += 1,
                CheckStatus::Fail => t.fail += 1,
                CheckStatus::Skip => t.skip += 1,
            }
        }
        t
    }

    /// The human-readable report, one line per check plus a summary line.
    pub fn render_text(&self) -> String {
        let mut out = format!("Preflight for VirtualMachineImport {}\n", self.import);
        let id_width = self
            .checks
            .iter()
            .map(|c| c.id.as_str().len())
            .max()
            .unwrap_or(0);
        for c in &self.checks {
            let _ = write!(
                out,
                "  {}  {:<id_width$}  ",
                c.status.label(),
                c.id.as_str()
            );
            if !c.subject.is_empty() {
                let _ = write!(out, "[{}] ", c.subject);
            }
            let _ = writeln!(out, "{}", c.message);
        }
        let t = self.tally();
        let verdict = if self.passed() { "PASSED" } else { "FAILED" };
        let _ = writeln!(
            out,
            "Result: {verdict} ({} failed, {} warnings, {} passed, {} skipped)",
            t.fail, t.warn, t.pass, t.skip
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        let mut r = Report::new("default/demo");
        r.checks
            .push(Check::pass(CheckId::SourceAuth, "", "logged in"));
        r.checks.push(Check::warn(
            CheckId::NetworkUnmapped,
            "fa:16:3e:00:00:01",
            "no mapping",
        ));
        r
    }

    #[test]
    fn warnings_do_not_fail_a_report() {
        let mut r = sample();
        assert!(r.passed());
        r.checks
            .push(Check::fail(CheckId::VmFound, "x", "not found"));
        assert!(!r.passed());
        assert_eq!(
            r.tally(),
            Tally {
                pass: 1,
                warn: 1,
                fail: 1,
                skip: 0
            }
        );
    }

    #[test]
    fn json_has_the_documented_shape() {
        let v = serde_json::to_value(sample()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "import": "default/demo",
                "passed": true,
                "checks": [
                    {"id": "source.auth", "status": "pass", "subject": "", "message": "logged in"},
                    {"id": "network.unmapped", "status": "warn", "subject": "fa:16:3e:00:00:01",
                     "message": "no mapping"}
                ]
            })
        );
    }

    #[test]
    fn text_lists_every_check_and_a_verdict() {
        insta::assert_snapshot!(sample().render_text(), @r"
        Preflight for VirtualMachineImport default/demo
          PASS  source.auth       logged in
          WARN  network.unmapped  [fa:16:3e:00:00:01] no mapping
        Result: PASSED (0 failed, 1 warnings, 1 passed, 0 skipped)
        ");
    }
}
