//! `vmi-fake-kube`: a small in-memory fake Kubernetes API server for tests.
//!
//! It speaks the JSON REST API of kube-apiserver closely enough for kube-rs
//! clients, `kube::runtime::watcher`, `Controller` and the finalizer helper:
//! CRUD with resourceVersion preconditions, the status subresource,
//! merge/JSON/apply patches, finalizers and graceful deletion, owner-reference
//! garbage collection, CRD registration, discovery, and resumable watches.
//!
//! ```no_run
//! # async fn demo() {
//! let fake = vmi_fake_kube::FakeKube::start().await;
//! let client = fake.client();
//! // ... use `client`, or point a binary at `fake.kubeconfig_path()`.
//! fake.shutdown().await;
//! # }
//! ```

pub mod error;
pub mod patch;
pub mod resources;
pub mod schema;
pub mod selector;
pub mod server;
pub mod store;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use error::ApiError;
pub use resources::ResourceType;
pub use server::{Fault, RequestRecord, ServerConfig};
pub use store::{EventType, StoreConfig};

use server::{Shared, lock};
use store::State;

/// Errors of starting the server.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot bind 127.0.0.1:{port}: {source}")]
    Bind { port: u16, source: std::io::Error },
    #[error("cannot write the kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot serialise the kubeconfig: {0}")]
    Yaml(#[from] serde_yaml::Error),
}

/// A watch event the server emitted (its history, oldest first).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WatchEventRecord {
    pub resource_version: u64,
    pub event_type: EventType,
    pub group: String,
    /// Plural resource name.
    pub resource: String,
    /// Empty for cluster-scoped objects.
    pub namespace: String,
    pub name: String,
    pub object: Value,
}

/// Configures a [`FakeKube`] before starting it.
#[derive(Debug, Clone)]
pub struct FakeKubeBuilder {
    port: u16,
    kubeconfig_path: Option<PathBuf>,
    token: String,
    store: StoreConfig,
    server: ServerConfig,
    extra_types: Vec<ResourceType>,
}

impl Default for FakeKubeBuilder {
    fn default() -> Self {
        Self {
            port: 0,
            kubeconfig_path: None,
            token: "fake-kube-token".to_string(),
            store: StoreConfig::default(),
            server: ServerConfig::default(),
            extra_types: Vec::new(),
        }
    }
}

impl FakeKubeBuilder {
    /// Port on 127.0.0.1 (default 0: any free port).
    #[must_use]
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Where to write the kubeconfig (default: a temporary directory owned by the server).
    #[must_use]
    pub fn kubeconfig_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.kubeconfig_path = Some(path.into());
        self
    }

    /// Bearer token written in the kubeconfig.
    #[must_use]
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = token.into();
        self
    }

    /// Refuse requests without `Authorization: Bearer <token>` (default: any or no token is accepted).
    #[must_use]
    pub fn require_token(mut self, yes: bool) -> Self {
        self.server.required_token = yes.then(|| self.token.clone());
        self
    }

    /// Number of watch events kept for resuming watches (default 100 000).
    #[must_use]
    pub fn history_limit(mut self, n: usize) -> Self {
        self.store.history_limit = n.max(1);
        self
    }

    /// Interval of BOOKMARK events (default 10 s).
    #[must_use]
    pub fn bookmark_interval(mut self, d: Duration) -> Self {
        self.server.bookmark_interval = d;
        self
    }

    /// Length of watches without `timeoutSeconds` (default 30 min).
    #[must_use]
    pub fn default_watch_timeout(mut self, d: Duration) -> Self {
        self.server.default_watch_timeout = d;
        self
    }

    /// Whether objects whose owners are all absent are garbage-collected (default true).
    #[must_use]
    pub fn orphan_gc(mut self, yes: bool) -> Self {
        self.store.orphan_gc = yes;
        self
    }

    /// Refuse namespaced objects in namespaces that do not exist (default false: any namespace is accepted).
    #[must_use]
    pub fn strict_namespaces(mut self, yes: bool) -> Self {
        self.store.strict_namespaces = yes;
        self
    }

    /// Print one line per request on stderr.
    #[must_use]
    pub fn log_requests(mut self, yes: bool) -> Self {
        self.server.log_requests = yes;
        self
    }

    /// Serve an extra resource type without a CRD.
    #[must_use]
    pub fn with_type(mut self, t: ResourceType) -> Self {
        self.extra_types.push(t);
        self
    }

    /// Binds, writes the kubeconfig and starts serving.
    pub async fn start(self) -> Result<FakeKube, StartError> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .map_err(|source| StartError::Bind {
                port: self.port,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            port: self.port,
            source,
        })?;
        let url = format!("http://{addr}");
        let (tmp, kubeconfig) = if let Some(p) = self.kubeconfig_path {
            (None, p)
        } else {
            let dir = tempfile::tempdir().map_err(|source| StartError::Kubeconfig {
                path: std::env::temp_dir(),
                source,
            })?;
            let p = dir.path().join("kubeconfig");
            (Some(dir), p)
        };
        std::fs::write(&kubeconfig, kubeconfig_yaml(&url, &self.token)?).map_err(|source| {
            StartError::Kubeconfig {
                path: kubeconfig.clone(),
                source,
            }
        })?;
        let state = State::new(&self.extra_types, self.store);
        let (rv_tx, _) = tokio::sync::watch::channel(state.resource_version());
        let cancel = CancellationToken::new();
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            rv_tx,
            requests: Mutex::new(Vec::new()),
            faults: Mutex::new(Vec::new()),
            cfg: self.server,
            cancel: cancel.clone(),
            addr,
        });
        let app = axum::Router::new()
            .fallback(server::handle)
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            let res = axum::serve(listener, app)
                .with_graceful_shutdown(cancel.cancelled_owned())
                .await;
            if let Err(e) = res {
                tracing::warn!("fake-kube server stopped: {e}");
            }
        });
        Ok(FakeKube {
            shared,
            url,
            kubeconfig,
            token: self.token,
            _tmp: tmp,
            server: Some(server),
        })
    }
}

/// The kubeconfig YAML for a server URL and token.
pub fn kubeconfig_yaml(url: &str, token: &str) -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(&json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake-kube", "cluster": {"server": url}}],
        "users": [{"name": "fake-kube", "user": {"token": token}}],
        "contexts": [{"name": "fake-kube", "context": {"cluster": "fake-kube", "user": "fake-kube", "namespace": "default"}}],
        "current-context": "fake-kube",
        "preferences": {},
    }))
}

/// A running fake API server. Stops when dropped or on [`FakeKube::shutdown`].
#[derive(Debug)]
pub struct FakeKube {
    shared: Arc<Shared>,
    url: String,
    kubeconfig: PathBuf,
    token: String,
    _tmp: Option<tempfile::TempDir>,
    server: Option<JoinHandle<()>>,
}

impl FakeKube {
    /// Starts a server on 127.0.0.1 with a free port and default settings.
    ///
    /// # Panics
    /// If the loopback port cannot be bound or the kubeconfig cannot be
    /// written; use [`FakeKube::builder`] to handle these errors.
    // Test-support convenience that documents its panic; the builder returns the error.
    #[allow(clippy::panic)]
    pub async fn start() -> Self {
        match Self::builder().start().await {
            Ok(f) => f,
            Err(e) => panic!("fake-kube failed to start: {e}"),
        }
    }

    pub fn builder() -> FakeKubeBuilder {
        FakeKubeBuilder::default()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// The kubeconfig file the server wrote (plain HTTP, bearer token, current-context set).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The bearer token in the kubeconfig.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// A kube client for this server (default namespace `default`).
    /// Must be called inside a Tokio runtime.
    ///
    /// # Panics
    /// Never in practice: the URL is always valid.
    // Documented panic on errors that cannot happen for the URL the server built.
    #[allow(clippy::panic)]
    pub fn client(&self) -> kube::Client {
        let uri = match self.url.parse::<http::Uri>() {
            Ok(u) => u,
            Err(e) => panic!("invalid fake-kube url {}: {e}", self.url),
        };
        let mut config = kube::Config::new(uri);
        config.default_namespace = "default".to_string();
        config.auth_info.token = Some(secrecy::SecretString::from(self.token.clone()));
        match kube::Client::try_from(config) {
            Ok(c) => c,
            Err(e) => panic!("cannot build a kube client for {}: {e}", self.url),
        }
    }

    /// Stops serving: open watches end, then the listener closes.
    pub async fn shutdown(mut self) {
        self.shared.cancel.cancel();
        if let Some(h) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), h).await;
        }
    }

    /// All objects of a resource, rendered in `version`, sorted by namespace and name.
    pub fn objects(&self, group: &str, version: &str, plural: &str) -> Vec<Value> {
        let st = lock(&self.shared.state);
        let api_version = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        st.objects_of(&(group.to_string(), plural.to_string()))
            .iter()
            .map(|o| {
                let mut o = (**o).clone();
                o["apiVersion"] = json!(api_version);
                o
            })
            .collect()
    }

    /// One object (`namespace` None for cluster-scoped ones).
    pub fn object(
        &self,
        group: &str,
        version: &str,
        plural: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        self.objects(group, version, plural).into_iter().find(|o| {
            o.pointer("/metadata/name").and_then(Value::as_str) == Some(name)
                && o.pointer("/metadata/namespace").and_then(Value::as_str) == namespace
        })
    }

    /// The watch events the server emitted, oldest first (as far as the history goes).
    pub fn events_seen(&self) -> Vec<WatchEventRecord> {
        let st = lock(&self.shared.state);
        st.history()
            .map(|e| WatchEventRecord {
                resource_version: e.rv,
                event_type: e.kind,
                group: e.key.0.clone(),
                resource: e.key.1.clone(),
                namespace: e.namespace.clone(),
                name: e.name.clone(),
                object: (*e.object).clone(),
            })
            .collect()
    }

    /// The requests answered so far (method, path, query, status).
    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.shared.requests).clone()
    }

    pub fn clear_requests(&self) {
        lock(&self.shared.requests).clear();
    }

    /// The current (latest) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        lock(&self.shared.state).resource_version()
    }

    /// Drops the watch history: watches from any older resourceVersion get 410 Gone.
    pub fn compact_history(&self) {
        lock(&self.shared.state).compact();
    }

    /// Fails the next `fault.times` matching requests with `fault.code`.
    pub fn inject_fault(&self, fault: Fault) {
        lock(&self.shared.faults).push(fault);
    }

    /// Serves an extra resource type without a CRD.
    pub fn register_type(&self, t: ResourceType) {
        lock(&self.shared.state).registry.insert(t);
    }

    /// Polls `check` until it holds or `timeout` passes; returns whether it held.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&Self) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if check(self) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.shared.cancel.cancel();
    }
}
