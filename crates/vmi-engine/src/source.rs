//! A Glance image as a ranged byte source for the download pipeline.

use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use vmi_disk::download::{RangeSource, RangeStream, SourceError};
use vmi_openstack::OpenstackApi;
use vmi_openstack::error::OpenstackError;

/// Image `id`'s data in Glance.
#[derive(Clone)]
pub struct GlanceImage {
    pub api: Arc<dyn OpenstackApi>,
    pub id: String,
}

impl std::fmt::Debug for GlanceImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GlanceImage")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

fn source_error(e: &OpenstackError) -> SourceError {
    SourceError {
        message: e.to_string(),
        transient: e.is_transient(),
    }
}

#[async_trait]
impl RangeSource for GlanceImage {
    async fn open(&self, offset: u64) -> Result<RangeStream, SourceError> {
        let d = self
            .api
            .download_image(&self.id, offset)
            .await
            .map_err(|e| source_error(&e))?;
        let body = d.body.map(|r| r.map_err(|e| source_error(&e))).boxed();
        Ok(RangeStream {
            start: d.start,
            total: d.total,
            body,
        })
    }

    fn describe(&self) -> String {
        format!("image {} in Glance", self.id)
    }
}
