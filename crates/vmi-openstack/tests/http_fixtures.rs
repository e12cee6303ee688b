//! Every endpoint the client uses, against fixtures shaped like real Zed answers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::pedantic
)]

mod support;

use std::collections::BTreeMap;

use futures::StreamExt;
use serde_json::json;
use support::*;
use vmi_openstack::OpenstackApi;
use vmi_openstack::api::NetworkQuery;
use vmi_openstack::error::OpenstackError;
use vmi_openstack::wire::{ImageStatus, ServerStatus, SnapshotStatus, VolumeStatus};
use wiremock::matchers::{body_json, body_partial_json, header, method, path, query_param};
use wiremock::{Mock, ResponseTemplate};

const SERVER: &str = "91f59803-e727-41c0-81c4-e5a83554b256";

#[tokio::test]
async fn login_sends_separate_user_and_project_domains_and_uses_the_token() {
    let cloud = FixtureCloud::start().await;
    Mock::given(method("POST"))
        .and(path("/identity/v3/auth/tokens"))
        .and(body_json(json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": "demo", "domain": {"name": "Default"}, "password": "vmi-demo-pass"}}},
            "scope": {"project": {"name": "demo", "domain": {"name": "Default"}}}}})))
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&cloud.server)
        .await;
    let api = cloud.client();
    let info = api.authenticate().await.unwrap();
    assert_eq!(info.project_id, PROJECT);
    assert_eq!(info.services, ["compute", "network", "image", "volumev3"]);
    assert_eq!(info.compute_microversion.as_deref(), Some("2.79"));

    Mock::given(method("GET"))
        .and(path(format!("/compute/v2.1/servers/{SERVER}")))
        .and(header("X-Auth-Token", TOKEN))
        .and(header("X-OpenStack-Nova-API-Version", "2.79"))
        .and(header("OpenStack-API-Version", "compute 2.79"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"server": server_json(SERVER, "vmi-bfv", "ACTIVE")})),
        )
        .expect(1)
        .mount(&cloud.server)
        .await;
    let s = api.get_server(SERVER).await.unwrap().unwrap();
    assert_eq!(s.name, "vmi-bfv");
    assert_eq!(s.flavor.vcpus, Some(2));
    assert_eq!(
        s.description.as_deref(),
        Some("Boot-from-volume test server")
    );
    // login + version document + server
    assert_eq!(api.request_count(), 3);
}

#[tokio::test]
async fn a_wrong_password_is_a_401_with_the_request_id() {
    let server = wiremock::MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/identity/v3/auth/tokens"))
        .respond_with(
            ResponseTemplate::new(401)
                .insert_header("x-openstack-request-id", "req-3c1a")
                .set_body_json(json!({"error": {"code": 401, "message": "The request you have made requires authentication.", "title": "Unauthorized"}})),
        )
        .mount(&server)
        .await;
    let cloud = FixtureCloud { server };
    let err = cloud.client().authenticate().await.unwrap_err();
    assert_eq!(err.status(), Some(401));
    let text = err.to_string();
    assert!(text.contains("POST "), "{text}");
    assert!(text.contains("/identity/v3/auth/tokens"), "{text}");
    assert!(text.contains("req-3c1a"), "{text}");
    assert!(text.contains("requires authentication"), "{text}");
    assert!(
        !text.contains("vmi-demo-pass"),
        "password in an error: {text}"
    );
}

#[tokio::test]
async fn a_region_missing_from_the_catalog_is_a_clear_error() {
    let cloud = FixtureCloud::start().await;
    let mut cfg = cloud.config();
    cfg.region = Some("RegionTwo".into());
    let api = vmi_openstack::HttpOpenstack::new(cfg, Default::default()).unwrap();
    let info = api.authenticate().await.unwrap();
    assert!(info.services.is_empty());
    let err = api.get_server(SERVER).await.unwrap_err();
    assert!(matches!(err, OpenstackError::Catalog { .. }));
    let text = err.to_string();
    assert!(
        text.contains("region 'RegionTwo'") && text.contains("compute public RegionOne"),
        "{text}"
    );
}

#[tokio::test]
async fn servers_by_name_use_an_anchored_escaped_regex_and_match_exactly() {
    let cloud = FixtureCloud::start().await;
    Mock::given(method("GET"))
        .and(path("/compute/v2.1/servers/detail"))
        .and(query_param("name", "^vmi-Mixed_Case\\.Name 01$"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"servers": [
            server_json("a", "vmi-Mixed_Case.Name 01", "ACTIVE"),
            server_json("b", "VMI-mixed_case.name 01", "ACTIVE")
        ]})))
        .mount(&cloud.server)
        .await;
    let found = cloud
        .client()
        .find_servers_by_name("vmi-Mixed_Case.Name 01")
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id, "a");
}

#[tokio::test]
async fn server_lists_follow_next_links() {
    let cloud = FixtureCloud::start().await;
    Mock::given(method("GET"))
        .and(path("/compute/v2.1/servers/detail"))
        .and(query_param("marker", "a"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"servers": [server_json("b", "vmi-twin", "ACTIVE")]})),
        )
        .mount(&cloud.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/compute/v2.1/servers/detail"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "servers": [server_json("a", "vmi-twin", "ACTIVE")],
            "servers_links": [{"rel": "next", "href": format!("{}/compute/v2.1/servers/detail?limit=1&name=%5Evmi-twin%24&marker=a", cloud.uri())}]
        })))
        .mount(&cloud.server)
        .await;
    let found = cloud
        .client()
        .find_servers_by_name("vmi-twin")
        .await
        .unwrap();
    let ids: Vec<_> = found.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
}

#[tokio::test]
async fn a_missing_server_is_none_and_a_flaky_one_is_retried() {
    let cloud = FixtureCloud::start().await;
    Mock::given(method("GET"))
        .and(path("/compute/v2.1/servers/missing"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"itemNotFound": {"code": 404, "message": "Instance missing could not be found."}})))
        .mount(&cloud.server)
        .await;
    let api = cloud.client();
    assert!(api.get_server("missing").await.unwrap().is_none());

    Mock::given(method("GET"))
        .and(path("/compute/v2.1/servers/flaky"))
        .respond_with(ResponseTemplate::new(503).set_body_string("busy"))
        .up_to_n_times(2)
        .mount(&cloud.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/compute/v2.1/servers/flaky"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"server": server_json("flaky", "x", "SHUTOFF")})),
        )
        .mount(&cloud.server)
        .await;
    let s = api.get_server("flaky").await.unwrap().unwrap();
    assert_eq!(s.status, ServerStatus::Shutoff);
}

#[tokio::test]
async fn an_expired_token_is_renewed_once_and_the_call_retried() {
    let cloud = FixtureCloud::start().await;
    let api = cloud.client();
    api.authenticate().await.unwrap();
    // The old token is now refused; a new login gets a new one.
    cloud.server.reset().await;
    cloud.mount_login("renewed-token").await;
    Mock::given(method("GET"))
        .and(path("/compute/v2.1/"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"version": {"version": "2.93", "min_version": "2.1"}})),
        )
        .mount(&cloud.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/network/v2.0/ports"))
        .and(header("X-Auth-Token", TOKEN))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(json!({"error": {"code": 401, "message": "expired"}})),
        )
        .mount(&cloud.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/network/v2.0/ports"))
        .and(header("X-Auth-Token", "renewed-token"))
        .and(query_param("device_id", SERVER))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(
                json!({"ports": [port_json("p1", "n1", "fa:16:3e:00:00:01", SERVER)]}),
            ),
        )
        .mount(&cloud.server)
        .await;
    let ports = api.list_server_ports(SERVER).await.unwrap();
    assert_eq!(ports.len(), 1);
    // The endpoints come from the new token's catalog: the call still went to /network/v2.0.
    assert_eq!(ports[0].network_id, "n1");
}

#[tokio::test]
async fn networks_are_looked_up_in_neutron_by_several_names_in_one_call() {
    let cloud = FixtureCloud::start().await;
    Mock::given(method("GET"))
        .and(path("/network/v2.0/networks"))
        .and(query_param("name", "vmi-dup"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"networks": [
                network_json("565e7c0b-74e8-486c-8b9d-9daf4094acf5", "vmi-dup"),
                network_json("c779a780-844b-46d6-8a28-ad52f5d1009f", "vmi-dup"),
                network_json("77efc537-84e0-495b-8788-34b2584b50d0", "vmi-net-a")
            ]})),
        )
        .expect(1)
        .mount(&cloud.server)
        .await;
    let q = NetworkQuery {
        names: vec!["vmi-dup".into(), "vmi-net-a".into()],
        ids: vec![],
    };
    let nets = cloud.client().list_networks(&q).await.unwrap();
    assert_eq!(nets.len(), 3);
    let received = cloud.server.received_requests().await.unwrap();
    let call = received
        .iter()
        .find(|r| r.url.path() == "/network/v2.0/networks")
        .unwrap();
    assert_eq!(call.url.query(), Some("name=vmi-dup&name=vmi-net-a"));
}

#[tokio::test]
async fn volumes_snapshots_and_quota() {
    let cloud = FixtureCloud::start().await;
    let vol = "274a2b0f-f67b-4eb3-9fb6-2ca068c5de6a";
    Mock::given(method("GET"))
        .and(path(format!("/volume/v3/{PROJECT}/volumes/{vol}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"volume": volume_json(vol, "in-use", false, "/dev/sdb", SERVER)}),
        ))
        .mount(&cloud.server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!(
            "/volume/v3/{PROJECT}/os-quota-sets/{PROJECT}"
        )))
        .and(query_param("usage", "True"))
        .respond_with(ResponseTemplate::new(200).set_body_json(quota_json()))
        .mount(&cloud.server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("/volume/v3/{PROJECT}/snapshots")))
        .and(body_partial_json(json!({"snapshot": {"volume_id": vol, "name": "vmi-x-d1-snap", "force": true}})))
        .respond_with(ResponseTemplate::new(202).set_body_json(json!({"snapshot": {
            "id": "612fb718-2580-4119-93ce-3a34348c4e66", "name": "vmi-x-d1-snap", "status": "creating",
            "size": 1, "volume_id": vol, "metadata": {"vm-import:import": "default/x"}}})))
        .mount(&cloud.server)
        .await;
    Mock::given(method("DELETE"))
        .and(path(format!("/volume/v3/{PROJECT}/snapshots/gone")))
        .respond_with(ResponseTemplate::new(404).set_body_json(
            json!({"itemNotFound": {"code": 404, "message": "Snapshot gone could not be found."}}),
        ))
        .mount(&cloud.server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("/volume/v3/{PROJECT}/volumes")))
        .and(body_partial_json(json!({"volume": {"snapshot_id": "612fb718-2580-4119-93ce-3a34348c4e66", "size": 1}})))
        .respond_with(ResponseTemplate::new(202).set_body_json(json!({"volume": {
            "id": "782223c0-5c64-4e37-920a-215e990511e3", "name": "vmi-x-d1-vol", "status": "creating", "size": 1,
            "snapshot_id": "612fb718-2580-4119-93ce-3a34348c4e66", "bootable": "false", "attachments": []}})))
        .mount(&cloud.server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("/volume/v3/{PROJECT}/volumes/782223c0-5c64-4e37-920a-215e990511e3/action")))
        .and(body_json(json!({"os-volume_upload_image": {"image_name": "vmi-x-d1-image", "disk_format": "qcow2", "container_format": "bare", "force": false}})))
        .respond_with(ResponseTemplate::new(202).set_body_json(json!({"os-volume_upload_image": {
            "id": "782223c0-5c64-4e37-920a-215e990511e3", "status": "uploading", "image_id": "76f92c93-c776-476b-9b46-26b776b38a79",
            "container_format": "bare", "disk_format": "qcow2", "image_name": "vmi-x-d1-image"}})))
        .mount(&cloud.server)
        .await;

    let api = cloud.client();
    let v = api.get_volume(vol).await.unwrap().unwrap();
    assert_eq!(v.status, VolumeStatus::InUse);
    assert!(!v.bootable);
    assert_eq!(v.attachments[0].device.as_deref(), Some("/dev/sdb"));
    let q = api.get_volume_quota(PROJECT).await.unwrap();
    assert_eq!(q.get("snapshots").unwrap().room(), Some(10));
    assert_eq!(q.get("volumes_nfs1").unwrap().room(), None);
    let meta: BTreeMap<String, String> =
        [("vm-import:import".to_owned(), "default/x".to_owned())].into();
    let snap = api
        .create_snapshot(vol, "vmi-x-d1-snap", &meta)
        .await
        .unwrap();
    assert_eq!(snap.status, SnapshotStatus::Creating);
    api.delete_snapshot("gone").await.unwrap();
    let tmp = api
        .create_volume_from_snapshot(&snap.id, "vmi-x-d1-vol", 1, &meta)
        .await
        .unwrap();
    assert_eq!(tmp.status, VolumeStatus::Creating);
    let image = api
        .upload_volume_to_image(&tmp.id, "vmi-x-d1-image", "qcow2")
        .await
        .unwrap();
    assert_eq!(image, "76f92c93-c776-476b-9b46-26b776b38a79");
}

#[tokio::test]
async fn images_list_with_glance_paging_and_download_with_ranges() {
    let cloud = FixtureCloud::start().await;
    let id = "c79c98fe-8565-46d4-a342-c341df53735d";
    Mock::given(method("GET"))
        .and(path("/image/v2/images"))
        .and(query_param("marker", "m1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"images": [image_json("i2", "vmi-x", "active")], "schema": "/v2/schemas/images", "first": "/v2/images?name=vmi-x"})))
        .mount(&cloud.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/image/v2/images"))
        .and(query_param("name", "vmi-x"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"images": [image_json("i1", "vmi-x", "queued")], "next": "/v2/images?name=vmi-x&marker=m1"})))
        .mount(&cloud.server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/image/v2/images/{id}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(image_json(
            id,
            "vmi-cirros",
            "active",
        )))
        .mount(&cloud.server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/image/v2/images/{id}/file")))
        .and(header("Range", "bytes=4-"))
        .respond_with(
            ResponseTemplate::new(206)
                .insert_header("Content-Type", "application/octet-stream")
                .insert_header("Content-Range", "bytes 4-9/10")
                .set_body_bytes(b"456789".to_vec()),
        )
        .mount(&cloud.server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/image/v2/images/{id}/file")))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("Content-Type", "application/octet-stream")
                .insert_header("Content-Md5", "781e5e245d69b566979b86e28d23f2c7")
                .set_body_bytes(b"0123456789".to_vec()),
        )
        .mount(&cloud.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/image/v2/images/queued/file"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&cloud.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/image/v2/images/errpage/file"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw(b"{\"error\": \"x\"}".to_vec(), "application/json"),
        )
        .mount(&cloud.server)
        .await;

    let api = cloud.client();
    let list = api.list_images_by_name("vmi-x").await.unwrap();
    assert_eq!(
        list.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        ["i1", "i2"]
    );
    let image = api.get_image(id).await.unwrap().unwrap();
    assert_eq!(image.status, ImageStatus::Active);
    assert_eq!(image.property("hw_disk_bus"), Some("scsi"));

    let collect = |d: vmi_openstack::api::Download| async move {
        let mut out = Vec::new();
        let mut body = d.body;
        while let Some(chunk) = body.next().await {
            out.extend_from_slice(&chunk.unwrap());
        }
        out
    };
    let full = api.download_image(id, 0).await.unwrap();
    assert_eq!((full.start, full.total), (0, Some(10)));
    assert_eq!(collect(full).await, b"0123456789");
    let part = api.download_image(id, 4).await.unwrap();
    assert_eq!((part.start, part.total), (4, Some(10)));
    assert_eq!(collect(part).await, b"456789");

    let err = api.download_image("queued", 0).await.unwrap_err();
    assert!(err.to_string().contains("has no data yet"), "{err}");
    let err = api.download_image("errpage", 0).await.unwrap_err();
    assert!(err.to_string().contains("error page"), "{err}");
}

#[tokio::test]
async fn server_actions_stop_and_create_image() {
    let cloud = FixtureCloud::start().await;
    Mock::given(method("POST"))
        .and(path(format!("/compute/v2.1/servers/{SERVER}/action")))
        .and(body_json(json!({"os-stop": null})))
        .respond_with(ResponseTemplate::new(202))
        .expect(1)
        .mount(&cloud.server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("/compute/v2.1/servers/{SERVER}/action")))
        .and(body_partial_json(
            json!({"createImage": {"name": "vmi-x-d0-image"}}),
        ))
        .respond_with(
            ResponseTemplate::new(202)
                .set_body_json(json!({"image_id": "aaa9c313-ca54-4e10-9c1c-31a77517b75d"})),
        )
        .mount(&cloud.server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/compute/v2.1/servers/{SERVER}/os-volume_attachments")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"volumeAttachments": [
            {"id": "c8eedc25", "volumeId": "c8eedc25", "serverId": SERVER, "device": "/dev/sda", "tag": null, "delete_on_termination": true},
            {"id": "274a2b0f", "volumeId": "274a2b0f", "serverId": SERVER, "device": "/dev/sdb", "tag": null, "delete_on_termination": false}
        ]})))
        .mount(&cloud.server)
        .await;
    let api = cloud.client();
    api.stop_server(SERVER).await.unwrap();
    let image = api
        .create_server_image(SERVER, "vmi-x-d0-image", &BTreeMap::new())
        .await
        .unwrap();
    assert_eq!(image, "aaa9c313-ca54-4e10-9c1c-31a77517b75d");
    let att = api.list_volume_attachments(SERVER).await.unwrap();
    assert_eq!(att[1].device.as_deref(), Some("/dev/sdb"));
}

#[tokio::test]
async fn an_unreachable_endpoint_is_a_connect_error_naming_the_url() {
    let cloud = FixtureCloud::start().await;
    let mut cfg = cloud.config();
    // A port nothing listens on (bound then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    cfg.auth_url = format!("http://127.0.0.1:{port}/v3");
    let options = vmi_openstack::session::SessionOptions {
        backoff: std::time::Duration::from_millis(1),
        ..Default::default()
    };
    let api = vmi_openstack::HttpOpenstack::new(cfg, options).unwrap();
    let err = api.authenticate().await.unwrap_err();
    assert!(matches!(err, OpenstackError::Connect { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&format!("127.0.0.1:{port}/v3/auth/tokens")) && text.contains("refused"),
        "{text}"
    );
}
