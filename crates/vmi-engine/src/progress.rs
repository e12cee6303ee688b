//! Progress reports of a run; the CLI draws bars or prints lines, the controller writes status.

use vmi_core::phase::Phase;

pub trait ProgressSink: Send + Sync {
    fn phase(&self, phase: Phase);
    /// A disk moved to a new step (human-readable).
    fn disk_step(&self, index: usize, label: &str, step: &str);
    fn disk_bytes(&self, index: usize, done: u64, total: Option<u64>);
    /// A line worth telling the user.
    fn note(&self, text: &str);
}

/// Reports nothing.
#[derive(Debug, Default)]
pub struct Silent;

impl ProgressSink for Silent {
    fn phase(&self, _: Phase) {}
    fn disk_step(&self, _: usize, _: &str, _: &str) {}
    fn disk_bytes(&self, _: usize, _: u64, _: Option<u64>) {}
    fn note(&self, _: &str) {}
}
