//! The engine over the OVA source: the committed demo OVA from a file and over HTTP (with a
//! cut connection resumed by a Range request, and basic auth), and an archive whose disk does
//! not match its manifest.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::pedantic
)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vmi_core::input::{ImportRequest, SourceDoc};
use vmi_core::phase::Phase;
use vmi_engine::ova::OvaLocation;
use vmi_engine::state::ImportState;
use vmi_engine::{EngineError, EngineOptions, Journal, OutputFormat, Source, progress::Silent};

/// SHA-256 of the 64 MiB raw disk that `make-demo-ova` puts in the demo OVA.
const DEMO_DISK_SHA256: &str = "d2de01f8ebf35629ff8d298e728bdf704118f428fd5ec35ac45cf16701d49058";

fn demo_ova() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/ova/demo-vm.ova")
}

fn request(url: &str, with_secret: bool) -> ImportRequest {
    let secret = if with_secret {
        "---\napiVersion: v1\nkind: Secret\nmetadata: {name: ova-auth, namespace: default}\nstringData: {username: alice, password: s3cret-pw}\n"
    } else {
        ""
    };
    let creds = if with_secret {
        "  credentials: {name: ova-auth, namespace: default}\n"
    } else {
        ""
    };
    let yaml = format!(
        r#"
apiVersion: migration.harvesterhci.io/v1beta1
kind: OvaSource
metadata: {{name: demo-ova, namespace: default}}
spec:
  url: "{url}"
  httpTimeoutSeconds: 30
{creds}{secret}---
apiVersion: migration.harvesterhci.io/v1beta1
kind: VirtualMachineImport
metadata: {{name: demo-vm, namespace: default}}
spec:
  virtualMachineName: demo-vm
  networkMapping:
  - {{sourceNetwork: VM Network, destinationNetwork: default/vlan1}}
  - {{sourceNetwork: Storage Network, destinationNetwork: default/storage}}
  sourceCluster: {{name: demo-ova, namespace: default, kind: OvaSource}}
"#
    );
    vmi_core::input::parse_documents(&yaml)
        .unwrap()
        .into_request(false)
        .unwrap()
}

async fn import(
    url: &str,
    with_secret: bool,
    out: &Path,
) -> Result<vmi_engine::Summary, EngineError> {
    let req = request(url, with_secret);
    let Some(SourceDoc::Ova(src)) = &req.source else {
        panic!("no OvaSource")
    };
    let loc = OvaLocation::from_source(src, req.secret.as_ref(), None).unwrap();
    let journal = match Journal::load(&out.join("state.json")).unwrap() {
        Some(j) => j,
        None => Journal::create(
            &out.join("state.json"),
            ImportState::new("default/demo-vm".into()),
        )
        .unwrap(),
    };
    let mut opts = EngineOptions::new(out.to_owned());
    opts.format = OutputFormat::Raw;
    opts.poll = Duration::from_millis(5);
    vmi_engine::run(
        Source::Ova(Arc::new(loc)),
        &req,
        &journal,
        &opts,
        Arc::new(Silent),
    )
    .await
}

fn sha256_file(p: &Path) -> String {
    hex::encode(sha2::Sha256::digest(std::fs::read(p).unwrap()))
}

/// Every file under `dir`, relative.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path().strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

fn assert_demo_imported(out: &Path, summary: &vmi_engine::Summary) {
    assert_eq!(summary.disks.len(), 1);
    let file = out.join(summary.disks[0].file.as_deref().unwrap());
    assert_eq!(file, out.join("disks/disk-0.raw"));
    assert_eq!(
        sha256_file(&file),
        DEMO_DISK_SHA256,
        "the imported disk differs"
    );
    let vm = std::fs::read_to_string(out.join("virtualmachine.yaml")).unwrap();
    for want in [
        "name: demo-vm",
        "macAddress: 00:50:56:00:de:01",
        "macAddress: 00:50:56:00:de:02",
        "networkName: default/vlan1",
        "networkName: default/storage",
        "bus: sata",
        "guest: 2048Mi",
        "efi:",
    ] {
        assert!(
            vm.contains(want),
            "virtualmachine.yaml lacks {want:?}:\n{vm}"
        );
    }
    // Only the outputs remain: no scratch copy of the archive.
    assert_eq!(
        files_under(out),
        [
            ".lock",
            "disks/disk-0.raw",
            "images.yaml",
            "state.json",
            "virtualmachine.yaml"
        ]
        .iter()
        .filter(|f| out.join(f).exists())
        .map(ToString::to_string)
        .collect::<Vec<_>>()
    );
    assert!(!out.join("disks/.ova").exists());
}

#[tokio::test]
async fn the_demo_ova_imports_from_a_file_with_the_same_disk_bytes() {
    let out = tempfile::tempdir().unwrap();
    let url = format!("file://{}", demo_ova().canonicalize().unwrap().display());
    let summary = import(&url, false, out.path()).await.unwrap();
    assert_demo_imported(out.path(), &summary);

    // Run again: already done, nothing redone, same disk.
    let again = import(&url, false, out.path()).await.unwrap();
    assert_eq!(again.disks[0].sha256, summary.disks[0].sha256);
}

#[tokio::test]
async fn a_missing_file_fails_preflight_naming_the_path() {
    let out = tempfile::tempdir().unwrap();
    let err = import("file:///nonexistent/vm.ova", false, out.path())
        .await
        .unwrap_err();
    let EngineError::Preflight(report) = err else {
        panic!("expected a preflight failure, got {err}")
    };
    let failed: Vec<_> = report.failed().collect();
    assert!(
        failed
            .iter()
            .any(|c| c.message.contains("/nonexistent/vm.ova")),
        "{failed:?}"
    );
}

/// A one-request-per-connection HTTP/1.1 server of `data` with Range support. With
/// `cut = Some((n, at))` the body of request number `n` (from 0) is cut after `at` bytes; with
/// `auth`, requests without that `Authorization` value get 401.
struct Server {
    url: String,
    requests: Arc<Mutex<Vec<String>>>,
}

async fn serve(data: Vec<u8>, cut: Option<(usize, usize)>, auth: Option<String>) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/exports/demo-vm.ova",
        listener.local_addr().unwrap()
    );
    let requests = Arc::new(Mutex::new(Vec::new()));
    let log = requests.clone();
    let data = Arc::new(data);
    tokio::spawn(async move {
        for n in 0.. {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if sock.read(&mut b).await.unwrap_or(0) == 0 {
                    break;
                }
                head.push(b[0]);
            }
            let head = String::from_utf8_lossy(&head).to_string();
            log.lock().unwrap().push(head.clone());
            let header = |name: &str| {
                head.lines().find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
                })
            };
            if let Some(a) = &auth
                && header("authorization").as_deref() != Some(a.as_str())
            {
                let _ = sock
                        .write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        .await;
                continue;
            }
            let len = data.len();
            let start = header("range").and_then(|r| {
                r.strip_prefix("bytes=")?
                    .strip_suffix('-')?
                    .parse::<usize>()
                    .ok()
            });
            let (status, body) = match start {
                Some(s) => (
                    format!(
                        "206 Partial Content\r\nContent-Range: bytes {s}-{}/{len}",
                        len - 1
                    ),
                    &data[s..],
                ),
                None => ("200 OK".to_owned(), &data[..]),
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
            let send = match cut {
                Some((at_request, at)) if at_request == n => &body[..at],
                _ => body,
            };
            let _ = sock.write_all(send).await;
            let _ = sock.shutdown().await;
        }
    });
    Server { url, requests }
}

#[tokio::test]
async fn an_ova_over_http_resumes_with_a_range_after_a_cut() {
    let data = std::fs::read(demo_ova()).unwrap();
    let cut_at = 150_000;
    // Request 0 is preflight's (it reads the descriptor only); request 1 is the export's.
    let server = serve(data, Some((1, cut_at)), None).await;
    let out = tempfile::tempdir().unwrap();
    let summary = import(&server.url, false, out.path()).await.unwrap();
    assert_demo_imported(out.path(), &summary);
    let requests = server.requests.lock().unwrap().clone();
    let ranges: Vec<_> = requests
        .iter()
        .filter_map(|r| {
            r.lines()
                .find(|l| l.to_ascii_lowercase().starts_with("range:"))
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(
        ranges,
        [format!("range: bytes={cut_at}-")],
        "expected one resume at the cut; requests: {requests:#?}"
    );
}

#[tokio::test]
async fn basic_auth_comes_from_the_secret_and_a_refusal_says_so() {
    use base64::Engine as _;
    let data = std::fs::read(demo_ova()).unwrap();
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice:s3cret-pw")
    );
    let server = serve(data, None, Some(expected)).await;

    let out = tempfile::tempdir().unwrap();
    let summary = import(&server.url, true, out.path()).await.unwrap();
    assert_demo_imported(out.path(), &summary);

    let out = tempfile::tempdir().unwrap();
    let err = import(&server.url, false, out.path()).await.unwrap_err();
    let EngineError::Preflight(report) = err else {
        panic!("expected a preflight failure, got {err}")
    };
    let text = report
        .failed()
        .map(|c| c.message.clone())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(text.contains("HTTP 401"), "{text}");
    assert!(text.contains("Secret"), "{text}");
}

#[tokio::test]
async fn a_disk_that_does_not_match_the_manifest_fails_naming_it_and_leaves_no_file() {
    let mut data = std::fs::read(demo_ova()).unwrap();
    // The VMDK is the last member: flip a byte in its middle.
    let at = data.len() - 100_000;
    data[at] ^= 0xff;
    let dir = tempfile::tempdir().unwrap();
    let ova = dir.path().join("corrupt.ova");
    std::fs::write(&ova, &data).unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();

    let err = import(&format!("file://{}", ova.display()), false, &out)
        .await
        .unwrap_err();
    let EngineError::Failed {
        phase,
        reason,
        message,
        ..
    } = &err
    else {
        panic!("expected a failed import, got {err}")
    };
    assert_eq!(*phase, Phase::Export, "{err}");
    assert_eq!(reason, "ChecksumMismatch", "{err}");
    assert!(message.contains("demo-vm-disk1.vmdk"), "{message}");
    let left: Vec<_> = files_under(&out)
        .into_iter()
        .filter(|f| f.starts_with("disks/"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
