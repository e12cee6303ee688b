//! The phase machine as steps that never sleep.
//!
//! [`Driver::step`] does one bounded piece of work (a few API calls per disk at most), records
//! what it changed in the journal, and says when to call it again. Long work — downloads and
//! conversions — runs in background tasks that the driver starts, watches and collects; their
//! progress goes to the journal too. The CLI calls `step` in a loop and sleeps in between
//! ([`crate::run`]); the controller calls it from its reconciles and requeues.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{info, warn};
use vmi_core::input::ImportRequest;
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
use crate::run::{EngineError, EngineOptions, OutputFormat};
use crate::source::GlanceImage;
use crate::state::{DiskState, DownloadState, Failure, OutputDisk};

/// Where the import reads the VM from.
#[derive(Clone)]
pub enum Source {
    /// An OpenStack cloud: server, volumes, images.
    Openstack(Arc<dyn OpenstackApi>),
    /// An OVA archive: a file or an HTTP(S) URL.
    Ova(Arc<crate::ova::OvaLocation>),
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Openstack(_) => f.write_str("Source::Openstack"),
            Source::Ova(l) => write!(f, "Source::Ova({})", l.describe()),
        }
    }
}

impl From<Arc<dyn OpenstackApi>> for Source {
    fn from(api: Arc<dyn OpenstackApi>) -> Source {
        Source::Openstack(api)
    }
}

impl Source {
    /// The OpenStack API, for the cloud's steps.
    fn cloud(&self) -> Result<&Arc<dyn OpenstackApi>, PhaseError> {
        match self {
            Source::Openstack(api) => Ok(api),
            Source::Ova(_) => Err(failed(
                "CorruptState",
                "an OpenStack step in an OVA import; remove the state and start over",
            )),
        }
    }
}

/// What the caller does after a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Call [`Driver::step`] again after this long (zero: at once). Background work may end
    /// sooner: [`Driver::wakeup`] is notified when it does.
    After(Duration),
    /// The engine's phases are done: the disks are in the output directory.
    Done,
}

/// One failure of a phase.
#[derive(Debug)]
pub(crate) enum PhaseError {
    Preflight(Box<Report>),
    Failed { reason: String, message: String },
    Journal(JournalError),
}

impl From<JournalError> for PhaseError {
    fn from(e: JournalError) -> Self {
        PhaseError::Journal(e)
    }
}

pub(crate) fn failed(reason: &str, message: impl Into<String>) -> PhaseError {
    PhaseError::Failed {
        reason: reason.to_owned(),
        message: message.into(),
    }
}

/// Retry bookkeeping of one kind of call.
#[derive(Debug, Default)]
struct Retry {
    /// Transient failures in a row.
    attempts: u32,
    /// Waits since the current step began (for the quick-poll schedule).
    waits: u32,
    /// Not before this instant.
    next_at: Option<Instant>,
}

impl Retry {
    fn due(&self, now: Instant) -> Option<Duration> {
        match self.next_at {
            Some(t) if t > now => Some(t - now),
            _ => None,
        }
    }

    fn wait(&mut self, now: Instant, d: Duration) -> Duration {
        self.next_at = Some(now + d);
        d
    }
}

/// In-memory state of one disk's work (never persisted: everything here can be rebuilt).
#[derive(Debug, Default)]
struct DiskRuntime {
    retry: Retry,
    last_step: Option<ExportStep>,
    /// The download, while it runs.
    download: Option<JoinHandle<Result<(), PhaseError>>>,
    /// Release of the volume and snapshot during the download.
    release: Retry,
    released: bool,
}

#[derive(Debug)]
struct Runtime {
    /// The phase being timed and when it began.
    phase: Option<(Phase, Instant)>,
    power: Retry,
    disks: Vec<DiskRuntime>,
    convert: Option<JoinHandle<Result<(), PhaseError>>>,
    /// The OVA's download and extraction, while it runs.
    ova: Option<JoinHandle<Result<(), PhaseError>>>,
    cleanup: CleanupRounds,
    cleanup_deadline: Option<Instant>,
    /// The preflight warnings were told.
    warned: bool,
}

/// Drives one import. Cheap to keep: holds the journal, settings and any background task.
pub struct Driver {
    source: Source,
    request: ImportRequest,
    journal: Journal,
    opts: EngineOptions,
    progress: Arc<dyn ProgressSink>,
    wakeup: Arc<Notify>,
    rt: tokio::sync::Mutex<Runtime>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("import", &self.request.import_key())
            .finish_non_exhaustive()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Background work belongs to the driver: a dropped driver (a cancelled import, a CLI
        // interrupted) leaves no task writing files behind.
        let rt = self.rt.get_mut();
        for d in &mut rt.disks {
            if let Some(t) = d.download.take() {
                t.abort();
            }
        }
        if let Some(t) = rt.convert.take() {
            t.abort();
        }
        if let Some(t) = rt.ova.take() {
            t.abort();
        }
    }
}

impl Driver {
    /// A driver over `journal`, which must hold the state of `request`'s import.
    pub fn new(
        source: impl Into<Source>,
        request: ImportRequest,
        journal: Journal,
        opts: EngineOptions,
        progress: Arc<dyn ProgressSink>,
    ) -> Result<Driver, EngineError> {
        let state = journal.snapshot();
        if state.import != request.import_key() {
            return Err(EngineError::Mismatch(format!(
                "{} holds the state of import {}, not {}; use another --out directory",
                journal
                    .path()
                    .map_or_else(|| "the state".to_owned(), |p| p.display().to_string()),
                state.import,
                request.import_key()
            )));
        }
        let disks_dir = opts.out_dir.join("disks");
        std::fs::create_dir_all(&disks_dir).map_err(|error| JournalError::Io {
            path: disks_dir,
            error,
        })?;
        Ok(Driver {
            source: source.into(),
            request,
            journal,
            opts,
            progress,
            wakeup: Arc::new(Notify::new()),
            rt: tokio::sync::Mutex::new(Runtime {
                phase: None,
                power: Retry::default(),
                disks: Vec::new(),
                convert: None,
                ova: None,
                cleanup: CleanupRounds::default(),
                cleanup_deadline: None,
                warned: false,
            }),
        })
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    pub fn options(&self) -> &EngineOptions {
        &self.opts
    }

    /// Notified when background work ends, so that a waiting caller can step at once.
    pub fn wakeup(&self) -> Arc<Notify> {
        self.wakeup.clone()
    }

    /// After a failed run whose resources were cleaned up: resume from the failed phase, the
    /// disks that were not finished starting over (the CLI's retry; the controller does not
    /// retry a failed import).
    pub fn resume_after_failure(&self) -> Result<(), JournalError> {
        self.journal.update(|s| {
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

    /// Forgets the work of disks whose local files are gone (a controller restarted with a new
    /// scratch volume): they are exported again. Returns the disks reset.
    pub fn reset_disks_without_files(&self) -> Result<Vec<usize>, JournalError> {
        let out = self.opts.out_dir.clone();
        let format = self.opts.format.format();
        self.journal.update(|s| {
            if !matches!(s.phase, Phase::Export | Phase::Convert | Phase::Manifests) {
                return Vec::new();
            }
            let mut reset = Vec::new();
            for (i, d) in s.disks.iter_mut().enumerate() {
                let work = work_file(&out, i);
                let lost_work = d.download.checkpoint > 0 && !d.download.done && !work.exists();
                // The conversion may have moved the work file to its final name before the
                // state recording it was persisted.
                let lost_done = d.download.done
                    && d.output
                        .as_ref()
                        .is_none_or(|o| !out.join(&o.file).exists())
                    && !work.exists()
                    && !output_file(&out, i, format).exists();
                if lost_work || lost_done {
                    d.export.restart();
                    d.download = DownloadState::default();
                    d.output = None;
                    reset.push(i);
                }
            }
            if !reset.is_empty() {
                s.phase = Phase::Export;
            }
            reset
        })
    }

    /// The 1:1 NIC plan of the import, with a note for every NIC on an unmapped network.
    fn nic_plan(
        &self,
        nics: &[vmi_core::model::Nic],
        resolved: &[vmi_core::network::ResolvedMapping],
    ) -> Result<vmi_core::network::NicPlan, PhaseError> {
        let default_model = self
            .request
            .import
            .spec
            .default_network_interface_model
            .unwrap_or(vmi_api::NetworkInterfaceModel::Virtio);
        let plan = plan_nics(nics, resolved, default_model).map_err(|e| failed("BadMapping", e))?;
        for nic in &plan.unmapped {
            self.progress.note(&format!(
                "NIC {} on network {} has no mapping and is not created on the imported VM",
                nic.mac,
                nic.network.describe()
            ));
        }
        Ok(plan)
    }

    /// One step. `Err` ends the import: a failed preflight (nothing touched), or a failure
    /// after the temporary resources were cleaned up (`left` lists what could not be).
    pub async fn step(&self) -> Result<Step, EngineError> {
        let mut rt = self.rt.lock().await;
        let phase = self.journal.snapshot().phase;
        if rt.phase.map(|(p, _)| p) != Some(phase) {
            rt.phase = Some((phase, Instant::now()));
            // An OVA has no VM to power off: that phase passes silently.
            let silent = phase == Phase::Failed
                || (phase == Phase::PowerOff && matches!(self.source, Source::Ova(_)));
            if !silent {
                self.progress.phase(phase);
            }
        }
        let result = match phase {
            Phase::Preflight => self.preflight(&mut rt).await,
            Phase::PowerOff => self.power_off(&mut rt).await,
            Phase::Export => self.export(&mut rt).await,
            Phase::Convert => self.convert(&mut rt).await,
            Phase::Manifests => {
                if self.opts.write_manifests {
                    crate::run::manifests_phase(&self.request, &self.journal, &self.opts)
                        .map(|()| None)
                } else {
                    Ok(None)
                }
            }
            Phase::Done => return Ok(Step::Done),
            Phase::Failed => return self.failed_cleanup(&mut rt).await,
        };
        match result {
            Ok(Some(wait)) => Ok(Step::After(wait)),
            Ok(None) => {
                let elapsed = rt
                    .phase
                    .take()
                    .map_or(0.0, |(_, t)| t.elapsed().as_secs_f64());
                self.journal.update(|s| {
                    *s.timings.entry(phase.key().to_owned()).or_default() += elapsed;
                    s.phase = phase.next();
                })?;
                if phase.next() == Phase::Done {
                    return Ok(Step::Done);
                }
                Ok(Step::After(Duration::ZERO))
            }
            Err(PhaseError::Preflight(report)) => Err(EngineError::Preflight(report)),
            Err(PhaseError::Journal(e)) => Err(e.into()),
            Err(PhaseError::Failed { reason, message }) => {
                warn!(%phase, %reason, %message, "import failed; cleaning up");
                self.progress.note(&format!("{phase} failed: {message}"));
                self.progress
                    .note("removing the temporary resources on the source…");
                abort_tasks(&mut rt);
                let elapsed = rt
                    .phase
                    .take()
                    .map_or(0.0, |(_, t)| t.elapsed().as_secs_f64());
                self.journal.update(|s| {
                    *s.timings.entry(phase.key().to_owned()).or_default() += elapsed;
                    s.phase = Phase::Failed;
                    s.failure = Some(Failure {
                        phase,
                        reason,
                        message,
                    });
                })?;
                Ok(Step::After(Duration::ZERO))
            }
        }
    }

    /// Stops the background work (a cancelled import); the state keeps what it recorded.
    pub async fn stop(&self) {
        abort_tasks(&mut *self.rt.lock().await);
    }

    /// One round of removing every temporary resource the state records and the partial
    /// downloads. `None` when nothing is left; else when to call again.
    pub async fn cleanup_round(&self) -> Result<Option<Duration>, JournalError> {
        let mut rt = self.rt.lock().await;
        abort_tasks(&mut rt);
        cleanup_once(&self.source, &self.journal, &self.opts, &mut rt.cleanup).await
    }

    /// The errors of the last cleanup round (for the user, once cleanup gives up).
    pub async fn cleanup_errors(&self) -> Vec<String> {
        self.rt.lock().await.cleanup.errors.clone()
    }

    async fn failed_cleanup(&self, rt: &mut Runtime) -> Result<Step, EngineError> {
        let deadline = *rt
            .cleanup_deadline
            .get_or_insert_with(|| Instant::now() + self.opts.cleanup_timeout);
        let now = Instant::now();
        if let Some(d) = rt.cleanup.retry.due(now) {
            return Ok(Step::After(d));
        }
        let wait = cleanup_once(&self.source, &self.journal, &self.opts, &mut rt.cleanup).await?;
        let failure = self.journal.snapshot().failure;
        let left: Vec<Tracked> = match wait {
            Some(d) if now < deadline => return Ok(Step::After(d)),
            Some(_) => {
                for e in &rt.cleanup.errors {
                    self.progress.note(&format!("cleanup: {e}"));
                }
                self.journal
                    .snapshot()
                    .live_resources()
                    .into_iter()
                    .cloned()
                    .collect()
            }
            None => Vec::new(),
        };
        let failure = failure.unwrap_or_else(|| Failure {
            phase: Phase::Failed,
            reason: "Unknown".into(),
            message: "the import failed".into(),
        });
        Err(EngineError::Failed {
            phase: failure.phase,
            reason: failure.reason,
            message: failure.message,
            left,
        })
    }

    /// Runs the checks; `Err` when one blocks the import.
    async fn checks(&self) -> Result<(Report, preflight::Facts, bool), PhaseError> {
        let request = &self.request;
        let opts = &self.opts;
        let cluster = opts.cluster.as_ref();
        let namespace = request
            .import
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| vmi_core::input::DEFAULT_NAMESPACE.to_owned());
        let exists = |d: &vmi_core::network::Destination| {
            cluster.is_some_and(|c| c.network_exists(d, &namespace))
        };
        let input = PreflightInput {
            import: &request.import,
            endpoint: &opts.endpoint,
            credentials: &opts.credentials,
            tls_insecure: opts.tls_insecure,
            destination_exists: cluster.map(|_| &exists as &(dyn Fn(&_) -> bool + Sync)),
        };
        let outcome = preflight::run(self.source.cloud()?.as_ref(), &input).await;
        let mut report = outcome.report;
        if let Some(c) = cluster {
            report.checks.extend(c.checks.iter().cloned());
            report = report.sorted();
        }
        let skip = self.skip_checks();
        let Some(facts) = outcome.facts else {
            return Err(PhaseError::Preflight(Box::new(report)));
        };
        if blocks(&report, skip) {
            return Err(PhaseError::Preflight(Box::new(report)));
        }
        Ok((report, facts, skip))
    }

    async fn preflight(&self, rt: &mut Runtime) -> Result<Option<Duration>, PhaseError> {
        if let Source::Ova(loc) = &self.source {
            return self.ova_preflight(rt, loc.clone()).await;
        }
        let request = &self.request;
        let (report, facts, skip) = self.checks().await?;
        if !rt.warned {
            for c in report.checks.iter().filter(|c| {
                c.status == CheckStatus::Warn || (skip && c.status == CheckStatus::Fail)
            }) {
                self.progress
                    .note(&format!("{} {}: {}", c.id, c.subject, c.message));
            }
            rt.warned = true;
        }
        if let Some(known) = self.journal.snapshot().server_id
            && known != facts.server.id
        {
            return Err(failed(
                "StateMismatch",
                format!(
                    "the state holds an import of server {known}, but '{}' now resolves to server {}; use another --out directory",
                    request.import.spec.virtual_machine_name, facts.server.id
                ),
            ));
        }
        let model = vmi_openstack::describe::describe_server(self.source.cloud()?.as_ref(), &facts)
            .await
            .map_err(|e| {
                failed(
                    e.reason(),
                    format!("describing server {}: {e}", facts.server.id),
                )
            })?;
        let plan = self.nic_plan(&model.nics, &facts.resolved)?;
        let prefix = export::name_prefix(&request.import_key(), &facts.server.id);
        let disks = disk_plan(&model, &facts.server.id);
        self.journal.update(|s| {
            s.server_id = Some(facts.server.id.clone());
            s.name_prefix = Some(prefix);
            s.imported_name.clone_from(&facts.imported_name);
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
        Ok(None)
    }

    async fn power_off(&self, rt: &mut Runtime) -> Result<Option<Duration>, PhaseError> {
        if let Source::Ova(_) = &self.source {
            return Ok(None);
        }
        let now = Instant::now();
        if let Some(d) = rt.power.due(now) {
            return Ok(Some(d));
        }
        let state = self.journal.snapshot();
        let server_id = state.server_id.unwrap_or_default();
        let mut power = state.power;
        let result = export::advance_power_off(
            self.source.cloud()?.as_ref(),
            &server_id,
            &mut power,
            self.opts.shutdown_timeout,
            self.opts.poll,
        )
        .await;
        match result {
            Ok(advance) => {
                rt.power.attempts = 0;
                self.journal.update(|s| s.power = power)?;
                match advance {
                    Advance::Done => Ok(None),
                    Advance::Wait(d) => {
                        let d = poll_delay(rt.power.waits, d);
                        rt.power.waits += 1;
                        Ok(Some(rt.power.wait(now, d)))
                    }
                    _ => {
                        self.progress
                            .note(&format!("stopping server {server_id} (os-stop)"));
                        Ok(Some(Duration::ZERO))
                    }
                }
            }
            Err(e) if e.is_transient() && rt.power.attempts + 1 < self.opts.attempts => {
                rt.power.attempts += 1;
                warn!(error = %e, attempt = rt.power.attempts, "transient error; retrying");
                Ok(Some(rt.power.wait(now, backoff(rt.power.attempts))))
            }
            Err(e) => Err(failed(
                e.reason(),
                format!("stopping server {server_id}: {e}"),
            )),
        }
    }

    fn skip_checks(&self) -> bool {
        self.opts.skip_preflight || self.request.import.spec.skip_preflight_checks == Some(true)
    }

    /// Preflight of an OVA: reads the archive up to its descriptor, nothing more.
    async fn ova_preflight(
        &self,
        rt: &mut Runtime,
        loc: Arc<crate::ova::OvaLocation>,
    ) -> Result<Option<Duration>, PhaseError> {
        let (report, facts, warnings) =
            crate::ova::preflight(&loc, &self.request.import, self.opts.cluster.as_ref()).await;
        let skip = self.skip_checks();
        let Some(facts) = facts else {
            return Err(PhaseError::Preflight(Box::new(report)));
        };
        if blocks(&report, skip) {
            return Err(PhaseError::Preflight(Box::new(report)));
        }
        if !rt.warned {
            for c in report.checks.iter().filter(|c| {
                c.status == CheckStatus::Warn || (skip && c.status == CheckStatus::Fail)
            }) {
                self.progress
                    .note(&format!("{} {}: {}", c.id, c.subject, c.message));
            }
            for w in &warnings {
                self.progress.note(w);
            }
            rt.warned = true;
        }
        let plan = self.nic_plan(&facts.model.nics, &facts.resolved)?;
        let disks: Vec<DiskState> = facts
            .model
            .disks
            .iter()
            .zip(&facts.formats)
            .enumerate()
            .map(|(i, (d, f))| {
                let file_name = match &d.source {
                    vmi_core::model::DiskSource::OvaFile { file_name } => file_name.clone(),
                    _ => String::new(),
                };
                let format = vmi_ova::preflight::qemu_format(*f)
                    .unwrap_or("raw")
                    .to_owned();
                DiskState {
                    export: DiskExport::new(i, ExportSource::Local { file_name, format }),
                    download: DownloadState::default(),
                    output: None,
                }
            })
            .collect();
        let source = format!("ova {}", loc.describe());
        self.journal.update(|s| {
            s.source = Some(source);
            s.imported_name.clone_from(&facts.imported_name);
            s.model = Some(facts.model);
            s.nic_plan = Some(plan);
            if s.disks.len() != disks.len()
                || s.disks
                    .iter()
                    .zip(&disks)
                    .any(|(a, b)| a.export.source != b.export.source)
            {
                s.disks = disks;
            }
        })?;
        Ok(None)
    }

    /// The OVA's export: one background download and extraction for every disk.
    async fn ova_export(
        &self,
        rt: &mut Runtime,
        loc: Arc<crate::ova::OvaLocation>,
    ) -> Result<Option<Duration>, PhaseError> {
        let state = self.journal.snapshot();
        let out = &self.opts.out_dir;
        let have = |i: usize, d: &DiskState| {
            d.output.is_some() || (d.download.done && work_file(out, i).exists())
        };
        if rt.ova.is_none() && state.disks.iter().enumerate().all(|(i, d)| have(i, d)) {
            return Ok(None);
        }
        let poll = drive_task(&mut rt.ova, "the OVA extraction", &self.wakeup, || {
            self.progress
                .disk_step(0, "", &format!("download {}", loc.describe()));
            let (journal, opts, progress) = (
                self.journal.clone(),
                self.opts.clone(),
                self.progress.clone(),
            );
            async move { ova_extract(&loc, &journal, &opts, progress).await }
        })
        .await?;
        Ok(Some(match poll {
            TaskPoll::Started => Duration::from_millis(200),
            TaskPoll::Running => Duration::from_millis(500),
            TaskPoll::Finished => Duration::ZERO,
        }))
    }

    fn export_context(&self) -> ExportContext {
        let state = self.journal.snapshot();
        ExportContext {
            name_prefix: state.name_prefix.clone().unwrap_or_default(),
            import_key: state.import.clone(),
            upload_format: self.opts.upload_format.clone(),
            resource_timeout: self.opts.resource_timeout,
            image_timeout: self.opts.image_timeout,
            poll: self.opts.poll,
        }
    }

    async fn export(&self, rt: &mut Runtime) -> Result<Option<Duration>, PhaseError> {
        if let Source::Ova(loc) = &self.source {
            return self.ova_export(rt, loc.clone()).await;
        }
        let state = self.journal.snapshot();
        let n = state.disks.len();
        rt.disks.resize_with(n, DiskRuntime::default);
        // At most `parallel` disks under way, in boot order; a disk holds its slot until its
        // temporary resources are gone.
        let active: Vec<usize> = (0..n)
            .filter(|&i| state.disks[i].export.step != ExportStep::Done)
            .take(self.opts.parallel.max(1))
            .collect();
        if active.is_empty() {
            return Ok(None);
        }
        let ctx = self.export_context();
        let now = Instant::now();
        let ticks = rt
            .disks
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| active.contains(i))
            .map(|(i, d)| self.disk_tick(i, d, &ctx, now));
        let results = futures::future::join_all(ticks).await;
        let mut next = Duration::MAX;
        let mut error = None;
        for r in results {
            match r {
                Ok(d) => next = next.min(d),
                Err(e) => {
                    error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = error {
            return Err(e);
        }
        Ok(Some(next))
    }

    /// One move of disk `i`: returns when to look at it again.
    async fn disk_tick(
        &self,
        i: usize,
        rt: &mut DiskRuntime,
        ctx: &ExportContext,
        now: Instant,
    ) -> Result<Duration, PhaseError> {
        let mut disk = self.journal.snapshot().disks[i].export.clone();
        if rt.last_step != Some(disk.step) {
            let label = self
                .journal
                .snapshot()
                .model
                .as_ref()
                .and_then(|m| m.disks.get(i))
                .map(|d| d.label.clone())
                .unwrap_or_default();
            self.progress.disk_step(i, &label, step_label(disk.step));
            rt.last_step = Some(disk.step);
            rt.retry.waits = 0;
        }
        if let Some(task) = &rt.download {
            if task.is_finished() {
                join_task(&mut rt.download, &format!("disk {i}: the download task")).await?;
                self.journal
                    .update(|s| export::download_done(&mut s.disks[i].export))?;
                return Ok(Duration::ZERO);
            }
            // While the image downloads, release the temporary volume and snapshot, so that
            // the cleanup after the download has only the image left. Errors are left to the
            // cleanup step, which retries them.
            if !rt.released && rt.release.due(now).is_none() {
                let result =
                    export::release_step(self.source.cloud()?.as_ref(), &mut disk, ctx.poll).await;
                self.journal.update(|s| s.disks[i].export = disk.clone())?;
                if let Ok(None) = result {
                    rt.released = true;
                } else {
                    let d = poll_delay(rt.release.waits, ctx.poll);
                    rt.release.waits += 1;
                    rt.release.wait(now, d);
                }
            }
            let check = Duration::from_millis(500);
            return Ok(match rt.release.due(Instant::now()) {
                Some(d) if !rt.released => d.min(check),
                _ => check,
            });
        }
        if let Some(d) = rt.retry.due(now) {
            return Ok(d);
        }
        if disk.step == ExportStep::Download {
            rt.download = Some(self.spawn_download(i)?);
            rt.released = false;
            rt.release = Retry::default();
            return Ok(Duration::ZERO);
        }
        let advance = match export::advance(self.source.cloud()?.as_ref(), &mut disk, ctx).await {
            Ok(a) => {
                rt.retry.attempts = 0;
                a
            }
            Err(e) if e.is_transient() && rt.retry.attempts + 1 < self.opts.attempts => {
                rt.retry.attempts += 1;
                warn!(disk = i, error = %e, attempt = rt.retry.attempts, "transient error; retrying");
                return Ok(rt.retry.wait(now, backoff(rt.retry.attempts)));
            }
            Err(e) => return Err(failed(e.reason(), e.to_string())),
        };
        // Recorded before anything is waited on.
        self.journal.update(|s| s.disks[i].export = disk.clone())?;
        Ok(match advance {
            Advance::Persist | Advance::Download | Advance::Done => Duration::ZERO,
            Advance::Wait(d) => {
                let d = poll_delay(rt.retry.waits, d);
                rt.retry.waits += 1;
                rt.retry.wait(now, d)
            }
        })
    }

    fn spawn_download(&self, i: usize) -> Result<JoinHandle<Result<(), PhaseError>>, PhaseError> {
        let (api, journal, opts, progress, wakeup) = (
            self.source.cloud()?.clone(),
            self.journal.clone(),
            self.opts.clone(),
            self.progress.clone(),
            self.wakeup.clone(),
        );
        Ok(tokio::spawn(async move {
            let r = download_disk(&api, i, &journal, &opts, progress.as_ref()).await;
            wakeup.notify_one();
            r
        }))
    }

    async fn convert(&self, rt: &mut Runtime) -> Result<Option<Duration>, PhaseError> {
        let poll = drive_task(&mut rt.convert, "the conversion task", &self.wakeup, || {
            let (journal, opts, progress) = (
                self.journal.clone(),
                self.opts.clone(),
                self.progress.clone(),
            );
            async move {
                let n = journal.snapshot().disks.len();
                futures::future::join_all(
                    (0..n).map(|i| convert_disk(i, &journal, &opts, progress.as_ref())),
                )
                .await
                .into_iter()
                .collect::<Result<(), PhaseError>>()
            }
        })
        .await?;
        Ok(match poll {
            TaskPoll::Started => Some(Duration::from_millis(200)),
            TaskPoll::Running => Some(Duration::from_millis(500)),
            TaskPoll::Finished => None,
        })
    }
}

/// Where a phase's background task is.
enum TaskPoll {
    /// Just spawned.
    Started,
    Running,
    /// Finished successfully (a failure is the `Err` of [`drive_task`]).
    Finished,
}

/// Drives the one background task of a phase: spawns `start()` when `slot` is empty (it
/// wakes the driver when done), then reports it running until it finishes, and returns its
/// error, if any, once.
async fn drive_task<F>(
    slot: &mut Option<JoinHandle<Result<(), PhaseError>>>,
    what: &str,
    wakeup: &Arc<Notify>,
    start: impl FnOnce() -> F,
) -> Result<TaskPoll, PhaseError>
where
    F: std::future::Future<Output = Result<(), PhaseError>> + Send + 'static,
{
    match slot {
        None => {
            let task = start();
            let wakeup = wakeup.clone();
            *slot = Some(tokio::spawn(async move {
                let r = task.await;
                wakeup.notify_one();
                r
            }));
            Ok(TaskPoll::Started)
        }
        Some(t) if t.is_finished() => {
            join_task(slot, what).await?;
            Ok(TaskPoll::Finished)
        }
        Some(_) => Ok(TaskPoll::Running),
    }
}

/// Takes a finished task out of `slot` and returns its outcome; a panicked or aborted task is
/// an `InternalError` naming `what`.
async fn join_task(
    slot: &mut Option<JoinHandle<Result<(), PhaseError>>>,
    what: &str,
) -> Result<(), PhaseError> {
    let joined = match slot.take() {
        Some(t) => t.await,
        None => Ok(Ok(())),
    };
    joined.unwrap_or_else(|e| {
        Err(failed(
            "InternalError",
            format!("{what} ended abnormally: {e}"),
        ))
    })
}

/// Rounds of cleanup: the poll schedule and the errors of the last round.
#[derive(Debug, Default)]
pub(crate) struct CleanupRounds {
    retry: Retry,
    pub(crate) errors: Vec<String>,
}

/// One round of removing every temporary resource `journal` records, and the partial
/// downloads. `None` when nothing is left; else when to try again.
pub(crate) async fn cleanup_once(
    source: &Source,
    journal: &Journal,
    opts: &EngineOptions,
    rounds: &mut CleanupRounds,
) -> Result<Option<Duration>, JournalError> {
    let poll = opts.poll;
    let state = journal.snapshot();
    let mut pending = false;
    rounds.errors.clear();
    let _ = std::fs::remove_dir_all(ova_dir(&opts.out_dir));
    let Source::Openstack(api) = source else {
        remove_local_files(&state, opts);
        return Ok(None);
    };
    let api = api.as_ref();
    for (i, d) in state.disks.iter().enumerate() {
        let mut disk = d.export.clone();
        match export::cleanup_step(api, &mut disk, poll).await {
            Ok(wait) => pending |= wait.is_some(),
            Err(e) => {
                pending = true;
                rounds.errors.push(e.to_string());
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
                rounds.errors.push(e.to_string());
            }
        }
        journal.update(|s| {
            s.orphans = holder.strays.into_iter().filter(Tracked::is_live).collect();
        })?;
    }
    remove_local_files(&state, opts);
    if !pending {
        return Ok(None);
    }
    let now = Instant::now();
    let d = poll_delay(rounds.retry.waits, poll);
    rounds.retry.waits += 1;
    Ok(Some(rounds.retry.wait(now, d)))
}

/// Removes partial downloads (and, for the controller, the finished files).
fn remove_local_files(state: &crate::state::ImportState, opts: &EngineOptions) {
    for (i, d) in state.disks.iter().enumerate() {
        let finished = d.export.step == ExportStep::Done && d.download.done;
        if !finished || opts.remove_outputs_on_cleanup {
            let _ = std::fs::remove_file(work_file(&opts.out_dir, i));
        }
        if opts.remove_outputs_on_cleanup
            && let Some(o) = &d.output
        {
            let _ = std::fs::remove_file(opts.out_dir.join(&o.file));
        }
    }
}

/// Where an OVA is extracted before its disks are moved to their work files.
pub fn ova_dir(out_dir: &Path) -> PathBuf {
    out_dir.join("disks").join(".ova")
}

fn abort_tasks(rt: &mut Runtime) {
    for d in &mut rt.disks {
        if let Some(t) = d.download.take() {
            t.abort();
        }
    }
    if let Some(t) = rt.convert.take() {
        t.abort();
    }
    if let Some(t) = rt.ova.take() {
        t.abort();
    }
}

/// Whether a failed check stops the import (with `skip`, only those without which nothing can
/// work).
fn blocks(report: &Report, skip: bool) -> bool {
    report.checks.iter().any(|c| {
        c.status == CheckStatus::Fail
            && (!skip
                || matches!(
                    c.id,
                    CheckId::SourceAuth
                        | CheckId::SourceReadable
                        | CheckId::VmFound
                        | CheckId::VmName
                ))
    })
}

/// Downloads and extracts the OVA, verifying the manifest, and moves each disk's file to its
/// work file.
async fn ova_extract(
    loc: &crate::ova::OvaLocation,
    journal: &Journal,
    opts: &EngineOptions,
    progress: Arc<dyn ProgressSink>,
) -> Result<(), PhaseError> {
    let dir = ova_dir(&opts.out_dir);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)
        .map_err(|e| failed("IoError", format!("creating {}: {e}", dir.display())))?;
    let ova = loc
        .extract(&dir, progress.clone())
        .await
        .map_err(|e| failed(e.reason(), e.to_string()))?;
    if ova.manifest.is_none() {
        progress
            .note("the OVA has no manifest (.mf): its files could not be verified against digests");
    }
    for w in &ova.warnings {
        progress.note(&w.to_string());
    }
    let state = journal.snapshot();
    for (i, d) in state.disks.iter().enumerate() {
        let ExportSource::Local { file_name, format } = &d.export.source else {
            return Err(failed(
                "CorruptState",
                format!("disk {i} is not a file of the OVA"),
            ));
        };
        let work = work_file(&opts.out_dir, i);
        let size = match ova.file(file_name) {
            Some(f) if f.path.exists() => {
                std::fs::rename(&f.path, &work)
                    .map_err(|e| failed("IoError", format!("moving {}: {e}", f.path.display())))?;
                f.size
            }
            Some(f) => {
                // The same file for a second disk: copy the first disk's.
                let first = state
                    .disks
                    .iter()
                    .position(|o| matches!(&o.export.source, ExportSource::Local { file_name: n, .. } if n == file_name))
                    .unwrap_or(i);
                std::fs::copy(work_file(&opts.out_dir, first), &work)
                    .map_err(|e| failed("IoError", format!("copying disk {first}: {e}")))?;
                f.size
            }
            None => {
                return Err(failed(
                    "BadArchive",
                    format!("disk {i}: '{file_name}' is not in {}", loc.describe()),
                ));
            }
        };
        journal.update(|s| {
            let dl = &mut s.disks[i].download;
            dl.done = true;
            dl.size = size;
            dl.checkpoint = size;
            dl.format = Some(format.clone());
            dl.digests = None;
        })?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// One export per disk of the model, in boot order.
fn disk_plan(model: &vmi_core::model::VmModel, server_id: &str) -> Vec<DiskState> {
    use vmi_core::model::DiskSource;
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

/// Polls quickly while a step is young (most snapshots, volumes and uploads finish within
/// seconds, and every overshoot adds to the import's time): 100 ms, 200 ms, then every 250 ms
/// for about 10 s; after that every `max`, to spare the API during long uploads.
pub(crate) fn poll_delay(waits: u32, max: Duration) -> Duration {
    let quick = Duration::from_millis(100u64 << waits.min(10)).min(Duration::from_millis(250));
    if waits < 40 { quick.min(max) } else { max }
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_secs(1 << attempt.min(5))
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

/// The final file of disk `i` in `format`.
pub fn output_file(out_dir: &Path, i: usize, format: Format) -> PathBuf {
    out_dir
        .join("disks")
        .join(format!("disk-{i}.{}", format.as_str()))
}

/// The work file a disk's image is downloaded into.
pub fn work_file(out_dir: &Path, i: usize) -> PathBuf {
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

async fn convert_disk(
    i: usize,
    journal: &Journal,
    opts: &EngineOptions,
    progress: &dyn ProgressSink,
) -> Result<(), PhaseError> {
    let state = journal.snapshot();
    let disk = &state.disks[i];
    let to = opts.format.format();
    let out_path = output_file(&opts.out_dir, i, to);
    let out_name = format!("disk-{i}.{}", to.as_str());
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
