//! Small helpers over the Kubernetes API: the dynamic kinds the controller touches, status
//! patches, finalizers and Events.

use std::fmt::Debug;

use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tracing::warn;

/// Harvester's `VirtualMachineImage`.
pub fn image_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("harvesterhci.io", "v1beta1", "VirtualMachineImage"),
        "virtualmachineimages",
    )
}

/// KubeVirt's `VirtualMachine`.
pub fn vm_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("kubevirt.io", "v1", "VirtualMachine"),
        "virtualmachines",
    )
}

/// Multus `NetworkAttachmentDefinition`.
pub fn nad_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("k8s.cni.cncf.io", "v1", "NetworkAttachmentDefinition"),
        "network-attachment-definitions",
    )
}

pub fn dynamic(client: &Client, ns: &str, ar: &ApiResource) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, ar)
}

/// The object as plain JSON (`apiVersion`, `kind`, `metadata`, `spec`, `status`).
pub fn to_json<T: Serialize>(obj: &T) -> Value {
    serde_json::to_value(obj).unwrap_or(Value::Null)
}

/// A JSON object from a built manifest.
pub fn from_json<T: DeserializeOwned>(v: Value) -> Result<T, kube::Error> {
    serde_json::from_value(v).map_err(kube::Error::SerdeError)
}

/// Whether a Kubernetes error is a 404.
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Whether a Kubernetes error is a 409 (AlreadyExists or Conflict).
pub fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// RFC 3339 time, seconds precision, as conditions carry it.
pub fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Writes `status` with a JSON merge patch on the status subresource. Fields absent from
/// `status` are cleared (sent as `null`), so the status written is exactly `status`.
pub async fn write_status<K, S>(api: &Api<K>, name: &str, status: &S) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
    S: Serialize,
{
    let mut value = to_json(status);
    if let Value::Object(map) = &mut value {
        for key in STATUS_KEYS {
            map.entry((*key).to_owned()).or_insert(Value::Null);
        }
    }
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": value })),
    )
    .await
    .map(|_| ())
}

/// Every status field of the kinds this controller writes (upstream and vm-import's).
const STATUS_KEYS: &[&str] = &[
    "importStatus",
    "diskImportStatus",
    "importConditions",
    "newVirtualMachine",
    "importedVirtualMachineName",
    "observedGeneration",
    "temporaryResources",
    "diskProgress",
    "destination",
    "engineState",
];

/// Adds `finalizer` (JSON patch with a `test` of the current list, as kube-runtime does).
pub async fn add_finalizer<K>(api: &Api<K>, obj: &K, finalizer: &str) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let current = obj.finalizers().to_vec();
    let ops = if current.is_empty() {
        json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": [finalizer]}
        ])
    } else {
        json!([
            {"op": "test", "path": "/metadata/finalizers", "value": current},
            {"op": "add", "path": "/metadata/finalizers/-", "value": finalizer}
        ])
    };
    let patch: json_patch::Patch = serde_json::from_value(ops).map_err(kube::Error::SerdeError)?;
    api.patch(
        &obj.name_any(),
        &PatchParams::default(),
        &Patch::<()>::Json(patch),
    )
    .await
    .map(|_| ())
}

/// Removes each of `finalizers` the object has (one `test`+`remove` pair each, so that a
/// concurrent change fails the patch instead of removing another finalizer).
pub async fn remove_finalizers<K>(
    api: &Api<K>,
    obj: &K,
    finalizers: &[&str],
) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let mut ops = Vec::new();
    // Highest index first, so that earlier removals do not shift later ones.
    let mut found: Vec<(usize, &str)> = obj
        .finalizers()
        .iter()
        .enumerate()
        .filter(|(_, f)| finalizers.contains(&f.as_str()))
        .map(|(i, f)| (i, f.as_str()))
        .collect();
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    for (i, f) in found {
        ops.push(json!({"op": "test", "path": format!("/metadata/finalizers/{i}"), "value": f}));
        ops.push(json!({"op": "remove", "path": format!("/metadata/finalizers/{i}")}));
    }
    if ops.is_empty() {
        return Ok(());
    }
    let patch: json_patch::Patch =
        serde_json::from_value(Value::Array(ops)).map_err(kube::Error::SerdeError)?;
    api.patch(
        &obj.name_any(),
        &PatchParams::default(),
        &Patch::<()>::Json(patch),
    )
    .await
    .map(|_| ())
}

/// Publishes an Event about `obj`; failures are logged, never fatal.
pub async fn publish<K>(
    recorder: &Recorder,
    obj: &K,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) where
    K: Resource<DynamicType = ()>,
{
    // Event notes are limited to 1 kB.
    let note = if note.len() > 1000 {
        let mut cut = 997;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}...", &note[..cut])
    } else {
        note
    };
    let ev = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: action.to_owned(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&ev, &obj.object_ref(&())).await {
        warn!(error = %e, reason, "cannot publish an Event");
    }
}
