//! A resumable, verified, sparse download.
//!
//! The network side reads the source in chunks and hands them, through a bounded channel, to
//! one writer thread that feeds the hashers and writes non-zero blocks (zero blocks become
//! holes). Every `checkpoint_every` bytes the writer syncs the file and the caller is told the
//! durable offset, which it persists: after a crash the download restarts from that offset, with
//! the hashers rebuilt from the bytes already on disk. A connection cut mid-way is resumed with
//! a ranged request. Nothing is held in memory beyond the channel's few chunks.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::digest::{Algorithm, Digests, MultiHasher};
use crate::sparse::SparseWriter;

/// Why a source could not deliver.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SourceError {
    pub message: String,
    /// Worth retrying (cut connection, timeout, 5xx).
    pub transient: bool,
}

/// Data opened at an offset.
pub struct RangeStream {
    /// First byte of `body`; 0 when the source ignored the requested offset.
    pub start: u64,
    /// Total size, when the source says.
    pub total: Option<u64>,
    pub body: BoxStream<'static, Result<Bytes, SourceError>>,
}

impl std::fmt::Debug for RangeStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RangeStream")
            .field("start", &self.start)
            .field("total", &self.total)
            .finish_non_exhaustive()
    }
}

/// Something that serves bytes from an offset (a Glance image, an HTTP URL, a file).
#[async_trait]
pub trait RangeSource: Send + Sync {
    async fn open(&self, offset: u64) -> Result<RangeStream, SourceError>;
    /// For messages: "image 1234… in Glance".
    fn describe(&self) -> String;
}

/// What the data must be.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expected {
    pub size: Option<u64>,
    /// The source's published digest, verified at the end.
    pub digest: Option<(Algorithm, String)>,
}

/// Bytes known to be durably in the file (persisted by the caller between runs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Checkpoint {
    pub offset: u64,
}

/// What the download writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Output {
    /// The bytes as they come (zero blocks as holes); resumable after a restart.
    #[default]
    AsIs,
    /// A monolithicSparse VMDK stream converted on the fly into qcow2: no intermediate file.
    /// A restart begins again from byte 0 (the converter's state is not persisted); a cut
    /// connection still resumes with a range.
    VmdkToQcow2,
    /// A monolithicSparse VMDK stream converted on the fly into a sparse raw file.
    VmdkToRaw,
}

/// Tuning of a download.
#[derive(Clone, Debug)]
pub struct Options {
    /// What is written.
    pub output: Output,
    /// Digests computed besides the verified one.
    pub extra_digests: Vec<Algorithm>,
    /// Sync and report a checkpoint every so many bytes.
    pub checkpoint_every: u64,
    /// Ranged re-opens after a cut connection before giving up.
    pub max_resumes: u32,
    pub resume_backoff: Duration,
    /// Chunks in flight between the network and the writer.
    pub channel_depth: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            output: Output::AsIs,
            extra_digests: vec![Algorithm::Sha256, Algorithm::Sha512],
            checkpoint_every: 256 << 20,
            max_resumes: 10,
            resume_backoff: Duration::from_millis(500),
            channel_depth: 16,
        }
    }
}

/// Progress reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Bytes received so far and the total when known.
    Bytes { done: u64, total: Option<u64> },
    /// Everything before `offset` is durably on disk: persist it.
    Checkpoint(Checkpoint),
}

/// The result of a download.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DownloadOutcome {
    pub path: PathBuf,
    /// Bytes received (the source's size).
    pub size: u64,
    /// Digests of the bytes received (for [`Output::AsIs`] also those of the file).
    pub digests: Digests,
    /// Size of the written file.
    pub file_size: u64,
    /// SHA-256 and SHA-512 of the written file, when known without reading it back: for
    /// [`Output::AsIs`] (the file is the stream) and for a VMDK written as planned qcow2.
    pub file_digests: Option<Digests>,
    /// Where this run started (0, or the checkpoint it resumed from).
    pub resumed_from: u64,
    /// Ranged re-opens after cut connections during this run.
    pub resumes: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("{source_name}: {error}")]
    Source {
        source_name: String,
        error: SourceError,
    },
    #[error("{source_name}: the connection was cut {resumes} times; last error: {error}")]
    TooManyResumes {
        source_name: String,
        resumes: u32,
        error: SourceError,
    },
    #[error("writing {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{source_name}: got {got} bytes, expected {expected}")]
    Size {
        source_name: String,
        got: u64,
        expected: u64,
    },
    #[error(
        "{source_name}: {algorithm} of the downloaded data is {actual}, the source publishes \
         {expected}: the data is corrupt; the partial file was removed, run again to download it anew"
    )]
    Mismatch {
        source_name: String,
        algorithm: &'static str,
        expected: String,
        actual: String,
    },
    #[error("{source_name}: converting the VMDK stream: {error}")]
    Convert { source_name: String, error: String },
}

/// Where the writer thread puts the bytes.
#[allow(clippy::large_enum_variant)] // one per download, lives for the download
enum Sink {
    AsIs(SparseWriter),
    Vmdk {
        stream: crate::vmdk::VmdkStream,
        target: VmdkTarget,
    },
}

#[allow(clippy::large_enum_variant)] // one per download, lives for the download
enum VmdkTarget {
    /// Waiting for the VMDK metadata (the file is not written yet).
    Pending {
        file: Option<File>,
        qcow2: bool,
    },
    /// Grains of one cluster each: the qcow2 file is laid out from the grain tables and
    /// written (and hashed) strictly in order.
    Planned(crate::qcow2::PlannedQcow2Writer),
    /// Other grain sizes: a qcow2 writer that seeks.
    Qcow2(crate::qcow2::Qcow2Writer),
    Raw(SparseWriter),
}

fn other(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl Sink {
    fn new(output: Output, file: File, offset: u64) -> std::io::Result<Sink> {
        let stream = crate::vmdk::VmdkStream::new();
        Ok(match output {
            Output::AsIs => Sink::AsIs(SparseWriter::new(file, offset)?),
            Output::VmdkToQcow2 => Sink::Vmdk {
                stream,
                target: VmdkTarget::Pending {
                    file: Some(file),
                    qcow2: true,
                },
            },
            Output::VmdkToRaw => Sink::Vmdk {
                stream,
                target: VmdkTarget::Pending {
                    file: Some(file),
                    qcow2: false,
                },
            },
        })
    }

    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::AsIs(w) => w.write(data),
            Sink::Vmdk { stream, target } => {
                let mut data = data;
                // Feed the header, then the metadata, alone: the writer is chosen and laid
                // out before the first grain.
                while matches!(target, VmdkTarget::Pending { .. }) && !data.is_empty() {
                    let until = stream.metadata_end().unwrap_or(512);
                    let n = usize::try_from(until.saturating_sub(stream.position()))
                        .unwrap_or(0)
                        .min(data.len());
                    stream
                        .feed(&data[..n], &mut |_| {
                            Err(other("VMDK data inside its metadata"))
                        })
                        .map_err(other)?;
                    data = &data[n..];
                    if stream
                        .metadata_end()
                        .is_some_and(|end| stream.position() >= end)
                    {
                        target.choose(stream)?;
                    }
                }
                stream.feed(data, &mut |e| target.write(&e)).map_err(other)
            }
        }
    }

    fn sync(&mut self) -> std::io::Result<()> {
        match self {
            Sink::AsIs(w)
            | Sink::Vmdk {
                target: VmdkTarget::Raw(w),
                ..
            } => w.sync(),
            Sink::Vmdk {
                target: VmdkTarget::Qcow2(w),
                ..
            } => w.sync().map_err(other),
            Sink::Vmdk { .. } => Ok(()),
        }
    }

    /// Ends the file; returns its size and, when known without reading it back, its digests.
    fn finish(self) -> std::io::Result<(u64, Option<Digests>)> {
        match self {
            Sink::AsIs(w) => {
                let pos = w.position();
                w.finish()?;
                Ok((pos, None))
            }
            Sink::Vmdk {
                mut stream,
                mut target,
            } => {
                stream.finish(&mut |e| target.write(&e)).map_err(other)?;
                let capacity = stream.capacity().unwrap_or(0);
                match target {
                    VmdkTarget::Raw(mut w) => {
                        w.write_at(capacity, &[])?;
                        let pos = w.position();
                        w.finish()?;
                        Ok((pos, None))
                    }
                    VmdkTarget::Qcow2(w) => Ok((w.finish().map_err(other)?, None)),
                    VmdkTarget::Planned(w) => {
                        let (size, digests) = w.finish().map_err(other)?;
                        Ok((size, Some(digests)))
                    }
                    VmdkTarget::Pending { .. } => {
                        Err(other("the VMDK stream ended inside its metadata"))
                    }
                }
            }
        }
    }
}

impl VmdkTarget {
    /// Picks the writer once the VMDK metadata is known.
    fn choose(&mut self, stream: &crate::vmdk::VmdkStream) -> std::io::Result<()> {
        let VmdkTarget::Pending { file, qcow2 } = self else {
            return Ok(());
        };
        let file = file.take().ok_or_else(|| other("no output file"))?;
        let capacity = stream.capacity().unwrap_or(0);
        *self = if *qcow2 {
            match stream.allocation() {
                Some((grain, runs)) if grain == crate::qcow2::CLUSTER_SIZE => VmdkTarget::Planned(
                    crate::qcow2::PlannedQcow2Writer::new(
                        file,
                        capacity,
                        runs,
                        &[Algorithm::Sha256, Algorithm::Sha512],
                    )
                    .map_err(other)?,
                ),
                _ => VmdkTarget::Qcow2(
                    crate::qcow2::Qcow2Writer::new(file, capacity).map_err(other)?,
                ),
            }
        } else {
            VmdkTarget::Raw(SparseWriter::new(file, 0)?)
        };
        Ok(())
    }

    fn write(&mut self, e: &crate::vmdk::Extent<'_>) -> std::io::Result<()> {
        match self {
            VmdkTarget::Raw(w) => w.write_at(e.guest_offset, e.data),
            VmdkTarget::Qcow2(w) => w.write_at(e.guest_offset, e.data).map_err(other),
            VmdkTarget::Planned(w) => w
                .write_cluster(e.guest_offset / crate::qcow2::CLUSTER_SIZE, e.data)
                .map_err(other),
            VmdkTarget::Pending { .. } => Err(other("VMDK data before its metadata")),
        }
    }
}

enum Msg {
    Data(Bytes),
    Sync(oneshot::Sender<std::io::Result<()>>),
}

/// Downloads `source` into `path`, from `resume` on.
pub async fn download(
    source: &dyn RangeSource,
    path: &Path,
    expected: &Expected,
    resume: Checkpoint,
    options: &Options,
    on_progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<DownloadOutcome, DownloadError> {
    let io_err = |error| DownloadError::Io {
        path: path.to_owned(),
        error,
    };
    let mut algorithms: Vec<Algorithm> = options.extra_digests.clone();
    if let Some((a, _)) = &expected.digest
        && !algorithms.contains(a)
    {
        algorithms.push(*a);
    }

    // Restore the prefix: the hashers see the bytes already on disk. A converting output
    // cannot restore its converter, so it starts over.
    let resume = if options.output == Output::AsIs {
        resume
    } else {
        Checkpoint::default()
    };
    let (mut file, prefix_kept, mut hasher) = {
        let (path, algorithms, offset) = (path.to_owned(), algorithms.clone(), resume.offset);
        tokio::task::spawn_blocking(move || prepare(&path, offset, &algorithms))
            .await
            .map_err(|e| io_err(std::io::Error::other(e)))?
            .map_err(io_err)?
    };
    let mut offset = if prefix_kept { resume.offset } else { 0 };

    let mut stream = open_at(source, offset).await?;
    if stream.start != offset {
        // The source ignored the range: start over.
        debug!(source = %source.describe(), offset, "range ignored, restarting from 0");
        offset = 0;
        file = reset(path).map_err(io_err)?;
        hasher = MultiHasher::new(&algorithms);
    }
    let total = expected.size.or(stream.total.map(|t| t.max(offset)));
    let resumed_from = offset;

    let (tx, rx) = mpsc::channel::<Msg>(options.channel_depth);
    let output = options.output;
    let writer = spawn_writer(rx, output, file, offset, hasher);

    let checkpoints = output == Output::AsIs;
    let result = pump(
        source,
        &mut stream,
        &tx,
        offset,
        total,
        options,
        checkpoints,
        on_progress,
    )
    .await;
    drop(tx);
    let joined = writer.await.map_err(|e| io_err(std::io::Error::other(e)))?;
    let resumes = result?;
    let (hasher, pos, (file_size, written_digests)) = joined.map_err(|error| {
        if output == Output::AsIs {
            io_err(error)
        } else {
            DownloadError::Convert {
                source_name: source.describe(),
                error: error.to_string(),
            }
        }
    })?;

    let source_name = source.describe();
    if let Some(size) = expected.size
        && pos != size
    {
        return Err(DownloadError::Size {
            source_name,
            got: pos,
            expected: size,
        });
    }
    let digests = hasher.finish();
    if let Some((algorithm, want)) = &expected.digest {
        let actual = digests.get(*algorithm).unwrap_or_default().to_owned();
        if !actual.eq_ignore_ascii_case(want) {
            let _ = std::fs::remove_file(path);
            return Err(DownloadError::Mismatch {
                source_name,
                algorithm: algorithm.as_str(),
                expected: want.clone(),
                actual,
            });
        }
    }
    on_progress(Progress::Checkpoint(Checkpoint { offset: pos }));
    let file_digests = if output == Output::AsIs {
        Some(digests.clone())
    } else {
        written_digests
    };
    Ok(DownloadOutcome {
        path: path.to_owned(),
        size: pos,
        digests,
        file_size,
        file_digests,
        resumed_from,
        resumes,
    })
}

/// What the writer thread ends with: the hasher of the received bytes, how many were received,
/// and the file's size and digests (when known).
type Written = (MultiHasher, u64, (u64, Option<Digests>));

/// The writer thread: hashes the received bytes and writes them through the sink.
fn spawn_writer(
    mut rx: mpsc::Receiver<Msg>,
    output: Output,
    file: File,
    offset: u64,
    mut hasher: MultiHasher,
) -> tokio::task::JoinHandle<std::io::Result<Written>> {
    tokio::task::spawn_blocking(move || {
        let mut sink = Sink::new(output, file, offset)?;
        let mut received = offset;
        while let Some(msg) = rx.blocking_recv() {
            match msg {
                Msg::Data(b) => {
                    hasher.update(&b);
                    received += b.len() as u64;
                    sink.write(&b)?;
                }
                Msg::Sync(reply) => {
                    let _ = reply.send(sink.sync());
                }
            }
        }
        let file = sink.finish()?;
        Ok((hasher, received, file))
    })
}

/// Moves the stream's bytes to the writer, re-opening with a range after a cut; returns the
/// number of re-opens.
#[allow(clippy::too_many_arguments)]
async fn pump(
    source: &dyn RangeSource,
    stream: &mut RangeStream,
    tx: &mpsc::Sender<Msg>,
    start: u64,
    total: Option<u64>,
    options: &Options,
    checkpoints: bool,
    on_progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<u32, DownloadError> {
    let source_name = source.describe();
    let mut pos = start;
    let mut next_checkpoint = start + options.checkpoint_every;
    let mut resumes = 0;
    let writer_gone = || DownloadError::Io {
        path: PathBuf::from("(writer)"),
        error: std::io::Error::other("the writer stopped"),
    };
    loop {
        match stream.body.next().await {
            Some(Ok(chunk)) => {
                pos += chunk.len() as u64;
                tx.send(Msg::Data(chunk)).await.map_err(|_| writer_gone())?;
                on_progress(Progress::Bytes { done: pos, total });
                if checkpoints && pos >= next_checkpoint {
                    let (reply, wait) = oneshot::channel();
                    tx.send(Msg::Sync(reply)).await.map_err(|_| writer_gone())?;
                    match wait.await {
                        Ok(Ok(())) => on_progress(Progress::Checkpoint(Checkpoint { offset: pos })),
                        Ok(Err(error)) => {
                            return Err(DownloadError::Io {
                                path: PathBuf::from("(sync)"),
                                error,
                            });
                        }
                        Err(_) => return Err(writer_gone()),
                    }
                    next_checkpoint = pos + options.checkpoint_every;
                }
            }
            None => {
                if total.is_some_and(|t| pos < t) {
                    // A clean end before the announced size is a cut too.
                    let error = SourceError {
                        message: format!("stream ended at byte {pos}"),
                        transient: true,
                    };
                    resumes = reopen(source, stream, pos, resumes, error, options).await?;
                    continue;
                }
                return Ok(resumes);
            }
            Some(Err(error)) if error.transient => {
                resumes = reopen(source, stream, pos, resumes, error, options).await?;
            }
            Some(Err(error)) => return Err(DownloadError::Source { source_name, error }),
        }
    }
}

async fn reopen(
    source: &dyn RangeSource,
    stream: &mut RangeStream,
    pos: u64,
    resumes: u32,
    error: SourceError,
    options: &Options,
) -> Result<u32, DownloadError> {
    let resumes = resumes + 1;
    if resumes > options.max_resumes {
        return Err(DownloadError::TooManyResumes {
            source_name: source.describe(),
            resumes: resumes - 1,
            error,
        });
    }
    warn!(source = %source.describe(), at = pos, error = %error, attempt = resumes, "download cut; resuming with a range request");
    tokio::time::sleep(options.resume_backoff).await;
    let next = open_at(source, pos).await?;
    if next.start != pos {
        return Err(DownloadError::Source {
            source_name: source.describe(),
            error: SourceError {
                message: "the source does not support ranged requests; cannot resume".into(),
                transient: false,
            },
        });
    }
    *stream = next;
    Ok(resumes)
}

async fn open_at(source: &dyn RangeSource, offset: u64) -> Result<RangeStream, DownloadError> {
    source
        .open(offset)
        .await
        .map_err(|error| DownloadError::Source {
            source_name: source.describe(),
            error,
        })
}

/// Opens `path` for writing at `offset`: keeps and re-hashes `[0, offset)` when the file holds
/// it, else starts from 0. Returns the file, whether the prefix was kept, and the hasher.
fn prepare(
    path: &Path,
    offset: u64,
    algorithms: &[Algorithm],
) -> std::io::Result<(File, bool, MultiHasher)> {
    let mut hasher = MultiHasher::new(algorithms);
    if offset == 0 {
        return Ok((reset(path)?, true, hasher));
    }
    let len = std::fs::metadata(path).map_or(0, |m| m.len());
    if len < offset {
        return Ok((reset(path)?, false, hasher));
    }
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    file.set_len(offset)?;
    let mut reader = File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = offset;
    while left > 0 {
        let n = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
        reader.read_exact(&mut buf[..n])?;
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    Ok((file, true, hasher))
}

fn reset(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Serves `data` in small chunks; cuts the connection after `cut_after` bytes for the first
    /// `cuts` opens; may ignore ranges.
    struct Flaky {
        data: Vec<u8>,
        cut_after: usize,
        cuts: AtomicU32,
        ignore_range: bool,
        opens: Mutex<Vec<u64>>,
    }

    #[async_trait]
    impl RangeSource for Flaky {
        async fn open(&self, offset: u64) -> Result<RangeStream, SourceError> {
            self.opens.lock().unwrap().push(offset);
            let start = if self.ignore_range { 0 } else { offset };
            let begin = usize::try_from(start).unwrap();
            let cut = self.cuts.load(Ordering::SeqCst) > 0;
            if cut {
                self.cuts.fetch_sub(1, Ordering::SeqCst);
            }
            let end = if cut {
                (begin + self.cut_after).min(self.data.len())
            } else {
                self.data.len()
            };
            let mut items: Vec<Result<Bytes, SourceError>> = self.data[begin..end]
                .chunks(1000)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            if cut {
                items.push(Err(SourceError {
                    message: "connection reset".into(),
                    transient: true,
                }));
            }
            Ok(RangeStream {
                start,
                total: Some(self.data.len() as u64),
                body: futures::stream::iter(items).boxed(),
            })
        }
        fn describe(&self) -> String {
            "test source".into()
        }
    }

    fn data() -> Vec<u8> {
        let mut d = vec![0u8; 300_000];
        for (i, b) in d.iter_mut().enumerate().take(70_000) {
            *b = u8::try_from(i * 7 % 251).unwrap();
        }
        d[250_000] = 9;
        d
    }

    fn sha512(d: &[u8]) -> String {
        let mut h = MultiHasher::new(&[Algorithm::Sha512]);
        h.update(d);
        h.finish().sha512.unwrap()
    }

    fn opts() -> Options {
        Options {
            checkpoint_every: 50_000,
            resume_backoff: Duration::from_millis(1),
            ..Options::default()
        }
    }

    #[tokio::test]
    async fn a_cut_connection_resumes_with_a_range_and_verifies() {
        let d = data();
        let src = Flaky {
            data: d.clone(),
            cut_after: 120_000,
            cuts: AtomicU32::new(2),
            ignore_range: false,
            opens: Mutex::new(vec![]),
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        let expected = Expected {
            size: Some(d.len() as u64),
            digest: Some((Algorithm::Sha512, sha512(&d))),
        };
        let checkpoints = Mutex::new(Vec::new());
        let out = download(
            &src,
            &path,
            &expected,
            Checkpoint::default(),
            &opts(),
            &|p| {
                if let Progress::Checkpoint(c) = p {
                    checkpoints.lock().unwrap().push(c.offset);
                }
            },
        )
        .await
        .unwrap();
        assert_eq!(out.resumes, 2);
        assert_eq!(*src.opens.lock().unwrap(), vec![0, 120_000, 240_000]);
        assert_eq!(std::fs::read(&path).unwrap(), d);
        assert_eq!(out.digests.sha512.unwrap(), sha512(&d));
        assert_eq!(*checkpoints.lock().unwrap().last().unwrap(), d.len() as u64);
    }

    #[tokio::test]
    async fn a_restart_from_a_checkpoint_rehashes_the_prefix() {
        let d = data();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        // An earlier run wrote 100_000 bytes and a bit more that was never checkpointed.
        std::fs::write(&path, &d[..130_000]).unwrap();
        let src = Flaky {
            data: d.clone(),
            cut_after: 0,
            cuts: AtomicU32::new(0),
            ignore_range: false,
            opens: Mutex::new(vec![]),
        };
        let expected = Expected {
            size: Some(d.len() as u64),
            digest: Some((Algorithm::Sha512, sha512(&d))),
        };
        let out = download(
            &src,
            &path,
            &expected,
            Checkpoint { offset: 100_000 },
            &opts(),
            &|_| {},
        )
        .await
        .unwrap();
        assert_eq!(out.resumed_from, 100_000);
        assert_eq!(*src.opens.lock().unwrap(), vec![100_000]);
        assert_eq!(std::fs::read(&path).unwrap(), d);
    }

    #[tokio::test]
    async fn a_source_that_ignores_ranges_restarts_from_zero() {
        let d = data();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        std::fs::write(&path, &d[..100_000]).unwrap();
        let src = Flaky {
            data: d.clone(),
            cut_after: 0,
            cuts: AtomicU32::new(0),
            ignore_range: true,
            opens: Mutex::new(vec![]),
        };
        let expected = Expected {
            size: Some(d.len() as u64),
            digest: Some((Algorithm::Sha512, sha512(&d))),
        };
        let out = download(
            &src,
            &path,
            &expected,
            Checkpoint { offset: 100_000 },
            &opts(),
            &|_| {},
        )
        .await
        .unwrap();
        assert_eq!(out.resumed_from, 0);
        assert_eq!(std::fs::read(&path).unwrap(), d);
    }

    #[tokio::test]
    async fn a_wrong_digest_fails_naming_both_and_removes_the_file() {
        let d = data();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        let src = Flaky {
            data: d.clone(),
            cut_after: 0,
            cuts: AtomicU32::new(0),
            ignore_range: false,
            opens: Mutex::new(vec![]),
        };
        let expected = Expected {
            size: None,
            digest: Some((Algorithm::Sha512, "00".repeat(64))),
        };
        let err = download(
            &src,
            &path,
            &expected,
            Checkpoint::default(),
            &opts(),
            &|_| {},
        )
        .await
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("sha512")
                && text.contains(&sha512(&d))
                && text.contains(&"00".repeat(64)),
            "{text}"
        );
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn too_many_cuts_give_up_with_the_last_error() {
        let d = data();
        let dir = tempfile::tempdir().unwrap();
        let src = Flaky {
            data: d,
            cut_after: 10,
            cuts: AtomicU32::new(100),
            ignore_range: false,
            opens: Mutex::new(vec![]),
        };
        let mut o = opts();
        o.max_resumes = 3;
        let err = download(
            &src,
            &dir.path().join("d"),
            &Expected::default(),
            Checkpoint::default(),
            &o,
            &|_| {},
        )
        .await
        .unwrap_err();
        assert!(
            matches!(err, DownloadError::TooManyResumes { resumes: 3, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("connection reset"));
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod convert_tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    struct Bytes_(Vec<u8>, AtomicU32);

    #[async_trait]
    impl RangeSource for Bytes_ {
        async fn open(&self, offset: u64) -> Result<RangeStream, SourceError> {
            let start = usize::try_from(offset).unwrap();
            let cut = self.1.load(Ordering::SeqCst) > 0;
            let end = if cut {
                (start + 700_000).min(self.0.len())
            } else {
                self.0.len()
            };
            if cut {
                self.1.fetch_sub(1, Ordering::SeqCst);
            }
            let mut items: Vec<Result<Bytes, SourceError>> = self.0[start..end]
                .chunks(10_000)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            if cut {
                items.push(Err(SourceError {
                    message: "reset".into(),
                    transient: true,
                }));
            }
            Ok(RangeStream {
                start: offset,
                total: Some(self.0.len() as u64),
                body: futures::stream::iter(items).boxed(),
            })
        }
        fn describe(&self) -> String {
            "vmdk".into()
        }
    }

    fn sha512(d: &[u8]) -> String {
        let mut h = MultiHasher::new(&[Algorithm::Sha512]);
        h.update(d);
        h.finish().sha512.unwrap()
    }

    #[tokio::test]
    async fn a_vmdk_stream_becomes_a_qcow2_and_a_raw_file_with_cuts_resumed() {
        let dir = tempfile::tempdir().unwrap();
        let size: usize = 96 << 20;
        let mut raw = vec![0u8; size];
        for (i, b) in raw[3 << 20..(5 << 20) + 123].iter_mut().enumerate() {
            *b = (i % 253) as u8 | 1;
        }
        raw[size - 1] = 7;
        let r = dir.path().join("src.raw");
        std::fs::write(&r, &raw).unwrap();
        let v = dir.path().join("src.vmdk");
        assert!(
            std::process::Command::new("qemu-img")
                .args(["convert", "-f", "raw", "-O", "vmdk"])
                .arg(&r)
                .arg(&v)
                .status()
                .unwrap()
                .success()
        );
        let vmdk = std::fs::read(&v).unwrap();
        for (output, fmt) in [(Output::VmdkToQcow2, "qcow2"), (Output::VmdkToRaw, "raw")] {
            let src = Bytes_(vmdk.clone(), AtomicU32::new(2));
            let out = dir.path().join(format!("out.{fmt}"));
            let expected = Expected {
                size: Some(vmdk.len() as u64),
                digest: Some((Algorithm::Sha512, sha512(&vmdk))),
            };
            let opts = Options {
                output,
                resume_backoff: Duration::from_millis(1),
                ..Options::default()
            };
            let seen = Mutex::new(Vec::new());
            // A checkpoint from an earlier run is ignored: the converter starts over.
            let o = download(
                &src,
                &out,
                &expected,
                Checkpoint { offset: 4096 },
                &opts,
                &|p| seen.lock().unwrap().push(p),
            )
            .await
            .unwrap();
            assert_eq!(o.resumes, 2);
            assert_eq!(o.resumed_from, 0);
            assert!(
                seen.lock()
                    .unwrap()
                    .iter()
                    .filter(|p| matches!(p, Progress::Checkpoint(_)))
                    .count()
                    <= 1
            );
            let cmp = std::process::Command::new("qemu-img")
                .args(["compare", "-f", fmt, "-F", "raw"])
                .arg(&out)
                .arg(&r)
                .output()
                .unwrap();
            assert!(
                cmp.status.success(),
                "{fmt}: {}",
                String::from_utf8_lossy(&cmp.stdout)
            );
            assert!(
                crate::sparse::allocated_bytes(&out).unwrap() < 4 << 20,
                "{fmt} is not sparse"
            );
            if output == Output::VmdkToQcow2 {
                // Written in order, hashed on the way: no second read needed.
                let read_back =
                    crate::digest::file_digests(&out, &[Algorithm::Sha256, Algorithm::Sha512])
                        .unwrap();
                assert_eq!(o.file_digests, Some(read_back));
            }
        }
    }
}
