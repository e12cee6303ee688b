//! An in-memory OpenStack for deterministic engine tests: resources change state after a few
//! polls, a run can be "killed" right after any mutating call (the call's effect happens, its
//! answer never arrives), and downloads can be cut.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::pedantic
)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::json;
use vmi_openstack::api::{AuthInfo, Download, NetworkQuery, OpenstackApi, Result};
use vmi_openstack::error::{OpenstackError, RequestLine};
use vmi_openstack::wire::*;

pub const SERVER: &str = "11111111-2222-3333-4444-555555555555";
const POLLS: u32 = 2;

#[derive(Clone)]
struct Res<T> {
    obj: T,
    data: Arc<Vec<u8>>,
    polls: u32,
    ready_status: &'static str,
    deleting: Option<u32>,
}

#[derive(Default)]
struct Inner {
    server_status: String,
    image_booted: bool,
    volumes: BTreeMap<String, Res<Volume>>,
    snapshots: BTreeMap<String, Res<Snapshot>>,
    images: BTreeMap<String, Res<Image>>,
    next: u64,
    mutations: usize,
    created_snapshots: usize,
    created_volumes: usize,
    created_images: usize,
    crash_at: Option<usize>,
    never_active: bool,
    snapshot_error: bool,
}

pub struct FakeCloud {
    inner: Mutex<Inner>,
    pub crashed: tokio::sync::Notify,
    pub cuts: AtomicU32,
    pub cut_after: usize,
    pub root_data: Arc<Vec<u8>>,
    pub data_data: Arc<Vec<u8>>,
}

fn pattern(len: usize, seed: u8, data_len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    let mut x: u32 = u32::from(seed).wrapping_mul(2_654_435_761) | 1;
    for b in v.iter_mut().take(data_len) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = (x >> 24) as u8;
    }
    v
}

fn err(status: u16, msg: &str) -> OpenstackError {
    OpenstackError::Api {
        request: RequestLine {
            method: "FAKE".into(),
            url: "fake".into(),
        },
        status,
        request_id: None,
        message: msg.into(),
    }
}

impl FakeCloud {
    /// A boot-from-volume server with a root and a data volume (1 GiB each, a few MiB of data).
    pub fn boot_from_volume() -> Arc<FakeCloud> {
        Self::new(false)
    }

    /// A server booted from an image (no volumes).
    pub fn image_booted() -> Arc<FakeCloud> {
        Self::new(true)
    }

    fn new(image_booted: bool) -> Arc<FakeCloud> {
        let root = Arc::new(pattern(3 << 20, 1, 1 << 20));
        let data = Arc::new(pattern(4 << 20, 2, 3 << 20));
        let mut inner = Inner {
            server_status: "ACTIVE".into(),
            image_booted,
            ..Inner::default()
        };
        if !image_booted {
            for (id, bootable, dev, d) in [
                ("vol-root", true, "/dev/vda", &root),
                ("vol-data", false, "/dev/vdb", &data),
            ] {
                let v: Volume = serde_json::from_value(json!({
                    "id": id, "name": id, "status": "in-use", "size": 1, "bootable": bootable.to_string(),
                    "volume_type": "nfs1",
                    "attachments": [{"server_id": SERVER, "device": dev}],
                    "volume_image_metadata": if bootable { json!({"hw_firmware_type": "uefi", "hw_disk_bus": "scsi", "hw_vif_model": "e1000"}) } else { json!({}) }
                }))
                .unwrap();
                inner.volumes.insert(
                    id.into(),
                    Res {
                        obj: v,
                        data: (*d).clone(),
                        polls: 0,
                        ready_status: "in-use",
                        deleting: None,
                    },
                );
            }
        }
        Arc::new(FakeCloud {
            inner: Mutex::new(inner),
            crashed: tokio::sync::Notify::new(),
            cuts: AtomicU32::new(0),
            cut_after: 1 << 20,
            root_data: root,
            data_data: data,
        })
    }

    pub fn crash_at(&self, n: Option<usize>) {
        self.inner.lock().unwrap().crash_at = n;
    }
    pub fn never_active(&self) {
        self.inner.lock().unwrap().never_active = true;
    }
    pub fn snapshot_error(&self) {
        self.inner.lock().unwrap().snapshot_error = true;
    }
    pub fn mutations(&self) -> usize {
        self.inner.lock().unwrap().mutations
    }
    pub fn created(&self) -> (usize, usize, usize) {
        let i = self.inner.lock().unwrap();
        (i.created_snapshots, i.created_volumes, i.created_images)
    }
    /// Temporary resources still present (original volumes excluded).
    pub fn leftovers(&self) -> Vec<String> {
        let i = self.inner.lock().unwrap();
        let mut out: Vec<String> = i
            .snapshots
            .keys()
            .map(|k| format!("snapshot {k}"))
            .collect();
        out.extend(
            i.volumes
                .keys()
                .filter(|k| k.starts_with("tmp"))
                .map(|k| format!("volume {k}")),
        );
        out.extend(
            i.images
                .keys()
                .filter(|k| k.starts_with("tmp"))
                .map(|k| format!("image {k}")),
        );
        out
    }
    pub fn server_status(&self) -> String {
        self.inner.lock().unwrap().server_status.clone()
    }

    /// Counts a mutation; at the crash point the effect is done and the caller never hears back.
    async fn mutation(&self) {
        let crash = {
            let mut i = self.inner.lock().unwrap();
            i.mutations += 1;
            i.crash_at == Some(i.mutations)
        };
        if crash {
            self.crashed.notify_one();
            std::future::pending::<()>().await;
        }
    }

    fn id(i: &mut Inner) -> String {
        i.next += 1;
        format!("tmp-{:04}", i.next)
    }

    fn server_json(i: &Inner) -> Server {
        let volumes: Vec<_> = i
            .volumes
            .keys()
            .filter(|k| !k.starts_with("tmp"))
            .map(|k| json!({"id": k}))
            .collect();
        serde_json::from_value(json!({
            "id": SERVER, "name": "web-01", "status": i.server_status, "description": "a web server",
            "image": if i.image_booted { json!({"id": "base-image"}) } else { json!("") },
            "flavor": {"vcpus": 2, "ram": 1536, "disk": 1, "ephemeral": 0, "swap": 0, "extra_specs": {}},
            "addresses": {"net-a": [{"addr": "10.0.0.5", "version": 4, "OS-EXT-IPS-MAC:mac_addr": "fa:16:3e:00:00:01"}]},
            "os-extended-volumes:volumes_attached": volumes
        }))
        .unwrap()
    }

    /// Advances a resource's state by one poll.
    fn poll<T>(r: &mut Res<T>) -> Option<&'static str> {
        if let Some(d) = r.deleting.as_mut() {
            if *d == 0 {
                return None;
            }
            *d -= 1;
            return Some("deleting");
        }
        if r.polls > 0 {
            r.polls -= 1;
            return Some("creating");
        }
        Some(r.ready_status)
    }
}

#[async_trait]
impl OpenstackApi for FakeCloud {
    async fn authenticate(&self) -> Result<AuthInfo> {
        Ok(AuthInfo {
            user_name: "demo".into(),
            project_id: "p".into(),
            project_name: "demo".into(),
            services: vec![
                "compute".into(),
                "network".into(),
                "image".into(),
                "volumev3".into(),
            ],
            region: Some("RegionOne".into()),
            compute_microversion: Some("2.79".into()),
        })
    }
    fn request_count(&self) -> u64 {
        0
    }
    async fn get_server(&self, id: &str) -> Result<Option<Server>> {
        let i = self.inner.lock().unwrap();
        Ok((id == SERVER).then(|| Self::server_json(&i)))
    }
    async fn find_servers_by_name(&self, name: &str) -> Result<Vec<Server>> {
        let i = self.inner.lock().unwrap();
        Ok(if name == "web-01" {
            vec![Self::server_json(&i)]
        } else {
            vec![]
        })
    }
    async fn find_servers_like(&self, _: &str) -> Result<Vec<Server>> {
        Ok(vec![])
    }
    async fn list_volume_attachments(&self, _: &str) -> Result<Vec<VolumeAttachment>> {
        Ok(vec![])
    }
    async fn get_flavor(&self, _: &str) -> Result<Flavor> {
        Err(err(404, "no flavor"))
    }
    async fn stop_server(&self, _: &str) -> Result<()> {
        self.inner.lock().unwrap().server_status = "SHUTOFF".into();
        self.mutation().await;
        Ok(())
    }
    async fn create_server_image(
        &self,
        _: &str,
        name: &str,
        _: &BTreeMap<String, String>,
    ) -> Result<String> {
        let id = {
            let mut i = self.inner.lock().unwrap();
            let id = Self::id(&mut i);
            let img: Image = serde_json::from_value(
                json!({"id": id, "name": name, "status": "queued", "disk_format": "raw"}),
            )
            .unwrap();
            i.images.insert(
                id.clone(),
                Res {
                    obj: img,
                    data: self.root_data.clone(),
                    polls: POLLS,
                    ready_status: "active",
                    deleting: None,
                },
            );
            i.created_images += 1;
            id
        };
        self.mutation().await;
        Ok(id)
    }
    async fn list_server_ports(&self, _: &str) -> Result<Vec<Port>> {
        Ok(vec![serde_json::from_value(json!({"id": "port-1", "network_id": "net-a-id", "mac_address": "fa:16:3e:00:00:01", "device_id": SERVER})).unwrap()])
    }
    async fn list_networks(&self, q: &NetworkQuery) -> Result<Vec<Network>> {
        let net: Network =
            serde_json::from_value(json!({"id": "net-a-id", "name": "net-a"})).unwrap();
        Ok(
            if q.names.iter().any(|n| n == "net-a") || q.ids.iter().any(|n| n == "net-a-id") {
                vec![net]
            } else {
                vec![]
            },
        )
    }
    async fn get_volume(&self, id: &str) -> Result<Option<Volume>> {
        let mut i = self.inner.lock().unwrap();
        let Some(r) = i.volumes.get_mut(id) else {
            return Ok(None);
        };
        match Self::poll(r) {
            None => {
                i.volumes.remove(id);
                Ok(None)
            }
            Some(s) => {
                r.obj.status = VolumeStatus::from(s);
                Ok(Some(r.obj.clone()))
            }
        }
    }
    async fn list_volumes_by_name(&self, name: &str) -> Result<Vec<Volume>> {
        let i = self.inner.lock().unwrap();
        Ok(i.volumes
            .values()
            .filter(|r| r.obj.name.as_deref() == Some(name))
            .map(|r| r.obj.clone())
            .collect())
    }
    async fn create_volume_from_snapshot(
        &self,
        snapshot_id: &str,
        name: &str,
        size: u64,
        _: &BTreeMap<String, String>,
    ) -> Result<Volume> {
        let v = {
            let mut i = self.inner.lock().unwrap();
            let data = i
                .snapshots
                .get(snapshot_id)
                .map(|s| s.data.clone())
                .ok_or_else(|| err(404, "no snapshot"))?;
            let id = Self::id(&mut i);
            let v: Volume = serde_json::from_value(json!({"id": id, "name": name, "status": "creating", "size": size, "snapshot_id": snapshot_id})).unwrap();
            i.volumes.insert(
                id,
                Res {
                    obj: v.clone(),
                    data,
                    polls: POLLS,
                    ready_status: "available",
                    deleting: None,
                },
            );
            i.created_volumes += 1;
            v
        };
        self.mutation().await;
        Ok(v)
    }
    async fn delete_volume(&self, id: &str) -> Result<()> {
        {
            let mut i = self.inner.lock().unwrap();
            if let Some(r) = i.volumes.get_mut(id) {
                r.deleting.get_or_insert(POLLS);
            }
        }
        self.mutation().await;
        Ok(())
    }
    async fn upload_volume_to_image(
        &self,
        volume_id: &str,
        name: &str,
        format: &str,
    ) -> Result<String> {
        let raw = {
            let i = self.inner.lock().unwrap();
            i.volumes
                .get(volume_id)
                .map(|v| v.data.clone())
                .ok_or_else(|| err(404, "no volume"))?
        };
        // Like Cinder: qemu-img converts the volume to the requested format.
        let data = if format == "raw" {
            raw
        } else {
            Arc::new(convert(&raw, format))
        };
        let id = {
            let mut i = self.inner.lock().unwrap();
            let id = Self::id(&mut i);
            let img: Image = serde_json::from_value(
                json!({"id": id, "name": name, "status": "queued", "disk_format": format}),
            )
            .unwrap();
            let never = i.never_active;
            i.images.insert(
                id.clone(),
                Res {
                    obj: img,
                    data,
                    polls: if never { u32::MAX } else { POLLS },
                    ready_status: "active",
                    deleting: None,
                },
            );
            i.created_images += 1;
            id
        };
        self.mutation().await;
        Ok(id)
    }
    async fn get_snapshot(&self, id: &str) -> Result<Option<Snapshot>> {
        let mut i = self.inner.lock().unwrap();
        let error = i.snapshot_error;
        let Some(r) = i.snapshots.get_mut(id) else {
            return Ok(None);
        };
        match Self::poll(r) {
            None => {
                i.snapshots.remove(id);
                Ok(None)
            }
            Some(s) => {
                r.obj.status =
                    SnapshotStatus::from(if error && s != "deleting" { "error" } else { s });
                Ok(Some(r.obj.clone()))
            }
        }
    }
    async fn list_snapshots_by_name(&self, name: &str) -> Result<Vec<Snapshot>> {
        let i = self.inner.lock().unwrap();
        Ok(i.snapshots
            .values()
            .filter(|r| r.obj.name.as_deref() == Some(name))
            .map(|r| r.obj.clone())
            .collect())
    }
    async fn create_snapshot(
        &self,
        volume_id: &str,
        name: &str,
        _: &BTreeMap<String, String>,
    ) -> Result<Snapshot> {
        let s = {
            let mut i = self.inner.lock().unwrap();
            let data = i
                .volumes
                .get(volume_id)
                .map(|v| v.data.clone())
                .ok_or_else(|| err(404, "no volume"))?;
            let id = Self::id(&mut i);
            let s: Snapshot = serde_json::from_value(json!({"id": id, "name": name, "status": "creating", "size": 1, "volume_id": volume_id})).unwrap();
            i.snapshots.insert(
                id,
                Res {
                    obj: s.clone(),
                    data,
                    polls: POLLS,
                    ready_status: "available",
                    deleting: None,
                },
            );
            i.created_snapshots += 1;
            s
        };
        self.mutation().await;
        Ok(s)
    }
    async fn delete_snapshot(&self, id: &str) -> Result<()> {
        {
            let mut i = self.inner.lock().unwrap();
            let dependent = i
                .volumes
                .values()
                .any(|v| v.obj.snapshot_id.as_deref() == Some(id));
            if dependent {
                return Err(err(400, "Invalid snapshot: snapshot has dependent volumes"));
            }
            if let Some(r) = i.snapshots.get_mut(id) {
                r.deleting.get_or_insert(POLLS);
            }
        }
        self.mutation().await;
        Ok(())
    }
    async fn get_volume_quota(&self, _: &str) -> Result<VolumeQuota> {
        Ok(VolumeQuota::default())
    }
    async fn get_image(&self, id: &str) -> Result<Option<Image>> {
        let mut i = self.inner.lock().unwrap();
        let Some(r) = i.images.get_mut(id) else {
            return Ok(None);
        };
        match Self::poll(r) {
            None => {
                i.images.remove(id);
                Ok(None)
            }
            Some(s) => {
                r.obj.status = ImageStatus::from(if s == "creating" { "saving" } else { s });
                if s == "active" {
                    use sha2::Digest;
                    r.obj.size = Some(r.data.len() as u64);
                    r.obj.os_hash_algo = Some("sha512".into());
                    r.obj.os_hash_value = Some(hex::encode(sha2::Sha512::digest(&r.data[..])));
                }
                Ok(Some(r.obj.clone()))
            }
        }
    }
    async fn list_images_by_name(&self, name: &str) -> Result<Vec<Image>> {
        let i = self.inner.lock().unwrap();
        Ok(i.images
            .values()
            .filter(|r| r.obj.name.as_deref() == Some(name))
            .map(|r| r.obj.clone())
            .collect())
    }
    async fn delete_image(&self, id: &str) -> Result<()> {
        {
            let mut i = self.inner.lock().unwrap();
            i.images.remove(id);
        }
        self.mutation().await;
        Ok(())
    }
    async fn download_image(&self, id: &str, offset: u64) -> Result<Download> {
        let data = {
            let i = self.inner.lock().unwrap();
            i.images
                .get(id)
                .map(|r| r.data.clone())
                .ok_or_else(|| err(404, "no image"))?
        };
        let start = usize::try_from(offset).unwrap();
        let cut = self.cuts.load(Ordering::SeqCst) > 0;
        if cut {
            self.cuts.fetch_sub(1, Ordering::SeqCst);
        }
        let end = if cut {
            (start + self.cut_after).min(data.len())
        } else {
            data.len()
        };
        let mut chunks: Vec<Result<Bytes>> = data[start..end]
            .chunks(64 * 1024)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        if cut {
            chunks.push(Err(OpenstackError::Transport {
                request: RequestLine {
                    method: "GET".into(),
                    url: "fake".into(),
                },
                detail: "connection reset by peer".into(),
            }));
        }
        Ok(Download {
            start: offset,
            total: Some(data.len() as u64),
            body: futures::stream::iter(chunks).boxed(),
        })
    }
}

/// Converts raw bytes to `format` with qemu-img.
fn convert(raw: &[u8], format: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let (r, o) = (dir.path().join("v.raw"), dir.path().join("v.out"));
    std::fs::write(&r, raw).unwrap();
    let st = std::process::Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", format])
        .arg(&r)
        .arg(&o)
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::read(o).unwrap()
}

/// The import documents for the fake server.
pub fn request() -> vmi_core::input::ImportRequest {
    let yaml = r#"
apiVersion: migration.harvesterhci.io/v1beta1
kind: VirtualMachineImport
metadata: {name: web, namespace: apps}
spec:
  virtualMachineName: web-01
  networkMapping:
  - {sourceNetwork: net-a, destinationNetwork: apps/vlan-a}
  sourceCluster: {name: cloud, namespace: apps, kind: OpenstackSource}
"#;
    vmi_core::input::parse_documents(yaml)
        .unwrap()
        .into_request(true)
        .unwrap()
}
