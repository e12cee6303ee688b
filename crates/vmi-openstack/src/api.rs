//! The OpenStack operations vm-import needs, as a trait: the preflight and export logic is
//! written against it and never sees HTTP. [`crate::client::HttpOpenstack`] implements it over
//! the real APIs; tests may implement it in memory.

use std::collections::BTreeMap;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use crate::error::OpenstackError;
use crate::wire::{Image, Network, Port, Server, Snapshot, Volume, VolumeAttachment, VolumeQuota};

pub type Result<T> = std::result::Result<T, OpenstackError>;

/// Who is logged in, and what the catalog offers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthInfo {
    pub user_name: String,
    pub project_id: String,
    pub project_name: String,
    /// Catalog service types that have an endpoint for the configured region and interface.
    pub services: Vec<String>,
    /// The region in use, if one was configured.
    pub region: Option<String>,
    /// The negotiated Nova microversion, e.g. "2.79".
    pub compute_microversion: Option<String>,
}

/// Which networks to list: by any of these names, or any of these ids.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetworkQuery {
    pub names: Vec<String>,
    pub ids: Vec<String>,
}

/// A ranged image download.
pub struct Download {
    /// Offset of the first byte of `body` (0 when the server ignored the range).
    pub start: u64,
    /// Total size of the image when the server said (Content-Length / Content-Range).
    pub total: Option<u64>,
    pub body: BoxStream<'static, Result<Bytes>>,
}

impl std::fmt::Debug for Download {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Download")
            .field("start", &self.start)
            .field("total", &self.total)
            .finish_non_exhaustive()
    }
}

/// The OpenStack calls vm-import makes. Names and metadata of temporary resources are chosen
/// by the caller so that they are deterministic.
#[async_trait]
pub trait OpenstackApi: Send + Sync {
    /// Logs in (if not yet) and describes the session.
    async fn authenticate(&self) -> Result<AuthInfo>;
    /// Requests sent so far, for `--verbose` and the request-budget test.
    fn request_count(&self) -> u64;
    /// The `X-OpenStack-Request-ID` every request carries, when there is one.
    fn global_request_id(&self) -> Option<String> {
        None
    }

    // Compute
    async fn get_server(&self, id: &str) -> Result<Option<Server>>;
    /// Servers whose name is exactly `name` (case-sensitive).
    async fn find_servers_by_name(&self, name: &str) -> Result<Vec<Server>>;
    /// Servers whose name matches `name` case-insensitively or partially (Nova's own filter),
    /// for "did you mean" hints.
    async fn find_servers_like(&self, name: &str) -> Result<Vec<Server>>;
    async fn list_volume_attachments(&self, server_id: &str) -> Result<Vec<VolumeAttachment>>;
    /// Flavor details, for clouds older than microversion 2.47.
    async fn get_flavor(&self, id: &str) -> Result<crate::wire::Flavor>;
    async fn stop_server(&self, id: &str) -> Result<()>;
    /// `createImage`; returns the new image's id.
    async fn create_server_image(
        &self,
        server_id: &str,
        name: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<String>;

    // Network
    async fn list_server_ports(&self, server_id: &str) -> Result<Vec<Port>>;
    async fn list_networks(&self, query: &NetworkQuery) -> Result<Vec<Network>>;

    // Block storage
    async fn get_volume(&self, id: &str) -> Result<Option<Volume>>;
    async fn list_volumes_by_name(&self, name: &str) -> Result<Vec<Volume>>;
    async fn create_volume_from_snapshot(
        &self,
        snapshot_id: &str,
        name: &str,
        size_gib: u64,
        metadata: &BTreeMap<String, String>,
    ) -> Result<Volume>;
    async fn delete_volume(&self, id: &str) -> Result<()>;
    /// `os-volume_upload_image`; returns the new image's id.
    async fn upload_volume_to_image(
        &self,
        volume_id: &str,
        image_name: &str,
        disk_format: &str,
    ) -> Result<String>;
    async fn get_snapshot(&self, id: &str) -> Result<Option<Snapshot>>;
    async fn list_snapshots_by_name(&self, name: &str) -> Result<Vec<Snapshot>>;
    async fn create_snapshot(
        &self,
        volume_id: &str,
        name: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<Snapshot>;
    async fn delete_snapshot(&self, id: &str) -> Result<()>;
    async fn get_volume_quota(&self, project_id: &str) -> Result<VolumeQuota>;

    // Image
    async fn get_image(&self, id: &str) -> Result<Option<Image>>;
    async fn list_images_by_name(&self, name: &str) -> Result<Vec<Image>>;
    async fn delete_image(&self, id: &str) -> Result<()>;
    /// Streams the image data from byte `offset`.
    async fn download_image(&self, id: &str, offset: u64) -> Result<Download>;
}
