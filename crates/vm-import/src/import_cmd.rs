//! `vm-import import`: the whole import, standalone and resumable.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::ValueEnum;
use vmi_engine::state::ImportState;
use vmi_engine::{EngineError, EngineOptions, Journal, OutputFormat, Summary};
use vmi_openstack::OpenstackApi;

use crate::Outcome;
use crate::cloud::CloudOptions;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// YAML file with the source, its Secret and one VirtualMachineImport (as for preflight).
    /// With --cleanup it defaults to the file the import was started with.
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// Output directory: disks/, virtualmachine.yaml, images.yaml, state.json (resume).
    #[arg(long = "out")]
    out: PathBuf,
    /// Remove whatever temporary snapshots, volumes and images the state file says are left on
    /// the source, then exit.
    #[arg(long)]
    cleanup: bool,
    /// Format of the disk files.
    #[arg(long, value_enum, default_value_t = DiskFormat::Qcow2)]
    format: DiskFormat,
    /// Format Cinder uploads volumes to Glance in. vmdk (monolithicSparse) moves only
    /// allocated data and is converted while it downloads; qcow2 moves only allocated data too,
    /// but Cinder compresses it by default (CPU-bound on the Cinder host); raw moves every byte.
    #[arg(long, value_enum, default_value_t = UploadFormat::Vmdk)]
    upload_format: UploadFormat,
    /// Disks exported at the same time.
    #[arg(long, default_value_t = 4)]
    parallel: usize,
    /// Base URL the disks will be served from, used in images.yaml (default: file:// paths).
    #[arg(long)]
    disk_base_url: Option<String>,
    /// Go on past failed preflight checks (the VM must still be found). Not recommended.
    #[arg(long)]
    skip_preflight: bool,
    /// Longest wait, in seconds, for a Glance image to become active.
    #[arg(long, default_value_t = 7200)]
    image_timeout: u64,
    /// Longest wait, in seconds, for a snapshot or volume to become available.
    #[arg(long, default_value_t = 1800)]
    resource_timeout: u64,
    /// Take the cloud and credentials from this clouds.yaml entry instead of the Secret.
    #[arg(long)]
    os_cloud: Option<String>,
    /// Turn TLS certificate verification off (reported as a warning).
    #[arg(long)]
    insecure: bool,
    /// Final report on stdout.
    #[arg(long, short = 'o', value_enum, default_value_t = Report::Text)]
    output: Report,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DiskFormat {
    Qcow2,
    Raw,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum UploadFormat {
    Qcow2,
    Vmdk,
    Raw,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Report {
    Text,
    Json,
}

/// Exit status after Ctrl-C.
pub const INTERRUPTED: u8 = 130;

fn state_path(out: &Path) -> PathBuf {
    out.join("state.json")
}

/// Prints an input error and gives the status for it.
fn bad_input(message: impl std::fmt::Display) -> Outcome {
    eprintln!("error: {message}");
    Outcome::BadInput
}

/// What a run needs before it starts: the locked output directory, its state if any, and the
/// opened source.
struct Prepared {
    _lock: std::fs::File,
    existing: Option<Journal>,
    file: PathBuf,
    os_cloud: Option<String>,
    opened: crate::session::Opened,
}

fn prepare(args: &Args) -> Result<Prepared, Outcome> {
    std::fs::create_dir_all(&args.out)
        .map_err(|e| bad_input(format!("cannot create {}: {e}", args.out.display())))?;
    // One run per output directory at a time.
    let lock_path = args.out.join(".lock");
    let lock = std::fs::File::create(&lock_path)
        .map_err(|e| bad_input(format!("cannot create {}: {e}", lock_path.display())))?;
    if lock.try_lock().is_err() {
        return Err(bad_input(format!(
            "another vm-import is running on {}; wait for it to finish",
            args.out.display()
        )));
    }
    let existing = Journal::load(&state_path(&args.out)).map_err(bad_input)?;
    let recorded = existing.as_ref().map(Journal::snapshot);
    let file = args
        .file
        .clone()
        .or_else(|| {
            recorded
                .as_ref()
                .and_then(|s| s.input_file.clone())
                .map(PathBuf::from)
        })
        .ok_or_else(|| bad_input("give the import's YAML file with -f FILE"))?;
    let os_cloud = args
        .os_cloud
        .clone()
        .or_else(|| recorded.and_then(|s| s.os_cloud));
    let options = CloudOptions {
        os_cloud: os_cloud.clone(),
        insecure: args.insecure,
    };
    let opened = crate::session::open(&file, &options).map_err(bad_input)?;
    Ok(Prepared {
        _lock: lock,
        existing,
        file,
        os_cloud,
        opened,
    })
}

fn engine_options(args: &Args, opened: &crate::session::Opened) -> EngineOptions {
    let mut opts = EngineOptions::new(args.out.clone());
    opts.format = match args.format {
        DiskFormat::Qcow2 => OutputFormat::Qcow2,
        DiskFormat::Raw => OutputFormat::Raw,
    };
    opts.upload_format = match args.upload_format {
        UploadFormat::Qcow2 => "qcow2".into(),
        UploadFormat::Vmdk => "vmdk".into(),
        UploadFormat::Raw => "raw".into(),
    };
    opts.parallel = args.parallel.max(1);
    opts.skip_preflight = args.skip_preflight;
    opts.image_timeout = Duration::from_secs(args.image_timeout);
    opts.resource_timeout = Duration::from_secs(args.resource_timeout);
    if let Some(t) = opened
        .request
        .import
        .spec
        .graceful_shutdown_timeout_seconds
        .filter(|t| *t > 0)
    {
        opts.shutdown_timeout = Duration::from_secs(u64::try_from(t).unwrap_or(600));
    }
    opts.disk_base_url.clone_from(&args.disk_base_url);
    opts.endpoint.clone_from(&opened.endpoint);
    opts.credentials.clone_from(&opened.credentials);
    opts.tls_insecure = opened.tls_insecure;
    opts
}

pub async fn run(args: Args, verbose: u8) -> Result<Outcome, u8> {
    let p = match prepare(&args) {
        Ok(p) => p,
        Err(outcome) => return Ok(outcome),
    };
    let progress: Arc<dyn vmi_engine::ProgressSink> = Arc::from(crate::progress::for_stderr());
    if args.cleanup {
        return Ok(cleanup(&args, p, progress.as_ref()).await);
    }
    let journal = if let Some(j) = p.existing {
        j
    } else {
        let mut state = ImportState::new(p.opened.request.import_key());
        state.input_file = std::fs::canonicalize(&p.file)
            .ok()
            .map(|f| f.display().to_string());
        state.os_cloud.clone_from(&p.os_cloud);
        match Journal::create(&state_path(&args.out), state) {
            Ok(j) => j,
            Err(e) => return Ok(bad_input(e)),
        }
    };
    let opts = engine_options(&args, &p.opened);
    let request = p.opened.request;
    let openstack = p.opened.openstack.clone();
    let run = vmi_engine::run(
        p.opened.source.clone(),
        &request,
        &journal,
        &opts,
        progress.clone(),
    );
    let result = tokio::select! {
        r = run => r,
        _ = tokio::signal::ctrl_c() => {
            let left = journal.snapshot().live_resources().len();
            eprintln!(
                "\ninterrupted: the state is saved in {}. Run the same command again to continue where it stopped{}",
                state_path(&args.out).display(),
                if left > 0 {
                    format!(", or `vm-import import --cleanup --out {}` to remove the {left} temporary resource(s) it created on the source", args.out.display())
                } else {
                    String::new()
                }
            );
            return Err(INTERRUPTED);
        }
    };
    if verbose > 0
        && let Some(api) = &openstack
    {
        eprintln!(
            "OpenStack API requests: {} (global request id {})",
            api.request_count(),
            global_id(api.as_ref())
        );
    }
    Ok(report(result, &journal, &args))
}

/// `--cleanup`: removes what the state says is left on the source.
async fn cleanup(args: &Args, p: Prepared, progress: &dyn vmi_engine::ProgressSink) -> Outcome {
    let Some(journal) = p.existing else {
        return bad_input(format!(
            "{} has no state.json: nothing was started there, nothing to clean up",
            args.out.display()
        ));
    };
    let before = journal.snapshot().live_resources().len();
    let mut opts = engine_options(args, &p.opened);
    opts.poll = Duration::from_secs(2);
    let left = match vmi_engine::cleanup(&p.opened.source, &journal, &opts, progress).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return Outcome::Failed;
        }
    };
    print_summary(
        &Summary::of(&journal.snapshot(), &args.out),
        args.output,
        &args.out,
    );
    if left.is_empty() {
        eprintln!("cleanup: {before} temporary resource(s) checked, none left on the source");
        return Outcome::Ok;
    }
    for t in &left {
        eprintln!("cleanup: could not remove {}", t.describe());
    }
    Outcome::Failed
}

/// Prints the outcome of a run and gives its exit status.
fn report(result: Result<Summary, EngineError>, journal: &Journal, args: &Args) -> Outcome {
    let write_summary = |s: &Summary| {
        let _ = std::fs::write(
            args.out.join("summary.json"),
            serde_json::to_string_pretty(s).unwrap_or_default(),
        );
    };
    match result {
        Ok(summary) => {
            write_summary(&summary);
            print_summary(&summary, args.output, &args.out);
            Outcome::Ok
        }
        Err(EngineError::Preflight(report)) => {
            print!("{}", report.render_text());
            eprintln!(
                "error: preflight failed; nothing on the source was touched. Fix the failed checks and run again"
            );
            Outcome::Failed
        }
        Err(EngineError::Failed {
            phase,
            reason,
            message,
            left,
        }) => {
            let summary = Summary::of(&journal.snapshot(), &args.out);
            write_summary(&summary);
            if matches!(args.output, Report::Json) {
                print_summary(&summary, args.output, &args.out);
            }
            eprintln!(
                "error: import {} failed in phase '{phase}' ({reason}): {message}",
                journal.snapshot().import
            );
            if left.is_empty() {
                eprintln!(
                    "the temporary resources it created on the source were removed; fix the cause and run the same command to retry"
                );
            } else {
                for t in &left {
                    eprintln!("not removed: {}", t.describe());
                }
                eprintln!(
                    "run `vm-import import --cleanup --out {}` to try removing them again",
                    args.out.display()
                );
            }
            Outcome::Failed
        }
        Err(e @ EngineError::Mismatch(_)) => bad_input(e),
        Err(e @ EngineError::Journal(_)) => {
            eprintln!("error: {e}");
            Outcome::Failed
        }
    }
}

fn global_id(api: &dyn OpenstackApi) -> String {
    api.global_request_id().unwrap_or_default()
}

fn print_summary(summary: &Summary, format: Report, out: &Path) {
    match format {
        Report::Json => println!(
            "{}",
            serde_json::to_string_pretty(summary).unwrap_or_default()
        ),
        Report::Text => {
            println!("Import {}: {}", summary.import, summary.phase);
            if let Some(vm) = &summary.virtual_machine {
                println!("  virtual machine: {vm}");
            }
            for d in &summary.disks {
                println!(
                    "  disk {}: {} -> {} ({} bytes virtual, {} bytes written) sha256 {}",
                    d.index,
                    d.source,
                    d.file
                        .as_deref()
                        .map_or_else(|| "-".to_owned(), |f| out.join(f).display().to_string()),
                    d.virtual_size.unwrap_or(0),
                    d.bytes_written.unwrap_or(0),
                    d.sha256.as_deref().unwrap_or("-")
                );
            }
            for n in &summary.unmapped_nics {
                println!("  not imported (no network mapping): NIC {n}");
            }
            println!(
                "  temporary resources: {} created, {} removed, {} left",
                summary.resources.created.len(),
                summary.resources.removed.len(),
                summary.resources.left.len()
            );
            for (k, v) in &summary.manifests {
                println!("  {k}: {}", out.join(v).display());
            }
            if let Some(t) = summary.timings.get("total") {
                if *t < 10.0 {
                    println!("  took {t:.2} s");
                } else {
                    println!("  took {t:.1} s");
                }
            }
        }
    }
}
