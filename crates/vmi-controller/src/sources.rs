//! Source objects: verify credentials and reachability, report `clusterReady` /
//! `clusterNotReady` with the upstream conditions (`ClusterReady`, `ClusterError`) — here with a
//! reason and a message saying what failed and what to do — and verify again periodically and
//! whenever the referenced Secret changes (the Go controller verifies once, ever).

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use tracing::{info, instrument, warn};
use vmi_api::{
    ClusterStatus, ConditionStatus, OpenstackSource, OvaSource, SecretReference, SourceStatus,
    VmwareSource,
};
use vmi_core::input::SecretData;
use vmi_core::preflight::CheckStatus;
use vmi_core::secret::Sensitive;
use vmi_openstack::HttpOpenstack;
use vmi_openstack::config::{self, CloudConfig, SourceSettings};
use vmi_openstack::session::SessionOptions;

use crate::Context;
use crate::kubeapi::{self, is_not_found};
use crate::status::set_condition;

/// Errors of a source reconcile (all are retried; the verdict itself goes to the status).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

impl SourceError {
    pub fn reason(&self) -> &'static str {
        "KubernetesApi"
    }
}

/// Outcome of a verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub ready: bool,
    /// CamelCase kind: `Verified`, `SecretNotFound`, `AuthenticationFailed`, …
    pub reason: String,
    /// What failed, on which object, and what to do.
    pub message: String,
}

impl Verdict {
    fn fail(reason: &str, message: impl Into<String>) -> Self {
        Verdict {
            ready: false,
            reason: reason.to_owned(),
            message: message.into(),
        }
    }
}

/// The decoded data of the Secret `r` (namespace defaulted to `ns`).
pub async fn read_secret(
    client: &kube::Client,
    r: &SecretReference,
    ns: &str,
) -> Result<Result<SecretData, Verdict>, kube::Error> {
    let secret_ns = r.namespace.clone().unwrap_or_else(|| ns.to_owned());
    let Some(name) = r.name.clone().filter(|n| !n.is_empty()) else {
        return Ok(Err(Verdict::fail(
            "SecretNotSet",
            "spec.credentials.name is empty; name the Secret holding the credentials",
        )));
    };
    let api: Api<Secret> = Api::namespaced(client.clone(), &secret_ns);
    match api.get_opt(&name).await? {
        None => Ok(Err(Verdict::fail(
            "SecretNotFound",
            format!(
                "Secret {secret_ns}/{name} named by spec.credentials does not exist; create it or fix spec.credentials"
            ),
        ))),
        Some(s) => {
            let mut data = BTreeMap::new();
            for (k, v) in s.data.unwrap_or_default() {
                data.insert(
                    k,
                    Sensitive::new(String::from_utf8_lossy(&v.0).into_owned()),
                );
            }
            for (k, v) in s.string_data.unwrap_or_default() {
                data.insert(k, Sensitive::new(v));
            }
            Ok(Ok(SecretData {
                namespace: secret_ns,
                name,
                data,
            }))
        }
    }
}

/// The cloud configuration of an OpenstackSource with its Secret.
pub fn openstack_config(
    src: &OpenstackSource,
    secret: &SecretData,
) -> Result<CloudConfig, Verdict> {
    let settings = SourceSettings {
        endpoint: src.spec.endpoint.clone(),
        region: Some(src.spec.region.clone()),
        interface: src.spec.interface,
        insecure: src.spec.insecure_skip_tls_verify.unwrap_or(false),
    };
    config::from_secret(secret, &settings)
        .map_err(|e| Verdict::fail("InvalidCredentials", e.to_string()))
}

/// A client for the source; `credentials` describes who logs in (no secret).
pub fn openstack_client(
    cfg: CloudConfig,
    options: SessionOptions,
) -> Result<(HttpOpenstack, String, String, bool), Verdict> {
    let endpoint = cfg.auth_url.clone();
    let credentials = format!("{} from {}", cfg.credentials.describe(), cfg.origin);
    let insecure = cfg.tls.insecure;
    let api = HttpOpenstack::new(cfg, options)
        .map_err(|e| Verdict::fail("InvalidConfiguration", e.to_string()))?;
    Ok((api, endpoint, credentials, insecure))
}

async fn verify_openstack(src: &OpenstackSource, ctx: &Context) -> Result<Verdict, kube::Error> {
    let ns = src.namespace().unwrap_or_default();
    let secret = match read_secret(&ctx.client, &src.spec.credentials, &ns).await? {
        Ok(s) => s,
        Err(v) => return Ok(v),
    };
    let cfg = match openstack_config(src, &secret) {
        Ok(c) => c,
        Err(v) => return Ok(v),
    };
    let options = SessionOptions {
        attempts: 2,
        ..SessionOptions::default()
    };
    let (api, endpoint, credentials, insecure) = match openstack_client(cfg, options) {
        Ok(x) => x,
        Err(v) => return Ok(v),
    };
    let verified = vmi_openstack::preflight::verify_source(&api, &endpoint, &credentials).await;
    let mut verdict = if verified.check.status == CheckStatus::Pass {
        Verdict {
            ready: true,
            reason: "Verified".into(),
            message: verified.check.message,
        }
    } else {
        let reason = match verified.reason {
            "Unauthorized" => "AuthenticationFailed",
            r => r,
        };
        Verdict::fail(reason, verified.check.message)
    };
    if insecure && verdict.ready {
        verdict.message.push_str(
            "; TLS verification is OFF (insecureSkipTlsVerify): the endpoint's identity is not checked",
        );
    }
    Ok(verdict)
}

/// The status a verdict gives, keeping condition times that did not change.
pub fn source_status(old: Option<&SourceStatus>, v: &Verdict, now: &str) -> SourceStatus {
    let mut s = old.cloned().unwrap_or_default();
    s.status = Some(if v.ready {
        ClusterStatus::Ready
    } else {
        ClusterStatus::NotReady
    });
    let (ready, error) = if v.ready {
        (ConditionStatus::True, ConditionStatus::False)
    } else {
        (ConditionStatus::False, ConditionStatus::True)
    };
    set_condition(
        &mut s.conditions,
        "ClusterReady",
        ready,
        &v.reason,
        &v.message,
        now,
    );
    set_condition(
        &mut s.conditions,
        "ClusterError",
        error,
        &v.reason,
        &v.message,
        now,
    );
    s
}

async fn record<K>(
    api: &Api<K>,
    obj: &K,
    old: Option<&SourceStatus>,
    verdict: &Verdict,
    ctx: &Context,
) -> Result<(), kube::Error>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let new = source_status(old, verdict, &kubeapi::now());
    let changed = old.is_none_or(|o| {
        o.status != new.status
            || o.conditions
                .iter()
                .map(|c| (&c.reason, &c.message))
                .collect::<Vec<_>>()
                != new
                    .conditions
                    .iter()
                    .map(|c| (&c.reason, &c.message))
                    .collect::<Vec<_>>()
    });
    if !changed {
        return Ok(());
    }
    kubeapi::write_status(api, &obj.name_any(), &new).await?;
    if verdict.ready {
        info!(reason = %verdict.reason, "source verified");
        kubeapi::publish(
            &ctx.recorder,
            obj,
            EventType::Normal,
            &verdict.reason,
            "Verify",
            verdict.message.clone(),
        )
        .await;
    } else {
        warn!(reason = %verdict.reason, message = %verdict.message, "source not ready");
        ctx.metrics.error(&verdict.reason);
        kubeapi::publish(
            &ctx.recorder,
            obj,
            EventType::Warning,
            &verdict.reason,
            "Verify",
            verdict.message.clone(),
        )
        .await;
    }
    Ok(())
}

#[instrument(skip_all, fields(source = %format!("{}/{}", src.namespace().unwrap_or_default(), src.name_any()), kind = "OpenstackSource"))]
pub async fn reconcile_openstack(
    src: Arc<OpenstackSource>,
    ctx: Arc<Context>,
) -> Result<Action, SourceError> {
    ctx.metrics.reconciled("OpenstackSource");
    let ns = src.namespace().unwrap_or_default();
    let api: Api<OpenstackSource> = Api::namespaced(ctx.client.clone(), &ns);
    // Fresh from the server: the cache may lag our own last write.
    let Some(src) = api.get_opt(&src.name_any()).await? else {
        return Ok(Action::await_change());
    };
    let verdict = verify_openstack(&src, &ctx).await?;
    record(&api, &src, src.status.as_ref(), &verdict, &ctx).await?;
    Ok(Action::requeue(ctx.args.source_resync()))
}

#[instrument(skip_all, fields(source = %format!("{}/{}", src.namespace().unwrap_or_default(), src.name_any()), kind = "VmwareSource"))]
pub async fn reconcile_vmware(
    src: Arc<VmwareSource>,
    ctx: Arc<Context>,
) -> Result<Action, SourceError> {
    ctx.metrics.reconciled("VmwareSource");
    let ns = src.namespace().unwrap_or_default();
    let api: Api<VmwareSource> = Api::namespaced(ctx.client.clone(), &ns);
    let verdict = Verdict::fail(
        "NotSupported",
        "vm-import does not import from VMware vSphere yet; use Harvester's vm-import-controller \
         for this source, or export the VM as an OVA and use an OvaSource",
    );
    record(&api, &src, src.status.as_ref(), &verdict, &ctx).await?;
    Ok(Action::await_change())
}

/// Where an OvaSource's archive is, with its optional Secret (`username`, `password`,
/// `ca.crt`). `file://` URLs are for the CLI only: the controller's files are its own.
pub async fn ova_location(
    src: &OvaSource,
    client: &kube::Client,
) -> Result<Result<vmi_engine::ova::OvaLocation, Verdict>, kube::Error> {
    let ns = src.namespace().unwrap_or_default();
    if src.spec.url.trim().starts_with("file://") {
        return Ok(Err(Verdict::fail(
            "InvalidURL",
            format!(
                "spec.url '{}' is a local file: the controller downloads OVAs over http:// or https://; serve the file from a web server (file:// URLs are for the vm-import CLI)",
                src.spec.url
            ),
        )));
    }
    let secret = match &src.spec.credentials {
        None => None,
        Some(r) => match read_secret(client, r, &ns).await? {
            Ok(s) => Some(s),
            Err(v) => return Ok(Err(v)),
        },
    };
    Ok(
        vmi_engine::ova::OvaLocation::from_source(src, secret.as_ref(), None)
            .map_err(|e| Verdict::fail("InvalidSource", e)),
    )
}

/// An OvaSource is ready when its URL answers and the archive's OVF descriptor parses (only
/// the head of the archive is read, up to the descriptor).
async fn verify_ova(src: &OvaSource, ctx: &Context) -> Result<Verdict, kube::Error> {
    let loc = match ova_location(src, &ctx.client).await? {
        Ok(l) => l,
        Err(v) => return Ok(v),
    };
    let tls = loc.tls_check();
    let mut verdict = match loc.read_descriptor().await {
        Ok(d) => {
            let env = &d.descriptor.envelope;
            let names: Vec<&str> = env
                .systems
                .iter()
                .map(|v| v.name.as_deref().or(v.id.as_deref()).unwrap_or("(unnamed)"))
                .collect();
            Verdict {
                ready: true,
                reason: "Verified".into(),
                message: format!(
                    "{}: OVF descriptor read; virtual system(s): {}",
                    loc.describe(),
                    names.join(", ")
                ),
            }
        }
        Err(e) => {
            let reason = if e.contains("HTTP 401") || e.contains("HTTP 403") {
                "AuthenticationFailed"
            } else if e.contains("TLS certificate") {
                "TlsError"
            } else if e.contains("HTTP ") || e.contains("cannot connect") || e.contains("timed out")
            {
                "Unreachable"
            } else {
                "InvalidArchive"
            };
            Verdict::fail(reason, e)
        }
    };
    if verdict.ready && tls.status == CheckStatus::Warn {
        verdict.message.push_str("; ");
        verdict.message.push_str(&tls.message);
    }
    Ok(verdict)
}

#[instrument(skip_all, fields(source = %format!("{}/{}", src.namespace().unwrap_or_default(), src.name_any()), kind = "OvaSource"))]
pub async fn reconcile_ova(src: Arc<OvaSource>, ctx: Arc<Context>) -> Result<Action, SourceError> {
    ctx.metrics.reconciled("OvaSource");
    let ns = src.namespace().unwrap_or_default();
    let api: Api<OvaSource> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(src) = api.get_opt(&src.name_any()).await? else {
        return Ok(Action::await_change());
    };
    let verdict = verify_ova(&src, &ctx).await?;
    record(&api, &src, src.status.as_ref(), &verdict, &ctx).await?;
    Ok(Action::requeue(ctx.args.source_resync()))
}

/// Whether `secret` (namespace, name) is the one `r` names (namespace defaulted to `ns`).
pub fn refers_to(r: &SecretReference, ns: &str, secret_ns: &str, secret_name: &str) -> bool {
    r.name.as_deref() == Some(secret_name) && r.namespace.as_deref().unwrap_or(ns) == secret_ns
}

/// Not found is a normal answer for optional objects.
pub fn ignore_not_found<T>(r: Result<T, kube::Error>) -> Result<Option<T>, kube::Error> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verdict_sets_both_upstream_conditions_with_reason_and_message() {
        let v = Verdict::fail("AuthenticationFailed", "Keystone refused the credentials");
        let s = source_status(None, &v, "t1");
        assert_eq!(s.status, Some(ClusterStatus::NotReady));
        let ready = s.conditions.iter().find(|c| c.type_ == "ClusterReady");
        let error = s.conditions.iter().find(|c| c.type_ == "ClusterError");
        assert_eq!(ready.map(|c| c.status), Some(ConditionStatus::False));
        assert_eq!(error.map(|c| c.status), Some(ConditionStatus::True));
        assert_eq!(
            ready.and_then(|c| c.reason.as_deref()),
            Some("AuthenticationFailed")
        );
        let ok = Verdict {
            ready: true,
            reason: "Verified".into(),
            message: "logged in".into(),
        };
        let s2 = source_status(Some(&s), &ok, "t2");
        assert_eq!(s2.status, Some(ClusterStatus::Ready));
        assert_eq!(s2.conditions.len(), 2);
        assert!(
            s2.conditions
                .iter()
                .all(|c| c.last_transition_time.as_deref() == Some("t2"))
        );
    }

    #[test]
    fn secret_references_default_to_the_source_namespace() {
        let r = SecretReference {
            name: Some("creds".into()),
            namespace: None,
        };
        assert!(refers_to(&r, "apps", "apps", "creds"));
        assert!(!refers_to(&r, "apps", "other", "creds"));
        assert!(!refers_to(&r, "apps", "apps", "x"));
    }
}
