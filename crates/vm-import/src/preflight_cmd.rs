//! `vm-import preflight`.

use std::path::PathBuf;

use clap::ValueEnum;
use vmi_core::input::{SourceKind, parse_documents};
use vmi_openstack::HttpOpenstack;
use vmi_openstack::OpenstackApi;
use vmi_openstack::preflight::{self, PreflightInput};
use vmi_openstack::session::SessionOptions;

use crate::Outcome;
use crate::cloud::{CloudOptions, resolve};

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
    let text = match std::fs::read_to_string(&args.file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", args.file.display());
            return Outcome::BadInput;
        }
    };
    let request = match parse_documents(&text).and_then(|d| d.into_request(true)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {}: {e}", args.file.display());
            return Outcome::BadInput;
        }
    };
    if request.source_kind != SourceKind::Openstack {
        eprintln!(
            "error: {}: VirtualMachineImport {} uses a {}; this build of vm-import checks \
             OpenstackSource imports only",
            args.file.display(),
            request.import_key(),
            request.source_kind.kind()
        );
        return Outcome::BadInput;
    }
    let env: std::collections::BTreeMap<String, String> = std::env::vars().collect();
    let options = CloudOptions {
        os_cloud: args.os_cloud.clone(),
        insecure: args.insecure,
    };
    let cfg = match resolve(&request, &options, &env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {}: {e}", args.file.display());
            return Outcome::BadInput;
        }
    };
    let endpoint = cfg.auth_url.clone();
    let who = format!("{} from {}", cfg.credentials.describe(), cfg.origin);
    let insecure = cfg.tls.insecure;
    let api = match HttpOpenstack::new(cfg, SessionOptions::default()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {}: {e}", args.file.display());
            return Outcome::BadInput;
        }
    };
    let input = PreflightInput {
        import: &request.import,
        endpoint: &endpoint,
        credentials: &who,
        tls_insecure: insecure,
        destination_exists: None,
    };
    let outcome = preflight::run(&api, &input).await;
    match args.output {
        Format::Text => print!("{}", outcome.report.render_text()),
        Format::Json => match serde_json::to_string_pretty(&outcome.report) {
            Ok(j) => println!("{j}"),
            Err(e) => {
                eprintln!("error: cannot render the report: {e}");
                return Outcome::Failed;
            }
        },
    }
    if verbose > 0 {
        eprintln!(
            "OpenStack API requests: {} (global request id {})",
            api.request_count(),
            api.session().global_request_id()
        );
    }
    if outcome.report.passed() {
        Outcome::Ok
    } else {
        Outcome::Failed
    }
}
