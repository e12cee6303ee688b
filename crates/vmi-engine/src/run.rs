//! Running an import: the phase machine with waits (this is the CLI's driver; the controller
//! drives the same steps without sleeping).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tracing::{info, instrument, warn};
use vmi_api::{DiskBus, NetworkInterfaceModel};
use vmi_core::input::ImportRequest;
use vmi_core::manifest::{self, DiskArtifact, ManifestInput};
use vmi_core::model::DiskSource;
use vmi_core::network::plan_nics;
use vmi_core::phase::Phase;
use vmi_core::preflight::{CheckId, CheckStatus, Report};
use vmi_disk::digest::{Algorithm, file_digests};
use vmi_disk::download::{self, Checkpoint, Expected, Progress};
use vmi_disk::qemu_img::{self, Format};
use vmi_openstack::OpenstackApi;
use vmi_openstack::export::{
    self, Advance, DiskExport, ExportContext, ExportSource, ExportStep, Tracked,
};
use vmi_openstack::preflight::{self, PreflightInput};

use crate::journal::{Journal, JournalError};
use crate::progress::ProgressSink;
use crate::source::GlanceImage;
use crate::state::{DiskState, DownloadState, Failure, OutputDisk};
use crate::summary::Summary;

/// Format of the disk files written to the output directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OutputFormat {
    #[default]
    Qcow2,
    Raw,
}

impl OutputFormat {
    pub fn format(self) -> Format {
        match self {
            OutputFormat::Qcow2 => Format::Qcow2,
            OutputFormat::Raw => Format::Raw,
        }
    }
}

/// Settings of a run.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    pub out_dir: PathBuf,
    pub format: OutputFormat,
    /// Disk format of the Cinder → Glance upload of volumes (`qcow2` moves only allocated data).
    pub upload_format: String,
    /// Disks exported at once.
    pub parallel: usize,
    /// Run preflight but go on past failed checks (the VM must still be found).
    pub skip_preflight: bool,
    pub resource_timeout: Duration,
    pub image_timeout: Duration,
    pub shutdown_timeout: Duration,
    pub poll: Duration,
    /// Base URL the disks will be served from (for `images.yaml`); `file://` paths otherwise.
    pub disk_base_url: Option<String>,
    /// For preflight messages: the Keystone URL and who logs in (never a secret).
    pub endpoint: String,
    pub credentials: String,
    pub tls_insecure: bool,
    /// Attempts of a step that failed transiently.
    pub attempts: u32,
    /// Download tuning.
    pub download: download::Options,
}

impl EngineOptions {
    pub fn new(out_dir: PathBuf) -> Self {
        Self {
            out_dir,
            format: OutputFormat::Qcow2,
            upload_format: "vmdk".into(),
            parallel: 4,
            skip_preflight: false,
            resource_timeout: Duration::from_mins(30),
            image_timeout: Duration::from_hours(2),
            shutdown_timeout: Duration::from_mins(10),
            poll: Duration::from_secs(1),
            disk_base_url: None,
            endpoint: String::new(),
            credentials: String::new(),
            tls_insecure: false,
            attempts: 5,
            download: download::Options::default(),
        }
    }
}

/// Why a run stopped without completing.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Preflight failed: nothing on the source was touched.
    #[error("preflight failed ({} check(s)); nothing on the source was touched", .0.failed().count())]
    Preflight(Box<Report>),
    /// The import failed after touching the source; temporary resources were cleaned up.
    #[error("{phase} failed: {message}")]
    Failed {
        phase: Phase,
        reason: String,
        message: String,
        left: Vec<Tracked>,
    },
    /// The state in the output directory belongs to another import.
    #[error("{0}")]
    Mismatch(String),
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// Runs (or resumes) the import recorded in `journal` to the end.
#[instrument(skip_all, fields(import = %request.import_key()))]
pub async fn run(
    api: Arc<dyn OpenstackApi>,
    request: &ImportRequest,
    journal: &Journal,
    opts: &EngineOptions,
    progress: Arc<dyn ProgressSink>,
) -> Result<Summary, EngineError> {
    let started = Instant::now();
    let state = journal.snapshot();
    if state.import != request.import_key() {
        return Err(EngineError::Mismatch(format!(
            "{} holds the state of import {}, not {}; use another --out directory",
            journal.path().display(),
            state.import,
            request.import_key()
        )));
    }
    if state.phase == Phase::Failed {
        resume_after_failure(journal)?;
    }
    std::fs::create_dir_all(opts.out_dir.join("disks")).map_err(|error| JournalError::Io {
        path: opts.out_dir.join("disks"),
        error,
    })?;

    loop {
        let phase = journal.snapshot().phase;
        progress.phase(phase);
        let t = Instant::now();
        let result = match phase {
            Phase::Preflight => {
                preflight_phase(api.as_ref(), request, journal, opts, progress.as_ref()).await
            }
            Phase::PowerOff => {
                power_off_phase(api.as_ref(), journal, opts, progress.as_ref()).await
            }
            Phase::Export => export_phase(&api, journal, opts, &progress).await,
            Phase::Convert => convert_phase(journal, opts, progress.as_ref()).await,
            Phase::Manifests => manifests_phase(request, journal, opts),
            Phase::Done | Phase::Failed => break,
        };
        let elapsed = t.elapsed().as_secs_f64();
        match result {
            Ok(()) => {
                journal.update(|s| {
                    *s.timings.entry(phase_key(phase)).or_default() += elapsed;
                    s.phase = phase.next();
                })?;
            }
            Err(PhaseError::Preflight(report)) => return Err(EngineError::Preflight(report)),
            Err(PhaseError::Journal(e)) => return Err(e.into()),
            Err(PhaseError::Failed { reason, message }) => {
                warn!(%phase, %reason, %message, "import failed; cleaning up");
                progress.note(&format!("{phase} failed: {message}"));
                progress.note("removing the temporary resources on the source…");
                let left = cleanup(api.as_ref(), journal, opts.poll, progress.as_ref()).await?;
                remove_partial_downloads(journal, opts);
                journal.update(|s| {
                    *s.timings.entry(phase_key(phase)).or_default() += elapsed;
                    s.phase = Phase::Failed;
                    s.failure = Some(Failure {
                        phase,
                        reason: reason.clone(),
                        message: message.clone(),
                    });
                })?;
                return Err(EngineError::Failed {
                    phase,
                    reason,
                    message,
                    left,
                });
            }
        }
    }
    journal.update(|s| {
        *s.timings.entry("total".into()).or_default() += started.elapsed().as_secs_f64();
    })?;
    Ok(Summary::of(&journal.snapshot(), &opts.out_dir))
}

/// A failure of one phase.
enum PhaseError {
    Preflight(Box<Report>),
    Failed { reason: String, message: String },
    Journal(JournalError),
}

impl From<JournalError> for PhaseError {
    fn from(e: JournalError) -> Self {
        PhaseError::Journal(e)
    }
}

fn failed(reason: &str, message: impl Into<String>) -> PhaseError {
    PhaseError::Failed {
        reason: reason.to_owned(),
        message: message.into(),
    }
}

fn phase_key(p: Phase) -> String {
    serde_json::to_value(p)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// After a failed run (whose resources were cleaned up): resume from the failed phase, with
/// the disks that were not finished starting over.
fn resume_after_failure(journal: &Journal) -> Result<(), JournalError> {
    journal.update(|s| {
        let phase = s.failure.take().map_or(Phase::Preflight, |f| f.phase);
        s.phase = phase;
        for d in &mut s.disks {
            if d.export.step != ExportStep::Done {
                d.export.restart();
                d.download = DownloadState::default();
            }
        }
    })
}

async fn preflight_phase(
    api: &dyn OpenstackApi,
    request: &ImportRequest,
    journal: &Journal,
    opts: &EngineOptions,
    progress: &dyn ProgressSink,
) -> Result<(), PhaseError> {
    let input = PreflightInput {
        import: &request.import,
        endpoint: &opts.endpoint,
        credentials: &opts.credentials,
        tls_insecure: opts.tls_insecure,
        destination_exists: None,
    };
    let outcome = preflight::run(api, &input).await;
    let report = outcome.report;
    let skip = opts.skip_preflight || request.import.spec.skip_preflight_checks == Some(true);
    let blocking = |c: &&vmi_core::preflight::Check| {
        c.status == CheckStatus::Fail
            && (!skip
                || matches!(
                    c.id,
                    CheckId::SourceAuth | CheckId::VmFound | CheckId::VmName
                ))
    };
    if report.checks.iter().any(|c| blocking(&c)) || outcome.facts.is_none() {
        return Err(PhaseError::Preflight(Box::new(report)));
    }
    for c in report
        .checks
        .iter()
        .filter(|c| c.status == CheckStatus::Warn || (skip && c.status == CheckStatus::Fail))
    {
        progress.note(&format!("{} {}: {}", c.id, c.subject, c.message));
    }
    let Some(facts) = outcome.facts else {
        return Err(PhaseError::Preflight(Box::new(report)));
    };
    if let Some(known) = journal.snapshot().server_id
        && known != facts.server.id
    {
        return Err(failed(
            "StateMismatch",
            format!(
                "the output directory holds an import of server {known}, but '{}' now resolves to server {}; use another --out directory",
                request.import.spec.virtual_machine_name, facts.server.id
            ),
        ));
    }
    let model = vmi_openstack::describe::describe_server(api, &facts)
        .await
        .map_err(|e| {
            failed(
                e.reason(),
                format!("describing server {}: {e}", facts.server.id),
            )
        })?;
    let default_model = request
        .import
        .spec
        .default_network_interface_model
        .unwrap_or(NetworkInterfaceModel::Virtio);
    let plan = plan_nics(&model.nics, &facts.resolved, default_model)
        .map_err(|e| failed("BadMapping", e))?;
    for nic in &plan.unmapped {
        progress.note(&format!(
            "NIC {} on network {} has no mapping and is not created on the imported VM",
            nic.mac,
            nic.network.describe()
        ));
    }
    let prefix = export::name_prefix(&request.import_key(), &facts.server.id);
    let disks = disk_plan(&model, &facts.server.id);
    journal.update(|s| {
        s.server_id = Some(facts.server.id.clone());
        s.name_prefix = Some(prefix);
        s.imported_name = facts.imported_name.clone();
        s.model = Some(model);
        s.nic_plan = Some(plan);
        // A re-run of preflight after a crash keeps the disks already under way.
        if s.disks.len() != disks.len()
            || s.disks
                .iter()
                .zip(&disks)
                .any(|(a, b)| a.export.source != b.export.source)
        {
            let old: Vec<Tracked> = s
                .disks
                .iter()
                .flat_map(|d| d.export.resources().cloned().collect::<Vec<_>>())
                .collect();
            s.orphans.extend(old.into_iter().filter(Tracked::is_live));
            s.disks = disks;
        }
    })?;
    Ok(())
}

/// One export per disk of the model, in boot order.
fn disk_plan(model: &vmi_core::model::VmModel, server_id: &str) -> Vec<DiskState> {
    model
        .disks
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let source = match &d.source {
                DiskSource::OpenstackVolume { volume_id } => ExportSource::Volume {
                    volume_id: volume_id.clone(),
                    size_gib: d.size_bytes >> 30,
                },
                _ => ExportSource::ServerImage {
                    server_id: server_id.to_owned(),
                },
            };
            DiskState {
                export: DiskExport::new(i, source),
                download: DownloadState::default(),
                output: None,
            }
        })
        .collect()
}

async fn power_off_phase(
    api: &dyn OpenstackApi,
    journal: &Journal,
    opts: &EngineOptions,
    progress: &dyn ProgressSink,
) -> Result<(), PhaseError> {
    let server_id = journal.snapshot().server_id.unwrap_or_default();
    let mut attempts = 0;
    let mut waits = 0;
    loop {
        let mut power = journal.snapshot().power;
        match export::advance_power_off(
            api,
            &server_id,
            &mut power,
            opts.shutdown_timeout,
            opts.poll,
        )
        .await
        {
            Ok(Advance::Done) => {
                journal.update(|s| s.power = power)?;
                return Ok(());
            }
            Ok(Advance::Wait(d)) => {
                journal.update(|s| s.power = power)?;
                tokio::time::sleep(poll_delay(waits, d)).await;
                waits += 1;
            }
            Ok(_) => {
                journal.update(|s| s.power = power)?;
                progress.note(&format!("stopping server {server_id} (os-stop)"));
            }
            Err(e) if e.is_transient() && attempts + 1 < opts.attempts => {
                attempts += 1;
                tokio::time::sleep(backoff(attempts)).await;
            }
            Err(e) => {
                return Err(failed(
                    e.reason(),
                    format!("stopping server {server_id}: {e}"),
                ));
            }
        }
    }
}

/// Polls quickly while a step is young (most snapshots, volumes and uploads finish within
/// seconds, and every overshoot adds to the import's time): 100 ms, 200 ms, then every 250 ms
/// for about 10 s; after that every `max`, to spare the API during long uploads.
fn poll_delay(waits: u32, max: Duration) -> Duration {
    let quick = Duration::from_millis(100u64 << waits.min(10)).min(Duration::from_millis(250));
    if waits < 40 { quick.min(max) } else { max }
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_secs(1 << attempt.min(5))
}

async fn export_phase(
    api: &Arc<dyn OpenstackApi>,
    journal: &Journal,
    opts: &EngineOptions,
    progress: &Arc<dyn ProgressSink>,
) -> Result<(), PhaseError> {
    let state = journal.snapshot();
    let ctx = ExportContext {
        name_prefix: state.name_prefix.clone().unwrap_or_default(),
        import_key: state.import.clone(),
        upload_format: opts.upload_format.clone(),
        resource_timeout: opts.resource_timeout,
        image_timeout: opts.image_timeout,
        poll: opts.poll,
    };
    let limit = Arc::new(Semaphore::new(opts.parallel.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..state.disks.len() {
        let (api, journal, opts, progress, ctx, limit) = (
            api.clone(),
            journal.clone(),
            opts.clone(),
            progress.clone(),
            ctx.clone(),
            limit.clone(),
        );
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            drive_disk(&api, i, &journal, &ctx, &opts, progress.as_ref()).await
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let result = joined.unwrap_or_else(|e| {
            Err(failed(
                "InternalError",
                format!("a disk task ended abnormally: {e}"),
            ))
        });
        if let Err(e) = result {
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
            return Err(e);
        }
    }
    Ok(())
}

fn step_label(step: ExportStep) -> &'static str {
    match step {
        ExportStep::CreateSnapshot => "snapshot",
        ExportStep::AwaitSnapshot => "waiting for the snapshot",
        ExportStep::CreateVolume => "volume from snapshot",
        ExportStep::AwaitVolume => "waiting for the volume",
        ExportStep::UploadImage => "upload to Glance",
        ExportStep::CreateServerImage => "server image (createImage)",
        ExportStep::AwaitImage => "waiting for the image",
        ExportStep::Download => "download",
        ExportStep::Cleanup => "removing temporary resources",
        ExportStep::Done => "exported",
    }
}

async fn drive_disk(
    api: &Arc<dyn OpenstackApi>,
    i: usize,
    journal: &Journal,
    ctx: &ExportContext,
    opts: &EngineOptions,
    progress: &dyn ProgressSink,
) -> Result<(), PhaseError> {
    let label = journal
        .snapshot()
        .model
        .as_ref()
        .and_then(|m| m.disks.get(i))
        .map(|d| d.label.clone())
        .unwrap_or_default();
    let mut attempts = 0;
    let mut last_step = None;
    let mut waits = 0u32;
    loop {
        let mut disk = journal.snapshot().disks[i].export.clone();
        if last_step != Some(disk.step) {
            progress.disk_step(i, &label, step_label(disk.step));
            last_step = Some(disk.step);
            waits = 0;
        }
        let advance = match export::advance(api.as_ref(), &mut disk, ctx).await {
            Ok(a) => {
                attempts = 0;
                a
            }
            Err(e) if e.is_transient() && attempts + 1 < opts.attempts => {
                attempts += 1;
                warn!(disk = i, error = %e, attempt = attempts, "transient error; retrying");
                tokio::time::sleep(backoff(attempts)).await;
                continue;
            }
            Err(e) => return Err(failed(e.reason(), e.to_string())),
        };
        journal.update(|s| s.disks[i].export = disk.clone())?;
        match advance {
            Advance::Persist => {}
            Advance::Wait(d) => {
                tokio::time::sleep(poll_delay(waits, d)).await;
                waits += 1;
            }
            Advance::Download => {
                // While the image downloads, release the temporary volume and snapshot, so
                // that the cleanup after the download has only the image left.
                let done = std::sync::atomic::AtomicBool::new(false);
                let download = async {
                    let r = download_disk(api, i, journal, opts, progress).await;
                    done.store(true, std::sync::atomic::Ordering::SeqCst);
                    r
                };
                let (downloaded, ()) = tokio::join!(
                    download,
                    release_while(api.as_ref(), i, journal, opts.poll, &done)
                );
                downloaded?;
                journal.update(|s| export::download_done(&mut s.disks[i].export))?;
            }
            Advance::Done => return Ok(()),
        }
    }
}

/// Releases disk `i`'s temporary volume and snapshot until they are gone or `done` is set.
/// Errors are left to the cleanup step, which retries them.
async fn release_while(
    api: &dyn OpenstackApi,
    i: usize,
    journal: &Journal,
    poll: Duration,
    done: &std::sync::atomic::AtomicBool,
) {
    let mut rounds = 0;
    while !done.load(std::sync::atomic::Ordering::SeqCst) {
        let mut disk = journal.snapshot().disks[i].export.clone();
        let result = export::release_step(api, &mut disk, poll).await;
        if journal.update(|s| s.disks[i].export = disk).is_err() {
            return;
        }
        if let Ok(None) = result {
            return;
        }
        tokio::time::sleep(poll_delay(rounds, poll)).await;
        rounds += 1;
    }
}

/// The work file a disk's image is downloaded into.
fn work_file(out_dir: &Path, i: usize) -> PathBuf {
    out_dir.join("disks").join(format!(".disk-{i}.download"))
}

async fn download_disk(
    api: &Arc<dyn OpenstackApi>,
    i: usize,
    journal: &Journal,
    opts: &EngineOptions,
    progress: &dyn ProgressSink,
) -> Result<(), PhaseError> {
    let state = journal.snapshot();
    let disk = &state.disks[i];
    let Some(facts) = disk.export.image_facts.clone() else {
        return Err(failed(
            "CorruptState",
            format!("disk {i}: download without a recorded image"),
        ));
    };
    if disk.download.done && disk.download.image_id.as_deref() == Some(facts.id.as_str()) {
        return Ok(());
    }
    // A VMDK (Cinder's sparse, uncompressed upload) is converted while it streams: no
    // intermediate file, no conversion pass. Anything else is written as it comes.
    let mut dl_options = opts.download.clone();
    let written_format = if facts.disk_format.eq_ignore_ascii_case("vmdk") {
        dl_options.extra_digests.clear();
        match opts.format {
            OutputFormat::Qcow2 => dl_options.output = download::Output::VmdkToQcow2,
            OutputFormat::Raw => dl_options.output = download::Output::VmdkToRaw,
        }
        opts.format.format().as_str().to_owned()
    } else {
        facts.disk_format.clone()
    };
    journal.update(|s| {
        let d = &mut s.disks[i].download;
        if d.image_id.as_deref() != Some(facts.id.as_str()) {
            *d = DownloadState {
                image_id: Some(facts.id.clone()),
                format: Some(written_format.clone()),
                ..DownloadState::default()
            };
        }
    })?;
    let expected = Expected {
        size: (facts.size > 0).then_some(facts.size),
        digest: facts
            .digest
            .as_ref()
            .and_then(|(a, v)| Algorithm::parse(a).map(|a| (a, v.clone()))),
    };
    if expected.digest.is_none() {
        progress.note(&format!(
            "disk {i}: Glance publishes no checksum for image {}; only the size is verified",
            facts.id
        ));
    }
    let source = GlanceImage {
        api: api.clone(),
        id: facts.id.clone(),
    };
    let path = work_file(&opts.out_dir, i);
    let journal2 = journal.clone();
    let on_progress = move |p: Progress| match p {
        Progress::Bytes { done, total } => progress.disk_bytes(i, done, total),
        Progress::Checkpoint(c) => {
            let _ = journal2.update(|s| s.disks[i].download.checkpoint = c.offset);
        }
    };
    let mut attempt = 0;
    let outcome = loop {
        // The checkpoint is re-read on each attempt: the failed attempt may have advanced it.
        let resume = Checkpoint {
            offset: journal.snapshot().disks[i].download.checkpoint,
        };
        match download::download(&source, &path, &expected, resume, &dl_options, &on_progress).await
        {
            Ok(o) => break o,
            Err(e @ vmi_disk::DownloadError::Mismatch { .. }) => {
                journal.update(|s| s.disks[i].download.checkpoint = 0)?;
                return Err(failed("ChecksumMismatch", format!("disk {i}: {e}")));
            }
            Err(
                e @ (vmi_disk::DownloadError::Source { .. }
                | vmi_disk::DownloadError::TooManyResumes { .. }),
            ) if attempt + 1 < opts.attempts => {
                attempt += 1;
                warn!(disk = i, error = %e, "download failed; retrying");
                tokio::time::sleep(backoff(attempt)).await;
            }
            Err(e) => return Err(failed("DownloadFailed", format!("disk {i}: {e}"))),
        }
    };
    info!(
        disk = i,
        size = outcome.size,
        resumed_from = outcome.resumed_from,
        resumes = outcome.resumes,
        "downloaded and verified"
    );
    journal.update(|s| {
        let d = &mut s.disks[i].download;
        d.done = true;
        d.size = outcome.size;
        d.checkpoint = outcome.size;
        // The file's digests, when the download knows them (the file is the stream, or it
        // was written in order); else the convert phase reads the file once.
        d.digests.clone_from(&outcome.file_digests);
        d.resumes += outcome.resumes;
    })?;
    Ok(())
}

async fn convert_phase(
    journal: &Journal,
    opts: &EngineOptions,
    progress: &dyn ProgressSink,
) -> Result<(), PhaseError> {
    let n = journal.snapshot().disks.len();
    let results =
        futures::future::join_all((0..n).map(|i| convert_disk(i, journal, opts, progress))).await;
    results.into_iter().collect()
}

async fn convert_disk(
    i: usize,
    journal: &Journal,
    opts: &EngineOptions,
    progress: &dyn ProgressSink,
) -> Result<(), PhaseError> {
    let state = journal.snapshot();
    let disk = &state.disks[i];
    let to = opts.format.format();
    let out_name = format!("disk-{i}.{}", to.as_str());
    let out_path = opts.out_dir.join("disks").join(&out_name);
    if let Some(o) = &disk.output
        && o.file == format!("disks/{out_name}")
        && out_path.exists()
    {
        return Ok(());
    }
    let work = work_file(&opts.out_dir, i);
    let from_name = disk.download.format.clone().unwrap_or_else(|| "raw".into());
    let from = Format::parse(&from_name).ok_or_else(|| {
        failed(
            "UnsupportedFormat",
            format!(
                "disk {i}: the image's disk_format '{from_name}' is not one qemu-img converts here"
            ),
        )
    })?;
    let hash = |path: PathBuf| async move {
        tokio::task::spawn_blocking(move || {
            file_digests(&path, &[Algorithm::Sha256, Algorithm::Sha512])
        })
        .await
        .map_err(|e| failed("InternalError", e.to_string()))?
        .map_err(|e| failed("IoError", format!("hashing a disk file: {e}")))
    };
    let digests = if from == to {
        if work.exists() {
            tokio::fs::rename(&work, &out_path)
                .await
                .map_err(|e| failed("IoError", format!("renaming {}: {e}", work.display())))?;
        }
        match disk.download.digests.clone() {
            Some(d) => d,
            // Converted while downloading: the file's digests need one read.
            None => hash(out_path.clone()).await?,
        }
    } else {
        progress.disk_step(
            i,
            "",
            &format!("converting {} → {}", from.as_str(), to.as_str()),
        );
        qemu_img::convert(&work, from, &out_path, to)
            .await
            .map_err(|e| failed("ConversionFailed", format!("disk {i}: {e}")))?;
        let d = hash(out_path.clone()).await?;
        let _ = tokio::fs::remove_file(&work).await;
        d
    };
    if !out_path.exists() {
        return Err(failed(
            "MissingFile",
            format!(
                "disk {i}: {} is missing; remove the output directory's state.json to start over",
                out_path.display()
            ),
        ));
    }
    let info = qemu_img::info(&out_path, Some(to))
        .await
        .map_err(|e| failed("ConversionFailed", format!("disk {i}: {e}")))?;
    let allocated = vmi_disk::sparse::allocated_bytes(&out_path).unwrap_or(0);
    journal.update(|s| {
        s.disks[i].output = Some(OutputDisk {
            file: format!("disks/{out_name}"),
            format: to.as_str().to_owned(),
            virtual_size: info.virtual_size,
            allocated,
            sha256: digests.sha256.clone().unwrap_or_default(),
            sha512: digests.sha512.clone().unwrap_or_default(),
        });
    })?;
    Ok(())
}

fn manifests_phase(
    request: &ImportRequest,
    journal: &Journal,
    opts: &EngineOptions,
) -> Result<(), PhaseError> {
    let state = journal.snapshot();
    let (Some(model), Some(name), Some(plan)) =
        (&state.model, &state.imported_name, &state.nic_plan)
    else {
        return Err(failed(
            "CorruptState",
            "the state has no VM model; remove state.json and start over",
        ));
    };
    let namespace = request
        .import
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| vmi_core::input::DEFAULT_NAMESPACE.to_owned());
    let default_bus = request
        .import
        .spec
        .default_disk_bus_type
        .unwrap_or(DiskBus::Virtio);
    let mut artifacts = Vec::new();
    for (i, d) in state.disks.iter().enumerate() {
        let Some(out) = &d.output else {
            return Err(failed(
                "CorruptState",
                format!("disk {i} has no output file"),
            ));
        };
        let file_name = out.file.trim_start_matches("disks/");
        let url = if let Some(base) = &opts.disk_base_url {
            format!("{}/{file_name}", base.trim_end_matches('/'))
        } else {
            let abs = std::fs::canonicalize(opts.out_dir.join(&out.file))
                .unwrap_or_else(|_| opts.out_dir.join(&out.file));
            format!("file://{}", abs.display())
        };
        artifacts.push(DiskArtifact {
            index: i,
            image_name: manifest::disk_object_name(name, i),
            url,
            sha512: out.sha512.clone(),
            virtual_size: out.virtual_size,
            bus: model
                .disks
                .get(i)
                .and_then(|m| m.bus)
                .unwrap_or(default_bus),
        });
    }
    let source = format!(
        "openstack server {}",
        state.server_id.clone().unwrap_or_default()
    );
    let input = ManifestInput {
        vm: model,
        name,
        namespace: &namespace,
        nics: plan,
        disks: &artifacts,
        storage_class: request.import.spec.storage_class.as_deref(),
        source: &source,
    };
    let vm_yaml = manifest::to_yaml_stream(&[manifest::virtual_machine(&input)])
        .map_err(|e| failed("InternalError", e.to_string()))?;
    let images_yaml = manifest::to_yaml_stream(&manifest::images(&input))
        .map_err(|e| failed("InternalError", e.to_string()))?;
    for (file, text) in [
        ("virtualmachine.yaml", vm_yaml),
        ("images.yaml", images_yaml),
    ] {
        let path = opts.out_dir.join(file);
        std::fs::write(&path, text)
            .map_err(|e| failed("IoError", format!("writing {}: {e}", path.display())))?;
    }
    Ok(())
}

/// Removes every temporary resource the state records, waiting (bounded) until each is gone.
/// Returns what could not be removed.
pub async fn cleanup(
    api: &dyn OpenstackApi,
    journal: &Journal,
    poll: Duration,
    progress: &dyn ProgressSink,
) -> Result<Vec<Tracked>, JournalError> {
    let deadline = Instant::now() + Duration::from_mins(15);
    let mut errors: Vec<String> = Vec::new();
    let mut rounds = 0;
    loop {
        let mut pending = false;
        errors.clear();
        let state = journal.snapshot();
        for i in 0..state.disks.len() {
            let mut disk = state.disks[i].export.clone();
            match export::cleanup_step(api, &mut disk, poll).await {
                Ok(wait) => pending |= wait.is_some(),
                Err(e) => {
                    pending = true;
                    errors.push(e.to_string());
                }
            }
            journal.update(|s| s.disks[i].export = disk)?;
        }
        if !state.orphans.is_empty() {
            let mut holder = DiskExport::new(
                usize::MAX,
                ExportSource::ServerImage {
                    server_id: String::new(),
                },
            );
            holder.strays = state.orphans.clone();
            match export::cleanup_step(api, &mut holder, poll).await {
                Ok(wait) => pending |= wait.is_some(),
                Err(e) => {
                    pending = true;
                    errors.push(e.to_string());
                }
            }
            journal.update(|s| {
                s.orphans = holder.strays.into_iter().filter(Tracked::is_live).collect();
            })?;
        }
        if !pending {
            return Ok(Vec::new());
        }
        if Instant::now() > deadline {
            let left: Vec<Tracked> = journal
                .snapshot()
                .live_resources()
                .into_iter()
                .cloned()
                .collect();
            for e in &errors {
                progress.note(&format!("cleanup: {e}"));
            }
            return Ok(left);
        }
        tokio::time::sleep(poll_delay(rounds, poll)).await;
        rounds += 1;
    }
}

fn remove_partial_downloads(journal: &Journal, opts: &EngineOptions) {
    for (i, d) in journal.snapshot().disks.iter().enumerate() {
        if d.export.step != ExportStep::Done {
            let _ = std::fs::remove_file(work_file(&opts.out_dir, i));
        }
    }
}
