//! Running an import to the end: the CLI's loop over [`Driver::step`], sleeping in between,
//! and the settings and errors both front doors share.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::instrument;
use vmi_api::DiskBus;
use vmi_core::input::ImportRequest;
use vmi_core::manifest::{self, DiskArtifact, ManifestInput};
use vmi_core::network::Destination;
use vmi_core::phase::Phase;
use vmi_core::preflight::{Check, Report};
use vmi_disk::download;
use vmi_disk::qemu_img::Format;
use vmi_openstack::export::Tracked;

use crate::driver::{Driver, PhaseError, Step, failed};
use crate::journal::{Journal, JournalError};
use crate::progress::ProgressSink;
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
    /// Write `virtualmachine.yaml` and `images.yaml` (the CLI); the controller creates the
    /// objects itself.
    pub write_manifests: bool,
    /// Longest time spent removing temporary resources after a failure.
    pub cleanup_timeout: Duration,
    /// Cleanup also removes the finished disk files (the controller's scratch space).
    pub remove_outputs_on_cleanup: bool,
    /// What preflight can learn of the destination cluster (the controller); `None` in the CLI.
    pub cluster: Option<ClusterView>,
}

/// The destination cluster as preflight sees it.
#[derive(Clone, Debug, Default)]
pub struct ClusterView {
    /// NetworkAttachmentDefinitions that exist, as `(namespace, name)`.
    pub networks: BTreeSet<(String, String)>,
    /// Checks the controller made itself (the storage class).
    pub checks: Vec<Check>,
}

impl ClusterView {
    /// Whether `dest` exists; a name without a namespace is looked up in `namespace`.
    pub fn network_exists(&self, dest: &Destination, namespace: &str) -> bool {
        match dest {
            Destination::Pod => true,
            Destination::Multus {
                namespace: ns,
                name,
            } => self.networks.contains(&(
                ns.clone().unwrap_or_else(|| namespace.to_owned()),
                name.clone(),
            )),
        }
    }
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
            write_manifests: true,
            cleanup_timeout: Duration::from_mins(15),
            remove_outputs_on_cleanup: false,
            cluster: None,
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

/// Runs (or resumes) the import recorded in `journal` to the end, sleeping between the
/// driver's steps.
#[instrument(skip_all, fields(import = %request.import_key()))]
pub async fn run(
    source: impl Into<crate::driver::Source>,
    request: &ImportRequest,
    journal: &Journal,
    opts: &EngineOptions,
    progress: Arc<dyn ProgressSink>,
) -> Result<Summary, EngineError> {
    let started = Instant::now();
    let driver = Driver::new(
        source,
        request.clone(),
        journal.clone(),
        opts.clone(),
        progress,
    )?;
    if journal.snapshot().phase == Phase::Failed {
        driver.resume_after_failure()?;
    }
    let wakeup = driver.wakeup();
    loop {
        match driver.step().await? {
            Step::Done => break,
            Step::After(d) if d.is_zero() => {}
            Step::After(d) => {
                tokio::select! {
                    () = tokio::time::sleep(d) => {}
                    () = wakeup.notified() => {}
                }
            }
        }
    }
    journal.update(|s| {
        *s.timings.entry("total".into()).or_default() += started.elapsed().as_secs_f64();
    })?;
    Ok(Summary::of(&journal.snapshot(), &opts.out_dir))
}

pub(crate) fn manifests_phase(
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
    let source = state.source.clone().unwrap_or_else(|| {
        format!(
            "openstack server {}",
            state.server_id.clone().unwrap_or_default()
        )
    });
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

/// Removes every temporary resource the state records (and partial downloads), waiting
/// (bounded by `opts.cleanup_timeout`) until each is gone. Returns what could not be removed.
pub async fn cleanup(
    source: &crate::driver::Source,
    journal: &Journal,
    opts: &EngineOptions,
    progress: &dyn ProgressSink,
) -> Result<Vec<Tracked>, JournalError> {
    let deadline = Instant::now() + opts.cleanup_timeout;
    let mut rounds = crate::driver::CleanupRounds::default();
    loop {
        match crate::driver::cleanup_once(source, journal, opts, &mut rounds).await? {
            None => return Ok(Vec::new()),
            Some(_) if Instant::now() > deadline => {
                for e in &rounds.errors {
                    progress.note(&format!("cleanup: {e}"));
                }
                return Ok(journal
                    .snapshot()
                    .live_resources()
                    .into_iter()
                    .cloned()
                    .collect());
            }
            Some(d) => tokio::time::sleep(d).await,
        }
    }
}
