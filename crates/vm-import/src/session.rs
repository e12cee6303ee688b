//! What `preflight` and `import` share: reading the input file and opening the cloud session.

use std::path::Path;

use vmi_core::input::{ImportRequest, SourceKind, parse_documents};
use vmi_openstack::HttpOpenstack;
use vmi_openstack::session::SessionOptions;

use crate::cloud::{CloudOptions, resolve};

/// A connected OpenStack import request.
pub struct Opened {
    pub request: ImportRequest,
    pub api: HttpOpenstack,
    pub endpoint: String,
    /// Who logs in and from where (no secret).
    pub credentials: String,
    pub tls_insecure: bool,
}

/// Reads `file`, picks the credentials and builds the client. The error is the message for the
/// user (exit status 2).
pub fn open(file: &Path, options: &CloudOptions) -> Result<Opened, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let request = parse_documents(&text)
        .and_then(|d| d.into_request(true))
        .map_err(|e| format!("{}: {e}", file.display()))?;
    if request.source_kind != SourceKind::Openstack {
        return Err(format!(
            "{}: VirtualMachineImport {} uses a {}; this build of vm-import imports from OpenstackSource only",
            file.display(),
            request.import_key(),
            request.source_kind.kind()
        ));
    }
    let env: std::collections::BTreeMap<String, String> = std::env::vars().collect();
    let cfg = resolve(&request, options, &env).map_err(|e| format!("{}: {e}", file.display()))?;
    let endpoint = cfg.auth_url.clone();
    let credentials = format!("{} from {}", cfg.credentials.describe(), cfg.origin);
    let tls_insecure = cfg.tls.insecure;
    let api = HttpOpenstack::new(cfg, SessionOptions::default())
        .map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(Opened {
        request,
        api,
        endpoint,
        credentials,
        tls_insecure,
    })
}
