//! The engine against an in-memory OpenStack: complete imports, a kill after every single
//! mutating call followed by a resume, cut downloads, and failures that clean up.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::pedantic
)]

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use support::{FakeCloud, request};
use vmi_core::phase::Phase;
use vmi_engine::state::ImportState;
use vmi_engine::{EngineError, EngineOptions, Journal, progress::Silent};
use vmi_openstack::OpenstackApi;

fn options(dir: &Path) -> EngineOptions {
    let mut o = EngineOptions::new(dir.to_owned());
    o.poll = Duration::from_millis(1);
    o.endpoint = "http://fake/v3".into();
    o.credentials = "user 'demo'".into();
    o.download.checkpoint_every = 512 * 1024;
    o.download.resume_backoff = Duration::from_millis(1);
    o
}

fn journal(dir: &Path) -> Journal {
    match Journal::load(&dir.join("state.json")).unwrap() {
        Some(j) => j,
        None => {
            Journal::create(&dir.join("state.json"), ImportState::new("apps/web".into())).unwrap()
        }
    }
}

async fn run(cloud: &Arc<FakeCloud>, dir: &Path) -> Result<vmi_engine::Summary, EngineError> {
    let api: Arc<dyn OpenstackApi> = cloud.clone();
    vmi_engine::run(
        api,
        &request(),
        &journal(dir),
        &options(dir),
        Arc::new(Silent),
    )
    .await
}

/// The raw bytes of an output disk.
fn raw_of(dir: &Path, file: &str) -> Vec<u8> {
    let raw = dir.join("check.raw");
    let st = std::process::Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(dir.join(file))
        .arg(&raw)
        .status()
        .unwrap();
    assert!(st.success());
    let v = std::fs::read(&raw).unwrap();
    std::fs::remove_file(raw).unwrap();
    v
}

fn assert_disks_match(cloud: &FakeCloud, dir: &Path, summary: &vmi_engine::Summary) {
    assert_eq!(summary.disks.len(), 2);
    let root = raw_of(dir, summary.disks[0].file.as_deref().unwrap());
    let data = raw_of(dir, summary.disks[1].file.as_deref().unwrap());
    assert_eq!(root, *cloud.root_data, "root disk differs");
    assert_eq!(data, *cloud.data_data, "data disk differs");
}

#[tokio::test]
async fn a_boot_from_volume_import_completes_and_leaves_nothing() {
    let cloud = FakeCloud::boot_from_volume();
    let dir = tempfile::tempdir().unwrap();
    let summary = run(&cloud, dir.path()).await.unwrap();
    assert_eq!(summary.phase, "done");
    assert_disks_match(&cloud, dir.path(), &summary);
    assert_eq!(cloud.created(), (2, 2, 2));
    assert!(cloud.leftovers().is_empty(), "{:?}", cloud.leftovers());
    assert_eq!(summary.resources.created.len(), 6);
    assert_eq!(summary.resources.removed.len(), 6);
    assert!(summary.resources.left.is_empty());
    assert_eq!(cloud.server_status(), "SHUTOFF");
    let vm = std::fs::read_to_string(dir.path().join("virtualmachine.yaml")).unwrap();
    assert!(
        vm.contains("name: web-01")
            && vm.contains("networkName: apps/vlan-a")
            && vm.contains("macAddress: fa:16:3e:00:00:01"),
        "{vm}"
    );
    assert!(
        vm.contains("bus: scsi") && vm.contains("model: e1000") && vm.contains("efi:"),
        "{vm}"
    );
    let images = std::fs::read_to_string(dir.path().join("images.yaml")).unwrap();
    assert!(images.contains(summary.disks[1].sha512.as_deref().unwrap()));
    // A second run of a finished import does nothing and reports the same.
    let again = run(&cloud, dir.path()).await.unwrap();
    assert_eq!(again.phase, "done");
    assert_eq!(cloud.created(), (2, 2, 2));
}

#[tokio::test]
async fn killed_after_any_mutating_call_the_import_resumes_without_duplicates() {
    // How many mutating calls a complete import makes.
    let total = {
        let cloud = FakeCloud::boot_from_volume();
        let dir = tempfile::tempdir().unwrap();
        run(&cloud, dir.path()).await.unwrap();
        cloud.mutations()
    };
    assert!(total >= 10, "{total}");
    for n in 1..=total {
        let cloud = FakeCloud::boot_from_volume();
        let dir = tempfile::tempdir().unwrap();
        cloud.crash_at(Some(n));
        tokio::select! {
            r = run(&cloud, dir.path()) => panic!("crash point {n} was not reached: {r:?}"),
            () = cloud.crashed.notified() => {}
        }
        // The process is gone; a new one resumes from the state file.
        cloud.crash_at(None);
        let summary = run(&cloud, dir.path())
            .await
            .unwrap_or_else(|e| panic!("resume after crash at {n}: {e}"));
        assert_disks_match(&cloud, dir.path(), &summary);
        assert_eq!(
            cloud.created(),
            (2, 2, 2),
            "crash at {n} made a second resource"
        );
        assert!(
            cloud.leftovers().is_empty(),
            "crash at {n} leaked {:?}",
            cloud.leftovers()
        );
    }
}

#[tokio::test]
async fn a_cut_download_resumes_with_a_range() {
    let cloud = FakeCloud::boot_from_volume();
    cloud.cuts.store(3, std::sync::atomic::Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let summary = run(&cloud, dir.path()).await.unwrap();
    assert_disks_match(&cloud, dir.path(), &summary);
    let resumes: u32 = summary.disks.iter().map(|d| d.download_resumes).sum();
    assert_eq!(resumes, 3);
}

#[tokio::test]
async fn an_image_that_never_becomes_active_fails_after_a_bounded_wait_and_cleans_up() {
    let cloud = FakeCloud::boot_from_volume();
    cloud.never_active();
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(dir.path());
    o.image_timeout = Duration::from_secs(1);
    let api: Arc<dyn OpenstackApi> = cloud.clone();
    let started = std::time::Instant::now();
    let err = vmi_engine::run(api, &request(), &journal(dir.path()), &o, Arc::new(Silent))
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(20));
    match err {
        EngineError::Failed {
            phase,
            reason,
            message,
            left,
        } => {
            assert_eq!(phase, Phase::Export);
            assert_eq!(reason, "ResourceTimeout");
            assert!(
                message.contains("image vm-import-web-") && message.contains("limit 1 s"),
                "{message}"
            );
            assert!(left.is_empty());
        }
        other => panic!("{other}"),
    }
    assert!(cloud.leftovers().is_empty(), "{:?}", cloud.leftovers());
    let state = Journal::load(&dir.path().join("state.json"))
        .unwrap()
        .unwrap()
        .snapshot();
    assert_eq!(state.phase, Phase::Failed);
    assert!(state.failure.unwrap().message.contains("still"));
}

#[tokio::test]
async fn a_snapshot_in_error_fails_naming_it_and_a_rerun_starts_over() {
    let cloud = FakeCloud::boot_from_volume();
    cloud.snapshot_error();
    let dir = tempfile::tempdir().unwrap();
    let err = run(&cloud, dir.path()).await.unwrap_err().to_string();
    assert!(
        err.contains("snapshot vm-import-web-") && err.contains("'error'"),
        "{err}"
    );
    assert!(cloud.leftovers().is_empty(), "{:?}", cloud.leftovers());
}

#[tokio::test]
async fn every_upload_format_gives_the_same_disks() {
    use vmi_engine::OutputFormat::{Qcow2, Raw};
    for (upload, format) in [
        ("qcow2", Qcow2),
        ("raw", Qcow2),
        ("vmdk", Raw),
        ("qcow2", Raw),
    ] {
        let cloud = FakeCloud::boot_from_volume();
        let dir = tempfile::tempdir().unwrap();
        let mut o = options(dir.path());
        o.upload_format = upload.into();
        o.format = format;
        let api: Arc<dyn OpenstackApi> = cloud.clone();
        let summary = vmi_engine::run(api, &request(), &journal(dir.path()), &o, Arc::new(Silent))
            .await
            .unwrap();
        assert_disks_match(&cloud, dir.path(), &summary);
        for d in &summary.disks {
            // Only what the data needs is written, whatever the path.
            assert!(
                d.bytes_written.unwrap() < 4 << 20,
                "{upload} -> {format:?}: {d:?}"
            );
            assert!(
                !dir.path()
                    .join("disks")
                    .join(format!(".disk-{}.download", d.index))
                    .exists()
            );
        }
    }
}

#[tokio::test]
async fn an_image_booted_server_exports_its_root_through_create_image() {
    let cloud = FakeCloud::image_booted();
    let dir = tempfile::tempdir().unwrap();
    let summary = run(&cloud, dir.path()).await.unwrap();
    assert_eq!(summary.disks.len(), 1);
    assert_eq!(
        raw_of(dir.path(), summary.disks[0].file.as_deref().unwrap()),
        *cloud.root_data
    );
    assert_eq!(cloud.created(), (0, 0, 1));
    assert!(cloud.leftovers().is_empty());
}

/// The controller's way: an in-memory state copied out after every step (as it is written to
/// the import's status), driven by `step` without the CLI loop.
async fn step_until_done(
    driver: &vmi_engine::Driver,
    status: &mut ImportState,
    limit: Option<usize>,
) -> Option<Result<(), EngineError>> {
    let mut steps = 0;
    loop {
        if limit.is_some_and(|l| steps >= l) {
            return None;
        }
        let step = driver.step().await;
        *status = driver.journal().snapshot();
        steps += 1;
        match step {
            Ok(vmi_engine::Step::Done) => return Some(Ok(())),
            Ok(vmi_engine::Step::After(d)) => {
                tokio::time::sleep(d.min(Duration::from_millis(5))).await;
            }
            Err(e) => return Some(Err(e)),
        }
    }
}

fn driver(cloud: &Arc<FakeCloud>, dir: &Path, state: ImportState) -> vmi_engine::Driver {
    let api: Arc<dyn OpenstackApi> = cloud.clone();
    let mut o = options(dir);
    o.write_manifests = false;
    vmi_engine::Driver::new(
        api,
        request(),
        Journal::in_memory(state),
        o,
        Arc::new(Silent),
    )
    .unwrap()
}

#[tokio::test]
async fn a_driver_rebuilt_from_the_status_after_any_step_completes_without_duplicates() {
    let total = {
        let cloud = FakeCloud::boot_from_volume();
        let dir = tempfile::tempdir().unwrap();
        let mut status = ImportState::new("apps/web".into());
        let d = driver(&cloud, dir.path(), status.clone());
        step_until_done(&d, &mut status, None)
            .await
            .unwrap()
            .unwrap();
        assert!(!dir.path().join("virtualmachine.yaml").exists());
        let mut count = 0;
        // Count the steps of a second, identical import.
        let cloud = FakeCloud::boot_from_volume();
        let dir = tempfile::tempdir().unwrap();
        let mut status = ImportState::new("apps/web".into());
        let d = driver(&cloud, dir.path(), status.clone());
        while step_until_done(&d, &mut status, Some(1)).await.is_none() {
            count += 1;
        }
        count
    };
    assert!(total >= 8, "{total}");
    for k in (1..total).step_by(3) {
        let cloud = FakeCloud::boot_from_volume();
        let dir = tempfile::tempdir().unwrap();
        let mut status = ImportState::new("apps/web".into());
        {
            let d = driver(&cloud, dir.path(), status.clone());
            // Background work makes the number of steps vary a little from run to run.
            if step_until_done(&d, &mut status, Some(k)).await.is_some() {
                continue;
            }
            // The controller restarts: the driver and its tasks are gone, the status stays.
        }
        let d = driver(&cloud, dir.path(), status.clone());
        assert!(d.reset_disks_without_files().unwrap().is_empty());
        step_until_done(&d, &mut status, None)
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("resume after step {k}: {e}"));
        assert_eq!(status.phase, Phase::Done);
        assert_eq!(cloud.created(), (2, 2, 2), "restart after step {k}");
        assert!(cloud.leftovers().is_empty(), "restart after step {k}");
        let summary = vmi_engine::Summary::of(&status, dir.path());
        assert_disks_match(&cloud, dir.path(), &summary);
    }
}

#[tokio::test]
async fn a_cancelled_import_removes_its_resources_and_files() {
    for k in [3, 6, 9, 12] {
        let cloud = FakeCloud::boot_from_volume();
        let dir = tempfile::tempdir().unwrap();
        let mut status = ImportState::new("apps/web".into());
        let api: Arc<dyn OpenstackApi> = cloud.clone();
        let mut o = options(dir.path());
        o.remove_outputs_on_cleanup = true;
        let d = vmi_engine::Driver::new(
            api,
            request(),
            Journal::in_memory(status.clone()),
            o,
            Arc::new(Silent),
        )
        .unwrap();
        let _ = step_until_done(&d, &mut status, Some(k)).await;
        d.stop().await;
        let mut rounds = 0;
        while let Some(wait) = d.cleanup_round().await.unwrap() {
            tokio::time::sleep(wait.min(Duration::from_millis(5))).await;
            rounds += 1;
            assert!(rounds < 500, "cleanup does not end");
        }
        assert!(
            cloud.leftovers().is_empty(),
            "after {k}: {:?}",
            cloud.leftovers()
        );
        assert!(d.journal().snapshot().live_resources().is_empty());
        let files: Vec<_> = std::fs::read_dir(dir.path().join("disks"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(files.is_empty(), "after {k}: {files:?}");
        // The server was stopped by the import and stays so; it is not restarted.
        assert_ne!(cloud.server_status(), "ERROR");
    }
}

#[tokio::test]
async fn steps_never_sleep() {
    // Every step returns quickly even while the source is slow to finish a resource: waits
    // are returned to the caller, not slept.
    let cloud = FakeCloud::boot_from_volume();
    cloud.never_active();
    let dir = tempfile::tempdir().unwrap();
    let d = driver(&cloud, dir.path(), ImportState::new("apps/web".into()));
    let mut saw_wait = false;
    for _ in 0..60 {
        let t = std::time::Instant::now();
        match d.step().await.unwrap() {
            vmi_engine::Step::After(w) => saw_wait |= w > Duration::ZERO,
            vmi_engine::Step::Done => panic!("never-active image cannot finish"),
        }
        assert!(t.elapsed() < Duration::from_millis(500), "a step slept");
    }
    assert!(saw_wait);
}

#[tokio::test]
async fn disks_whose_files_were_lost_are_exported_again() {
    let cloud = FakeCloud::boot_from_volume();
    let dir = tempfile::tempdir().unwrap();
    let mut status = ImportState::new("apps/web".into());
    {
        let d = driver(&cloud, dir.path(), status.clone());
        loop {
            assert!(step_until_done(&d, &mut status, Some(1)).await.is_none());
            if status.phase == Phase::Convert {
                break;
            }
        }
    }
    // A new scratch volume: every local file is gone.
    std::fs::remove_dir_all(dir.path().join("disks")).unwrap();
    let d = driver(&cloud, dir.path(), status.clone());
    assert_eq!(d.reset_disks_without_files().unwrap(), vec![0, 1]);
    step_until_done(&d, &mut status, None)
        .await
        .unwrap()
        .unwrap();
    let summary = vmi_engine::Summary::of(&status, dir.path());
    assert_disks_match(&cloud, dir.path(), &summary);
    assert_eq!(cloud.created(), (4, 4, 4));
    assert!(cloud.leftovers().is_empty());
}
