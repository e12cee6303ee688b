//! The OVA source of vm-import: OVF descriptors ([`ovf`]), manifests ([`manifest`]), and the
//! streamed, verified extraction of OVA archives ([`archive`]).
//!
//! `ovf` and `manifest` are pure functions over bytes; `archive` is the I/O shell: it reads a
//! tar stream from any `std::io::Read` and writes into a caller-given scratch directory.

pub mod archive;
pub mod manifest;
pub mod ovf;
pub mod preflight;
mod units;
mod xml;

pub use archive::{
    ArchiveError, ArchiveWarning, DescriptorOnly, ExtractOptions, ExtractedFile, Ova, extract,
    read_descriptor,
};
pub use manifest::{Manifest, ManifestEntry, ManifestError};
pub use ovf::{Envelope, OvfError, Selection, describe};
