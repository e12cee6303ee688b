//! Watches, `kube::runtime::watcher`, the finalizer helper and `Controller`
//! against the fake server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Widget, api_err, eventually, install_widget_crd, widget};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{
    Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event as KEvent, EventType as KEventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::watcher::Event;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Resource, ResourceExt};
use serde_json::json;
use vmi_fake_kube::FakeKube;

fn cm(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    }
}

async fn next_event<S>(stream: &mut S) -> WatchEvent<ConfigMap>
where
    S: futures::Stream<Item = Result<WatchEvent<ConfigMap>, kube::Error>> + Unpin,
{
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("event in time")
            .expect("stream open")
            .expect("no error");
        if !matches!(ev, WatchEvent::Bookmark(_)) {
            return ev;
        }
    }
}

fn describe(ev: &WatchEvent<ConfigMap>) -> (String, String) {
    match ev {
        WatchEvent::Added(o) => ("ADDED".into(), o.name_any()),
        WatchEvent::Modified(o) => ("MODIFIED".into(), o.name_any()),
        WatchEvent::Deleted(o) => ("DELETED".into(), o.name_any()),
        WatchEvent::Bookmark(b) => ("BOOKMARK".into(), b.metadata.resource_version.clone()),
        WatchEvent::Error(e) => ("ERROR".into(), e.code.to_string()),
    }
}

#[tokio::test]
async fn api_watch_sees_changes_and_resumes() {
    let fake = FakeKube::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(fake.client(), "default");
    let list = cms.list(&ListParams::default()).await.unwrap();
    let rv0 = list.metadata.resource_version.unwrap();
    let mut stream = cms
        .watch(&WatchParams::default(), &rv0)
        .await
        .unwrap()
        .boxed();

    cms.create(&PostParams::default(), &cm("w", &[]))
        .await
        .unwrap();
    cms.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"a": "b"}})),
    )
    .await
    .unwrap();
    cms.delete("w", &DeleteParams::default()).await.unwrap();
    let mut seen = Vec::new();
    let mut rvs = Vec::new();
    for _ in 0..3 {
        let ev = next_event(&mut stream).await;
        if let WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) = &ev {
            rvs.push(o.resource_version().unwrap());
        }
        seen.push(describe(&ev));
    }
    assert_eq!(
        seen,
        [
            ("ADDED".into(), "w".into()),
            ("MODIFIED".into(), "w".into()),
            ("DELETED".into(), "w".into())
        ]
    );
    let nums: Vec<u64> = rvs.iter().map(|r| r.parse().unwrap()).collect();
    assert!(nums.windows(2).all(|w| w[0] < w[1]), "{nums:?}");

    // A new client resumes after the ADDED event: the rest is replayed.
    let other: Api<ConfigMap> = Api::namespaced(fake.client(), "default");
    let mut resumed = other
        .watch(&WatchParams::default(), &rvs[0])
        .await
        .unwrap()
        .boxed();
    assert_eq!(
        describe(&next_event(&mut resumed).await),
        ("MODIFIED".into(), "w".into())
    );
    assert_eq!(
        describe(&next_event(&mut resumed).await),
        ("DELETED".into(), "w".into())
    );

    // Other namespaces are not seen by a namespaced watch, but by an all-namespaces one.
    let all: Api<ConfigMap> = Api::all(fake.client());
    let mut all_stream = all
        .watch(&WatchParams::default(), &rvs[2])
        .await
        .unwrap()
        .boxed();
    Api::<ConfigMap>::namespaced(fake.client(), "elsewhere")
        .create(&PostParams::default(), &cm("far", &[]))
        .await
        .unwrap();
    assert_eq!(
        describe(&next_event(&mut all_stream).await),
        ("ADDED".into(), "far".into())
    );

    // Once the history is compacted, an old resourceVersion is 410 Gone.
    fake.compact_history();
    let mut gone = cms
        .watch(&WatchParams::default(), &rv0)
        .await
        .unwrap()
        .boxed();
    match next_event(&mut gone).await {
        WatchEvent::Error(e) => {
            assert_eq!(e.code, 410);
            assert_eq!(e.reason, "Expired");
        }
        other => panic!("expected 410, got {:?}", describe(&other)),
    }
}

#[tokio::test]
async fn watch_from_zero_bookmarks_selectors_and_timeout() {
    let fake = FakeKube::builder()
        .bookmark_interval(Duration::from_millis(100))
        .start()
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(fake.client(), "default");
    cms.create(&PostParams::default(), &cm("old", &[("app", "x")]))
        .await
        .unwrap();

    // resourceVersion=0: the current state first, then bookmarks.
    let wp = WatchParams::default().timeout(2);
    let mut stream = cms.watch(&wp, "0").await.unwrap().boxed();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(describe(&first), ("ADDED".into(), "old".into()));
    let second = tokio::time::timeout(Duration::from_secs(2), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        matches!(second, WatchEvent::Bookmark(_)),
        "{:?}",
        describe(&second)
    );
    // The watch ends after timeoutSeconds.
    let started = tokio::time::Instant::now();
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap()
    {
        ev.unwrap();
    }
    assert!(started.elapsed() < Duration::from_secs(3));

    // Label selector transitions: leaving the selection is DELETED, entering is ADDED.
    let rv = cms.get("old").await.unwrap().resource_version().unwrap();
    let wp = WatchParams::default().labels("app=x").disable_bookmarks();
    let mut sel = cms.watch(&wp, &rv).await.unwrap().boxed();
    cms.patch(
        "old",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "y"}}})),
    )
    .await
    .unwrap();
    cms.create(&PostParams::default(), &cm("ignored", &[("app", "z")]))
        .await
        .unwrap();
    cms.patch(
        "old",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "x"}}})),
    )
    .await
    .unwrap();
    cms.patch(
        "old",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "v"}})),
    )
    .await
    .unwrap();
    cms.delete("old", &DeleteParams::default()).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(describe(&next_event(&mut sel).await).0);
    }
    assert_eq!(got, ["DELETED", "ADDED", "MODIFIED", "DELETED"]);

    // Field selector on the name.
    let wp = WatchParams::default().fields("metadata.name=only");
    let now = fake.resource_version().to_string();
    let mut by_name = cms.watch(&wp, &now).await.unwrap().boxed();
    cms.create(&PostParams::default(), &cm("not-this", &[]))
        .await
        .unwrap();
    cms.create(&PostParams::default(), &cm("only", &[]))
        .await
        .unwrap();
    assert_eq!(
        describe(&next_event(&mut by_name).await),
        ("ADDED".into(), "only".into())
    );
}

/// The default watcher (ListWatch) across many watch timeouts: every change
/// is seen once, in order, and the watcher never needs to re-list.
#[tokio::test]
async fn runtime_watcher_survives_watch_timeouts() {
    for streaming in [false, true] {
        let fake = FakeKube::builder()
            .bookmark_interval(Duration::from_millis(200))
            .start()
            .await
            .unwrap();
        let cms: Api<ConfigMap> = Api::namespaced(fake.client(), "default");
        for n in ["a", "b", "c"] {
            cms.create(&PostParams::default(), &cm(n, &[("app", "w")]))
                .await
                .unwrap();
        }
        cms.create(&PostParams::default(), &cm("unselected", &[]))
            .await
            .unwrap();
        let mut config = watcher::Config::default().labels("app=w").timeout(1);
        if streaming {
            config = config.streaming_lists();
        }
        let mut stream = watcher(
            Api::<ConfigMap>::namespaced(fake.client(), "default"),
            config,
        )
        .boxed();
        let mut init = Vec::new();
        loop {
            match tokio::time::timeout(Duration::from_secs(5), stream.try_next())
                .await
                .unwrap()
                .unwrap()
                .unwrap()
            {
                Event::Init => {}
                Event::InitApply(o) => init.push(o.name_any()),
                Event::InitDone => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(init, ["a", "b", "c"]);

        let writer = {
            let cms = cms.clone();
            tokio::spawn(async move {
                for i in 0..8 {
                    tokio::time::sleep(Duration::from_millis(400)).await;
                    cms.patch(
                        "a",
                        &PatchParams::default(),
                        &Patch::Merge(json!({"data": {"i": i.to_string()}})),
                    )
                    .await
                    .unwrap();
                }
                cms.delete("b", &DeleteParams::default()).await.unwrap();
                cms.create(&PostParams::default(), &cm("d", &[("app", "w")]))
                    .await
                    .unwrap();
            })
        };
        let mut applied = Vec::new();
        let mut deleted = Vec::new();
        while applied.len() < 9 || deleted.is_empty() {
            match tokio::time::timeout(Duration::from_secs(10), stream.try_next())
                .await
                .unwrap()
                .unwrap()
                .unwrap()
            {
                Event::Apply(o) => {
                    applied.push((o.name_any(), o.data.and_then(|d| d.get("i").cloned())));
                }
                Event::Delete(o) => deleted.push(o.name_any()),
                Event::Init | Event::InitApply(_) | Event::InitDone => {
                    panic!("the watcher had to re-list")
                }
            }
        }
        writer.await.unwrap();
        let expected: Vec<(String, Option<String>)> = (0..8)
            .map(|i| ("a".to_string(), Some(i.to_string())))
            .chain([("d".to_string(), None)])
            .collect();
        assert_eq!(applied, expected, "streaming={streaming}");
        assert_eq!(deleted, ["b"]);
        let watches = fake
            .requests()
            .iter()
            .filter(|r| r.has_query("watch", "true") || r.has_query("watch", "1"))
            .count();
        assert!(
            watches >= 3,
            "watches were re-opened after their timeout ({watches})"
        );
        // The controller lists all namespaces; the test's own lists are namespaced.
        let lists = fake
            .requests()
            .iter()
            .filter(|r| r.method == "GET" && !r.query.contains("watch"))
            .count();
        assert!(lists <= 1, "no re-list ({lists})");
    }
}

#[tokio::test]
async fn reflector_and_metadata_watcher() {
    let fake = FakeKube::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(fake.client(), "default");
    let (reader, writer) = reflector::store::<ConfigMap>();
    let rf = reflector(writer, watcher(cms.clone(), watcher::Config::default()))
        .applied_objects()
        .for_each(|_| async {});
    let task = tokio::spawn(rf);
    let meta_api: Api<PartialObjectMeta<ConfigMap>> = Api::namespaced(fake.client(), "default");
    let mut meta = watcher(meta_api, watcher::Config::default())
        .applied_objects()
        .boxed();
    reader.wait_until_ready().await.unwrap();
    cms.create(&PostParams::default(), &cm("r1", &[("k", "v")]))
        .await
        .unwrap();
    let m = tokio::time::timeout(Duration::from_secs(5), meta.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(m.name_any(), "r1");
    assert_eq!(m.labels()["k"], "v");
    assert!(
        eventually(Duration::from_secs(5), || {
            let reader = reader.clone();
            async move { reader.state().iter().any(|c| c.name_any() == "r1") }
        })
        .await
    );
    task.abort();
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct TestError(String);

#[tokio::test]
async fn finalizer_helper_end_to_end() {
    const NAME: &str = "test.vmi.io/cleanup";

    let fake = FakeKube::start().await;
    let client = fake.client();
    install_widget_crd(&client).await;
    let widgets: Api<Widget> = Api::namespaced(client.clone(), "default");
    widgets
        .create(&PostParams::default(), &widget("fin", 1))
        .await
        .unwrap();
    let cleaned = Arc::new(AtomicUsize::new(0));
    let applied = Arc::new(AtomicUsize::new(0));

    let run = |obj: Widget| {
        let widgets = widgets.clone();
        let cleaned = cleaned.clone();
        let applied = applied.clone();
        async move {
            finalizer(&widgets, NAME, Arc::new(obj), |ev| async move {
                match ev {
                    FinalizerEvent::Apply(_) => applied.fetch_add(1, Ordering::SeqCst),
                    FinalizerEvent::Cleanup(_) => cleaned.fetch_add(1, Ordering::SeqCst),
                };
                Ok::<_, TestError>(Action::await_change())
            })
            .await
        }
    };
    // 1st pass: the helper adds the finalizer (test null + add).
    run(widgets.get("fin").await.unwrap()).await.unwrap();
    assert_eq!(widgets.get("fin").await.unwrap().finalizers(), [NAME]);
    // 2nd pass: Apply.
    run(widgets.get("fin").await.unwrap()).await.unwrap();
    assert_eq!(applied.load(Ordering::SeqCst), 1);
    // A stale object: the helper's `test` op fails with 422 (someone else changed finalizers).
    let stale = widgets.get("fin").await.unwrap();
    widgets
        .patch(
            "fin",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["other/x"]}})),
        )
        .await
        .unwrap();
    let mut stale_without = stale.clone();
    stale_without.metadata.finalizers = None;
    let err = run(stale_without).await.unwrap_err();
    assert!(format!("{err:?}").contains("422"), "{err:?}");
    widgets
        .patch(
            "fin",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": [NAME]}})),
        )
        .await
        .unwrap();

    // Delete: the object stays, the helper runs Cleanup and removes the finalizer.
    widgets
        .delete("fin", &DeleteParams::default())
        .await
        .unwrap();
    let deleting = widgets.get("fin").await.unwrap();
    assert!(deleting.metadata.deletion_timestamp.is_some());
    run(deleting).await.unwrap();
    assert_eq!(cleaned.load(Ordering::SeqCst), 1);
    assert!(widgets.get_opt("fin").await.unwrap().is_none());
    let patches: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| {
            r.method == "PATCH" && r.content_type.as_deref() == Some("application/json-patch+json")
        })
        .map(|r| r.status)
        .collect();
    assert_eq!(patches, [200, 422, 200]);
}

struct Ctx {
    client: kube::Client,
    reconciles: AtomicUsize,
    recorder: Recorder,
}

async fn reconcile(
    w: Arc<Widget>,
    ctx: Arc<Ctx>,
) -> Result<Action, kube::runtime::finalizer::Error<kube::Error>> {
    ctx.reconciles.fetch_add(1, Ordering::SeqCst);
    let ns = w.namespace().unwrap_or_default();
    let widgets: Api<Widget> = Api::namespaced(ctx.client.clone(), &ns);
    let ctx2 = ctx.clone();
    let widgets2 = widgets.clone();
    finalizer(&widgets, "test.vmi.io/controller", w, |ev| async move {
        match ev {
            FinalizerEvent::Apply(w) => {
                let cms: Api<ConfigMap> = Api::namespaced(ctx2.client.clone(), &ns);
                let owned = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(format!("{}-data", w.name_any())),
                        owner_references: Some(vec![w.controller_owner_ref(&()).unwrap_or_default()]),
                        ..ObjectMeta::default()
                    },
                    data: Some(BTreeMap::from([("size".to_string(), w.spec.size.to_string())])),
                    ..ConfigMap::default()
                };
                cms.patch(&owned.name_any(), &PatchParams::apply("widget-controller").force(), &Patch::Apply(&owned))
                    .await?;
                let status = json!({"status": {"phase": "Ready", "observedGeneration": w.metadata.generation}});
                widgets2
                    .patch_status(&w.name_any(), &PatchParams::default(), &Patch::Merge(status))
                    .await?;
                ctx2.recorder
                    .publish(
                        &KEvent {
                            type_: KEventType::Normal,
                            reason: "Reconciled".into(),
                            note: Some(format!("size {}", w.spec.size)),
                            action: "Reconcile".into(),
                            secondary: None,
                        },
                        &w.object_ref(&()),
                    )
                    .await?;
                Ok(Action::await_change())
            }
            FinalizerEvent::Cleanup(_) => Ok(Action::await_change()),
        }
    })
    .await
}

fn error_policy(
    _: Arc<Widget>,
    _: &kube::runtime::finalizer::Error<kube::Error>,
    _: Arc<Ctx>,
) -> Action {
    Action::requeue(Duration::from_millis(100))
}

#[tokio::test]
async fn controller_reconciles_widgets() {
    let fake = FakeKube::start().await;
    let client = fake.client();
    install_widget_crd(&client).await;
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        reconciles: AtomicUsize::new(0),
        recorder: Recorder::new(client.clone(), Reporter::from("widget-controller")),
    });
    let widgets: Api<Widget> = Api::all(client.clone());
    let controller = Controller::new(widgets, watcher::Config::default())
        .owns(
            Api::<ConfigMap>::all(client.clone()),
            watcher::Config::default(),
        )
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|_| async {});
    let task = tokio::spawn(controller);

    // Another client (as a user or test would) creates and observes.
    let observer = fake.client();
    let widgets: Api<Widget> = Api::namespaced(observer.clone(), "team-a");
    widgets
        .create(&PostParams::default(), &widget("w1", 3))
        .await
        .unwrap();
    let ready = |generation: i64| {
        let widgets = widgets.clone();
        async move {
            widgets
                .get("w1")
                .await
                .ok()
                .and_then(|w| w.status)
                .is_some_and(|s| s.phase == "Ready" && s.observed_generation == Some(generation))
        }
    };
    assert!(
        eventually(Duration::from_secs(10), || ready(1)).await,
        "status set by the controller"
    );
    let cms: Api<ConfigMap> = Api::namespaced(observer.clone(), "team-a");
    assert_eq!(cms.get("w1-data").await.unwrap().data.unwrap()["size"], "3");

    widgets
        .patch(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 7}})),
        )
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || ready(2)).await,
        "re-reconciled on a spec change"
    );
    assert!(
        eventually(Duration::from_secs(5), || {
            let cms = cms.clone();
            async move {
                cms.get("w1-data")
                    .await
                    .is_ok_and(|c| c.data.unwrap()["size"] == "7")
            }
        })
        .await
    );

    // Settles: status writes do not make it spin.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let settled = ctx.reconciles.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        ctx.reconciles.load(Ordering::SeqCst),
        settled,
        "no hot loop"
    );

    // The event recorder wrote events.k8s.io events.
    let events = fake.objects("events.k8s.io", "v1", "events");
    assert!(
        events
            .iter()
            .any(|e| e["reason"] == "Reconciled" && e["regarding"]["name"] == "w1"),
        "{events:?}"
    );

    // Deleting: the controller's finalizer runs, then the widget and its ConfigMap go.
    widgets
        .delete("w1", &DeleteParams::default())
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || {
            let widgets = widgets.clone();
            async move { widgets.get_opt("w1").await.is_ok_and(|w| w.is_none()) }
        })
        .await
    );
    assert!(cms.get_opt("w1-data").await.unwrap().is_none());
    assert_eq!(api_err(widgets.get("w1").await).0, 404);
    task.abort();
}

#[tokio::test]
async fn secrets_are_watchable_by_a_restarted_client() {
    let fake = FakeKube::start().await;
    let secrets: Api<Secret> = Api::namespaced(fake.client(), "default");
    let mut first = watcher(secrets.clone(), watcher::Config::default())
        .applied_objects()
        .boxed();
    let s = Secret {
        metadata: ObjectMeta {
            name: Some("s1".into()),
            ..ObjectMeta::default()
        },
        ..Secret::default()
    };
    secrets.create(&PostParams::default(), &s).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), first.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let last_rv = got.resource_version().unwrap();
    drop(first);
    // While no client watches, things change.
    let mut s2 = s.clone();
    s2.metadata.name = Some("s2".into());
    secrets.create(&PostParams::default(), &s2).await.unwrap();
    secrets
        .delete("s1", &DeleteParams::default())
        .await
        .unwrap();
    // A restarted client resuming from its last resourceVersion gets what it missed.
    let restarted: Api<Secret> = Api::namespaced(fake.client(), "default");
    let mut stream = restarted
        .watch(&WatchParams::default(), &last_rv)
        .await
        .unwrap()
        .boxed();
    let mut got = Vec::new();
    while got.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            WatchEvent::Added(o) => got.push(format!("ADDED {}", o.name_any())),
            WatchEvent::Deleted(o) => got.push(format!("DELETED {}", o.name_any())),
            _ => {}
        }
    }
    assert_eq!(got, ["ADDED s2", "DELETED s1"]);
}

#[tokio::test]
async fn shutdown_ends_watches_and_stops_listening() {
    let fake = FakeKube::start().await;
    let url = fake.url().to_string();
    let cms: Api<ConfigMap> = Api::namespaced(fake.client(), "default");
    let mut stream = cms
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    fake.shutdown().await;
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = stream.next().await {}
    })
    .await;
    assert!(end.is_ok(), "watch ended on shutdown");
    let addr = url.trim_start_matches("http://");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener closed"
    );
}

/// Soak: a Controller and a writer for FAKE_KUBE_SOAK_SECS seconds (default
/// 120) with 5-second watch timeouts. Run with `cargo test -- --ignored soak`.
#[tokio::test]
#[ignore = "long-running soak test"]
async fn soak_controller_for_minutes() {
    let secs: u64 = std::env::var("FAKE_KUBE_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    let fake = FakeKube::builder()
        .bookmark_interval(Duration::from_secs(2))
        .start()
        .await
        .unwrap();
    let client = fake.client();
    install_widget_crd(&client).await;
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        reconciles: AtomicUsize::new(0),
        recorder: Recorder::new(client.clone(), Reporter::from("soak")),
    });
    let controller = Controller::new(
        Api::<Widget>::all(client.clone()),
        watcher::Config::default().timeout(5),
    )
    .owns(
        Api::<ConfigMap>::all(client.clone()),
        watcher::Config::default().timeout(5),
    )
    .run(reconcile, error_policy, ctx.clone())
    .for_each(|_| async {});
    let task = tokio::spawn(controller);
    let widgets: Api<Widget> = Api::namespaced(fake.client(), "soak");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let mut i: i32 = 0;
    while tokio::time::Instant::now() < deadline {
        let name = format!("w{}", i % 10);
        match widgets.get_opt(&name).await.unwrap() {
            None => {
                widgets
                    .create(&PostParams::default(), &widget(&name, i))
                    .await
                    .unwrap();
            }
            Some(_) if i % 7 == 0 => {
                widgets
                    .delete(&name, &DeleteParams::default())
                    .await
                    .unwrap();
            }
            Some(_) => {
                widgets
                    .patch(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"spec": {"size": i}})),
                    )
                    .await
                    .unwrap();
            }
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Everything converges: each remaining widget is Ready at its generation.
    let converged = eventually(Duration::from_secs(20), || {
        let widgets = widgets.clone();
        async move {
            widgets
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .iter()
                .all(|w| {
                    w.metadata.deletion_timestamp.is_none()
                        && w.status.as_ref().is_some_and(|s| {
                            s.phase == "Ready" && s.observed_generation == w.metadata.generation
                        })
                })
        }
    })
    .await;
    assert!(converged, "all widgets reconciled after {i} writes");
    // The controller lists all namespaces; the test's own lists are namespaced.
    let lists = fake
        .requests()
        .iter()
        .filter(|r| {
            r.method == "GET"
                && r.path == "/apis/test.vmi.io/v1/widgets"
                && !r.query.contains("watch")
        })
        .count();
    println!(
        "soak: {i} writes, {} reconciles, {lists} widget lists, rv {}",
        ctx.reconciles.load(Ordering::SeqCst),
        fake.resource_version()
    );
    assert!(lists <= 1, "the controller never had to re-list ({lists})");
    task.abort();
}

#[tokio::test]
async fn watch_of_a_single_object_by_path() {
    let fake = FakeKube::start().await;
    let client = fake.client();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    cms.create(&PostParams::default(), &cm("one", &[]))
        .await
        .unwrap();
    cms.create(&PostParams::default(), &cm("two", &[]))
        .await
        .unwrap();
    for path in [
        "/api/v1/namespaces/default/configmaps/one?watch=true&resourceVersion=0&timeoutSeconds=1",
        "/api/v1/watch/namespaces/default/configmaps/one?resourceVersion=0&timeoutSeconds=1",
    ] {
        let req = http::Request::get(path).body(vec![]).unwrap();
        let mut stream = client
            .request_events::<ConfigMap>(req)
            .await
            .unwrap()
            .boxed();
        let mut names = Vec::new();
        while let Some(ev) = stream.next().await {
            if let WatchEvent::Added(o) = ev.unwrap() {
                names.push(o.name_any());
            }
        }
        assert_eq!(names, ["one"], "{path}");
    }
}
