use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{ClusterStatus, Condition};
use k8s_openapi::api::core::v1::SecretReference;

/// Status shared by every source kind.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct SourceStatus {
    /// `clusterReady` once credentials and reachability were verified, else `clusterNotReady`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ClusterStatus>,
    /// `ClusterReady` / `ClusterError` conditions with reason and message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// An OpenStack cloud to import from.
///
/// The referenced Secret holds `username`, `password`, `project_name`, `domain_name` and
/// optionally `ca_cert` (upstream keys), and, added by vm-import, `user_domain_name`,
/// `project_domain_name`, `project_id`, `application_credential_id` and
/// `application_credential_secret`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "migration.harvesterhci.io",
    version = "v1beta1",
    kind = "OpenstackSource",
    namespaced,
    status = "SourceStatus",
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.status"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct OpenstackSourceSpec {
    /// Keystone endpoint, e.g. `https://openstack.example.com:5000/v3`.
    pub endpoint: String,
    /// Region whose catalog endpoints are used.
    pub region: String,
    /// The Secret with the credentials.
    pub credentials: SecretReference,
    /// How many times an image upload is polled before giving up (upstream default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_image_retry_count: Option<i64>,
    /// Seconds between two polls of an image upload (upstream default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_image_retry_delay: Option<i64>,
    /// **(vm-import)** Catalog interface of the endpoints to use: `public` (default),
    /// `internal` or `admin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<EndpointInterface>,
    /// **(vm-import)** Turn TLS certificate verification off. Off by default: verification uses
    /// the system roots plus the Secret's `ca_cert`. Turning it off is reported as a warning by
    /// preflight (`source.tls`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_tls_verify: Option<bool>,
}

/// Which catalog endpoint of each service to use.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EndpointInterface {
    #[default]
    Public,
    Internal,
    Admin,
}

impl EndpointInterface {
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointInterface::Public => "public",
            EndpointInterface::Internal => "internal",
            EndpointInterface::Admin => "admin",
        }
    }
}

/// A VMware vCenter to import from.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "migration.harvesterhci.io",
    version = "v1beta1",
    kind = "VmwareSource",
    namespaced,
    status = "SourceStatus",
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.status"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct VmwareSourceSpec {
    /// vCenter SDK endpoint, e.g. `https://vcenter/sdk`.
    pub endpoint: String,
    /// Datacenter name.
    pub dc: String,
    /// The Secret with `username` and `password`.
    pub credentials: SecretReference,
}

/// An OVA archive to import from.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "migration.harvesterhci.io",
    version = "v1beta1",
    kind = "OvaSource",
    namespaced,
    status = "SourceStatus",
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.status"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct OvaSourceSpec {
    /// `http://` or `https://` URL of the OVA (the CLI also accepts `file://`).
    pub url: String,
    /// Seconds the server may stay silent (connect, or between two reads) before the download
    /// is retried; 0 means no limit; default 600. (Upstream applies it to the whole download,
    /// which fails large OVAs on slow links; here a long download that keeps moving never
    /// times out.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_timeout_seconds: Option<i64>,
    /// Optional Secret with `username`, `password` (basic auth) and `ca.crt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<SecretReference>,
    /// **(vm-import)** Turn TLS certificate verification off for `https://` URLs (reported as
    /// a warning by preflight).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_tls_verify: Option<bool>,
}
