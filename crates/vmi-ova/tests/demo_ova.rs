//! The demo OVA made by `make-demo-ova` (real qemu-img), read back as a stream: descriptor,
//! manifest, verified disk, model; the extracted disk compared with its raw source by
//! `qemu-img compare`. Needs qemu-img (qemu-utils).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::pedantic
)]

use std::path::Path;
use std::process::Command;

use vmi_api::{DiskBus, NetworkInterfaceModel};
use vmi_core::model::{BootMode, DiskSource};
use vmi_disk::Algorithm;
use vmi_ova::archive::{self, ExtractOptions};
use vmi_ova::ovf::{self, DiskFormat, Selection};

fn make_demo(out: &Path) {
    let run = Command::new(env!("CARGO_BIN_EXE_make-demo-ova"))
        .arg(out)
        .output()
        .expect("run make-demo-ova");
    assert!(
        run.status.success(),
        "make-demo-ova failed: {}: {}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
}

fn qemu_img(args: &[&str]) -> std::process::Output {
    Command::new("qemu-img")
        .args(args)
        .output()
        .expect("qemu-img must be installed (qemu-utils) for this test")
}

#[test]
fn the_demo_ova_streams_verifies_and_matches_its_source_disk() {
    let out = tempfile::tempdir().unwrap();
    make_demo(out.path());
    let ova_path = out.path().join("demo-vm.ova");
    let raw = out.path().join("demo-vm-disk1.raw");
    let mut names: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["demo-vm-disk1.raw", "demo-vm.ova"]);

    // Preflight reads only the descriptor.
    let pre = archive::read_descriptor(std::fs::File::open(&ova_path).unwrap()).unwrap();
    assert_eq!(pre.descriptor.name, "demo-vm.ovf");
    assert_eq!(pre.descriptor.position, 0);

    let scratch = tempfile::tempdir().unwrap();
    let ova = archive::extract(
        std::fs::File::open(&ova_path).unwrap(),
        scratch.path(),
        &ExtractOptions::default(),
    )
    .unwrap();
    assert!(ova.warnings.is_empty(), "{:?}", ova.warnings);
    assert_eq!(ova.manifest.as_ref().unwrap().name, "demo-vm.mf");
    assert_eq!(ova.files.len(), 1);
    let disk = &ova.files[0];
    assert_eq!(disk.name, "demo-vm-disk1.vmdk");
    assert_eq!(disk.verified, [Algorithm::Sha256]);
    assert_eq!(
        ova.descriptor.envelope.disks[0].format,
        DiskFormat::VmdkStreamOptimized
    );
    assert_eq!(ova.descriptor.envelope.files[0].size, Some(disk.size));

    let m = ovf::describe(&ova.descriptor.envelope, &Selection::default()).unwrap();
    assert_eq!(m.name, "demo-vm");
    assert_eq!((m.cpu.sockets, m.cpu.cores, m.cpu.threads), (2, 1, 1));
    assert_eq!(m.memory_mib, 2048);
    assert_eq!(m.firmware.boot, BootMode::Uefi);
    assert!(!m.firmware.secure_boot);
    assert_eq!(m.disks.len(), 1);
    assert_eq!(m.disks[0].bus, Some(DiskBus::Sata));
    assert_eq!(m.disks[0].size_bytes, 64 << 20);
    assert_eq!(
        m.disks[0].source,
        DiskSource::OvaFile {
            file_name: "demo-vm-disk1.vmdk".into()
        }
    );
    let nics: Vec<_> = m
        .nics
        .iter()
        .map(|n| (n.mac.as_str(), n.network.name.as_str(), n.model))
        .collect();
    assert_eq!(
        nics,
        [
            (
                "00:50:56:00:de:01",
                "VM Network",
                Some(NetworkInterfaceModel::E1000)
            ),
            (
                "00:50:56:00:de:02",
                "Storage Network",
                Some(NetworkInterfaceModel::E1000)
            ),
        ]
    );

    let info = qemu_img(&["info", "--output=json", disk.path.to_str().unwrap()]);
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["format"], "vmdk");
    assert_eq!(
        info["format-specific"]["data"]["create-type"],
        "streamOptimized"
    );
    let cmp = qemu_img(&[
        "compare",
        "-f",
        "vmdk",
        "-F",
        "raw",
        disk.path.to_str().unwrap(),
        raw.to_str().unwrap(),
    ]);
    assert!(
        cmp.status.success(),
        "qemu-img compare: {}{}",
        String::from_utf8_lossy(&cmp.stdout),
        String::from_utf8_lossy(&cmp.stderr)
    );
    let source = std::fs::read(&raw).unwrap();
    assert!(source.starts_with(b"VMI-OVA-DEMO-DISK v1"));
}

#[test]
fn the_demo_ova_is_reproducible() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    make_demo(a.path());
    make_demo(b.path());
    let ova_a = std::fs::read(a.path().join("demo-vm.ova")).unwrap();
    let ova_b = std::fs::read(b.path().join("demo-vm.ova")).unwrap();
    assert!(ova_a == ova_b, "two runs made different OVAs");
    // The descriptor is the first entry, the manifest the second, then the disk.
    let names: Vec<String> = tar::Archive::new(ova_a.as_slice())
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert_eq!(names, ["demo-vm.ovf", "demo-vm.mf", "demo-vm-disk1.vmdk"]);
}

/// The committed `examples/ova/demo-vm.ova` is what `make-demo-ova` makes: the same descriptor
/// and the same members (the VMDK's bytes may differ with another qemu-img; the import tests
/// check the disk's content against the raw source's SHA-256).
#[test]
fn the_committed_demo_ova_is_the_generated_one() {
    let out = tempfile::tempdir().unwrap();
    make_demo(out.path());
    let members = |bytes: &[u8]| -> Vec<(String, Vec<u8>)> {
        tar::Archive::new(bytes)
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let name = e.path().unwrap().display().to_string();
                let mut body = Vec::new();
                std::io::Read::read_to_end(&mut e, &mut body).unwrap();
                (name, body)
            })
            .collect()
    };
    let committed = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/ova/demo-vm.ova"
    ))
    .unwrap();
    let fresh = std::fs::read(out.path().join("demo-vm.ova")).unwrap();
    let (c, f) = (members(&committed), members(&fresh));
    assert_eq!(
        c.iter().map(|m| &m.0).collect::<Vec<_>>(),
        f.iter().map(|m| &m.0).collect::<Vec<_>>()
    );
    assert!(
        c[0].1 == f[0].1,
        "examples/ova/demo-vm.ova has another descriptor than make-demo-ova makes: run scripts/make-demo-ova"
    );
}
