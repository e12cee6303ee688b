//! `vm-import controller`, black-box: the real binary against the fake Kubernetes API
//! (crates/vmi-fake-kube) and the real local OpenStack cloud. A small test actor plays
//! Harvester's image controller (downloads the served URL, checks the SHA-512, sets
//! `Imported=True`) and KubeVirt (marks the VM ready).
//!
//! Ignored by a plain `cargo test`; `scripts/test` runs them, one at a time with the other
//! cloud imports (.config/nextest.toml).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::pedantic
)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;

use common::cloud::{Cloud, DEMO};
use common::controller::*;
use kube::Api;
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use vmi_api::{OpenstackSource, VirtualMachineImport};
use vmi_openstack::OpenstackApi;

/// The engine step of disk `d` as the status records it.
fn disk_step(i: &VirtualMachineImport, d: usize) -> String {
    i.status
        .as_ref()
        .and_then(|s| s.engine_state.as_ref())
        .and_then(|e| e["disks"][d]["export"]["step"].as_str())
        .unwrap_or_default()
        .to_owned()
}

fn server_status(cloud_api: &vmi_openstack::HttpOpenstack, id: &str) -> String {
    let rt = tokio::runtime::Handle::current();
    tokio::task::block_in_place(|| {
        rt.block_on(async {
            cloud_api
                .get_server(id)
                .await
                .unwrap()
                .map(|s| format!("{:?}", s.status).to_uppercase())
                .unwrap_or_default()
        })
    })
}

/// Starts a seeded server (os-start) through the rig's own client and waits for ACTIVE.
fn start_server(cloud: &Cloud, api: &vmi_openstack::HttpOpenstack, id: &str) {
    let script = format!(
        "import sys; sys.path.insert(0, {dir:?}); import osapi; s = osapi.Session({cy:?}, 'vmi-demo'); s.post('compute', '/servers/{id}/action', {{'os-start': None}}, ok=(202, 409))",
        dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/cloud"),
        cy = cloud.clouds_yaml(),
    );
    let st = Command::new("python3")
        .args(["-c", &script])
        .status()
        .unwrap();
    assert!(st.success(), "os-start failed");
    let start = Instant::now();
    while server_status(api, id) != "ACTIVE" {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "server did not start"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn nets(vm: &Value) -> Vec<String> {
    vm["spec"]["template"]["spec"]["networks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            n["multus"]["networkName"]
                .as_str()
                .unwrap_or("pod")
                .to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the local OpenStack cloud: scripts/openstack-cloud up && scripts/openstack-cloud seed"]
async fn an_import_runs_to_a_ready_vm_with_verified_disks_and_leaves_nothing() {
    let h = Harness::start().await;
    h.nads(&["vlan-a", "vlan-b"]).await;
    h.source("cloud", DEMO).await;
    h.import(
        "bfv",
        "cloud",
        "vmi-bfv",
        &[("vmi-net-a", "default/vlan-a"), ("vmi-net-b", "vlan-b")],
    )
    .await;

    // While the images are submitted, a guessed URL is a plain 404.
    let submitted = h
        .wait_import(
            "bfv",
            "diskImageSubmitted or later",
            Duration::from_secs(300),
            |i| {
                i.status
                    .as_ref()
                    .and_then(|s| s.destination.as_ref())
                    .is_some_and(|d| !d.images.is_empty())
            },
        )
        .await;
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{}", h.disk_port);
    let real = submitted
        .status
        .as_ref()
        .unwrap()
        .destination
        .as_ref()
        .unwrap()
        .images[0]
        .path
        .clone()
        .unwrap();
    let token = real.split('/').nth(2).unwrap().to_owned();
    assert_eq!(token.len(), 64, "{real}");
    for forged in [
        format!("/disks/{}/disk-0.qcow2", "0".repeat(64)),
        format!("/disks/{token}/disk-1.qcow2"),
        format!("/disks/{token}/"),
        "/disks/".to_owned(),
        "/".to_owned(),
    ] {
        let r = http.get(format!("{base}{forged}")).send().await.unwrap();
        assert_eq!(r.status(), 404, "{forged}");
    }

    let done = h
        .wait_import(
            "bfv",
            "virtualMachineRunning",
            Duration::from_secs(300),
            |i| status_is(i, "virtualMachineRunning"),
        )
        .await;
    let status = done.status.clone().unwrap();
    assert_eq!(
        status.imported_virtual_machine_name.as_deref(),
        Some("vmi-bfv")
    );
    assert_eq!(status.new_virtual_machine.as_deref(), Some("vmi-bfv"));
    assert!(
        status.temporary_resources.is_empty(),
        "{:?}",
        status.temporary_resources
    );
    let dest = status.destination.clone().unwrap();
    assert_eq!(dest.images.len(), 2);
    assert!(dest.images.iter().all(|r| r.ready && r.attempts == 1));

    // Harvester's side downloaded each disk once and the SHA-512 matched.
    let seen = h.seen.lock().unwrap().downloads.clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen.iter().all(|(_, _, ok, _)| *ok), "{seen:?}");

    // The images outlive the import; the VM has the NICs in order with their MACs.
    let images: Api<DynamicObject> = Api::namespaced_with(h.client.clone(), NS, &image_ar());
    for r in &dest.images {
        let img = images.get(&r.name).await.unwrap();
        assert!(
            img.metadata
                .owner_references
                .clone()
                .unwrap_or_default()
                .is_empty(),
            "{}",
            r.name
        );
        assert_eq!(img.data["spec"]["sourceType"], "download");
        assert_eq!(img.data["spec"]["checksum"].as_str().unwrap().len(), 128);
    }
    let pvcs: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        Api::namespaced(h.client.clone(), NS);
    for v in &dest.volumes {
        let pvc = pvcs.get(v).await.unwrap();
        let spec = pvc.spec.unwrap();
        assert_eq!(spec.volume_mode.as_deref(), Some("Block"));
        assert_eq!(spec.access_modes.unwrap(), vec!["ReadWriteMany".to_owned()]);
        assert_eq!(
            pvc.metadata.annotations.unwrap()["harvesterhci.io/imageId"],
            format!("{NS}/{v}")
        );
    }
    assert_eq!(dest.volumes.len(), 2);
    let vms: Api<DynamicObject> = Api::namespaced_with(h.client.clone(), NS, &vm_ar());
    let vm = serde_json::to_value(vms.get("vmi-bfv").await.unwrap()).unwrap();
    assert_eq!(nets(&vm), ["default/vlan-a", "default/vlan-a", "vlan-b"]);
    let seed_vm = h.cloud().server("vmi-bfv");
    let macs: Vec<&str> = vm["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["macAddress"].as_str().unwrap())
        .collect();
    let seed_macs: Vec<&str> = seed_vm["nics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["mac"].as_str().unwrap())
        .collect();
    assert_eq!(macs.len(), 3);
    for m in seed_macs {
        assert!(macs.contains(&m), "{m} not in {macs:?}");
    }

    // Nothing on the source, nothing in the scratch folder; Events tell the story.
    let left = h.leftovers("bfv", &h.cloud().server_id("vmi-bfv"), 2).await;
    assert!(left.is_empty(), "{left:?}");
    let files = h.scratch_files();
    assert!(files.is_empty(), "{files:?}");
    let reasons: Vec<String> = h.events_for("bfv").await.into_iter().map(|e| e.1).collect();
    for want in [
        "VirtualMachineImportValid",
        "DiskImagesReady",
        "VirtualMachineCreated",
        "VirtualMachineRunning",
    ] {
        assert!(
            reasons.iter().any(|r| r == want),
            "no {want} event in {reasons:?}"
        );
    }
    // Metrics and health answer; the logs are JSON lines naming the import, with no secret.
    let m = http
        .get(format!("http://127.0.0.1:{}/metrics", h.metrics_port))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(m.contains("vm_import_source_bytes_total"), "{m}");
    assert!(m.contains("vm_import_imports{stage=\"running\"} 1"), "{m}");
    assert!(m.contains("vm_import_leader 1"), "{m}");
    let ready = http
        .get(format!("http://127.0.0.1:{}/readyz", h.metrics_port))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let log = h.log();
    assert!(!log.contains("vmi-demo-pass"), "a password is in the log");
    let import_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"default/bfv\""))
        .collect();
    assert!(import_lines.len() > 3, "{}", tail(&log, 20));
    for l in log.lines() {
        serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the local OpenStack cloud: scripts/openstack-cloud up && scripts/openstack-cloud seed"]
async fn a_failed_preflight_marks_the_import_invalid_and_leaves_the_vm_running() {
    let h = Harness::start().await;
    let api = h.demo_api();
    let id = h.cloud().server_id("vmi-image-booted");
    start_server(h.cloud(), &api, &id);
    h.nads(&["s"]).await;
    h.source("cloud", DEMO).await;
    h.import(
        "bad-net",
        "cloud",
        "vmi-image-booted",
        &[
            ("no-such-network", "default/s"),
            ("vmi-shared", "default/missing-nad"),
        ],
    )
    .await;
    let i = h
        .wait_import("bad-net", "invalid", Duration::from_secs(60), |i| {
            status_is(i, "virtualMachineImportInvalid")
        })
        .await;
    let conds = i.status.unwrap().import_conditions;
    let types: Vec<&str> = conds.iter().map(|c| c.type_.as_str()).collect();
    assert!(
        types.contains(&"PreflightCheckFailed/network.source.exists"),
        "{types:?}"
    );
    assert!(
        types.contains(&"PreflightCheckFailed/network.destination"),
        "{types:?}"
    );
    let msg = conds
        .iter()
        .find(|c| c.type_ == "PreflightCheckFailed/network.source.exists")
        .and_then(|c| c.message.clone())
        .unwrap();
    assert!(
        msg.contains("no-such-network") && msg.contains("Neutron"),
        "{msg}"
    );
    // Nothing was touched: the server still runs, nothing was created.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(server_status(&api, &id), "ACTIVE");
    assert!(h.leftovers("bad-net", &id, 1).await.is_empty());
    let events = h.events_for("bad-net").await;
    assert!(
        events.iter().any(|(t, r, n)| t == "Warning"
            && r == "NetworkSourceExists"
            && n.contains("no-such-network")),
        "{events:?}"
    );
    // Fixing the spec runs preflight again (and this time the import goes ahead).
    let fixed = json!({"spec": {"networkMapping": [{"sourceNetwork": "vmi-shared", "destinationNetwork": "default/s"}]}});
    h.imports()
        .patch("bad-net", &PatchParams::default(), &Patch::Merge(fixed))
        .await
        .unwrap();
    h.wait_import("bad-net", "past preflight", Duration::from_secs(60), |i| {
        i.status.as_ref().and_then(|s| s.import_status).is_some()
            && !status_is(i, "virtualMachineImportInvalid")
    })
    .await;
    h.imports()
        .delete("bad-net", &DeleteParams::default())
        .await
        .unwrap();
    let start = Instant::now();
    while h.imports().get_opt("bad-net").await.unwrap().is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{}",
            tail(&h.log(), 30)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(h.leftovers("bad-net", &id, 1).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the local OpenStack cloud: scripts/openstack-cloud up && scripts/openstack-cloud seed"]
async fn deleting_an_import_mid_export_cancels_it_and_removes_everything() {
    let h = Harness::start().await;
    h.nads(&["a", "b"]).await;
    h.source("cloud", DEMO).await;
    h.import(
        "cancel",
        "cloud",
        "vmi-bfv",
        &[("vmi-net-a", "a"), ("vmi-net-b", "b")],
    )
    .await;
    // Mid-export: a temporary resource exists on the source.
    h.wait_import("cancel", "exporting", Duration::from_secs(120), |i| {
        i.status
            .as_ref()
            .is_some_and(|s| s.temporary_resources.iter().any(|t| t.kind != "file"))
    })
    .await;
    h.imports()
        .delete("cancel", &DeleteParams::default())
        .await
        .unwrap();
    let start = Instant::now();
    while h.imports().get_opt("cancel").await.unwrap().is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "still there\n{}",
            tail(&h.log(), 30)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let left = h
        .leftovers("cancel", &h.cloud().server_id("vmi-bfv"), 2)
        .await;
    assert!(left.is_empty(), "{left:?}");
    let files = h.scratch_files();
    assert!(files.is_empty(), "{files:?}");
    let images: Api<DynamicObject> = Api::namespaced_with(h.client.clone(), NS, &image_ar());
    assert!(
        images
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the local OpenStack cloud: scripts/openstack-cloud up && scripts/openstack-cloud seed"]
async fn a_controller_killed_mid_export_resumes_from_status_and_leaks_nothing() {
    let mut h = Harness::start().await;
    h.nads(&["a", "b"]).await;
    h.source("cloud", DEMO).await;
    h.import(
        "resume",
        "cloud",
        "vmi-bfv",
        &[("vmi-net-a", "a"), ("vmi-net-b", "b")],
    )
    .await;
    let mid = h
        .wait_import("resume", "mid-export", Duration::from_secs(180), |i| {
            let s = disk_step(i, 1);
            matches!(
                s.as_str(),
                "awaitVolume" | "uploadImage" | "awaitImage" | "download"
            )
        })
        .await;
    h.kill_controller();
    let step_at_kill = disk_step(&mid, 1);
    tokio::time::sleep(Duration::from_secs(4)).await; // the lease runs out
    h.start_controller();
    let done = h
        .wait_import(
            "resume",
            "virtualMachineRunning",
            Duration::from_secs(400),
            |i| status_is(i, "virtualMachineRunning"),
        )
        .await;
    assert!(done.status.unwrap().temporary_resources.is_empty());
    let left = h
        .leftovers("resume", &h.cloud().server_id("vmi-bfv"), 2)
        .await;
    assert!(left.is_empty(), "killed at {step_at_kill}: {left:?}");
    let seen = h.seen.lock().unwrap().downloads.clone();
    assert!(seen.iter().all(|(_, _, ok, _)| *ok), "{seen:?}");
    assert!(h.scratch_files().is_empty(), "{:?}", h.scratch_files());
    // The second controller picked up the same resources: no second volume was made.
    let log = h.log();
    assert!(!log.contains("\"level\":\"ERROR\""), "{}", tail(&log, 30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the local OpenStack cloud: scripts/openstack-cloud up && scripts/openstack-cloud seed"]
async fn a_wrong_password_makes_the_source_not_ready_with_the_reason_until_it_is_fixed() {
    let h = Harness::start().await;
    let wrong: Vec<(&str, &str)> = DEMO
        .iter()
        .map(|(k, v)| {
            if *k == "password" {
                (*k, "not-the-password")
            } else {
                (*k, *v)
            }
        })
        .collect();
    h.source("cloud", &wrong).await;
    let sources: Api<OpenstackSource> = Api::namespaced(h.client.clone(), NS);
    let start = Instant::now();
    let src = loop {
        let s = sources.get("cloud").await.unwrap();
        if s.status.as_ref().and_then(|s| s.status).is_some() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{}",
            tail(&h.log(), 30)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let st = src.status.unwrap();
    assert_eq!(serde_json::to_value(st.status).unwrap(), "clusterNotReady");
    let ready = st
        .conditions
        .iter()
        .find(|c| c.type_ == "ClusterReady")
        .unwrap();
    assert_eq!(ready.reason.as_deref(), Some("AuthenticationFailed"));
    assert!(
        ready
            .message
            .as_deref()
            .unwrap()
            .contains("refused the credentials"),
        "{ready:?}"
    );
    assert!(!h.log().contains("not-the-password"));
    // An import of it waits, saying why.
    h.import("waits", "cloud", "vmi-image-booted", &[]).await;
    let i = h
        .wait_import(
            "waits",
            "waiting for the source",
            Duration::from_secs(60),
            |i| {
                i.status.as_ref().is_some_and(|s| {
                    s.import_conditions.iter().any(|c| {
                        c.type_ == "SourceReady" && c.reason.as_deref() == Some("SourceNotReady")
                    })
                })
            },
        )
        .await;
    assert!(i.status.unwrap().import_status.is_none());
    // Fixing the Secret makes the source ready without touching the source object.
    let secrets: Api<Secret> = Api::namespaced(h.client.clone(), NS);
    secrets
        .patch(
            "cloud-credentials",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"password": "vmi-demo-pass"}})),
        )
        .await
        .unwrap();
    let start = Instant::now();
    loop {
        let s = sources.get("cloud").await.unwrap();
        if s.status
            .as_ref()
            .and_then(|s| s.status)
            .map(|s| serde_json::to_value(s).unwrap())
            == Some(json!("clusterReady"))
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "secret change not noticed\n{}",
            tail(&h.log(), 30)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    h.imports()
        .delete("waits", &DeleteParams::default())
        .await
        .unwrap();
    let _ = h.import_status("waits").await;
    let _: &Path = h.dir.path();
}
