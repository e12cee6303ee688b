//! Reading an OVA (a tar archive) as a stream from any [`Read`]: a file, a pipe, an HTTP body.
//!
//! [`extract`] writes the files the descriptor references into a scratch directory, one at a
//! time, through a bounded buffer, hashing them as they are written and checking them against
//! the manifest. [`read_descriptor`] stops after the descriptor (for preflight).
//!
//! # Safety rules
//! - Entry names must be plain file names: no `/` (a single leading `./` is dropped, as written
//!   by `tar -C dir .`), no `..`, not absolute, not empty, no NUL, backslash or control
//!   character, at most 255 bytes, UTF-8.
//! - Only regular files are read: symbolic and hard links, devices, FIFOs, directories (other
//!   than the archive root `./`) and GNU sparse entries are rejected, naming the entry.
//! - An entry larger than its OVF `File` declares (when it declares a size), or than the
//!   caller's limit, is rejected before a byte of it is written.
//! - Files are created with `O_CREAT|O_EXCL` directly in the scratch directory (so nothing
//!   pre-existing, a symbolic link included, is followed or overwritten), and every file created
//!   is removed again when extraction fails: on error the scratch directory is left as it was.
//! - A stream that ends early (inside a header, inside an entry, or before the end-of-archive
//!   marker) is reported as truncated.
//!
//! # Entry order
//! The OVF specification puts the descriptor first, then the manifest and certificate, then the
//! files. Other orders are accepted with a warning: files before the descriptor are extracted
//! provisionally (and removed if it turns out not to reference them); a manifest after the
//! files is checked against the digests computed while writing (a file is re-read from the
//! scratch directory only if the manifest uses an algorithm that was not computed).
//!
//! # Manifest
//! With a manifest, every extracted file and the descriptor must be listed in it with a
//! matching digest, and every file it lists must be in the archive. A mismatch fails as soon as
//! the file is written when the manifest came first. Without a manifest, extraction succeeds
//! and [`Ova::manifest`] is `None`: the caller should warn. Certificates (`.cert`) are not
//! verified (a warning says so). Entries the descriptor does not reference are skipped unread
//! and not verified.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use serde::Serialize;
use vmi_disk::digest::file_digests;
use vmi_disk::{Algorithm, Digests, MultiHasher};

use crate::manifest::{self, MAX_MANIFEST_BYTES, Manifest, ManifestError};
use crate::ovf::{self, Envelope, MAX_DESCRIPTOR_BYTES, OvfError};

/// Size of the one buffer file data moves through.
pub const BUFFER_BYTES: usize = 1 << 20;

/// Largest certificate read (and discarded).
const MAX_CERT_BYTES: u64 = 1 << 20;

/// Longest file name accepted (the usual file-system limit).
const MAX_NAME_BYTES: usize = 255;

/// Most entries accepted in one archive (an OVA has a handful).
pub const MAX_ENTRIES: usize = 10_000;

/// Most files extracted provisionally before the descriptor is found.
pub const MAX_FILES_BEFORE_DESCRIPTOR: usize = 64;

/// Caller limits for [`extract`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtractOptions {
    /// Largest file extracted, in bytes.
    pub max_file_bytes: u64,
}

impl Default for ExtractOptions {
    /// 64 TiB: VMDK's own limit is 62 TiB.
    fn default() -> Self {
        ExtractOptions {
            max_file_bytes: 64 << 40,
        }
    }
}

/// The OVF descriptor as found in the archive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Descriptor {
    /// The entry name (`vm.ovf`).
    pub name: String,
    /// Its position among the archive's entries, 0 for the first.
    pub position: usize,
    pub size: u64,
    pub digests: Digests,
    pub envelope: Envelope,
}

/// The manifest as found in the archive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ManifestFile {
    pub name: String,
    pub manifest: Manifest,
}

/// A file written to the scratch directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExtractedFile {
    /// The entry name, which is the `ovf:href` of its `File` element.
    pub name: String,
    /// The `ovf:id` of its `File` element.
    pub file_id: String,
    /// Where it was written: `scratch_dir/name`.
    pub path: PathBuf,
    pub size: u64,
    /// Digests computed while writing (SHA-256 always, plus the manifest's algorithms).
    pub digests: Digests,
    /// The algorithms the manifest verified it with; empty without a manifest.
    pub verified: Vec<Algorithm>,
}

/// The result of [`extract`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Ova {
    pub descriptor: Descriptor,
    /// `None` when the OVA has no manifest: nothing was verified; warn the user.
    pub manifest: Option<ManifestFile>,
    /// The files the descriptor references, in archive order.
    pub files: Vec<ExtractedFile>,
    pub warnings: Vec<ArchiveWarning>,
}

impl Ova {
    /// The extracted file with this entry name (`ovf:href`).
    pub fn file(&self, name: &str) -> Option<&ExtractedFile> {
        self.files.iter().find(|f| f.name == name)
    }
}

/// The result of [`read_descriptor`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DescriptorOnly {
    pub descriptor: Descriptor,
    pub warnings: Vec<ArchiveWarning>,
}

/// Something unusual but accepted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(rename_all = "camelCase", tag = "kind")]
#[non_exhaustive]
pub enum ArchiveWarning {
    #[error(
        "the OVF descriptor {descriptor:?} is entry {} of the archive, not the first \
         (the first is {first_entry:?}); the OVF specification wants it first",
        position + 1
    )]
    DescriptorNotFirst {
        descriptor: String,
        position: usize,
        first_entry: String,
    },
    #[error("the manifest {manifest:?} comes after files it covers; checked after the fact")]
    ManifestAfterFiles { manifest: String },
    #[error("the certificate {name:?} was not verified (signed OVAs are not checked yet)")]
    CertificateNotVerified { name: String },
    #[error("entry {name:?} is not referenced by the OVF descriptor; skipped")]
    UnreferencedEntry { name: String },
    #[error("{name:?} is {actual} bytes, less than the {declared} its OVF File element declares")]
    SmallerThanDeclared {
        name: String,
        declared: u64,
        actual: u64,
    },
}

/// Why an OVA cannot be read. Each names the entry or file at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    #[error("reading the OVA failed: {0}")]
    Read(#[source] io::Error),
    #[error("the OVA is empty")]
    Empty,
    #[error("the OVA is truncated: {detail}; copy or download it again")]
    Truncated { detail: String },
    #[error("the OVA is not a valid tar archive: {detail}")]
    NotTar { detail: String },
    #[error("tar entry {entry:?} is rejected: {reason}; an OVA holds plain file names only")]
    UnsafeName { entry: String, reason: String },
    #[error("tar entry {entry:?} is rejected: it is {kind}; an OVA holds regular files only")]
    NotRegularFile { entry: String, kind: String },
    #[error("tar entry {entry:?} appears twice in the OVA")]
    DuplicateEntry { entry: String },
    #[error("tar entry {entry:?} is {size} bytes, more than {limit} bytes ({what})")]
    TooLarge {
        entry: String,
        size: u64,
        limit: u64,
        what: &'static str,
    },
    #[error("the OVA has no OVF descriptor (no .ovf entry)")]
    NoDescriptor,
    #[error("the OVA has more than {limit} {what}; this is not an OVA vm-import accepts")]
    TooManyEntries { limit: usize, what: &'static str },
    #[error("the OVA has two OVF descriptors, {first:?} and {second:?}")]
    TwoDescriptors { first: String, second: String },
    #[error("the OVA has two manifests, {first:?} and {second:?}")]
    TwoManifests { first: String, second: String },
    #[error("OVF descriptor {name:?}: {source}")]
    Descriptor {
        name: String,
        #[source]
        source: Box<OvfError>,
    },
    #[error("manifest {name:?}: {source}")]
    Manifest {
        name: String,
        #[source]
        source: ManifestError,
    },
    #[error(
        "OVF descriptor {descriptor:?}: File {id:?} has ovf:href {href:?}, which is not a plain \
         file name: an OVA holds its files at the top of the archive"
    )]
    BadHref {
        descriptor: String,
        id: String,
        href: String,
    },
    #[error(
        "OVF descriptor {descriptor:?}: File {id:?} ({href:?}) is {how}; this is not supported"
    )]
    UnsupportedFile {
        descriptor: String,
        id: String,
        href: String,
        how: String,
    },
    #[error("{file:?} is listed in {listed_in} but is not in the OVA")]
    Missing { file: String, listed_in: String },
    #[error(
        "{file:?} is not listed in the manifest {manifest:?}; the package is incomplete or was \
         altered"
    )]
    NotInManifest { file: String, manifest: String },
    #[error(
        "{file:?} does not match the manifest: {algorithm} is {actual}, the manifest says \
         {expected}; the OVA is corrupt or was altered"
    )]
    DigestMismatch {
        file: String,
        algorithm: &'static str,
        expected: String,
        actual: String,
    },
    #[error("scratch directory {}: {source}", path.display())]
    ScratchDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What the wrapped reader has seen, to tell a cut stream from a corrupt one.
#[derive(Clone, Copy, Debug, Default)]
struct ReadState {
    bytes: u64,
    eof: bool,
    failed: bool,
}

struct Tracked<R> {
    inner: R,
    state: Rc<Cell<ReadState>>,
}

impl<R: Read> Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut s = self.state.get();
        let r = loop {
            match self.inner.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                r => break r,
            }
        };
        match &r {
            Ok(0) if !buf.is_empty() => s.eof = true,
            Ok(n) => s.bytes += *n as u64,
            Err(_) => s.failed = true,
        }
        self.state.set(s);
        r
    }
}

/// Turns an I/O error met while reading the archive into the right error.
fn stream_error(state: &Rc<Cell<ReadState>>, e: io::Error, context: &str) -> ArchiveError {
    let s = state.get();
    if s.failed {
        ArchiveError::Read(e)
    } else if s.eof {
        ArchiveError::Truncated {
            detail: format!("{context}: {e} after {} bytes", s.bytes),
        }
    } else {
        // tar's messages can quote a whole garbage header.
        let mut detail = format!("{context}: {e}");
        if detail.len() > 300 {
            let cut = (0..=300)
                .rev()
                .find(|i| detail.is_char_boundary(*i))
                .unwrap_or(0);
            detail.truncate(cut);
            detail.push('…');
        }
        ArchiveError::NotTar { detail }
    }
}

/// Checks a tar entry name; `Ok` is the plain file name.
fn plain_name(raw: &[u8]) -> Result<String, ArchiveError> {
    let shown = String::from_utf8_lossy(raw).into_owned();
    let reject = |reason: &str| ArchiveError::UnsafeName {
        entry: shown.clone(),
        reason: reason.to_owned(),
    };
    let name = raw.strip_prefix(b"./").unwrap_or(raw);
    if name.is_empty() {
        return Err(reject("the name is empty"));
    }
    if name.contains(&0) {
        return Err(reject("the name contains a NUL byte"));
    }
    if name
        .split(|b| *b == b'/' || *b == b'\\')
        .any(|c| c == b"..")
    {
        return Err(reject("the name climbs out of the directory ('..')"));
    }
    if name.starts_with(b"/") {
        return Err(reject("the name is an absolute path"));
    }
    if name.contains(&b'/') {
        return Err(reject("the name is a path (it contains '/')"));
    }
    if name.contains(&b'\\') {
        return Err(reject("the name contains a backslash"));
    }
    if name == b"." {
        return Err(reject("the name is '.'"));
    }
    if name.iter().any(|b| *b < 0x20 || *b == 0x7f) {
        return Err(reject("the name contains a control character"));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(reject("the name is longer than 255 bytes"));
    }
    String::from_utf8(name.to_vec()).map_err(|_| reject("the name is not UTF-8"))
}

/// Decodes `%XX` escapes of a URI reference (`ovf:href` is one); `None` if malformed.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The archive entry names an `ovf:href` may designate: itself, and its percent-decoded form
/// (`ovf:href` is a URI reference), each only if it is a plain file name. Empty when neither is.
fn href_entry_names(href: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for c in [Some(href.to_owned()), percent_decode(href)]
        .into_iter()
        .flatten()
    {
        if plain_name(c.as_bytes()).is_ok_and(|n| n == c) && !names.contains(&c) {
            names.push(c);
        }
    }
    names
}

fn has_extension(name: &str, ext: &str) -> bool {
    name.rsplit_once('.')
        .is_some_and(|(stem, e)| !stem.is_empty() && e.eq_ignore_ascii_case(ext))
}

/// What the entry is, for messages.
fn entry_kind<R: Read>(entry: &tar::Entry<'_, R>) -> Option<String> {
    let ty = entry.header().entry_type();
    let target = || {
        entry
            .link_name_bytes()
            .map(|l| format!(" to {:?}", String::from_utf8_lossy(&l)))
            .unwrap_or_default()
    };
    match ty {
        tar::EntryType::Regular | tar::EntryType::Continuous => None,
        tar::EntryType::Symlink => Some(format!("a symbolic link{}", target())),
        tar::EntryType::Link => Some(format!("a hard link{}", target())),
        tar::EntryType::Char => Some("a character device".into()),
        tar::EntryType::Block => Some("a block device".into()),
        tar::EntryType::Fifo => Some("a FIFO (named pipe)".into()),
        tar::EntryType::Directory => Some("a directory".into()),
        tar::EntryType::GNUSparse => Some("a GNU sparse file".into()),
        other => Some(format!(
            "an entry of tar type {:?}",
            char::from(other.as_byte())
        )),
    }
}

/// Reads a small entry (descriptor, manifest) whole, refusing more than `limit` bytes.
fn read_small<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    name: &str,
    limit: u64,
    what: &'static str,
    state: &Rc<Cell<ReadState>>,
) -> Result<Vec<u8>, ArchiveError> {
    let size = entry.size();
    if size > limit {
        return Err(ArchiveError::TooLarge {
            entry: name.to_owned(),
            size,
            limit,
            what,
        });
    }
    let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    entry
        .take(limit)
        .read_to_end(&mut data)
        .map_err(|e| stream_error(state, e, &format!("reading entry {name:?}")))?;
    if data.len() as u64 != size {
        return Err(ArchiveError::Truncated {
            detail: format!(
                "entry {name:?} declares {size} bytes but the stream ended after {}",
                data.len()
            ),
        });
    }
    Ok(data)
}

/// An entry that passed the name and type checks.
enum Next<'a, R: Read> {
    Entry(Box<tar::Entry<'a, R>>, String),
    Skip,
    End,
}

fn next_entry<'a, R: Read>(
    entries: &mut tar::Entries<'a, R>,
    state: &Rc<Cell<ReadState>>,
) -> Result<Next<'a, R>, ArchiveError> {
    let Some(entry) = entries.next() else {
        let s = state.get();
        if s.bytes == 0 {
            return Err(ArchiveError::Empty);
        }
        if s.eof {
            return Err(ArchiveError::Truncated {
                detail: format!(
                    "the stream ended after {} bytes without the end-of-archive marker",
                    s.bytes
                ),
            });
        }
        return Ok(Next::End);
    };
    let entry = entry.map_err(|e| stream_error(state, e, "reading a tar header"))?;
    let ty = entry.header().entry_type();
    if ty.is_pax_global_extensions() {
        return Ok(Next::Skip);
    }
    let raw = entry.path_bytes().into_owned();
    if ty.is_dir() && matches!(raw.as_slice(), b"." | b"./") {
        return Ok(Next::Skip);
    }
    // The kind first: "disks/ is a directory" says more than "disks/ contains '/'".
    if let Some(kind) = entry_kind(&entry) {
        return Err(ArchiveError::NotRegularFile {
            entry: String::from_utf8_lossy(&raw).into_owned(),
            kind,
        });
    }
    let name = plain_name(&raw)?;
    Ok(Next::Entry(Box::new(entry), name))
}

/// Parses the descriptor entry and checks its `References` can be found in an OVA.
fn descriptor<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    name: &str,
    position: usize,
    state: &Rc<Cell<ReadState>>,
) -> Result<Descriptor, ArchiveError> {
    let data = read_small(
        entry,
        name,
        MAX_DESCRIPTOR_BYTES as u64,
        "the largest OVF descriptor accepted",
        state,
    )?;
    let envelope = ovf::parse(&data).map_err(|source| ArchiveError::Descriptor {
        name: name.to_owned(),
        source: Box::new(source),
    })?;
    for f in &envelope.files {
        if href_entry_names(&f.href).is_empty() {
            return Err(ArchiveError::BadHref {
                descriptor: name.to_owned(),
                id: f.id.clone(),
                href: f.href.clone(),
            });
        }
        let how = match (&f.compression, f.chunk_size) {
            (Some(c), _) => Some(format!("stored {c}-compressed (ovf:compression)")),
            (None, Some(_)) => Some("stored split into chunks (ovf:chunkSize)".to_owned()),
            (None, None) => None,
        };
        if let Some(how) = how {
            return Err(ArchiveError::UnsupportedFile {
                descriptor: name.to_owned(),
                id: f.id.clone(),
                href: f.href.clone(),
                how,
            });
        }
    }
    let mut h = MultiHasher::new(&[Algorithm::Sha1, Algorithm::Sha256, Algorithm::Sha512]);
    h.update(&data);
    Ok(Descriptor {
        name: name.to_owned(),
        position,
        size: data.len() as u64,
        digests: h.finish(),
        envelope,
    })
}

/// Reads the OVA only up to its descriptor, for preflight. Entries before the descriptor (when
/// it is not first, which is warned about) are checked like in [`extract`] and skipped.
pub fn read_descriptor<R: Read>(reader: R) -> Result<DescriptorOnly, ArchiveError> {
    let state = Rc::new(Cell::new(ReadState::default()));
    let mut archive = tar::Archive::new(Tracked {
        inner: reader,
        state: Rc::clone(&state),
    });
    let mut entries = archive
        .entries()
        .map_err(|e| stream_error(&state, e, "opening the archive"))?;
    let mut position = 0usize;
    let mut first: Option<String> = None;
    loop {
        match next_entry(&mut entries, &state)? {
            Next::End => return Err(ArchiveError::NoDescriptor),
            Next::Skip => {}
            Next::Entry(mut entry, name) => {
                if has_extension(&name, "ovf") {
                    let descriptor = descriptor(&mut entry, &name, position, &state)?;
                    let warnings = first
                        .map(|first_entry| ArchiveWarning::DescriptorNotFirst {
                            descriptor: name.clone(),
                            position,
                            first_entry,
                        })
                        .into_iter()
                        .collect();
                    return Ok(DescriptorOnly {
                        descriptor,
                        warnings,
                    });
                }
                first.get_or_insert(name);
                position += 1;
                if position >= MAX_ENTRIES {
                    return Err(ArchiveError::TooManyEntries {
                        limit: MAX_ENTRIES,
                        what: "entries",
                    });
                }
            }
        }
    }
}

/// A file being or having been written.
struct Written {
    file: ExtractedFile,
    /// Position of the entry in the archive.
    position: usize,
}

/// The state of one extraction; everything it created is removed on failure.
struct Extraction<'a> {
    scratch: &'a Path,
    options: &'a ExtractOptions,
    state: Rc<Cell<ReadState>>,
    descriptor: Option<Descriptor>,
    /// Entry name → index of its `File` in the descriptor's References.
    wanted: HashMap<String, usize>,
    manifest: Option<(ManifestFile, usize)>,
    written: Vec<Written>,
    /// Entry names seen, for duplicates and the manifest's completeness.
    seen: HashSet<String>,
    first_entry: Option<String>,
    created: Vec<PathBuf>,
    warnings: Vec<ArchiveWarning>,
    buf: Vec<u8>,
}

/// Streams an OVA from `reader`, writing the files its descriptor references into
/// `scratch_dir` (which must exist) and verifying them against its manifest. See the module
/// documentation for the rules. On error, every file this call created has been removed.
pub fn extract<R: Read>(
    reader: R,
    scratch_dir: &Path,
    options: &ExtractOptions,
) -> Result<Ova, ArchiveError> {
    let meta = std::fs::metadata(scratch_dir).map_err(|source| ArchiveError::ScratchDir {
        path: scratch_dir.to_owned(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(ArchiveError::ScratchDir {
            path: scratch_dir.to_owned(),
            source: io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
        });
    }
    let mut x = Extraction {
        scratch: scratch_dir,
        options,
        state: Rc::new(Cell::new(ReadState::default())),
        descriptor: None,
        wanted: HashMap::new(),
        manifest: None,
        written: Vec::new(),
        seen: HashSet::new(),
        first_entry: None,
        created: Vec::new(),
        warnings: Vec::new(),
        buf: Vec::new(),
    };
    let result = x.run(reader);
    if result.is_err() {
        for p in &x.created {
            let _ = std::fs::remove_file(p);
        }
    }
    result
}

impl Extraction<'_> {
    fn run<R: Read>(&mut self, reader: R) -> Result<Ova, ArchiveError> {
        let mut archive = tar::Archive::new(Tracked {
            inner: reader,
            state: Rc::clone(&self.state),
        });
        let mut entries = archive
            .entries()
            .map_err(|e| stream_error(&self.state, e, "opening the archive"))?;
        let mut position = 0usize;
        loop {
            match next_entry(&mut entries, &self.state)? {
                Next::End => break,
                Next::Skip => {}
                Next::Entry(mut entry, name) => {
                    if position >= MAX_ENTRIES {
                        return Err(ArchiveError::TooManyEntries {
                            limit: MAX_ENTRIES,
                            what: "entries",
                        });
                    }
                    if !self.seen.insert(name.clone()) {
                        return Err(ArchiveError::DuplicateEntry { entry: name });
                    }
                    self.entry(&mut entry, &name, position)?;
                    self.first_entry.get_or_insert(name);
                    position += 1;
                }
            }
        }
        self.finish()
    }

    fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        name: &str,
        position: usize,
    ) -> Result<(), ArchiveError> {
        if has_extension(name, "ovf") {
            self.descriptor_entry(entry, name, position)
        } else if has_extension(name, "mf") {
            self.manifest_entry(entry, name, position)
        } else if has_extension(name, "cert") {
            read_small(
                entry,
                name,
                MAX_CERT_BYTES,
                "the largest certificate accepted",
                &self.state,
            )?;
            self.warnings.push(ArchiveWarning::CertificateNotVerified {
                name: name.to_owned(),
            });
            Ok(())
        } else {
            self.file_entry(entry, name, position)
        }
    }

    fn descriptor_entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        name: &str,
        position: usize,
    ) -> Result<(), ArchiveError> {
        if let Some(d) = &self.descriptor {
            return Err(ArchiveError::TwoDescriptors {
                first: d.name.clone(),
                second: name.to_owned(),
            });
        }
        let d = descriptor(entry, name, position, &self.state)?;
        if let Some(first_entry) = &self.first_entry {
            self.warnings.push(ArchiveWarning::DescriptorNotFirst {
                descriptor: name.to_owned(),
                position,
                first_entry: first_entry.clone(),
            });
        }
        self.wanted = d
            .envelope
            .files
            .iter()
            .enumerate()
            .flat_map(|(i, f)| href_entry_names(&f.href).into_iter().map(move |n| (n, i)))
            .collect();
        self.descriptor = Some(d);
        self.settle_provisional()?;
        self.verify_known()
    }

    fn manifest_entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        name: &str,
        position: usize,
    ) -> Result<(), ArchiveError> {
        if let Some((m, _)) = &self.manifest {
            return Err(ArchiveError::TwoManifests {
                first: m.name.clone(),
                second: name.to_owned(),
            });
        }
        let data = read_small(
            entry,
            name,
            MAX_MANIFEST_BYTES as u64,
            "the largest manifest accepted",
            &self.state,
        )?;
        let manifest = manifest::parse(&data).map_err(|source| ArchiveError::Manifest {
            name: name.to_owned(),
            source,
        })?;
        if !self.written.is_empty() {
            self.warnings.push(ArchiveWarning::ManifestAfterFiles {
                manifest: name.to_owned(),
            });
        }
        self.manifest = Some((
            ManifestFile {
                name: name.to_owned(),
                manifest,
            },
            position,
        ));
        self.verify_known()
    }

    /// A file: written if the descriptor references it, or provisionally if the descriptor
    /// has not been seen yet; skipped otherwise.
    fn file_entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        name: &str,
        position: usize,
    ) -> Result<(), ArchiveError> {
        let (file_id, declared) = if let Some(d) = &self.descriptor {
            let Some(f) = self.wanted.get(name).and_then(|i| d.envelope.files.get(*i)) else {
                self.warnings.push(ArchiveWarning::UnreferencedEntry {
                    name: name.to_owned(),
                });
                return Ok(());
            };
            (f.id.clone(), f.size)
        } else {
            if self.written.len() >= MAX_FILES_BEFORE_DESCRIPTOR {
                return Err(ArchiveError::TooManyEntries {
                    limit: MAX_FILES_BEFORE_DESCRIPTOR,
                    what: "files before its OVF descriptor",
                });
            }
            (String::new(), None)
        };
        let size = entry.size();
        check_size(name, size, declared, *self.options)?;
        let mut algorithms = vec![Algorithm::Sha256];
        match &self.manifest {
            Some((m, _)) => algorithms.extend(m.manifest.algorithms_for(name)),
            None => algorithms.push(Algorithm::Sha1),
        }
        algorithms.sort();
        algorithms.dedup();
        let file = self.write(entry, name, size, &algorithms)?;
        self.written.push(Written {
            file: ExtractedFile { file_id, ..file },
            position,
        });
        if let Some(d) = declared {
            self.note_smaller(name, d, size);
        }
        self.verify_known()
    }

    fn note_smaller(&mut self, name: &str, declared: u64, actual: u64) {
        if actual < declared {
            self.warnings.push(ArchiveWarning::SmallerThanDeclared {
                name: name.to_owned(),
                declared,
                actual,
            });
        }
    }

    /// Streams one entry into `scratch/name`, hashing it.
    fn write<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        name: &str,
        size: u64,
        algorithms: &[Algorithm],
    ) -> Result<ExtractedFile, ArchiveError> {
        let path = self.scratch.join(name);
        let mut out: File = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|source| ArchiveError::Write {
                path: path.clone(),
                source,
            })?;
        self.created.push(path.clone());
        if self.buf.is_empty() {
            self.buf = vec![0u8; BUFFER_BYTES];
        }
        let mut hasher = MultiHasher::new(algorithms);
        let mut done = 0u64;
        loop {
            let n = entry
                .read(&mut self.buf)
                .map_err(|e| stream_error(&self.state, e, &format!("reading entry {name:?}")))?;
            if n == 0 {
                break;
            }
            let Some(chunk) = self.buf.get(..n) else {
                return Err(ArchiveError::Read(io::Error::other(
                    "the reader returned more bytes than asked for",
                )));
            };
            hasher.update(chunk);
            out.write_all(chunk).map_err(|source| ArchiveError::Write {
                path: path.clone(),
                source,
            })?;
            done += n as u64;
        }
        if done != size {
            return Err(ArchiveError::Truncated {
                detail: format!(
                    "entry {name:?} declares {size} bytes but the stream ended after {done}"
                ),
            });
        }
        out.flush().map_err(|source| ArchiveError::Write {
            path: path.clone(),
            source,
        })?;
        Ok(ExtractedFile {
            name: name.to_owned(),
            file_id: String::new(),
            path,
            size,
            digests: hasher.finish(),
            verified: Vec::new(),
        })
    }

    /// Once the descriptor is known: files written before it that it does not reference are
    /// removed; the others get their `File` id and their size checked.
    fn settle_provisional(&mut self) -> Result<(), ArchiveError> {
        let Some(d) = &self.descriptor else {
            return Ok(());
        };
        let files = d.envelope.files.clone();
        let mut kept = Vec::new();
        for mut w in std::mem::take(&mut self.written) {
            let Some(f) = self.wanted.get(&w.file.name).and_then(|i| files.get(*i)) else {
                let _ = std::fs::remove_file(&w.file.path);
                self.created.retain(|p| *p != w.file.path);
                self.warnings.push(ArchiveWarning::UnreferencedEntry {
                    name: w.file.name.clone(),
                });
                continue;
            };
            check_size(&w.file.name, w.file.size, f.size, *self.options)?;
            if let Some(declared) = f.size {
                self.note_smaller(&w.file.name, declared, w.file.size);
            }
            w.file.file_id.clone_from(&f.id);
            kept.push(w);
        }
        self.written = kept;
        Ok(())
    }

    /// Checks against the manifest (when known) whatever is known and not yet checked.
    fn verify_known(&mut self) -> Result<(), ArchiveError> {
        let Some((m, _)) = &self.manifest else {
            return Ok(());
        };
        if let Some(d) = &self.descriptor {
            verify(&m.manifest, &m.name, &d.name, &d.digests, None)?;
        }
        for w in &mut self.written {
            if w.file.verified.is_empty() {
                w.file.verified = verify(
                    &m.manifest,
                    &m.name,
                    &w.file.name,
                    &w.file.digests,
                    Some(&w.file.path),
                )?;
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<Ova, ArchiveError> {
        let descriptor = self.descriptor.take().ok_or(ArchiveError::NoDescriptor)?;
        let written: HashSet<&str> = self.written.iter().map(|w| w.file.name.as_str()).collect();
        for f in &descriptor.envelope.files {
            let names = href_entry_names(&f.href);
            if !names.iter().any(|n| written.contains(n.as_str())) {
                return Err(ArchiveError::Missing {
                    file: f.href.clone(),
                    listed_in: format!("the OVF descriptor's References (File {:?})", f.id),
                });
            }
        }
        if let Some((m, _)) = &self.manifest {
            for listed in m.manifest.file_names() {
                if !self.seen.contains(listed) {
                    return Err(ArchiveError::Missing {
                        file: listed.to_owned(),
                        listed_in: format!("the manifest {:?}", m.name),
                    });
                }
            }
        }
        self.descriptor = Some(descriptor);
        self.verify_known()?;
        let descriptor = self.descriptor.take().ok_or(ArchiveError::NoDescriptor)?;
        let mut written = std::mem::take(&mut self.written);
        written.sort_by_key(|w| w.position);
        Ok(Ova {
            descriptor,
            manifest: self.manifest.take().map(|(m, _)| m),
            files: written.into_iter().map(|w| w.file).collect(),
            warnings: std::mem::take(&mut self.warnings),
        })
    }
}

fn check_size(
    name: &str,
    size: u64,
    declared: Option<u64>,
    options: ExtractOptions,
) -> Result<(), ArchiveError> {
    if let Some(d) = declared
        && size > d
    {
        return Err(ArchiveError::TooLarge {
            entry: name.to_owned(),
            size,
            limit: d,
            what: "the size its OVF File element declares",
        });
    }
    if size > options.max_file_bytes {
        return Err(ArchiveError::TooLarge {
            entry: name.to_owned(),
            size,
            limit: options.max_file_bytes,
            what: "the largest file accepted",
        });
    }
    Ok(())
}

/// Checks `digests` of `file` against the manifest; returns the algorithms checked. A file the
/// manifest does not list fails. An algorithm not computed while streaming is computed from
/// `path` (when given).
fn verify(
    manifest: &Manifest,
    manifest_name: &str,
    file: &str,
    digests: &Digests,
    path: Option<&Path>,
) -> Result<Vec<Algorithm>, ArchiveError> {
    let entries: Vec<_> = manifest.for_file(file).collect();
    if entries.is_empty() {
        return Err(ArchiveError::NotInManifest {
            file: file.to_owned(),
            manifest: manifest_name.to_owned(),
        });
    }
    let mut checked = Vec::new();
    for e in entries {
        let actual = match (digests.get(e.algorithm), path) {
            (Some(d), _) => d.to_owned(),
            (None, Some(p)) => file_digests(p, &[e.algorithm])
                .map_err(|source| ArchiveError::Write {
                    path: p.to_owned(),
                    source,
                })?
                .get(e.algorithm)
                .unwrap_or_default()
                .to_owned(),
            (None, None) => continue,
        };
        if actual != e.digest {
            return Err(ArchiveError::DigestMismatch {
                file: file.to_owned(),
                algorithm: algorithm_label(e.algorithm),
                expected: e.digest.clone(),
                actual,
            });
        }
        checked.push(e.algorithm);
    }
    Ok(checked)
}

fn algorithm_label(a: Algorithm) -> &'static str {
    match a {
        Algorithm::Md5 => "MD5",
        Algorithm::Sha1 => "SHA1",
        Algorithm::Sha256 => "SHA256",
        Algorithm::Sha512 => "SHA512",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case(b"vm.ovf", Ok("vm.ovf"))]
    #[case(b"./vm-disk1.vmdk", Ok("vm-disk1.vmdk"))]
    #[case(b"my disk (1).vmdk", Ok("my disk (1).vmdk"))]
    #[case(b"../x", Err("climbs out"))]
    #[case(b"a/../../x", Err("climbs out"))]
    #[case(b"..", Err("climbs out"))]
    #[case(b"/etc/x", Err("absolute"))]
    #[case(b"dir/x", Err("contains '/'"))]
    #[case(b"./", Err("empty"))]
    #[case(b"", Err("empty"))]
    #[case(b"a\0b", Err("NUL"))]
    #[case(b"a\\b", Err("backslash"))]
    #[case(b".", Err("'.'"))]
    #[case(b"a\nb", Err("control"))]
    #[case(b"\xff.vmdk", Err("UTF-8"))]
    fn entry_names(#[case] raw: &[u8], #[case] want: Result<&str, &str>) {
        match (plain_name(raw), want) {
            (Ok(n), Ok(w)) => assert_eq!(n, w),
            (Err(e), Err(w)) => assert!(e.to_string().contains(w), "{e}"),
            (got, want) => panic!("{got:?} vs {want:?}"),
        }
    }

    #[rstest]
    #[case("disk1.vmdk", &["disk1.vmdk"])]
    #[case("my%20disk.vmdk", &["my%20disk.vmdk", "my disk.vmdk"])]
    #[case("100%.vmdk", &["100%.vmdk"])]
    #[case("../disk1.vmdk", &[])]
    #[case("http://example.com/disk1.vmdk", &[])]
    #[case("%2e%2e%2fx", &["%2e%2e%2fx"])]
    fn hrefs(#[case] href: &str, #[case] want: &[&str]) {
        assert_eq!(href_entry_names(href), want);
    }
}
