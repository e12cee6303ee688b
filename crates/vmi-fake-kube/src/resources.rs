//! Resource types served by the fake server: the built-in ones and those
//! registered by CustomResourceDefinitions.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult, GroupResource};

/// A resource type (one group/version/plural) the server serves.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceType {
    /// API group, empty for the core group.
    pub group: String,
    pub version: String,
    /// Plural name used in paths, e.g. `secrets`.
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub list_kind: String,
    pub namespaced: bool,
    /// Whether the `status` subresource is enabled.
    pub status_subresource: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// Defined by a CustomResourceDefinition.
    pub custom: bool,
    /// The `openAPIV3Schema` of a custom resource version, if any.
    pub schema: Option<Value>,
    /// Field labels usable in field selectors.
    pub field_labels: Vec<String>,
}

impl ResourceType {
    /// A built-in or ad-hoc type with the usual defaults.
    pub fn new(group: &str, version: &str, plural: &str, kind: &str, namespaced: bool) -> Self {
        Self {
            group: group.to_string(),
            version: version.to_string(),
            plural: plural.to_string(),
            singular: kind.to_lowercase(),
            kind: kind.to_string(),
            list_kind: format!("{kind}List"),
            namespaced,
            status_subresource: false,
            short_names: Vec::new(),
            categories: Vec::new(),
            custom: false,
            schema: None,
            field_labels: default_field_labels(),
        }
    }

    #[must_use]
    pub fn with_status(mut self) -> Self {
        self.status_subresource = true;
        self
    }

    #[must_use]
    pub fn with_short_names(mut self, names: &[&str]) -> Self {
        self.short_names = names.iter().map(ToString::to_string).collect();
        self
    }

    #[must_use]
    pub fn with_field_labels(mut self, labels: &[&str]) -> Self {
        self.field_labels
            .extend(labels.iter().map(ToString::to_string));
        self
    }

    /// `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Key of the storage shared by all versions of the resource.
    pub fn storage_key(&self) -> StoreKey {
        (self.group.clone(), self.plural.clone())
    }

    pub fn gr(&self) -> GroupResource<'_> {
        GroupResource {
            group: &self.group,
            resource: &self.plural,
        }
    }

    /// `Kind.group` as in `Invalid` messages.
    pub fn kind_group(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    pub(crate) fn is_crd(&self) -> bool {
        self.group == "apiextensions.k8s.io" && self.plural == "customresourcedefinitions"
    }

    pub(crate) fn is_namespace(&self) -> bool {
        self.group.is_empty() && self.plural == "namespaces"
    }

    /// Whether `metadata.generation` is maintained (custom resources and CRDs).
    pub(crate) fn tracks_generation(&self) -> bool {
        self.custom || self.is_crd()
    }

    /// Whether PUT without `metadata.resourceVersion` is allowed.
    pub(crate) fn allow_unconditional_update(&self) -> bool {
        !(self.custom || self.is_crd())
    }

    /// Whether DELETE answers with the object (else with a `Status`).
    pub(crate) fn returns_deleted_object(&self) -> bool {
        self.custom
            || (self.group.is_empty()
                && matches!(
                    self.plural.as_str(),
                    "pods" | "services" | "persistentvolumeclaims" | "namespaces"
                ))
    }

    /// The verbs every served resource supports.
    pub(crate) fn verbs() -> Vec<&'static str> {
        vec![
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
    }
}

fn default_field_labels() -> Vec<String> {
    vec![
        "metadata.name".to_string(),
        "metadata.namespace".to_string(),
    ]
}

/// `(group, plural)`: objects of all versions of a resource share one storage.
pub type StoreKey = (String, String);

/// The built-in types the fake server serves.
pub fn builtin_types() -> Vec<ResourceType> {
    vec![
        ResourceType::new("", "v1", "secrets", "Secret", true).with_field_labels(&["type"]),
        ResourceType::new("", "v1", "configmaps", "ConfigMap", true).with_short_names(&["cm"]),
        ResourceType::new("", "v1", "events", "Event", true)
            .with_short_names(&["ev"])
            .with_field_labels(&[
                "involvedObject.kind",
                "involvedObject.namespace",
                "involvedObject.name",
                "involvedObject.uid",
                "involvedObject.apiVersion",
                "involvedObject.resourceVersion",
                "involvedObject.fieldPath",
                "reason",
                "reportingComponent",
                "source",
                "type",
            ]),
        ResourceType::new(
            "",
            "v1",
            "persistentvolumeclaims",
            "PersistentVolumeClaim",
            true,
        )
        .with_status()
        .with_short_names(&["pvc"]),
        ResourceType::new("", "v1", "persistentvolumes", "PersistentVolume", false)
            .with_status()
            .with_short_names(&["pv"]),
        ResourceType::new("", "v1", "namespaces", "Namespace", false)
            .with_status()
            .with_short_names(&["ns"])
            .with_field_labels(&["status.phase"]),
        ResourceType::new("", "v1", "services", "Service", true)
            .with_status()
            .with_short_names(&["svc"]),
        ResourceType::new("", "v1", "serviceaccounts", "ServiceAccount", true)
            .with_short_names(&["sa"]),
        ResourceType::new("", "v1", "pods", "Pod", true)
            .with_status()
            .with_short_names(&["po"])
            .with_field_labels(&[
                "spec.nodeName",
                "spec.restartPolicy",
                "spec.schedulerName",
                "spec.serviceAccountName",
                "spec.hostNetwork",
                "status.phase",
                "status.podIP",
                "status.nominatedNodeName",
            ]),
        ResourceType::new("events.k8s.io", "v1", "events", "Event", true)
            .with_short_names(&["ev"])
            .with_field_labels(&[
                "regarding.kind",
                "regarding.namespace",
                "regarding.name",
                "regarding.uid",
                "reason",
                "reportingController",
                "type",
            ]),
        ResourceType::new("coordination.k8s.io", "v1", "leases", "Lease", true),
        ResourceType::new(
            "storage.k8s.io",
            "v1",
            "storageclasses",
            "StorageClass",
            false,
        )
        .with_short_names(&["sc"]),
        ResourceType::new(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
        )
        .with_status()
        .with_short_names(&["crd", "crds"]),
    ]
}

/// Types by `(group, version, plural)`, plus which CRD registered which.
#[derive(Debug, Default)]
pub struct Registry {
    types: BTreeMap<(String, String, String), ResourceType>,
    by_crd: BTreeMap<String, Vec<(String, String, String)>>,
}

impl Registry {
    pub fn with_builtins(extra: &[ResourceType]) -> Self {
        let mut r = Self::default();
        for t in builtin_types().into_iter().chain(extra.iter().cloned()) {
            r.insert(t);
        }
        r
    }

    pub fn insert(&mut self, t: ResourceType) {
        self.types
            .insert((t.group.clone(), t.version.clone(), t.plural.clone()), t);
    }

    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceType> {
        self.types
            .get(&(group.to_string(), version.to_string(), plural.to_string()))
    }

    /// Any served version of the resource stored under `key`.
    pub fn by_storage(&self, key: &StoreKey) -> Option<&ResourceType> {
        self.types
            .values()
            .find(|t| t.group == key.0 && t.plural == key.1)
    }

    pub fn all(&self) -> impl Iterator<Item = &ResourceType> {
        self.types.values()
    }

    /// Groups (non-core) with their versions, in registration order of versions.
    pub fn groups(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for t in self.types.values().filter(|t| !t.group.is_empty()) {
            let vs = out.entry(t.group.clone()).or_default();
            if !vs.contains(&t.version) {
                vs.push(t.version.clone());
            }
        }
        for vs in out.values_mut() {
            vs.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        }
        out
    }

    /// (Re-)registers the versions served by a CRD object.
    pub fn register_crd(&mut self, crd: &Value) -> ApiResult<()> {
        let types = crd_types(crd)?;
        self.unregister_crd(crd_name(crd));
        let keys = types
            .iter()
            .map(|t| (t.group.clone(), t.version.clone(), t.plural.clone()))
            .collect();
        for t in types {
            self.insert(t);
        }
        self.by_crd.insert(crd_name(crd).to_string(), keys);
        Ok(())
    }

    pub fn unregister_crd(&mut self, name: &str) {
        if let Some(keys) = self.by_crd.remove(name) {
            for k in keys {
                self.types.remove(&k);
            }
        }
    }
}

/// Kubernetes version ordering: GA > beta > alpha, higher numbers first.
pub fn version_priority(v: &str) -> (u8, u64, u64) {
    let Some(rest) = v.strip_prefix('v') else {
        return (0, 0, 0);
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let major = digits.parse().unwrap_or(0);
    let tail = &rest[digits.len()..];
    if tail.is_empty() {
        (3, major, 0)
    } else if let Some(n) = tail.strip_prefix("beta") {
        (2, major, n.parse().unwrap_or(0))
    } else if let Some(n) = tail.strip_prefix("alpha") {
        (1, major, n.parse().unwrap_or(0))
    } else {
        (0, major, 0)
    }
}

fn crd_name(crd: &Value) -> &str {
    crd.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn invalid_crd(name: &str, field: &str, msg: &str) -> ApiError {
    ApiError::invalid(
        "CustomResourceDefinition.apiextensions.k8s.io",
        name,
        field,
        "FieldValueInvalid",
        msg,
    )
}

/// Whether a CRD's `spec.scope` makes its objects namespaced.
fn crd_namespaced(name: &str, scope: &str) -> ApiResult<bool> {
    match scope {
        "Namespaced" => Ok(true),
        "Cluster" => Ok(false),
        other => Err(invalid_crd(
            name,
            "spec.scope",
            &format!(
                "Unsupported value: \"{other}\": supported values: \"Cluster\", \"Namespaced\""
            ),
        )),
    }
}

/// A CRD's `spec.versions`, checked to be non-empty with exactly one storage version.
fn crd_versions<'a>(crd: &'a Value, name: &str) -> ApiResult<&'a Vec<Value>> {
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            invalid_crd(
                name,
                "spec.versions",
                "Invalid value: must have exactly one version marked as storage version",
            )
        })?;
    let storage_count = versions
        .iter()
        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .count();
    if storage_count != 1 {
        return Err(invalid_crd(
            name,
            "spec.versions",
            "Invalid value: must have exactly one version marked as storage version",
        ));
    }
    Ok(versions)
}

/// The resource types a CRD object defines (one per served version).
pub fn crd_types(crd: &Value) -> ApiResult<Vec<ResourceType>> {
    let name = crd_name(crd);
    let s = |p: &str| crd.pointer(p).and_then(Value::as_str).unwrap_or_default();
    let group = s("/spec/group");
    let plural = s("/spec/names/plural");
    let kind = s("/spec/names/kind");
    if group.is_empty() {
        return Err(invalid_crd(name, "spec.group", "Required value"));
    }
    if plural.is_empty() {
        return Err(invalid_crd(name, "spec.names.plural", "Required value"));
    }
    if kind.is_empty() {
        return Err(invalid_crd(name, "spec.names.kind", "Required value"));
    }
    if name != format!("{plural}.{group}") {
        return Err(invalid_crd(
            name,
            "metadata.name",
            &format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    let namespaced = crd_namespaced(name, s("/spec/scope"))?;
    let singular = match s("/spec/names/singular") {
        "" => kind.to_lowercase(),
        x => x.to_string(),
    };
    let list_kind = match s("/spec/names/listKind") {
        "" => format!("{kind}List"),
        x => x.to_string(),
    };
    let strings = |p: &str| -> Vec<String> {
        crd.pointer(p)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    };
    let versions = crd_versions(crd, name)?;
    let mut out = Vec::new();
    for v in versions {
        if v.get("served").and_then(Value::as_bool) != Some(true) {
            continue;
        }
        let version = v.get("name").and_then(Value::as_str).unwrap_or_default();
        let mut field_labels = default_field_labels();
        if let Some(sel) = v.get("selectableFields").and_then(Value::as_array) {
            field_labels.extend(
                sel.iter()
                    .filter_map(|f| f.get("jsonPath").and_then(Value::as_str))
                    .map(|p| p.trim_start_matches('.').to_string()),
            );
        }
        out.push(ResourceType {
            group: group.to_string(),
            version: version.to_string(),
            plural: plural.to_string(),
            singular: singular.clone(),
            kind: kind.to_string(),
            list_kind: list_kind.clone(),
            namespaced,
            status_subresource: v.pointer("/subresources/status").is_some(),
            short_names: strings("/spec/names/shortNames"),
            categories: strings("/spec/names/categories"),
            custom: true,
            schema: v.pointer("/schema/openAPIV3Schema").cloned(),
            field_labels,
        });
    }
    Ok(out)
}

/// The status the real apiextensions controllers give an accepted CRD.
pub fn crd_status(crd: &Value, now: &str) -> Value {
    let mut stored: Vec<Value> = crd
        .pointer("/status/storedVersions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(storage) = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .and_then(|vs| {
            vs.iter()
                .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        })
        .and_then(|v| v.get("name"))
        && !stored.contains(storage)
    {
        stored.push(storage.clone());
    }
    let mut names = crd
        .pointer("/spec/names")
        .cloned()
        .unwrap_or_else(|| json!({}));
    if let (Some(n), Some(kind)) = (
        names.as_object_mut(),
        crd.pointer("/spec/names/kind").and_then(Value::as_str),
    ) {
        n.entry("singular")
            .or_insert_with(|| json!(kind.to_lowercase()));
        n.entry("listKind")
            .or_insert_with(|| json!(format!("{kind}List")));
    }
    let cond = |t: &str, reason: &str, msg: &str| json!({"type": t, "status": "True", "lastTransitionTime": now, "reason": reason, "message": msg});
    json!({
        "acceptedNames": names,
        "conditions": [
            cond("NamesAccepted", "NoConflicts", "no conflicts found"),
            cond("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ],
        "storedVersions": stored,
    })
}
