//! The transport: Keystone v3 login, catalog endpoints, Nova microversion negotiation, and one
//! `send` that every call goes through (token header, re-login on 401, bounded retries of
//! idempotent requests, errors with method/URL/status/request id, a request counter).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use time::OffsetDateTime;
use tokio::sync::{Mutex, OnceCell};
use tracing::debug;
use url::Url;

use vmi_core::Sensitive;

use crate::config::{CloudConfig, Credentials, DomainRef, ProjectScope, UserRef};
use crate::error::{OpenstackError, RequestLine, error_message};
use crate::tls;

/// The services vm-import talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Service {
    Compute,
    Network,
    Image,
    Volume,
}

impl Service {
    /// Catalog types accepted for the service, preferred first.
    fn catalog_types(self) -> &'static [&'static str] {
        match self {
            Service::Compute => &["compute"],
            Service::Network => &["network"],
            Service::Image => &["image"],
            Service::Volume => &["volumev3", "block-storage", "volume"],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Service::Compute => "compute",
            Service::Network => "network",
            Service::Image => "image",
            Service::Volume => "volumev3",
        }
    }
}

/// An API microversion such as 2.79.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Microversion(pub u32, pub u32);

impl Microversion {
    pub fn parse(s: &str) -> Option<Microversion> {
        let (a, b) = s.trim().split_once('.')?;
        Some(Microversion(a.parse().ok()?, b.parse().ok()?))
    }
}

impl std::fmt::Display for Microversion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

/// The Nova microversion vm-import asks for when the cloud offers it: 2.79 embeds the flavor
/// (2.47), returns `image_id` from createImage (2.45) and server descriptions (2.19). Lower
/// versions still work: the client falls back where the shape differs.
pub const PREFERRED_COMPUTE_MICROVERSION: Microversion = Microversion(2, 79);

/// Timeouts and retries.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    pub connect_timeout: Duration,
    /// Whole-request timeout of API calls (not of downloads, which have a read timeout).
    pub request_timeout: Duration,
    /// Longest silence while streaming a download.
    pub read_timeout: Duration,
    /// Attempts of an idempotent request that failed transiently.
    pub attempts: u32,
    /// First backoff; doubles each time.
    pub backoff: Duration,
    /// Sent as `X-OpenStack-Request-ID` on every request, so that the services log every call of
    /// one run under one global request id (`req-<uuid>`); generated when `None`.
    pub global_request_id: Option<String>,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_mins(1),
            read_timeout: Duration::from_mins(2),
            attempts: 4,
            backoff: Duration::from_millis(500),
            global_request_id: None,
        }
    }
}

/// What a login yields.
#[derive(Clone, Debug)]
pub struct Auth {
    token: Sensitive,
    expires_at: Option<OffsetDateTime>,
    pub user_name: String,
    pub user_id: String,
    pub project_id: String,
    pub project_name: String,
    pub catalog: Vec<CatalogService>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct CatalogService {
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default)]
    pub endpoints: Vec<CatalogEndpoint>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct CatalogEndpoint {
    pub interface: String,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub region_id: Option<String>,
    pub url: String,
}

/// A request to send.
#[derive(Debug)]
pub struct Call {
    pub service: Service,
    pub method: Method,
    /// Path below the service endpoint, starting with `/`.
    pub path: String,
    pub query: Vec<(String, String)>,
    pub body: Option<serde_json::Value>,
    pub headers: Vec<(&'static str, String)>,
    /// Safe to send twice (GET, DELETE, and state-checked actions).
    pub idempotent: bool,
    /// Streamed download: no whole-request timeout.
    pub download: bool,
}

impl Call {
    pub fn get(service: Service, path: impl Into<String>) -> Self {
        Self {
            service,
            method: Method::GET,
            path: path.into(),
            query: Vec::new(),
            body: None,
            headers: Vec::new(),
            idempotent: true,
            download: false,
        }
    }
    pub fn post(service: Service, path: impl Into<String>, body: serde_json::Value) -> Self {
        Self {
            method: Method::POST,
            body: Some(body),
            idempotent: false,
            ..Self::get(service, path)
        }
    }
    pub fn delete(service: Service, path: impl Into<String>) -> Self {
        Self {
            method: Method::DELETE,
            ..Self::get(service, path)
        }
    }
    #[must_use]
    pub fn query(mut self, key: &str, value: impl Into<String>) -> Self {
        self.query.push((key.to_owned(), value.into()));
        self
    }
    #[must_use]
    pub fn header(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((key, value.into()));
        self
    }
}

/// A logged-in connection to one cloud.
#[derive(Debug)]
pub struct Session {
    api: reqwest::Client,
    download: reqwest::Client,
    config: CloudConfig,
    identity: Url,
    options: SessionOptions,
    auth: Mutex<Option<Arc<Auth>>>,
    compute_version: OnceCell<Option<Microversion>>,
    requests: AtomicU64,
    global_request_id: String,
}

impl Session {
    /// Builds the HTTP clients; nothing is sent until the first call.
    pub fn new(config: CloudConfig, options: SessionOptions) -> Result<Self, OpenstackError> {
        let identity = identity_url(&config.auth_url)?;
        let tls = tls::client_config(&config.tls)?;
        let build = |download: bool| {
            let mut b = reqwest::Client::builder()
                .tls_backend_preconfigured(tls.clone())
                .connect_timeout(options.connect_timeout)
                .user_agent(concat!("vm-import/", env!("CARGO_PKG_VERSION")))
                .no_proxy();
            b = if download {
                b.read_timeout(options.read_timeout)
            } else {
                b.timeout(options.request_timeout)
            };
            b.build()
                .map_err(|e| OpenstackError::Config(format!("HTTP client setup: {e}")))
        };
        let global_request_id = options
            .global_request_id
            .clone()
            .unwrap_or_else(|| format!("req-{}", uuid::Uuid::new_v4()));
        Ok(Self {
            global_request_id,
            api: build(false)?,
            download: build(true)?,
            config,
            identity,
            options,
            auth: Mutex::new(None),
            compute_version: OnceCell::new(),
            requests: AtomicU64::new(0),
        })
    }

    pub fn config(&self) -> &CloudConfig {
        &self.config
    }

    /// The `X-OpenStack-Request-ID` sent on every request: grep the services' logs for it.
    pub fn global_request_id(&self) -> &str {
        &self.global_request_id
    }

    /// Requests sent so far (logins included).
    pub fn request_count(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The current login, logging in when there is none or the token expires within two
    /// minutes.
    pub async fn auth(&self) -> Result<Arc<Auth>, OpenstackError> {
        let mut guard = self.auth.lock().await;
        if let Some(a) = guard.as_ref() {
            let fresh = a
                .expires_at
                .is_none_or(|t| t - OffsetDateTime::now_utc() > time::Duration::minutes(2));
            if fresh {
                return Ok(a.clone());
            }
        }
        let a = Arc::new(self.login().await?);
        *guard = Some(a.clone());
        Ok(a)
    }

    async fn invalidate(&self, stale: &Arc<Auth>) {
        let mut guard = self.auth.lock().await;
        if guard.as_ref().is_some_and(|a| Arc::ptr_eq(a, stale)) {
            *guard = None;
        }
    }

    async fn login(&self) -> Result<Auth, OpenstackError> {
        let url = format!(
            "{}/auth/tokens",
            self.identity.as_str().trim_end_matches('/')
        );
        let body = auth_body(&self.config.credentials);
        let request = RequestLine {
            method: "POST".into(),
            url: url.clone(),
        };
        let mut attempt = 0;
        let response = loop {
            attempt += 1;
            self.requests.fetch_add(1, Ordering::Relaxed);
            let sent = self
                .api
                .post(&url)
                .header("X-OpenStack-Request-ID", &self.global_request_id)
                .json(&body)
                .send()
                .await;
            match sent {
                Ok(r) => break r,
                Err(e) => {
                    let err = classify(&request, &e, self.options.request_timeout);
                    if err.is_transient() && attempt < self.options.attempts {
                        tokio::time::sleep(self.options.backoff * 2u32.pow(attempt - 1)).await;
                        continue;
                    }
                    return Err(err);
                }
            }
        };
        let status = response.status();
        let request_id = request_id(response.headers());
        if !status.is_success() {
            let bytes = response.bytes().await.unwrap_or_default();
            return Err(OpenstackError::Api {
                request,
                status: status.as_u16(),
                request_id,
                message: error_message(&bytes),
            });
        }
        let token = response
            .headers()
            .get("x-subject-token")
            .and_then(|v| v.to_str().ok())
            .map(Sensitive::new)
            .ok_or_else(|| OpenstackError::Decode {
                request: request.clone(),
                detail: "no X-Subject-Token header in Keystone's answer".into(),
            })?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| classify(&request, &e, self.options.request_timeout))?;
        let parsed: TokenResponse =
            serde_json::from_slice(&bytes).map_err(|e| OpenstackError::Decode {
                request: request.clone(),
                detail: e.to_string(),
            })?;
        let t = parsed.token;
        let project = t.project.ok_or_else(|| OpenstackError::Decode {
            request: request.clone(),
            detail:
                "the token is not scoped to a project; give a project (project_name or project_id)"
                    .into(),
        })?;
        Ok(Auth {
            token,
            expires_at: t.expires_at.and_then(|s| {
                OffsetDateTime::parse(&s, &time::format_description::well_known::Rfc3339).ok()
            }),
            user_name: t.user.name,
            user_id: t.user.id,
            project_id: project.id,
            project_name: project.name,
            catalog: t.catalog,
        })
    }

    /// The endpoint of `service` for the configured region and interface, normalised to
    /// include the API version.
    pub fn endpoint(&self, auth: &Auth, service: Service) -> Result<String, OpenstackError> {
        let interface = self.config.interface.as_str();
        let region = self.config.region.as_deref();
        for wanted in service.catalog_types() {
            for s in auth.catalog.iter().filter(|s| s.type_ == *wanted) {
                let hit = s.endpoints.iter().find(|e| {
                    e.interface == interface
                        && region.is_none_or(|r| {
                            e.region_id.as_deref() == Some(r) || e.region.as_deref() == Some(r)
                        })
                });
                if let Some(e) = hit {
                    return Ok(normalise_endpoint(service, &e.url, &auth.project_id));
                }
            }
        }
        let mut available: Vec<String> = auth
            .catalog
            .iter()
            .flat_map(|s| {
                s.endpoints.iter().map(move |e| {
                    format!(
                        "{} {} {}",
                        s.type_,
                        e.interface,
                        e.region_id
                            .as_deref()
                            .or(e.region.as_deref())
                            .unwrap_or("-")
                    )
                })
            })
            .filter(|d| d.starts_with(service.catalog_types()[0]) || d.starts_with(service.name()))
            .collect();
        if available.is_empty() {
            available.push("none".into());
        }
        Err(OpenstackError::Catalog {
            service: service.name().into(),
            region: region.map(str::to_owned),
            interface: interface.into(),
            available: available.join(", "),
        })
    }

    /// The negotiated Nova microversion (`None` on a cloud without microversions).
    pub async fn compute_microversion(&self) -> Result<Option<Microversion>, OpenstackError> {
        self.compute_version
            .get_or_try_init(|| async {
                let auth = self.auth().await?;
                let base = self.endpoint(&auth, Service::Compute)?;
                let root = compute_version_root(&base);
                let request = RequestLine {
                    method: "GET".into(),
                    url: root.clone(),
                };
                let response = self
                    .send_raw(&auth, Method::GET, &root, &[], None, &[], &request, false)
                    .await?;
                let response = check(response, &request).await?;
                let doc: VersionDoc = json_body(response, &request).await?;
                let max = Microversion::parse(&doc.version.version);
                let min = Microversion::parse(&doc.version.min_version);
                Ok(negotiate(min, max))
            })
            .await
            .copied()
    }

    /// Sends `call`, logging in as needed, retrying idempotent calls on transient failures and
    /// once after a 401 (expired or revoked token).
    pub async fn send(&self, call: &Call) -> Result<reqwest::Response, OpenstackError> {
        let mut relogged = false;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let auth = self.auth().await?;
            let base = self.endpoint(&auth, call.service)?;
            let url = format!("{base}{}", call.path);
            let request = RequestLine {
                method: call.method.to_string(),
                url: url.clone(),
            };
            let mut headers = call.headers.clone();
            if call.service == Service::Compute
                && let Some(v) = self.compute_microversion().await?
            {
                headers.push(("X-OpenStack-Nova-API-Version", v.to_string()));
                headers.push(("OpenStack-API-Version", format!("compute {v}")));
            }
            let result = self
                .send_raw(
                    &auth,
                    call.method.clone(),
                    &url,
                    &call.query,
                    call.body.as_ref(),
                    &headers,
                    &request,
                    call.download,
                )
                .await;
            let response = match result {
                Ok(r) => r,
                Err(e)
                    if e.is_transient() && call.idempotent && attempt < self.options.attempts =>
                {
                    debug!(%request, error = %e, attempt, "retrying");
                    tokio::time::sleep(self.options.backoff * 2u32.pow(attempt - 1)).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED && !relogged {
                relogged = true;
                self.invalidate(&auth).await;
                continue;
            }
            if call.idempotent
                && attempt < self.options.attempts
                && matches!(status.as_u16(), 429 | 502 | 503 | 504)
            {
                debug!(%request, %status, attempt, "retrying");
                tokio::time::sleep(self.options.backoff * 2u32.pow(attempt - 1)).await;
                continue;
            }
            return check(response, &request).await;
        }
    }

    /// Sends `call` and decodes a JSON answer.
    pub async fn json<T: DeserializeOwned>(&self, call: &Call) -> Result<T, OpenstackError> {
        let response = self.send(call).await?;
        let request = RequestLine {
            method: call.method.to_string(),
            url: response.url().to_string(),
        };
        json_body(response, &request).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn send_raw(
        &self,
        auth: &Auth,
        method: Method,
        url: &str,
        query: &[(String, String)],
        body: Option<&serde_json::Value>,
        headers: &[(&'static str, String)],
        request: &RequestLine,
        download: bool,
    ) -> Result<reqwest::Response, OpenstackError> {
        let client = if download { &self.download } else { &self.api };
        let mut b = client
            .request(method, url)
            .header("X-Auth-Token", auth.token.expose())
            .header("X-OpenStack-Request-ID", &self.global_request_id);
        if !query.is_empty() {
            b = b.query(query);
        }
        for (k, v) in headers {
            b = b.header(*k, v);
        }
        if let Some(body) = body {
            b = b.json(body);
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        let started = std::time::Instant::now();
        let result = b.send().await;
        match &result {
            Ok(r) => {
                debug!(method = %request.method, url = %r.url(), status = r.status().as_u16(), elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX), "openstack request");
            }
            Err(e) => {
                debug!(method = %request.method, url = %request.url, error = %e, "openstack request failed");
            }
        }
        result.map_err(|e| classify(request, &e, self.options.request_timeout))
    }
}

/// Turns an error status into [`OpenstackError::Api`].
async fn check(
    response: reqwest::Response,
    request: &RequestLine,
) -> Result<reqwest::Response, OpenstackError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let request_id = request_id(response.headers());
    let request = RequestLine {
        method: request.method.clone(),
        url: response.url().to_string(),
    };
    let bytes = response.bytes().await.unwrap_or_default();
    Err(OpenstackError::Api {
        request,
        status: status.as_u16(),
        request_id,
        message: error_message(&bytes),
    })
}

async fn json_body<T: DeserializeOwned>(
    response: reqwest::Response,
    request: &RequestLine,
) -> Result<T, OpenstackError> {
    let bytes = response
        .bytes()
        .await
        .map_err(|e| OpenstackError::Transport {
            request: request.clone(),
            detail: e.to_string(),
        })?;
    serde_json::from_slice(&bytes).map_err(|e| OpenstackError::Decode {
        request: request.clone(),
        detail: format!(
            "{e} (body starts: {})",
            String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
        ),
    })
}

fn request_id(headers: &HeaderMap<HeaderValue>) -> Option<String> {
    ["x-openstack-request-id", "x-compute-request-id"]
        .iter()
        .find_map(|h| {
            headers
                .get(*h)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
}

/// Classifies a transport error: TLS, connect, timeout or other.
pub(crate) fn classify(
    request: &RequestLine,
    e: &reqwest::Error,
    timeout: Duration,
) -> OpenstackError {
    if let Some(detail) = tls_cause(e) {
        return OpenstackError::Tls {
            request: request.clone(),
            detail,
        };
    }
    if e.is_timeout() {
        return OpenstackError::Timeout {
            request: request.clone(),
            seconds: timeout.as_secs(),
        };
    }
    if e.is_connect() {
        return OpenstackError::Connect {
            request: request.clone(),
            detail: root_cause(e),
        };
    }
    OpenstackError::Transport {
        request: request.clone(),
        detail: chain(e),
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = s.source();
    }
    parts.join(": ")
}

/// The innermost cause ("Connection refused (os error 111)", "dns error: …").
fn root_cause(e: &dyn std::error::Error) -> String {
    let mut last = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        last = s.to_string();
        cur = s.source();
    }
    last
}

/// The rustls error somewhere in the chain, described.
fn tls_cause(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<rustls::Error>() {
            return Some(describe_tls(t));
        }
        // io::Error nests (hyper wraps tokio-rustls' io::Error in another one) and its
        // `source()` skips the wrapped error: descend through `get_ref()` instead.
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
        {
            cur = Some(inner as &(dyn std::error::Error + 'static));
            continue;
        }
        cur = err.source();
    }
    None
}

fn describe_tls(e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(C::UnknownIssuer) => {
            "the server's certificate is signed by an unknown CA (self-signed or private CA)".into()
        }
        rustls::Error::InvalidCertificate(
            C::NotValidForName | C::NotValidForNameContext { .. },
        ) => "the server's certificate is not valid for this host name".into(),
        rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            "the server's certificate has expired".into()
        }
        other => other.to_string(),
    }
}

fn auth_body(credentials: &Credentials) -> serde_json::Value {
    fn domain(d: &DomainRef) -> serde_json::Value {
        match d {
            DomainRef::Name(n) => json!({"name": n}),
            DomainRef::Id(id) => json!({"id": id}),
        }
    }
    fn user(u: &UserRef) -> serde_json::Value {
        match u {
            UserRef::Name { name, domain: d } => json!({"name": name, "domain": domain(d)}),
            UserRef::Id(id) => json!({"id": id}),
        }
    }
    match credentials {
        Credentials::Password {
            user: u,
            password,
            project,
        } => {
            let mut pw_user = user(u);
            pw_user["password"] = json!(password.expose());
            let scope = match project {
                ProjectScope::Id(id) => json!({"project": {"id": id}}),
                ProjectScope::Name { name, domain: d } => {
                    json!({"project": {"name": name, "domain": domain(d)}})
                }
            };
            json!({"auth": {"identity": {"methods": ["password"], "password": {"user": pw_user}}, "scope": scope}})
        }
        Credentials::ApplicationCredential(ac) => {
            let mut cred = json!({"secret": ac.secret.expose()});
            if let Some(id) = &ac.id {
                cred["id"] = json!(id);
            } else {
                if let Some(name) = &ac.name {
                    cred["name"] = json!(name);
                }
                if let Some(u) = &ac.user {
                    cred["user"] = user(u);
                }
            }
            json!({"auth": {"identity": {"methods": ["application_credential"], "application_credential": cred}}})
        }
    }
}

/// Keystone URL ending in `/v3`: the upstream examples give the bare service URL
/// (`https://devstack/identity`), clouds.yaml usually includes `/v3`.
pub fn identity_url(auth_url: &str) -> Result<Url, OpenstackError> {
    let mut url = Url::parse(auth_url.trim()).map_err(|e| {
        OpenstackError::Config(format!(
            "endpoint '{auth_url}' is not a URL ({e}); give the Keystone URL, e.g. https://keystone.example.com:5000/v3"
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(OpenstackError::Config(format!(
            "endpoint '{auth_url}' must be an http:// or https:// URL"
        )));
    }
    let path = url.path().trim_end_matches('/').to_owned();
    let versioned = path
        .rsplit('/')
        .next()
        .is_some_and(|last| last == "v3" || last.starts_with("v3."));
    let new_path = if versioned {
        path
    } else {
        format!("{path}/v3")
    };
    url.set_path(&new_path);
    Ok(url)
}

fn normalise_endpoint(service: Service, url: &str, project_id: &str) -> String {
    let url = url.trim_end_matches('/');
    let last = url.rsplit('/').next().unwrap_or("");
    match service {
        Service::Network if last != "v2.0" => format!("{url}/v2.0"),
        Service::Image if last != "v2" => format!("{url}/v2"),
        Service::Compute if !url.contains("/v2.1") && !url.contains("/v2/") && last != "v2" => {
            format!("{url}/v2.1")
        }
        Service::Volume if !url.contains("/v3") => format!("{url}/v3/{project_id}"),
        _ => url.to_owned(),
    }
}

/// `http://nova/v2.1/<project>` → `http://nova/v2.1/`: the version document lives at the
/// version root.
fn compute_version_root(endpoint: &str) -> String {
    match endpoint.find("/v2.1") {
        Some(i) => format!("{}/", &endpoint[..i + 5]),
        None => format!("{}/", endpoint.trim_end_matches('/')),
    }
}

fn negotiate(min: Option<Microversion>, max: Option<Microversion>) -> Option<Microversion> {
    let max = max?;
    let chosen = max.min(PREFERRED_COMPUTE_MICROVERSION);
    match min {
        Some(min) if chosen < min => Some(min),
        _ => Some(chosen),
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    token: TokenBody,
}

#[derive(Deserialize)]
struct TokenBody {
    #[serde(default)]
    expires_at: Option<String>,
    user: NamedId,
    #[serde(default)]
    project: Option<NamedId>,
    #[serde(default)]
    catalog: Vec<CatalogService>,
}

#[derive(Deserialize)]
struct NamedId {
    id: String,
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
struct VersionDoc {
    version: VersionInfo,
}

#[derive(Deserialize)]
struct VersionInfo {
    #[serde(default)]
    version: String,
    #[serde(default)]
    min_version: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_urls_get_v3() {
        assert_eq!(
            identity_url("https://devstack/identity").unwrap().as_str(),
            "https://devstack/identity/v3"
        );
        assert_eq!(
            identity_url("http://127.0.0.1:5000/v3/").unwrap().as_str(),
            "http://127.0.0.1:5000/v3"
        );
        assert_eq!(
            identity_url("http://127.0.0.1:5000").unwrap().as_str(),
            "http://127.0.0.1:5000/v3"
        );
        assert!(identity_url("keystone:5000").is_err());
        assert!(identity_url("ftp://x/v3").is_err());
    }

    #[test]
    fn endpoints_are_normalised_to_their_api_version() {
        assert_eq!(
            normalise_endpoint(Service::Network, "http://127.0.0.1:9696", "p"),
            "http://127.0.0.1:9696/v2.0"
        );
        assert_eq!(
            normalise_endpoint(Service::Network, "http://h:9696/v2.0/", "p"),
            "http://h:9696/v2.0"
        );
        assert_eq!(
            normalise_endpoint(Service::Image, "http://127.0.0.1:9292", "p"),
            "http://127.0.0.1:9292/v2"
        );
        assert_eq!(
            normalise_endpoint(Service::Compute, "http://127.0.0.1:8774/v2.1", "p"),
            "http://127.0.0.1:8774/v2.1"
        );
        assert_eq!(
            normalise_endpoint(Service::Volume, "http://h:8776/v3/abc", "p"),
            "http://h:8776/v3/abc"
        );
        assert_eq!(
            normalise_endpoint(Service::Volume, "http://h:8776", "p"),
            "http://h:8776/v3/p"
        );
        assert_eq!(compute_version_root("http://h/v2.1/abc"), "http://h/v2.1/");
        assert_eq!(compute_version_root("http://h/v2.1"), "http://h/v2.1/");
    }

    #[test]
    fn microversion_negotiation_prefers_ours_within_the_cloud_range() {
        let v = |s| Microversion::parse(s);
        assert_eq!(negotiate(v("2.1"), v("2.93")), v("2.79"));
        assert_eq!(negotiate(v("2.1"), v("2.60")), v("2.60"));
        assert_eq!(negotiate(None, None), None);
        assert!(Microversion(2, 19) < Microversion(2, 79));
        assert!(Microversion(2, 9) < Microversion(2, 19));
    }

    #[test]
    fn auth_bodies_have_separate_domains_and_no_scope_for_app_creds() {
        let c = Credentials::Password {
            user: UserRef::Name {
                name: "u".into(),
                domain: DomainRef::Name("ud".into()),
            },
            password: Sensitive::new("p"),
            project: ProjectScope::Name {
                name: "pr".into(),
                domain: DomainRef::Id("pd".into()),
            },
        };
        assert_eq!(
            auth_body(&c),
            json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {"name": "u", "domain": {"name": "ud"}, "password": "p"}}},
                   "scope": {"project": {"name": "pr", "domain": {"id": "pd"}}}}})
        );
        let a = Credentials::ApplicationCredential(crate::config::ApplicationCredential {
            id: Some("ac".into()),
            name: None,
            user: None,
            secret: Sensitive::new("s"),
        });
        assert_eq!(
            auth_body(&a),
            json!({"auth": {"identity": {"methods": ["application_credential"], "application_credential": {"id": "ac", "secret": "s"}}}})
        );
    }
}
