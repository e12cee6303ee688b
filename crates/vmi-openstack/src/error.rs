//! Errors of the OpenStack client. Every error that comes from a request carries the method, the
//! URL (never a token or password: neither goes into URLs) and, when the service answered, the
//! HTTP status and `x-openstack-request-id`.

use std::fmt;

/// The HTTP method and URL of a failed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestLine {
    pub method: String,
    pub url: String,
}

impl fmt::Display for RequestLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.url)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpenstackError {
    /// The service answered with an error status.
    #[error("{request}: HTTP {status}{}: {message}", request_id.as_ref().map(|r| format!(" (request id {r})")).unwrap_or_default())]
    Api {
        request: RequestLine,
        status: u16,
        request_id: Option<String>,
        message: String,
    },

    /// The TLS handshake failed: most often an untrusted or mismatched certificate.
    #[error(
        "{request}: TLS handshake failed: {detail}. If the endpoint uses a private CA, put that \
         CA (PEM) in the Secret's `ca_cert` (CLI: OS_CACERT or clouds.yaml `cacert`); turning \
         verification off (insecureSkipTlsVerify) is possible but not recommended"
    )]
    Tls {
        request: RequestLine,
        detail: String,
    },

    /// Nothing answered: DNS, refused connection, unreachable network.
    #[error(
        "{request}: cannot connect: {detail}; check the endpoint address and that it is reachable from here"
    )]
    Connect {
        request: RequestLine,
        detail: String,
    },

    #[error("{request}: no answer within {seconds} s")]
    Timeout { request: RequestLine, seconds: u64 },

    /// The connection broke or another transport error.
    #[error("{request}: {detail}")]
    Transport {
        request: RequestLine,
        detail: String,
    },

    /// The service answered 2xx with a body that is not what the API documents.
    #[error("{request}: unexpected response: {detail}")]
    Decode {
        request: RequestLine,
        detail: String,
    },

    /// The catalog lacks a service, or has it only in other regions or interfaces.
    #[error(
        "the service catalog has no {interface} endpoint of type `{service}`{} (it has: {available}); \
         check the region and interface of the source",
        region.as_ref().map(|r| format!(" in region '{r}'")).unwrap_or_default()
    )]
    Catalog {
        service: String,
        region: Option<String>,
        interface: String,
        available: String,
    },

    /// A setting cannot be used (bad URL, unreadable CA certificate).
    #[error("{0}")]
    Config(String),

    /// A resource did not reach the awaited state.
    #[error("{what}: {detail}")]
    State { what: String, detail: String },
}

impl OpenstackError {
    /// HTTP status when the service answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            OpenstackError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// Worth retrying later: timeouts, broken connections, 5xx (except 501), 429.
    pub fn is_transient(&self) -> bool {
        match self {
            OpenstackError::Api { status, .. } => {
                matches!(status, 429 | 500 | 502 | 503 | 504)
            }
            OpenstackError::Timeout { .. }
            | OpenstackError::Connect { .. }
            | OpenstackError::Transport { .. } => true,
            _ => false,
        }
    }

    /// A short CamelCase kind, used as Event and condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            OpenstackError::Api { status: 401, .. } => "Unauthorized",
            OpenstackError::Api { status: 403, .. } => "Forbidden",
            OpenstackError::Api { status: 404, .. } => "NotFound",
            OpenstackError::Api { status: 409, .. } => "Conflict",
            OpenstackError::Api {
                status: 413 | 429, ..
            } => "OverLimit",
            OpenstackError::Api { .. } => "ApiError",
            OpenstackError::Tls { .. } => "TlsError",
            OpenstackError::Connect { .. } => "Unreachable",
            OpenstackError::Timeout { .. } => "Timeout",
            OpenstackError::Transport { .. } => "TransportError",
            OpenstackError::Decode { .. } => "BadResponse",
            OpenstackError::Catalog { .. } => "CatalogError",
            OpenstackError::Config(_) => "ConfigError",
            OpenstackError::State { .. } => "ResourceStateError",
        }
    }
}

/// Extracts the human message from an OpenStack error body: Nova/Cinder
/// `{"itemNotFound": {"message": …}}`, Neutron `{"NeutronError": {"message": …}}`, Keystone
/// `{"error": {"message": …}}`, Glance's plain text, or the start of anything else.
pub fn error_message(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        if let Some(m) = v.get("message").and_then(serde_json::Value::as_str) {
            return m.to_owned();
        }
        if let Some(obj) = v.as_object() {
            for inner in obj.values() {
                if let Some(m) = inner.get("message").and_then(serde_json::Value::as_str) {
                    return m.to_owned();
                }
            }
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('<'))
        .collect::<Vec<_>>()
        .join(" ");
    let text: String = text.chars().take(300).collect();
    if text.is_empty() {
        "(empty body)".to_owned()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_extracted_from_each_service_shape() {
        assert_eq!(
            error_message(
                br#"{"itemNotFound": {"code": 404, "message": "Instance x could not be found."}}"#
            ),
            "Instance x could not be found."
        );
        assert_eq!(
            error_message(br#"{"NeutronError": {"type": "NetworkNotFound", "message": "Network y could not be found.", "detail": ""}}"#),
            "Network y could not be found."
        );
        assert_eq!(
            error_message(br#"{"error": {"code": 401, "message": "The request you have made requires authentication.", "title": "Unauthorized"}}"#),
            "The request you have made requires authentication."
        );
        assert_eq!(
            error_message(b"404 Not Found\n\nThe resource could not be found.\n\n   "),
            "404 Not Found The resource could not be found."
        );
        assert_eq!(error_message(b""), "(empty body)");
    }

    #[test]
    fn api_errors_carry_method_url_status_and_request_id() {
        let e = OpenstackError::Api {
            request: RequestLine {
                method: "GET".into(),
                url: "http://n/v2.0/networks/x".into(),
            },
            status: 404,
            request_id: Some("req-1".into()),
            message: "Network x could not be found.".into(),
        };
        assert_eq!(
            e.to_string(),
            "GET http://n/v2.0/networks/x: HTTP 404 (request id req-1): Network x could not be found."
        );
        assert!(e.is_not_found());
        assert!(!e.is_transient());
    }
}
