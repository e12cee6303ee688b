//! The example objects of upstream's README parse unchanged into our types, and survive a
//! round trip without losing a field.
#![allow(clippy::unwrap_used, clippy::panic, clippy::pedantic)]

use vmi_api::{OpenstackSource, VirtualMachineImport, VmwareSource};

fn read(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/upstream/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn round_trips<T: serde::de::DeserializeOwned + serde::Serialize>(name: &str) -> T {
    let text = read(name);
    let typed: T = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    let original: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let back: serde_yaml::Value = serde_yaml::to_value(&typed).unwrap();
    assert_eq!(
        strip(original),
        strip(back),
        "{name} changed in a round trip"
    );
    typed
}

/// Comments and quoting are not data; compare values only.
fn strip(v: serde_yaml::Value) -> serde_json::Value {
    serde_json::to_value(v).unwrap()
}

#[test]
fn openstack_source_example() {
    let s: OpenstackSource = round_trips("openstack-source.yaml");
    assert_eq!(s.spec.endpoint, "https://devstack/identity");
    assert_eq!(
        s.spec.credentials.name.as_deref(),
        Some("devstack-credentials")
    );
}

#[test]
fn vmware_source_example() {
    let s: VmwareSource = round_trips("vmware-source.yaml");
    assert_eq!(s.spec.dc, "DCO");
}

#[test]
fn import_examples() {
    for name in [
        "openstack-import.yaml",
        "openstack-import-short-kind.yaml",
        "vmware-import.yaml",
        "vmware-import-short-kind.yaml",
    ] {
        let i: VirtualMachineImport = round_trips(name);
        assert_eq!(i.spec.network_mapping.len(), 2, "{name}");
        assert_eq!(
            i.spec.network_mapping[0].destination_network,
            "default/vlan1"
        );
    }
}

#[test]
fn secrets_parse_as_core_v1_secrets() {
    for name in ["openstack-secret.yaml", "vmware-secret.yaml"] {
        let s: k8s_openapi::api::core::v1::Secret = serde_yaml::from_str(&read(name)).unwrap();
        assert!(s.string_data.unwrap().contains_key("password"), "{name}");
    }
}

#[test]
fn an_import_with_status_written_by_the_go_controller_parses() {
    let text = r#"
apiVersion: migration.harvesterhci.io/v1beta1
kind: VirtualMachineImport
metadata: {name: i, namespace: m}
spec:
  virtualMachineName: a
  sourceCluster: {kind: OvaSource, name: o, namespace: m}
  defaultDiskBusType: sata
  defaultNetworkInterfaceModel: e1000e
  forcePowerOff: true
  gracefulShutdownTimeoutSeconds: 600
  skipPreflightChecks: false
  networkMapping:
  - {sourceNetwork: VM Network, destinationNetwork: default/vlan1, networkInterfaceModel: ne2k_pci}
status:
  importStatus: diskImageSubmitted
  importedVirtualMachineName: a
  diskImportStatus:
  - {diskName: a-d1.img, diskSize: 117440512, VirtualMachineImage: image-x, busType: virtio,
     diskConditions: [{type: VirtualMachineImageSubmitted, status: "True", lastUpdateTime: "2026-09-27T12:00:01Z"}]}
  importConditions:
  - {type: VMExportFailed, status: "False", message: ok}
"#;
    let i: VirtualMachineImport = serde_yaml::from_str(text).unwrap();
    let status = i.status.unwrap();
    assert_eq!(
        status.import_status,
        Some(vmi_api::ImportStatus::DiskImagesSubmitted)
    );
    assert_eq!(
        status.disk_import_status[0]
            .virtual_machine_image
            .as_deref(),
        Some("image-x")
    );
    assert_eq!(
        i.spec.network_mapping[0].network_interface_model,
        Some(vmi_api::NetworkInterfaceModel::Ne2kPci)
    );
}
