//! Exporting disks out of OpenStack, as an explicit per-disk step machine.
//!
//! A volume disk goes snapshot (force) → volume from snapshot → upload to Glance → download; the
//! root disk of an image-booted server goes createImage → download. Every temporary resource
//! gets a deterministic name (import identity + disk index + kind) and is **recorded before
//! anything waits on it**: [`advance`] records the name and returns, the caller persists, the
//! next call creates the resource (or adopts one of that name left by a crashed run) and records
//! its id, and only later calls poll it. Cleanup works from that record alone, after success,
//! failure or cancellation, and also when a run crashed between a create and its recording.
//!
//! [`advance`] does at most one mutating call per invocation and never sleeps: it returns
//! [`Advance::Wait`] and the caller decides how to wait (the CLI sleeps, the controller
//! requeues). The download itself is the caller's, between [`Advance::Download`] and
//! [`download_done`].

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{debug, info};

use crate::api::OpenstackApi;
use crate::error::OpenstackError;
use crate::wire::{ImageStatus, ServerStatus, SnapshotStatus, VolumeStatus};

/// Metadata key set on every temporary snapshot, volume and server image: the import it belongs
/// to. (Nova accepts only `[a-zA-Z0-9-_:. ]` in metadata keys: no `/`.)
pub const IMPORT_METADATA_KEY: &str = "vm-import:import";
/// Metadata key with the disk index.
pub const DISK_METADATA_KEY: &str = "vm-import:disk";

/// The kinds of temporary resources.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub enum ResourceKind {
    Snapshot,
    Volume,
    Image,
}

impl ResourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Snapshot => "snapshot",
            ResourceKind::Volume => "volume",
            ResourceKind::Image => "image",
        }
    }
}

/// Life of a temporary resource, as recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ResourceState {
    /// The name is recorded; the create call may or may not have happened.
    Intended,
    /// Created, id known.
    Created,
    /// Deletion requested.
    Deleting,
    /// Confirmed gone.
    Deleted,
}

/// A temporary resource on the source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tracked {
    pub kind: ResourceKind,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub state: ResourceState,
}

impl Tracked {
    fn intended(kind: ResourceKind, name: String) -> Self {
        Self {
            kind,
            name,
            id: None,
            state: ResourceState::Intended,
        }
    }

    /// Still possibly present on the source.
    pub fn is_live(&self) -> bool {
        self.state != ResourceState::Deleted
    }

    pub fn describe(&self) -> String {
        match &self.id {
            Some(id) => format!("{} {} ({id})", self.kind.as_str(), self.name),
            None => format!("{} {}", self.kind.as_str(), self.name),
        }
    }
}

/// What a disk is exported from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ExportSource {
    Volume {
        volume_id: String,
        size_gib: u64,
    },
    ServerImage {
        server_id: String,
    },
    /// Nothing to export on a cloud: the disk is a file of the source (an OVA's `href`), in
    /// `format` (a qemu-img format name).
    Local {
        file_name: String,
        format: String,
    },
}

/// The step a disk is at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ExportStep {
    CreateSnapshot,
    AwaitSnapshot,
    CreateVolume,
    AwaitVolume,
    UploadImage,
    CreateServerImage,
    AwaitImage,
    /// The image is active: download it (the caller's job).
    Download,
    /// Downloaded and verified: remove the temporary resources.
    Cleanup,
    Done,
}

/// The Glance image to download, as recorded when it became active.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageFacts {
    pub id: String,
    pub disk_format: String,
    pub size: u64,
    /// `(algorithm, hex)`: Glance's `os_hash_algo`/`os_hash_value`, else `md5`/`checksum`.
    pub digest: Option<(String, String)>,
}

/// One disk's export, persisted between steps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskExport {
    /// Position in boot order.
    pub index: usize,
    pub source: ExportSource,
    pub step: ExportStep,
    /// Unix time at which the current waiting step began (bounds the wait across restarts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_since: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<Tracked>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<Tracked>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<Tracked>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_facts: Option<ImageFacts>,
    /// Resources of this disk's names found besides the recorded ones (from crashed runs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub strays: Vec<Tracked>,
}

impl DiskExport {
    pub fn new(index: usize, source: ExportSource) -> Self {
        let step = match source {
            ExportSource::Volume { .. } => ExportStep::CreateSnapshot,
            ExportSource::ServerImage { .. } => ExportStep::CreateServerImage,
            ExportSource::Local { .. } => ExportStep::Done,
        };
        Self {
            index,
            source,
            step,
            waiting_since: None,
            snapshot: None,
            volume: None,
            image: None,
            image_facts: None,
            strays: Vec::new(),
        }
    }

    /// Every temporary resource this disk has recorded.
    pub fn resources(&self) -> impl Iterator<Item = &Tracked> {
        self.snapshot
            .iter()
            .chain(self.volume.iter())
            .chain(self.image.iter())
            .chain(self.strays.iter())
    }

    /// Back to the first step, forgetting deleted resources (after a failed run was cleaned up).
    pub fn restart(&mut self) {
        let fresh = DiskExport::new(self.index, self.source.clone());
        let strays: Vec<Tracked> = self.resources().filter(|t| t.is_live()).cloned().collect();
        *self = DiskExport { strays, ..fresh };
    }
}

/// Settings of an export.
#[derive(Clone, Debug)]
pub struct ExportContext {
    /// Deterministic prefix of every temporary resource name, e.g. `vm-import-web-3f2a1c`.
    pub name_prefix: String,
    /// `namespace/name` of the import, put in resource metadata.
    pub import_key: String,
    /// Disk format of the Glance upload of volumes: `qcow2` (only allocated data) or `raw`.
    pub upload_format: String,
    /// Longest wait for a snapshot or volume to become available.
    pub resource_timeout: Duration,
    /// Longest wait for an image to become active.
    pub image_timeout: Duration,
    /// Poll interval.
    pub poll: Duration,
}

impl ExportContext {
    pub fn resource_name(&self, index: usize, kind: ResourceKind) -> String {
        let suffix = match kind {
            ResourceKind::Snapshot => "snap",
            ResourceKind::Volume => "vol",
            ResourceKind::Image => "img",
        };
        format!("{}-d{index}-{suffix}", self.name_prefix)
    }

    fn metadata(&self, index: usize) -> BTreeMap<String, String> {
        BTreeMap::from([
            (IMPORT_METADATA_KEY.to_owned(), self.import_key.clone()),
            (DISK_METADATA_KEY.to_owned(), index.to_string()),
        ])
    }
}

/// The deterministic name prefix of an import's temporary resources: readable, and unique per
/// import and server.
pub fn name_prefix(import_key: &str, server_id: &str) -> String {
    // FNV-1a: stable across runs and platforms (std's DefaultHasher is not guaranteed to be).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in import_key.bytes().chain([0]).chain(server_id.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let name = import_key.rsplit('/').next().unwrap_or(import_key);
    let name: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(30)
        .collect();
    format!("vm-import-{name}-{:08x}", h & 0xffff_ffff)
}

/// What the caller does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Advance {
    /// The state changed: persist it, then call again.
    Persist,
    /// Nothing to do until later: persist, wait this long, call again.
    Wait(Duration),
    /// The image is active: download it, then call [`download_done`].
    Download,
    /// The disk is exported and its temporary resources are gone.
    Done,
}

/// Why a disk's export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("disk {index} ({what}): {error}")]
    Api {
        index: usize,
        what: String,
        error: Box<OpenstackError>,
    },
    #[error(
        "disk {index}: {resource} went to status '{status}'{detail}; it is removed by the cleanup; check the cloud's {service} logs for the cause"
    )]
    BadState {
        index: usize,
        resource: String,
        status: String,
        detail: String,
        service: &'static str,
    },
    #[error(
        "disk {index}: {resource} is still '{status}' after {waited_secs} s (limit {limit_secs} s); it is removed by the cleanup"
    )]
    Timeout {
        index: usize,
        resource: String,
        status: String,
        waited_secs: u64,
        limit_secs: u64,
    },
    #[error("disk {index}: {resource} disappeared while it was being waited on")]
    Vanished { index: usize, resource: String },
    #[error(
        "disk {index}: the recorded state is inconsistent ({detail}); run `vm-import import --cleanup` and start again"
    )]
    Corrupt { index: usize, detail: String },
}

impl ExportError {
    /// Worth retrying the same step later (a timeout of the API, a 503).
    pub fn is_transient(&self) -> bool {
        matches!(self, ExportError::Api { error, .. } if error.is_transient())
    }

    pub fn reason(&self) -> &'static str {
        match self {
            ExportError::Api { error, .. } => error.reason(),
            ExportError::BadState { .. } => "ResourceFailed",
            ExportError::Timeout { .. } => "ResourceTimeout",
            ExportError::Vanished { .. } => "ResourceVanished",
            ExportError::Corrupt { .. } => "CorruptState",
        }
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Advances `disk` by at most one mutating call.
// A dispatch over the steps: each arm is a few lines or a call; splitting it would only move
// the match elsewhere.
#[allow(clippy::too_many_lines)]
pub async fn advance(
    api: &dyn OpenstackApi,
    disk: &mut DiskExport,
    ctx: &ExportContext,
) -> Result<Advance, ExportError> {
    let index = disk.index;
    let metadata = ctx.metadata(index);
    match disk.step {
        ExportStep::CreateSnapshot => {
            let ExportSource::Volume { volume_id, .. } = disk.source.clone() else {
                return Err(corrupt(disk, "step of another source kind"));
            };
            let name = ctx.resource_name(index, ResourceKind::Snapshot);
            create_or_adopt(
                disk,
                Slot::Snapshot,
                name,
                ExportStep::AwaitSnapshot,
                "creating a snapshot (force)",
                async |name| {
                    let found = api.list_snapshots_by_name(name).await?;
                    Ok(found
                        .into_iter()
                        .map(|s| (s.volume_id == volume_id, s.id))
                        .collect())
                },
                async |name| Ok(api.create_snapshot(&volume_id, name, &metadata).await?.id),
            )
            .await
        }
        ExportStep::AwaitSnapshot => {
            let t = tracked(disk.snapshot.as_ref(), disk)?;
            let status = api
                .get_snapshot(t.id.as_deref().unwrap_or_default())
                .await
                .map_err(|e| api_error(index, "reading the snapshot", e))?
                .map(|s| s.status);
            match status {
                Some(SnapshotStatus::Available) => Ok(next(disk, ExportStep::CreateVolume)),
                Some(s @ (SnapshotStatus::Error | SnapshotStatus::ErrorDeleting)) => {
                    Err(bad_state(index, &t, s.as_str(), "cinder-volume"))
                }
                Some(other) => wait(
                    disk,
                    ctx.resource_timeout,
                    ctx.poll,
                    &t.describe(),
                    other.as_str(),
                ),
                None => Err(ExportError::Vanished {
                    index,
                    resource: t.describe(),
                }),
            }
        }
        ExportStep::CreateVolume => {
            let ExportSource::Volume { size_gib, .. } = disk.source.clone() else {
                return Err(corrupt(disk, "step of another source kind"));
            };
            let snapshot_id = tracked(disk.snapshot.as_ref(), disk)?
                .id
                .unwrap_or_default();
            let name = ctx.resource_name(index, ResourceKind::Volume);
            create_or_adopt(
                disk,
                Slot::Volume,
                name,
                ExportStep::AwaitVolume,
                "creating a volume from the snapshot",
                async |name| {
                    let found = api.list_volumes_by_name(name).await?;
                    Ok(found
                        .into_iter()
                        .map(|v| (v.snapshot_id.as_deref() == Some(snapshot_id.as_str()), v.id))
                        .collect())
                },
                async |name| {
                    Ok(api
                        .create_volume_from_snapshot(&snapshot_id, name, size_gib, &metadata)
                        .await?
                        .id)
                },
            )
            .await
        }
        ExportStep::AwaitVolume => {
            let t = tracked(disk.volume.as_ref(), disk)?;
            let status = api
                .get_volume(t.id.as_deref().unwrap_or_default())
                .await
                .map_err(|e| api_error(index, "reading the temporary volume", e))?
                .map(|v| v.status);
            match status {
                Some(VolumeStatus::Available) => {
                    // The snapshot has served its purpose: release it while the volume
                    // uploads. Backends whose volumes depend on their snapshot refuse (400)
                    // until the volume is gone; the release during the download retries.
                    release_early(api, disk.snapshot.as_mut(), "snapshot").await;
                    Ok(next(disk, ExportStep::UploadImage))
                }
                Some(s @ (VolumeStatus::Error | VolumeStatus::ErrorRestoring)) => {
                    Err(bad_state(index, &t, s.as_str(), "cinder-volume"))
                }
                Some(other) => wait(
                    disk,
                    ctx.resource_timeout,
                    ctx.poll,
                    &t.describe(),
                    other.as_str(),
                ),
                None => Err(ExportError::Vanished {
                    index,
                    resource: t.describe(),
                }),
            }
        }
        ExportStep::UploadImage => {
            let volume_id = tracked(disk.volume.as_ref(), disk)?.id.unwrap_or_default();
            let name = ctx.resource_name(index, ResourceKind::Image);
            create_or_adopt(
                disk,
                Slot::Image,
                name,
                ExportStep::AwaitImage,
                "uploading the temporary volume to Glance",
                async |name| {
                    Ok(api
                        .list_images_by_name(name)
                        .await?
                        .into_iter()
                        .map(|i| (true, i.id))
                        .collect())
                },
                async |name| {
                    api.upload_volume_to_image(&volume_id, name, &ctx.upload_format)
                        .await
                },
            )
            .await
        }
        ExportStep::CreateServerImage => {
            let ExportSource::ServerImage { server_id } = disk.source.clone() else {
                return Err(corrupt(disk, "step of another source kind"));
            };
            let name = ctx.resource_name(index, ResourceKind::Image);
            create_or_adopt(
                disk,
                Slot::Image,
                name,
                ExportStep::AwaitImage,
                "creating a server image (createImage)",
                async |name| {
                    Ok(api
                        .list_images_by_name(name)
                        .await?
                        .into_iter()
                        .map(|i| (true, i.id))
                        .collect())
                },
                async |name| api.create_server_image(&server_id, name, &metadata).await,
            )
            .await
        }
        ExportStep::AwaitImage => await_image(api, disk, ctx).await,
        ExportStep::Download => Ok(Advance::Download),
        ExportStep::Cleanup => match cleanup_step(api, disk, ctx.poll)
            .await
            .map_err(|e| api_error(index, "removing temporary resources", e))?
        {
            Some(wait) => Ok(Advance::Wait(wait)),
            None => Ok(next(disk, ExportStep::Done)),
        },
        ExportStep::Done => Ok(Advance::Done),
    }
}

/// Which recorded resource a step creates.
#[derive(Clone, Copy)]
enum Slot {
    Snapshot,
    Volume,
    Image,
}

impl Slot {
    fn kind(self) -> ResourceKind {
        match self {
            Slot::Snapshot => ResourceKind::Snapshot,
            Slot::Volume => ResourceKind::Volume,
            Slot::Image => ResourceKind::Image,
        }
    }

    fn get(self, disk: &mut DiskExport) -> &mut Option<Tracked> {
        match self {
            Slot::Snapshot => &mut disk.snapshot,
            Slot::Volume => &mut disk.volume,
            Slot::Image => &mut disk.image,
        }
    }
}

/// The create steps, one call per invocation: record the deterministic name (persisted before
/// anything else); then adopt a resource of that name left by a crashed run (`list` gives
/// `(matches, id)`), or create one; record its id and move to `then`.
async fn create_or_adopt(
    disk: &mut DiskExport,
    slot: Slot,
    name: String,
    then: ExportStep,
    what: &str,
    list: impl AsyncFnOnce(&str) -> Result<Vec<(bool, String)>, OpenstackError>,
    create: impl AsyncFnOnce(&str) -> Result<String, OpenstackError>,
) -> Result<Advance, ExportError> {
    let index = disk.index;
    let kind = slot.kind();
    let Some(t) = slot.get(disk).clone() else {
        *slot.get(disk) = Some(Tracked::intended(kind, name));
        return Ok(Advance::Persist);
    };
    if t.id.is_none() {
        let found = list(&t.name)
            .await
            .map_err(|e| api_error(index, &format!("listing {}s", kind.as_str()), e))?;
        let mut chosen = None;
        for (matches, id) in found {
            if chosen.is_none() && matches {
                info!(disk = index, resource = %id, "adopting the {} of an earlier run", kind.as_str());
                chosen = Some(id);
            } else if !disk
                .strays
                .iter()
                .any(|s| s.id.as_deref() == Some(id.as_str()))
            {
                disk.strays.push(Tracked {
                    kind,
                    name: t.name.clone(),
                    id: Some(id),
                    state: ResourceState::Created,
                });
            }
        }
        let id = match chosen {
            Some(id) => id,
            None => create(&t.name)
                .await
                .map_err(|e| api_error(index, what, e))?,
        };
        *slot.get(disk) = Some(Tracked {
            id: Some(id),
            state: ResourceState::Created,
            ..t
        });
    }
    Ok(next(disk, then))
}

/// Waits for the image to become active, records what the download needs, and starts deleting
/// the temporary volume: the image is independent of it now, and it is then gone (its quota
/// free) by the end of the download.
async fn await_image(
    api: &dyn OpenstackApi,
    disk: &mut DiskExport,
    ctx: &ExportContext,
) -> Result<Advance, ExportError> {
    let index = disk.index;
    let t = tracked(disk.image.as_ref(), disk)?;
    let Some(i) = api
        .get_image(t.id.as_deref().unwrap_or_default())
        .await
        .map_err(|e| api_error(index, "reading the image", e))?
    else {
        return Err(ExportError::Vanished {
            index,
            resource: t.describe(),
        });
    };
    match i.status {
        ImageStatus::Active => {
            let digest = match (
                i.os_hash_algo.clone(),
                i.os_hash_value.clone(),
                i.checksum.clone(),
            ) {
                (Some(a), Some(v), _) if !v.is_empty() => Some((a, v)),
                (_, _, Some(md5)) if !md5.is_empty() => Some(("md5".to_owned(), md5)),
                _ => None,
            };
            disk.image_facts = Some(ImageFacts {
                id: i.id.clone(),
                disk_format: i
                    .disk_format
                    .clone()
                    .unwrap_or_else(|| ctx.upload_format.clone()),
                size: i.size.unwrap_or(0),
                digest,
            });
            // The image is independent of the temporary volume now. Glance may report it
            // active a moment before Cinder puts the volume back to `available`; then the
            // release during the download (or the cleanup) deletes it.
            release_early(api, disk.volume.as_mut(), "volume").await;
            release_early(api, disk.snapshot.as_mut(), "snapshot").await;
            Ok(next(disk, ExportStep::Download))
        }
        ImageStatus::Killed
        | ImageStatus::Deleted
        | ImageStatus::PendingDelete
        | ImageStatus::Deactivated => {
            let service = if matches!(disk.source, ExportSource::Volume { .. }) {
                "cinder-volume and glance-api"
            } else {
                "nova-compute and glance-api"
            };
            Err(bad_state(index, &t, i.status.as_str(), service))
        }
        other => wait(
            disk,
            ctx.image_timeout,
            ctx.poll,
            &t.describe(),
            other.as_str(),
        ),
    }
}

fn api_error(index: usize, what: &str, error: OpenstackError) -> ExportError {
    ExportError::Api {
        index,
        what: what.to_owned(),
        error: Box::new(error),
    }
}

fn bad_state(index: usize, t: &Tracked, status: &str, service: &'static str) -> ExportError {
    ExportError::BadState {
        index,
        resource: t.describe(),
        status: status.to_owned(),
        detail: String::new(),
        service,
    }
}

fn next(disk: &mut DiskExport, step: ExportStep) -> Advance {
    enter(disk, step);
    Advance::Persist
}

/// Records that the download of `disk` is complete and verified.
pub fn download_done(disk: &mut DiskExport) {
    if disk.step == ExportStep::Download {
        enter(disk, ExportStep::Cleanup);
    }
}

/// One round of cleanup of `disk`'s resources, in dependency order: the image, then the volume
/// (made from the snapshot), then the snapshot once the volume is gone. Returns `Some(wait)`
/// while something is still being deleted, `None` when everything recorded is gone.
pub async fn cleanup_step(
    api: &dyn OpenstackApi,
    disk: &mut DiskExport,
    poll: Duration,
) -> Result<Option<Duration>, OpenstackError> {
    delete_in_order(api, disk, true, poll).await
}

/// Like [`cleanup_step`] but keeps the image: releases the temporary volume and snapshot while
/// the image is being downloaded.
pub async fn release_step(
    api: &dyn OpenstackApi,
    disk: &mut DiskExport,
    poll: Duration,
) -> Result<Option<Duration>, OpenstackError> {
    delete_in_order(api, disk, false, poll).await
}

async fn delete_in_order(
    api: &dyn OpenstackApi,
    disk: &mut DiskExport,
    images: bool,
    poll: Duration,
) -> Result<Option<Duration>, OpenstackError> {
    let mut pending = false;
    let of_kind = |k: ResourceKind| move |t: &&mut Tracked| t.kind == k;
    if images {
        // Images first: nothing depends on them.
        for t in disk
            .image
            .iter_mut()
            .chain(disk.strays.iter_mut().filter(of_kind(ResourceKind::Image)))
        {
            pending |= delete_round(api, t).await?;
        }
    }
    for t in disk
        .volume
        .iter_mut()
        .chain(disk.strays.iter_mut().filter(of_kind(ResourceKind::Volume)))
    {
        pending |= delete_round(api, t).await?;
    }
    // Snapshots after the volumes made from them: backends whose volumes depend on their
    // snapshot refuse (400) until the volume is gone, and `delete_round` then retries.
    for t in disk.snapshot.iter_mut().chain(
        disk.strays
            .iter_mut()
            .filter(of_kind(ResourceKind::Snapshot)),
    ) {
        pending |= delete_round(api, t).await?;
    }
    Ok(pending.then_some(poll))
}

/// Asks for the deletion of a resource that is no longer needed, without waiting; a refusal
/// (the resource is still busy, or others depend on it) leaves it to the cleanup.
async fn release_early(api: &dyn OpenstackApi, t: Option<&mut Tracked>, what: &str) {
    let Some(t) = t.filter(|t| t.state == ResourceState::Created) else {
        return;
    };
    let Some(id) = t.id.clone() else { return };
    let result = match t.kind {
        ResourceKind::Snapshot => api.delete_snapshot(&id).await,
        ResourceKind::Volume => api.delete_volume(&id).await,
        ResourceKind::Image => api.delete_image(&id).await,
    };
    match result {
        Ok(()) => t.state = ResourceState::Deleting,
        Err(e) => debug!(resource = %t.describe(), error = %e, "temporary {what} not released yet"),
    }
}

/// Deletes `t` if it exists; returns whether it is still there. A resource recorded only by name
/// (the create may have happened before a crash) is looked up by that name first.
async fn delete_round(api: &dyn OpenstackApi, t: &mut Tracked) -> Result<bool, OpenstackError> {
    if t.state == ResourceState::Deleted {
        return Ok(false);
    }
    if t.id.is_none() {
        let ids: Vec<String> = match t.kind {
            ResourceKind::Snapshot => api
                .list_snapshots_by_name(&t.name)
                .await?
                .into_iter()
                .map(|s| s.id)
                .collect(),
            ResourceKind::Volume => api
                .list_volumes_by_name(&t.name)
                .await?
                .into_iter()
                .map(|v| v.id)
                .collect(),
            ResourceKind::Image => api
                .list_images_by_name(&t.name)
                .await?
                .into_iter()
                .map(|i| i.id)
                .collect(),
        };
        if let Some(id) = ids.into_iter().next() {
            t.id = Some(id);
        } else {
            t.state = ResourceState::Deleted;
            return Ok(false);
        }
    }
    let id = t.id.clone().unwrap_or_default();
    let status: Option<String> = match t.kind {
        ResourceKind::Snapshot => api.get_snapshot(&id).await?.map(|s| s.status.to_string()),
        ResourceKind::Volume => api.get_volume(&id).await?.map(|v| v.status.to_string()),
        ResourceKind::Image => api.get_image(&id).await?.map(|i| i.status.to_string()),
    };
    let Some(status) = status else {
        debug!(resource = %t.describe(), "gone");
        t.state = ResourceState::Deleted;
        return Ok(false);
    };
    // Glance keeps deleted images readable by id with status `deleted` on some deployments.
    if t.kind == ResourceKind::Image && status == "deleted" {
        t.state = ResourceState::Deleted;
        return Ok(false);
    }
    let busy = matches!(
        status.as_str(),
        "deleting"
            | "creating"
            | "uploading"
            | "attaching"
            | "detaching"
            | "saving"
            | "queued"
            | "importing"
    );
    if t.state == ResourceState::Deleting && status == "deleting" {
        return Ok(true);
    }
    if busy && t.state != ResourceState::Deleting && t.kind != ResourceKind::Image {
        // Cinder refuses to delete a volume or snapshot that is still being created or uploaded.
        return Ok(true);
    }
    let deleted = match t.kind {
        ResourceKind::Snapshot => api.delete_snapshot(&id).await,
        ResourceKind::Volume => api.delete_volume(&id).await,
        ResourceKind::Image => api.delete_image(&id).await,
    };
    match deleted {
        Ok(()) => {}
        // Busy, or something still depends on it: try again next round.
        Err(e) if matches!(e.status(), Some(400 | 409)) => {
            debug!(resource = %t.describe(), error = %e, "not deletable yet");
            return Ok(true);
        }
        Err(e) => return Err(e),
    }
    t.state = ResourceState::Deleting;
    info!(resource = %t.describe(), "deleting");
    Ok(true)
}

fn enter(disk: &mut DiskExport, step: ExportStep) {
    disk.step = step;
    disk.waiting_since = None;
}

fn wait(
    disk: &mut DiskExport,
    limit: Duration,
    poll: Duration,
    resource: &str,
    status: &str,
) -> Result<Advance, ExportError> {
    let now = now_secs();
    let since = *disk.waiting_since.get_or_insert(now);
    let waited = now.saturating_sub(since);
    if waited > limit.as_secs() {
        return Err(ExportError::Timeout {
            index: disk.index,
            resource: resource.to_owned(),
            status: status.to_owned(),
            waited_secs: waited,
            limit_secs: limit.as_secs(),
        });
    }
    Ok(Advance::Wait(poll))
}

fn tracked(t: Option<&Tracked>, disk: &DiskExport) -> Result<Tracked, ExportError> {
    t.filter(|t| t.id.is_some())
        .cloned()
        .ok_or_else(|| corrupt(disk, "the resource of this step has no recorded id"))
}

fn corrupt(disk: &DiskExport, detail: &str) -> ExportError {
    ExportError::Corrupt {
        index: disk.index,
        detail: format!("step {:?}: {detail}", disk.step),
    }
}

/// Power state handling of the source server before the export.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PowerOff {
    /// The server was running when the import found it.
    pub was_active: bool,
    /// `os-stop` was sent.
    pub stop_requested: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_since: Option<u64>,
}

/// Stops the server (`os-stop`) and waits for `SHUTOFF`, one call at a time.
pub async fn advance_power_off(
    api: &dyn OpenstackApi,
    server_id: &str,
    state: &mut PowerOff,
    timeout: Duration,
    poll: Duration,
) -> Result<Advance, OpenstackError> {
    let server = api
        .get_server(server_id)
        .await?
        .ok_or_else(|| OpenstackError::State {
            what: format!("server {server_id}"),
            detail: "was deleted during the import".into(),
        })?;
    match server.status {
        ServerStatus::Shutoff if server.task_state.is_none() => Ok(Advance::Done),
        ServerStatus::Active if !state.stop_requested => {
            state.was_active = true;
            match api.stop_server(server_id).await {
                Ok(()) => {}
                // 409: another stop is under way; keep waiting for it.
                Err(e) if e.status() == Some(409) => {}
                Err(e) => return Err(e),
            }
            state.stop_requested = true;
            state.waiting_since = Some(now_secs());
            Ok(Advance::Persist)
        }
        ServerStatus::Error => Err(OpenstackError::State {
            what: format!("server {} ({server_id})", server.name),
            detail: "went to ERROR while stopping; check nova-compute's log".into(),
        }),
        ref status => {
            let since = *state.waiting_since.get_or_insert(now_secs());
            let waited = now_secs().saturating_sub(since);
            if waited > timeout.as_secs() {
                return Err(OpenstackError::State {
                    what: format!("server {} ({server_id})", server.name),
                    detail: format!(
                        "still {status} (task {}) {waited} s after os-stop (limit {} s); raise gracefulShutdownTimeoutSeconds or stop it by hand",
                        server.task_state.as_deref().unwrap_or("none"),
                        timeout.as_secs()
                    ),
                });
            }
            Ok(Advance::Wait(poll))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_deterministic_and_readable() {
        let a = name_prefix("default/web", "7828dc7f-9cc6-4c0f-8776-7070e38af7f2");
        assert_eq!(
            a,
            name_prefix("default/web", "7828dc7f-9cc6-4c0f-8776-7070e38af7f2")
        );
        assert!(a.starts_with("vm-import-web-"), "{a}");
        assert_ne!(
            a,
            name_prefix("other/web", "7828dc7f-9cc6-4c0f-8776-7070e38af7f2")
        );
        let ctx = ExportContext {
            name_prefix: a.clone(),
            import_key: "default/web".into(),
            upload_format: "qcow2".into(),
            resource_timeout: Duration::from_secs(1),
            image_timeout: Duration::from_secs(1),
            poll: Duration::from_secs(1),
        };
        assert_eq!(
            ctx.resource_name(1, ResourceKind::Snapshot),
            format!("{a}-d1-snap")
        );
    }

    #[test]
    fn a_restarted_disk_keeps_live_resources_as_strays() {
        let mut d = DiskExport::new(
            0,
            ExportSource::Volume {
                volume_id: "v".into(),
                size_gib: 1,
            },
        );
        d.snapshot = Some(Tracked {
            kind: ResourceKind::Snapshot,
            name: "s".into(),
            id: Some("1".into()),
            state: ResourceState::Deleted,
        });
        d.volume = Some(Tracked {
            kind: ResourceKind::Volume,
            name: "v".into(),
            id: Some("2".into()),
            state: ResourceState::Deleting,
        });
        d.step = ExportStep::Download;
        d.restart();
        assert_eq!(d.step, ExportStep::CreateSnapshot);
        assert!(d.snapshot.is_none());
        assert_eq!(d.strays.len(), 1);
        assert_eq!(d.strays[0].id.as_deref(), Some("2"));
    }
}
