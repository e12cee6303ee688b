//! Streamed OVA extraction: well-formed archives, archives in unusual order, and malicious or
//! broken ones, each rejected with a clear message and with nothing left on disk.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::pedantic
)]

mod support;

use std::path::{Path, PathBuf};

use rstest::rstest;
use support::{
    Fence, RawTar, Trickle, descriptor, disk_bytes, good_ova, manifest, sha1, sha256, tree,
};
use vmi_disk::Algorithm;
use vmi_ova::archive::{self, ArchiveError, ArchiveWarning, ExtractOptions};

/// A temporary root holding the scratch directory, so that writes next to it can be seen.
struct Dirs {
    _root: tempfile::TempDir,
    root: PathBuf,
    scratch: PathBuf,
}

fn dirs() -> Dirs {
    let root = tempfile::tempdir().unwrap();
    let scratch = root.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    Dirs {
        root: root.path().to_owned(),
        scratch,
        _root: root,
    }
}

fn extract(bytes: &[u8], d: &Dirs) -> Result<archive::Ova, ArchiveError> {
    archive::extract(bytes, &d.scratch, &ExtractOptions::default())
}

/// The archive was rejected and nothing is left: not in the scratch directory, not beside it.
fn assert_rejected_cleanly(d: &Dirs, result: Result<archive::Ova, ArchiveError>) -> String {
    let e = match result {
        Ok(ova) => panic!("accepted: {ova:?}"),
        Err(e) => e.to_string(),
    };
    assert_eq!(tree(&d.root), ["scratch"], "after: {e}");
    e
}

#[test]
fn a_well_formed_ova_is_extracted_and_verified() {
    let d = dirs();
    let disk1 = disk_bytes(70_000, 1);
    let disk2 = disk_bytes(1024, 2);
    let ova = good_ova(&[("vm-disk1.vmdk", &disk1), ("vm-disk2.vmdk", &disk2)]);
    let got = extract(&ova, &d).unwrap();
    assert_eq!(got.descriptor.name, "vm.ovf");
    assert_eq!(got.descriptor.position, 0);
    assert!(got.warnings.is_empty(), "{:?}", got.warnings);
    let m = got.manifest.as_ref().unwrap();
    assert_eq!(m.name, "vm.mf");
    assert_eq!(got.files.len(), 2);
    let f = got.file("vm-disk1.vmdk").unwrap();
    assert_eq!(f.file_id, "file0");
    assert_eq!(f.size, 70_000);
    assert_eq!(f.path, d.scratch.join("vm-disk1.vmdk"));
    assert_eq!(f.verified, [Algorithm::Sha256]);
    assert_eq!(f.digests.sha256.as_deref(), Some(sha256(&disk1).as_str()));
    assert_eq!(std::fs::read(&f.path).unwrap(), disk1);
    assert_eq!(std::fs::read(&got.files[1].path).unwrap(), disk2);
    assert_eq!(
        tree(&d.root),
        ["scratch", "scratch/vm-disk1.vmdk", "scratch/vm-disk2.vmdk"]
    );
    // The model comes from the descriptor that was read.
    let model =
        vmi_ova::describe(&got.descriptor.envelope, &vmi_ova::Selection::default()).unwrap();
    assert_eq!(model.disks.len(), 2);
}

#[test]
fn short_reads_from_the_stream_change_nothing() {
    let d = dirs();
    let disk = disk_bytes(5000, 3);
    let ova = good_ova(&[("d.vmdk", &disk)]);
    let got = archive::extract(
        Trickle {
            inner: ova.as_slice(),
            step: 7,
        },
        &d.scratch,
        &ExtractOptions::default(),
    )
    .unwrap();
    assert_eq!(std::fs::read(&got.files[0].path).unwrap(), disk);
}

#[test]
fn an_ova_without_manifest_is_extracted_and_says_so() {
    let d = dirs();
    let disk = disk_bytes(600, 4);
    let ovf = descriptor(&[("d.vmdk", Some(600))]);
    let ova = RawTar::new()
        .file("vm.ovf", &ovf)
        .file("d.vmdk", &disk)
        .finish();
    let got = extract(&ova, &d).unwrap();
    assert!(got.manifest.is_none());
    assert!(got.files[0].verified.is_empty());
    // SHA-256 is computed anyway, for the caller's records.
    assert_eq!(
        got.files[0].digests.sha256.as_deref(),
        Some(sha256(&disk).as_str())
    );
}

#[test]
fn a_descriptor_that_is_not_first_is_found_and_warned_about() {
    let d = dirs();
    let disk = disk_bytes(3000, 5);
    let stray = b"not referenced".to_vec();
    let ovf = descriptor(&[("d.vmdk", Some(3000))]);
    let mf = manifest(&[("vm.ovf", &ovf), ("d.vmdk", &disk)]);
    let ova = RawTar::new()
        .file("d.vmdk", &disk)
        .file("stray.txt", &stray)
        .file("vm.ovf", &ovf)
        .file("vm.mf", &mf)
        .finish();
    let got = extract(&ova, &d).unwrap();
    assert_eq!(got.descriptor.position, 2);
    assert_eq!(
        got.warnings,
        [
            ArchiveWarning::DescriptorNotFirst {
                descriptor: "vm.ovf".into(),
                position: 2,
                first_entry: "d.vmdk".into(),
            },
            ArchiveWarning::UnreferencedEntry {
                name: "stray.txt".into()
            },
            ArchiveWarning::ManifestAfterFiles {
                manifest: "vm.mf".into()
            },
        ]
    );
    assert_eq!(got.files[0].verified, [Algorithm::Sha256]);
    // The stray file written before the descriptor was known is gone again.
    assert_eq!(tree(&d.root), ["scratch", "scratch/d.vmdk"]);
    assert!(
        got.warnings[0]
            .to_string()
            .contains("is entry 3 of the archive, not the first")
    );
}

#[test]
fn a_manifest_after_the_files_with_other_algorithms_is_checked_after_the_fact() {
    let d = dirs();
    let disk = disk_bytes(2000, 6);
    let ovf = descriptor(&[("d.vmdk", None)]);
    // SHA1 for the descriptor (computed while streaming), SHA512 for the disk (not computed
    // while streaming when the manifest is not yet known: re-read from the scratch file).
    let mut h = vmi_disk::MultiHasher::new(&[Algorithm::Sha512]);
    h.update(&disk);
    let sha512 = h.finish().sha512.unwrap();
    let mf = format!(
        "SHA1(vm.ovf)={}\r\nsha512 (d.vmdk) = {}\r\n",
        sha1(&ovf),
        sha512.to_uppercase()
    );
    let ova = RawTar::new()
        .file("vm.ovf", &ovf)
        .file("d.vmdk", &disk)
        .file("vm.mf", mf.as_bytes())
        .finish();
    let got = extract(&ova, &d).unwrap();
    assert_eq!(got.files[0].verified, [Algorithm::Sha512]);
    assert!(matches!(
        got.warnings.as_slice(),
        [ArchiveWarning::ManifestAfterFiles { .. }]
    ));
}

#[test]
fn tar_c_dot_layout_with_a_root_directory_entry_and_dot_slash_names_is_accepted() {
    let d = dirs();
    let disk = disk_bytes(100, 7);
    let ovf = descriptor(&[("d.vmdk", Some(100))]);
    let ova = RawTar::new()
        .raw(b"./", b'5', 0, b"", b"")
        .file("./vm.ovf", &ovf)
        .file("./d.vmdk", &disk)
        .finish();
    let got = extract(&ova, &d).unwrap();
    assert_eq!(got.descriptor.position, 0);
    assert_eq!(got.files[0].name, "d.vmdk");
}

#[test]
fn unreferenced_entries_and_certificates_are_skipped_with_warnings() {
    let d = dirs();
    let disk = disk_bytes(100, 8);
    let ovf = descriptor(&[("d.vmdk", Some(100))]);
    let ova = RawTar::new()
        .file("vm.ovf", &ovf)
        .file("vm.cert", b"-----BEGIN CERTIFICATE-----\n")
        .file("d.vmdk", &disk)
        .file("README.txt", b"hello")
        .finish();
    let got = extract(&ova, &d).unwrap();
    assert_eq!(
        got.warnings,
        [
            ArchiveWarning::CertificateNotVerified {
                name: "vm.cert".into()
            },
            ArchiveWarning::UnreferencedEntry {
                name: "README.txt".into()
            },
        ]
    );
    assert_eq!(tree(&d.root), ["scratch", "scratch/d.vmdk"]);
}

#[test]
fn a_percent_encoded_href_finds_its_entry() {
    let d = dirs();
    let disk = disk_bytes(10, 9);
    let ovf = descriptor(&[("my%20disk.vmdk", Some(10))]);
    let ova = RawTar::new()
        .file("vm.ovf", &ovf)
        .file("my disk.vmdk", &disk)
        .finish();
    let got = extract(&ova, &d).unwrap();
    assert_eq!(got.files[0].name, "my disk.vmdk");
}

/// Where an absolute entry would land if it were honoured.
fn absolute_target() -> String {
    format!("/tmp/vmi-ova-test-absolute-{}", std::process::id())
}

/// The descriptor and manifest of a one-disk OVA, then `rest` appended by the case.
fn with_prefix(rest: impl FnOnce(&mut RawTar, &[u8])) -> Vec<u8> {
    let disk = disk_bytes(4096, 10);
    let ovf = descriptor(&[("disk.vmdk", Some(4096))]);
    let mf = manifest(&[("vm.ovf", &ovf), ("disk.vmdk", &disk)]);
    let mut t = RawTar::new();
    t.file("vm.ovf", &ovf).file("vm.mf", &mf);
    rest(&mut t, &disk);
    t.finish()
}

#[rstest]
#[case::path_traversal(
    with_prefix(|t, disk| { t.file("../x", b"evil").file("disk.vmdk", disk); }),
    r#"tar entry "../x" is rejected: the name climbs out of the directory ('..')"#
)]
#[case::traversal_in_a_pax_path(
    with_prefix(|t, disk| { t.pax_path("../../escaped").file("innocent", b"evil").file("disk.vmdk", disk); }),
    r#"tar entry "../../escaped" is rejected: the name climbs out"#
)]
#[case::absolute_path(
    with_prefix(|t, _| { t.file(&absolute_target(), b"evil"); }),
    "is rejected: the name is an absolute path"
)]
#[case::sub_directory(
    with_prefix(|t, _| { t.file("sub/disk.vmdk", b"x"); }),
    r#"tar entry "sub/disk.vmdk" is rejected: the name is a path (it contains '/')"#
)]
#[case::symlink(
    with_prefix(|t, _| { t.raw(b"disk.vmdk", b'2', 0, b"", b"/etc/passwd"); }),
    r#"tar entry "disk.vmdk" is rejected: it is a symbolic link to "/etc/passwd"; an OVA holds regular files only"#
)]
#[case::hard_link(
    with_prefix(|t, _| { t.raw(b"disk.vmdk", b'1', 0, b"", b"vm.ovf"); }),
    r#"tar entry "disk.vmdk" is rejected: it is a hard link to "vm.ovf""#
)]
#[case::character_device(
    with_prefix(|t, _| { t.raw(b"disk.vmdk", b'3', 0, b"", b""); }),
    r#"tar entry "disk.vmdk" is rejected: it is a character device"#
)]
#[case::block_device(
    with_prefix(|t, _| { t.raw(b"disk.vmdk", b'4', 0, b"", b""); }),
    "it is a block device"
)]
#[case::fifo(
    with_prefix(|t, _| { t.raw(b"disk.vmdk", b'6', 0, b"", b""); }),
    "it is a FIFO"
)]
#[case::directory(
    with_prefix(|t, _| { t.raw(b"disks/", b'5', 0, b"", b""); }),
    r#"tar entry "disks/" is rejected: it is a directory"#
)]
#[case::bigger_than_declared(
    with_prefix(|t, _| { t.file("disk.vmdk", &disk_bytes(8192, 10)); }),
    r#"tar entry "disk.vmdk" is 8192 bytes, more than 4096 bytes (the size its OVF File element declares)"#
)]
#[case::truncated_in_the_data(
    { let mut b = with_prefix(|t, disk| { t.file("disk.vmdk", disk); }); b.truncate(b.len() - 1024 - 1000); b },
    r#"the OVA is truncated: entry "disk.vmdk" declares 4096 bytes but the stream ended after 3096"#
)]
#[case::truncated_at_a_header(
    { let mut b = with_prefix(|t, disk| { t.file("disk.vmdk", disk); }); b.truncate(b.len() - 1024); b },
    "the OVA is truncated: the stream ended after"
)]
#[case::truncated_inside_a_header(
    { let mut b = with_prefix(|t, disk| { t.file("disk.vmdk", disk); }); b.truncate(b.len() - 1024 - 4096 - 100); b },
    "the OVA is truncated: reading a tar header"
)]
#[case::wrong_digest(
    {
        let disk = disk_bytes(4096, 10);
        let ovf = descriptor(&[("disk.vmdk", Some(4096))]);
        let mf = format!("SHA256(vm.ovf)= {}\nSHA256(disk.vmdk)= {}\n", sha256(&ovf), "ab".repeat(32));
        RawTar::new().file("vm.ovf", &ovf).file("vm.mf", mf.as_bytes()).file("disk.vmdk", &disk).finish()
    },
    &format!(
        r#""disk.vmdk" does not match the manifest: SHA256 is {}, the manifest says {}; the OVA is corrupt or was altered"#,
        sha256(&disk_bytes(4096, 10)), "ab".repeat(32)
    )
)]
#[case::tampered_descriptor(
    {
        let disk = disk_bytes(4096, 10);
        let ovf = descriptor(&[("disk.vmdk", Some(4096))]);
        let mf = manifest(&[("vm.ovf", b"the original descriptor"), ("disk.vmdk", &disk)]);
        RawTar::new().file("vm.ovf", &ovf).file("vm.mf", &mf).file("disk.vmdk", &disk).finish()
    },
    r#""vm.ovf" does not match the manifest: SHA256 is"#
)]
#[case::listed_in_the_manifest_but_missing(
    {
        let disk = disk_bytes(4096, 10);
        let ovf = descriptor(&[("disk.vmdk", Some(4096))]);
        let mf = manifest(&[("vm.ovf", &ovf), ("disk.vmdk", &disk), ("disk2.vmdk", b"")]);
        RawTar::new().file("vm.ovf", &ovf).file("vm.mf", &mf).file("disk.vmdk", &disk).finish()
    },
    r#""disk2.vmdk" is listed in the manifest "vm.mf" but is not in the OVA"#
)]
#[case::referenced_but_missing(
    with_prefix(|_, _| {}),
    r#""disk.vmdk" is listed in the OVF descriptor's References (File "file0") but is not in the OVA"#
)]
#[case::not_in_the_manifest(
    {
        let disk = disk_bytes(4096, 10);
        let ovf = descriptor(&[("disk.vmdk", Some(4096))]);
        let mf = manifest(&[("vm.ovf", &ovf)]);
        RawTar::new().file("vm.ovf", &ovf).file("vm.mf", &mf).file("disk.vmdk", &disk).finish()
    },
    r#""disk.vmdk" is not listed in the manifest "vm.mf""#
)]
#[case::duplicate_entry(
    with_prefix(|t, disk| { t.file("disk.vmdk", disk).file("disk.vmdk", disk); }),
    r#"tar entry "disk.vmdk" appears twice in the OVA"#
)]
#[case::two_descriptors(
    with_prefix(|t, _| { t.file("other.ovf", b"<x/>"); }),
    r#"the OVA has two OVF descriptors, "vm.ovf" and "other.ovf""#
)]
#[case::no_descriptor(
    RawTar::new().file("disk.vmdk", b"data").finish(),
    "the OVA has no OVF descriptor"
)]
#[case::bad_descriptor(
    RawTar::new().file("vm.ovf", b"<Envelope>").finish(),
    r#"OVF descriptor "vm.ovf": the OVF descriptor is not well-formed XML"#
)]
#[case::href_with_a_path(
    RawTar::new().file("vm.ovf", &descriptor(&[("../disk.vmdk", None)])).finish(),
    r#"File "file0" has ovf:href "../disk.vmdk", which is not a plain file name"#
)]
#[case::bad_manifest(
    RawTar::new().file("vm.ovf", &descriptor(&[])).file("vm.mf", b"MD4(vm.ovf)= 00").finish(),
    r#"manifest "vm.mf": line 1: unsupported digest algorithm "MD4""#
)]
#[case::not_a_tar(
    b"PK\x03\x04 this is a zip file, not a tar archive, and it is long enough to fill a header block. ".repeat(8),
    "the OVA is"
)]
#[case::empty(Vec::new(), "the OVA is empty")]
#[case::bad_checksum(
    { let mut b = with_prefix(|t, disk| { t.file("disk.vmdk", disk); }); b[148] ^= 1; b },
    "the OVA is not a valid tar archive"
)]
fn malicious_or_broken_archives_are_rejected_and_leave_nothing(
    #[case] ova: Vec<u8>,
    #[case] message: &str,
) {
    let d = dirs();
    let e = assert_rejected_cleanly(&d, extract(&ova, &d));
    assert!(e.contains(message), "{e}");
    assert!(!Path::new(&absolute_target()).exists());
    assert!(!d.root.join("x").exists() && !d.root.join("escaped").exists());
}

#[test]
fn an_entry_over_the_callers_limit_is_rejected_before_writing() {
    let d = dirs();
    let disk = disk_bytes(10_000, 11);
    let ova = good_ova(&[("disk.vmdk", &disk)]);
    let e = assert_rejected_cleanly(
        &d,
        archive::extract(
            ova.as_slice(),
            &d.scratch,
            &ExtractOptions {
                max_file_bytes: 9_999,
            },
        ),
    );
    assert!(
        e.contains(
            r#"tar entry "disk.vmdk" is 10000 bytes, more than 9999 bytes (the largest file accepted)"#
        ),
        "{e}"
    );
}

#[test]
fn a_compressed_or_chunked_file_is_reported_as_unsupported() {
    let d = dirs();
    let ovf = String::from_utf8(descriptor(&[("disk.vmdk", None)]))
        .unwrap()
        .replace("ovf:href=", "ovf:compression=\"gzip\" ovf:href=");
    let ova = RawTar::new().file("vm.ovf", ovf.as_bytes()).finish();
    let e = assert_rejected_cleanly(&d, extract(&ova, &d));
    assert!(
        e.contains(r#"File "file0" ("disk.vmdk") is stored gzip-compressed (ovf:compression)"#),
        "{e}"
    );
}

#[test]
fn an_existing_file_in_the_scratch_directory_is_never_overwritten_or_followed() {
    let d = dirs();
    let outside = d.root.join("outside");
    std::fs::write(&outside, b"precious").unwrap();
    std::os::unix::fs::symlink(&outside, d.scratch.join("disk.vmdk")).unwrap();
    let ova = good_ova(&[("disk.vmdk", &disk_bytes(100, 12))]);
    let e = extract(&ova, &d).unwrap_err().to_string();
    assert!(e.contains("writing") && e.contains("disk.vmdk"), "{e}");
    assert_eq!(std::fs::read(&outside).unwrap(), b"precious");
    // The caller's own file is still there: only files this call created are removed.
    assert!(d.scratch.join("disk.vmdk").is_symlink());
}

#[test]
fn a_missing_scratch_directory_is_reported() {
    let e = archive::extract(
        &b""[..],
        Path::new("/nonexistent/vmi-ova-scratch"),
        &ExtractOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("scratch directory /nonexistent/vmi-ova-scratch"),
        "{e}"
    );
}

#[test]
fn read_descriptor_stops_after_the_descriptor() {
    let disk = disk_bytes(100_000, 13);
    let ova = good_ova(&[("disk.vmdk", &disk)]);
    let ovf_len = descriptor(&[("disk.vmdk", Some(100_000))]).len() as u64;
    // Reading one byte past the descriptor's data would fail.
    let fenced = Fence {
        inner: ova.as_slice(),
        limit: 512 + ovf_len,
        pos: 0,
    };
    let got = archive::read_descriptor(fenced).unwrap();
    assert_eq!(got.descriptor.name, "vm.ovf");
    assert_eq!(got.descriptor.envelope.files[0].href, "disk.vmdk");
    assert!(got.warnings.is_empty());
}

#[test]
fn read_descriptor_finds_a_late_descriptor_and_checks_the_entries_before_it() {
    let ovf = descriptor(&[("d.vmdk", None)]);
    let late = RawTar::new()
        .file("d.vmdk", b"disk")
        .file("vm.ovf", &ovf)
        .finish();
    let got = archive::read_descriptor(late.as_slice()).unwrap();
    assert_eq!(got.descriptor.position, 1);
    assert!(matches!(
        got.warnings.as_slice(),
        [ArchiveWarning::DescriptorNotFirst { first_entry, .. }] if first_entry == "d.vmdk"
    ));
    let evil = RawTar::new()
        .raw(b"d.vmdk", b'2', 0, b"", b"/etc/shadow")
        .file("vm.ovf", &ovf)
        .finish();
    let e = archive::read_descriptor(evil.as_slice())
        .unwrap_err()
        .to_string();
    assert!(e.contains("symbolic link"), "{e}");
    let none = RawTar::new().file("d.vmdk", b"disk").finish();
    assert!(matches!(
        archive::read_descriptor(none.as_slice()),
        Err(ArchiveError::NoDescriptor)
    ));
}

#[test]
fn too_many_files_before_the_descriptor_are_refused_and_removed() {
    let d = dirs();
    let mut t = RawTar::new();
    for i in 0..=archive::MAX_FILES_BEFORE_DESCRIPTOR {
        t.file(&format!("f{i}.vmdk"), b"x");
    }
    t.file("vm.ovf", &descriptor(&[("f0.vmdk", None)]));
    let e = assert_rejected_cleanly(&d, extract(&t.finish(), &d));
    assert!(
        e.contains("the OVA has more than 64 files before its OVF descriptor"),
        "{e}"
    );
}
