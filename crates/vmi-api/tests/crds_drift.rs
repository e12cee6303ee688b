//! The committed CRDs are exactly what the types generate. Regenerate with
//! `cargo run -p vm-import -- crds > deploy/crds.yaml` after changing a type.
#![allow(clippy::unwrap_used, clippy::panic, clippy::pedantic)]

#[test]
fn committed_crds_match_the_types() {
    let path = format!("{}/../../deploy/crds.yaml", env!("CARGO_MANIFEST_DIR"));
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = vmi_api::crds_yaml().unwrap();
    assert!(
        committed == generated,
        "deploy/crds.yaml is out of date with the Rust types; run \
         `cargo run -p vm-import -- crds > deploy/crds.yaml` and commit it"
    );
}

#[test]
fn every_kind_is_namespaced_with_status_and_a_status_column() {
    let docs: Vec<serde_yaml::Value> =
        serde_yaml::Deserializer::from_str(&vmi_api::crds_yaml().unwrap())
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .filter(|v: &serde_yaml::Value| !v.is_null())
            .collect();
    let mut names = Vec::new();
    for d in &docs {
        let spec = &d["spec"];
        assert_eq!(spec["group"].as_str(), Some("migration.harvesterhci.io"));
        assert_eq!(spec["scope"].as_str(), Some("Namespaced"));
        let v = &spec["versions"][0];
        assert_eq!(v["name"].as_str(), Some("v1beta1"));
        assert!(v["subresources"]["status"].is_mapping());
        let col = &v["additionalPrinterColumns"][0];
        assert_eq!(col["name"].as_str(), Some("Status"));
        let want = if spec["names"]["kind"].as_str() == Some("VirtualMachineImport") {
            ".status.importStatus"
        } else {
            ".status.status"
        };
        assert_eq!(col["jsonPath"].as_str(), Some(want));
        names.push(d["metadata"]["name"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        names,
        [
            "openstacksources.migration.harvesterhci.io",
            "ovasources.migration.harvesterhci.io",
            "vmwaresources.migration.harvesterhci.io",
            "virtualmachineimports.migration.harvesterhci.io"
        ]
    );
}
