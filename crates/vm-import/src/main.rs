//! `vm-import`: one binary, several front doors over one engine.

mod cloud;
mod preflight_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Move virtual machines from OpenStack into Harvester / KubeVirt.
#[derive(Debug, Parser)]
#[command(name = "vm-import", version, about, long_about = None)]
struct Cli {
    /// More output on stderr: -v prints OpenStack request counts and progress, -vv debug logs.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
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
    /// Print the CustomResourceDefinitions (apiextensions.k8s.io/v1) generated from the types.
    Crds,
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

fn init_logging(verbose: u8, format: LogFormat) {
    let level = match verbose {
        0 => "warn",
        1 => "info,vmi_openstack=info",
        _ => "debug,hyper=info,rustls=info,h2=info",
    };
    let filter = tracing_subscriber::EnvFilter::new(level);
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_target(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.log_format);
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
        Command::Preflight(args) => runtime.block_on(preflight_cmd::run(args, cli.verbose)),
    };
    outcome.into()
}
