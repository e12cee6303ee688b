//! The import engine, shared by the CLI and the controller.
//!
//! [`driver::Driver`] is the phase machine as steps that never sleep; it drives the phase machine of `vmi_core::phase` over the OpenStack source: preflight, power
//! off, export of every disk in parallel (bounded), conversion, manifests. Every change of state
//! goes through a [`journal::Journal`] before the engine waits on anything, so that a run killed
//! at any moment resumes where it stopped, with no second snapshot, volume or image, and so that
//! cleanup can always find what is left.

pub mod driver;
pub mod journal;
pub mod ova;
pub mod progress;
pub mod run;
pub mod source;
pub mod state;
pub mod summary;

pub use driver::{Driver, Source, Step};
pub use journal::Journal;
pub use progress::ProgressSink;
pub use run::{ClusterView, EngineError, EngineOptions, OutputFormat, cleanup, run};
pub use state::ImportState;
pub use summary::Summary;
