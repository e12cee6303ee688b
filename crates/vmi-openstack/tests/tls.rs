//! TLS: verification is on by default; an untrusted certificate fails clearly; `ca_cert`
//! makes it trusted; turning verification off is explicit.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::pedantic
)]

mod support;

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use vmi_openstack::OpenstackApi;
use vmi_openstack::error::OpenstackError;

/// A TLS server on 127.0.0.1 with a self-signed certificate for "localhost" that answers every
/// request with Keystone's 401. Returns its port and the certificate PEM.
async fn self_signed_server() -> (u16, String) {
    vmi_openstack::tls::install_default_provider();
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let pem = cert.cert.pem();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = vec![0u8; 8192];
                let _ = tls.read(&mut buf).await;
                let body = r#"{"error": {"code": 401, "message": "The request you have made requires authentication.", "title": "Unauthorized"}}"#;
                let response = format!(
                    "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (port, pem)
}

fn client(port: u16, ca: Option<String>, insecure: bool) -> vmi_openstack::HttpOpenstack {
    let cloud_cfg = {
        let mut c = vmi_openstack::config::CloudConfig {
            auth_url: format!("https://localhost:{port}/v3"),
            region: None,
            interface: vmi_api::EndpointInterface::Public,
            credentials: vmi_openstack::config::Credentials::ApplicationCredential(
                vmi_openstack::config::ApplicationCredential {
                    id: Some("x".into()),
                    name: None,
                    user: None,
                    secret: vmi_core::Sensitive::new("y"),
                },
            ),
            tls: Default::default(),
            origin: "test".into(),
        };
        c.tls.ca_pem = ca;
        c.tls.insecure = insecure;
        c
    };
    let options = vmi_openstack::session::SessionOptions {
        attempts: 1,
        ..Default::default()
    };
    vmi_openstack::HttpOpenstack::new(cloud_cfg, options).unwrap()
}

#[tokio::test]
async fn a_self_signed_certificate_without_ca_is_a_clear_tls_failure() {
    let (port, _) = self_signed_server().await;
    let err = client(port, None, false).authenticate().await.unwrap_err();
    assert!(matches!(err, OpenstackError::Tls { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("unknown CA"), "{text}");
    assert!(text.contains("ca_cert"), "{text}");
}

#[tokio::test]
async fn the_ca_cert_makes_the_certificate_trusted() {
    let (port, pem) = self_signed_server().await;
    let err = client(port, Some(pem), false)
        .authenticate()
        .await
        .unwrap_err();
    // The TLS handshake worked: the error is Keystone's answer.
    assert_eq!(err.status(), Some(401), "{err}");
}

#[tokio::test]
async fn verification_off_is_explicit_and_works() {
    let (port, _) = self_signed_server().await;
    let err = client(port, None, true).authenticate().await.unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");
}

#[test]
fn a_ca_cert_without_certificates_is_refused() {
    let opts = vmi_openstack::config::TlsOptions {
        ca_pem: Some("not a pem".into()),
        insecure: false,
    };
    let err = vmi_openstack::tls::client_config(&opts).unwrap_err();
    assert!(err.to_string().contains("holds no certificate"), "{err}");
}
