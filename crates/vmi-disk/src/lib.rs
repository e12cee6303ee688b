//! The disk pipeline of vm-import: a streamed download that writes zero blocks as holes,
//! computes digests on the fly, verifies the source's checksum, resumes with ranges after a cut
//! and after a restart, and a thin wrapper around `qemu-img`.
//!
//! Memory stays flat whatever the disk size: data moves in bounded chunks through a bounded
//! channel from the network task to one writer thread.

pub mod digest;
pub mod download;
pub mod qcow2;
pub mod qemu_img;
pub mod sparse;
pub mod vmdk;

pub use digest::{Algorithm, Digests, MultiHasher};
pub use download::{Checkpoint, DownloadError, DownloadOutcome, Expected, RangeSource, download};
