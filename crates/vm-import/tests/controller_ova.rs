//! `vm-import controller` with an OvaSource, black-box: the real binary against the fake
//! Kubernetes API, the demo OVA served over HTTP with basic auth. Needs no cloud.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::pedantic
)]

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::controller::*;
use kube::Api;
use kube::api::DynamicObject;

const SECRET: &[(&str, &str)] = &[("username", "alice"), ("password", "ova-S3cret-pw")];

fn demo_ova() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/ova/demo-vm.ova"
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_ova_source_is_verified_and_its_import_runs_to_a_ready_vm() {
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice:ova-S3cret-pw")
    );
    let port = common::file_server("exports/demo-vm.ova", demo_ova(), Some(auth));
    let url = format!("http://127.0.0.1:{port}/exports/demo-vm.ova");
    let h = Harness::start_without_cloud().await;
    h.nads(&["vlan1", "storage"]).await;

    // Each bad input gets the reason and a message that says what to do.
    h.ova_source("no-auth", &url, None).await;
    h.ova_source(
        "missing",
        &format!("http://127.0.0.1:{port}/exports/nope.ova"),
        Some(SECRET),
    )
    .await;
    h.ova_source("local", "file:///var/tmp/demo-vm.ova", None)
        .await;
    let (reason, message) = h.wait_ova_source("no-auth", "clusterNotReady").await;
    assert_eq!(reason, "AuthenticationFailed", "{message}");
    assert!(
        message.contains("HTTP 401") && message.contains("Secret"),
        "{message}"
    );
    let (reason, message) = h.wait_ova_source("missing", "clusterNotReady").await;
    assert_eq!(reason, "Unreachable", "{message}");
    assert!(
        message.contains("HTTP 404") && message.contains("spec.url"),
        "{message}"
    );
    let (reason, message) = h.wait_ova_source("local", "clusterNotReady").await;
    assert_eq!(reason, "InvalidURL", "{message}");

    h.ova_source("demo", &url, Some(SECRET)).await;
    let (reason, message) = h.wait_ova_source("demo", "clusterReady").await;
    assert_eq!(reason, "Verified", "{message}");
    assert!(message.contains("demo-vm"), "{message}");
    assert!(!message.contains("ova-S3cret-pw"));

    h.import_from(
        "demo",
        "OvaSource",
        "demo",
        "demo-vm",
        &[
            ("VM Network", "vlan1"),
            ("Storage Network", "default/storage"),
        ],
    )
    .await;
    let done = h
        .wait_import(
            "demo",
            "virtualMachineRunning",
            Duration::from_secs(120),
            |i| status_is(i, "virtualMachineRunning"),
        )
        .await;
    let status = done.status.unwrap();
    assert_eq!(
        status.imported_virtual_machine_name.as_deref(),
        Some("demo-vm")
    );
    assert!(status.temporary_resources.is_empty());
    let cond = |t: &str| status.import_conditions.iter().find(|c| c.type_ == t);
    assert_eq!(
        cond("PreflightPassed").map(|c| c.status),
        Some(vmi_api::ConditionStatus::True),
        "{:?}",
        status.import_conditions
    );
    assert!(
        cond("VMPoweredOff").is_none() && cond("VMPoweringOff").is_none(),
        "an OVA has no VM to stop: {:?}",
        status.import_conditions
    );

    // Harvester's side downloaded the disk once, and the SHA-512 matched.
    let seen = h.seen.lock().unwrap().downloads.clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].2, "{seen:?}");

    let vms: Api<DynamicObject> = Api::namespaced_with(h.client.clone(), NS, &vm_ar());
    let vm = serde_json::to_value(vms.get("demo-vm").await.unwrap()).unwrap();
    let spec = &vm["spec"]["template"]["spec"];
    let nets: Vec<&str> = spec["networks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["multus"]["networkName"].as_str().unwrap())
        .collect();
    assert_eq!(nets, ["vlan1", "default/storage"]);
    let macs: Vec<&str> = spec["domain"]["devices"]["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["macAddress"].as_str().unwrap())
        .collect();
    assert_eq!(macs, ["00:50:56:00:de:01", "00:50:56:00:de:02"]);
    assert_eq!(spec["domain"]["memory"]["guest"], "2048Mi");
    assert!(spec["domain"]["firmware"]["bootloader"]["efi"].is_object());

    // The disk server counted what Harvester's side downloaded.
    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", h.metrics_port))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let served: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("vm_import_served_bytes_total "))
        .unwrap_or_else(|| panic!("{metrics}"))
        .trim()
        .parse()
        .unwrap();
    assert_eq!(served, seen[0].3, "{metrics}");

    let files = h.scratch_files();
    assert!(files.is_empty(), "{files:?}");
    assert!(
        !h.log().contains("ova-S3cret-pw"),
        "a password is in the log"
    );
}

/// Deleting an import while its OVA downloads cancels it: the finalizer goes once the partial
/// download is removed, and no image or VM is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_an_ova_import_mid_download_cancels_it_and_removes_its_files() {
    // ~400 KiB at 4 KiB per 100 ms: about 10 s of download.
    let port = common::slow_file_server(
        "demo-vm.ova",
        demo_ova(),
        4 << 10,
        Duration::from_millis(100),
    );
    let h = Harness::start_without_cloud().await;
    h.nads(&["vlan1", "storage"]).await;
    h.ova_source(
        "slow",
        &format!("http://127.0.0.1:{port}/demo-vm.ova"),
        None,
    )
    .await;
    h.wait_ova_source("slow", "clusterReady").await;
    h.import_from(
        "slow",
        "OvaSource",
        "slow",
        "demo-vm",
        &[("VM Network", "vlan1"), ("Storage Network", "storage")],
    )
    .await;
    let start = std::time::Instant::now();
    while h.scratch_files().iter().all(|f| !f.contains("/disks/")) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no download started: {:?}\n{}",
            h.scratch_files(),
            tail(&h.log(), 30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The partial download shows in status as a local file and as download progress.
    h.wait_import(
        "slow",
        "recording its partial download",
        Duration::from_secs(30),
        |i| {
            i.status.as_ref().is_some_and(|s| {
                s.temporary_resources.iter().any(|t| t.kind == "file")
                    && s.disk_progress
                        .first()
                        .is_some_and(|p| p.step == "download")
            })
        },
    )
    .await;
    h.imports()
        .delete("slow", &kube::api::DeleteParams::default())
        .await
        .unwrap();
    let start = std::time::Instant::now();
    while h.imports().get_opt("slow").await.unwrap().is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the import is still there\n{}",
            tail(&h.log(), 30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let files = h.scratch_files();
    assert!(files.is_empty(), "{files:?}");
    let images: Api<DynamicObject> = Api::namespaced_with(h.client.clone(), NS, &image_ar());
    assert!(
        images
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let vms: Api<DynamicObject> = Api::namespaced_with(h.client.clone(), NS, &vm_ar());
    assert!(vms.get_opt("demo-vm").await.unwrap().is_none());
}

/// `vm_import_leader` of the controller whose metrics listen on `port`, `None` while it does
/// not answer.
async fn leader_gauge(port: u16) -> Option<u64> {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("vm_import_leader "))
        .and_then(|v| v.trim().parse().ok())
}

/// Two replicas: one leads, the other stands by; when the leader is killed (no lease release)
/// the standby takes over within the lease duration and runs an import to the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_standby_replica_takes_over_from_a_killed_leader() {
    let port = common::file_server("demo-vm.ova", demo_ova(), None);
    let mut h = Harness::start_without_cloud().await;
    // The first controller leads before the second starts (else either may win the Lease).
    let start = std::time::Instant::now();
    while leader_gauge(h.metrics_port).await != Some(1) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the first controller did not become leader\n{}",
            tail(&h.log(), 30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (standby_disks, standby_metrics) = (free_port(), free_port());
    let standby = KillOnDrop(h.spawn_controller(
        "standby",
        &h.dir.path().join("standby-scratch"),
        standby_disks,
        standby_metrics,
        "standby.log",
    ));
    let start = std::time::Instant::now();
    loop {
        let (a, b) = (
            leader_gauge(h.metrics_port).await,
            leader_gauge(standby_metrics).await,
        );
        if (a, b) == (Some(1), Some(0)) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "expected the first controller to lead and the second to stand by: {a:?} {b:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Standing by, the second replica reconciles nothing.
    h.ova_source(
        "demo",
        &format!("http://127.0.0.1:{port}/demo-vm.ova"),
        None,
    )
    .await;
    h.wait_ova_source("demo", "clusterReady").await;
    let standby_log_path = h.dir.path().join("standby.log");
    let standby_log = || std::fs::read_to_string(&standby_log_path).unwrap();
    assert!(
        !standby_log().contains("source verified"),
        "{}",
        standby_log()
    );

    h.kill_controller();
    let killed = std::time::Instant::now();
    h.nads(&["vlan1", "storage"]).await;
    h.import_from(
        "demo",
        "OvaSource",
        "demo",
        "demo-vm",
        &[("VM Network", "vlan1"), ("Storage Network", "storage")],
    )
    .await;
    loop {
        if leader_gauge(standby_metrics).await == Some(1) {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(20),
            "the standby did not take over\n{}",
            tail(&standby_log(), 30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let took_over = killed.elapsed();
    let done = h
        .wait_import(
            "demo",
            "virtualMachineRunning",
            Duration::from_secs(120),
            |i| status_is(i, "virtualMachineRunning"),
        )
        .await;
    let url = &h.seen.lock().unwrap().downloads[0].1;
    assert!(
        url.starts_with(&format!("http://127.0.0.1:{standby_disks}/")),
        "the disk came from {url}, not from the new leader"
    );
    assert!(done.status.unwrap().temporary_resources.is_empty());
    eprintln!("the standby took over {took_over:?} after the leader was killed");
    drop(standby);
}

/// A child process killed when the test ends, also when it fails.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
