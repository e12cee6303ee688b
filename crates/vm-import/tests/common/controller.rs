//! A harness for black-box tests of `vm-import controller`: the real binary against the fake
//! Kubernetes API (crates/vmi-fake-kube), with a small actor that plays Harvester's image
//! controller (downloads the served URL, checks the SHA-512, sets `Imported=True`) and KubeVirt
//! (marks the VM ready). The local OpenStack cloud is optional (OVA sources need none).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, CustomResourceExt, ResourceExt};
use serde_json::{Value, json};
use sha2::Digest;
use vmi_api::{OpenstackSource, OvaSource, VirtualMachineImport, VmwareSource};
use vmi_fake_kube::FakeKube;

use super::cloud::Cloud;

pub const NS: &str = "default";

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn image_ar() -> kube::api::ApiResource {
    vmi_controller::kubeapi::image_resource()
}

pub fn vm_ar() -> kube::api::ApiResource {
    vmi_controller::kubeapi::vm_resource()
}

/// A CRD that keeps whatever it is given, with a status subresource (for the kinds of
/// Harvester, KubeVirt and Multus the controller uses).
pub fn open_crd(group: &str, version: &str, kind: &str, plural: &str) -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{group}")},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": plural, "singular": kind.to_lowercase(), "kind": kind, "listKind": format!("{kind}List")},
            "versions": [{
                "name": version, "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}
            }]
        }
    }))
    .unwrap()
}

/// What the test actor saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// (image name, url, checksum matched, bytes)
    pub downloads: Vec<(String, String, bool, u64)>,
    pub vms_made_ready: Vec<String>,
}

/// Plays Harvester's image controller and KubeVirt.
pub fn start_actor(client: Client, seen: Arc<Mutex<Seen>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let images: Api<DynamicObject> = Api::all_with(client.clone(), &image_ar());
        let vms: Api<DynamicObject> = Api::all_with(client.clone(), &vm_ar());
        let http = reqwest::Client::new();
        let mut done: BTreeSet<String> = BTreeSet::new();
        loop {
            if let Ok(list) = images.list(&ListParams::default()).await {
                for img in list {
                    let key = format!("{}/{}", img.uid().unwrap_or_default(), img.name_any());
                    if done.contains(&key) {
                        continue;
                    }
                    done.insert(key);
                    let url = img.data["spec"]["url"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    let want = img.data["spec"]["checksum"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    let (ok, size, virtual_size) = match http.get(&url).send().await {
                        Ok(r) if r.status().is_success() => {
                            let mut h = sha2::Sha512::new();
                            let mut n = 0u64;
                            let mut head = Vec::new();
                            let mut body = r.bytes_stream();
                            while let Some(Ok(chunk)) = body.next().await {
                                if head.len() < 32 {
                                    head.extend_from_slice(&chunk[..chunk.len().min(32)]);
                                }
                                n += chunk.len() as u64;
                                h.update(&chunk);
                            }
                            let vsize = if head.starts_with(b"QFI\xfb") && head.len() >= 32 {
                                u64::from_be_bytes(head[24..32].try_into().unwrap())
                            } else {
                                n
                            };
                            (hex::encode(h.finalize()) == want, n, vsize)
                        }
                        _ => (false, 0, 0),
                    };
                    seen.lock()
                        .unwrap()
                        .downloads
                        .push((img.name_any(), url, ok, size));
                    let status = if ok {
                        json!({"status": {"progress": 100, "size": size, "virtualSize": virtual_size,
                            "storageClassName": format!("longhorn-{}", img.name_any()),
                            "conditions": [
                                {"type": "Initialized", "status": "True", "reason": "Initialized"},
                                {"type": "Imported", "status": "True", "reason": "Imported"},
                                {"type": "RetryLimitExceeded", "status": "False"}]}})
                    } else {
                        json!({"status": {"failed": 4, "conditions": [
                            {"type": "Imported", "status": "False", "message": "failed due to error: checksum mismatch"},
                            {"type": "RetryLimitExceeded", "status": "True", "message": "retry attempted 4/3"}]}})
                    };
                    let api: Api<DynamicObject> = Api::namespaced_with(
                        client.clone(),
                        &img.namespace().unwrap_or_default(),
                        &image_ar(),
                    );
                    let _ = api
                        .patch_status(
                            &img.name_any(),
                            &PatchParams::default(),
                            &Patch::Merge(status),
                        )
                        .await;
                }
            }
            if let Ok(list) = vms.list(&ListParams::default()).await {
                for vm in list {
                    if vm.data["status"]["ready"] == true {
                        continue;
                    }
                    let api: Api<DynamicObject> = Api::namespaced_with(
                        client.clone(),
                        &vm.namespace().unwrap_or_default(),
                        &vm_ar(),
                    );
                    let ready = json!({"status": {"created": true, "ready": true, "printableStatus": "Running"}});
                    if api
                        .patch_status(
                            &vm.name_any(),
                            &PatchParams::default(),
                            &Patch::Merge(ready),
                        )
                        .await
                        .is_ok()
                    {
                        seen.lock().unwrap().vms_made_ready.push(vm.name_any());
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

pub struct Harness {
    pub kube: FakeKube,
    pub client: Client,
    pub dir: tempfile::TempDir,
    pub controller: Option<Child>,
    pub disk_port: u16,
    pub metrics_port: u16,
    pub seen: Arc<Mutex<Seen>>,
    pub actor: tokio::task::JoinHandle<()>,
    pub cloud: Option<Cloud>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.actor.abort();
        if let Some(mut c) = self.controller.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Harness {
    /// With the local OpenStack cloud (the test needs it up and seeded).
    pub async fn start() -> Harness {
        Self::start_with(Some(Cloud::load())).await
    }

    /// Without a cloud (OVA sources).
    pub async fn start_without_cloud() -> Harness {
        Self::start_with(None).await
    }

    pub fn cloud(&self) -> &Cloud {
        self.cloud
            .as_ref()
            .expect("this harness was started without the cloud")
    }

    async fn start_with(cloud: Option<Cloud>) -> Harness {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let kube = FakeKube::start().await;
        let client = kube.client();
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        for crd in [
            OpenstackSource::crd(),
            OvaSource::crd(),
            VmwareSource::crd(),
            VirtualMachineImport::crd(),
            open_crd(
                "harvesterhci.io",
                "v1beta1",
                "VirtualMachineImage",
                "virtualmachineimages",
            ),
            open_crd("kubevirt.io", "v1", "VirtualMachine", "virtualmachines"),
            open_crd(
                "k8s.cni.cncf.io",
                "v1",
                "NetworkAttachmentDefinition",
                "network-attachment-definitions",
            ),
        ] {
            crds.create(&PostParams::default(), &crd).await.unwrap();
        }
        let seen = Arc::new(Mutex::new(Seen::default()));
        let actor = start_actor(client.clone(), seen.clone());
        let mut h = Harness {
            kube,
            client,
            dir: tempfile::tempdir().unwrap(),
            controller: None,
            disk_port: free_port(),
            metrics_port: free_port(),
            seen,
            actor,
            cloud,
        };
        h.start_controller();
        h
    }

    pub fn scratch(&self) -> PathBuf {
        self.dir.path().join("scratch")
    }

    pub fn start_controller(&mut self) {
        let child = self.spawn_controller(
            "test-controller",
            &self.scratch(),
            self.disk_port,
            self.metrics_port,
            "controller.log",
        );
        self.controller = Some(child);
    }

    /// Another replica of the controller on the same API (its own scratch folder, ports and
    /// log file in the harness's folder). The caller owns the process.
    pub fn spawn_controller(
        &self,
        identity: &str,
        scratch: &std::path::Path,
        disk_port: u16,
        metrics_port: u16,
        log_name: &str,
    ) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(log_name))
            .unwrap();
        Command::new(env!("CARGO_BIN_EXE_vm-import"))
            .arg("controller")
            .arg("--kubeconfig")
            .arg(self.kube.kubeconfig_path())
            .arg("--scratch-dir")
            .arg(scratch)
            .args(["--disk-server-bind", &format!("127.0.0.1:{disk_port}")])
            .args([
                "--disk-server-url",
                &format!("http://127.0.0.1:{disk_port}"),
            ])
            .args(["--metrics-bind", &format!("127.0.0.1:{metrics_port}")])
            .args(["--lease-namespace", NS, "--identity", identity])
            .args([
                "--lease-duration-seconds",
                "3",
                "--source-resync-seconds",
                "10",
                "--progress-interval-seconds",
                "1",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    /// SIGKILL: no cleanup, no lease release.
    pub fn kill_controller(&mut self) {
        if let Some(mut c) = self.controller.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("controller.log")).unwrap_or_default()
    }

    pub async fn nads(&self, names: &[&str]) {
        let ar = vmi_controller::kubeapi::nad_resource();
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), NS, &ar);
        for n in names {
            let obj: DynamicObject = serde_json::from_value(json!({
                "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
                "metadata": {"name": n, "namespace": NS},
                "spec": {"config": "{}"}
            }))
            .unwrap();
            api.create(&PostParams::default(), &obj).await.unwrap();
        }
    }

    /// The Secret `<name>-credentials` holding `data` (as `stringData`).
    async fn credentials(&self, name: &str, data: &[(&str, &str)]) -> Value {
        let data: BTreeMap<String, String> = data
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        let s: Secret = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": format!("{name}-credentials"), "namespace": NS},
            "stringData": data
        }))
        .unwrap();
        Api::<Secret>::namespaced(self.client.clone(), NS)
            .create(&PostParams::default(), &s)
            .await
            .unwrap();
        json!({"name": format!("{name}-credentials"), "namespace": NS})
    }

    /// An OpenstackSource of the local cloud with a Secret of `secret`.
    pub async fn source(&self, name: &str, secret: &[(&str, &str)]) {
        let credentials = self.credentials(name, secret).await;
        let src: OpenstackSource = serde_json::from_value(json!({
            "apiVersion": "migration.harvesterhci.io/v1beta1", "kind": "OpenstackSource",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"endpoint": self.cloud().auth_url(), "region": "RegionOne",
                     "credentials": credentials}
        }))
        .unwrap();
        Api::<OpenstackSource>::namespaced(self.client.clone(), NS)
            .create(&PostParams::default(), &src)
            .await
            .unwrap();
    }

    /// An OvaSource of `url`, with a Secret `<name>-credentials` of `secret` when given.
    pub async fn ova_source(&self, name: &str, url: &str, secret: Option<&[(&str, &str)]>) {
        let mut spec = json!({"url": url, "httpTimeoutSeconds": 30});
        if let Some(secret) = secret {
            spec["credentials"] = self.credentials(name, secret).await;
        }
        let src: OvaSource = serde_json::from_value(json!({
            "apiVersion": "migration.harvesterhci.io/v1beta1", "kind": "OvaSource",
            "metadata": {"name": name, "namespace": NS},
            "spec": spec
        }))
        .unwrap();
        Api::<OvaSource>::namespaced(self.client.clone(), NS)
            .create(&PostParams::default(), &src)
            .await
            .unwrap();
    }

    /// Waits until the OvaSource `name` has `status.status == want`; returns its
    /// `ClusterReady` condition (reason, message).
    pub async fn wait_ova_source(&self, name: &str, want: &str) -> (String, String) {
        let api = Api::<OvaSource>::namespaced(self.client.clone(), NS);
        let start = Instant::now();
        loop {
            let src = api.get(name).await.unwrap();
            let st = src.status.clone().unwrap_or_default();
            let status = st.status.map(|s| {
                serde_json::to_value(s)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_owned()
            });
            if status.as_deref() == Some(want) {
                let c = st
                    .conditions
                    .iter()
                    .find(|c| c.type_ == "ClusterReady")
                    .unwrap();
                return (
                    c.reason.clone().unwrap_or_default(),
                    c.message.clone().unwrap_or_default(),
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "OvaSource {name}: not {want}: {st:?}\n{}",
                tail(&self.log(), 30)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn import(&self, name: &str, source: &str, vm: &str, mapping: &[(&str, &str)]) {
        self.import_from(name, "OpenstackSource", source, vm, mapping)
            .await;
    }

    pub async fn import_from(
        &self,
        name: &str,
        kind: &str,
        source: &str,
        vm: &str,
        mapping: &[(&str, &str)],
    ) {
        let mapping: Vec<Value> = mapping
            .iter()
            .map(|(s, d)| json!({"sourceNetwork": s, "destinationNetwork": d}))
            .collect();
        let i: VirtualMachineImport = serde_json::from_value(json!({
            "apiVersion": "migration.harvesterhci.io/v1beta1", "kind": "VirtualMachineImport",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"virtualMachineName": vm, "networkMapping": mapping,
                     "sourceCluster": {"name": source, "namespace": NS, "kind": kind,
                                       "apiVersion": "migration.harvesterhci.io/v1beta1"}}
        }))
        .unwrap();
        self.imports()
            .create(&PostParams::default(), &i)
            .await
            .unwrap();
    }

    pub fn imports(&self) -> Api<VirtualMachineImport> {
        Api::namespaced(self.client.clone(), NS)
    }

    /// Waits until the import satisfies `pred`; fails with the status and the log.
    pub async fn wait_import(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&VirtualMachineImport) -> bool,
    ) -> VirtualMachineImport {
        let start = Instant::now();
        loop {
            if let Ok(Some(i)) = self.imports().get_opt(name).await
                && pred(&i)
            {
                return i;
            }
            let failed = matches!(
                self.import_status(name).await.as_deref(),
                Some("VMMigrationFailed" | "diskImageFailed")
            ) && !what.contains("failed");
            if failed || start.elapsed() > timeout {
                let i = self.imports().get_opt(name).await.ok().flatten();
                panic!(
                    "import {name}: not {what} after {timeout:?}\nstatus: {}\n--- controller log (tail) ---\n{}",
                    serde_json::to_string_pretty(&i.and_then(|i| i.status)).unwrap(),
                    tail(&self.log(), 40)
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    pub async fn import_status(&self, name: &str) -> Option<String> {
        self.imports()
            .get_opt(name)
            .await
            .ok()
            .flatten()
            .and_then(|i| i.status)
            .and_then(|s| s.import_status)
            .map(|s| {
                serde_json::to_value(s)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
    }

    pub async fn events_for(&self, name: &str) -> Vec<(String, String, String)> {
        let api: Api<k8s_openapi::api::events::v1::Event> = Api::all(self.client.clone());
        api.list(&ListParams::default())
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .map(|e| {
                (
                    e.type_.unwrap_or_default(),
                    e.reason.unwrap_or_default(),
                    e.note.unwrap_or_default(),
                )
            })
            .collect()
    }

    pub fn demo_api(&self) -> vmi_openstack::HttpOpenstack {
        let text = std::fs::read_to_string(self.cloud().clouds_yaml()).unwrap();
        let cfg = vmi_openstack::config::from_clouds_yaml(
            "clouds.yaml",
            &text,
            None,
            "vmi-demo",
            &|_| Err("no".into()),
        )
        .unwrap();
        vmi_openstack::HttpOpenstack::new(cfg, Default::default()).unwrap()
    }

    /// Resources named after import `name` of server `server_id` that exist on the cloud.
    pub async fn leftovers(&self, name: &str, server_id: &str, disks: usize) -> Vec<String> {
        let api = self.demo_api();
        let prefix = vmi_openstack::export::name_prefix(&format!("{NS}/{name}"), server_id);
        super::cloud::leftovers(&api, &prefix, disks).await
    }

    pub fn scratch_files(&self) -> Vec<String> {
        let mut out = Vec::new();
        let root = self.scratch().join("imports");
        if let Ok(rd) = std::fs::read_dir(&root) {
            for d in rd.flatten() {
                out.push(d.path().display().to_string());
                if let Ok(rd2) = std::fs::read_dir(d.path().join("disks")) {
                    for f in rd2.flatten() {
                        out.push(f.path().display().to_string());
                    }
                }
            }
        }
        out
    }
}

/// Whether the import's `status.importStatus` is `want` (its upstream spelling).
pub fn status_is(i: &VirtualMachineImport, want: &str) -> bool {
    i.status
        .as_ref()
        .and_then(|s| s.import_status)
        .is_some_and(|s| serde_json::to_value(s).unwrap() == want)
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
