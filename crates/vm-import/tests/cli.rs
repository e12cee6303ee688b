//! The binary's front door without a cloud: exit codes, messages, output formats.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::pedantic
)]

mod common;

use common::*;

const DEMO_SECRET: &[(&str, &str)] = &[
    ("username", "demo"),
    ("password", "s3cret-Pa55"),
    ("project_name", "demo"),
    ("domain_name", "Default"),
];

#[test]
fn crds_prints_the_committed_crds() {
    let out = vm_import(&["crds"], &[]);
    assert!(out.status.success());
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/crds.yaml"
    ))
    .unwrap();
    assert_eq!(stdout(&out), committed);
}

#[test]
fn a_missing_file_is_bad_input() {
    let out = vm_import(&["preflight", "-f", "/nonexistent/import.yaml"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot read /nonexistent/import.yaml"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_malformed_document_names_document_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let text = input_yaml(
        "http://127.0.0.1:1/v3",
        DEMO_SECRET,
        "vm",
        &[("a", "default/b")],
    )
    .replace("destinationNetwork", "destination");
    let f = write(dir.path(), "in.yaml", &text);
    let out = vm_import(&["preflight", "-f", f.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("document 3 (VirtualMachineImport test-import)"),
        "{err}"
    );
    assert!(
        err.contains("spec.networkMapping[0]") && err.contains("destinationNetwork"),
        "{err}"
    );
}

#[test]
fn no_credentials_anywhere_is_bad_input_saying_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let text = input_yaml("http://127.0.0.1:1/v3", DEMO_SECRET, "vm", &[]);
    let only_import = text.split("---").nth(2).unwrap();
    let f = write(dir.path(), "in.yaml", only_import);
    let out = vm_import(
        &["preflight", "-f", f.to_str().unwrap()],
        &[("HOME", dir.path().to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("not in the input") && err.contains("--os-cloud"),
        "{err}"
    );
}

#[test]
fn an_unreachable_endpoint_fails_source_auth_with_json_of_the_documented_shape() {
    let dir = tempfile::tempdir().unwrap();
    let port = closed_port();
    let endpoint = format!("http://127.0.0.1:{port}/v3");
    let f = write(
        dir.path(),
        "in.yaml",
        &input_yaml(&endpoint, DEMO_SECRET, "vm", &[("net", "default/x")]),
    );
    let out = vm_import(
        &["preflight", "-f", f.to_str().unwrap(), "--output", "json"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["import"], "default/test-import");
    assert_eq!(v["passed"], false);
    let checks = v["checks"].as_array().unwrap();
    for c in checks {
        let keys: Vec<_> = c.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["id", "message", "status", "subject"]);
        assert!(["pass", "warn", "fail", "skip"].contains(&c["status"].as_str().unwrap()));
    }
    let auth = checks.iter().find(|c| c["id"] == "source.auth").unwrap();
    assert_eq!(auth["status"], "fail");
    let msg = auth["message"].as_str().unwrap();
    assert!(
        msg.contains("cannot connect") && msg.contains(&format!("127.0.0.1:{port}")),
        "{msg}"
    );
    assert!(!stdout(&out).contains("s3cret-Pa55") && !stderr(&out).contains("s3cret-Pa55"));
}

#[test]
fn a_self_signed_certificate_without_a_ca_is_a_clear_tls_failure() {
    let dir = tempfile::tempdir().unwrap();
    let port = self_signed_tls_server();
    let endpoint = format!("https://localhost:{port}/v3");
    let f = write(
        dir.path(),
        "in.yaml",
        &input_yaml(&endpoint, DEMO_SECRET, "vm", &[]),
    );
    let out = vm_import(&["preflight", "-f", f.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let line = text.lines().find(|l| l.contains("source.auth")).unwrap();
    assert!(
        line.contains("FAIL") && line.contains("TLS handshake failed"),
        "{line}"
    );
    assert!(
        line.contains("unknown CA") && line.contains("ca_cert"),
        "{line}"
    );

    // With --insecure the handshake passes (Keystone then refuses the credentials), and the
    // report warns that verification is off.
    let out = vm_import(&["preflight", "-f", f.to_str().unwrap(), "--insecure"], &[]);
    let text = stdout(&out);
    assert!(
        text.lines()
            .any(|l| l.contains("WARN") && l.contains("source.tls")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("source.auth") && l.contains("Keystone refused")),
        "{text}"
    );
}

#[test]
fn the_upstream_readme_objects_are_accepted_as_input() {
    let base = concat!(env!("CARGO_MANIFEST_DIR"), "/../vmi-api/tests/upstream/");
    let docs: Vec<String> = [
        "openstack-source.yaml",
        "openstack-secret.yaml",
        "openstack-import-short-kind.yaml",
    ]
    .iter()
    .map(|n| std::fs::read_to_string(format!("{base}{n}")).unwrap())
    .collect();
    let request = vmi_core::input::parse_documents(&docs.join("---\n"))
        .unwrap()
        .into_request(false)
        .unwrap();
    assert_eq!(request.import_key(), "default/openstack-demo");
    assert!(request.secret.is_some());
}

fn repo_file(rel: &str) -> String {
    format!("{}/../../{rel}", env!("CARGO_MANIFEST_DIR"))
}

/// The README's main job: the demo OVA imports with no cloud, and the disk is the one
/// `make-demo-ova` made (its SHA-256 as a raw disk is fixed).
#[test]
fn the_readme_demo_ova_import_works_without_a_cloud() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("demo-vm");
    let input = repo_file("examples/ova/demo-vm.yaml");
    let out = vm_import(&["preflight", "-f", &input], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("Result: PASSED"), "{}", stdout(&out));

    let out = vm_import(
        &[
            "import",
            "-f",
            &input,
            "--out",
            out_dir.to_str().unwrap(),
            "--format",
            "raw",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("Import default/demo-vm: done"), "{text}");
    let disk = std::fs::read(out_dir.join("disks/disk-0.raw")).unwrap();
    use sha2::Digest;
    assert_eq!(
        hex::encode(sha2::Sha256::digest(&disk)),
        "d2de01f8ebf35629ff8d298e728bdf704118f428fd5ec35ac45cf16701d49058"
    );
    for f in ["virtualmachine.yaml", "images.yaml", "summary.json"] {
        assert!(out_dir.join(f).exists(), "{f} missing");
    }
}

#[test]
fn an_unmapped_ova_nic_is_reported_with_its_mac_as_for_openstack() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo_file("examples/ova/demo-vm.yaml"))
        .unwrap()
        .replace(
            "file://demo-vm.ova",
            &format!("file://{}", repo_file("examples/ova/demo-vm.ova")),
        )
        .replace(
            "  - sourceNetwork: Storage Network\n    destinationNetwork: default/storage\n",
            "",
        );
    let f = write(dir.path(), "in.yaml", &text);
    let out = vm_import(&["preflight", "-f", f.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(
        text.contains("WARN  network.unmapped")
            && text.contains("NIC 00:50:56:00:de:02 on network 'Storage Network' has no mapping"),
        "{text}"
    );
}

/// Killed (SIGKILL) while the OVA downloads, the same command finishes the import with the
/// same disk, and nothing of the interrupted download is left in the output folder.
#[test]
fn an_ova_import_killed_mid_download_resumes_with_the_same_disk() {
    let ova = std::fs::read(repo_file("examples/ova/demo-vm.ova")).unwrap();
    // ~400 KiB at 4 KiB per 50 ms: about 5 s of download, time enough to kill it on a busy
    // machine.
    let port = slow_file_server(
        "demo-vm.ova",
        ova,
        4 << 10,
        std::time::Duration::from_millis(50),
    );
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo_file("examples/ova/demo-vm.yaml"))
        .unwrap()
        .replace(
            "file://demo-vm.ova",
            &format!("http://127.0.0.1:{port}/demo-vm.ova"),
        );
    let input = write(dir.path(), "in.yaml", &text);
    let out_dir = dir.path().join("out");
    let args = [
        "import",
        "-f",
        input.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
        "--format",
        "raw",
    ];

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vm-import"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill once part of the archive has been extracted.
    let scratch = out_dir.join("disks/.ova");
    let start = std::time::Instant::now();
    let partial = loop {
        let size: u64 = std::fs::read_dir(&scratch)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        if size > 64 << 10 {
            break size;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the import ended before it could be killed"
        );
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "no extraction progress in {}",
            scratch.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(partial < 400 << 10, "killed too late: {partial} bytes");
    assert!(!out_dir.join("disks/disk-0.raw").exists());

    let out = vm_import(&args, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    use sha2::Digest;
    let disk = std::fs::read(out_dir.join("disks/disk-0.raw")).unwrap();
    assert_eq!(
        hex::encode(sha2::Sha256::digest(&disk)),
        "d2de01f8ebf35629ff8d298e728bdf704118f428fd5ec35ac45cf16701d49058"
    );
    let mut left: Vec<String> = std::fs::read_dir(out_dir.join("disks"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["disk-0.raw"]);
}
