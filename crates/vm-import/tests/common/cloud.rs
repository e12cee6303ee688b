//! The local OpenStack cloud of `scripts/openstack-cloud`: where it is and what `seed` made.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::pedantic
)]

use serde_json::Value;
use std::path::PathBuf;

/// Reason given to `#[ignore]` on every test that needs the cloud; `scripts/test` runs them.
pub const NEEDS_CLOUD: &str =
    "needs the local OpenStack cloud: scripts/openstack-cloud up && scripts/openstack-cloud seed";

pub struct Cloud {
    pub home: PathBuf,
    pub seed: Value,
}

impl Cloud {
    /// Loads `$VMI_CLOUD_HOME/seed.json` (default /var/tmp/vmi-cloud). Panics with what to do
    /// when the cloud is not there: a test that needs it must fail, not pass.
    pub fn load() -> Cloud {
        let home = PathBuf::from(
            std::env::var("VMI_CLOUD_HOME").unwrap_or_else(|_| "/var/tmp/vmi-cloud".into()),
        );
        let seed_path = home.join("seed.json");
        let text = std::fs::read_to_string(&seed_path)
            .unwrap_or_else(|e| panic!("{}: {e}. {NEEDS_CLOUD}", seed_path.display()));
        Cloud {
            home,
            seed: serde_json::from_str(&text).unwrap(),
        }
    }

    pub fn auth_url(&self) -> String {
        self.seed["cloud"]["auth_url"].as_str().unwrap().to_owned()
    }

    pub fn clouds_yaml(&self) -> String {
        self.home.join("clouds.yaml").to_string_lossy().into_owned()
    }

    pub fn server(&self, name: &str) -> &Value {
        &self.seed["servers"][name][0]
    }

    pub fn server_id(&self, name: &str) -> String {
        self.server(name)["id"].as_str().unwrap().to_owned()
    }

    pub fn network_ids(&self, name: &str) -> Vec<String> {
        self.seed["networks"][name]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    }

    pub fn log(&self, service: &str) -> PathBuf {
        self.home.join("logs").join(format!("{service}.log"))
    }
}

pub const DEMO: &[(&str, &str)] = &[
    ("username", "demo"),
    ("password", "vmi-demo-pass"),
    ("project_name", "demo"),
    ("domain_name", "Default"),
];

/// The temporary resources (snapshots, volumes, images) of the first `disks` disks of the
/// import whose deterministic names start with `prefix` that still exist on the cloud.
pub async fn leftovers(
    api: &vmi_openstack::HttpOpenstack,
    prefix: &str,
    disks: usize,
) -> Vec<String> {
    use vmi_openstack::OpenstackApi;
    let mut left = Vec::new();
    for i in 0..disks {
        for s in api
            .list_snapshots_by_name(&format!("{prefix}-d{i}-snap"))
            .await
            .unwrap()
        {
            left.push(format!("snapshot {} ({})", s.id, s.status));
        }
        for v in api
            .list_volumes_by_name(&format!("{prefix}-d{i}-vol"))
            .await
            .unwrap()
        {
            left.push(format!("volume {} ({})", v.id, v.status));
        }
        for im in api
            .list_images_by_name(&format!("{prefix}-d{i}-img"))
            .await
            .unwrap()
        {
            left.push(format!("image {} ({})", im.id, im.status));
        }
    }
    left
}
