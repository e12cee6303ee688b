//! `vm-import preflight`.

use std::path::PathBuf;

use clap::ValueEnum;
use vmi_openstack::OpenstackApi;
use vmi_openstack::preflight::{self, PreflightInput};

use crate::Outcome;
use crate::cloud::CloudOptions;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// YAML file with the documents you would `kubectl apply`: the source, its Secret and one
    /// VirtualMachineImport.
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    /// Take the cloud and credentials from this clouds.yaml entry instead of the Secret.
    #[arg(long)]
    os_cloud: Option<String>,
    /// Turn TLS certificate verification off (reported as a warning check).
    #[arg(long)]
    insecure: bool,
    /// Report format on stdout.
    #[arg(long, short = 'o', value_enum, default_value_t = Format::Text)]
    output: Format,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

pub async fn run(args: Args, verbose: u8) -> Outcome {
    let options = CloudOptions {
        os_cloud: args.os_cloud.clone(),
        insecure: args.insecure,
    };
    let opened = match crate::session::open(&args.file, &options) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return Outcome::BadInput;
        }
    };
    let report = match &opened.source {
        vmi_engine::Source::Openstack(api) => {
            let input = PreflightInput {
                import: &opened.request.import,
                endpoint: &opened.endpoint,
                credentials: &opened.credentials,
                tls_insecure: opened.tls_insecure,
                destination_exists: None,
            };
            preflight::run(api.as_ref(), &input).await.report
        }
        vmi_engine::Source::Ova(loc) => {
            let (report, _, warnings) =
                vmi_engine::ova::preflight(loc, &opened.request.import, None).await;
            for w in warnings {
                eprintln!("warning: {w}");
            }
            report
        }
    };
    match args.output {
        Format::Text => print!("{}", report.render_text()),
        Format::Json => match serde_json::to_string_pretty(&report) {
            Ok(j) => println!("{j}"),
            Err(e) => {
                eprintln!("error: cannot render the report: {e}");
                return Outcome::Failed;
            }
        },
    }
    if verbose > 0
        && let Some(api) = &opened.openstack
    {
        eprintln!(
            "OpenStack API requests: {} (global request id {})",
            api.request_count(),
            api.session().global_request_id()
        );
    }
    if report.passed() {
        Outcome::Ok
    } else {
        Outcome::Failed
    }
}
