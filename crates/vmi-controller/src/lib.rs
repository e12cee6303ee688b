//! `vm-import controller`: the Kubernetes controller, a drop-in for Harvester's
//! vm-import-controller (same objects, same status values), built on the import engine.
//!
//! - [`sources`]: verifies `OpenstackSource` (and reports `VmwareSource` as not supported),
//!   again periodically and when the Secret changes.
//! - [`imports`]: drives each `VirtualMachineImport` through the engine's steps and the cluster
//!   side, records everything in status, cleans up with a finalizer.
//! - [`disk_server`]: serves finished disks at per-disk random URLs.
//! - [`leader`]: Lease-based leader election; [`metrics`]: Prometheus and health endpoints.
//!
//! Everything is configured by flags ([`options::ControllerArgs`]).

// `state` (the engine's) and `stage` (the import's) are both domain words here.
#![allow(clippy::similar_names)]

pub mod disk_server;
pub mod harvester;
pub mod imports;
pub mod kubeapi;
pub mod leader;
pub mod metrics;
pub mod options;
pub mod sources;
pub mod status;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DynamicObject, ListParams};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use tracing::{error, info, warn};
use vmi_api::{OpenstackSource, OvaSource, VirtualMachineImport, VmwareSource};

pub use options::ControllerArgs;

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub args: ControllerArgs,
    pub recorder: Recorder,
    pub metrics: Arc<metrics::Metrics>,
    pub disks: disk_server::DiskRegistry,
    /// The disk server's advertised base URL (no trailing slash).
    pub base_url: String,
    /// Engines of running imports, by import uid.
    pub runtimes: Mutex<HashMap<String, Arc<imports::Runtime>>>,
    /// Last known stage of each import, by uid (for the metrics).
    pub stages: Mutex<HashMap<String, status::Stage>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

/// Why the controller stopped.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("bad flags: {0}")]
    Flags(String),
    #[error("cannot reach the Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("kubeconfig {path}: {error}")]
    Kubeconfig { path: String, error: String },
    #[error("{0}")]
    DiskServer(#[from] disk_server::DiskServerError),
    #[error("metrics server: {0}")]
    Metrics(std::io::Error),
    #[error("scratch folder {path}: {error}")]
    Scratch { path: String, error: std::io::Error },
    #[error("{0}")]
    LeaderLost(leader::Lost),
}

/// A client from `--kubeconfig`, or the in-cluster service account.
pub async fn client(args: &ControllerArgs) -> Result<Client, ControllerError> {
    let config = match &args.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| {
                ControllerError::Kubeconfig {
                    path: path.display().to_string(),
                    error: e.to_string(),
                }
            })?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| ControllerError::Kubeconfig {
                    path: path.display().to_string(),
                    error: e.to_string(),
                })?
        }
        None => kube::Config::incluster().map_err(|e| ControllerError::Kubeconfig {
            path: "(in-cluster)".into(),
            error: format!("{e}; outside a cluster pass --kubeconfig"),
        })?,
    };
    Ok(Client::try_from(config)?)
}

#[allow(clippy::needless_pass_by_value)] // the shape kube-runtime calls
fn error_policy<K>(
    _obj: Arc<K>,
    reason: &'static str,
    message: &dyn std::fmt::Display,
    ctx: &Context,
) -> Action {
    warn!(%reason, error = %message, "reconcile failed; retrying");
    ctx.metrics.error(reason);
    Action::requeue(Duration::from_secs(5))
}

/// Removes scratch folders of imports that no longer exist (a controller killed between an
/// import's deletion and its cleanup).
async fn sweep_scratch(ctx: &Context) -> Result<(), kube::Error> {
    let api: Api<VirtualMachineImport> = match &ctx.args.namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    let uids: std::collections::HashSet<String> = api
        .list(&ListParams::default())
        .await?
        .into_iter()
        .filter_map(|i| i.uid())
        .collect();
    let dir = ctx.args.scratch_dir.join("imports");
    if let Ok(rd) = std::fs::read_dir(&dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !uids.contains(&name) {
                info!(dir = %e.path().display(), "removing the scratch folder of a deleted import");
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    Ok(())
}

/// Runs the controller until SIGTERM / Ctrl-C, or until the leader lease is lost.
#[allow(clippy::too_many_lines)] // start-up in order: servers, election, controllers, shutdown
pub async fn run(args: ControllerArgs) -> Result<(), ControllerError> {
    args.validate().map_err(ControllerError::Flags)?;
    let base_url = options::url_base(&args.disk_server_url).map_err(ControllerError::Flags)?;
    let scratch = args.scratch_dir.join("imports");
    std::fs::create_dir_all(&scratch).map_err(|error| ControllerError::Scratch {
        path: scratch.display().to_string(),
        error,
    })?;
    let client = client(&args).await?;
    let metrics = Arc::new(metrics::Metrics::new());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    let disks = disk_server::DiskRegistry::counting(metrics.bytes_served.clone());
    start_servers(&args, &base_url, &metrics, &disks, &stopped).await?;

    let identity = args.identity.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname").map_or_else(
            |_| format!("vm-import-{}", std::process::id()),
            |h| h.trim().to_owned(),
        )
    });
    let mut elector = (!args.no_leader_election).then(|| {
        leader::Elector::new(
            client.clone(),
            leader::LeaseSettings {
                namespace: args.lease_namespace.clone(),
                name: args.lease_name.clone(),
                identity: identity.clone(),
                duration: args.lease_duration(),
                retry: args.lease_duration() / 3,
            },
        )
    });
    // A standby is ready: it is healthy and waits for the lease.
    metrics.set_ready(true);
    let signal = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
    };
    tokio::pin!(signal);
    if let Some(e) = elector.as_mut() {
        tokio::select! {
            () = e.acquire() => {}
            () = &mut signal => { let _ = stop_tx.send(true); return Ok(()); }
        }
    }
    metrics.leader.set(1);

    let ctx = Arc::new(Context {
        client: client.clone(),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "vm-import".into(),
                instance: Some(identity),
            },
        ),
        args: args.clone(),
        metrics: metrics.clone(),
        disks,
        base_url,
        runtimes: Mutex::default(),
        stages: Mutex::default(),
    });
    if let Err(e) = sweep_scratch(&ctx).await {
        warn!(error = %e, "cannot list imports to sweep the scratch folder");
    }
    let controllers = run_controllers(ctx.clone(), stopped());
    let outcome = if let Some(e) = elector.as_mut() {
        tokio::select! {
            () = controllers => Ok(()),
            lost = e.hold() => Err(ControllerError::LeaderLost(lost)),
            () = &mut signal => Ok(()),
        }
    } else {
        tokio::select! {
            () = controllers => Ok(()),
            () = &mut signal => Ok(()),
        }
    };
    metrics.leader.set(0);
    let _ = stop_tx.send(true);
    for rt in ctx
        .runtimes
        .lock()
        .map(|m| m.values().cloned().collect::<Vec<_>>())
        .unwrap_or_default()
    {
        rt.stop().await;
    }
    if let Some(e) = elector.as_mut()
        && outcome.is_ok()
    {
        e.release().await;
    }
    info!("controller stopped");
    outcome
}

/// Starts the metrics and disk servers (bound before anything else, so that a bad address
/// fails at once).
async fn start_servers<F, Fut>(
    args: &ControllerArgs,
    base_url: &str,
    metrics: &Arc<metrics::Metrics>,
    disks: &disk_server::DiskRegistry,
    stopped: &F,
) -> Result<(), ControllerError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let metrics_listener = tokio::net::TcpListener::bind(args.metrics_bind)
        .await
        .map_err(ControllerError::Metrics)?;
    let m = metrics.clone();
    let stop = stopped();
    tokio::spawn(async move {
        if let Err(e) = axum::serve(metrics_listener, metrics::router(m))
            .with_graceful_shutdown(stop)
            .await
        {
            error!(error = %e, "metrics server stopped");
        }
    });
    let listener = disk_server::bind(args.disk_server_bind).await?;
    info!(addr = %args.disk_server_bind, url = %base_url, "disk server listening");
    let stop = stopped();
    let registry = disks.clone();
    tokio::spawn(async move {
        if let Err(e) = disk_server::serve(listener, registry, stop).await {
            error!(error = %e, "disk server stopped");
        }
    });

    Ok(())
}

fn watch_config() -> watcher::Config {
    watcher::Config::default()
}

/// An Api over one namespace or all.
fn api<K>(client: &Client, ns: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as kube::Resource>::DynamicType: Default,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The OvaSource controller: verifies each source, again when its Secret changes.
fn ova_controller(
    ctx: Arc<Context>,
    stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> impl std::future::Future<Output = ()> {
    let client = ctx.client.clone();
    let ns = ctx.args.namespace.clone();
    let ova_api: Api<OvaSource> = api(&client, ns.as_deref());
    let ova = Controller::new(ova_api, watch_config());
    let ova_store = ova.store();
    let ova_secrets: Api<Secret> = api(&client, ns.as_deref());
    ova.watches(ova_secrets, watch_config(), move |secret: Secret| {
        let sns = secret.namespace().unwrap_or_default();
        let sname = secret.name_any();
        ova_store
            .state()
            .into_iter()
            .filter(|s| {
                s.spec.credentials.as_ref().is_some_and(|r| {
                    sources::refers_to(r, &s.namespace().unwrap_or_default(), &sns, &sname)
                })
            })
            .map(|s| ObjectRef::from_obj(&*s))
            .collect::<Vec<_>>()
    })
    .graceful_shutdown_on(stop)
    .run(
        sources::reconcile_ova,
        |o, e: &sources::SourceError, ctx| error_policy(o, e.reason(), e, &ctx),
        ctx,
    )
    .for_each(|_| async {})
}

/// The controllers: sources (with their Secrets) and imports (with their images and sources).
async fn run_controllers(
    ctx: Arc<Context>,
    stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let ns = ctx.args.namespace.clone();
    let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let stop_signal = {
        let tx = stop_tx.clone();
        async move {
            stop.await;
            let _ = tx.send(());
        }
    };
    let shutdown = |tx: &tokio::sync::broadcast::Sender<()>| {
        let mut rx = tx.subscribe();
        async move {
            let _ = rx.recv().await;
        }
    };

    let sources_api: Api<OpenstackSource> = api(&client, ns.as_deref());
    let sources = Controller::new(sources_api, watch_config());
    let source_store = sources.store();
    let secrets: Api<Secret> = api(&client, ns.as_deref());
    let sources = sources
        .watches(secrets, watch_config(), move |secret: Secret| {
            let sns = secret.namespace().unwrap_or_default();
            let sname = secret.name_any();
            source_store
                .state()
                .into_iter()
                .filter(|s| {
                    sources::refers_to(
                        &s.spec.credentials,
                        &s.namespace().unwrap_or_default(),
                        &sns,
                        &sname,
                    )
                })
                .map(|s| ObjectRef::from_obj(&*s))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown(&stop_tx))
        .run(
            sources::reconcile_openstack,
            |o, e: &sources::SourceError, ctx| error_policy(o, e.reason(), e, &ctx),
            ctx.clone(),
        )
        .for_each(|_| async {});

    let ova = ova_controller(ctx.clone(), shutdown(&stop_tx));

    let vmware: Api<VmwareSource> = api(&client, ns.as_deref());
    let vmware = Controller::new(vmware, watch_config())
        .graceful_shutdown_on(shutdown(&stop_tx))
        .run(
            sources::reconcile_vmware,
            |o, e: &sources::SourceError, ctx| error_policy(o, e.reason(), e, &ctx),
            ctx.clone(),
        )
        .for_each(|_| async {});

    let imports_api: Api<VirtualMachineImport> = api(&client, ns.as_deref());
    let imports = Controller::new(imports_api, watch_config());
    let import_store = imports.store();
    let images: Api<DynamicObject> = match ns.as_deref() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &kubeapi::image_resource()),
        None => Api::all_with(client.clone(), &kubeapi::image_resource()),
    };
    let sources_for_imports: Api<OpenstackSource> = api(&client, ns.as_deref());
    let ova_for_imports: Api<OvaSource> = api(&client, ns.as_deref());
    let ova_import_store = import_store.clone();
    let imports = imports
        .owns_with(images, kubeapi::image_resource(), watch_config())
        .watches(
            sources_for_imports,
            watch_config(),
            move |src: OpenstackSource| imports_of(&import_store, "OpenstackSource", &src),
        )
        .watches(ova_for_imports, watch_config(), move |src: OvaSource| {
            imports_of(&ova_import_store, "OvaSource", &src)
        })
        .with_config(ControllerConfig::default().concurrency(ctx.args.concurrency))
        .graceful_shutdown_on(shutdown(&stop_tx))
        .run(
            imports::reconcile,
            |o, e: &imports::ImportError, ctx| error_policy(o, e.reason(), e, &ctx),
            ctx.clone(),
        )
        .for_each(|_| async {});
    info!("controllers started");
    tokio::join!(sources, ova, vmware, imports, stop_signal);
}

/// The imports whose `spec.sourceCluster` names `src` (of `kind`).
fn imports_of<K: kube::Resource>(
    store: &kube::runtime::reflector::Store<VirtualMachineImport>,
    kind: &str,
    src: &K,
) -> Vec<ObjectRef<VirtualMachineImport>> {
    let sns = src.namespace().unwrap_or_default();
    let sname = src.name_any();
    store
        .state()
        .into_iter()
        .filter(|i| {
            let r = &i.spec.source_cluster;
            r.name.as_deref() == Some(sname.as_str())
                && vmi_core::input::SourceKind::from_reference(
                    r.kind.as_deref().unwrap_or_default(),
                )
                .is_some_and(|k| k.kind() == kind)
                && r.namespace
                    .clone()
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| i.namespace().unwrap_or_default())
                    == sns
        })
        .map(|i| ObjectRef::from_obj(&*i))
        .collect()
}
