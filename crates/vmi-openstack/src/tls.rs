//! TLS client configuration: verification against the system roots plus the configured CA, on
//! unless explicitly turned off.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::TlsOptions;
use crate::error::OpenstackError;

/// Builds the rustls configuration for `options`.
///
/// The system roots are those of the platform store (`/etc/ssl/certs` on Debian); `ca_pem` may
/// hold several certificates. A `ca_pem` without any certificate is an error, not a silent no-op.
pub fn client_config(options: &TlsOptions) -> Result<rustls::ClientConfig, OpenstackError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| OpenstackError::Config(format!("TLS setup: {e}")))?;
    if options.insecure {
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(
                provider.signature_verification_algorithms,
            )))
            .with_no_client_auth());
    }
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A malformed certificate in the system store must not break every connection.
        let _ = roots.add(cert);
    }
    if let Some(pem) = &options.ca_pem {
        let certs = parse_pem_certs(pem)?;
        for cert in certs {
            roots.add(cert).map_err(|e| {
                OpenstackError::Config(format!("ca_cert: a certificate could not be used: {e}"))
            })?;
        }
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// Parses every certificate of a PEM bundle.
pub fn parse_pem_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, OpenstackError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| OpenstackError::Config(format!("ca_cert is not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(OpenstackError::Config(
            "ca_cert holds no certificate (expected PEM text starting with -----BEGIN CERTIFICATE-----)"
                .to_owned(),
        ));
    }
    Ok(certs)
}

/// Accepts any certificate. Used only when verification was explicitly turned off.
#[derive(Debug)]
struct NoVerification(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// Makes sure a process-wide default crypto provider exists for libraries that ask for one.
pub fn install_default_provider() {
    let _ = CryptoProvider::install_default(rustls::crypto::ring::default_provider());
}
