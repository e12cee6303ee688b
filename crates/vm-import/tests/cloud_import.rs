//! `vm-import import` against the real local OpenStack cloud (scripts/openstack-cloud):
//! byte-for-byte disks, manifests, no leaks, kills at every step, cut downloads.
//! Ignored by a plain `cargo test`; `scripts/test` runs them (one at a time: see
//! .config/nextest.toml).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::pedantic
)]

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::cloud::{Cloud, DEMO};
use common::*;
use serde_json::Value;
use vmi_openstack::OpenstackApi;

fn import_yaml(
    cloud: &Cloud,
    name: &str,
    vm: &str,
    region: &str,
    mapping: &[(&str, &str)],
) -> String {
    input_yaml(&cloud.auth_url(), DEMO, vm, mapping)
        .replace("name: test-import", &format!("name: {name}"))
        .replace("region: RegionOne", &format!("region: {region}"))
}

fn import_cmd(file: &Path, out: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vm-import"));
    cmd.args(["import", "-f"])
        .arg(file)
        .arg("--out")
        .arg(out)
        .args(["-o", "json"]);
    for (k, _) in std::env::vars() {
        if k.starts_with("OS_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

fn run_import(file: &Path, out: &Path) -> Value {
    let o = import_cmd(file, out).output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "import failed: {}\n{stdout}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_str(&stdout).unwrap()
}

fn state(out: &Path) -> Value {
    std::fs::read_to_string(out.join("state.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null)
}

/// sha256 of the first `n` bytes of the guest-visible content of a disk file.
fn data_sha256(file: &Path, n: u64) -> String {
    let raw = file.with_extension("check.raw");
    let st = Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(file)
        .arg(&raw)
        .status()
        .unwrap();
    assert!(st.success());
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("head -c {n} {} | sha256sum", raw.display()))
        .output()
        .unwrap();
    std::fs::remove_file(&raw).unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

fn demo_api(cloud: &Cloud) -> vmi_openstack::HttpOpenstack {
    let text = std::fs::read_to_string(cloud.clouds_yaml()).unwrap();
    let cfg =
        vmi_openstack::config::from_clouds_yaml("clouds.yaml", &text, None, "vmi-demo", &|_| {
            Err("no".into())
        })
        .unwrap();
    vmi_openstack::HttpOpenstack::new(cfg, Default::default()).unwrap()
}

/// Every resource the import of `out` could have created, by its deterministic name, that
/// still exists on the cloud.
async fn leftovers(api: &vmi_openstack::HttpOpenstack, out: &Path) -> Vec<String> {
    let st = state(out);
    let prefix = st["namePrefix"].as_str().unwrap().to_owned();
    let disks = st["disks"].as_array().unwrap().len();
    common::cloud::leftovers(api, &prefix, disks).await
}

fn expected_bfv(cloud: &Cloud) -> (String, String) {
    (
        cloud.seed["images"]["vmi-cirros"]["raw_sha256"]
            .as_str()
            .unwrap()
            .to_owned(),
        cloud.seed["images"]["vmi-data"]["data_sha256"]
            .as_str()
            .unwrap()
            .to_owned(),
    )
}

fn check_bfv_disks(cloud: &Cloud, out: &Path, summary: &Value) {
    let (root, data) = expected_bfv(cloud);
    let root_len = cloud.seed["images"]["vmi-cirros"]["virtual_size"]
        .as_u64()
        .unwrap();
    let data_len = cloud.seed["images"]["vmi-data"]["data_bytes"]
        .as_u64()
        .unwrap();
    let disks = summary["disks"].as_array().unwrap();
    assert_eq!(disks.len(), 2);
    assert_eq!(
        data_sha256(&out.join(disks[0]["file"].as_str().unwrap()), root_len),
        root,
        "root disk content"
    );
    assert_eq!(
        data_sha256(&out.join(disks[1]["file"].as_str().unwrap()), data_len),
        data,
        "data disk content"
    );
}

#[tokio::test]
#[ignore = "needs the local OpenStack cloud: scripts/openstack-cloud up && scripts/openstack-cloud seed"]
async fn a_boot_from_volume_server_arrives_byte_for_byte_with_its_manifest_and_nothing_left() {
    let cloud = Cloud::load();
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "in.yaml",
        &import_yaml(
            &cloud,
            "bfv-full",
            "vmi-bfv",
            "RegionOne",
            &[("vmi-net-a", "default/vlan-a"), ("vmi-net-b", "vlan-b")],
        ),
    );
    let out = dir.path().join("out");
    let summary = run_import(&file, &out);
    assert_eq!(summary["phase"], "done");
    check_bfv_disks(&cloud, &out, &summary);
    // Written bytes stay close to the data: qcow2 keeps only allocated clusters.
    for d in summary["disks"].as_array().unwrap() {
        assert!(d["bytesWritten"].as_u64().unwrap() < 80 << 20, "{d}");
        assert_eq!(d["virtualSize"].as_u64().unwrap(), 1 << 30);
    }
    assert_eq!(summary["resources"]["created"].as_array().unwrap().len(), 6);
    assert!(summary["resources"]["left"].as_array().unwrap().is_empty());
    assert!(leftovers(&demo_api(&cloud), &out).await.is_empty());

    // The manifest: boot order, bus and firmware from the root volume's image metadata,
    // NICs in order with their MACs, memory in MiB, CPU topology.
    let vm: Value =
        serde_yaml::from_str(&std::fs::read_to_string(out.join("virtualmachine.yaml")).unwrap())
            .unwrap();
    let spec = &vm["spec"]["template"]["spec"];
    let seed_vm = cloud.server("vmi-bfv");
    let disks = spec["domain"]["devices"]["disks"].as_array().unwrap();
    assert_eq!(disks[0]["bootOrder"], 1);
    assert_eq!(disks[0]["disk"]["bus"], "scsi");
    assert_eq!(
        spec["domain"]["firmware"]["bootloader"]["efi"]["secureBoot"],
        false
    );
    assert_eq!(spec["domain"]["memory"]["guest"], "1536Mi");
    let cpu = &spec["domain"]["cpu"];
    assert_eq!(
        cpu["sockets"].as_u64().unwrap()
            * cpu["cores"].as_u64().unwrap()
            * cpu["threads"].as_u64().unwrap(),
        2
    );
    let macs: Vec<&str> = spec["domain"]["devices"]["interfaces"]
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
    // Nova lists NICs grouped by network in attach order: net-a's two NICs, then net-b's.
    assert_eq!(macs, [seed_macs[0], seed_macs[2], seed_macs[1]]);
    let models: Vec<&str> = spec["domain"]["devices"]["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["model"].as_str().unwrap())
        .collect();
    assert_eq!(models, ["e1000", "e1000", "e1000"]);
    let nets: Vec<&str> = spec["networks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["multus"]["networkName"].as_str().unwrap())
        .collect();
    assert_eq!(nets, ["default/vlan-a", "default/vlan-a", "vlan-b"]);
    assert_eq!(
        vm["metadata"]["annotations"]["field.cattle.io/description"],
        "Boot-from-volume test server"
    );
    assert_eq!(
        vm["metadata"]["labels"]["migration.harvesterhci.io/imported"],
        "true"
    );
    let images = std::fs::read_to_string(out.join("images.yaml")).unwrap();
    for d in summary["disks"].as_array().unwrap() {
        assert!(images.contains(d["sha512"].as_str().unwrap()));
    }
}

#[tokio::test]
#[ignore = "needs the local OpenStack cloud: scripts/openstack-cloud up && scripts/openstack-cloud seed"]
async fn an_image_booted_server_exports_through_create_image() {
    let cloud = Cloud::load();
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "in.yaml",
        &import_yaml(
            &cloud,
            "image-booted",
            "vmi-image-booted",
            "RegionOne",
            &[("vmi-shared", "default/s")],
        ),
    );
    let out = dir.path().join("out");
    let summary = run_import(&file, &out);
    let disks = summary["disks"].as_array().unwrap();
    assert_eq!(disks.len(), 1);
    let root = cloud.seed["images"]["vmi-cirros"]["raw_sha256"]
        .as_str()
        .unwrap();
    let len = cloud.seed["images"]["vmi-cirros"]["virtual_size"]
        .as_u64()
        .unwrap();
    assert_eq!(
        data_sha256(&out.join(disks[0]["file"].as_str().unwrap()), len),
        root
    );
    assert!(leftovers(&demo_api(&cloud), &out).await.is_empty());
    let vm = std::fs::read_to_string(out.join("virtualmachine.yaml")).unwrap();
    assert!(
        vm.contains("bus: scsi") && vm.contains("model: e1000"),
        "{vm}"
    );
}

/// Starts an import and kills it (SIGKILL) as soon as the state file shows `at`.
fn kill_when(file: &Path, out: &Path, what: &str, at: impl Fn(&Value) -> bool) -> bool {
    let mut child: Child = import_cmd(file, out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return false; // finished before the point was seen
        }
        if at(&state(out)) {
            child.kill().unwrap();
            child.wait().unwrap();
            eprintln!("killed at '{what}' after {:?}", started.elapsed());
            return true;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "never reached '{what}'"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn any_disk_at(step: &'static str) -> impl Fn(&Value) -> bool {
    move |s: &Value| {
        s["disks"]
            .as_array()
            .is_some_and(|d| d.iter().any(|d| d["export"]["step"] == step))
    }
}

#[tokio::test]
#[ignore = "needs the local OpenStack cloud: scripts/openstack-cloud up && scripts/openstack-cloud seed"]
async fn killed_at_each_step_the_rerun_completes_with_identical_disks_and_nothing_leaked() {
    let cloud = Cloud::load();
    let api = demo_api(&cloud);
    type Point = (&'static str, Box<dyn Fn(&Value) -> bool>);
    let points: Vec<Point> = vec![
        ("power off", Box::new(|s: &Value| s["phase"] == "powerOff")),
        (
            "snapshot recorded, not yet created",
            Box::new(|s: &Value| {
                s["disks"].as_array().is_some_and(|d| {
                    d.iter()
                        .any(|d| d["export"]["snapshot"]["state"] == "intended")
                })
            }),
        ),
        (
            "waiting for a snapshot",
            Box::new(any_disk_at("awaitSnapshot")),
        ),
        ("waiting for a volume", Box::new(any_disk_at("awaitVolume"))),
        ("waiting for an image", Box::new(any_disk_at("awaitImage"))),
        ("downloading", Box::new(any_disk_at("download"))),
        ("cleaning up", Box::new(any_disk_at("cleanup"))),
        ("converting", Box::new(|s: &Value| s["phase"] == "convert")),
    ];
    let mut killed = 0;
    for (what, at) in points {
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            dir.path(),
            "in.yaml",
            &import_yaml(
                &cloud,
                "bfv-kill",
                "vmi-bfv",
                "RegionOne",
                &[("vmi-net-a", "default/a"), ("vmi-net-b", "default/b")],
            ),
        );
        let out = dir.path().join("out");
        if kill_when(&file, &out, what, at) {
            killed += 1;
        }
        let summary = run_import(&file, &out);
        check_bfv_disks(&cloud, &out, &summary);
        assert_eq!(
            summary["resources"]["created"].as_array().unwrap().len(),
            6,
            "{what}: a second snapshot, volume or image was made: {}",
            summary["resources"]
        );
        let left = leftovers(&api, &out).await;
        assert!(left.is_empty(), "after a kill at '{what}': {left:?}");
    }
    assert!(killed >= 6, "only {killed} kill points were reached");
}

/// A TCP proxy from 127.0.0.1:19292 (Glance in region vmi-cut) to Glance that closes every
/// connection after forwarding `cut` bytes of response. Returns a handle that stops it.
fn cutting_proxy(cut: usize) -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    use std::net::{TcpListener, TcpStream};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = Arc::new(AtomicBool::new(false));
    let listener =
        TcpListener::bind("127.0.0.1:19292").expect("port 19292 (region vmi-cut's Glance) is busy");
    listener.set_nonblocking(true).unwrap();
    let stop2 = stop.clone();
    std::thread::spawn(move || {
        while !stop2.load(Ordering::SeqCst) {
            let Ok((client, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            client.set_nonblocking(false).unwrap();
            std::thread::spawn(move || {
                let Ok(server) = TcpStream::connect("127.0.0.1:9292") else {
                    return;
                };
                let (mut c_read, mut s_write) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c_read, &mut s_write);
                });
                let (mut s_read, mut c_write) = (server, client);
                let mut sent = 0usize;
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = s_read.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let n = n.min(cut.saturating_sub(sent));
                    if n == 0 || c_write.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    sent += n;
                }
                let _ = c_write.shutdown(std::net::Shutdown::Both);
                let _ = s_read.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    stop
}

#[tokio::test]
#[ignore = "needs the local OpenStack cloud: scripts/openstack-cloud up && scripts/openstack-cloud seed"]
async fn a_download_cut_mid_way_resumes_with_ranges() {
    let cloud = Cloud::load();
    let stop = cutting_proxy(8 << 20);
    let dir = tempfile::tempdir().unwrap();
    // Region vmi-cut: the same cloud, with Glance reached through the cutting proxy.
    let file = write(
        dir.path(),
        "in.yaml",
        &import_yaml(
            &cloud,
            "bfv-cut",
            "vmi-bfv",
            "vmi-cut",
            &[("vmi-net-a", "default/a"), ("vmi-net-b", "default/b")],
        ),
    );
    let out = dir.path().join("out");
    let summary = run_import(&file, &out);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    check_bfv_disks(&cloud, &out, &summary);
    let resumes: u64 = summary["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["downloadResumes"].as_u64().unwrap())
        .sum();
    // The data disk's image is ~32 MiB: cut every 8 MiB, it needs several ranged resumes.
    assert!(resumes >= 3, "{resumes} resumes: {}", summary["disks"]);
    assert!(leftovers(&demo_api(&cloud), &out).await.is_empty());
}

#[tokio::test]
#[ignore = "needs the local OpenStack cloud: scripts/openstack-cloud up && scripts/openstack-cloud seed"]
async fn a_failed_preflight_touches_nothing() {
    let cloud = Cloud::load();
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "in.yaml",
        &import_yaml(
            &cloud,
            "bfv-bad-net",
            "vmi-twin",
            "RegionOne",
            &[("no-such-net", "default/a")],
        ),
    );
    let out = dir.path().join("out");
    let o = import_cmd(&file, &out).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("FAIL  vm.found") && stdout.contains("FAIL  network.source.exists"),
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("nothing on the source was touched"));
    // The twins are still running.
    let api = demo_api(&cloud);
    for s in api.find_servers_by_name("vmi-twin").await.unwrap() {
        assert_eq!(
            s.status,
            vmi_openstack::wire::ServerStatus::Active,
            "{}",
            s.id
        );
    }
}

#[test]
#[ignore = "needs the local OpenStack cloud: scripts/openstack-cloud up && scripts/openstack-cloud seed"]
fn cleanup_removes_what_an_interrupted_import_left() {
    let cloud = Cloud::load();
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "in.yaml",
        &import_yaml(
            &cloud,
            "bfv-abandoned",
            "vmi-bfv",
            "RegionOne",
            &[("vmi-net-a", "default/a"), ("vmi-net-b", "default/b")],
        ),
    );
    let out = dir.path().join("out");
    assert!(kill_when(
        &file,
        &out,
        "waiting for an image",
        any_disk_at("awaitImage")
    ));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = demo_api(&cloud);
    assert!(
        !rt.block_on(leftovers(&api, &out)).is_empty(),
        "the kill left nothing to clean up"
    );
    let o = Command::new(env!("CARGO_BIN_EXE_vm-import"))
        .args(["import", "--cleanup", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("none left on the source"));
    let left = rt.block_on(leftovers(&api, &out));
    assert!(left.is_empty(), "{left:?}");
}
