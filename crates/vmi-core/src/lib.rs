//! The pure core of vm-import: plain functions over plain data, no HTTP, no Kubernetes client,
//! no file system. Sources (OpenStack, OVA) gather facts through their own I/O shells and hand
//! them to these functions; the CLI and the controller render what comes back.

pub mod input;
pub mod manifest;
pub mod model;
pub mod names;
pub mod network;
pub mod phase;
pub mod preflight;
pub mod secret;

pub use secret::Sensitive;
