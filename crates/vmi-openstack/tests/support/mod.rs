//! A fixture cloud on wiremock: Keystone, Nova, Neutron, Cinder and Glance under one mock
//! server, answering with bodies shaped like the captures of real Zed services in
//! /work/shared/reference/openstack-zed-api-samples.txt.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::pedantic
)]

use serde_json::{Value, json};
use vmi_api::EndpointInterface;
use vmi_core::Sensitive;
use vmi_openstack::HttpOpenstack;
use vmi_openstack::config::{
    CloudConfig, Credentials, DomainRef, ProjectScope, TlsOptions, UserRef,
};
use vmi_openstack::session::SessionOptions;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

pub const PROJECT: &str = "fad1a5d4f4064c009c4f367272663298";
pub const TOKEN: &str = "gAAAAAB-fixture-token";

pub struct FixtureCloud {
    pub server: MockServer,
}

impl FixtureCloud {
    /// A cloud with Keystone and the Nova version document mounted.
    pub async fn start() -> Self {
        let server = MockServer::start().await;
        let cloud = Self { server };
        cloud.mount_login(TOKEN).await;
        Mock::given(method("GET"))
            .and(path("/compute/v2.1/"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "version": {"id": "v2.1", "status": "CURRENT", "version": "2.93", "min_version": "2.1",
                            "updated": "2013-07-23T11:33:21Z"}
            })))
            .mount(&cloud.server)
            .await;
        cloud
    }

    pub fn uri(&self) -> String {
        self.server.uri()
    }

    pub fn catalog(&self) -> Value {
        let u = self.uri();
        let ep = |url: String| {
            json!([
                {"interface": "public", "region": "RegionOne", "region_id": "RegionOne", "url": url.clone()},
                {"interface": "internal", "region": "RegionOne", "region_id": "RegionOne", "url": url}
            ])
        };
        json!([
            {"type": "identity", "name": "keystone", "endpoints": ep(format!("{u}/identity/v3/"))},
            {"type": "compute", "name": "nova", "endpoints": ep(format!("{u}/compute/v2.1"))},
            {"type": "network", "name": "neutron", "endpoints": ep(format!("{u}/network"))},
            {"type": "image", "name": "glance", "endpoints": ep(format!("{u}/image"))},
            {"type": "volumev3", "name": "cinderv3", "endpoints": ep(format!("{u}/volume/v3/{PROJECT}"))},
            {"type": "placement", "name": "placement", "endpoints": ep(format!("{u}/placement"))}
        ])
    }

    pub async fn mount_login(&self, token: &str) {
        Mock::given(method("POST"))
            .and(path("/identity/v3/auth/tokens"))
            .respond_with(
                ResponseTemplate::new(201)
                    .insert_header("X-Subject-Token", token)
                    .insert_header("x-openstack-request-id", "req-keystone-1")
                    .set_body_json(json!({"token": {
                        "methods": ["password"],
                        "expires_at": "2099-11-28T02:36:33.000000Z",
                        "user": {"id": "u1", "name": "demo", "domain": {"id": "default", "name": "Default"}},
                        "project": {"id": PROJECT, "name": "demo", "domain": {"id": "default", "name": "Default"}},
                        "roles": [{"name": "reader"}, {"name": "member"}],
                        "catalog": self.catalog()
                    }})),
            )
            .mount(&self.server)
            .await;
    }

    pub fn config(&self) -> CloudConfig {
        CloudConfig {
            auth_url: format!("{}/identity", self.uri()),
            region: Some("RegionOne".into()),
            interface: EndpointInterface::Public,
            credentials: Credentials::Password {
                user: UserRef::Name {
                    name: "demo".into(),
                    domain: DomainRef::Name("Default".into()),
                },
                password: Sensitive::new("vmi-demo-pass"),
                project: ProjectScope::Name {
                    name: "demo".into(),
                    domain: DomainRef::Name("Default".into()),
                },
            },
            tls: TlsOptions::default(),
            origin: "fixture".into(),
        }
    }

    pub fn client(&self) -> HttpOpenstack {
        let options = SessionOptions {
            backoff: std::time::Duration::from_millis(5),
            ..SessionOptions::default()
        };
        HttpOpenstack::new(self.config(), options).unwrap()
    }

    pub async fn received_paths(&self) -> Vec<String> {
        self.server
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .map(|r| format!("{} {}", r.method, r.url.path()))
            .collect()
    }
}

/// A server as `GET /servers/detail` answers at microversion 2.79 (from the Zed captures).
pub fn server_json(id: &str, name: &str, status: &str) -> Value {
    json!({
        "id": id,
        "name": name,
        "status": status,
        "description": "Boot-from-volume test server",
        "tenant_id": PROJECT,
        "OS-EXT-STS:vm_state": if status == "SHUTOFF" { "stopped" } else { "active" },
        "OS-EXT-STS:task_state": null,
        "OS-EXT-STS:power_state": 1,
        "image": "",
        "flavor": {"vcpus": 2, "ram": 1536, "disk": 1, "ephemeral": 0, "swap": 0,
                   "original_name": "vmi.small", "extra_specs": {}},
        "addresses": {
            "vmi-net-a": [
                {"version": 4, "addr": "10.20.0.201", "OS-EXT-IPS:type": "fixed", "OS-EXT-IPS-MAC:mac_addr": "fa:16:3e:00:38:9a"},
                {"version": 4, "addr": "10.20.0.202", "OS-EXT-IPS:type": "fixed", "OS-EXT-IPS-MAC:mac_addr": "fa:16:3e:00:38:9b"}
            ],
            "vmi-net-b": [
                {"version": 4, "addr": "10.30.0.10", "OS-EXT-IPS:type": "fixed", "OS-EXT-IPS-MAC:mac_addr": "fa:16:3e:6d:98:15"}
            ]
        },
        "os-extended-volumes:volumes_attached": [
            {"id": "c8eedc25-4cf1-4071-85a6-bbb15e4d9eca", "delete_on_termination": true},
            {"id": "274a2b0f-f67b-4eb3-9fb6-2ca068c5de6a", "delete_on_termination": false}
        ],
        "metadata": {},
        "fault": null
    })
}

pub fn port_json(id: &str, network_id: &str, mac: &str, server: &str) -> Value {
    json!({
        "id": id, "name": "", "network_id": network_id, "mac_address": mac,
        "device_id": server, "device_owner": "compute:nova", "status": "ACTIVE",
        "fixed_ips": [{"subnet_id": "749ba867-012a-48c3-ba88-fb78ca3351ee", "ip_address": "10.10.0.144"}],
        "created_at": "2026-11-28T01:36:40Z", "binding:vif_type": "ovs"
    })
}

pub fn network_json(id: &str, name: &str) -> Value {
    json!({"id": id, "name": name, "shared": false, "status": "ACTIVE", "tenant_id": PROJECT,
           "project_id": PROJECT, "subnets": ["dab367d5-5902-4e59-8ebb-7627acb33ac2"],
           "provider:network_type": "vxlan", "mtu": 1450})
}

pub fn volume_json(id: &str, status: &str, bootable: bool, device: &str, server: &str) -> Value {
    json!({
        "id": id, "name": "", "status": status, "size": 1, "bootable": if bootable { "true" } else { "false" },
        "encrypted": false, "multiattach": false, "volume_type": "nfs1",
        "attachments": [{"id": id, "attachment_id": "1c47a03d-2df6-4a0f-b75d-fa4a4347b561", "volume_id": id,
                         "server_id": server, "host_name": null, "device": device,
                         "attached_at": "2026-11-28T01:37:58.000000"}],
        "volume_image_metadata": if bootable { json!({"image_id": "c79c98fe-8565-46d4-a342-c341df53735d",
                                                       "hw_firmware_type": "uefi", "disk_format": "qcow2",
                                                       "checksum": "98ea004c5fa8542c3c47169e3eb6e050"}) } else { json!({}) },
        "metadata": {}
    })
}

pub fn quota_json() -> Value {
    json!({"quota_set": {
        "id": PROJECT,
        "volumes": {"limit": 10, "in_use": 3, "reserved": 0, "allocated": 0},
        "snapshots": {"limit": 10, "in_use": 0, "reserved": 0, "allocated": 0},
        "gigabytes": {"limit": 1000, "in_use": 3, "reserved": 0, "allocated": 0},
        "volumes_nfs1": {"limit": -1, "in_use": 3, "reserved": 0, "allocated": 0},
        "backups": {"limit": 10, "in_use": 0, "reserved": 0, "allocated": 0},
        "per_volume_gigabytes": {"limit": -1, "in_use": 0, "reserved": 0, "allocated": 0},
        "groups": {"limit": 10, "in_use": 0, "reserved": 0, "allocated": 0}
    }})
}

pub fn image_json(id: &str, name: &str, status: &str) -> Value {
    json!({
        "id": id, "name": name, "status": status, "size": 4521984, "virtual_size": 67108864,
        "checksum": "98ea004c5fa8542c3c47169e3eb6e050", "os_hash_algo": "sha512",
        "os_hash_value": "5b630f0002f7be44e6e488239fa5a93dfd547fa0d192407157f80db620d33dbfff47990b8e723d7af24cce7e6816fec016de8dd1bf901d44aeca5de5e488fb3c",
        "disk_format": "qcow2", "container_format": "bare", "visibility": "shared", "protected": false,
        "hw_firmware_type": "uefi", "hw_disk_bus": "scsi", "hw_vif_model": "e1000", "os_distro": "cirros",
        "min_ram": 64, "stores": "fs", "tags": [], "file": format!("/v2/images/{id}/file"), "schema": "/v2/schemas/image"
    })
}
