//! The `VirtualMachineImport` reconciler.
//!
//! Each reconcile reads the import fresh, does one bounded step and requeues: the engine's
//! [`Driver::step`] while the disks are exported (its state goes to `status.engineState`, so a
//! restarted controller resumes from there), then the cluster side — one VirtualMachineImage
//! per disk served by the disk server, PVCs for the backing-image backend, the VirtualMachine —
//! until the VM is ready. Nothing sleeps in a reconcile.
//!
//! The finalizer `migration.harvesterhci.io/vm-import-cleanup` removes the temporary resources
//! on the source and the local files, also when the import is deleted mid-way: deleting an
//! import cancels it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use serde_json::{Value, json};
use tracing::{info, instrument, warn};
use vmi_api::{
    ClusterStatus, ConditionStatus, DestinationStatus, DiskBus, ImageRecord, OpenstackSource,
    OvaSource, VirtualMachineImport, VirtualMachineImportStatus,
};
use vmi_core::input::{ImportRequest, SourceDoc, SourceKind};
use vmi_core::manifest::{self, DiskArtifact, ManifestInput};
use vmi_core::phase::Phase;
use vmi_core::preflight::{Check, CheckId, CheckStatus};
use vmi_engine::{ClusterView, Driver, EngineError, EngineOptions, ImportState, Journal, Step};
use vmi_openstack::OpenstackApi;
use vmi_openstack::session::SessionOptions;

use crate::Context;
use crate::disk_server::{Served, disk_path, new_token};
use crate::harvester::{self, Backend, ImageInput, ImageState, VmState};
use crate::kubeapi::{self, dynamic, is_conflict, is_not_found};
use crate::options::DiskFormat;
use crate::sources::{self, Verdict};
use crate::status::{self, Stage, condition, set_condition};

/// Our finalizer.
pub const FINALIZER: &str = "migration.harvesterhci.io/vm-import-cleanup";
/// The Go controller's finalizer: removed with ours, so that imports made under the Go
/// controller can be deleted once this controller replaces it.
pub const UPSTREAM_FINALIZER: &str = "wrangler.cattle.io/virtualmachine-import-controller";

/// Errors of a reconcile that are retried with backoff (the import's own failures go to its
/// status instead).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("import state: {0}")]
    State(String),
    #[error("{0}")]
    Io(String),
}

impl ImportError {
    pub fn reason(&self) -> &'static str {
        match self {
            ImportError::Kube(_) => "KubernetesApi",
            ImportError::State(_) => "StateError",
            ImportError::Io(_) => "IoError",
        }
    }
}

/// Live progress of one import's engine, from the driver's progress reports.
#[derive(Debug, Default)]
pub struct Sink {
    bytes: Mutex<BTreeMap<usize, (u64, Option<u64>)>>,
    notes: Mutex<Vec<String>>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl vmi_engine::ProgressSink for Sink {
    fn phase(&self, _: Phase) {}
    fn disk_step(&self, _: usize, _: &str, _: &str) {}
    fn disk_bytes(&self, index: usize, done: u64, total: Option<u64>) {
        let mut b = lock(&self.bytes);
        let before = b.get(&index).map_or(0, |x| x.0);
        if let Some(m) = &self.metrics
            && done > before
        {
            m.bytes_transferred.inc_by(done - before);
        }
        b.insert(index, (done, total));
    }
    fn note(&self, text: &str) {
        let mut n = lock(&self.notes);
        if n.len() < 50 {
            n.push(text.to_owned());
        }
    }
}

/// What the controller keeps in memory for an import whose engine runs.
#[derive(Debug)]
pub struct Runtime {
    driver: Driver,
    sink: Arc<Sink>,
    /// Revision of the journal last written to the status.
    written: AtomicU64,
    last_write: Mutex<Instant>,
    /// Download milestones already announced as Events, per disk (in quarters).
    milestones: Mutex<BTreeMap<usize, u64>>,
}

impl Runtime {
    /// Stops the engine's background work.
    pub async fn stop(&self) {
        self.driver.stop().await;
    }
}

/// The source of an import, once it is ready.
enum ReadySource {
    Openstack {
        source: OpenstackSource,
        secret: vmi_core::input::SecretData,
    },
    Ova {
        source: OvaSource,
        location: vmi_engine::ova::OvaLocation,
    },
}

enum SourceLookup {
    Ready(Box<ReadySource>),
    /// Wait for it (reason, message).
    Wait(String, String),
    /// The import can never work with this source (reason, message).
    Invalid(String, String),
}

fn key(import: &VirtualMachineImport) -> String {
    format!(
        "{}/{}",
        import.namespace().unwrap_or_default(),
        import.name_any()
    )
}

fn uid(import: &VirtualMachineImport) -> String {
    import.uid().unwrap_or_default()
}

/// The import's scratch folder.
pub fn scratch_of(ctx: &Context, uid: &str) -> PathBuf {
    ctx.args.scratch_dir.join("imports").join(uid)
}

#[instrument(skip_all, fields(import = %key(&import)))]
pub async fn reconcile(
    import: Arc<VirtualMachineImport>,
    ctx: Arc<Context>,
) -> Result<Action, ImportError> {
    ctx.metrics.reconciled("VirtualMachineImport");
    let ns = import.namespace().unwrap_or_default();
    let api: Api<VirtualMachineImport> = Api::namespaced(ctx.client.clone(), &ns);
    // Fresh from the server: the watch cache may lag our own last status write.
    let Some(import) = api.get_opt(&import.name_any()).await? else {
        return Ok(Action::await_change());
    };
    if import.meta().deletion_timestamp.is_some() {
        return cleanup_on_delete(&import, &api, &ctx).await;
    }
    if !import.finalizers().iter().any(|f| f == FINALIZER) {
        kubeapi::add_finalizer(&api, &import, FINALIZER).await?;
        return Ok(Action::requeue(Duration::ZERO));
    }
    let result = apply(&import, &api, &ctx).await;
    refresh_stage_metrics(&ctx);
    result
}

/// The import gauge: imports by stage, from what the runtimes and statuses say.
fn refresh_stage_metrics(ctx: &Context) {
    let stages = lock(&ctx.stages).clone();
    ctx.metrics.imports.clear();
    for stage in stages.values() {
        ctx.metrics
            .imports
            .get_or_create(&crate::metrics::StageLabel {
                stage: stage.label().to_owned(),
            })
            .inc();
    }
}

async fn apply(
    import: &VirtualMachineImport,
    api: &Api<VirtualMachineImport>,
    ctx: &Arc<Context>,
) -> Result<Action, ImportError> {
    let mut status = import.status.clone().unwrap_or_default();
    let engine_state = match status::engine_state_of(&status) {
        Ok(s) => s,
        Err(msg) => {
            return fail(
                import,
                api,
                ctx,
                status,
                Stage::Failed,
                "CorruptStatus",
                &format!("{msg}; delete the import and create it again"),
            )
            .await;
        }
    };
    let phase = engine_state.as_ref().map_or(Phase::Preflight, |s| s.phase);
    let stage = Stage::of_status(&status, phase);
    lock(&ctx.stages).insert(uid(import), stage);

    // An edit of an invalid import's spec runs preflight again.
    if stage == Stage::Invalid && status.observed_generation != import.meta().generation {
        info!("the spec changed since preflight failed; running preflight again");
        let fresh = VirtualMachineImportStatus {
            observed_generation: import.meta().generation,
            ..VirtualMachineImportStatus::default()
        };
        kubeapi::write_status(api, &import.name_any(), &fresh).await?;
        lock(&ctx.runtimes).remove(&uid(import));
        return Ok(Action::requeue(Duration::ZERO));
    }
    if stage.is_terminal() {
        return terminal(import, api, ctx, status, stage).await;
    }
    if matches!(stage, Stage::Engine(p) if p != Phase::Done) {
        return engine_stage(import, api, ctx, &mut status, engine_state).await;
    }
    destination_stage(import, api, ctx, status, engine_state, stage).await
}

/// Finds the import's source and whether it is ready.
async fn lookup_source(
    import: &VirtualMachineImport,
    ctx: &Context,
) -> Result<SourceLookup, ImportError> {
    let r = &import.spec.source_cluster;
    let ns = r
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| import.namespace().unwrap_or_default());
    let name = r.name.clone().unwrap_or_default();
    let kind = r.kind.clone().unwrap_or_default();
    let source_kind = match SourceKind::from_reference(&kind) {
        Some(k @ (SourceKind::Openstack | SourceKind::Ova)) => k,
        Some(other) => {
            return Ok(SourceLookup::Invalid(
                "SourceNotSupported".into(),
                format!(
                    "spec.sourceCluster is a {}; vm-import imports from OpenstackSource and OvaSource (export a vSphere VM as an OVA)",
                    other.kind()
                ),
            ));
        }
        None => {
            return Ok(SourceLookup::Invalid(
                "BadSourceKind".into(),
                format!(
                    "spec.sourceCluster.kind '{kind}' is not OpenstackSource, OvaSource or VmwareSource"
                ),
            ));
        }
    };
    let (status, openstack, ova) = if source_kind == SourceKind::Openstack {
        let api: Api<OpenstackSource> = Api::namespaced(ctx.client.clone(), &ns);
        let src = api.get_opt(&name).await?;
        (src.as_ref().and_then(|s| s.status.clone()), src, None)
    } else {
        let api: Api<OvaSource> = Api::namespaced(ctx.client.clone(), &ns);
        let src = api.get_opt(&name).await?;
        (src.as_ref().and_then(|s| s.status.clone()), None, src)
    };
    if openstack.is_none() && ova.is_none() {
        return Ok(SourceLookup::Wait(
            "SourceNotFound".into(),
            format!(
                "{} {ns}/{name} named by spec.sourceCluster does not exist; create it (the import waits)",
                source_kind.kind()
            ),
        ));
    }
    let ready = status
        .as_ref()
        .and_then(|s| s.status)
        .is_some_and(|s| s == ClusterStatus::Ready);
    if !ready {
        let why = status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "ClusterReady"))
            .and_then(|c| c.message.clone())
            .unwrap_or_else(|| "not verified yet".into());
        return Ok(SourceLookup::Wait(
            "SourceNotReady".into(),
            format!(
                "{} {ns}/{name} is not ready: {why} (the import waits)",
                source_kind.kind()
            ),
        ));
    }
    if let Some(source) = openstack {
        let secret = match sources::read_secret(&ctx.client, &source.spec.credentials, &ns).await? {
            Ok(s) => s,
            Err(v) => return Ok(SourceLookup::Wait(v.reason, v.message)),
        };
        return Ok(SourceLookup::Ready(Box::new(ReadySource::Openstack {
            source,
            secret,
        })));
    }
    let Some(source) = ova else {
        return Err(ImportError::State("source lookup lost its object".into()));
    };
    match sources::ova_location(&source, &ctx.client).await? {
        Ok(location) => Ok(SourceLookup::Ready(Box::new(ReadySource::Ova {
            source,
            location,
        }))),
        Err(v) => Ok(SourceLookup::Wait(v.reason, v.message)),
    }
}

/// What preflight learns of the cluster: the NetworkAttachmentDefinitions and the storage class.
async fn cluster_view(import: &VirtualMachineImport, ctx: &Context) -> ClusterView {
    let mut view = ClusterView::default();
    let nads: Api<DynamicObject> = Api::all_with(ctx.client.clone(), &kubeapi::nad_resource());
    match nads.list(&ListParams::default()).await {
        Ok(list) => {
            for n in list {
                view.networks
                    .insert((n.namespace().unwrap_or_default(), n.name_any()));
            }
        }
        Err(e) => {
            warn!(error = %e, "cannot list NetworkAttachmentDefinitions (is Multus installed?)");
        }
    }
    view.checks.push(match &import.spec.storage_class {
        None => Check::skip(
            CheckId::StorageClass,
            "",
            "spec.storageClass is not set: Harvester's default storage class is used",
        ),
        Some(sc) => {
            let api: Api<StorageClass> = Api::all(ctx.client.clone());
            match api.get_opt(sc).await {
                Ok(Some(_)) => Check::pass(CheckId::StorageClass, sc.clone(), "exists"),
                Ok(None) => Check::fail(
                    CheckId::StorageClass,
                    sc.clone(),
                    format!(
                        "no StorageClass '{sc}' in the cluster; create it or fix spec.storageClass"
                    ),
                ),
                Err(e) => Check::fail(
                    CheckId::StorageClass,
                    sc.clone(),
                    format!("cannot read StorageClass '{sc}': {e}"),
                ),
            }
        }
    });
    view
}

fn engine_options(
    import: &VirtualMachineImport,
    ctx: &Context,
    endpoint: String,
    credentials: String,
    insecure: bool,
) -> EngineOptions {
    let a = &ctx.args;
    let mut o = EngineOptions::new(scratch_of(ctx, &uid(import)));
    o.format = match a.disk_format {
        DiskFormat::Qcow2 => vmi_engine::OutputFormat::Qcow2,
        DiskFormat::Raw => vmi_engine::OutputFormat::Raw,
    };
    o.upload_format.clone_from(&a.upload_format);
    o.parallel = a.parallel_disks.max(1);
    o.resource_timeout = Duration::from_secs(a.resource_timeout_seconds);
    o.image_timeout = Duration::from_secs(a.image_timeout_seconds);
    if let Some(t) = import
        .spec
        .graceful_shutdown_timeout_seconds
        .filter(|t| *t > 0)
    {
        o.shutdown_timeout = Duration::from_secs(u64::try_from(t).unwrap_or(600));
    }
    o.attempts = a.transient_retries.max(1);
    o.write_manifests = false;
    o.remove_outputs_on_cleanup = true;
    o.endpoint = endpoint;
    o.credentials = credentials;
    o.tls_insecure = insecure;
    o
}

/// The runtime of an import: the one in memory, or a new one resumed from the status.
async fn runtime(
    import: &VirtualMachineImport,
    source: &ReadySource,
    state: Option<ImportState>,
    ctx: &Arc<Context>,
) -> Result<Result<Arc<Runtime>, Verdict>, ImportError> {
    let id = uid(import);
    let phase = state.as_ref().map_or(Phase::Preflight, |s| s.phase);
    let existing = lock(&ctx.runtimes).get(&id).cloned();
    if let Some(rt) = existing {
        return Ok(Ok(rt));
    }
    let (engine_source, request, mut opts) = match source {
        ReadySource::Openstack { source, secret } => {
            let cfg = match sources::openstack_config(source, secret) {
                Ok(c) => c,
                Err(v) => return Ok(Err(v)),
            };
            let options = SessionOptions::default();
            let (api, endpoint, credentials, insecure) =
                match sources::openstack_client(cfg, options) {
                    Ok(x) => x,
                    Err(v) => return Ok(Err(v)),
                };
            let api: Arc<dyn OpenstackApi> = Arc::new(api);
            let request = ImportRequest {
                import: import.clone(),
                source_kind: SourceKind::Openstack,
                source: Some(SourceDoc::Openstack(source.clone())),
                secret: Some(secret.clone()),
            };
            let opts = engine_options(import, ctx, endpoint, credentials, insecure);
            (vmi_engine::Source::Openstack(api), request, opts)
        }
        ReadySource::Ova { source, location } => {
            let request = ImportRequest {
                import: import.clone(),
                source_kind: SourceKind::Ova,
                source: Some(SourceDoc::Ova(source.clone())),
                secret: None,
            };
            let opts = engine_options(
                import,
                ctx,
                location.describe().to_owned(),
                String::new(),
                source.spec.insecure_skip_tls_verify.unwrap_or(false),
            );
            (
                vmi_engine::Source::Ova(Arc::new(location.clone())),
                request,
                opts,
            )
        }
    };
    if phase == Phase::Preflight {
        opts.cluster = Some(cluster_view(import, ctx).await);
    }
    let state = state.unwrap_or_else(|| ImportState::new(request.import_key()));
    let sink = Arc::new(Sink {
        metrics: Some(ctx.metrics.clone()),
        ..Sink::default()
    });
    let driver = Driver::new(
        engine_source,
        request,
        Journal::in_memory(state),
        opts,
        sink.clone(),
    )
    .map_err(|e| ImportError::State(e.to_string()))?;
    let reset = driver
        .reset_disks_without_files()
        .map_err(|e| ImportError::State(e.to_string()))?;
    if !reset.is_empty() {
        warn!(disks = ?reset, "the local files of some disks are gone (new scratch volume?); exporting them again");
    }
    let rt = Arc::new(Runtime {
        driver,
        sink,
        written: AtomicU64::new(u64::MAX),
        last_write: Mutex::new(Instant::now()),
        milestones: Mutex::default(),
    });
    lock(&ctx.runtimes).insert(id, rt.clone());
    Ok(Ok(rt))
}

/// The local files of an import that still exist (relative to the scratch folder).
fn local_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir.join("disks")) {
        for e in rd.flatten() {
            out.push(format!("disks/{}", e.file_name().to_string_lossy()));
        }
    }
    out.sort();
    out
}

/// The status while the engine runs.
fn engine_status(
    import: &VirtualMachineImport,
    base: &VirtualMachineImportStatus,
    state: &ImportState,
    rt: Option<&Runtime>,
    ctx: &Context,
) -> VirtualMachineImportStatus {
    let mut s = base.clone();
    let stage = Stage::of_status(base, state.phase);
    let stage = match stage {
        Stage::Engine(_) => Stage::Engine(state.phase),
        other => other,
    };
    s.import_status = stage.import_status();
    s.observed_generation = import.meta().generation;
    s.imported_virtual_machine_name
        .clone_from(&state.imported_name);
    s.engine_state = status::engine_state_value(state);
    let dir = scratch_of(ctx, &uid(import));
    s.temporary_resources = status::temporary_resources(state, &local_files(&dir));
    let bytes = rt.map(|r| lock(&r.sink.bytes).clone()).unwrap_or_default();
    s.disk_progress = status::disk_progress(state, &bytes, s.destination.as_ref());
    let mut disks = status::disk_import_status(state, s.destination.as_ref());
    for (d, old) in disks.iter_mut().zip(&base.disk_import_status) {
        d.disk_conditions.clone_from(&old.disk_conditions);
        d.disk_route.clone_from(&old.disk_route);
    }
    s.disk_import_status = disks;
    let now = kubeapi::now();
    if state.power.stop_requested {
        set_condition(
            &mut s.import_conditions,
            "VMPoweringOff",
            ConditionStatus::True,
            "StopRequested",
            "os-stop was sent to the source server",
            &now,
        );
    }
    if state.phase > Phase::Preflight && state.phase != Phase::Failed {
        set_condition(
            &mut s.import_conditions,
            condition::PREFLIGHT,
            ConditionStatus::True,
            "PreflightPassed",
            "every preflight check passed",
            &now,
        );
    }
    // An OVA has no server to stop.
    if state.phase > Phase::PowerOff && state.phase != Phase::Failed && state.server_id.is_some() {
        set_condition(
            &mut s.import_conditions,
            "VMPoweredOff",
            ConditionStatus::True,
            "Shutoff",
            "the source server is SHUTOFF",
            &now,
        );
    }
    if matches!(state.phase, Phase::Manifests | Phase::Done) {
        set_condition(
            &mut s.import_conditions,
            condition::EXPORTED,
            ConditionStatus::True,
            "Exported",
            &format!(
                "{} disk(s) exported and verified by checksum",
                state.disks.len()
            ),
            &now,
        );
    }
    s
}

async fn emit_notes(import: &VirtualMachineImport, rt: &Runtime, ctx: &Context) {
    let notes: Vec<String> = std::mem::take(&mut *lock(&rt.sink.notes));
    for n in notes {
        info!(note = %n, "engine note");
        kubeapi::publish(
            &ctx.recorder,
            import,
            EventType::Normal,
            "Note",
            "Import",
            n,
        )
        .await;
    }
    // Download milestones: 25 %, 50 %, 75 % of each disk.
    let bytes = lock(&rt.sink.bytes).clone();
    let mut announce = Vec::new();
    {
        let mut m = lock(&rt.milestones);
        for (i, (done, total)) in bytes {
            if let Some(total) = total.filter(|t| *t > 0) {
                let quarter = (done.saturating_mul(4) / total).min(3);
                let seen = m.entry(i).or_insert(0);
                if quarter > *seen {
                    *seen = quarter;
                    announce.push(format!(
                        "disk {i}: {}% downloaded ({done} of {total} bytes)",
                        quarter * 25
                    ));
                }
            }
        }
    }
    for a in announce {
        kubeapi::publish(
            &ctx.recorder,
            import,
            EventType::Normal,
            "Progress",
            "Download",
            a,
        )
        .await;
    }
}

// One match over the step's outcome; each arm is short, splitting it would hide the flow.
#[allow(clippy::too_many_lines)]
async fn engine_stage(
    import: &VirtualMachineImport,
    api: &Api<VirtualMachineImport>,
    ctx: &Arc<Context>,
    status: &mut VirtualMachineImportStatus,
    engine_state: Option<ImportState>,
) -> Result<Action, ImportError> {
    let now = kubeapi::now();
    let source = match lookup_source(import, ctx).await? {
        SourceLookup::Ready(s) => s,
        SourceLookup::Wait(reason, message) => {
            let changed = set_condition(
                &mut status.import_conditions,
                condition::SOURCE_READY,
                ConditionStatus::False,
                &reason,
                &message,
                &now,
            );
            if changed {
                status.observed_generation = import.meta().generation;
                kubeapi::write_status(api, &import.name_any(), status).await?;
                warn!(%reason, %message, "waiting for the source");
                kubeapi::publish(
                    &ctx.recorder,
                    import,
                    EventType::Warning,
                    &reason,
                    "WaitForSource",
                    message,
                )
                .await;
            }
            return Ok(Action::requeue(Duration::from_secs(30)));
        }
        SourceLookup::Invalid(reason, message) => {
            let mut s = status.clone();
            set_condition(
                &mut s.import_conditions,
                condition::PREFLIGHT,
                ConditionStatus::False,
                &reason,
                &message,
                &now,
            );
            return fail(import, api, ctx, s, Stage::Invalid, &reason, &message).await;
        }
    };
    set_condition(
        &mut status.import_conditions,
        condition::SOURCE_READY,
        ConditionStatus::True,
        "SourceReady",
        "the source is verified",
        &now,
    );
    let rt = match runtime(import, &source, engine_state, ctx).await? {
        Ok(rt) => rt,
        Err(v) => {
            return fail(
                import,
                api,
                ctx,
                status.clone(),
                Stage::Failed,
                &v.reason,
                &v.message,
            )
            .await;
        }
    };
    let before = rt.driver.journal().snapshot().phase;
    let step = rt.driver.step().await;
    emit_notes(import, &rt, ctx).await;
    let state = rt.driver.journal().snapshot();
    match step {
        Ok(step) => {
            if state.phase != before {
                phase_changed(import, ctx, before, &state).await;
            }
            let revision = rt.driver.journal().revision();
            let due = lock(&rt.last_write).elapsed() >= ctx.args.progress_interval();
            let done = step == Step::Done;
            if done || revision != rt.written.load(Ordering::SeqCst) || due {
                let new = engine_status(import, status, &state, Some(&rt), ctx);
                kubeapi::write_status(api, &import.name_any(), &new).await?;
                rt.written.store(revision, Ordering::SeqCst);
                *lock(&rt.last_write) = Instant::now();
            }
            match step {
                Step::Done => {
                    lock(&ctx.runtimes).remove(&uid(import));
                    Ok(Action::requeue(Duration::ZERO))
                }
                Step::After(d) => Ok(Action::requeue(
                    d.clamp(Duration::from_millis(50), ctx.args.progress_interval()),
                )),
            }
        }
        Err(EngineError::Preflight(report)) => {
            lock(&ctx.runtimes).remove(&uid(import));
            let mut s = engine_status(import, status, &state, None, ctx);
            status::preflight_failed(&mut s.import_conditions, &report, &now);
            s.import_status = Stage::Invalid.import_status();
            s.engine_state = None;
            kubeapi::write_status(api, &import.name_any(), &s).await?;
            let failed: Vec<_> = report
                .checks
                .iter()
                .filter(|c| c.status == CheckStatus::Fail)
                .collect();
            warn!(
                failed = failed.len(),
                "preflight failed; nothing on the source was touched"
            );
            ctx.metrics.error("PreflightFailed");
            for c in failed {
                kubeapi::publish(
                    &ctx.recorder,
                    import,
                    EventType::Warning,
                    &status::check_reason(c.id.as_str()),
                    "Preflight",
                    format!("{} {}: {}", c.id, c.subject, c.message),
                )
                .await;
            }
            Ok(Action::await_change())
        }
        Err(EngineError::Failed {
            phase,
            reason,
            message,
            left,
        }) => {
            let mut s = engine_status(import, status, &state, None, ctx);
            set_condition(
                &mut s.import_conditions,
                "VMExportFailed",
                ConditionStatus::True,
                &reason,
                &format!("error exporting VM: {message}"),
                &now,
            );
            if !left.is_empty() {
                let list: Vec<String> = left
                    .iter()
                    .map(vmi_openstack::export::Tracked::describe)
                    .collect();
                set_condition(
                    &mut s.import_conditions,
                    condition::CLEANUP,
                    ConditionStatus::False,
                    "ResourcesLeft",
                    &format!(
                        "could not remove yet: {}; retried every 5 minutes and when the import is deleted",
                        list.join(", ")
                    ),
                    &now,
                );
            }
            fail(
                import,
                api,
                ctx,
                s,
                Stage::Failed,
                &reason,
                &format!("{phase} failed: {message}"),
            )
            .await
        }
        Err(e @ (EngineError::Journal(_) | EngineError::Mismatch(_))) => {
            Err(ImportError::State(e.to_string()))
        }
    }
}

async fn phase_changed(
    import: &VirtualMachineImport,
    ctx: &Context,
    before: Phase,
    state: &ImportState,
) {
    let elapsed = state.timings.get(before.key()).copied().unwrap_or(0.0);
    ctx.metrics
        .phase_seconds
        .get_or_create(&crate::metrics::PhaseLabel {
            phase: before.key().to_owned(),
        })
        .observe(elapsed);
    let note = match state.phase {
        Phase::PowerOff => match state.server_id.as_deref() {
            Some(id) => format!("preflight passed; stopping source server {id}"),
            None => "preflight passed".to_owned(),
        },
        Phase::Export => format!("exporting {} disk(s)", state.disks.len()),
        Phase::Convert => "every disk downloaded and verified; converting".to_owned(),
        Phase::Manifests | Phase::Done => "disks exported".to_owned(),
        Phase::Failed | Phase::Preflight => return,
    };
    info!(from = %before, to = %state.phase, "phase changed");
    let reason = match state.phase {
        Phase::PowerOff => "VirtualMachineImportValid",
        Phase::Export => "SourceReady",
        _ => "DisksExported",
    };
    kubeapi::publish(
        &ctx.recorder,
        import,
        EventType::Normal,
        reason,
        "Import",
        note,
    )
    .await;
}

/// Records a failure: stage, `Failed` condition, Event, metric.
async fn fail(
    import: &VirtualMachineImport,
    api: &Api<VirtualMachineImport>,
    ctx: &Arc<Context>,
    mut status: VirtualMachineImportStatus,
    stage: Stage,
    reason: &str,
    message: &str,
) -> Result<Action, ImportError> {
    let now = kubeapi::now();
    status.import_status = stage.import_status();
    status.observed_generation = import.meta().generation;
    set_condition(
        &mut status.import_conditions,
        condition::FAILED,
        ConditionStatus::True,
        reason,
        message,
        &now,
    );
    kubeapi::write_status(api, &import.name_any(), &status).await?;
    warn!(%reason, %message, "import failed");
    ctx.metrics.error(reason);
    kubeapi::publish(
        &ctx.recorder,
        import,
        EventType::Warning,
        reason,
        "Import",
        message.to_owned(),
    )
    .await;
    lock(&ctx.stages).insert(uid(import), stage);
    Ok(Action::requeue(Duration::ZERO))
}

/// Terminal imports: a failed one keeps trying to remove what is left on the source; local
/// files go in every case.
async fn terminal(
    import: &VirtualMachineImport,
    api: &Api<VirtualMachineImport>,
    ctx: &Arc<Context>,
    mut status: VirtualMachineImportStatus,
    stage: Stage,
) -> Result<Action, ImportError> {
    let left_on_source = status.temporary_resources.iter().any(|t| t.kind != "file");
    if matches!(stage, Stage::Failed | Stage::ImageFailed) && left_on_source {
        let state = status::engine_state_of(&status)
            .map_err(ImportError::State)?
            .ok_or_else(|| ImportError::State("no engine state".into()))?;
        let SourceLookup::Ready(source) = lookup_source(import, ctx).await? else {
            return Ok(Action::requeue(Duration::from_mins(5)));
        };
        let Ok(rt) = runtime(import, &source, Some(state), ctx).await? else {
            return Ok(Action::requeue(Duration::from_mins(5)));
        };
        let round = rt
            .driver
            .cleanup_round()
            .await
            .map_err(|e| ImportError::State(e.to_string()))?;
        let state = rt.driver.journal().snapshot();
        status.engine_state = status::engine_state_value(&state);
        status.temporary_resources =
            status::temporary_resources(&state, &local_files(&scratch_of(ctx, &uid(import))));
        if round.is_none() {
            lock(&ctx.runtimes).remove(&uid(import));
            set_condition(
                &mut status.import_conditions,
                condition::CLEANUP,
                ConditionStatus::True,
                "Removed",
                "every temporary resource on the source is removed",
                &kubeapi::now(),
            );
        }
        kubeapi::write_status(api, &import.name_any(), &status).await?;
        return Ok(Action::requeue(
            round.map_or(Duration::ZERO, |d| d.max(Duration::from_secs(1))),
        ));
    }
    remove_local(import, ctx);
    let files_listed = status.temporary_resources.iter().any(|t| t.kind == "file");
    if files_listed {
        status.temporary_resources.retain(|t| t.kind != "file");
        kubeapi::write_status(api, &import.name_any(), &status).await?;
    }
    lock(&ctx.runtimes).remove(&uid(import));
    Ok(Action::await_change())
}

/// Removes the import's scratch folder and stops serving its disks.
fn remove_local(import: &VirtualMachineImport, ctx: &Context) {
    ctx.disks.unregister_import(&key(import));
    let dir = scratch_of(ctx, &uid(import));
    if dir.exists()
        && let Err(e) = std::fs::remove_dir_all(&dir)
    {
        warn!(dir = %dir.display(), error = %e, "cannot remove the import's scratch folder");
    }
}

/// The image backend for an import.
async fn backend(
    import: &VirtualMachineImport,
    ctx: &Context,
) -> Result<Option<Backend>, ImportError> {
    if let Some(b) = ctx.args.image_backend.fixed() {
        return Ok(Some(b));
    }
    let Some(sc) = &import.spec.storage_class else {
        return Ok(None);
    };
    let api: Api<StorageClass> = Api::all(ctx.client.clone());
    Ok(api
        .get_opt(sc)
        .await?
        .map(|sc| Backend::for_storage_class(&kubeapi::to_json(&sc))))
}

fn owner_ref(import: &VirtualMachineImport) -> Value {
    json!({
        "apiVersion": vmi_api::API_VERSION,
        "kind": "VirtualMachineImport",
        "name": import.name_any(),
        "uid": uid(import),
    })
}

fn disk_condition(
    status: &mut VirtualMachineImportStatus,
    i: usize,
    type_: &str,
    reason: &str,
    message: &str,
) {
    if let Some(d) = status.disk_import_status.get_mut(i) {
        set_condition(
            &mut d.disk_conditions,
            type_,
            ConditionStatus::True,
            reason,
            message,
            &kubeapi::now(),
        );
    }
}

/// The cluster side: images, volumes, the VM, then waiting for it to be ready.
#[allow(clippy::too_many_lines)]
async fn destination_stage(
    import: &VirtualMachineImport,
    api: &Api<VirtualMachineImport>,
    ctx: &Arc<Context>,
    mut status: VirtualMachineImportStatus,
    engine_state: Option<ImportState>,
    stage: Stage,
) -> Result<Action, ImportError> {
    let Some(state) = engine_state else {
        return fail(
            import,
            api,
            ctx,
            status,
            Stage::Failed,
            "CorruptStatus",
            "status.engineState is missing; delete the import and create it again",
        )
        .await;
    };
    let ns = import.namespace().unwrap_or_default();
    let id = uid(import);
    let Some(vm_name) = state.imported_name.clone() else {
        return Err(ImportError::State("no imported VM name".into()));
    };
    let dir = scratch_of(ctx, &id);
    let images = dynamic(&ctx.client, &ns, &kubeapi::image_resource());
    let mut dest = status.destination.clone().unwrap_or_default();

    if stage == Stage::ImagesSubmitted || stage == Stage::Engine(Phase::Done) {
        let backend = backend(import, ctx).await?;
        let mut all_ready = true;
        for (i, d) in state.disks.iter().enumerate() {
            let Some(out) = &d.output else {
                return Err(ImportError::State(format!("disk {i} has no output file")));
            };
            let file = dir.join(&out.file);
            let file_name = out.file.trim_start_matches("disks/").to_owned();
            let pos = if let Some(p) = dest.images.iter().position(|r| r.disk as usize == i) {
                p
            } else {
                let token = new_token().map_err(|e| ImportError::Io(e.to_string()))?;
                dest.images.push(ImageRecord {
                    disk: u32::try_from(i).unwrap_or(u32::MAX),
                    name: manifest::disk_object_name(&vm_name, i),
                    attempts: 0,
                    ready: false,
                    path: Some(disk_path(&token, &file_name)),
                    sha512: Some(out.sha512.clone()),
                });
                dest.images.len() - 1
            };
            let record = dest.images[pos].clone();
            if record.ready {
                continue;
            }
            all_ready = false;
            if !file.exists() {
                // The scratch volume was lost: export again.
                warn!(disk = i, file = %file.display(), "disk file gone before Harvester imported it; exporting again");
                let mut st = state.clone();
                st.phase = Phase::Export;
                for disk in &mut st.disks {
                    disk.export.restart();
                    disk.download = vmi_engine::state::DownloadState::default();
                    disk.output = None;
                }
                status.engine_state = status::engine_state_value(&st);
                status.import_status = Stage::Engine(Phase::Export).import_status();
                status.destination = None;
                for r in &dest.images {
                    let _ = images.delete(&r.name, &DeleteParams::default()).await;
                }
                kubeapi::write_status(api, &import.name_any(), &status).await?;
                return Ok(Action::requeue(Duration::ZERO));
            }
            let path = record.path.clone().unwrap_or_default();
            ctx.disks.register(
                &path,
                Served {
                    file: file.clone(),
                    import: key(import),
                },
            );
            let url = format!("{}{path}", ctx.base_url);
            match images.get_opt(&record.name).await? {
                None => {
                    if record.attempts > ctx.args.image_retries {
                        let msg = format!(
                            "VirtualMachineImage {ns}/{} failed {} time(s); see its events",
                            record.name, record.attempts
                        );
                        status.destination = Some(dest);
                        return fail(
                            import,
                            api,
                            ctx,
                            status,
                            Stage::ImageFailed,
                            "ImageFailed",
                            &msg,
                        )
                        .await;
                    }
                    // Recorded before it is created.
                    dest.images[pos].attempts += 1;
                    status.destination = Some(dest.clone());
                    status.import_status = Stage::ImagesSubmitted.import_status();
                    kubeapi::write_status(api, &import.name_any(), &status).await?;
                    let label = d.export.index.to_string();
                    let disk_label = state
                        .model
                        .as_ref()
                        .and_then(|m| m.disks.get(i))
                        .map_or(label, |m| m.label.clone());
                    let display = format!(
                        "vm-import-{}-{}",
                        import.name_any(),
                        if disk_label.is_empty() {
                            format!("disk-{i}")
                        } else {
                            disk_label
                        }
                    );
                    let obj = harvester::image(&ImageInput {
                        name: &record.name,
                        namespace: &ns,
                        display_name: &display,
                        url: &url,
                        sha512: &out.sha512,
                        storage_class: import.spec.storage_class.as_deref(),
                        backend,
                        owner: owner_ref(import),
                        import_uid: &id,
                        vm_name: &vm_name,
                        retry: ctx.args.image_download_retries,
                    });
                    match images
                        .create(&PostParams::default(), &kubeapi::from_json(obj)?)
                        .await
                    {
                        Ok(_) => {}
                        Err(e) if is_conflict(&e) => {}
                        Err(e) => return Err(e.into()),
                    }
                    disk_condition(
                        &mut status,
                        i,
                        "VirtualMachineImageSubmitted",
                        "Submitted",
                        &format!("VirtualMachineImage {ns}/{} downloads {url}", record.name),
                    );
                    info!(disk = i, image = %record.name, "VirtualMachineImage created");
                    kubeapi::publish(
                        &ctx.recorder,
                        import,
                        EventType::Normal,
                        "DiskImageSubmitted",
                        "CreateImage",
                        format!(
                            "disk {i}: VirtualMachineImage {ns}/{} created (attempt {})",
                            record.name,
                            record.attempts + 1
                        ),
                    )
                    .await;
                }
                Some(obj) => {
                    let obj = kubeapi::to_json(&obj);
                    if harvester::import_uid_of(&obj) != Some(id.as_str()) {
                        let msg = format!(
                            "VirtualMachineImage {ns}/{} exists and was not made by this import; delete or rename it, then delete and recreate the import",
                            record.name
                        );
                        status.destination = Some(dest);
                        return fail(
                            import,
                            api,
                            ctx,
                            status,
                            Stage::Failed,
                            "ImageNameTaken",
                            &msg,
                        )
                        .await;
                    }
                    match harvester::image_state(&obj) {
                        ImageState::Ready { .. } => {
                            dest.images[pos].ready = true;
                            ctx.disks.unregister(&path);
                            disk_condition(
                                &mut status,
                                i,
                                "VirtualMachineImageReady",
                                "Imported",
                                "Harvester imported the image and verified its checksum",
                            );
                            kubeapi::publish(
                                &ctx.recorder,
                                import,
                                EventType::Normal,
                                "DiskImageReady",
                                "WaitImage",
                                format!(
                                    "disk {i}: VirtualMachineImage {ns}/{} imported",
                                    record.name
                                ),
                            )
                            .await;
                        }
                        ImageState::Pending { .. } => {}
                        ImageState::Failed { reason, message } => {
                            disk_condition(
                                &mut status,
                                i,
                                "VirtualMachineImageFailed",
                                &reason,
                                &message,
                            );
                            let tries = record.attempts;
                            kubeapi::publish(
                                &ctx.recorder,
                                import,
                                EventType::Warning,
                                "DiskImageFailed",
                                "WaitImage",
                                format!(
                                    "disk {i}: VirtualMachineImage {ns}/{} failed ({reason}: {message}); attempt {tries} of {}",
                                    record.name,
                                    ctx.args.image_retries + 1
                                ),
                            )
                            .await;
                            if tries > ctx.args.image_retries {
                                status.destination = Some(dest);
                                return fail(
                                    import,
                                    api,
                                    ctx,
                                    status,
                                    Stage::ImageFailed,
                                    "ImageFailed",
                                    &format!(
                                        "VirtualMachineImage {ns}/{}: {reason}: {message}",
                                        record.name
                                    ),
                                )
                                .await;
                            }
                            // Recreated on the next reconcile.
                            let _ = images.delete(&record.name, &DeleteParams::default()).await;
                        }
                    }
                }
            }
        }
        let next = if all_ready || dest.images.iter().all(|r| r.ready) {
            Stage::ImagesReady
        } else {
            Stage::ImagesSubmitted
        };
        let changed = status.destination.as_ref() != Some(&dest)
            || status.import_status != next.import_status();
        status.destination = Some(dest);
        status.import_status = next.import_status();
        set_condition(
            &mut status.import_conditions,
            condition::IMAGES_READY,
            if next == Stage::ImagesReady {
                ConditionStatus::True
            } else {
                ConditionStatus::False
            },
            if next == Stage::ImagesReady {
                "Imported"
            } else {
                "Importing"
            },
            if next == Stage::ImagesReady {
                "every VirtualMachineImage is imported"
            } else {
                "Harvester is downloading the images"
            },
            &kubeapi::now(),
        );
        status.disk_progress =
            status::disk_progress(&state, &BTreeMap::new(), status.destination.as_ref());
        status.temporary_resources = status::temporary_resources(&state, &local_files(&dir));
        if changed {
            kubeapi::write_status(api, &import.name_any(), &status).await?;
        }
        return Ok(if next == Stage::ImagesReady {
            kubeapi::publish(
                &ctx.recorder,
                import,
                EventType::Normal,
                "DiskImagesReady",
                "WaitImage",
                "every disk image is imported".into(),
            )
            .await;
            Action::requeue(Duration::ZERO)
        } else {
            Action::requeue(Duration::from_secs(5))
        });
    }

    if stage == Stage::ImagesReady {
        let mut claims = Vec::new();
        let mut volumes = Vec::new();
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
        for (i, rec) in dest.images.iter().enumerate() {
            let Some(obj) = images.get_opt(&rec.name).await? else {
                return Err(ImportError::State(format!(
                    "VirtualMachineImage {ns}/{} disappeared",
                    rec.name
                )));
            };
            let obj = kubeapi::to_json(&obj);
            let ImageState::Ready {
                size,
                virtual_size,
                storage_class,
                backend,
            } = harvester::image_state(&obj)
            else {
                return Err(ImportError::State(format!(
                    "VirtualMachineImage {ns}/{} is no longer imported",
                    rec.name
                )));
            };
            match backend {
                Backend::Cdi => claims.push(rec.name.clone()),
                Backend::BackingImage => {
                    let claim = rec.name.clone();
                    if pvcs.get_opt(&claim).await?.is_none() {
                        let bytes = virtual_size
                            .or_else(|| {
                                state
                                    .disks
                                    .get(i)
                                    .and_then(|d| d.output.as_ref())
                                    .map(|o| o.virtual_size)
                            })
                            .or(size)
                            .unwrap_or(0);
                        let sc = storage_class
                            .unwrap_or_else(|| manifest::image_storage_class(&rec.name));
                        let pvc = harvester::volume_claim(&claim, &ns, &rec.name, &sc, bytes, &id);
                        match pvcs
                            .create(&PostParams::default(), &kubeapi::from_json(pvc)?)
                            .await
                        {
                            Ok(_) => info!(pvc = %claim, "PVC created"),
                            Err(e) if is_conflict(&e) => {}
                            Err(e) => return Err(e.into()),
                        }
                    }
                    volumes.push(claim.clone());
                    claims.push(claim);
                }
            }
        }
        dest.volumes = volumes;
        let vms = dynamic(&ctx.client, &ns, &kubeapi::vm_resource());
        match vms.get_opt(&vm_name).await? {
            Some(existing)
                if harvester::import_uid_of(&kubeapi::to_json(&existing)) != Some(id.as_str()) =>
            {
                status.destination = Some(dest);
                let msg = format!(
                    "VirtualMachine {ns}/{vm_name} exists and was not made by this import; delete or rename it, then delete and recreate the import"
                );
                return fail(
                    import,
                    api,
                    ctx,
                    status,
                    Stage::Failed,
                    "VirtualMachineNameTaken",
                    &msg,
                )
                .await;
            }
            Some(_) => {}
            None => {
                let vm = build_vm(import, &state, &dest, &vm_name, &claims, ctx)?;
                match vms
                    .create(&PostParams::default(), &kubeapi::from_json(vm)?)
                    .await
                {
                    Ok(_) => {}
                    Err(e) if is_conflict(&e) => {}
                    Err(e) => return Err(e.into()),
                }
                info!(vm = %vm_name, "VirtualMachine created");
                kubeapi::publish(
                    &ctx.recorder,
                    import,
                    EventType::Normal,
                    "VirtualMachineCreated",
                    "CreateVM",
                    format!("VirtualMachine {ns}/{vm_name} created"),
                )
                .await;
            }
        }
        dest.virtual_machine = Some(vm_name.clone());
        status.destination = Some(dest);
        status.new_virtual_machine = Some(vm_name);
        status.import_status = Stage::VirtualMachineCreated.import_status();
        kubeapi::write_status(api, &import.name_any(), &status).await?;
        return Ok(Action::requeue(Duration::from_secs(1)));
    }

    // VirtualMachineCreated: wait until it is ready.
    let vms = dynamic(&ctx.client, &ns, &kubeapi::vm_resource());
    let Some(vm) = vms.get_opt(&vm_name).await? else {
        return fail(
            import,
            api,
            ctx,
            status,
            Stage::Failed,
            "VirtualMachineDeleted",
            &format!("VirtualMachine {ns}/{vm_name} was deleted before it became ready"),
        )
        .await;
    };
    match harvester::vm_state(&kubeapi::to_json(&vm)) {
        VmState::Starting {
            status: printable,
            problem,
        } => {
            let msg = match &problem {
                Some(p) => format!("VirtualMachine {ns}/{vm_name} is {printable}: {p}"),
                None => format!("VirtualMachine {ns}/{vm_name} is {printable}"),
            };
            if set_condition(
                &mut status.import_conditions,
                condition::VM_RUNNING,
                ConditionStatus::False,
                &printable,
                &msg,
                &kubeapi::now(),
            ) {
                kubeapi::write_status(api, &import.name_any(), &status).await?;
            }
            Ok(Action::requeue(Duration::from_secs(5)))
        }
        VmState::Ready => {
            // The images outlive the import from now on.
            for rec in &dest.images {
                release_owner(&images, &rec.name, &id).await?;
            }
            remove_local(import, ctx);
            status.import_status = Stage::Running.import_status();
            status.temporary_resources.clear();
            status.disk_progress = status::disk_progress(&state, &BTreeMap::new(), Some(&dest));
            set_condition(
                &mut status.import_conditions,
                condition::VM_RUNNING,
                ConditionStatus::True,
                "Ready",
                &format!("VirtualMachine {ns}/{vm_name} is ready"),
                &kubeapi::now(),
            );
            kubeapi::write_status(api, &import.name_any(), &status).await?;
            lock(&ctx.stages).insert(id, Stage::Running);
            info!(vm = %vm_name, "import complete: the VirtualMachine is ready");
            kubeapi::publish(
                &ctx.recorder,
                import,
                EventType::Normal,
                "VirtualMachineRunning",
                "Import",
                format!("VirtualMachine {ns}/{vm_name} is ready; the import is complete"),
            )
            .await;
            Ok(Action::await_change())
        }
    }
}

fn build_vm(
    import: &VirtualMachineImport,
    state: &ImportState,
    dest: &DestinationStatus,
    vm_name: &str,
    claims: &[String],
    ctx: &Context,
) -> Result<Value, ImportError> {
    let (Some(model), Some(plan)) = (&state.model, &state.nic_plan) else {
        return Err(ImportError::State(
            "the engine state has no VM model".into(),
        ));
    };
    let ns = import.namespace().unwrap_or_default();
    let default_bus = import.spec.default_disk_bus_type.unwrap_or(DiskBus::Virtio);
    let artifacts: Vec<DiskArtifact> = state
        .disks
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let rec = dest.images.iter().find(|r| r.disk as usize == i);
            DiskArtifact {
                index: i,
                image_name: rec.map(|r| r.name.clone()).unwrap_or_default(),
                url: rec
                    .and_then(|r| r.path.clone())
                    .map(|p| format!("{}{p}", ctx.base_url))
                    .unwrap_or_default(),
                sha512: d
                    .output
                    .as_ref()
                    .map(|o| o.sha512.clone())
                    .unwrap_or_default(),
                virtual_size: d.output.as_ref().map_or(0, |o| o.virtual_size),
                bus: model
                    .disks
                    .get(i)
                    .and_then(|m| m.bus)
                    .unwrap_or(default_bus),
            }
        })
        .collect();
    let source = format!(
        "openstack server {}",
        state.server_id.clone().unwrap_or_default()
    );
    let input = ManifestInput {
        vm: model,
        name: vm_name,
        namespace: &ns,
        nics: plan,
        disks: &artifacts,
        storage_class: import.spec.storage_class.as_deref(),
        source: &source,
    };
    Ok(harvester::adapt_virtual_machine(
        manifest::virtual_machine(&input),
        claims,
        &uid(import),
    ))
}

/// Removes the import's owner reference from an image.
async fn release_owner(
    images: &Api<DynamicObject>,
    name: &str,
    import_uid: &str,
) -> Result<(), ImportError> {
    let Some(obj) = images.get_opt(name).await? else {
        return Ok(());
    };
    let owners: Vec<_> = obj
        .metadata
        .owner_references
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|o| o.uid != import_uid)
        .collect();
    images
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"ownerReferences": owners}})),
        )
        .await?;
    Ok(())
}

/// Deletion: cancel the engine, remove what is left on the source, the objects of an
/// unfinished import, the local files; then let the import go.
async fn cleanup_on_delete(
    import: &VirtualMachineImport,
    api: &Api<VirtualMachineImport>,
    ctx: &Arc<Context>,
) -> Result<Action, ImportError> {
    let ours = import
        .finalizers()
        .iter()
        .any(|f| f == FINALIZER || f == UPSTREAM_FINALIZER);
    if !ours {
        return Ok(Action::await_change());
    }
    let id = uid(import);
    let ns = import.namespace().unwrap_or_default();
    let mut status = import.status.clone().unwrap_or_default();
    let existing = lock(&ctx.runtimes).get(&id).cloned();
    if let Some(rt) = existing {
        rt.driver.stop().await;
    }
    let state = status::engine_state_of(&status).ok().flatten();
    let live = state
        .as_ref()
        .is_some_and(|s| !s.live_resources().is_empty());
    if live {
        match lookup_source(import, ctx).await? {
            SourceLookup::Ready(source) => {
                if let Ok(rt) = runtime(import, &source, state.clone(), ctx).await? {
                    rt.driver.stop().await;
                    let round = rt
                        .driver
                        .cleanup_round()
                        .await
                        .map_err(|e| ImportError::State(e.to_string()))?;
                    let st = rt.driver.journal().snapshot();
                    status.engine_state = status::engine_state_value(&st);
                    status.temporary_resources =
                        status::temporary_resources(&st, &local_files(&scratch_of(ctx, &id)));
                    if let Some(wait) = round {
                        kubeapi::write_status(api, &import.name_any(), &status).await?;
                        return Ok(Action::requeue(wait.max(Duration::from_millis(200))));
                    }
                }
            }
            SourceLookup::Wait(_, why) | SourceLookup::Invalid(_, why) => {
                let left: Vec<String> = state
                    .as_ref()
                    .map(|s| s.live_resources().iter().map(|t| t.describe()).collect())
                    .unwrap_or_default();
                kubeapi::publish(
                    &ctx.recorder,
                    import,
                    EventType::Warning,
                    "CleanupImpossible",
                    "Delete",
                    format!(
                        "cannot reach the source ({why}); remove by hand: {}",
                        left.join(", ")
                    ),
                )
                .await;
            }
        }
    }
    // An unfinished import takes its cluster objects with it.
    let stage = Stage::of_status(
        &status,
        state.as_ref().map_or(Phase::Preflight, |s| s.phase),
    );
    if stage != Stage::Running
        && let Some(dest) = &status.destination
    {
        let vms = dynamic(&ctx.client, &ns, &kubeapi::vm_resource());
        if let Some(vm) = &dest.virtual_machine
            && let Some(obj) = vms.get_opt(vm).await?
            && harvester::import_uid_of(&kubeapi::to_json(&obj)) == Some(id.as_str())
        {
            let _ = vms.delete(vm, &DeleteParams::default()).await;
        }
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
        for v in &dest.volumes {
            match pvcs.delete(v, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let images = dynamic(&ctx.client, &ns, &kubeapi::image_resource());
        for r in &dest.images {
            match images.delete(&r.name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    remove_local(import, ctx);
    lock(&ctx.runtimes).remove(&id);
    lock(&ctx.stages).remove(&id);
    info!("import deleted: cleanup done");
    kubeapi::remove_finalizers(api, import, &[FINALIZER, UPSTREAM_FINALIZER]).await?;
    Ok(Action::await_change())
}
