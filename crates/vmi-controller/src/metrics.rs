//! Prometheus metrics, `/healthz` and `/readyz`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabel {
    pub stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

/// The controller's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Imports by stage (gauge, recomputed as imports move).
    pub imports: Family<StageLabel, Gauge>,
    /// Bytes received from sources.
    pub bytes_transferred: Counter,
    /// Bytes served to Harvester.
    pub bytes_served: Counter,
    /// Seconds spent in each engine phase, per import.
    pub phase_seconds: Family<PhaseLabel, Histogram>,
    /// Errors by reason (the error kind).
    pub errors: Family<ReasonLabel, Counter>,
    /// Reconciles by kind of object.
    pub reconciles: Family<KindLabel, Counter>,
    /// 1 while this replica holds the leader lease.
    pub leader: Gauge,
    ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("vm_import");
        let imports = Family::<StageLabel, Gauge>::default();
        let bytes_transferred = Counter::default();
        let bytes_served = Counter::default();
        let phase_seconds = Family::<PhaseLabel, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(1.0, 2.0, 14))) as fn() -> Histogram,
        );
        let errors = Family::<ReasonLabel, Counter>::default();
        let reconciles = Family::<KindLabel, Counter>::default();
        let leader = Gauge::default();
        registry.register("imports", "Imports by stage", imports.clone());
        registry.register(
            "source_bytes",
            "Disk bytes received from sources",
            bytes_transferred.clone(),
        );
        registry.register(
            "served_bytes",
            "Disk bytes served to the cluster",
            bytes_served.clone(),
        );
        registry.register(
            "phase_duration_seconds",
            "Time spent in each engine phase",
            phase_seconds.clone(),
        );
        registry.register("errors", "Errors by reason", errors.clone());
        registry.register("reconciles", "Reconciles by kind", reconciles.clone());
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        Metrics {
            registry,
            imports,
            bytes_transferred,
            bytes_served,
            phase_seconds,
            errors,
            reconciles,
            leader,
            ready: AtomicBool::new(false),
        }
    }

    pub fn error(&self, reason: &str) {
        self.errors
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn reconciled(&self, kind: &str) {
        self.reconciles
            .get_or_create(&KindLabel {
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// Ready: the controller runs (as leader or as a standby that watches the lease).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

async fn metrics(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
}

async fn readyz(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    if m.is_ready() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

pub fn router(m: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(m)
}

/// Serves metrics and health on `addr` until `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    m: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, router(m))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_exposed_with_the_prefix() {
        let m = Metrics::new();
        m.imports
            .get_or_create(&StageLabel {
                stage: "export".into(),
            })
            .set(2);
        m.error("SourceAuth");
        m.bytes_transferred.inc_by(42);
        let text = m.encode();
        assert!(
            text.contains("vm_import_imports{stage=\"export\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("vm_import_errors_total{reason=\"SourceAuth\"} 1"),
            "{text}"
        );
        assert!(text.contains("vm_import_source_bytes_total 42"), "{text}");
    }
}
