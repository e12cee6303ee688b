//! The in-memory object store: objects, the global resourceVersion, the
//! watch-event history, and the write semantics of the real apiserver
//! (preconditions, status subresource, finalizers, garbage collection).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use base64::Engine as _;
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::error::{ApiError, ApiResult};
use crate::patch::{JsonPatchError, apply_merge, json_patch, merge_patch};
use crate::resources::{Registry, ResourceType, StoreKey, crd_status, crd_types};
use crate::schema;
use crate::selector::{FieldSelector, LabelSelector, valid_key, valid_label_value};

/// Type of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One change, as kept in the watch history.
#[derive(Debug, Clone)]
pub struct HistEvent {
    pub rv: u64,
    pub key: StoreKey,
    pub namespace: String,
    pub name: String,
    pub kind: EventType,
    /// The object after the change (for DELETED: its last state).
    pub object: Arc<Value>,
    /// The object before the change, if any.
    pub prev: Option<Arc<Value>>,
}

/// Options shared by create/update/patch.
#[derive(Debug, Clone, Default)]
pub struct WriteOpts {
    pub dry_run: bool,
    pub field_manager: Option<String>,
    /// `fieldValidation=Strict`: unknown fields are an error, not pruned.
    pub strict_fields: bool,
}

/// A `FieldValueForbidden` error of an update.
fn update_forbidden(rt: &ResourceType, name: &str, field: &str, msg: &str) -> ApiError {
    ApiError::invalid(
        &rt.kind_group(),
        name,
        field,
        "FieldValueForbidden",
        &format!("Forbidden: {msg}"),
    )
}

/// Options of a delete (query parameters and `DeleteOptions` body).
#[derive(Debug, Clone, Default)]
pub struct DeleteOpts {
    pub dry_run: bool,
    /// `Background` (default), `Foreground` or `Orphan`.
    pub propagation: Option<String>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
}

/// The patch content types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    Merge,
    Json,
    Strategic,
    Apply,
}

/// Knobs of the store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// How many watch events are kept for resuming watches.
    pub history_limit: usize,
    /// Delete objects whose owners are all absent, as the garbage collector does.
    pub orphan_gc: bool,
    /// Refuse to create namespaced objects in namespaces that do not exist.
    pub strict_namespaces: bool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            history_limit: 100_000,
            orphan_gc: true,
            strict_namespaces: false,
        }
    }
}

/// Result of a list.
#[derive(Debug)]
pub struct ListResult {
    pub items: Vec<Arc<Value>>,
    pub resource_version: u64,
    pub continue_token: Option<String>,
    pub remaining: Option<usize>,
}

type ObjMap = BTreeMap<(String, String), Arc<Value>>;

/// The whole state of the fake cluster.
#[derive(Debug)]
pub struct State {
    pub registry: Registry,
    objects: BTreeMap<StoreKey, ObjMap>,
    uids: HashMap<String, (StoreKey, String, String)>,
    rv: u64,
    history: VecDeque<Arc<HistEvent>>,
    compacted_rv: u64,
    /// Last applied configuration per (uid, field manager, status subresource).
    applied: HashMap<(String, String, bool), Value>,
    next_ip: u32,
    cfg: StoreConfig,
}

pub(crate) fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

pub(crate) fn meta_str<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get("metadata")
        .and_then(|m| m.get(key))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn meta_mut(v: &mut Value) -> &mut Map<String, Value> {
    if !v.get("metadata").is_some_and(Value::is_object) {
        v["metadata"] = json!({});
    }
    match v.get_mut("metadata") {
        Some(Value::Object(m)) => m,
        _ => unreachable!("metadata was just made an object"),
    }
}

fn finalizers(v: &Value) -> Vec<String> {
    v.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

fn set_finalizers(v: &mut Value, f: &[String]) {
    let m = meta_mut(v);
    if f.is_empty() {
        m.remove("finalizers");
    } else {
        m.insert("finalizers".into(), json!(f));
    }
}

fn owner_uids(v: &Value) -> Vec<String> {
    v.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|r| r.get("uid").and_then(Value::as_str))
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

fn is_deleting(v: &Value) -> bool {
    !meta_str(v, "deletionTimestamp").is_empty()
}

fn valid_subdomain(n: &str) -> bool {
    n.len() <= 253
        && n.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

fn valid_label_name(n: &str, must_start_alpha: bool) -> bool {
    n.len() <= 63
        && !n.is_empty()
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !n.starts_with('-')
        && !n.ends_with('-')
        && (!must_start_alpha || n.as_bytes()[0].is_ascii_lowercase())
}

const KNOWN_META: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
];

fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    uuid::Uuid::new_v4()
        .as_bytes()
        .iter()
        .take(5)
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect()
}

fn without(v: &Value, keys: &[&str]) -> Value {
    let mut c = v.clone();
    if let Some(m) = c.as_object_mut() {
        for k in keys {
            m.remove(*k);
        }
    }
    c
}

/// Outcome of a DELETE.
#[derive(Debug)]
pub struct DeleteOutcome {
    /// The object: its last state if removed, else with `deletionTimestamp` set.
    pub object: Arc<Value>,
    /// Whether it is gone.
    pub removed: bool,
}

impl State {
    pub fn new(extra: &[ResourceType], cfg: StoreConfig) -> Self {
        let mut s = Self {
            registry: Registry::with_builtins(extra),
            objects: BTreeMap::new(),
            uids: HashMap::new(),
            rv: 1,
            history: VecDeque::new(),
            compacted_rv: 0,
            applied: HashMap::new(),
            next_ip: 10,
            cfg,
        };
        if let Some(ns_type) = s.registry.get("", "v1", "namespaces").cloned() {
            for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
                let obj = json!({"metadata": {"name": ns}});
                // Cannot fail: valid names in an empty store.
                let _ = s.create(&ns_type, "", obj, &WriteOpts::default());
            }
        }
        s
    }

    /// The current (latest) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    fn bump(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn push_event(
        &mut self,
        kind: EventType,
        key: &StoreKey,
        ns: &str,
        name: &str,
        object: Arc<Value>,
        prev: Option<Arc<Value>>,
    ) {
        self.history.push_back(Arc::new(HistEvent {
            rv: self.rv,
            key: key.clone(),
            namespace: ns.to_string(),
            name: name.to_string(),
            kind,
            object,
            prev,
        }));
        while self.history.len() > self.cfg.history_limit {
            if let Some(e) = self.history.pop_front() {
                self.compacted_rv = e.rv;
            }
        }
    }

    /// Events of `key` with resourceVersion > `after`; `Err(oldest)` if some were compacted away.
    pub fn events_since(&self, key: &StoreKey, after: u64) -> Result<Vec<Arc<HistEvent>>, u64> {
        if after < self.compacted_rv {
            return Err(self.compacted_rv);
        }
        let idx = self.history.partition_point(|e| e.rv <= after);
        Ok(self
            .history
            .range(idx..)
            .filter(|e| &e.key == key)
            .cloned()
            .collect())
    }

    /// The whole retained history.
    pub fn history(&self) -> impl Iterator<Item = &Arc<HistEvent>> {
        self.history.iter()
    }

    /// Forgets the whole history: watches from any older resourceVersion get 410 Gone.
    pub fn compact(&mut self) {
        self.compacted_rv = self.rv;
        self.history.clear();
    }

    pub fn objects_of(&self, key: &StoreKey) -> Vec<Arc<Value>> {
        self.objects
            .get(key)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    fn lookup(&self, key: &StoreKey, ns: &str, name: &str) -> Option<Arc<Value>> {
        self.objects
            .get(key)
            .and_then(|m| m.get(&(ns.to_string(), name.to_string())))
            .cloned()
    }

    pub fn get(&self, rt: &ResourceType, ns: &str, name: &str) -> ApiResult<Arc<Value>> {
        self.lookup(&rt.storage_key(), ns, name)
            .ok_or_else(|| ApiError::not_found(rt.gr(), name))
    }

    /// Lists objects; `ns` None means all namespaces.
    pub fn list(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
        limit: Option<usize>,
        continue_token: Option<&str>,
    ) -> ApiResult<ListResult> {
        let mut list_rv = self.rv;
        let mut start: Option<(String, String)> = None;
        if let Some(tok) = continue_token.filter(|t| !t.is_empty()) {
            let bad = || {
                ApiError::bad_request(
                    "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
                )
            };
            let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(tok)
                .map_err(|_| bad())?;
            let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
            let rv = v.get("rv").and_then(Value::as_u64).ok_or_else(bad)?;
            if rv < self.compacted_rv {
                return Err(ApiError::gone(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                ));
            }
            list_rv = rv;
            let ns_ = v.get("ns").and_then(Value::as_str).unwrap_or_default();
            let name = v.get("name").and_then(Value::as_str).unwrap_or_default();
            start = Some((ns_.to_string(), name.to_string()));
        }
        let mut items = Vec::new();
        let mut last_key = None;
        let mut remaining = 0usize;
        if let Some(map) = self.objects.get(&rt.storage_key()) {
            let iter = map.iter().filter(|(k, _)| match &start {
                Some(s) => *k > s,
                None => true,
            });
            for ((ons, oname), obj) in iter {
                if ns.is_some_and(|n| n != ons) {
                    continue;
                }
                if !labels.matches(obj.pointer("/metadata/labels").and_then(Value::as_object))
                    || !fields.matches(obj)
                {
                    continue;
                }
                if limit.is_some_and(|l| l > 0 && items.len() >= l) {
                    remaining += 1;
                    continue;
                }
                last_key = Some((ons.clone(), oname.clone()));
                items.push(obj.clone());
            }
        }
        let continue_token = if remaining > 0 {
            last_key.map(|(n, name)| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(json!({"rv": list_rv, "ns": n, "name": name}).to_string())
            })
        } else {
            None
        };
        Ok(ListResult {
            items,
            resource_version: list_rv,
            continue_token,
            remaining: (remaining > 0).then_some(remaining),
        })
    }

    fn check_type_meta(rt: &ResourceType, obj: &mut Value, required: bool) -> ApiResult<()> {
        let Some(m) = obj.as_object_mut() else {
            return Err(ApiError::bad_request(
                "the body of the request must be a JSON object",
            ));
        };
        let api_version = rt.api_version();
        match m.get("apiVersion").and_then(Value::as_str) {
            Some(v) if !v.is_empty() && v != api_version => {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({v}) does not match the expected API version ({api_version})"
                )));
            }
            Some(v) if !v.is_empty() => {}
            _ if required => {
                return Err(ApiError::bad_request(format!(
                    "Object 'apiVersion' is missing in '{}'",
                    Value::Object(m.clone())
                )));
            }
            _ => {}
        }
        match m.get("kind").and_then(Value::as_str) {
            Some(k) if !k.is_empty() && k != rt.kind => {
                return Err(ApiError::bad_request(format!(
                    "the kind in the data ({k}) does not match the expected kind ({})",
                    rt.kind
                )));
            }
            Some(k) if !k.is_empty() => {}
            _ if required => {
                return Err(ApiError::bad_request(format!(
                    "Object 'Kind' is missing in '{}'",
                    Value::Object(m.clone())
                )));
            }
            _ => {}
        }
        m.insert("apiVersion".into(), json!(api_version));
        m.insert("kind".into(), json!(rt.kind));
        Ok(())
    }

    fn check_namespace(rt: &ResourceType, obj: &mut Value, ns: &str) -> ApiResult<()> {
        let m = meta_mut(obj);
        if rt.namespaced {
            let body_ns = m
                .get("namespace")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if !body_ns.is_empty() && body_ns != ns {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            m.insert("namespace".into(), json!(ns));
        } else {
            m.remove("namespace");
        }
        Ok(())
    }

    fn check_name(obj: &mut Value, name: &str) -> ApiResult<()> {
        let m = meta_mut(obj);
        match m.get("name").and_then(Value::as_str) {
            Some(n) if !n.is_empty() && n != name => Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            ))),
            _ => {
                m.insert("name".into(), json!(name));
                Ok(())
            }
        }
    }

    /// POST: creates an object.
    pub fn create(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        mut obj: Value,
        opts: &WriteOpts,
    ) -> ApiResult<Arc<Value>> {
        Self::check_type_meta(rt, &mut obj, false)?;
        Self::check_namespace(rt, &mut obj, ns)?;
        if !meta_str(&obj, "resourceVersion").is_empty() {
            return Err(ApiError::new(
                500,
                "InternalError",
                "resourceVersion should not be set on objects to be created",
            ));
        }
        let key = rt.storage_key();
        if self.cfg.strict_namespaces
            && rt.namespaced
            && self
                .lookup(&(String::new(), "namespaces".into()), "", ns)
                .is_none()
        {
            return Err(ApiError::not_found(
                crate::error::GroupResource {
                    group: "",
                    resource: "namespaces",
                },
                ns,
            ));
        }
        let mut name = meta_str(&obj, "name").to_string();
        if name.is_empty() {
            let prefix = meta_str(&obj, "generateName").to_string();
            if prefix.is_empty() {
                return Err(ApiError::invalid(
                    &rt.kind_group(),
                    "",
                    "metadata.name",
                    "FieldValueRequired",
                    "Required value: name or generateName is required",
                ));
            }
            let prefix: String = prefix.chars().take(58).collect();
            // Like the real server (RetryGenerateName), retry on collisions.
            for _ in 0..8 {
                name = format!("{prefix}{}", random_suffix());
                if self.lookup(&key, ns, &name).is_none() {
                    break;
                }
            }
            meta_mut(&mut obj).insert("name".into(), json!(name));
        }
        Self::validate_name(rt, &name)?;
        if self.lookup(&key, ns, &name).is_some() {
            return Err(ApiError::already_exists(rt.gr(), &name));
        }
        let now = now();
        {
            let m = meta_mut(&mut obj);
            m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            m.insert("creationTimestamp".into(), json!(now));
            for k in [
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "resourceVersion",
                "generation",
            ] {
                m.remove(k);
            }
            if rt.tracks_generation() {
                m.insert("generation".into(), json!(1));
            }
        }
        if rt.status_subresource
            && let Some(o) = obj.as_object_mut()
        {
            o.remove("status");
        }
        self.create_defaults(rt, &mut obj, &now);
        Self::normalize(rt, &mut obj, opts)?;
        if rt.is_crd() {
            crd_types(&obj)?;
            obj["status"] = crd_status(&obj, &now);
        }
        if opts.dry_run {
            return Ok(Arc::new(obj));
        }
        let rv = self.bump();
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(rv.to_string()));
        let uid = meta_str(&obj, "uid").to_string();
        let arc = Arc::new(obj);
        self.objects
            .entry(key.clone())
            .or_default()
            .insert((ns.to_string(), name.clone()), arc.clone());
        self.uids
            .insert(uid, (key.clone(), ns.to_string(), name.clone()));
        self.push_event(EventType::Added, &key, ns, &name, arc.clone(), None);
        if rt.is_crd() {
            self.registry.register_crd(&arc)?;
        }
        self.collect_if_orphaned(&key, ns, &name);
        Ok(arc)
    }

    fn validate_name(rt: &ResourceType, name: &str) -> ApiResult<()> {
        let (ok, why) = if rt.group.is_empty() && rt.plural == "namespaces" {
            (
                valid_label_name(name, false),
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
            )
        } else if rt.group.is_empty() && rt.plural == "services" {
            (
                valid_label_name(name, true),
                "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character",
            )
        } else {
            (
                valid_subdomain(name),
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
            )
        };
        if ok {
            Ok(())
        } else {
            Err(ApiError::invalid(
                &rt.kind_group(),
                name,
                "metadata.name",
                "FieldValueInvalid",
                &format!("Invalid value: \"{name}\": {why}"),
            ))
        }
    }

    /// Defaults the real server's registries set on create.
    fn create_defaults(&mut self, rt: &ResourceType, obj: &mut Value, now: &str) {
        let _ = now;
        if !rt.group.is_empty() {
            if rt.group == "storage.k8s.io" && rt.plural == "storageclasses" {
                let o = obj.as_object_mut();
                if let Some(o) = o {
                    o.entry("reclaimPolicy").or_insert(json!("Delete"));
                    o.entry("volumeBindingMode").or_insert(json!("Immediate"));
                }
            }
            if rt.is_crd()
                && obj.pointer("/spec/conversion").is_none()
                && obj.get("spec").is_some_and(Value::is_object)
            {
                obj["spec"]["conversion"] = json!({"strategy": "None"});
            }
            return;
        }
        let ensure_obj = |obj: &mut Value, k: &str| {
            if !obj.get(k).is_some_and(Value::is_object) {
                obj[k] = json!({});
            }
        };
        match rt.plural.as_str() {
            "namespaces" => {
                ensure_obj(obj, "spec");
                obj["spec"]["finalizers"] = json!(["kubernetes"]);
                obj["status"] = json!({"phase": "Active"});
            }
            "pods" => {
                obj["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
            }
            "persistentvolumeclaims" | "persistentvolumes" => {
                obj["status"] = json!({"phase": "Pending"});
            }
            "services" => {
                ensure_obj(obj, "spec");
                let ty = obj["spec"]
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("ClusterIP")
                    .to_string();
                let ip = obj["spec"]
                    .get("clusterIP")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                if ty != "ExternalName" {
                    let ip = if ip.is_empty() {
                        let n = self.next_ip;
                        self.next_ip += 1;
                        format!("10.96.{}.{}", n / 256, n % 256)
                    } else {
                        ip
                    };
                    if let Some(spec) = obj["spec"].as_object_mut() {
                        spec.insert("clusterIP".into(), json!(ip));
                        spec.insert("clusterIPs".into(), json!([ip]));
                        spec.entry("ipFamilies").or_insert(json!(["IPv4"]));
                        spec.entry("ipFamilyPolicy").or_insert(json!("SingleStack"));
                        spec.entry("internalTrafficPolicy")
                            .or_insert(json!("Cluster"));
                    }
                }
                obj["status"] = json!({"loadBalancer": {}});
            }
            _ => {}
        }
    }

    /// Defaults the real server applies when decoding any write (create or update).
    fn spec_defaults(rt: &ResourceType, obj: &mut Value) {
        if !rt.group.is_empty() {
            return;
        }
        let spec = match obj.get_mut("spec").and_then(Value::as_object_mut) {
            Some(s) => s,
            None if matches!(
                rt.plural.as_str(),
                "pods" | "services" | "persistentvolumeclaims" | "persistentvolumes"
            ) =>
            {
                obj["spec"] = json!({});
                match obj.get_mut("spec").and_then(Value::as_object_mut) {
                    Some(s) => s,
                    None => return,
                }
            }
            None => return,
        };
        match rt.plural.as_str() {
            "pods" => {
                for (k, v) in [
                    ("restartPolicy", json!("Always")),
                    ("dnsPolicy", json!("ClusterFirst")),
                    ("schedulerName", json!("default-scheduler")),
                    ("terminationGracePeriodSeconds", json!(30)),
                    ("securityContext", json!({})),
                    ("enableServiceLinks", json!(true)),
                    ("preemptionPolicy", json!("PreemptLowerPriority")),
                    ("priority", json!(0)),
                ] {
                    spec.entry(k).or_insert(v);
                }
                for list in ["containers", "initContainers"] {
                    if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
                        for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                            let image = c.get("image").and_then(Value::as_str).unwrap_or_default();
                            let tag = image.rsplit('/').next().unwrap_or_default();
                            let policy = if !tag.contains(':') || tag.ends_with(":latest") {
                                "Always"
                            } else {
                                "IfNotPresent"
                            };
                            c.entry("imagePullPolicy").or_insert(json!(policy));
                            c.entry("terminationMessagePath")
                                .or_insert(json!("/dev/termination-log"));
                            c.entry("terminationMessagePolicy").or_insert(json!("File"));
                            c.entry("resources").or_insert(json!({}));
                        }
                    }
                }
            }
            "persistentvolumeclaims" => {
                spec.entry("volumeMode").or_insert(json!("Filesystem"));
            }
            "persistentvolumes" => {
                spec.entry("volumeMode").or_insert(json!("Filesystem"));
                spec.entry("persistentVolumeReclaimPolicy")
                    .or_insert(json!("Retain"));
            }
            "services" => {
                spec.entry("type").or_insert(json!("ClusterIP"));
                spec.entry("sessionAffinity").or_insert(json!("None"));
                if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                        p.entry("protocol").or_insert(json!("TCP"));
                        if let Some(port) = p.get("port").cloned() {
                            p.entry("targetPort").or_insert(port);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// Normalisation done on every write: metadata round trip, type
    /// defaults, and (for custom resources) schema pruning/defaulting/validation.
    fn normalize(rt: &ResourceType, obj: &mut Value, opts: &WriteOpts) -> ApiResult<()> {
        let name = meta_str(obj, "name").to_string();
        {
            let m = meta_mut(obj);
            m.retain(|k, v| KNOWN_META.contains(&k.as_str()) && !is_empty_value(v));
        }
        for field in ["labels", "annotations"] {
            if let Some(map) = obj.pointer(&format!("/metadata/{field}")) {
                let Some(map) = map.as_object() else {
                    return Err(ApiError::bad_request(format!(
                        "metadata.{field} must be a map of strings"
                    )));
                };
                for (k, v) in map {
                    let Some(s) = v.as_str() else {
                        return Err(ApiError::bad_request(format!(
                            "metadata.{field}.{k} must be a string"
                        )));
                    };
                    if field == "labels" && !valid_label_value(s) {
                        return Err(ApiError::invalid(
                            &rt.kind_group(),
                            &name,
                            "metadata.labels",
                            "FieldValueInvalid",
                            &format!(
                                "Invalid value: \"{s}\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
                            ),
                        ));
                    }
                    if !valid_key(k) {
                        return Err(ApiError::invalid(
                            &rt.kind_group(),
                            &name,
                            &format!("metadata.{field}"),
                            "FieldValueInvalid",
                            &format!(
                                "Invalid value: \"{k}\": name part must consist of alphanumeric characters, '-', '_' or '.'"
                            ),
                        ));
                    }
                }
            }
        }
        if rt.is_namespace() {
            let m = meta_mut(obj);
            if !m.get("labels").is_some_and(Value::is_object) {
                m.insert("labels".into(), json!({}));
            }
            m["labels"]["kubernetes.io/metadata.name"] = json!(name);
        }
        if !rt.custom {
            strip_nulls(obj);
            Self::spec_defaults(rt, obj);
        }
        if rt.group.is_empty() && rt.plural == "secrets" {
            if let Some(Value::Object(sd)) =
                obj.as_object_mut().and_then(|o| o.remove("stringData"))
            {
                if !obj.get("data").is_some_and(Value::is_object) {
                    obj["data"] = json!({});
                }
                for (k, v) in sd {
                    let s = v.as_str().unwrap_or_default();
                    obj["data"][k] =
                        json!(base64::engine::general_purpose::STANDARD.encode(s.as_bytes()));
                }
            }
            if let Some(o) = obj.as_object_mut() {
                o.entry("type").or_insert(json!("Opaque"));
            }
        }
        if let Some(schema) = rt.schema.as_ref().filter(|_| rt.custom) {
            let pruned = schema::prune(obj, schema);
            if opts.strict_fields && !pruned.is_empty() {
                let list: Vec<String> = pruned
                    .iter()
                    .map(|p| format!("unknown field \"{p}\""))
                    .collect();
                return Err(ApiError::bad_request(format!(
                    "strict decoding error: {}",
                    list.join(", ")
                )));
            }
            schema::apply_defaults(obj, schema);
            let causes = schema::validate(obj, schema);
            if !causes.is_empty() {
                return Err(ApiError::invalid_many(&rt.kind_group(), &name, &causes));
            }
        }
        Ok(())
    }

    /// Update validation of the real registries that controllers can trip on.
    fn validate_update(rt: &ResourceType, cur: &Value, new: &mut Value) -> ApiResult<()> {
        let name = meta_str(cur, "name").to_string();
        if is_deleting(cur) {
            let old = finalizers(cur);
            let added: Vec<String> = finalizers(new)
                .into_iter()
                .filter(|f| !old.contains(f))
                .collect();
            if !added.is_empty() {
                let list: Vec<String> = added.iter().map(|f| format!("{f:?}")).collect();
                return Err(update_forbidden(
                    rt,
                    &name,
                    "metadata.finalizers",
                    &format!(
                        "no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
                        list.join(", ")
                    ),
                ));
            }
        }
        if !rt.group.is_empty() {
            return Ok(());
        }
        match rt.plural.as_str() {
            "secrets" | "configmaps" => Self::validate_data_update(rt, &name, cur, new),
            "persistentvolumeclaims" => Self::validate_pvc_update(rt, &name, cur, new),
            "pods" => Self::validate_pod_update(rt, &name, cur, new),
            "services" => Self::validate_service_update(rt, &name, cur, new),
            _ => Ok(()),
        }
    }

    /// Secrets and config maps: `immutable` ones keep their data; a secret keeps its type.
    fn validate_data_update(
        rt: &ResourceType,
        name: &str,
        cur: &Value,
        new: &Value,
    ) -> ApiResult<()> {
        if cur.get("immutable") == Some(&json!(true)) {
            if new.get("immutable") != Some(&json!(true)) {
                return Err(update_forbidden(
                    rt,
                    name,
                    "immutable",
                    "field is immutable when `immutable` is set",
                ));
            }
            for f in ["data", "binaryData"] {
                if cur.get(f) != new.get(f) {
                    return Err(update_forbidden(
                        rt,
                        name,
                        f,
                        "field is immutable when `immutable` is set",
                    ));
                }
            }
        }
        if rt.plural == "secrets" && cur.get("type") != new.get("type") {
            return Err(ApiError::invalid(
                &rt.kind_group(),
                name,
                "type",
                "FieldValueInvalid",
                "Invalid value: field is immutable",
            ));
        }
        Ok(())
    }

    /// Persistent volume claims: the spec is immutable but for a few fields.
    fn validate_pvc_update(
        rt: &ResourceType,
        name: &str,
        cur: &Value,
        new: &Value,
    ) -> ApiResult<()> {
        let mut a = cur.get("spec").cloned().unwrap_or(Value::Null);
        let mut b = new.get("spec").cloned().unwrap_or(Value::Null);
        for s in [&mut a, &mut b] {
            if let Some(o) = s.as_object_mut() {
                o.remove("volumeAttributesClassName");
                if let Some(r) = o.get_mut("resources").and_then(Value::as_object_mut) {
                    r.remove("requests");
                }
            }
        }
        if a.get("volumeName").is_none()
            && let (Some(o), Some(v)) = (a.as_object_mut(), b.get("volumeName"))
        {
            o.insert("volumeName".into(), v.clone());
        }
        if a != b {
            return Err(update_forbidden(
                rt,
                name,
                "spec",
                "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
            ));
        }
        Ok(())
    }

    /// Pods: the spec is immutable but for images, deadlines and tolerations.
    fn validate_pod_update(
        rt: &ResourceType,
        name: &str,
        cur: &Value,
        new: &Value,
    ) -> ApiResult<()> {
        let strip = |s: &Value| {
            let mut s = s.clone();
            if let Some(o) = s.as_object_mut() {
                for k in [
                    "activeDeadlineSeconds",
                    "tolerations",
                    "terminationGracePeriodSeconds",
                ] {
                    o.remove(k);
                }
                for list in ["containers", "initContainers"] {
                    if let Some(cs) = o.get_mut(list).and_then(Value::as_array_mut) {
                        for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                            c.remove("image");
                        }
                    }
                }
            }
            s
        };
        let a = strip(cur.get("spec").unwrap_or(&Value::Null));
        let b = strip(new.get("spec").unwrap_or(&Value::Null));
        if a != b {
            return Err(update_forbidden(
                rt,
                name,
                "spec",
                "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
            ));
        }
        Ok(())
    }

    /// Services: allocated values are kept; the cluster IP cannot change.
    fn validate_service_update(
        rt: &ResourceType,
        name: &str,
        cur: &Value,
        new: &mut Value,
    ) -> ApiResult<()> {
        // Like patchAllocatedValues: an update without clusterIP keeps the allocated one.
        for f in [
            "clusterIP",
            "clusterIPs",
            "ipFamilies",
            "ipFamilyPolicy",
            "internalTrafficPolicy",
        ] {
            if let Some(v) = cur.pointer(&format!("/spec/{f}"))
                && new.pointer(&format!("/spec/{f}")).is_none()
                && new.get("spec").is_some_and(Value::is_object)
            {
                new["spec"][f] = v.clone();
            }
        }
        let old_ip = cur.pointer("/spec/clusterIP");
        if old_ip.is_some() && new.pointer("/spec/clusterIP") != old_ip {
            return Err(ApiError::invalid(
                &rt.kind_group(),
                name,
                "spec.clusterIPs[0]",
                "FieldValueInvalid",
                "Invalid value: may not change once set",
            ));
        }
        Ok(())
    }

    /// PUT: replaces an object (or its status).
    pub fn replace(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        mut body: Value,
        status: bool,
        opts: &WriteOpts,
    ) -> ApiResult<Arc<Value>> {
        Self::check_type_meta(rt, &mut body, false)?;
        Self::check_name(&mut body, name)?;
        Self::check_namespace(rt, &mut body, ns)?;
        let cur = self.get(rt, ns, name)?;
        if meta_str(&body, "resourceVersion").is_empty() && !rt.allow_unconditional_update() {
            return Err(ApiError::invalid(
                &rt.kind_group(),
                name,
                "metadata.resourceVersion",
                "FieldValueInvalid",
                "Invalid value: 0x0: must be specified for an update",
            ));
        }
        let new = if status {
            Self::status_only(&cur, &body)
        } else {
            Self::main_only(rt, &cur, body)
        };
        self.finish_update(rt, ns, name, &cur, new, opts)
    }

    /// The current object with only `.status` (and the rv precondition) from `desired`.
    fn status_only(cur: &Value, desired: &Value) -> Value {
        let mut n = cur.clone();
        if let Some(o) = n.as_object_mut() {
            match desired.get("status") {
                Some(s) => {
                    o.insert("status".into(), s.clone());
                }
                None => {
                    o.remove("status");
                }
            }
        }
        let rv = meta_str(desired, "resourceVersion").to_string();
        let m = meta_mut(&mut n);
        if rv.is_empty() {
            m.remove("resourceVersion");
        } else {
            m.insert("resourceVersion".into(), json!(rv));
        }
        n
    }

    /// `desired` with `.status` reset to the current one when status is a subresource.
    fn main_only(rt: &ResourceType, cur: &Value, mut desired: Value) -> Value {
        if rt.status_subresource
            && let Some(o) = desired.as_object_mut()
        {
            match cur.get("status") {
                Some(s) => {
                    o.insert("status".into(), s.clone());
                }
                None => {
                    o.remove("status");
                }
            }
        }
        desired
    }

    fn finish_update(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        cur: &Arc<Value>,
        mut new: Value,
        opts: &WriteOpts,
    ) -> ApiResult<Arc<Value>> {
        let cur_rv = meta_str(cur, "resourceVersion").to_string();
        let new_rv = meta_str(&new, "resourceVersion");
        if !new_rv.is_empty() && new_rv != cur_rv {
            return Err(ApiError::conflict(rt.gr(), name));
        }
        let new_uid = meta_str(&new, "uid");
        let cur_uid = meta_str(cur, "uid");
        if !new_uid.is_empty() && new_uid != cur_uid {
            return Err(ApiError::conflict_msg(
                rt.gr(),
                name,
                &format!(
                    "Precondition failed: UID in precondition: {new_uid}, UID in object meta: {cur_uid}"
                ),
            ));
        }
        {
            let m = meta_mut(&mut new);
            for k in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ] {
                match cur.get("metadata").and_then(|cm| cm.get(k)) {
                    Some(v) => {
                        m.insert(k.into(), v.clone());
                    }
                    None => {
                        m.remove(k);
                    }
                }
            }
            m.insert("name".into(), json!(name));
            if rt.namespaced {
                m.insert("namespace".into(), json!(ns));
            } else {
                m.remove("namespace");
            }
            m.remove("generateName");
            if let Some(g) = cur.pointer("/metadata/generateName") {
                m.insert("generateName".into(), g.clone());
            }
        }
        new["apiVersion"] = json!(rt.api_version());
        new["kind"] = json!(rt.kind);
        Self::normalize(rt, &mut new, opts)?;
        Self::validate_update(rt, cur, &mut new)?;
        if rt.is_crd() {
            crd_types(&new)?;
            let created = meta_str(cur, "creationTimestamp").to_string();
            let mut status = crd_status(&new, &created);
            if let Some(old_status) = cur.get("status") {
                status["storedVersions"] = crd_status(&new, &created)["storedVersions"].clone();
                if let Some(c) = old_status.get("conditions") {
                    status["conditions"] = c.clone();
                }
            }
            new["status"] = status;
        }
        if rt.tracks_generation() {
            let skip: &[&str] = if rt.status_subresource {
                &["metadata", "status"]
            } else {
                &["metadata"]
            };
            if without(cur, skip) != without(&new, skip) {
                let g = cur
                    .pointer("/metadata/generation")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                meta_mut(&mut new).insert("generation".into(), json!(g + 1));
            }
        }
        meta_mut(&mut new).insert("resourceVersion".into(), json!(cur_rv));
        if new == **cur {
            // A no-op write: no new resourceVersion, no watch event.
            return Ok(cur.clone());
        }
        if opts.dry_run {
            return Ok(Arc::new(new));
        }
        let key = rt.storage_key();
        if is_deleting(&new) && finalizers(&new).is_empty() {
            return Ok(self.remove(&key, ns, name, new));
        }
        Ok(self.store_modified(&key, ns, name, cur, new))
    }

    fn store_modified(
        &mut self,
        key: &StoreKey,
        ns: &str,
        name: &str,
        cur: &Arc<Value>,
        mut new: Value,
    ) -> Arc<Value> {
        let rv = self.bump();
        meta_mut(&mut new).insert("resourceVersion".into(), json!(rv.to_string()));
        let arc = Arc::new(new);
        self.objects
            .entry(key.clone())
            .or_default()
            .insert((ns.to_string(), name.to_string()), arc.clone());
        self.push_event(
            EventType::Modified,
            key,
            ns,
            name,
            arc.clone(),
            Some(cur.clone()),
        );
        if key.0 == "apiextensions.k8s.io" && key.1 == "customresourcedefinitions" {
            // Validated before storing.
            let _ = self.registry.register_crd(&arc);
        }
        if owner_uids(cur) != owner_uids(&arc) {
            self.collect_if_orphaned(key, ns, name);
        }
        arc
    }

    /// PATCH: merge, JSON, strategic-merge (as merge) or apply patch.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        kind: PatchKind,
        body: &[u8],
        status: bool,
        opts: &WriteOpts,
    ) -> ApiResult<(Arc<Value>, bool)> {
        match kind {
            PatchKind::Apply => return self.apply(rt, ns, name, body, status, opts),
            PatchKind::Strategic if rt.custom => {
                return Err(ApiError::unsupported_media_type(
                    "application/strategic-merge-patch+json",
                ));
            }
            _ => {}
        }
        let patch: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
        let cur = self.get(rt, ns, name)?;
        let mut doc = (*cur).clone();
        doc["apiVersion"] = json!(rt.api_version());
        if kind == PatchKind::Json {
            json_patch(&mut doc, &patch).map_err(|e| match e {
                JsonPatchError::Malformed(m) => ApiError::bad_request(m),
                JsonPatchError::Failed(m) => ApiError::unprocessable_patch(&m),
            })?;
        } else {
            if !patch.is_object() {
                return Err(ApiError::bad_request(
                    "error decoding patch: a merge patch must be a JSON object",
                ));
            }
            merge_patch(&mut doc, &patch);
        }
        if !doc.is_object() {
            return Err(ApiError::bad_request(
                "the patched object is not a JSON object",
            ));
        }
        Self::check_name(&mut doc, name)?;
        Self::check_namespace(rt, &mut doc, ns)?;
        let new = if status {
            Self::status_only(&cur, &doc)
        } else {
            Self::main_only(rt, &cur, doc)
        };
        self.finish_update(rt, ns, name, &cur, new, opts)
            .map(|o| (o, false))
    }

    fn apply(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        body: &[u8],
        status: bool,
        opts: &WriteOpts,
    ) -> ApiResult<(Arc<Value>, bool)> {
        let manager = opts
            .field_manager
            .clone()
            .filter(|m| !m.is_empty())
            .ok_or_else(|| {
                ApiError::invalid(
                    "PatchOptions.meta.k8s.io",
                    "",
                    "fieldManager",
                    "FieldValueRequired",
                    "Required value: is required for apply patch",
                )
            })?;
        let mut applied: Value = serde_yaml::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
        Self::check_type_meta(rt, &mut applied, true)?;
        Self::check_name(&mut applied, name)?;
        if rt.namespaced {
            let body_ns = meta_str(&applied, "namespace");
            if !body_ns.is_empty() && body_ns != ns {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
        }
        let Some(cur) = self.lookup(&rt.storage_key(), ns, name) else {
            if status {
                return Err(ApiError::not_found(rt.gr(), name));
            }
            let mut fresh = applied.clone();
            meta_mut(&mut fresh).remove("resourceVersion");
            let created = self.create(rt, ns, fresh, opts)?;
            let uid = meta_str(&created, "uid").to_string();
            if !opts.dry_run && self.uids.contains_key(&uid) {
                self.applied.insert((uid, manager, false), applied);
            }
            return Ok((created, true));
        };
        let uid = meta_str(&cur, "uid").to_string();
        let prev = self
            .applied
            .get(&(uid.clone(), manager.clone(), status))
            .cloned();
        let new = if status {
            let pick = |v: &Value| json!({"status": v.get("status").cloned().unwrap_or(json!({}))});
            let mut st = pick(&cur);
            apply_merge(&mut st, &pick(&applied), prev.as_ref().map(pick).as_ref());
            let mut n = Self::status_only(&cur, &st);
            if let Some(rv) = applied.pointer("/metadata/resourceVersion") {
                meta_mut(&mut n).insert("resourceVersion".into(), rv.clone());
            } else {
                meta_mut(&mut n).insert(
                    "resourceVersion".into(),
                    json!(meta_str(&cur, "resourceVersion")),
                );
            }
            n
        } else {
            let mut doc = (*cur).clone();
            apply_merge(&mut doc, &applied, prev.as_ref());
            Self::main_only(rt, &cur, doc)
        };
        let out = self.finish_update(rt, ns, name, &cur, new, opts)?;
        if !opts.dry_run && self.uids.contains_key(&uid) {
            self.applied.insert((uid, manager, status), applied);
        }
        Ok((out, false))
    }

    /// DELETE of one object.
    pub fn delete(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        opts: &DeleteOpts,
    ) -> ApiResult<DeleteOutcome> {
        let cur = self.get(rt, ns, name)?;
        if let Some(p) = opts.precondition_uid.as_deref().filter(|p| !p.is_empty()) {
            let uid = meta_str(&cur, "uid");
            if p != uid {
                return Err(ApiError::conflict_msg(
                    rt.gr(),
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {p}, UID in object meta: {uid}"
                    ),
                ));
            }
        }
        if let Some(p) = opts.precondition_rv.as_deref().filter(|p| !p.is_empty()) {
            let rv = meta_str(&cur, "resourceVersion");
            if p != rv {
                return Err(ApiError::conflict_msg(
                    rt.gr(),
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {p}, ResourceVersion in object meta: {rv}"
                    ),
                ));
            }
        }
        if opts.dry_run {
            let removed = finalizers(&cur).is_empty();
            return Ok(DeleteOutcome {
                object: cur,
                removed,
            });
        }
        let propagation = opts.propagation.as_deref().unwrap_or("Background");
        if !matches!(propagation, "Background" | "Foreground" | "Orphan") {
            return Err(ApiError::invalid(
                "DeleteOptions.meta.k8s.io",
                "",
                "propagationPolicy",
                "FieldValueNotSupported",
                &format!(
                    "Unsupported value: \"{propagation}\": supported values: \"Foreground\", \"Background\", \"Orphan\""
                ),
            ));
        }
        Ok(self.delete_internal(&rt.storage_key(), ns, name, propagation))
    }

    fn delete_internal(
        &mut self,
        key: &StoreKey,
        ns: &str,
        name: &str,
        propagation: &str,
    ) -> DeleteOutcome {
        let Some(cur) = self.lookup(key, ns, name) else {
            return DeleteOutcome {
                object: Arc::new(Value::Null),
                removed: true,
            };
        };
        let mut obj = (*cur).clone();
        let mut fins = finalizers(&obj);
        let extra = match propagation {
            "Orphan" => Some("orphan"),
            "Foreground" => Some("foregroundDeletion"),
            _ => None,
        };
        if let Some(f) = extra
            && !fins.iter().any(|x| x == f)
        {
            fins.push(f.to_string());
        }
        if fins.is_empty() {
            let object = self.remove(key, ns, name, obj);
            return DeleteOutcome {
                object,
                removed: true,
            };
        }
        set_finalizers(&mut obj, &fins);
        if !is_deleting(&obj) {
            let m = meta_mut(&mut obj);
            m.insert("deletionTimestamp".into(), json!(now()));
            m.insert("deletionGracePeriodSeconds".into(), json!(0));
            if let Some(g) = m
                .get("generation")
                .and_then(Value::as_i64)
                .filter(|g| *g > 0)
            {
                m.insert("generation".into(), json!(g + 1));
            }
        }
        let mut state = if obj == *cur {
            cur
        } else {
            self.store_modified(key, ns, name, &cur, obj)
        };
        let uid = meta_str(&state, "uid").to_string();
        let fins = finalizers(&state);
        if fins.iter().any(|f| f == "orphan") {
            for (dkey, dns, dname) in self.dependents(&uid) {
                self.internal_update(&dkey, &dns, &dname, |d| strip_owner_ref(d, &uid));
            }
            if let Some(s) = self.internal_update(key, ns, name, |o| remove_finalizer(o, "orphan"))
            {
                state = s;
            } else {
                return DeleteOutcome {
                    object: self.last_deleted(key, ns, name).unwrap_or(state),
                    removed: true,
                };
            }
        }
        if finalizers(&state).iter().any(|f| f == "foregroundDeletion") {
            for (dkey, dns, dname) in self.dependents(&uid) {
                self.delete_internal(&dkey, &dns, &dname, "Background");
            }
            self.check_foreground(&uid);
        }
        match self.lookup(key, ns, name) {
            Some(o) if meta_str(&o, "uid") == uid => DeleteOutcome {
                object: o,
                removed: false,
            },
            _ => DeleteOutcome {
                object: self.last_deleted(key, ns, name).unwrap_or(state),
                removed: true,
            },
        }
    }

    fn last_deleted(&self, key: &StoreKey, ns: &str, name: &str) -> Option<Arc<Value>> {
        self.history
            .iter()
            .rev()
            .find(|e| {
                e.kind == EventType::Deleted && &e.key == key && e.namespace == ns && e.name == name
            })
            .map(|e| e.object.clone())
    }

    /// DELETE of a collection: deletes every matching object.
    pub fn delete_collection(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
        opts: &DeleteOpts,
    ) -> ApiResult<Vec<Arc<Value>>> {
        let list = self.list(rt, ns, labels, fields, None, None)?;
        let mut out = Vec::new();
        for obj in list.items {
            let ons = meta_str(&obj, "namespace").to_string();
            let name = meta_str(&obj, "name").to_string();
            match self.delete(rt, &ons, &name, opts) {
                Ok(o) => out.push(o.object),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Applies `f` to an object outside of any request (garbage collector,
    /// finalizer processing); removes it if that leaves a deleting object
    /// without finalizers. Returns the new state, or None if gone.
    fn internal_update(
        &mut self,
        key: &StoreKey,
        ns: &str,
        name: &str,
        f: impl FnOnce(&mut Value),
    ) -> Option<Arc<Value>> {
        let cur = self.lookup(key, ns, name)?;
        let mut new = (*cur).clone();
        f(&mut new);
        if new == *cur {
            return Some(cur);
        }
        if is_deleting(&new) && finalizers(&new).is_empty() {
            self.remove(key, ns, name, new);
            return None;
        }
        Some(self.store_modified(key, ns, name, &cur, new))
    }

    /// Objects whose ownerReferences name `uid`.
    fn dependents(&self, uid: &str) -> Vec<(StoreKey, String, String)> {
        let mut out = Vec::new();
        for (key, map) in &self.objects {
            for ((ns, name), obj) in map {
                if owner_uids(obj).iter().any(|o| o == uid) {
                    out.push((key.clone(), ns.clone(), name.clone()));
                }
            }
        }
        out
    }

    /// Whether an owner with `uid` exists where a dependent in `dep_ns` may reference it.
    fn owner_exists(&self, uid: &str, dep_ns: &str) -> bool {
        self.uids
            .get(uid)
            .is_some_and(|(_, ons, _)| ons.is_empty() || ons == dep_ns)
    }

    /// The garbage collector's "all owners absent" rule.
    fn collect_if_orphaned(&mut self, key: &StoreKey, ns: &str, name: &str) {
        if !self.cfg.orphan_gc {
            return;
        }
        let Some(obj) = self.lookup(key, ns, name) else {
            return;
        };
        let owners = owner_uids(&obj);
        if !owners.is_empty() && owners.iter().all(|o| !self.owner_exists(o, ns)) {
            self.delete_internal(key, ns, name, "Background");
        }
    }

    fn check_foreground(&mut self, owner_uid: &str) {
        let Some((key, ns, name)) = self.uids.get(owner_uid).cloned() else {
            return;
        };
        let Some(owner) = self.lookup(&key, &ns, &name) else {
            return;
        };
        if is_deleting(&owner)
            && finalizers(&owner).iter().any(|f| f == "foregroundDeletion")
            && self.dependents(owner_uid).is_empty()
        {
            self.internal_update(&key, &ns, &name, |o| {
                remove_finalizer(o, "foregroundDeletion");
            });
        }
    }

    /// Removes an object for good: DELETED event, then cascades.
    fn remove(&mut self, key: &StoreKey, ns: &str, name: &str, mut last: Value) -> Arc<Value> {
        let prev = self
            .objects
            .get_mut(key)
            .and_then(|m| m.remove(&(ns.to_string(), name.to_string())));
        let uid = meta_str(&last, "uid").to_string();
        self.uids.remove(&uid);
        let rv = self.bump();
        meta_mut(&mut last).insert("resourceVersion".into(), json!(rv.to_string()));
        let arc = Arc::new(last);
        self.push_event(EventType::Deleted, key, ns, name, arc.clone(), prev);
        self.applied.retain(|(u, _, _), _| *u != uid);

        if key.0 == "apiextensions.k8s.io" && key.1 == "customresourcedefinitions" {
            self.registry.unregister_crd(name);
            if let (Some(g), Some(p)) = (
                arc.pointer("/spec/group").and_then(Value::as_str),
                arc.pointer("/spec/names/plural").and_then(Value::as_str),
            ) {
                let ckey = (g.to_string(), p.to_string());
                let names: Vec<(String, String)> = self
                    .objects
                    .get(&ckey)
                    .map(|m| m.keys().cloned().collect())
                    .unwrap_or_default();
                for (cns, cname) in names {
                    if let Some(o) = self.lookup(&ckey, &cns, &cname) {
                        let mut o = (*o).clone();
                        set_finalizers(&mut o, &[]);
                        self.remove(&ckey, &cns, &cname, o);
                    }
                }
            }
        }
        if key.0.is_empty() && key.1 == "namespaces" {
            let contents: Vec<(StoreKey, String, String)> = self
                .objects
                .iter()
                .flat_map(|(k, m)| {
                    m.keys()
                        .filter(|(ons, _)| ons == name)
                        .map(move |(ons, oname)| (k.clone(), ons.clone(), oname.clone()))
                })
                .collect();
            for (k, ons, oname) in contents {
                self.delete_internal(&k, &ons, &oname, "Background");
            }
        }
        for (dkey, dns, dname) in self.dependents(&uid) {
            let Some(dep) = self.lookup(&dkey, &dns, &dname) else {
                continue;
            };
            let others_alive = owner_uids(&dep)
                .iter()
                .any(|o| *o != uid && self.owner_exists(o, &dns));
            if others_alive {
                self.internal_update(&dkey, &dns, &dname, |d| strip_owner_ref(d, &uid));
            } else {
                self.delete_internal(&dkey, &dns, &dname, "Background");
            }
        }
        for owner in owner_uids(&arc) {
            self.check_foreground(&owner);
        }
        arc
    }
}

fn strip_owner_ref(obj: &mut Value, uid: &str) {
    if let Some(refs) = obj
        .pointer_mut("/metadata/ownerReferences")
        .and_then(Value::as_array_mut)
    {
        refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid));
        if refs.is_empty()
            && let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut)
        {
            m.remove("ownerReferences");
        }
    }
}

fn remove_finalizer(obj: &mut Value, f: &str) {
    let fins: Vec<String> = finalizers(obj).into_iter().filter(|x| x != f).collect();
    set_finalizers(obj, &fins);
}
