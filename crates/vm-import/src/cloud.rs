//! Which cloud and credentials the CLI uses: `--os-cloud`, the Secret in the input file,
//! `OS_CLOUD` or the `OS_*` variables, in that order. This module is the only place the CLI
//! reads the environment and the clouds.yaml files.

use std::collections::BTreeMap;

use vmi_core::input::{ImportRequest, SourceDoc};
use vmi_openstack::config::{self, CloudConfig, SourceSettings};

/// Options of the CLI that affect the connection.
#[derive(Debug, Clone, Default)]
pub struct CloudOptions {
    pub os_cloud: Option<String>,
    pub insecure: bool,
}

fn read_file(path: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))
}

fn clouds_config(env: &BTreeMap<String, String>, cloud: &str) -> Result<CloudConfig, String> {
    let candidates = config::clouds_yaml_candidates(env);
    let Some(path) = candidates
        .iter()
        .find(|p| std::path::Path::new(p).is_file())
    else {
        return Err(format!(
            "--os-cloud {cloud}: no clouds.yaml found (looked in {})",
            candidates.join(", ")
        ));
    };
    let text = read_file(path)?;
    let secure_path = std::path::Path::new(path).with_file_name("secure.yaml");
    let secure = std::fs::read_to_string(&secure_path).ok();
    config::from_clouds_yaml(path, &text, secure.as_deref(), cloud, &read_file)
        .map_err(|e| e.to_string())
}

/// Chooses the cloud configuration for an OpenStack import request.
pub fn resolve(
    request: &ImportRequest,
    options: &CloudOptions,
    env: &BTreeMap<String, String>,
) -> Result<CloudConfig, String> {
    let source = match &request.source {
        Some(SourceDoc::Openstack(s)) => Some(s),
        _ => None,
    };
    let settings = source.map(|s| SourceSettings {
        endpoint: s.spec.endpoint.clone(),
        region: Some(s.spec.region.clone()),
        interface: s.spec.interface,
        insecure: s.spec.insecure_skip_tls_verify.unwrap_or(false),
    });
    let mut cfg = if let Some(cloud) = &options.os_cloud {
        clouds_config(env, cloud)?
    } else if let (Some(secret), Some(settings)) = (&request.secret, &settings) {
        config::from_secret(secret, settings).map_err(|e| e.to_string())?
    } else if let Some(cloud) = env.get("OS_CLOUD").filter(|c| !c.is_empty()) {
        clouds_config(env, cloud)?
    } else if env.get("OS_AUTH_URL").is_some_and(|u| !u.is_empty()) {
        config::from_env(env, &read_file).map_err(|e| e.to_string())?
    } else {
        let wanted = match source {
            Some(s) => format!(
                "the Secret '{}' named by the OpenstackSource is not in the input, and ",
                s.spec.credentials.name.as_deref().unwrap_or("")
            ),
            None => format!(
                "the OpenstackSource '{}' named by spec.sourceCluster is not in the input, and ",
                request
                    .import
                    .spec
                    .source_cluster
                    .name
                    .as_deref()
                    .unwrap_or("")
            ),
        };
        return Err(format!(
            "no credentials: {wanted}neither --os-cloud nor OS_CLOUD nor OS_AUTH_URL is set; add \
             the Secret to the file, or pass --os-cloud NAME (clouds.yaml), or source an openrc"
        ));
    };
    if cfg.region.is_none() {
        cfg.region = settings
            .as_ref()
            .and_then(|s| s.region.clone())
            .filter(|r| !r.is_empty());
    }
    if options.insecure || settings.as_ref().is_some_and(|s| s.insecure) {
        cfg.tls.insecure = true;
    }
    Ok(cfg)
}
