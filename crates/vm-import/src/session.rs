//! What `preflight` and `import` share: reading the input file and opening the source: an
//! OpenStack cloud session, or the location of an OVA.

use std::path::Path;
use std::sync::Arc;

use vmi_core::input::{ImportRequest, SourceDoc, SourceKind, parse_documents};
use vmi_engine::Source;
use vmi_engine::ova::OvaLocation;
use vmi_openstack::HttpOpenstack;
use vmi_openstack::session::SessionOptions;

use crate::cloud::{CloudOptions, resolve};

/// An opened import request.
pub struct Opened {
    pub request: ImportRequest,
    pub source: Source,
    /// The OpenStack client (for request counts), when the source is a cloud.
    pub openstack: Option<Arc<HttpOpenstack>>,
    /// The Keystone URL or the OVA's URL.
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
    match request.source_kind {
        SourceKind::Openstack => open_openstack(file, options, request),
        SourceKind::Ova => open_ova(file, options, request),
        SourceKind::Vmware => Err(format!(
            "{}: VirtualMachineImport {} uses a VmwareSource; vm-import imports from OpenstackSource and OvaSource (export the VM as an OVA)",
            file.display(),
            request.import_key()
        )),
    }
}

fn open_openstack(
    file: &Path,
    options: &CloudOptions,
    request: ImportRequest,
) -> Result<Opened, String> {
    let env: std::collections::BTreeMap<String, String> = std::env::vars().collect();
    let cfg = resolve(&request, options, &env).map_err(|e| format!("{}: {e}", file.display()))?;
    let endpoint = cfg.auth_url.clone();
    let credentials = format!("{} from {}", cfg.credentials.describe(), cfg.origin);
    let tls_insecure = cfg.tls.insecure;
    let api = Arc::new(
        HttpOpenstack::new(cfg, SessionOptions::default())
            .map_err(|e| format!("{}: {e}", file.display()))?,
    );
    let dynamic: Arc<dyn vmi_openstack::OpenstackApi> = api.clone();
    Ok(Opened {
        request,
        source: Source::Openstack(dynamic),
        openstack: Some(api),
        endpoint,
        credentials,
        tls_insecure,
    })
}

fn open_ova(file: &Path, options: &CloudOptions, request: ImportRequest) -> Result<Opened, String> {
    let Some(SourceDoc::Ova(src)) = &request.source else {
        return Err(format!(
            "{}: the OvaSource named by spec.sourceCluster is not in the file; add it (url: file:///path/vm.ova or https://…)",
            file.display()
        ));
    };
    let mut src = src.clone();
    if options.insecure {
        src.spec.insecure_skip_tls_verify = Some(true);
    }
    // Relative file:// paths are relative to the input file.
    let base = std::fs::canonicalize(file)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf));
    let loc = OvaLocation::from_source(&src, request.secret.as_ref(), base.as_deref())
        .map_err(|e| format!("{}: {e}", file.display()))?;
    let endpoint = loc.describe().to_owned();
    Ok(Opened {
        credentials: match &request.secret {
            Some(s) => format!("Secret {}/{}", s.namespace, s.name),
            None => "no credentials".to_owned(),
        },
        tls_insecure: src.spec.insecure_skip_tls_verify.unwrap_or(false),
        request,
        source: Source::Ova(Arc::new(loc)),
        openstack: None,
        endpoint,
    })
}
