//! KubeVirt `VirtualMachine` and Harvester `VirtualMachineImage` manifests, generated from the
//! neutral model. Pure: the caller decides where the disks are served from.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use vmi_api::DiskBus;

use crate::model::{BootMode, VmModel};
use crate::network::{Destination, NicPlan};

/// Label on everything vm-import creates.
pub const IMPORTED_LABEL: &str = "migration.harvesterhci.io/imported";
/// Harvester's label naming the VM.
pub const VM_NAME_LABEL: &str = "harvesterhci.io/vmName";
/// Harvester's label with an image's display name.
pub const IMAGE_DISPLAY_NAME_LABEL: &str = "harvesterhci.io/imageDisplayName";
/// The description annotation Harvester's UI shows.
pub const DESCRIPTION_ANNOTATION: &str = "field.cattle.io/description";
/// Where the VM came from (vm-import).
pub const SOURCE_ANNOTATION: &str = "migration.harvesterhci.io/source";
/// Harvester creates the VM's PVCs from these templates.
pub const VOLUME_CLAIM_TEMPLATES_ANNOTATION: &str = "harvesterhci.io/volumeClaimTemplates";
/// On a PVC: the image it is created from (`namespace/name`).
pub const IMAGE_ID_ANNOTATION: &str = "harvesterhci.io/imageId";
/// On an image: the storage class its volumes use.
pub const STORAGE_CLASS_ANNOTATION: &str = "harvesterhci.io/storageClassName";

/// One exported disk, ready to be served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskArtifact {
    /// Position in boot order, from 0.
    pub index: usize,
    /// Name of the VirtualMachineImage object.
    pub image_name: String,
    /// Where Harvester downloads the disk from.
    pub url: String,
    /// SHA-512 of the served file.
    pub sha512: String,
    /// Virtual size in bytes.
    pub virtual_size: u64,
    pub bus: DiskBus,
}

/// Everything the manifests need besides the model.
#[derive(Clone, Debug)]
pub struct ManifestInput<'a> {
    pub vm: &'a VmModel,
    /// The sanitised VM name.
    pub name: &'a str,
    pub namespace: &'a str,
    pub nics: &'a NicPlan,
    pub disks: &'a [DiskArtifact],
    pub storage_class: Option<&'a str>,
    /// Describes the source in an annotation, e.g. "openstack server 7828dc7f-…".
    pub source: &'a str,
}

/// Name of the VirtualMachineImage and of the PVC of disk `index` of VM `vm_name`.
pub fn disk_object_name(vm_name: &str, index: usize) -> String {
    let suffix = format!("-disk-{index}");
    let keep = 63 - suffix.len();
    let base: String = vm_name.chars().take(keep).collect();
    format!("{}{suffix}", base.trim_end_matches('-'))
}

/// The storage class Harvester creates for a backing-image VirtualMachineImage.
pub fn image_storage_class(image_name: &str) -> String {
    format!("longhorn-{image_name}")
}

fn labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (IMPORTED_LABEL.to_owned(), "true".to_owned()),
        (VM_NAME_LABEL.to_owned(), name.to_owned()),
    ])
}

/// Memory as a Kubernetes quantity in MiB, exactly.
pub fn mebibytes(mib: u64) -> String {
    format!("{mib}Mi")
}

/// Disk size in a quantity: whole GiB when exact, else bytes.
pub fn size_quantity(bytes: u64) -> String {
    if bytes > 0 && bytes.is_multiple_of(1 << 30) {
        format!("{}Gi", bytes >> 30)
    } else if bytes > 0 && bytes.is_multiple_of(1 << 20) {
        format!("{}Mi", bytes >> 20)
    } else {
        bytes.to_string()
    }
}

/// The KubeVirt VirtualMachine.
pub fn virtual_machine(input: &ManifestInput<'_>) -> Value {
    let vm = input.vm;
    let mut annotations = BTreeMap::new();
    if let Some(d) = vm.description.as_deref().filter(|d| !d.is_empty()) {
        annotations.insert(DESCRIPTION_ANNOTATION.to_owned(), d.to_owned());
    }
    annotations.insert(SOURCE_ANNOTATION.to_owned(), input.source.to_owned());

    let mut claim_templates = Vec::new();
    let mut disks = Vec::new();
    let mut volumes = Vec::new();
    for d in input.disks {
        let disk_name = format!("disk-{}", d.index);
        let claim = disk_object_name(input.name, d.index);
        let mut template = json!({
            "metadata": {
                "name": claim,
                "annotations": {IMAGE_ID_ANNOTATION: format!("{}/{}", input.namespace, d.image_name)}
            },
            "spec": {
                "accessModes": ["ReadWriteMany"],
                "resources": {"requests": {"storage": size_quantity(d.virtual_size)}},
                "volumeMode": "Block",
                "storageClassName": image_storage_class(&d.image_name)
            }
        });
        if let Some(sc) = input.storage_class {
            template["spec"]["storageClassName"] = json!(sc);
        }
        claim_templates.push(template);
        disks.push(
            json!({"name": disk_name, "bootOrder": d.index + 1, "disk": {"bus": d.bus.as_str()}}),
        );
        volumes.push(json!({"name": disk_name, "persistentVolumeClaim": {"claimName": claim}}));
    }
    annotations.insert(
        VOLUME_CLAIM_TEMPLATES_ANNOTATION.to_owned(),
        serde_json::to_string(&claim_templates).unwrap_or_default(),
    );

    let mut interfaces = Vec::new();
    let mut networks = Vec::new();
    for n in &input.nics.nics {
        let mut iface = json!({"name": n.name, "model": n.model.as_str()});
        if !n.mac.is_empty() {
            iface["macAddress"] = json!(n.mac);
        }
        match &n.destination {
            Destination::Pod => {
                iface["masquerade"] = json!({});
                networks.push(json!({"name": n.name, "pod": {}}));
            }
            d @ Destination::Multus { .. } => {
                iface["bridge"] = json!({});
                networks.push(json!({"name": n.name, "multus": {"networkName": d.network_name()}}));
            }
        }
        interfaces.push(iface);
    }

    let mut devices = json!({"disks": disks, "interfaces": interfaces});
    if vm.firmware.tpm {
        devices["tpm"] = json!({"persistent": true});
    }
    let mut domain = json!({
        "cpu": {"sockets": vm.cpu.sockets, "cores": vm.cpu.cores, "threads": vm.cpu.threads},
        "memory": {"guest": mebibytes(vm.memory_mib)},
        "resources": {"limits": {"cpu": vm.cpu.vcpus().to_string(), "memory": mebibytes(vm.memory_mib)}},
        "machine": {"type": "q35"},
        "features": {"acpi": {"enabled": true}},
        "devices": devices
    });
    if vm.firmware.boot == BootMode::Uefi {
        domain["firmware"] = json!({"bootloader": {"efi": {"secureBoot": vm.firmware.secure_boot, "persistent": vm.firmware.tpm}}});
        if vm.firmware.secure_boot {
            domain["features"]["smm"] = json!({"enabled": true});
        }
    }

    json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {
            "name": input.name,
            "namespace": input.namespace,
            "labels": labels(input.name),
            "annotations": annotations
        },
        "spec": {
            "runStrategy": "RerunOnFailure",
            "template": {
                "metadata": {"labels": labels(input.name)},
                "spec": {
                    "domain": domain,
                    "networks": networks,
                    "volumes": volumes,
                    "evictionStrategy": "LiveMigrateIfPossible"
                }
            }
        }
    })
}

/// One Harvester VirtualMachineImage per disk (`sourceType: download`).
pub fn images(input: &ManifestInput<'_>) -> Vec<Value> {
    input
        .disks
        .iter()
        .map(|d| {
            let mut labels = labels(input.name);
            labels.insert(IMAGE_DISPLAY_NAME_LABEL.to_owned(), d.image_name.clone());
            let mut image = json!({
                "apiVersion": "harvesterhci.io/v1beta1",
                "kind": "VirtualMachineImage",
                "metadata": {"name": d.image_name, "namespace": input.namespace, "labels": labels},
                "spec": {
                    "displayName": d.image_name,
                    "sourceType": "download",
                    "url": d.url,
                    "checksum": d.sha512,
                    "retry": 3
                }
            });
            if let Some(sc) = input.storage_class {
                image["metadata"]["annotations"] = json!({STORAGE_CLASS_ANNOTATION: sc});
            }
            image
        })
        .collect()
}

/// Several objects as one multi-document YAML stream.
pub fn to_yaml_stream(objects: &[Value]) -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for o in objects {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(o)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CpuTopology, Disk, DiskSource, Firmware, NetworkRef, Nic};
    use crate::network::{PlannedNic, Resolution, ResolvedMapping, plan_nics};
    use vmi_api::{NetworkInterfaceModel, NetworkMapping};

    fn model() -> VmModel {
        let net = |id: &str, name: &str| NetworkRef {
            id: Some(id.into()),
            name: name.into(),
        };
        VmModel {
            source_id: "7828dc7f-9cc6-4c0f-8776-7070e38af7f2".into(),
            name: "vmi-bfv".into(),
            description: Some("Boot-from-volume test server".into()),
            cpu: CpuTopology {
                sockets: 1,
                cores: 2,
                threads: 1,
            },
            memory_mib: 1536,
            firmware: Firmware {
                boot: BootMode::Uefi,
                secure_boot: false,
                tpm: false,
            },
            disks: vec![
                Disk {
                    label: "root".into(),
                    source: DiskSource::OpenstackVolume {
                        volume_id: "v0".into(),
                    },
                    size_bytes: 1 << 30,
                    bus: Some(DiskBus::Scsi),
                },
                Disk {
                    label: "data".into(),
                    source: DiskSource::OpenstackVolume {
                        volume_id: "v1".into(),
                    },
                    size_bytes: 1 << 30,
                    bus: None,
                },
            ],
            nics: vec![
                Nic {
                    mac: "fa:16:3e:1e:8c:0a".into(),
                    network: net("a", "vmi-net-a"),
                    model: Some(NetworkInterfaceModel::E1000),
                },
                Nic {
                    mac: "fa:16:3e:4a:75:5c".into(),
                    network: net("a", "vmi-net-a"),
                    model: Some(NetworkInterfaceModel::E1000),
                },
                Nic {
                    mac: "fa:16:3e:3d:25:1c".into(),
                    network: net("b", "vmi-net-b"),
                    model: Some(NetworkInterfaceModel::E1000),
                },
            ],
        }
    }

    fn artifacts() -> Vec<DiskArtifact> {
        (0..2)
            .map(|i| DiskArtifact {
                index: i,
                image_name: disk_object_name("vmi-bfv", i),
                url: format!("http://disks.example/vmi-bfv/disk-{i}.qcow2"),
                sha512: format!("{i}").repeat(128),
                virtual_size: 1 << 30,
                bus: if i == 0 {
                    DiskBus::Scsi
                } else {
                    DiskBus::Virtio
                },
            })
            .collect()
    }

    fn mapping() -> Vec<ResolvedMapping> {
        let m = |s: &str, d: &str, id: &str| ResolvedMapping {
            mapping: NetworkMapping {
                source_network: s.into(),
                destination_network: d.into(),
                network_interface_model: None,
            },
            resolution: Resolution::Found(NetworkRef {
                id: Some(id.into()),
                name: s.into(),
            }),
        };
        vec![
            m("vmi-net-a", "default/vlan-a", "a"),
            m("vmi-net-b", "vlan-b", "b"),
        ]
    }

    #[test]
    fn the_virtual_machine_of_a_boot_from_volume_server() {
        let vm = model();
        let plan = plan_nics(&vm.nics, &mapping(), NetworkInterfaceModel::Virtio).unwrap();
        let disks = artifacts();
        let input = ManifestInput {
            vm: &vm,
            name: "vmi-bfv",
            namespace: "default",
            nics: &plan,
            disks: &disks,
            storage_class: None,
            source: "openstack server 7828dc7f-9cc6-4c0f-8776-7070e38af7f2",
        };
        let manifest = virtual_machine(&input);
        insta::assert_yaml_snapshot!(manifest);
        let cpu = &manifest["spec"]["template"]["spec"]["domain"]["cpu"];
        assert_eq!(
            cpu["sockets"].as_u64().unwrap()
                * cpu["cores"].as_u64().unwrap()
                * cpu["threads"].as_u64().unwrap(),
            2
        );
        let ifaces = manifest["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"]
            .as_array()
            .unwrap();
        let macs: Vec<_> = ifaces
            .iter()
            .map(|i| i["macAddress"].as_str().unwrap())
            .collect();
        assert_eq!(
            macs,
            [
                "fa:16:3e:1e:8c:0a",
                "fa:16:3e:4a:75:5c",
                "fa:16:3e:3d:25:1c"
            ]
        );
    }

    #[test]
    fn images_carry_the_checksum_and_the_storage_class() {
        let vm = model();
        let plan = NicPlan::default();
        let disks = artifacts();
        let input = ManifestInput {
            vm: &vm,
            name: "vmi-bfv",
            namespace: "default",
            nics: &plan,
            disks: &disks,
            storage_class: Some("fast-ssd"),
            source: "openstack server x",
        };
        insta::assert_yaml_snapshot!(images(&input));
        let vmm = virtual_machine(&input);
        let templates: Value = serde_json::from_str(
            vmm["metadata"]["annotations"][VOLUME_CLAIM_TEMPLATES_ANNOTATION]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(templates[1]["spec"]["storageClassName"], "fast-ssd");
        assert_eq!(
            templates[1]["metadata"]["annotations"][IMAGE_ID_ANNOTATION],
            "default/vmi-bfv-disk-1"
        );
    }

    #[test]
    fn a_vm_without_mapping_gets_a_pod_nic_and_secure_boot_needs_smm() {
        let mut vm = model();
        vm.firmware = Firmware {
            boot: BootMode::Uefi,
            secure_boot: true,
            tpm: true,
        };
        vm.description = None;
        let plan = NicPlan {
            nics: vec![PlannedNic {
                name: "default".into(),
                mac: "fa:16:3e:1e:8c:0a".into(),
                destination: Destination::Pod,
                model: NetworkInterfaceModel::Virtio,
            }],
            unmapped: vec![],
        };
        let disks = artifacts();
        let input = ManifestInput {
            vm: &vm,
            name: "x",
            namespace: "ns",
            nics: &plan,
            disks: &disks[..1],
            storage_class: None,
            source: "s",
        };
        let m = virtual_machine(&input);
        let spec = &m["spec"]["template"]["spec"];
        assert_eq!(spec["networks"][0]["pod"], json!({}));
        assert_eq!(
            spec["domain"]["devices"]["interfaces"][0]["masquerade"],
            json!({})
        );
        assert_eq!(spec["domain"]["features"]["smm"]["enabled"], true);
        assert_eq!(
            spec["domain"]["firmware"]["bootloader"]["efi"]["secureBoot"],
            true
        );
        assert_eq!(spec["domain"]["devices"]["tpm"]["persistent"], true);
        assert!(
            m["metadata"]["annotations"]
                .get(DESCRIPTION_ANNOTATION)
                .is_none()
        );
    }

    #[test]
    fn memory_is_exact_mebibytes_and_names_fit() {
        assert_eq!(mebibytes(1536), "1536Mi");
        assert_eq!(size_quantity(1 << 30), "1Gi");
        assert_eq!(size_quantity(67_108_864), "64Mi");
        assert_eq!(size_quantity(1000), "1000");
        let long = "a".repeat(63);
        let n = disk_object_name(&long, 12);
        assert!(n.len() <= 63 && n.ends_with("-disk-12"), "{n}");
    }
}
