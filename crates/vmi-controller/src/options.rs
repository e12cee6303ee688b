//! Every setting of the controller is a flag (documented in `docs/controller.md`); nothing is
//! read from the environment behind the user's back.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::harvester::Backend;

/// Disk file format handed to Harvester.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DiskFormat {
    Qcow2,
    Raw,
}

/// How the image backend is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    /// From the import's storage class: Longhorn v1 → backing image, else CDI; Harvester's
    /// default (backing image) when the import names none.
    Auto,
    #[value(name = "backingimage")]
    BackingImage,
    #[value(name = "cdi")]
    Cdi,
}

impl BackendChoice {
    pub fn fixed(self) -> Option<Backend> {
        match self {
            BackendChoice::Auto => None,
            BackendChoice::BackingImage => Some(Backend::BackingImage),
            BackendChoice::Cdi => Some(Backend::Cdi),
        }
    }
}

/// `vm-import controller` flags.
#[derive(clap::Args, Clone, Debug)]
pub struct ControllerArgs {
    /// Kubeconfig to use; without it the in-cluster service account (required outside a cluster).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,
    /// Where disks are downloaded and converted (a volume with room for the largest imports).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/vm-import")]
    pub scratch_dir: PathBuf,
    /// Address the disk server listens on.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8080")]
    pub disk_server_bind: SocketAddr,
    /// Base URL at which Harvester reaches the disk server (the chart fills it from its Service),
    /// e.g. `http://vm-import.vm-import-system.svc:8080`.
    #[arg(long, value_name = "URL")]
    pub disk_server_url: String,
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8081")]
    pub metrics_bind: SocketAddr,
    /// This replica's name in the leader lease (the chart passes the pod name).
    #[arg(long, value_name = "NAME")]
    pub identity: Option<String>,
    /// Namespace of the leader lease.
    #[arg(long, value_name = "NS", default_value = "vm-import-system")]
    pub lease_namespace: String,
    /// Name of the leader lease.
    #[arg(long, value_name = "NAME", default_value = "vm-import-controller")]
    pub lease_name: String,
    /// Seconds a leader's lease lasts without renewal before a standby takes over.
    #[arg(long, value_name = "SECONDS", default_value_t = 15)]
    pub lease_duration_seconds: u64,
    /// Run without leader election (one replica only).
    #[arg(long)]
    pub no_leader_election: bool,
    /// Seconds between re-verifications of a source's credentials and endpoint.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub source_resync_seconds: u64,
    /// Times a failed VirtualMachineImage is recreated before the import fails.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub image_retries: u32,
    /// Harvester's own download retries per image (`spec.retry`, 0–10).
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub image_download_retries: u32,
    /// Image backend.
    #[arg(long, value_enum, default_value = "auto")]
    pub image_backend: BackendChoice,
    /// Disk format handed to Harvester.
    #[arg(long, value_enum, default_value = "qcow2")]
    pub disk_format: DiskFormat,
    /// Disks of one import exported at once.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub parallel_disks: usize,
    /// Imports reconciled at once (0: no limit).
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub concurrency: u16,
    /// Disk format of the Cinder → Glance upload (`vmdk` is sparse and converted while it
    /// streams).
    #[arg(long, value_name = "FORMAT", default_value = "vmdk")]
    pub upload_format: String,
    /// Longest wait for a snapshot or volume on the source, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 1800)]
    pub resource_timeout_seconds: u64,
    /// Longest wait for an image upload on the source, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 7200)]
    pub image_timeout_seconds: u64,
    /// Consecutive transient errors (5xx, connection) of one source call before the import
    /// fails; they are retried with a backoff of up to 32 s.
    #[arg(long, value_name = "N", default_value_t = 120)]
    pub transient_retries: u32,
    /// Seconds between status updates of a running download.
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    pub progress_interval_seconds: u64,
}

impl ControllerArgs {
    pub fn lease_duration(&self) -> Duration {
        Duration::from_secs(self.lease_duration_seconds.max(2))
    }

    pub fn source_resync(&self) -> Duration {
        Duration::from_secs(self.source_resync_seconds.max(5))
    }

    pub fn progress_interval(&self) -> Duration {
        Duration::from_secs(self.progress_interval_seconds.max(1))
    }

    /// Checks that need no cluster: fail at start, not at the first import.
    pub fn validate(&self) -> Result<(), String> {
        let url = url_base(&self.disk_server_url)?;
        if url.is_empty() {
            return Err("--disk-server-url is empty".into());
        }
        if self.image_download_retries > 10 {
            return Err("--image-download-retries must be 0–10 (Harvester's limit)".into());
        }
        if !matches!(self.upload_format.as_str(), "vmdk" | "qcow2" | "raw") {
            return Err(format!(
                "--upload-format {}: use vmdk, qcow2 or raw",
                self.upload_format
            ));
        }
        Ok(())
    }
}

/// The disk server URL without a trailing slash, checked to be http(s).
pub fn url_base(url: &str) -> Result<String, String> {
    let trimmed = url.trim_end_matches('/');
    if !(trimmed.starts_with("http://") || trimmed.starts_with("https://")) {
        return Err(format!(
            "--disk-server-url '{url}' must start with http:// or https://"
        ));
    }
    Ok(trimmed.to_owned())
}
