//! The fake server against the real kube-rs client: CRUD, patches,
//! subresources, finalizers, garbage collection, apply, discovery.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;

use common::{Widget, WidgetStatus, api_err, install_widget_crd, widget};
use k8s_openapi::ByteString;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, PersistentVolumeClaim, Pod, Secret, Service,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, OwnerReference};
use kube::api::{
    Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams, PropagationPolicy,
};
use kube::core::{DynamicObject, GroupVersionKind};
use kube::discovery::{ApiResource, Discovery};
use kube::{Resource, ResourceExt};
use serde_json::json;
use vmi_fake_kube::{FakeKube, Fault};

fn secret(name: &str, labels: &[(&str, &str)]) -> Secret {
    Secret {
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
        string_data: Some(BTreeMap::from([(
            "password".to_string(),
            "hunter2".to_string(),
        )])),
        ..Secret::default()
    }
}

fn cm(name: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([("k".to_string(), "v".to_string())])),
        ..ConfigMap::default()
    }
}

#[tokio::test]
async fn secret_crud() {
    let fake = FakeKube::start().await;
    let secrets: Api<Secret> = Api::namespaced(fake.client(), "apps");
    let pp = PostParams::default();

    let created = secrets
        .create(&pp, &secret("db", &[("app", "db")]))
        .await
        .unwrap();
    let uid = created.uid().unwrap();
    assert_eq!(uuid::Uuid::parse_str(&uid).unwrap().get_version_num(), 4);
    assert!(created.metadata.creation_timestamp.is_some());
    assert_eq!(created.metadata.namespace.as_deref(), Some("apps"));
    assert_eq!(created.type_.as_deref(), Some("Opaque"));
    // stringData is folded into data, as the real server does.
    assert!(created.string_data.is_none());
    assert_eq!(
        created.data.as_ref().unwrap()["password"],
        ByteString(b"hunter2".to_vec())
    );

    assert_eq!(
        api_err(secrets.create(&pp, &secret("db", &[])).await),
        (409, "AlreadyExists".to_string())
    );
    assert_eq!(
        api_err(secrets.get("nope").await),
        (404, "NotFound".to_string())
    );
    assert!(secrets.get_opt("nope").await.unwrap().is_none());

    let mut got = secrets.get("db").await.unwrap();
    assert_eq!(got, created);
    got.data
        .get_or_insert_default()
        .insert("user".into(), ByteString(b"root".to_vec()));
    let replaced = secrets.replace("db", &pp, &got).await.unwrap();
    let rv1: u64 = created.resource_version().unwrap().parse().unwrap();
    let rv2: u64 = replaced.resource_version().unwrap().parse().unwrap();
    assert!(rv2 > rv1);
    assert_eq!(replaced.uid(), created.uid());

    // A no-op update keeps the resourceVersion (and emits no event).
    let again = secrets.replace("db", &pp, &replaced).await.unwrap();
    assert_eq!(again.resource_version(), replaced.resource_version());

    let deleted = secrets
        .delete("db", &DeleteParams::default())
        .await
        .unwrap();
    // Secrets answer a Status on immediate deletion.
    assert!(deleted.is_right());
    assert_eq!(api_err(secrets.get("db").await).0, 404);
    assert_eq!(
        api_err(secrets.delete("db", &DeleteParams::default()).await).0,
        404
    );

    let objs = fake.objects("", "v1", "secrets");
    assert!(objs.is_empty());
    let reqs = fake.requests();
    assert!(reqs.iter().any(|r| r.method == "POST"
        && r.path == "/api/v1/namespaces/apps/secrets"
        && r.status == 201));
    assert!(reqs.iter().any(|r| r.method == "GET" && r.status == 404));
}

#[tokio::test]
async fn custom_resource_crud_and_generation() {
    let fake = FakeKube::start().await;
    let client = fake.client();
    let widgets: Api<Widget> = Api::namespaced(client.clone(), "default");
    // Not registered yet: 404 like the real server.
    assert_eq!(
        api_err(widgets.list(&ListParams::default()).await),
        (404, "NotFound".to_string())
    );
    install_widget_crd(&client).await;

    let w = widgets
        .create(&PostParams::default(), &widget("w1", 1))
        .await
        .unwrap();
    assert_eq!(w.metadata.generation, Some(1));
    assert_eq!(w.status, None);
    assert_eq!(w.spec.size, 1);

    let pp = PatchParams::default();
    let w = widgets
        .patch("w1", &pp, &Patch::Merge(json!({"spec": {"size": 2}})))
        .await
        .unwrap();
    assert_eq!(w.metadata.generation, Some(2));
    let w = widgets
        .patch(
            "w1",
            &pp,
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        w.metadata.generation,
        Some(2),
        "metadata changes keep the generation"
    );
    assert_eq!(w.labels()["a"], "b");

    // PUT of a custom resource needs metadata.resourceVersion.
    let mut unconditional = w.clone();
    unconditional.metadata.resource_version = None;
    assert_eq!(
        api_err(
            widgets
                .replace("w1", &PostParams::default(), &unconditional)
                .await
        ),
        (422, "Invalid".to_string())
    );

    let list = widgets.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert!(list.metadata.resource_version.is_some());

    // Schema validation and pruning.
    let bad = widgets
        .create(
            &PostParams::default(),
            &serde_json::from_value::<Widget>(json!({
                "apiVersion": "test.vmi.io/v1", "kind": "Widget",
                "metadata": {"name": "bad"}, "spec": {"size": 1}
            }))
            .unwrap(),
        )
        .await;
    assert!(bad.is_ok());
    let dyn_api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("test.vmi.io", "v1", "Widget"),
            "widgets",
        ),
    );
    let invalid: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "test.vmi.io/v1", "kind": "Widget",
        "metadata": {"name": "invalid"}, "spec": {"size": "big"}
    }))
    .unwrap();
    assert_eq!(
        api_err(dyn_api.create(&PostParams::default(), &invalid).await),
        (422, "Invalid".to_string())
    );
    let extra: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "test.vmi.io/v1", "kind": "Widget",
        "metadata": {"name": "extra"}, "spec": {"size": 3, "unknown": true}, "junk": 1
    }))
    .unwrap();
    let stored = dyn_api
        .create(&PostParams::default(), &extra)
        .await
        .unwrap();
    assert_eq!(stored.data["spec"], json!({"size": 3}));
    assert!(stored.data.get("junk").is_none());

    match widgets
        .delete("w1", &DeleteParams::default())
        .await
        .unwrap()
    {
        either::Either::Left(obj) => assert_eq!(obj.name_any(), "w1"),
        either::Either::Right(s) => panic!("custom resources answer the object, got {s:?}"),
    }
    assert!(widgets.get_opt("w1").await.unwrap().is_none());
}

#[tokio::test]
async fn discovery_finds_builtins_and_crds() {
    let fake = FakeKube::start().await;
    let client = fake.client();
    install_widget_crd(&client).await;
    for aggregated in [false, true] {
        let d = Discovery::new(client.clone());
        let d = if aggregated {
            d.run_aggregated().await
        } else {
            d.run().await
        }
        .unwrap();
        let (ar, caps) = d
            .resolve_gvk(&GroupVersionKind::gvk("test.vmi.io", "v1", "Widget"))
            .expect("Widget discovered");
        assert_eq!(ar.plural, "widgets");
        assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
        assert!(
            caps.subresources
                .iter()
                .any(|(s, _)| s.plural == "widgets/status" || s.plural == "status"),
            "{caps:?}"
        );
        assert!(
            d.resolve_gvk(&GroupVersionKind::gvk("coordination.k8s.io", "v1", "Lease"))
                .is_some()
        );
        assert!(
            d.resolve_gvk(&GroupVersionKind::gvk("", "v1", "Secret"))
                .is_some()
        );
    }
    let v = client.apiserver_version().await.unwrap();
    assert_eq!(v.major, "1");
}

#[tokio::test]
async fn list_with_selectors_and_pagination() {
    let fake = FakeKube::start().await;
    let secrets: Api<Secret> = Api::namespaced(fake.client(), "default");
    let pp = PostParams::default();
    for (name, labels) in [
        ("a", vec![("app", "web"), ("tier", "front")]),
        ("b", vec![("app", "web"), ("tier", "back")]),
        ("c", vec![("app", "db")]),
        ("d", vec![]),
    ] {
        secrets.create(&pp, &secret(name, &labels)).await.unwrap();
    }
    Api::<Secret>::namespaced(fake.client(), "other")
        .create(&pp, &secret("e", &[("app", "web")]))
        .await
        .unwrap();
    let names = |sel: &str| {
        let secrets = secrets.clone();
        let sel = sel.to_string();
        async move {
            secrets
                .list(&ListParams::default().labels(&sel))
                .await
                .unwrap()
                .items
                .iter()
                .map(ResourceExt::name_any)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(names("app=web").await, ["a", "b"]);
    assert_eq!(names("app==web,tier=back").await, ["b"]);
    assert_eq!(names("app!=web").await, ["c", "d"]);
    assert_eq!(names("app in (web, db)").await, ["a", "b", "c"]);
    assert_eq!(names("app notin (web)").await, ["c", "d"]);
    assert_eq!(names("tier").await, ["a", "b"]);
    assert_eq!(names("!tier").await, ["c", "d"]);
    let by_field = secrets
        .list(&ListParams::default().fields("metadata.name=c"))
        .await
        .unwrap();
    assert_eq!(by_field.items.len(), 1);
    assert_eq!(
        api_err(
            secrets
                .list(&ListParams::default().fields("spec.nope=1"))
                .await
        )
        .0,
        400
    );
    assert_eq!(
        api_err(secrets.list(&ListParams::default().labels("a in (b")).await).0,
        400
    );

    let all: Api<Secret> = Api::all(fake.client());
    let everything = all
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    assert_eq!(everything.items.len(), 3);
    let other_ns = all
        .list(&ListParams::default().fields("metadata.namespace=other"))
        .await
        .unwrap();
    assert_eq!(other_ns.items.len(), 1);

    // Pagination.
    let page1 = secrets.list(&ListParams::default().limit(3)).await.unwrap();
    assert_eq!(page1.items.len(), 3);
    let token = page1.metadata.continue_.clone().expect("continue token");
    assert_eq!(page1.metadata.remaining_item_count, Some(1));
    let page2 = secrets
        .list(&ListParams::default().limit(3).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(
        page2
            .items
            .iter()
            .map(ResourceExt::name_any)
            .collect::<Vec<_>>(),
        ["d"]
    );
    assert!(page2.metadata.continue_.is_none());
    assert_eq!(
        page2.metadata.resource_version,
        page1.metadata.resource_version
    );
}

#[tokio::test]
async fn status_subresource_is_separate_from_spec() {
    let fake = FakeKube::start().await;
    let client = fake.client();
    install_widget_crd(&client).await;
    let widgets: Api<Widget> = Api::namespaced(client.clone(), "default");
    let mut w = widget("s", 1);
    w.status = Some(WidgetStatus {
        phase: "Ignored".into(),
        observed_generation: None,
    });
    let w = widgets.create(&PostParams::default(), &w).await.unwrap();
    assert_eq!(w.status, None, "create drops status");

    // Status patch: spec and labels in it are ignored.
    let after = widgets
        .patch_status(
            "s",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 99}, "metadata": {"labels": {"x": "y"}}, "status": {"phase": "Ready", "observedGeneration": 1}})),
        )
        .await
        .unwrap();
    assert_eq!(after.spec.size, 1);
    assert!(after.labels().is_empty());
    assert_eq!(after.status.as_ref().unwrap().phase, "Ready");
    assert_eq!(
        after.metadata.generation,
        Some(1),
        "status writes keep the generation"
    );

    // Main-resource writes ignore status.
    let after2 = widgets
        .patch(
            "s",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 5}, "status": {"phase": "Hacked"}})),
        )
        .await
        .unwrap();
    assert_eq!(after2.spec.size, 5);
    assert_eq!(after2.status.as_ref().unwrap().phase, "Ready");
    assert_eq!(after2.metadata.generation, Some(2));

    // replace_status with a stale resourceVersion conflicts.
    let mut stale = after.clone();
    stale.status = Some(WidgetStatus {
        phase: "Stale".into(),
        observed_generation: None,
    });
    assert_eq!(
        api_err(
            widgets
                .replace_status("s", &PostParams::default(), &stale)
                .await
        )
        .0,
        409
    );
    let mut fresh = after2.clone();
    fresh.status = Some(WidgetStatus {
        phase: "Done".into(),
        observed_generation: Some(2),
    });
    fresh.spec.size = 1000;
    let r = widgets
        .replace_status("s", &PostParams::default(), &fresh)
        .await
        .unwrap();
    assert_eq!(r.status.unwrap().phase, "Done");
    assert_eq!(r.spec.size, 5);
    let got = widgets.get_status("s").await.unwrap();
    assert_eq!(got.spec.size, 5);

    // A type without the status subresource has no /status path.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    cms.create(&PostParams::default(), &cm("c")).await.unwrap();
    assert_eq!(api_err(cms.get_status("c").await).0, 404);
}

#[tokio::test]
async fn json_patch_failed_test_is_422_and_stale_rv_is_409() {
    let fake = FakeKube::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(fake.client(), "default");
    let c = cms.create(&PostParams::default(), &cm("c")).await.unwrap();
    let pp = PatchParams::default();

    let failing: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/finalizers", "value": ["someone/else"]},
        {"op": "add", "path": "/metadata/finalizers/-", "value": "mine"}
    ]))
    .unwrap();
    assert_eq!(
        api_err(
            cms.patch("c", &pp, &Patch::<ConfigMap>::Json(failing))
                .await
        ),
        (422, "Invalid".to_string())
    );
    // The kube-runtime finalizer shape: test null on an absent list, then add.
    let ok: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/finalizers", "value": null},
        {"op": "add", "path": "/metadata/finalizers", "value": ["mine"]}
    ]))
    .unwrap();
    let c2 = cms
        .patch("c", &pp, &Patch::<ConfigMap>::Json(ok))
        .await
        .unwrap();
    assert_eq!(c2.finalizers(), ["mine"]);
    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "replace", "path": "/data/k", "value": "v2"},
        {"op": "copy", "from": "/data/k", "path": "/data/k2"},
        {"op": "move", "from": "/data/k2", "path": "/data/k3"},
        {"op": "remove", "path": "/metadata/finalizers"}
    ]))
    .unwrap();
    let c3 = cms
        .patch("c", &pp, &Patch::<ConfigMap>::Json(ops))
        .await
        .unwrap();
    assert_eq!(
        c3.data.unwrap(),
        BTreeMap::from([("k".into(), "v2".into()), ("k3".into(), "v2".into())])
    );

    // Stale resourceVersion: PUT, merge patch and JSON patch all conflict.
    let mut stale = c.clone();
    stale.data = Some(BTreeMap::new());
    assert_eq!(
        api_err(cms.replace("c", &PostParams::default(), &stale).await),
        (409, "Conflict".to_string())
    );
    let rv = c.resource_version().unwrap();
    assert_eq!(
        api_err(
            cms.patch(
                "c",
                &pp,
                &Patch::Merge(json!({"metadata": {"resourceVersion": rv}, "data": {"x": "y"}}))
            )
            .await
        )
        .0,
        409
    );
    let current = cms.get("c").await.unwrap();
    let fresh_rv = current.resource_version().unwrap();
    let ok = cms
        .patch(
            "c",
            &pp,
            &Patch::Merge(json!({"metadata": {"resourceVersion": fresh_rv}, "data": {"x": "y"}})),
        )
        .await
        .unwrap();
    assert_eq!(ok.data.unwrap()["x"], "y");
    // Strategic merge patch works on built-ins.
    let s = cms
        .patch("c", &pp, &Patch::Strategic(json!({"data": {"s": "t"}})))
        .await
        .unwrap();
    assert_eq!(s.data.unwrap()["s"], "t");
    // Delete preconditions.
    let dp = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            resource_version: Some("1".into()),
            uid: None,
        }),
        ..DeleteParams::default()
    };
    assert_eq!(api_err(cms.delete("c", &dp).await).0, 409);
}

#[tokio::test]
async fn generate_name() {
    let fake = FakeKube::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(fake.client(), "default");
    let mut c = cm("");
    c.metadata.name = None;
    c.metadata.generate_name = Some("import-".into());
    let a = cms.create(&PostParams::default(), &c).await.unwrap();
    let b = cms.create(&PostParams::default(), &c).await.unwrap();
    for x in [&a, &b] {
        let n = x.name_any();
        assert!(
            n.starts_with("import-") && n.len() == "import-".len() + 5,
            "{n}"
        );
    }
    assert_ne!(a.name_any(), b.name_any());
    assert_eq!(a.metadata.generate_name.as_deref(), Some("import-"));
    let mut nameless = cm("");
    nameless.metadata.name = None;
    assert_eq!(
        api_err(cms.create(&PostParams::default(), &nameless).await),
        (422, "Invalid".to_string())
    );
    assert_eq!(
        api_err(cms.create(&PostParams::default(), &cm("Bad_Name")).await).0,
        422
    );
}

fn owner_ref(owner: &ConfigMap) -> OwnerReference {
    owner.controller_owner_ref(&()).unwrap()
}

#[tokio::test]
async fn owner_reference_garbage_collection() {
    let fake = FakeKube::start().await;
    let client = fake.client();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");

    gc_background_cascades(&cms, &secrets).await;
    gc_dependent_finalizer_delays_deletion(&cms, &secrets).await;
    gc_shared_dependent_and_orphan_propagation(&cms, &secrets).await;
    gc_foreground_waits_for_dependents(&cms, &secrets).await;
    gc_collects_objects_of_absent_owners(&secrets).await;

    let deleted: Vec<_> = fake
        .events_seen()
        .into_iter()
        .filter(|e| e.event_type == vmi_fake_kube::EventType::Deleted)
        .map(|e| e.name)
        .collect();
    assert!(deleted.contains(&"dep".to_string()) && deleted.contains(&"grandchild".to_string()));
}

/// Background: the dependent goes with the owner, and its own dependent too.
async fn gc_background_cascades(cms: &Api<ConfigMap>, secrets: &Api<Secret>) {
    let pp = PostParams::default();
    let owner = cms.create(&pp, &cm("owner")).await.unwrap();
    let mut dep = secret("dep", &[]);
    dep.metadata.owner_references = Some(vec![owner_ref(&owner)]);
    let dep = secrets.create(&pp, &dep).await.unwrap();
    let mut grandchild = cm("grandchild");
    grandchild.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "Secret".into(),
        name: "dep".into(),
        uid: dep.uid().unwrap(),
        ..OwnerReference::default()
    }]);
    cms.create(&pp, &grandchild).await.unwrap();
    cms.delete("owner", &DeleteParams::default()).await.unwrap();
    assert!(secrets.get_opt("dep").await.unwrap().is_none());
    assert!(cms.get_opt("grandchild").await.unwrap().is_none());
}

/// A dependent with a finalizer is marked for deletion and waits for it.
async fn gc_dependent_finalizer_delays_deletion(cms: &Api<ConfigMap>, secrets: &Api<Secret>) {
    let pp = PostParams::default();
    let owner = cms.create(&pp, &cm("owner2")).await.unwrap();
    let mut dep = secret("dep2", &[]);
    dep.metadata.owner_references = Some(vec![owner_ref(&owner)]);
    dep.metadata.finalizers = Some(vec!["test/keep".into()]);
    secrets.create(&pp, &dep).await.unwrap();
    cms.delete("owner2", &DeleteParams::default())
        .await
        .unwrap();
    let pending = secrets.get("dep2").await.unwrap();
    assert!(pending.metadata.deletion_timestamp.is_some());
    secrets
        .patch(
            "dep2",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    assert!(secrets.get_opt("dep2").await.unwrap().is_none());
}

/// A dependent with another live owner only loses the dangling reference;
/// deleting that owner with Orphan propagation then keeps the dependent.
async fn gc_shared_dependent_and_orphan_propagation(cms: &Api<ConfigMap>, secrets: &Api<Secret>) {
    let pp = PostParams::default();
    let o1 = cms.create(&pp, &cm("o1")).await.unwrap();
    let o2 = cms.create(&pp, &cm("o2")).await.unwrap();
    let mut shared = secret("shared", &[]);
    let mut r2 = owner_ref(&o2);
    r2.controller = None;
    shared.metadata.owner_references = Some(vec![owner_ref(&o1), r2]);
    secrets.create(&pp, &shared).await.unwrap();
    cms.delete("o1", &DeleteParams::default()).await.unwrap();
    let s = secrets.get("shared").await.unwrap();
    assert_eq!(s.owner_references().len(), 1);
    assert_eq!(s.owner_references()[0].name, "o2");

    // Orphan propagation keeps dependents and strips the reference.
    cms.delete(
        "o2",
        &DeleteParams {
            propagation_policy: Some(PropagationPolicy::Orphan),
            ..DeleteParams::default()
        },
    )
    .await
    .unwrap();
    assert!(cms.get_opt("o2").await.unwrap().is_none());
    assert!(
        secrets
            .get("shared")
            .await
            .unwrap()
            .owner_references()
            .is_empty()
    );
}

/// Foreground: owner stays until its dependents are gone.
async fn gc_foreground_waits_for_dependents(cms: &Api<ConfigMap>, secrets: &Api<Secret>) {
    let pp = PostParams::default();
    let o3 = cms.create(&pp, &cm("o3")).await.unwrap();
    let mut d3 = secret("d3", &[]);
    d3.metadata.owner_references = Some(vec![owner_ref(&o3)]);
    d3.metadata.finalizers = Some(vec!["test/keep".into()]);
    secrets.create(&pp, &d3).await.unwrap();
    cms.delete("o3", &DeleteParams::foreground()).await.unwrap();
    let o3_now = cms.get("o3").await.unwrap();
    assert!(o3_now.metadata.deletion_timestamp.is_some());
    assert!(
        o3_now
            .finalizers()
            .contains(&"foregroundDeletion".to_string())
    );
    secrets
        .patch(
            "d3",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    assert!(cms.get_opt("o3").await.unwrap().is_none());
}

/// Like the real garbage collector, an object whose owners never existed is collected.
async fn gc_collects_objects_of_absent_owners(secrets: &Api<Secret>) {
    let pp = PostParams::default();
    let mut dangling = secret("dangling", &[]);
    dangling.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: "ghost".into(),
        uid: "00000000-0000-0000-0000-000000000000".into(),
        ..OwnerReference::default()
    }]);
    secrets.create(&pp, &dangling).await.unwrap();
    assert!(secrets.get_opt("dangling").await.unwrap().is_none());
}

#[tokio::test]
async fn finalizers_block_deletion() {
    use vmi_fake_kube::EventType::{Added, Deleted, Modified};

    let fake = FakeKube::start().await;
    let client = fake.client();
    install_widget_crd(&client).await;
    let widgets: Api<Widget> = Api::namespaced(client, "default");
    let mut w = widget("f", 1);
    w.metadata.finalizers = Some(vec!["test/a".into(), "test/b".into()]);
    widgets.create(&PostParams::default(), &w).await.unwrap();
    let res = widgets.delete("f", &DeleteParams::default()).await.unwrap();
    let obj = res.left().expect("object while finalizers are pending");
    assert!(obj.metadata.deletion_timestamp.is_some());
    assert_eq!(obj.metadata.deletion_grace_period_seconds, Some(0));
    assert_eq!(
        obj.metadata.generation,
        Some(2),
        "marking for deletion bumps the generation"
    );
    // No new finalizers on a deleting object.
    assert_eq!(
        api_err(
            widgets
                .patch(
                    "f",
                    &PatchParams::default(),
                    &Patch::Merge(
                        json!({"metadata": {"finalizers": ["test/a", "test/b", "test/c"]}})
                    )
                )
                .await
        ),
        (422, "Invalid".to_string())
    );
    // Spec changes are still allowed while deleting.
    widgets
        .patch(
            "f",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 3}})),
        )
        .await
        .unwrap();
    widgets
        .patch(
            "f",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["test/b"]}})),
        )
        .await
        .unwrap();
    assert!(widgets.get_opt("f").await.unwrap().is_some());
    let last = widgets
        .patch(
            "f",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": []}})),
        )
        .await
        .unwrap();
    assert!(last.finalizers().is_empty());
    assert!(widgets.get_opt("f").await.unwrap().is_none());
    let kinds: Vec<_> = fake
        .events_seen()
        .into_iter()
        .filter(|e| e.name == "f")
        .map(|e| e.event_type)
        .collect();
    assert_eq!(kinds, [Added, Modified, Modified, Modified, Deleted]);
}

#[tokio::test]
async fn server_side_apply_create_then_update() {
    let fake = FakeKube::start().await;
    let client = fake.client();
    install_widget_crd(&client).await;
    let widgets: Api<Widget> = Api::namespaced(client.clone(), "default");
    let ssa = PatchParams::apply("vm-import").force();
    let mut w = widget("applied", 1);
    w.metadata.labels = Some(BTreeMap::from([
        ("a".into(), "1".into()),
        ("b".into(), "2".into()),
    ]));
    let created = widgets
        .patch("applied", &ssa, &Patch::Apply(&w))
        .await
        .unwrap();
    assert_eq!(created.spec.size, 1);
    assert_eq!(created.metadata.generation, Some(1));
    assert!(fake.requests().iter().any(|r| r.method == "PATCH"
        && r.status == 201
        && r.has_query("fieldManager", "vm-import")));

    // Another manager adds a label; our manager re-applies without label b.
    widgets
        .patch(
            "applied",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"other": "x"}}})),
        )
        .await
        .unwrap();
    w.spec.size = 2;
    w.metadata.labels = Some(BTreeMap::from([("a".into(), "1".into())]));
    let updated = widgets
        .patch("applied", &ssa, &Patch::Apply(&w))
        .await
        .unwrap();
    assert_eq!(updated.spec.size, 2);
    assert_eq!(updated.metadata.generation, Some(2));
    let labels = updated.labels();
    assert_eq!(labels.get("a").map(String::as_str), Some("1"));
    assert!(
        !labels.contains_key("b"),
        "field dropped by the same manager is removed"
    );
    assert_eq!(labels.get("other").map(String::as_str), Some("x"));

    // Re-applying the same thing is a no-op.
    let same = widgets
        .patch("applied", &ssa, &Patch::Apply(&w))
        .await
        .unwrap();
    assert_eq!(same.resource_version(), updated.resource_version());

    // Apply to the status subresource.
    let st = widgets
        .patch_status(
            "applied",
            &ssa,
            &Patch::Apply(json!({"apiVersion": "test.vmi.io/v1", "kind": "Widget", "status": {"phase": "Ready"}})),
        )
        .await
        .unwrap();
    assert_eq!(st.status.unwrap().phase, "Ready");
    assert_eq!(st.spec.size, 2);

    // fieldManager is required for apply.
    let no_manager = PatchParams::default();
    assert_eq!(
        api_err(
            widgets
                .patch("applied", &no_manager, &Patch::Apply(&w))
                .await
        )
        .0,
        422
    );
    // Strategic merge patches are refused for custom resources, as by the real server.
    assert_eq!(
        api_err(
            widgets
                .patch(
                    "applied",
                    &PatchParams::default(),
                    &Patch::Strategic(json!({"spec": {"size": 3}}))
                )
                .await
        )
        .0,
        415
    );

    // Apply of built-ins (and a CRD via apply).
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let c = cms.patch("applied-cm", &PatchParams::apply("vm-import"), &Patch::Apply(json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied-cm"}, "data": {"a": "1"}
    }))).await.unwrap();
    assert_eq!(c.data.unwrap()["a"], "1");
}

#[tokio::test]
async fn lease_create_and_update() {
    let fake = FakeKube::start().await;
    let leases: Api<Lease> = Api::namespaced(fake.client(), "kube-system");
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some("vm-import-leader".into()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some("pod-a".into()),
            lease_duration_seconds: Some(15),
            acquire_time: Some(MicroTime(jiff::Timestamp::now())),
            renew_time: Some(MicroTime(jiff::Timestamp::now())),
            lease_transitions: Some(0),
            ..LeaseSpec::default()
        }),
    };
    let created = leases.create(&PostParams::default(), &lease).await.unwrap();
    assert_eq!(
        created.spec.as_ref().unwrap().holder_identity.as_deref(),
        Some("pod-a")
    );
    let mut renewed = created.clone();
    renewed.spec.as_mut().unwrap().renew_time = Some(MicroTime(
        jiff::Timestamp::now() + jiff::SignedDuration::from_secs(5),
    ));
    let renewed = leases
        .replace("vm-import-leader", &PostParams::default(), &renewed)
        .await
        .unwrap();
    // A competing candidate with the old resourceVersion loses.
    let mut takeover = created.clone();
    takeover.spec.as_mut().unwrap().holder_identity = Some("pod-b".into());
    assert_eq!(
        api_err(
            leases
                .replace("vm-import-leader", &PostParams::default(), &takeover)
                .await
        )
        .0,
        409
    );
    let taken = leases
        .patch(
            "vm-import-leader",
            &PatchParams::default(),
            &Patch::Merge(json!({
                "metadata": {"resourceVersion": renewed.resource_version()},
                "spec": {"holderIdentity": "pod-b", "leaseTransitions": 1}
            })),
        )
        .await
        .unwrap();
    assert_eq!(
        taken.spec.unwrap().holder_identity.as_deref(),
        Some("pod-b")
    );
    assert_eq!(fake.objects("coordination.k8s.io", "v1", "leases").len(), 1);
}

#[tokio::test]
async fn builtin_defaults_and_immutability() {
    let fake = FakeKube::start().await;
    let client = fake.client();
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "disk"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    }))
    .unwrap();
    let pvc = pvcs.create(&PostParams::default(), &pvc).await.unwrap();
    assert_eq!(pvc.status.unwrap().phase.as_deref(), Some("Pending"));
    assert_eq!(
        pvc.spec.as_ref().unwrap().volume_mode.as_deref(),
        Some("Filesystem")
    );
    assert_eq!(
        api_err(
            pvcs.patch(
                "disk",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"accessModes": ["ReadWriteMany"]}}))
            )
            .await
        )
        .0,
        422
    );
    pvcs.patch(
        "disk",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"resources": {"requests": {"storage": "2Gi"}}}})),
    )
    .await
    .unwrap();

    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc: Service = serde_json::from_value(
        json!({"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}}),
    )
    .unwrap();
    let svc = svcs.create(&PostParams::default(), &svc).await.unwrap();
    let spec = svc.spec.unwrap();
    assert!(spec.cluster_ip.unwrap().starts_with("10.96."));
    assert_eq!(spec.ports.unwrap()[0].protocol.as_deref(), Some("TCP"));

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}})).unwrap();
    let pod = pods.create(&PostParams::default(), &pod).await.unwrap();
    assert_eq!(pod.status.unwrap().phase.as_deref(), Some("Pending"));
    pods.patch(
        "p",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"containers": [{"name": "c", "image": "busybox:1.37"}]}})),
    )
    .await
    .unwrap();
    assert_eq!(
        api_err(
            pods.patch(
                "p",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"restartPolicy": "Never"}}))
            )
            .await
        )
        .0,
        422
    );

    let nss: Api<Namespace> = Api::all(client.clone());
    let ns = nss.get("default").await.unwrap();
    assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Active"));
    // Deleting a namespace deletes its content.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "scratch");
    cms.create(&PostParams::default(), &cm("x")).await.unwrap();
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "scratch"}})).unwrap(),
    )
    .await
    .unwrap();
    nss.delete("scratch", &DeleteParams::default())
        .await
        .unwrap();
    assert!(cms.get_opt("x").await.unwrap().is_none());

    // Immutable secrets.
    let secrets: Api<Secret> = Api::namespaced(client, "default");
    let mut s = secret("frozen", &[]);
    s.immutable = Some(true);
    secrets.create(&PostParams::default(), &s).await.unwrap();
    assert_eq!(
        api_err(
            secrets
                .patch(
                    "frozen",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"stringData": {"password": "new"}}))
                )
                .await
        )
        .0,
        422
    );
}

#[tokio::test]
async fn dry_run_delete_collection_and_faults() {
    let fake = FakeKube::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(fake.client(), "default");
    let dry = cms
        .create(
            &PostParams {
                dry_run: true,
                ..PostParams::default()
            },
            &cm("dry"),
        )
        .await
        .unwrap();
    assert_eq!(dry.name_any(), "dry");
    assert!(cms.get_opt("dry").await.unwrap().is_none());

    for n in ["a", "b", "c"] {
        let mut c = cm(n);
        c.metadata.labels = Some(BTreeMap::from([(
            "batch".into(),
            if n == "c" { "2" } else { "1" }.into(),
        )]));
        cms.create(&PostParams::default(), &c).await.unwrap();
    }
    cms.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("batch=1"),
    )
    .await
    .unwrap();
    let left: Vec<_> = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    assert_eq!(left, ["c"]);

    fake.inject_fault(Fault {
        method: Some(http::Method::GET),
        path_contains: "/configmaps/c".into(),
        code: 500,
        times: 1,
    });
    assert_eq!(api_err(cms.get("c").await).0, 500);
    assert!(cms.get("c").await.is_ok());
    // kube 5 retries 503 by itself: the request log shows the retry.
    fake.clear_requests();
    fake.inject_fault(Fault {
        method: None,
        path_contains: "/configmaps/c".into(),
        code: 503,
        times: 1,
    });
    assert!(cms.get("c").await.is_ok());
    let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 200]);
}

#[tokio::test]
async fn kubeconfig_and_token() {
    let fake = FakeKube::builder()
        .token("s3cret")
        .require_token(true)
        .start()
        .await
        .unwrap();
    let kc = kube::config::Kubeconfig::read_from(fake.kubeconfig_path()).unwrap();
    assert_eq!(kc.current_context.as_deref(), Some("fake-kube"));
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .unwrap();
    assert_eq!(
        config.cluster_url.to_string().trim_end_matches('/'),
        fake.url()
    );
    let client = kube::Client::try_from(config).unwrap();
    let secrets: Api<Secret> = Api::default_namespaced(client);
    secrets
        .create(&PostParams::default(), &secret("via-kubeconfig", &[]))
        .await
        .unwrap();
    assert!(
        fake.object("", "v1", "secrets", Some("default"), "via-kubeconfig")
            .is_some()
    );

    // Without the token: 401.
    let anonymous = kube::Client::try_from(kube::Config::new(fake.url().parse().unwrap())).unwrap();
    let anon: Api<Secret> = Api::default_namespaced(anonymous);
    assert_eq!(api_err(anon.list(&ListParams::default()).await).0, 401);
    fake.shutdown().await;
}

#[tokio::test]
async fn typed_list_items_carry_type_meta() {
    let fake = FakeKube::start().await;
    let client = fake.client();
    install_widget_crd(&client).await;
    let widgets: Api<Widget> = Api::namespaced(client.clone(), "default");
    widgets
        .create(&PostParams::default(), &widget("t", 1))
        .await
        .unwrap();
    let req = http::Request::get("/apis/test.vmi.io/v1/namespaces/default/widgets")
        .body(vec![])
        .unwrap();
    let raw: serde_json::Value = client.request(req).await.unwrap();
    assert_eq!(raw["kind"], "WidgetList");
    assert_eq!(raw["items"][0]["kind"], "Widget");
    assert_eq!(raw["items"][0]["apiVersion"], "test.vmi.io/v1");
    assert_eq!(Widget::kind(&()), "Widget");
}

#[tokio::test]
async fn crd_versions_scope_and_deletion() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let fake = FakeKube::start().await;
    let client = fake.client();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let schema = json!({"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}});
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "gadgets.example.com"},
        "spec": {
            "group": "example.com",
            "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
            "scope": "Cluster",
            "versions": [
                {"name": "v1alpha1", "served": true, "storage": false, "schema": schema},
                {"name": "v1", "served": true, "storage": true, "schema": schema},
                {"name": "v0", "served": false, "storage": false, "schema": schema}
            ]
        }
    }))
    .unwrap();
    // Applied rather than created, as controllers often install their CRDs.
    let applied = crds
        .patch(
            "gadgets.example.com",
            &PatchParams::apply("installer").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap();
    assert_eq!(
        applied.status.unwrap().stored_versions,
        Some(vec!["v1".to_string()])
    );
    let gvk = |v: &str| GroupVersionKind::gvk("example.com", v, "Gadget");
    let v1: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(&gvk("v1"), "gadgets"),
    );
    let alpha: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(&gvk("v1alpha1"), "gadgets"),
    );
    let v0: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(&gvk("v0"), "gadgets"),
    );
    let g: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g1"}, "spec": {"anything": [1, 2]}
    }))
    .unwrap();
    v1.create(&PostParams::default(), &g).await.unwrap();
    let seen = alpha.get("g1").await.unwrap();
    assert_eq!(seen.types.unwrap().api_version, "example.com/v1alpha1");
    assert_eq!(seen.data["spec"]["anything"], json!([1, 2]));
    assert_eq!(api_err(v0.get("g1").await).0, 404, "unserved version");
    // Cluster-scoped: no namespaced path.
    let namespaced: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &ApiResource::from_gvk_with_plural(&gvk("v1"), "gadgets"),
    );
    assert_eq!(api_err(namespaced.get("g1").await).0, 404);

    // A CRD whose name does not match plural.group is invalid.
    let mut bad = crd.clone();
    bad.metadata.name = Some("wrong.example.com".into());
    assert_eq!(
        api_err(crds.create(&PostParams::default(), &bad).await).0,
        422
    );

    // Deleting the CRD removes its objects and the API.
    crds.delete("gadgets.example.com", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(api_err(v1.list(&ListParams::default()).await).0, 404);
    assert!(fake.objects("example.com", "v1", "gadgets").is_empty());
}
