//! Preflight against the fixture cloud: the report, the request budget, and Neutron only.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::pedantic
)]

mod support;

use serde_json::json;
use support::*;
use vmi_api::VirtualMachineImport;
use vmi_core::preflight::{CheckId, CheckStatus};
use vmi_openstack::OpenstackApi;
use vmi_openstack::preflight::{PreflightInput, run};
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, ResponseTemplate};

const SERVER: &str = "91f59803-e727-41c0-81c4-e5a83554b256";
const NET_A: &str = "77efc537-84e0-495b-8788-34b2584b50d0";
const NET_B: &str = "dbc10144-43f7-49c3-a627-77ec2b8efe72";
const NET_C: &str = "e440b79c-fb5e-41db-a5cb-d1ed9c2c450c";

fn import(vm: &str, mapping: &[(&str, &str)]) -> VirtualMachineImport {
    let mapping: Vec<_> = mapping
        .iter()
        .map(|(s, d)| json!({"sourceNetwork": s, "destinationNetwork": d}))
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "migration.harvesterhci.io/v1beta1",
        "kind": "VirtualMachineImport",
        "metadata": {"name": "bfv", "namespace": "default"},
        "spec": {
            "virtualMachineName": vm,
            "networkMapping": mapping,
            "sourceCluster": {"name": "local", "namespace": "default", "kind": "OpenstackSource"}
        }
    }))
    .unwrap()
}

async fn mount_bfv(cloud: &FixtureCloud) {
    Mock::given(method("GET"))
        .and(path("/compute/v2.1/servers/detail"))
        .and(query_param("name", "^vmi-bfv$"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"servers": [server_json(SERVER, "vmi-bfv", "ACTIVE")]})),
        )
        .mount(&cloud.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/network/v2.0/ports"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ports": [
            port_json("0a", NET_A, "fa:16:3e:00:38:9b", SERVER),
            port_json("0b", NET_B, "fa:16:3e:6d:98:15", SERVER),
            port_json("0c", NET_A, "fa:16:3e:00:38:9a", SERVER)
        ]})))
        .mount(&cloud.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/network/v2.0/networks"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"networks": [
                network_json(NET_A, "vmi-net-a"),
                network_json(NET_B, "vmi-net-b"),
                network_json(NET_C, "vmi-net-c"),
                network_json("565e7c0b-74e8-486c-8b9d-9daf4094acf5", "vmi-dup"),
                network_json("c779a780-844b-46d6-8a28-ad52f5d1009f", "vmi-dup")
            ]})),
        )
        .mount(&cloud.server)
        .await;
    for (id, boot, dev) in [
        ("c8eedc25-4cf1-4071-85a6-bbb15e4d9eca", true, "/dev/vda"),
        ("274a2b0f-f67b-4eb3-9fb6-2ca068c5de6a", false, "/dev/vdb"),
    ] {
        Mock::given(method("GET"))
            .and(path(format!("/volume/v3/{PROJECT}/volumes/{id}")))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({"volume": volume_json(id, "in-use", boot, dev, SERVER)})),
            )
            .mount(&cloud.server)
            .await;
    }
    Mock::given(method("GET"))
        .and(path(format!(
            "/volume/v3/{PROJECT}/os-quota-sets/{PROJECT}"
        )))
        .respond_with(ResponseTemplate::new(200).set_body_json(quota_json()))
        .mount(&cloud.server)
        .await;
}

fn input<'a>(import: &'a VirtualMachineImport, endpoint: &'a str) -> PreflightInput<'a> {
    PreflightInput {
        import,
        endpoint,
        credentials: "user 'demo'",
        tls_insecure: false,
        destination_exists: None,
    }
}

#[tokio::test]
async fn three_mapped_networks_take_at_most_twelve_requests_and_never_os_networks() {
    let cloud = FixtureCloud::start().await;
    mount_bfv(&cloud).await;
    let imp = import(
        "vmi-bfv",
        &[
            ("vmi-net-a", "default/a"),
            ("vmi-net-b", "default/b"),
            (NET_C, "default/c"),
        ],
    );
    let api = cloud.client();
    let endpoint = format!("{}/identity", cloud.uri());
    let out = run(&api, &input(&imp, &endpoint)).await;
    let paths = cloud.received_paths().await;
    assert!(
        paths.iter().all(|p| !p.contains("os-networks")),
        "{paths:?}"
    );
    assert!(
        api.request_count() <= 12,
        "{} requests: {paths:?}",
        api.request_count()
    );
    assert_eq!(api.request_count() as usize, paths.len());
    assert!(out.report.passed(), "{}", out.report.render_text());
    // net-c is mapped but carries no NIC: a warning, not a failure.
    let used: Vec<_> = out
        .report
        .checks
        .iter()
        .filter(|c| c.id == CheckId::NetworkSourceUsed)
        .map(|c| c.status)
        .collect();
    assert_eq!(
        used,
        [CheckStatus::Pass, CheckStatus::Pass, CheckStatus::Warn]
    );
    let facts = out.facts.unwrap();
    let macs: Vec<_> = facts.model_nics.iter().map(|n| n.mac.as_str()).collect();
    assert_eq!(
        macs,
        [
            "fa:16:3e:00:38:9a",
            "fa:16:3e:00:38:9b",
            "fa:16:3e:6d:98:15"
        ]
    );
    insta::assert_snapshot!(
        out.report
            .render_text()
            .replace(&cloud.uri(), "http://cloud")
    );
}

#[tokio::test]
async fn duplicate_network_names_and_unmapped_nics_are_reported() {
    let cloud = FixtureCloud::start().await;
    mount_bfv(&cloud).await;
    let imp = import(
        "vmi-bfv",
        &[
            ("vmi-dup", "default/a"),
            ("vmi-net-a", "default/a"),
            ("vmi-net-a", "default/b"),
        ],
    );
    let api = cloud.client();
    let endpoint = format!("{}/identity", cloud.uri());
    let out = run(&api, &input(&imp, &endpoint)).await;
    assert!(!out.report.passed());
    let text = out
        .report
        .render_text()
        .replace(&cloud.uri(), "http://cloud");
    assert!(
        text.contains("565e7c0b-74e8-486c-8b9d-9daf4094acf5, c779a780-844b-46d6-8a28-ad52f5d1009f"),
        "{text}"
    );
    assert!(text.contains("listed 2 times"), "{text}");
    let unmapped: Vec<_> = out
        .report
        .checks
        .iter()
        .filter(|c| c.id == CheckId::NetworkUnmapped)
        .collect();
    assert_eq!(unmapped.len(), 1);
    assert_eq!(unmapped[0].subject, "fa:16:3e:6d:98:15");
    insta::assert_snapshot!(text);
}

#[tokio::test]
async fn a_vm_that_only_matches_partially_is_not_found_with_hints() {
    let cloud = FixtureCloud::start().await;
    Mock::given(method("GET"))
        .and(path("/compute/v2.1/servers/detail"))
        .and(query_param("name", "^vmi-bf$"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"servers": []})))
        .mount(&cloud.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/compute/v2.1/servers/detail"))
        .and(query_param("name", "vmi-bf"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"servers": [server_json(SERVER, "vmi-bfv", "ACTIVE")]})),
        )
        .mount(&cloud.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/network/v2.0/networks"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"networks": []})))
        .mount(&cloud.server)
        .await;
    let imp = import("vmi-bf", &[("vmi-nope", "default/a")]);
    let api = cloud.client();
    let endpoint = format!("{}/identity", cloud.uri());
    let out = run(&api, &input(&imp, &endpoint)).await;
    let found = out
        .report
        .checks
        .iter()
        .find(|c| c.id == CheckId::VmFound)
        .unwrap();
    assert_eq!(found.status, CheckStatus::Fail);
    assert!(
        found.message.contains("no server named 'vmi-bf'"),
        "{}",
        found.message
    );
    assert!(
        found.message.contains(&format!("'vmi-bfv' ({SERVER})")),
        "{}",
        found.message
    );
    let exists = out
        .report
        .checks
        .iter()
        .find(|c| c.id == CheckId::NetworkSourceExists)
        .unwrap();
    assert_eq!(exists.status, CheckStatus::Fail);
    assert!(
        out.report
            .checks
            .iter()
            .any(|c| c.id == CheckId::DiskExportable && c.status == CheckStatus::Skip)
    );
}

#[tokio::test]
async fn an_auth_failure_fails_source_auth_and_still_checks_the_input() {
    let server = wiremock::MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/identity/v3/auth/tokens"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"error": {"code": 401, "message": "The request you have made requires authentication.", "title": "Unauthorized"}})))
        .mount(&server)
        .await;
    let cloud = FixtureCloud { server };
    let imp = import("vmi-bfv", &[("a", "Bad Name"), ("a", "default/x")]);
    let api = cloud.client();
    let endpoint = format!("{}/identity", cloud.uri());
    let out = run(&api, &input(&imp, &endpoint)).await;
    let auth = out
        .report
        .checks
        .iter()
        .find(|c| c.id == CheckId::SourceAuth)
        .unwrap();
    assert_eq!(auth.status, CheckStatus::Fail);
    assert!(
        auth.message
            .contains("Keystone refused the credentials of user 'demo'"),
        "{}",
        auth.message
    );
    assert!(
        out.report
            .checks
            .iter()
            .any(|c| c.id == CheckId::NetworkMappingDuplicate && c.status == CheckStatus::Fail)
    );
    assert!(
        out.report
            .checks
            .iter()
            .any(|c| c.id == CheckId::NetworkDestination && c.status == CheckStatus::Fail)
    );
    assert_eq!(api.request_count(), 1);
}
