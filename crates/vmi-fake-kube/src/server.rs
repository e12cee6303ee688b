//! The HTTP side: routing, request decoding, discovery and watch streams.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State as AxState};
use axum::response::Response;
use http::{HeaderMap, Method, StatusCode, header};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::error::{ApiError, ApiResult};
use crate::resources::{ResourceType, version_priority};
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{DeleteOpts, EventType, HistEvent, PatchKind, State, WriteOpts, meta_str};

/// One request the server answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    /// Raw query string (may be empty).
    pub query: String,
    pub status: u16,
    /// `Content-Type` of the request, if any.
    pub content_type: Option<String>,
}

impl RequestRecord {
    /// Whether the query string has `key=value`.
    pub fn has_query(&self, key: &str, value: &str) -> bool {
        form_urlencoded::parse(self.query.as_bytes()).any(|(k, v)| k == key && v == value)
    }
}

/// A failure to inject into matching requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// Only requests with this method (None: any).
    pub method: Option<Method>,
    /// Only requests whose path contains this.
    pub path_contains: String,
    /// HTTP status to answer with (a Status body is sent).
    pub code: u16,
    /// How many requests to fail.
    pub times: usize,
}

/// Server knobs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Interval of BOOKMARK events on watches that allow them.
    pub bookmark_interval: Duration,
    /// Watch duration when the client gives no `timeoutSeconds`.
    pub default_watch_timeout: Duration,
    /// If set, requests must carry `Authorization: Bearer <token>`.
    pub required_token: Option<String>,
    /// Print one line per request on stderr.
    pub log_requests: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bookmark_interval: Duration::from_secs(10),
            default_watch_timeout: Duration::from_mins(30),
            required_token: None,
            log_requests: false,
        }
    }
}

/// State shared by all requests.
#[derive(Debug)]
pub struct Shared {
    pub state: Mutex<State>,
    pub rv_tx: watch::Sender<u64>,
    pub requests: Mutex<Vec<RequestRecord>>,
    pub faults: Mutex<Vec<Fault>>,
    pub cfg: ServerConfig,
    pub cancel: CancellationToken,
    pub addr: SocketAddr,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// Runs a mutation and wakes the watchers.
    pub fn write<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let (out, rv) = {
            let mut st = lock(&self.state);
            let out = f(&mut st);
            (out, st.resource_version())
        };
        self.rv_tx.send_replace(rv);
        out
    }
}

/// The request log keeps at most this many entries (oldest dropped first).
const MAX_LOGGED_REQUESTS: usize = 200_000;

const BODY_LIMIT: usize = 3 * 1024 * 1024 + 64 * 1024;

fn json_response(code: u16, body: &Value) -> Response {
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn error_response(e: &ApiError) -> Response {
    json_response(e.code, &e.to_status())
}

fn reason_for(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        409 => "Conflict",
        410 => "Expired",
        422 => "Invalid",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "InternalError",
    }
}

/// The axum handler for every request.
pub async fn handle(AxState(shared): AxState<Arc<Shared>>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let headers = req.headers().clone();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let resp = match axum::body::to_bytes(req.into_body(), BODY_LIMIT).await {
        Ok(body) => dispatch(&shared, &method, &path, &query, &headers, body).await,
        Err(_) => error_response(&ApiError::new(
            413,
            "RequestEntityTooLarge",
            "the request body is too large",
        )),
    };
    tracing::debug!(%method, %path, %query, status = resp.status().as_u16(), "request");
    if shared.cfg.log_requests {
        let q = if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        };
        eprintln!(
            "fake-kube: {method} {path}{q} -> {}",
            resp.status().as_u16()
        );
    }
    let mut log = lock(&shared.requests);
    if log.len() >= MAX_LOGGED_REQUESTS {
        log.drain(..MAX_LOGGED_REQUESTS / 2);
    }
    log.push(RequestRecord {
        method: method.to_string(),
        path,
        query,
        status: resp.status().as_u16(),
        content_type,
    });
    drop(log);
    resp
}

async fn dispatch(
    shared: &Arc<Shared>,
    method: &Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(token) = &shared.cfg.required_token {
        let ok = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| t == token);
        if !ok {
            return error_response(&ApiError::unauthorized());
        }
    }
    {
        let mut faults = lock(&shared.faults);
        if let Some(f) = faults.iter_mut().find(|f| {
            f.times > 0
                && f.method.as_ref().is_none_or(|m| m == method)
                && path.contains(&f.path_contains)
        }) {
            f.times -= 1;
            let code = f.code;
            faults.retain(|f| f.times > 0);
            return error_response(&ApiError::new(
                code,
                reason_for(code),
                format!("injected failure ({code})"),
            ));
        }
    }
    let q: HashMap<String, String> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let aggregated = accept.contains("as=APIGroupDiscoveryList");
    let result = match (method, segs.as_slice()) {
        (&Method::GET, []) => Ok(json_response(200, &root_paths(shared))),
        (&Method::GET, ["version"]) => Ok(json_response(200, &version_info())),
        (&Method::GET, ["healthz" | "readyz" | "livez"]) => Ok(Response::new(Body::from("ok"))),
        (&Method::GET, ["_fake", "requests"]) => {
            let reqs = lock(&shared.requests).clone();
            Ok(json_response(200, &json!(reqs)))
        }
        (&Method::GET, ["_fake", "events"]) => {
            let st = lock(&shared.state);
            let evs: Vec<Value> = st.history().map(|e| event_record_json(e)).collect();
            Ok(json_response(200, &json!(evs)))
        }
        (&Method::GET, ["api"]) if aggregated => {
            Ok(aggregated_response(&discovery_aggregated(shared, true)))
        }
        (&Method::GET, ["api"]) => Ok(json_response(200, &api_versions(shared))),
        (&Method::GET, ["apis"]) if aggregated => {
            Ok(aggregated_response(&discovery_aggregated(shared, false)))
        }
        (&Method::GET, ["apis"]) => Ok(json_response(200, &api_group_list(shared))),
        (&Method::GET, ["api", v]) => resource_list(shared, "", v).map(|b| json_response(200, &b)),
        (&Method::GET, ["apis", g]) => api_group(shared, g).map(|b| json_response(200, &b)),
        (&Method::GET, ["apis", g, v]) => {
            resource_list(shared, g, v).map(|b| json_response(200, &b))
        }
        (_, ["api", v, rest @ ..]) if !rest.is_empty() => {
            resource_request(shared, method, "", v, rest, &q, headers, &body).await
        }
        (_, ["apis", g, v, rest @ ..]) if !rest.is_empty() => {
            resource_request(shared, method, g, v, rest, &q, headers, &body).await
        }
        (m, _) if *m != Method::GET => Err(ApiError::method_not_allowed()),
        _ => Err(ApiError::no_route()),
    };
    result.unwrap_or_else(|e| error_response(&e))
}

fn event_record_json(e: &HistEvent) -> Value {
    json!({
        "resourceVersion": e.rv,
        "type": e.kind.as_str(),
        "group": e.key.0,
        "resource": e.key.1,
        "namespace": e.namespace,
        "name": e.name,
        "object": *e.object,
    })
}

fn root_paths(shared: &Shared) -> Value {
    let st = lock(&shared.state);
    let mut paths = vec![
        "/api".to_string(),
        "/api/v1".into(),
        "/apis".into(),
        "/version".into(),
        "/healthz".into(),
    ];
    for (g, vs) in st.registry.groups() {
        paths.push(format!("/apis/{g}"));
        paths.extend(vs.iter().map(|v| format!("/apis/{g}/{v}")));
    }
    json!({ "paths": paths })
}

fn version_info() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0-fake",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-04-23T00:00:00Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

fn api_versions(shared: &Shared) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": shared.addr.to_string()}],
    })
}

fn group_json(g: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    let preferred = vs.first().cloned().unwrap_or(Value::Null);
    json!({"name": g, "versions": vs, "preferredVersion": preferred})
}

fn api_group_list(shared: &Shared) -> Value {
    let st = lock(&shared.state);
    let groups: Vec<Value> = st
        .registry
        .groups()
        .iter()
        .map(|(g, vs)| group_json(g, vs))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn api_group(shared: &Shared, g: &str) -> ApiResult<Value> {
    let st = lock(&shared.state);
    let groups = st.registry.groups();
    let vs = groups.get(g).ok_or_else(ApiError::no_route)?;
    let mut v = group_json(g, vs);
    v["kind"] = json!("APIGroup");
    v["apiVersion"] = json!("v1");
    Ok(v)
}

fn resource_list(shared: &Shared, g: &str, v: &str) -> ApiResult<Value> {
    let st = lock(&shared.state);
    let types: Vec<&ResourceType> = st
        .registry
        .all()
        .filter(|t| t.group == g && t.version == v)
        .collect();
    if types.is_empty() {
        return Err(ApiError::no_route());
    }
    let mut resources = Vec::new();
    for t in types {
        let mut r = json!({
            "name": t.plural,
            "singularName": t.singular,
            "namespaced": t.namespaced,
            "kind": t.kind,
            "verbs": ResourceType::verbs(),
        });
        if !t.short_names.is_empty() {
            r["shortNames"] = json!(t.short_names);
        }
        if !t.categories.is_empty() {
            r["categories"] = json!(t.categories);
        }
        resources.push(r);
        if t.status_subresource {
            resources.push(json!({
                "name": format!("{}/status", t.plural),
                "singularName": "",
                "namespaced": t.namespaced,
                "kind": t.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    let gv = if g.is_empty() {
        v.to_string()
    } else {
        format!("{g}/{v}")
    };
    Ok(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

fn discovery_aggregated(shared: &Shared, core: bool) -> Value {
    let st = lock(&shared.state);
    let mut groups: Vec<(String, Vec<String>)> = if core {
        vec![(String::new(), vec!["v1".to_string()])]
    } else {
        st.registry.groups().into_iter().collect()
    };
    groups.sort_by(|a, b| a.0.cmp(&b.0));
    let items: Vec<Value> = groups
        .iter()
        .map(|(g, vs)| {
            let mut vs = vs.clone();
            vs.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
            let versions: Vec<Value> = vs
                .iter()
                .map(|v| {
                    let resources: Vec<Value> = st
                        .registry
                        .all()
                        .filter(|t| &t.group == g && &t.version == v)
                        .map(|t| {
                            let kind =
                                json!({"group": t.group, "version": t.version, "kind": t.kind});
                            let mut r = json!({
                                "resource": t.plural,
                                "responseKind": kind,
                                "scope": if t.namespaced { "Namespaced" } else { "Cluster" },
                                "singularResource": t.singular,
                                "verbs": ResourceType::verbs(),
                            });
                            if !t.short_names.is_empty() {
                                r["shortNames"] = json!(t.short_names);
                            }
                            if !t.categories.is_empty() {
                                r["categories"] = json!(t.categories);
                            }
                            if t.status_subresource {
                                r["subresources"] = json!([{
                                    "subresource": "status",
                                    "responseKind": kind,
                                    "verbs": ["get", "patch", "update"],
                                }]);
                            }
                            r
                        })
                        .collect();
                    json!({"version": v, "resources": resources, "freshness": "Current"})
                })
                .collect();
            json!({"metadata": {"name": g}, "versions": versions})
        })
        .collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}

fn aggregated_response(body: &Value) -> Response {
    let mut resp = json_response(200, body);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
        ),
    );
    resp
}

/// Renders a stored object for the requested version (or as metadata only).
fn render(obj: &Value, rt: &ResourceType, meta_only: bool) -> Value {
    if meta_only {
        return json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
        });
    }
    let mut o = obj.clone();
    o["apiVersion"] = json!(rt.api_version());
    o["kind"] = json!(rt.kind);
    o
}

struct Target<'a> {
    rt: ResourceType,
    ns: Option<&'a str>,
    name: Option<&'a str>,
    status: bool,
    watch_path: bool,
}

fn resolve<'a>(
    shared: &Shared,
    group: &str,
    version: &str,
    rest: &[&'a str],
) -> ApiResult<Target<'a>> {
    let (watch_path, rest) = match rest {
        ["watch", tail @ ..] => (true, tail),
        _ => (false, rest),
    };
    let (ns, rest) = match rest {
        ["namespaces", ns, tail @ ..]
            if !tail.is_empty() && !matches!(tail[0], "status" | "finalize") =>
        {
            (Some(*ns), tail)
        }
        _ => (None, rest),
    };
    let (plural, name, sub) = match rest {
        [p] => (*p, None, None),
        [p, n] => (*p, Some(*n), None),
        [p, n, s] => (*p, Some(*n), Some(*s)),
        _ => return Err(ApiError::no_route()),
    };
    let rt = lock(&shared.state)
        .registry
        .get(group, version, plural)
        .cloned()
        .ok_or_else(ApiError::no_route)?;
    if ns.is_some() && !rt.namespaced {
        return Err(ApiError::no_route());
    }
    if ns.is_none() && rt.namespaced && name.is_some() {
        return Err(ApiError::no_route());
    }
    let status = match sub {
        None => false,
        Some("status") if rt.status_subresource => true,
        Some(_) => return Err(ApiError::no_route()),
    };
    if watch_path && status {
        return Err(ApiError::no_route());
    }
    Ok(Target {
        rt,
        ns,
        name,
        status,
        watch_path,
    })
}

fn parse_json(body: &[u8]) -> ApiResult<Value> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding request body: {e}")))
}

fn write_opts(q: &HashMap<String, String>) -> WriteOpts {
    WriteOpts {
        dry_run: q.get("dryRun").is_some_and(|v| v == "All"),
        field_manager: q.get("fieldManager").cloned(),
        strict_fields: q.get("fieldValidation").is_some_and(|v| v == "Strict"),
    }
}

fn selectors(
    rt: &ResourceType,
    q: &HashMap<String, String>,
) -> ApiResult<(LabelSelector, FieldSelector)> {
    let ls = LabelSelector::parse(q.get("labelSelector").map_or("", String::as_str))
        .map_err(ApiError::bad_request)?;
    let fs = FieldSelector::parse(
        q.get("fieldSelector").map_or("", String::as_str),
        &rt.field_labels,
    )
    .map_err(ApiError::bad_request)?;
    Ok((ls, fs))
}

#[allow(clippy::too_many_arguments)]
async fn resource_request(
    shared: &Arc<Shared>,
    method: &Method,
    group: &str,
    version: &str,
    rest: &[&str],
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<Response> {
    let t = resolve(shared, group, version, rest)?;
    let rt = &t.rt;
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let meta_only = accept.contains("as=PartialObjectMetadata");
    let ns = t.ns.unwrap_or_default();
    let is_watch = t.watch_path || q.get("watch").is_some_and(|w| w == "true" || w == "1");
    match (method, t.name) {
        (&Method::GET, Some(name)) if is_watch && !t.status => {
            watch_one(shared, &t, name, q, meta_only).await
        }
        (&Method::GET, Some(name)) => {
            let obj = lock(&shared.state).get(rt, ns, name)?;
            Ok(json_response(200, &render(&obj, rt, meta_only)))
        }
        (&Method::GET, None) if is_watch => {
            start_watch(shared, t.rt.clone(), t.ns.map(String::from), q, meta_only).await
        }
        (&Method::GET, None) => list_response(shared, &t, q, meta_only),
        (&Method::POST, None) if t.ns.is_some() || !rt.namespaced => {
            let obj = parse_json(body)?;
            let opts = write_opts(q);
            let created = shared.write(|st| st.create(rt, ns, obj, &opts))?;
            Ok(json_response(201, &render(&created, rt, meta_only)))
        }
        (&Method::PUT, Some(name)) => {
            let obj = parse_json(body)?;
            let opts = write_opts(q);
            let updated = shared.write(|st| st.replace(rt, ns, name, obj, t.status, &opts))?;
            Ok(json_response(200, &render(&updated, rt, meta_only)))
        }
        (&Method::PATCH, Some(name)) => {
            let kind = patch_kind(headers)?;
            let opts = write_opts(q);
            let (obj, created) =
                shared.write(|st| st.patch(rt, ns, name, kind, body, t.status, &opts))?;
            Ok(json_response(
                if created { 201 } else { 200 },
                &render(&obj, rt, meta_only),
            ))
        }
        (&Method::DELETE, name) => {
            let opts = delete_opts(q, body)?;
            if let Some(name) = name {
                if t.status {
                    return Err(ApiError::method_not_allowed());
                }
                delete_one(shared, rt, ns, name, &opts, meta_only)
            } else {
                delete_collection(shared, &t, q, &opts, meta_only)
            }
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// Watch of a single object: a watch with an implicit name selector.
async fn watch_one(
    shared: &Arc<Shared>,
    t: &Target<'_>,
    name: &str,
    q: &HashMap<String, String>,
    meta_only: bool,
) -> ApiResult<Response> {
    let mut q = q.clone();
    let by_name = format!("metadata.name={name}");
    let fs = match q.get("fieldSelector").filter(|f| !f.is_empty()) {
        Some(f) => format!("{f},{by_name}"),
        None => by_name,
    };
    q.insert("fieldSelector".into(), fs);
    start_watch(shared, t.rt.clone(), t.ns.map(String::from), &q, meta_only).await
}

/// GET of a collection (list).
fn list_response(
    shared: &Shared,
    t: &Target<'_>,
    q: &HashMap<String, String>,
    meta_only: bool,
) -> ApiResult<Response> {
    let rt = &t.rt;
    let (ls, fs) = selectors(rt, q)?;
    let limit = q.get("limit").and_then(|l| l.parse::<usize>().ok());
    // resourceVersion=0 is served from the watch cache, ignoring limit.
    let limit = if q.get("resourceVersion").is_some_and(|v| v == "0") {
        None
    } else {
        limit
    };
    let res = lock(&shared.state).list(
        rt,
        t.ns,
        &ls,
        &fs,
        limit,
        q.get("continue").map(String::as_str),
    )?;
    let items: Vec<Value> = res.items.iter().map(|o| render(o, rt, meta_only)).collect();
    let mut meta = json!({"resourceVersion": res.resource_version.to_string()});
    if let Some(c) = res.continue_token {
        meta["continue"] = json!(c);
    }
    if let Some(r) = res.remaining {
        meta["remainingItemCount"] = json!(r);
    }
    let (api_version, kind) = if meta_only {
        (
            "meta.k8s.io/v1".to_string(),
            "PartialObjectMetadataList".to_string(),
        )
    } else {
        (rt.api_version(), rt.list_kind.clone())
    };
    Ok(json_response(
        200,
        &json!({"kind": kind, "apiVersion": api_version, "metadata": meta, "items": items}),
    ))
}

/// The patch kind named by the request's `Content-Type`.
fn patch_kind(headers: &HeaderMap) -> ApiResult<PatchKind> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let ct_main = ct.split(';').next().unwrap_or_default().trim();
    match ct_main {
        "application/merge-patch+json" => Ok(PatchKind::Merge),
        "application/json-patch+json" => Ok(PatchKind::Json),
        "application/strategic-merge-patch+json" => Ok(PatchKind::Strategic),
        "application/apply-patch+yaml" => Ok(PatchKind::Apply),
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

/// Delete options from the query and the (optional) `DeleteOptions` body.
fn delete_opts(q: &HashMap<String, String>, body: &[u8]) -> ApiResult<DeleteOpts> {
    let mut opts = DeleteOpts {
        dry_run: q.get("dryRun").is_some_and(|v| v == "All"),
        propagation: q.get("propagationPolicy").cloned(),
        ..DeleteOpts::default()
    };
    if !body.is_empty() {
        let b = parse_json(body)?;
        if b.get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|x| x == "All"))
        {
            opts.dry_run = true;
        }
        if let Some(p) = b.get("propagationPolicy").and_then(Value::as_str) {
            opts.propagation = Some(p.to_string());
        }
        if b.get("orphanDependents") == Some(&json!(true)) && opts.propagation.is_none() {
            opts.propagation = Some("Orphan".into());
        }
        opts.precondition_uid = b
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(String::from);
        opts.precondition_rv = b
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(String::from);
    }
    Ok(opts)
}

/// DELETE of one object.
fn delete_one(
    shared: &Shared,
    rt: &ResourceType,
    ns: &str,
    name: &str,
    opts: &DeleteOpts,
    meta_only: bool,
) -> ApiResult<Response> {
    let out = shared.write(|st| st.delete(rt, ns, name, opts))?;
    if out.removed && !rt.returns_deleted_object() {
        let mut details =
            json!({"name": name, "kind": rt.plural, "uid": meta_str(&out.object, "uid")});
        if !rt.group.is_empty() {
            details["group"] = json!(rt.group);
        }
        return Ok(json_response(
            200,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}),
        ));
    }
    Ok(json_response(200, &render(&out.object, rt, meta_only)))
}

/// DELETE of a collection.
fn delete_collection(
    shared: &Shared,
    t: &Target<'_>,
    q: &HashMap<String, String>,
    opts: &DeleteOpts,
    meta_only: bool,
) -> ApiResult<Response> {
    let rt = &t.rt;
    let (ls, fs) = selectors(rt, q)?;
    let deleted = shared.write(|st| st.delete_collection(rt, t.ns, &ls, &fs, opts))?;
    let items: Vec<Value> = deleted.iter().map(|o| render(o, rt, meta_only)).collect();
    let rv = lock(&shared.state).resource_version();
    Ok(json_response(
        200,
        &json!({"kind": rt.list_kind, "apiVersion": rt.api_version(), "metadata": {"resourceVersion": rv.to_string()}, "items": items}),
    ))
}

struct WatchSpec {
    rt: ResourceType,
    ns: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
    meta_only: bool,
    bookmarks: bool,
}

impl WatchSpec {
    fn matches(&self, obj: &Value) -> bool {
        self.ns
            .as_deref()
            .is_none_or(|n| meta_str(obj, "namespace") == n)
            && self
                .labels
                .matches(obj.pointer("/metadata/labels").and_then(Value::as_object))
            && self.fields.matches(obj)
    }

    fn line(&self, kind: &str, obj: &Value) -> Bytes {
        let mut s =
            json!({"type": kind, "object": render(obj, &self.rt, self.meta_only)}).to_string();
        s.push('\n');
        Bytes::from(s)
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let (api_version, kind) = if self.meta_only {
            (
                "meta.k8s.io/v1".to_string(),
                "PartialObjectMetadata".to_string(),
            )
        } else {
            (self.rt.api_version(), self.rt.kind.clone())
        };
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let mut s = json!({"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": api_version, "metadata": meta}}).to_string();
        s.push('\n');
        Bytes::from(s)
    }

    /// The line for a history event, after selector transitions (None: filtered out).
    fn event_line(&self, e: &HistEvent) -> Option<Bytes> {
        let now = self.matches(&e.object);
        let before = e.prev.as_deref().is_some_and(|p| self.matches(p));
        let kind = match (e.kind, before, now) {
            (EventType::Added, _, true) | (EventType::Modified, false, true) => "ADDED",
            (EventType::Modified, true, true) => "MODIFIED",
            (EventType::Modified, true, false) => "DELETED",
            (EventType::Deleted, b, n) if b || n => "DELETED",
            _ => return None,
        };
        Some(self.line(kind, &e.object))
    }
}

fn error_line(e: &ApiError) -> Bytes {
    let mut s = json!({"type": "ERROR", "object": e.to_status()}).to_string();
    s.push('\n');
    Bytes::from(s)
}

async fn start_watch(
    shared: &Arc<Shared>,
    rt: ResourceType,
    ns: Option<String>,
    q: &HashMap<String, String>,
    meta_only: bool,
) -> ApiResult<Response> {
    let (labels, fields) = selectors(&rt, q)?;
    let flag = |k: &str| q.get(k).is_some_and(|v| v == "true" || v == "1");
    let bookmarks = flag("allowWatchBookmarks");
    let send_initial = flag("sendInitialEvents");
    if send_initial && !bookmarks {
        return Err(ApiError::invalid(
            "ListOptions.meta.k8s.io",
            "",
            "allowWatchBookmarks",
            "FieldValueForbidden",
            "Forbidden: allowWatchBookmarks required when sendInitialEvents is specified",
        ));
    }
    let timeout = match q.get("timeoutSeconds").and_then(|t| t.parse::<u64>().ok()) {
        Some(s) if s > 0 => Duration::from_secs(s),
        _ => shared.cfg.default_watch_timeout,
    };
    let rv_param = q
        .get("resourceVersion")
        .map(String::as_str)
        .unwrap_or_default();
    let from: Option<u64> = match rv_param {
        "" | "0" => None,
        s => Some(
            s.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {s}")))?,
        ),
    };
    // Like the watch cache: wait a little for a resourceVersion from the future.
    if let Some(n) = from {
        let mut rx = shared.rv_tx.subscribe();
        let waited =
            tokio::time::timeout(Duration::from_secs(3), rx.wait_for(|cur| *cur >= n)).await;
        if !matches!(waited, Ok(Ok(_))) {
            let cur = lock(&shared.state).resource_version();
            return Err(ApiError::new(504, "Timeout", format!("Too large resource version: {n}, current: {cur}"))
                .with_details(json!({"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}], "retryAfterSeconds": 1})));
        }
    }
    let spec = WatchSpec {
        rt,
        ns,
        labels,
        fields,
        meta_only,
        bookmarks,
    };
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let shared2 = shared.clone();
    tokio::spawn(async move {
        watch_loop(shared2, spec, from, send_initial, timeout, tx).await;
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

async fn watch_loop(
    shared: Arc<Shared>,
    spec: WatchSpec,
    from: Option<u64>,
    send_initial: bool,
    timeout: Duration,
    tx: mpsc::Sender<Bytes>,
) {
    let mut rv_rx = shared.rv_tx.subscribe();
    let key = spec.rt.storage_key();
    let mut lines = Vec::new();
    let start = {
        let st = lock(&shared.state);
        match from {
            Some(n) if !send_initial => st.events_since(&key, n).map(|_| n).map_err(|oldest| {
                ApiError::gone(format!("too old resource version: {n} ({oldest})"))
            }),
            _ => {
                for obj in st.objects_of(&key) {
                    if spec.matches(&obj) {
                        lines.push(spec.line("ADDED", &obj));
                    }
                }
                let cur = st.resource_version();
                if send_initial {
                    lines.push(spec.bookmark(cur, true));
                }
                Ok(cur)
            }
        }
    };
    let mut cursor = match start {
        Ok(c) => c,
        Err(e) => {
            let _ = tx.send(error_line(&e)).await;
            return;
        }
    };
    for l in lines.drain(..) {
        if tx.send(l).await.is_err() {
            return;
        }
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let interval = shared.cfg.bookmark_interval.max(Duration::from_millis(10));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    loop {
        let batch = {
            let st = lock(&shared.state);
            st.events_since(&key, cursor)
                .map(|evs| (evs, st.resource_version()))
        };
        match batch {
            Err(oldest) => {
                let _ = tx
                    .send(error_line(&ApiError::gone(format!(
                        "too old resource version: {cursor} ({oldest})"
                    ))))
                    .await;
                return;
            }
            Ok((evs, cur)) => {
                for e in evs {
                    if let Some(l) = spec.event_line(&e)
                        && tx.send(l).await.is_err()
                    {
                        return;
                    }
                }
                cursor = cur;
            }
        }
        tokio::select! {
            r = rv_rx.changed() => if r.is_err() { return },
            () = tokio::time::sleep_until(deadline) => {
                if spec.bookmarks {
                    let _ = tx.send(spec.bookmark(cursor, false)).await;
                }
                return;
            }
            _ = tick.tick(), if spec.bookmarks => {
                if tx.send(spec.bookmark(cursor, false)).await.is_err() {
                    return;
                }
            }
            () = tx.closed() => return,
            () = shared.cancel.cancelled() => return,
        }
    }
}
