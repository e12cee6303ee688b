//! The HTTP server that hands finished disks to Harvester.
//!
//! Each disk is served at `/disks/<token>/<file>` where the token is 256 random bits made for
//! that disk alone. Only registered (token, file) pairs answer; everything else, including a
//! right token with another file name, is a plain 404 — there is no listing and no way to learn
//! which tokens exist. `GET` and `HEAD` with HTTP Range are supported (Harvester's downloader
//! resumes). Unregistering a disk makes its URL 404 at once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use tower::ServiceExt;
use tower_http::services::ServeFile;
use tracing::{debug, info};

/// A served disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served {
    pub file: PathBuf,
    /// `namespace/name` of the import, for logs.
    pub import: String,
}

/// The registered disks, shared by the server and the reconcilers.
#[derive(Clone, Debug, Default)]
pub struct DiskRegistry {
    inner: Arc<RwLock<HashMap<String, Served>>>,
    /// Body bytes of the disk responses sent (`vm_import_served_bytes_total`).
    served_bytes: prometheus_client::metrics::counter::Counter,
}

/// Errors of the disk server.
#[derive(Debug, thiserror::Error)]
pub enum DiskServerError {
    #[error("disk server: cannot listen on {addr}: {error}")]
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("disk server: {0}")]
    Serve(std::io::Error),
    #[error("no random source for disk tokens: {0}")]
    Random(String),
}

/// A new token: 256 bits from the OS's random source, hex.
pub fn new_token() -> Result<String, DiskServerError> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| DiskServerError::Random(e.to_string()))?;
    Ok(hex::encode(b))
}

/// The path a disk is served at.
pub fn disk_path(token: &str, file_name: &str) -> String {
    format!("/disks/{token}/{file_name}")
}

/// Splits a served path back into (token, file name).
pub fn parse_disk_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/disks/")?;
    let (token, file) = rest.split_once('/')?;
    (!token.is_empty() && !file.is_empty() && !file.contains('/')).then_some((token, file))
}

impl DiskRegistry {
    /// A registry that counts the bytes it serves on `served_bytes`.
    pub fn counting(served_bytes: prometheus_client::metrics::counter::Counter) -> Self {
        DiskRegistry {
            inner: Arc::default(),
            served_bytes,
        }
    }

    /// Serves `file` at `path` (from [`disk_path`]).
    pub fn register(&self, path: &str, served: Served) {
        if let Some((token, _)) = parse_disk_path(path) {
            self.write().insert(token.to_owned(), served);
        }
    }

    /// Stops serving `path`.
    pub fn unregister(&self, path: &str) {
        if let Some((token, _)) = parse_disk_path(path) {
            self.write().remove(token);
        }
    }

    /// Stops serving every disk of `import`.
    pub fn unregister_import(&self, import: &str) {
        self.write().retain(|_, s| s.import != import);
    }

    pub fn is_registered(&self, path: &str) -> bool {
        parse_disk_path(path).is_some_and(|(t, _)| self.read().contains_key(t))
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lookup(&self, token: &str, file_name: &str) -> Option<Served> {
        let map = self.read();
        let served = map.get(token)?;
        (served.file.file_name().and_then(|n| n.to_str()) == Some(file_name))
            .then(|| served.clone())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Served>> {
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Served>> {
        self.inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

async fn serve_disk(
    State(registry): State<DiskRegistry>,
    Path((token, file)): Path<(String, String)>,
    request: Request,
) -> Response {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return (StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD\n").into_response();
    }
    let Some(served) = registry.lookup(&token, &file) else {
        debug!(status = 404, "disk request for an unknown token");
        return not_found();
    };
    let is_get = request.method() == Method::GET;
    info!(import = %served.import, file = %served.file.display(), range = ?request.headers().get(http::header::RANGE), method = %request.method(), "serving a disk");
    match ServeFile::new(&served.file).oneshot(request).await {
        Ok(r) if r.status() == StatusCode::NOT_FOUND => not_found(),
        Ok(r) => {
            let len = r
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if is_get && r.status().is_success() {
                registry.served_bytes.inc_by(len.unwrap_or(0));
            }
            r.map(Body::new)
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// The router: one route, everything else 404.
pub fn router(registry: DiskRegistry) -> Router {
    Router::new()
        .route("/disks/{token}/{file}", any(serve_disk))
        .fallback(|| async { not_found() })
        .with_state(registry)
}

/// Binds `addr` (before the controller starts, so that a bad address fails at once).
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, DiskServerError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|error| DiskServerError::Bind { addr, error })
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: DiskRegistry,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), DiskServerError> {
    axum::serve(listener, router(registry))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(DiskServerError::Serve)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tokens_are_long_random_and_distinct() {
        let a = new_token().unwrap();
        let b = new_token().unwrap();
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }

    #[test]
    fn paths_round_trip_and_reject_nesting() {
        let p = disk_path("abc", "disk-0.qcow2");
        assert_eq!(parse_disk_path(&p), Some(("abc", "disk-0.qcow2")));
        assert_eq!(parse_disk_path("/disks/abc/../x"), None);
        assert_eq!(parse_disk_path("/disks//x"), None);
        assert_eq!(parse_disk_path("/other/abc/x"), None);
    }

    #[tokio::test]
    async fn only_registered_pairs_are_served_with_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("disk-0.qcow2");
        std::fs::write(&file, b"0123456789").unwrap();
        let registry = DiskRegistry::default();
        let token = new_token().unwrap();
        let path = disk_path(&token, "disk-0.qcow2");
        registry.register(
            &path,
            Served {
                file: file.clone(),
                import: "apps/web".into(),
            },
        );
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, registry.clone(), std::future::pending()));
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::new();
        let base = format!("http://{addr}");

        let r = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap().as_ref(), b"0123456789");

        let r = http
            .get(format!("{base}{path}"))
            .header("Range", "bytes=4-")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 206);
        assert_eq!(r.bytes().await.unwrap().as_ref(), b"456789");

        let head = http.head(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(head.status(), 200);
        assert_eq!(head.headers()["content-length"], "10");

        let guessed = new_token().unwrap();
        for p in [
            format!("/disks/{guessed}/disk-0.qcow2"),
            format!("/disks/{token}/disk-1.qcow2"),
            format!("/disks/{token}/"),
            "/disks/".to_owned(),
            "/".to_owned(),
            format!("/disks/{token}/..%2Fdisk-0.qcow2"),
        ] {
            let r = http.get(format!("{base}{p}")).send().await.unwrap();
            assert_eq!(r.status(), 404, "{p}");
            let body = r.text().await.unwrap();
            assert!(!body.contains("disk-0"), "{p}: {body}");
        }
        let r = http.delete(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 405);

        registry.unregister(&path);
        let r = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 404);
        server.abort();
    }
}
