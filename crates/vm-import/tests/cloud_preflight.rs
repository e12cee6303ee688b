//! `vm-import preflight` against the real local OpenStack cloud (scripts/openstack-cloud).
//! Ignored by a plain `cargo test`; `scripts/test` brings the cloud up and runs them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::pedantic
)]

mod common;

use common::cloud::{Cloud, DEMO};
use common::*;
use serde_json::Value;

struct Run {
    code: Option<i32>,
    report: Value,
    stderr: String,
}

fn preflight(cloud: &Cloud, secret: &[(&str, &str)], vm: &str, mapping: &[(&str, &str)]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "in.yaml",
        &input_yaml(&cloud.auth_url(), secret, vm, mapping),
    );
    let out = vm_import(
        &["preflight", "-f", f.to_str().unwrap(), "-o", "json", "-v"],
        &[],
    );
    let report = serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("no JSON report ({e}): {}\n{}", stdout(&out), stderr(&out)));
    Run {
        code: out.status.code(),
        report,
        stderr: stderr(&out),
    }
}

fn checks<'a>(run: &'a Run, id: &str) -> Vec<&'a Value> {
    run.report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["id"] == id)
        .collect()
}

fn one<'a>(run: &'a Run, id: &str) -> &'a Value {
    let c = checks(run, id);
    assert_eq!(c.len(), 1, "{id}: {:#?}", run.report);
    c[0]
}

fn requests(run: &Run) -> u64 {
    let line = run
        .stderr
        .lines()
        .find(|l| l.starts_with("OpenStack API requests:"))
        .unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

fn global_request_id(run: &Run) -> String {
    let i = run.stderr.find("req-").unwrap();
    run.stderr[i..i + 40].to_owned()
}

#[test]
#[ignore = "needs the local OpenStack cloud: scripts/openstack-cloud up && scripts/openstack-cloud seed"]
fn networks_by_name_and_by_id_pass_and_three_mappings_cost_at_most_twelve_requests() {
    let cloud = Cloud::load();
    let net_b = &cloud.network_ids("vmi-net-b")[0];
    let run = preflight(
        &cloud,
        DEMO,
        "vmi-bfv",
        &[
            ("vmi-net-a", "default/a"),
            (net_b, "default/b"),
            ("vmi-shared", "default/c"),
        ],
    );
    assert_eq!(run.code, Some(0), "{:#}", run.report);
    let exists = checks(&run, "network.source.exists");
    assert_eq!(exists.len(), 3);
    assert!(exists.iter().all(|c| c["status"] == "pass"));
    assert!(
        exists[1]["message"]
            .as_str()
            .unwrap()
            .contains("'vmi-net-b'")
    );
    // vmi-shared is mapped but vmi-bfv has no NIC there.
    let used: Vec<_> = checks(&run, "network.source.used")
        .iter()
        .map(|c| c["status"].clone())
        .collect();
    assert_eq!(used, ["pass", "pass", "warn"]);
    assert_eq!(one(&run, "network.unmapped")["status"], "pass");
    let disks = checks(&run, "disk.exportable");
    assert_eq!(disks.len(), 2);
    assert!(disks.iter().all(|c| c["status"] == "pass"));
    assert_eq!(one(&run, "quota")["status"], "pass");
    let n = requests(&run);
    assert!(n <= 12, "{n} requests");
    eprintln!("preflight of vmi-bfv with 3 mapped networks: {n} OpenStack API requests");
}

#[test]
#[ignore = "needs the local OpenStack cloud: scripts/openstack-cloud up && scripts/openstack-cloud seed"]
fn nova_never_sees_os_networks_during_preflight() {
    let cloud = Cloud::load();
    let run = preflight(
        &cloud,
        DEMO,
        "vmi-bfv",
        &[
            ("vmi-net-a", "default/a"),
            ("vmi-net-b", "default/b"),
            ("vmi-dup", "default/c"),
        ],
    );
    let rid = global_request_id(&run);
    let log = std::fs::read_to_string(cloud.log("nova-api")).unwrap();
    let ours: Vec<&str> = log.lines().filter(|l| l.contains(&rid)).collect();
    // The log does record this run (so its silence about os-networks means something) ...
    assert!(
        ours.iter().any(|l| l.contains("GET /v2.1/servers/detail")),
        "no request of {rid} in nova-api.log"
    );
    // ... and none of its requests went to the retired proxy.
    assert!(ours.iter().all(|l| !l.contains("os-networks")), "{ours:#?}");
}

#[test]
#[ignore = "needs the local OpenStack cloud: scripts/openstack-cloud up && scripts/openstack-cloud seed"]
fn a_missing_network_and_duplicate_names_fail_with_the_ids() {
    let cloud = Cloud::load();
    let run = preflight(
        &cloud,
        DEMO,
        "vmi-bfv",
        &[
            ("vmi-dup", "default/a"),
            ("no-such-net", "default/b"),
            ("vmi-net-a", "default/c"),
        ],
    );
    assert_eq!(run.code, Some(1));
    let exists = checks(&run, "network.source.exists");
    let dup = exists.iter().find(|c| c["subject"] == "vmi-dup").unwrap();
    assert_eq!(dup["status"], "fail");
    for id in cloud.network_ids("vmi-dup") {
        assert!(dup["message"].as_str().unwrap().contains(&id), "{dup}");
    }
    let missing = exists
        .iter()
        .find(|c| c["subject"] == "no-such-net")
        .unwrap();
    assert_eq!(missing["status"], "fail");
    assert!(
        missing["message"]
            .as_str()
            .unwrap()
            .contains("no network named or with ID 'no-such-net'")
    );
    // vmi-bfv's NIC on vmi-net-b is not mapped: reported with its MAC.
    let unmapped = checks(&run, "network.unmapped");
    let mac_b = cloud.server("vmi-bfv")["nics"][1]["mac"].as_str().unwrap();
    assert_eq!(unmapped.len(), 1);
    assert_eq!(unmapped[0]["subject"], mac_b);
    assert_eq!(unmapped[0]["status"], "warn");
}

#[test]
#[ignore = "needs the local OpenStack cloud: scripts/openstack-cloud up && scripts/openstack-cloud seed"]
fn a_network_listed_twice_fails_the_duplicate_check() {
    let cloud = Cloud::load();
    let id_a = &cloud.network_ids("vmi-net-a")[0];
    let run = preflight(
        &cloud,
        DEMO,
        "vmi-bfv",
        &[("vmi-net-a", "default/a"), (id_a, "default/b")],
    );
    assert_eq!(run.code, Some(1));
    let dup = checks(&run, "network.mapping.duplicate");
    assert!(
        dup.iter().any(|c| c["status"] == "fail"
            && c["message"]
                .as_str()
                .unwrap()
                .contains("same source network")),
        "{dup:#?}"
    );
}

#[test]
#[ignore = "needs the local OpenStack cloud: scripts/openstack-cloud up && scripts/openstack-cloud seed"]
fn the_vm_by_uuid_is_found_and_its_name_sanitised() {
    let cloud = Cloud::load();
    let id = cloud.server_id("vmi-Mixed_Case.Name 01");
    let run = preflight(&cloud, DEMO, &id, &[("vmi-net-b", "default/b")]);
    assert_eq!(run.code, Some(0), "{:#}", run.report);
    assert_eq!(one(&run, "vm.found")["status"], "pass");
    let name = one(&run, "vm.name");
    assert_eq!(name["status"], "pass");
    assert!(
        name["message"]
            .as_str()
            .unwrap()
            .contains("imported as 'vmi-mixed-case-name-01'"),
        "{name}"
    );
    // By name too, with its capitals, dot and space.
    let run = preflight(
        &cloud,
        DEMO,
        "vmi-Mixed_Case.Name 01",
        &[("vmi-net-b", "default/b")],
    );
    assert_eq!(one(&run, "vm.found")["status"], "pass");
}

#[test]
#[ignore = "needs the local OpenStack cloud: scripts/openstack-cloud up && scripts/openstack-cloud seed"]
fn two_servers_with_one_name_fail_listing_both_ids() {
    let cloud = Cloud::load();
    let run = preflight(&cloud, DEMO, "vmi-twin", &[]);
    assert_eq!(run.code, Some(1));
    let found = one(&run, "vm.found");
    assert_eq!(found["status"], "fail");
    let msg = found["message"].as_str().unwrap();
    for s in cloud.seed["servers"]["vmi-twin"].as_array().unwrap() {
        assert!(msg.contains(s["id"].as_str().unwrap()), "{msg}");
    }
    assert!(msg.contains("put the ID"), "{msg}");
}

#[test]
#[ignore = "needs the local OpenStack cloud: scripts/openstack-cloud up && scripts/openstack-cloud seed"]
fn a_missing_vm_and_a_partial_name_are_not_found() {
    let cloud = Cloud::load();
    for vm in [
        "vmi-no-such-vm",
        "vmi-bf",
        "VMI-BFV",
        "12345678-1234-1234-1234-123456789abc",
    ] {
        let run = preflight(&cloud, DEMO, vm, &[("vmi-net-a", "default/a")]);
        assert_eq!(run.code, Some(1), "{vm}");
        let found = one(&run, "vm.found");
        assert_eq!(found["status"], "fail", "{vm}");
        assert!(
            found["message"]
                .as_str()
                .unwrap()
                .contains(&format!("'{vm}'")),
            "{found}"
        );
        // The networks are still checked; the VM-dependent checks are skipped, not passed.
        assert_eq!(checks(&run, "network.source.exists")[0]["status"], "pass");
        assert_eq!(one(&run, "disk.exportable")["status"], "skip");
    }
    let run = preflight(&cloud, DEMO, "vmi-bf", &[]);
    assert!(
        one(&run, "vm.found")["message"]
            .as_str()
            .unwrap()
            .contains("similar names: 'vmi-bfv'")
    );
}

#[test]
#[ignore = "needs the local OpenStack cloud: scripts/openstack-cloud up && scripts/openstack-cloud seed"]
fn an_image_booted_server_exports_its_root_through_create_image() {
    let cloud = Cloud::load();
    let run = preflight(
        &cloud,
        DEMO,
        "vmi-image-booted",
        &[("vmi-shared", "default/s")],
    );
    assert_eq!(run.code, Some(0), "{:#}", run.report);
    let disk = one(&run, "disk.exportable");
    assert!(
        disk["message"].as_str().unwrap().contains("createImage"),
        "{disk}"
    );
    assert!(
        one(&run, "quota")["message"]
            .as_str()
            .unwrap()
            .contains("no temporary Cinder")
    );
}

#[test]
#[ignore = "needs the local OpenStack cloud: scripts/openstack-cloud up && scripts/openstack-cloud seed"]
fn a_wrong_password_is_a_clear_source_auth_failure() {
    let cloud = Cloud::load();
    let secret = [
        ("username", "demo"),
        ("password", "wrong-password"),
        ("project_name", "demo"),
        ("domain_name", "Default"),
    ];
    let run = preflight(&cloud, &secret, "vmi-bfv", &[("vmi-net-a", "default/a")]);
    assert_eq!(run.code, Some(1));
    let auth = one(&run, "source.auth");
    assert_eq!(auth["status"], "fail");
    let msg = auth["message"].as_str().unwrap();
    assert!(
        msg.contains("Keystone refused the credentials of user 'demo'"),
        "{msg}"
    );
    assert!(
        msg.contains("HTTP 401") && msg.contains("Secret default/cloud-credentials"),
        "{msg}"
    );
    assert!(!msg.contains("wrong-password") && !run.stderr.contains("wrong-password"));
    assert_eq!(one(&run, "vm.found")["status"], "skip");
}

#[test]
#[ignore = "needs the local OpenStack cloud: scripts/openstack-cloud up && scripts/openstack-cloud seed"]
fn os_cloud_from_clouds_yaml_replaces_the_secret() {
    let cloud = Cloud::load();
    let dir = tempfile::tempdir().unwrap();
    let text = input_yaml(
        &cloud.auth_url(),
        DEMO,
        "vmi-bfv",
        &[("vmi-net-a", "default/a"), ("vmi-net-b", "default/b")],
    );
    let only_import = text.split("---").nth(2).unwrap();
    let f = write(dir.path(), "in.yaml", only_import);
    let out = vm_import(
        &[
            "preflight",
            "-f",
            f.to_str().unwrap(),
            "--os-cloud",
            "vmi-demo",
        ],
        &[("OS_CLIENT_CONFIG_FILE", &cloud.clouds_yaml())],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    // And from OS_* variables, as after sourcing demo-openrc.
    let out = vm_import(
        &["preflight", "-f", f.to_str().unwrap()],
        &[
            ("OS_AUTH_URL", &cloud.auth_url()),
            ("OS_USERNAME", "demo"),
            ("OS_PASSWORD", "vmi-demo-pass"),
            ("OS_PROJECT_NAME", "demo"),
            ("OS_USER_DOMAIN_NAME", "Default"),
            ("OS_PROJECT_DOMAIN_NAME", "Default"),
            ("OS_REGION_NAME", "RegionOne"),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
}

#[test]
#[ignore = "needs the local OpenStack cloud: scripts/openstack-cloud up && scripts/openstack-cloud seed"]
fn preflight_changes_nothing_on_the_source() {
    let cloud = Cloud::load();
    let run = preflight(&cloud, DEMO, "vmi-bfv", &[("vmi-net-a", "default/a")]);
    let rid = global_request_id(&run);
    // Every request of the run, in every service's log, is a read.
    for service in ["nova-api", "neutron-api", "cinder-api", "glance-api"] {
        let log = std::fs::read_to_string(cloud.log(service)).unwrap_or_default();
        for line in log.lines().filter(|l| l.contains(&rid)) {
            for verb in ["\"POST ", "\"PUT ", "\"DELETE ", "\"PATCH "] {
                assert!(!line.contains(verb), "{service}: {line}");
            }
        }
    }
}
