//! Harvester and KubeVirt objects, built and read as plain JSON (pure).
//!
//! - `harvesterhci.io/v1beta1` `VirtualMachineImage`: one per disk, `sourceType: download` from
//!   the controller's disk server, SHA-512 checksum, owned by the import until the VM runs.
//! - `PersistentVolumeClaim` per disk for the backing-image backend (RWX, Block, the image's
//!   storage class, `harvesterhci.io/imageId`); the CDI backend uses the image's own volume.
//! - `kubevirt.io/v1` `VirtualMachine` from the engine's manifest.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::{Value, json};
use vmi_core::manifest::{
    IMAGE_DISPLAY_NAME_LABEL, IMAGE_ID_ANNOTATION, IMPORTED_LABEL, STORAGE_CLASS_ANNOTATION,
    VOLUME_CLAIM_TEMPLATES_ANNOTATION, size_quantity,
};

/// `harvesterhci.io/v1beta1`.
pub const HARVESTER_API_VERSION: &str = "harvesterhci.io/v1beta1";
/// `kubevirt.io/v1`.
pub const KUBEVIRT_API_VERSION: &str = "kubevirt.io/v1";
/// On objects the controller made: the uid of the import that made them.
pub const IMPORT_UID_LABEL: &str = "migration.harvesterhci.io/import-uid";

/// Where Harvester keeps an image's data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// Longhorn v1 backing images (Harvester's default).
    #[value(name = "backingimage")]
    BackingImage,
    /// A CDI DataVolume named after the image.
    #[value(name = "cdi")]
    Cdi,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::BackingImage => "backingimage",
            Backend::Cdi => "cdi",
        }
    }

    /// The backend a storage class implies: Longhorn's v1 data engine keeps backing images;
    /// anything else (Longhorn v2, other CSI drivers) goes through CDI.
    pub fn for_storage_class(sc: &Value) -> Backend {
        let provisioner = sc["provisioner"].as_str().unwrap_or_default();
        let engine = sc["parameters"]["dataEngine"].as_str();
        if provisioner == "driver.longhorn.io" && engine.is_none_or(|e| e == "v1") {
            Backend::BackingImage
        } else {
            Backend::Cdi
        }
    }
}

/// A label value as Kubernetes accepts it: kept when valid, else `hash_<FNV-32a, base64url>_z`
/// (the form Harvester's own tools use, so that lookups by label agree).
pub fn label_value(s: &str) -> String {
    let valid = s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s.chars().next().is_none_or(|c| c.is_ascii_alphanumeric())
        && s.chars().last().is_none_or(|c| c.is_ascii_alphanumeric());
    if valid {
        return s.to_owned();
    }
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!(
        "hash_{}_z",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(h.to_be_bytes())
    )
}

/// What an image needs to be created.
#[derive(Clone, Debug)]
pub struct ImageInput<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub display_name: &'a str,
    pub url: &'a str,
    pub sha512: &'a str,
    pub storage_class: Option<&'a str>,
    pub backend: Option<Backend>,
    /// The import that owns the image until the VM runs.
    pub owner: Value,
    pub import_uid: &'a str,
    pub vm_name: &'a str,
    /// Harvester's own download retries.
    pub retry: u32,
}

/// The VirtualMachineImage of one disk.
pub fn image(input: &ImageInput<'_>) -> Value {
    let mut labels = BTreeMap::from([
        (IMPORTED_LABEL.to_owned(), "true".to_owned()),
        (
            IMAGE_DISPLAY_NAME_LABEL.to_owned(),
            label_value(input.display_name),
        ),
        (IMPORT_UID_LABEL.to_owned(), input.import_uid.to_owned()),
        (
            vmi_core::manifest::VM_NAME_LABEL.to_owned(),
            input.vm_name.to_owned(),
        ),
    ]);
    labels.retain(|_, v| !v.is_empty());
    let mut image = json!({
        "apiVersion": HARVESTER_API_VERSION,
        "kind": "VirtualMachineImage",
        "metadata": {
            "name": input.name,
            "namespace": input.namespace,
            "labels": labels,
            "ownerReferences": [input.owner],
        },
        "spec": {
            "displayName": input.display_name,
            "sourceType": "download",
            "url": input.url,
            "checksum": input.sha512,
            "retry": input.retry,
        }
    });
    if let Some(sc) = input.storage_class {
        image["metadata"]["annotations"] = json!({STORAGE_CLASS_ANNOTATION: sc});
        image["spec"]["targetStorageClassName"] = json!(sc);
    }
    if let Some(b) = input.backend {
        image["spec"]["backend"] = json!(b.as_str());
    }
    image
}

/// An image as Harvester reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageState {
    /// Downloading (progress in percent when known).
    Pending { progress: Option<i64> },
    /// `Imported=True`.
    Ready {
        size: Option<u64>,
        virtual_size: Option<u64>,
        storage_class: Option<String>,
        backend: Backend,
    },
    /// Failed for good: `RetryLimitExceeded=True`, or `Imported=False` / `Initialized=False`.
    Failed { reason: String, message: String },
}

fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

fn is(c: Option<&Value>, status: &str) -> bool {
    c.is_some_and(|c| c["status"] == status)
}

/// Reads an image's status. Current Harvester marks a final failure with
/// `RetryLimitExceeded=True` and `Imported=False` without a reason (older ones with reason
/// `ImportFailed`); both are failures here.
pub fn image_state(obj: &Value) -> ImageState {
    let imported = condition(obj, "Imported");
    let initialized = condition(obj, "Initialized");
    let retry = condition(obj, "RetryLimitExceeded");
    if is(imported, "True") {
        let num = |k: &str| obj["status"][k].as_u64().filter(|v| *v > 0);
        return ImageState::Ready {
            size: num("size"),
            virtual_size: num("virtualSize"),
            storage_class: obj["status"]["storageClassName"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
            backend: match obj["spec"]["backend"].as_str() {
                Some("cdi") => Backend::Cdi,
                _ => Backend::BackingImage,
            },
        };
    }
    let failed = is(retry, "True") || is(imported, "False") || is(initialized, "False");
    if failed {
        let message = [retry, imported, initialized]
            .into_iter()
            .flatten()
            .filter_map(|c| c["message"].as_str())
            .find(|m| !m.is_empty())
            .unwrap_or("the image failed without a message")
            .to_owned();
        let reason = [imported, initialized, retry]
            .into_iter()
            .flatten()
            .filter_map(|c| c["reason"].as_str())
            .find(|r| !r.is_empty())
            .unwrap_or("ImageFailed")
            .to_owned();
        return ImageState::Failed { reason, message };
    }
    ImageState::Pending {
        progress: obj["status"]["progress"].as_i64(),
    }
}

/// The PVC of a disk for the backing-image backend.
pub fn volume_claim(
    name: &str,
    namespace: &str,
    image_name: &str,
    storage_class: &str,
    bytes: u64,
    import_uid: &str,
) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "annotations": {IMAGE_ID_ANNOTATION: format!("{namespace}/{image_name}")},
            "labels": {IMPORTED_LABEL: "true", IMPORT_UID_LABEL: import_uid},
        },
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "volumeMode": "Block",
            "storageClassName": storage_class,
            "resources": {"requests": {"storage": size_quantity(bytes)}},
        }
    })
}

/// Adapts the engine's VirtualMachine manifest to volumes that already exist (the controller
/// made them, or the CDI image's own): claim names as given, no `volumeClaimTemplates`
/// annotation (Harvester would make the PVCs a second time), and the import's uid label.
pub fn adapt_virtual_machine(mut vm: Value, claims: &[String], import_uid: &str) -> Value {
    if let Some(a) = vm["metadata"]["annotations"].as_object_mut() {
        a.remove(VOLUME_CLAIM_TEMPLATES_ANNOTATION);
    }
    if let Some(volumes) = vm["spec"]["template"]["spec"]["volumes"].as_array_mut() {
        for (v, claim) in volumes.iter_mut().zip(claims) {
            v["persistentVolumeClaim"] = json!({"claimName": claim});
        }
    }
    if let Some(l) = vm["metadata"]["labels"].as_object_mut() {
        l.insert(IMPORT_UID_LABEL.to_owned(), json!(import_uid));
    }
    vm
}

/// A VirtualMachine as KubeVirt reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmState {
    Ready,
    /// Not ready yet; `printableStatus` and the failure condition's message, when any.
    Starting {
        status: String,
        problem: Option<String>,
    },
}

pub fn vm_state(obj: &Value) -> VmState {
    if obj["status"]["ready"] == true {
        return VmState::Ready;
    }
    let status = obj["status"]["printableStatus"]
        .as_str()
        .unwrap_or("Unknown")
        .to_owned();
    let problem = condition(obj, "Failure")
        .filter(|c| c["status"] == "True")
        .and_then(|c| c["message"].as_str())
        .map(str::to_owned);
    VmState::Starting { status, problem }
}

/// The uid label of an object, to tell the import's own objects from others of that name.
pub fn import_uid_of(obj: &Value) -> Option<&str> {
    obj["metadata"]["labels"][IMPORT_UID_LABEL].as_str()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn owner() -> Value {
        json!({"apiVersion": "migration.harvesterhci.io/v1beta1", "kind": "VirtualMachineImport", "name": "web", "uid": "u-1"})
    }

    #[test]
    fn an_image_carries_url_checksum_owner_and_storage_class() {
        let sha = "ab".repeat(64);
        let img = image(&ImageInput {
            name: "web-01-disk-0",
            namespace: "apps",
            display_name: "vm-import-web-root",
            url: "http://ctl:8080/disks/t/disk-0.qcow2",
            sha512: &sha,
            storage_class: Some("fast"),
            backend: Some(Backend::Cdi),
            owner: owner(),
            import_uid: "u-1",
            vm_name: "web-01",
            retry: 3,
        });
        assert_eq!(img["spec"]["sourceType"], "download");
        assert_eq!(img["spec"]["checksum"], sha.as_str());
        assert_eq!(img["spec"]["targetStorageClassName"], "fast");
        assert_eq!(img["spec"]["backend"], "cdi");
        assert_eq!(
            img["metadata"]["annotations"]["harvesterhci.io/storageClassName"],
            "fast"
        );
        assert_eq!(
            img["metadata"]["labels"]["harvesterhci.io/imageDisplayName"],
            "vm-import-web-root"
        );
        assert_eq!(img["metadata"]["ownerReferences"][0]["uid"], "u-1");
    }

    #[test]
    fn invalid_label_values_are_hashed_stably() {
        assert_eq!(label_value("ok-name"), "ok-name");
        let h = label_value("vm-import-web-Root Disk");
        assert!(h.starts_with("hash_") && h.ends_with("_z"), "{h}");
        assert_eq!(h, label_value("vm-import-web-Root Disk"));
        assert!(label_value(&"x".repeat(64)).starts_with("hash_"));
    }

    #[test]
    fn image_states_follow_current_and_older_harvester() {
        let ready = json!({"spec": {"backend": "backingimage"}, "status": {"size": 1024, "virtualSize": 4096, "storageClassName": "longhorn-x", "conditions": [{"type": "Imported", "status": "True"}]}});
        assert_eq!(
            image_state(&ready),
            ImageState::Ready {
                size: Some(1024),
                virtual_size: Some(4096),
                storage_class: Some("longhorn-x".into()),
                backend: Backend::BackingImage
            }
        );
        let current_failure = json!({"status": {"failed": 4, "conditions": [
            {"type": "Imported", "status": "False", "message": "failed due to error: checksum mismatch"},
            {"type": "RetryLimitExceeded", "status": "True", "message": "retry attempted 4/3"}]}});
        match image_state(&current_failure) {
            ImageState::Failed { message, .. } => assert!(message.contains("retry attempted")),
            s => panic!("{s:?}"),
        }
        let old_failure = json!({"status": {"conditions": [{"type": "Imported", "status": "False", "reason": "ImportFailed", "message": "boom"}]}});
        assert_eq!(
            image_state(&old_failure),
            ImageState::Failed {
                reason: "ImportFailed".into(),
                message: "boom".into()
            }
        );
        let retrying = json!({"status": {"progress": 40, "failed": 1, "conditions": [
            {"type": "Imported", "status": "Unknown", "reason": "Importing"},
            {"type": "RetryLimitExceeded", "status": "False", "message": "retry attempted 1/3"}]}});
        assert_eq!(
            image_state(&retrying),
            ImageState::Pending { progress: Some(40) }
        );
    }

    #[test]
    fn backends_follow_the_storage_class() {
        let lh = |engine: Option<&str>| {
            let mut sc = json!({"provisioner": "driver.longhorn.io", "parameters": {}});
            if let Some(e) = engine {
                sc["parameters"]["dataEngine"] = json!(e);
            }
            Backend::for_storage_class(&sc)
        };
        assert_eq!(lh(Some("v1")), Backend::BackingImage);
        assert_eq!(lh(None), Backend::BackingImage);
        assert_eq!(lh(Some("v2")), Backend::Cdi);
        assert_eq!(
            Backend::for_storage_class(&json!({"provisioner": "rbd.csi.ceph.com"})),
            Backend::Cdi
        );
    }

    #[test]
    fn the_vm_uses_existing_claims_and_no_templates() {
        let vm = json!({"metadata": {"labels": {}, "annotations": {VOLUME_CLAIM_TEMPLATES_ANNOTATION: "[]", "x": "y"}},
            "spec": {"template": {"spec": {"volumes": [{"name": "disk-0", "persistentVolumeClaim": {"claimName": "old"}}]}}}});
        let vm = adapt_virtual_machine(vm, &["web-01-disk-0".into()], "u-1");
        assert!(
            vm["metadata"]["annotations"]
                .get(VOLUME_CLAIM_TEMPLATES_ANNOTATION)
                .is_none()
        );
        assert_eq!(
            vm["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
            "web-01-disk-0"
        );
        assert_eq!(import_uid_of(&vm), Some("u-1"));
    }

    #[test]
    fn vm_readiness_comes_from_status_ready() {
        assert_eq!(
            vm_state(&json!({"status": {"ready": true}})),
            VmState::Ready
        );
        assert_eq!(
            vm_state(
                &json!({"status": {"printableStatus": "ErrorUnschedulable", "conditions": [{"type": "Failure", "status": "True", "message": "0/3 nodes"}]}})
            ),
            VmState::Starting {
                status: "ErrorUnschedulable".into(),
                problem: Some("0/3 nodes".into())
            }
        );
    }
}
