//! Helpers for black-box tests of the `vm-import` binary.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::pedantic
)]

pub mod cloud;
pub mod controller;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Runs the binary with `args`, with no `OS_*` variable leaking in from the caller.
pub fn vm_import(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vm-import"));
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("OS_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Writes `text` into a file in `dir`.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// The three documents of an OpenStack import.
pub fn input_yaml(
    endpoint: &str,
    secret: &[(&str, &str)],
    vm: &str,
    mapping: &[(&str, &str)],
) -> String {
    let secret_lines: String = secret
        .iter()
        .map(|(k, v)| format!("  {k}: {v:?}\n"))
        .collect();
    let mapping_lines: String = mapping
        .iter()
        .map(|(s, d)| format!("  - sourceNetwork: {s:?}\n    destinationNetwork: {d:?}\n"))
        .collect();
    let mapping_block = if mapping.is_empty() {
        String::new()
    } else {
        format!("  networkMapping:\n{mapping_lines}")
    };
    format!(
        "apiVersion: migration.harvesterhci.io/v1beta1
kind: OpenstackSource
metadata: {{name: cloud, namespace: default}}
spec:
  endpoint: {endpoint:?}
  region: RegionOne
  credentials: {{name: cloud-credentials, namespace: default}}
---
apiVersion: v1
kind: Secret
metadata: {{name: cloud-credentials, namespace: default}}
stringData:
{secret_lines}---
apiVersion: migration.harvesterhci.io/v1beta1
kind: VirtualMachineImport
metadata: {{name: test-import, namespace: default}}
spec:
  virtualMachineName: {vm:?}
{mapping_block}  sourceCluster: {{name: cloud, namespace: default, kind: OpenstackSource, apiVersion: migration.harvesterhci.io/v1beta1}}
"
    )
}

/// A TLS server with a self-signed certificate on 127.0.0.1, answering Keystone's 401 to
/// everything, on its own thread. Returns the port.
pub fn self_signed_tls_server() -> u16 {
    let _ =
        rustls::crypto::CryptoProvider::install_default(rustls::crypto::ring::default_provider());
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    let mut buf = vec![0u8; 8192];
                    let _ = tls.read(&mut buf).await;
                    let body = r#"{"error": {"code": 401, "message": "unauthorized", "title": "Unauthorized"}}"#;
                    let r = format!("HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
                    let _ = tls.write_all(r.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
    });
    port
}

/// A port on 127.0.0.1 nothing listens on.
pub fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A plain-HTTP file server on 127.0.0.1 (a thread per connection) that serves `data` at
/// `/<name>` only, with `Range: bytes=N-` and, with `auth`, only to that `Authorization`
/// value (else 401). Returns the port.
pub fn file_server(name: &str, data: Vec<u8>, auth: Option<String>) -> u16 {
    serve_file(name, data, auth, None)
}

/// [`file_server`] without auth that sends bodies `chunk` bytes at a time with `pause` after
/// each: slow enough to interrupt a download.
pub fn slow_file_server(
    name: &str,
    data: Vec<u8>,
    chunk: usize,
    pause: std::time::Duration,
) -> u16 {
    serve_file(name, data, None, Some((chunk, pause)))
}

fn serve_file(
    name: &str,
    data: Vec<u8>,
    auth: Option<String>,
    throttle: Option<(usize, std::time::Duration)>,
) -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let data = Arc::new(data);
    let path = format!("/{name}");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let (data, path, auth) = (data.clone(), path.clone(), auth.clone());
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut request_line = String::new();
                let _ = reader.read_line(&mut request_line);
                let (mut range_start, mut authorization) = (None, None);
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                        break;
                    }
                    let Some((k, v)) = line.split_once(':') else {
                        continue;
                    };
                    match k.trim().to_ascii_lowercase().as_str() {
                        "range" => {
                            range_start = v
                                .trim()
                                .strip_prefix("bytes=")
                                .and_then(|r| r.strip_suffix('-'))
                                .and_then(|n| n.parse::<usize>().ok());
                        }
                        "authorization" => authorization = Some(v.trim().to_owned()),
                        _ => {}
                    }
                }
                let target = request_line.split_whitespace().nth(1).unwrap_or_default();
                let head = |status: &str, extra: &str, len: usize| {
                    format!(
                        "HTTP/1.1 {status}\r\n{extra}Content-Length: {len}\r\nConnection: close\r\n\r\n"
                    )
                };
                if auth.is_some() && authorization != auth {
                    let _ = conn.write_all(
                        head("401 Unauthorized", "WWW-Authenticate: Basic\r\n", 0).as_bytes(),
                    );
                    return;
                }
                if target != path {
                    let _ = conn.write_all(head("404 Not Found", "", 0).as_bytes());
                    return;
                }
                let len = data.len();
                let start = range_start.unwrap_or(0).min(len);
                let h = match range_start {
                    Some(s) => head(
                        "206 Partial Content",
                        &format!(
                            "Content-Range: bytes {s}-{}/{len}\r\n",
                            len.saturating_sub(1)
                        ),
                        len - start,
                    ),
                    None => head("200 OK", "Accept-Ranges: bytes\r\n", len),
                };
                let _ = conn.write_all(h.as_bytes());
                match throttle {
                    None => {
                        let _ = conn.write_all(&data[start..]);
                    }
                    Some((chunk, pause)) => {
                        for part in data[start..].chunks(chunk) {
                            if conn.write_all(part).is_err() {
                                return;
                            }
                            std::thread::sleep(pause);
                        }
                    }
                }
            });
        }
    });
    port
}
