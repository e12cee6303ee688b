//! `vm-import`: one binary, several front doors over one engine.

mod cloud;
mod import_cmd;
mod preflight_cmd;
mod progress;
mod session;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Move virtual machines from OpenStack and OVA files into Harvester / KubeVirt.
#[derive(Debug, Parser)]
#[command(name = "vm-import", version, about, long_about = None)]
struct Cli {
    /// More output on stderr: -v prints OpenStack request counts and progress, -vv debug logs.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Log format on stderr (default: text; json for `controller`).
    #[arg(long, value_enum, global = true)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every preflight check against the real source; changes nothing.
    ///
    /// Exit status: 0 when no check failed (warnings allowed), 1 when a check failed, 2 when the
    /// input itself is unusable.
    Preflight(preflight_cmd::Args),
    /// Import a VM standalone: export its disks, write them and the KubeVirt manifests to --out.
    ///
    /// Resumable: after a crash or Ctrl-C, run the same command again. Exit status: 0 done,
    /// 1 preflight or the import failed, 2 unusable input, 130 interrupted.
    Import(import_cmd::Args),
    /// Print the CustomResourceDefinitions (apiextensions.k8s.io/v1) generated from the types.
    Crds,
    /// Run the Kubernetes controller (a drop-in for Harvester's vm-import-controller).
    ///
    /// Reconciles OpenstackSource, OvaSource and VirtualMachineImport objects, serves the disks to
    /// Harvester and creates the images and VMs. Logs JSON at info level. Exit status: 0 after
    /// SIGTERM, 1 on a fatal error (lost leader lease, unreachable API).
    Controller(Box<vmi_controller::ControllerArgs>),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Exit status of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// A check or the job failed.
    Failed,
    /// The input cannot be used.
    BadInput,
}

impl From<Outcome> for ExitCode {
    fn from(o: Outcome) -> ExitCode {
        match o {
            Outcome::Ok => ExitCode::SUCCESS,
            Outcome::Failed => ExitCode::from(1),
            Outcome::BadInput => ExitCode::from(2),
        }
    }
}

fn init_logging(verbose: u8, format: LogFormat, base: u8) {
    let level = match verbose + base {
        0 => "warn",
        1 => "info,kube_runtime=warn",
        _ => "debug,hyper=info,hyper_util=info,rustls=info,h2=info,reqwest=info,tower=info",
    };
    let filter = tracing_subscriber::EnvFilter::new(level);
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_target(false);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // One JSON object per line, with the fields of the current span (the import's or the
        // source's namespace/name) flattened in.
        LogFormat::Json => builder
            .json()
            .with_ansi(false)
            .with_current_span(true)
            .with_span_list(false)
            .flatten_event(true)
            .init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let controller = matches!(cli.command, Command::Controller(_));
    let format = cli.log_format.unwrap_or(if controller {
        LogFormat::Json
    } else {
        LogFormat::Text
    });
    init_logging(cli.verbose, format, u8::from(controller));
    vmi_openstack::tls::install_default_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let outcome = match cli.command {
        Command::Crds => match vmi_api::crds_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                Outcome::Ok
            }
            Err(e) => {
                eprintln!("error: cannot render the CRDs: {e}");
                Outcome::Failed
            }
        },
        Command::Controller(args) => match runtime.block_on(vmi_controller::run(*args)) {
            Ok(()) => Outcome::Ok,
            Err(e) => {
                tracing::error!(error = %e, "controller stopped");
                eprintln!("error: {e}");
                match e {
                    vmi_controller::ControllerError::Flags(_) => Outcome::BadInput,
                    _ => Outcome::Failed,
                }
            }
        },
        Command::Preflight(args) => runtime.block_on(preflight_cmd::run(args, cli.verbose)),
        Command::Import(args) => match runtime.block_on(import_cmd::run(args, cli.verbose)) {
            Ok(o) => o,
            Err(code) => {
                // Interrupted: leave at once; the state is saved.
                runtime.shutdown_timeout(std::time::Duration::from_secs(1));
                return ExitCode::from(code);
            }
        },
    };
    outcome.into()
}
