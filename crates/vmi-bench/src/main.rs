//! The baseline of `scripts/bench-import`: the export pipeline of Harvester's Go
//! vm-import-controller (pkg/source/openstack), reimplemented over the same OpenStack client so
//! that only the pipeline differs from vm-import's:
//!
//! - disks one after another, in the order Nova lists the attached volumes;
//! - each volume: snapshot (force) → volume from snapshot → upload to Glance as **raw** →
//!   **full download with a plain copy** (every byte written, zeros included; no checksum);
//! - the temporary image, volume and snapshot are deleted after each disk.
//!
//! Polling uses the same schedule as vm-import (100 ms doubling to 1 s), so that the figures
//! compare pipelines, not poll intervals (the Go controller polls every 10 s by default).
//!
//! Usage: vmi-bench-baseline CLOUDS_YAML CLOUD SERVER_NAME OUT_DIR

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use vmi_openstack::OpenstackApi;
use vmi_openstack::wire::{ImageStatus, ServerStatus, SnapshotStatus, VolumeStatus};

async fn poll<F, Fut>(what: &str, mut done: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let started = Instant::now();
    let mut wait = Duration::from_millis(100);
    while !done().await? {
        if started.elapsed() > Duration::from_hours(1) {
            bail!("{what}: timed out");
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(1));
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, clouds, cloud, server_name, out] = &args[..] else {
        bail!("usage: vmi-bench-baseline CLOUDS_YAML CLOUD SERVER_NAME OUT_DIR");
    };
    vmi_openstack::tls::install_default_provider();
    let text = std::fs::read_to_string(clouds)?;
    let cfg = vmi_openstack::config::from_clouds_yaml(clouds, &text, None, cloud, &|p| {
        std::fs::read_to_string(p).map_err(|e| e.to_string())
    })?;
    let api =
        vmi_openstack::HttpOpenstack::new(cfg, vmi_openstack::session::SessionOptions::default())?;
    std::fs::create_dir_all(out)?;

    let server = api
        .find_servers_by_name(server_name)
        .await?
        .into_iter()
        .next()
        .context("server not found")?;
    if server.status == ServerStatus::Active {
        api.stop_server(&server.id).await?;
    }
    poll("server stop", || async {
        Ok(api
            .get_server(&server.id)
            .await?
            .is_some_and(|s| s.status == ServerStatus::Shutoff))
    })
    .await?;

    let started = Instant::now();
    let at = |what: &str| eprintln!("[{:7.1}s] {what}", started.elapsed().as_secs_f64());
    let meta = BTreeMap::new();
    let mut total_written = 0u64;
    for (index, attached) in server.volumes_attached.iter().enumerate() {
        let volume = api.get_volume(&attached.id).await?.context("volume")?;
        let name = format!("vmi-bench-baseline-{index}");
        at(&format!("disk {index}: snapshot"));
        let snap = api.create_snapshot(&volume.id, &name, &meta).await?;
        poll("snapshot", || async {
            Ok(api
                .get_snapshot(&snap.id)
                .await?
                .is_some_and(|s| s.status == SnapshotStatus::Available))
        })
        .await?;
        let tmp = api
            .create_volume_from_snapshot(&snap.id, &name, volume.size, &meta)
            .await?;
        poll("volume", || async {
            Ok(api
                .get_volume(&tmp.id)
                .await?
                .is_some_and(|v| v.status == VolumeStatus::Available))
        })
        .await?;
        at(&format!("disk {index}: upload to Glance (raw)"));
        let image = api.upload_volume_to_image(&tmp.id, &name, "raw").await?;
        poll("image", || async {
            Ok(api
                .get_image(&image)
                .await?
                .is_some_and(|i| i.status == ImageStatus::Active))
        })
        .await?;
        at(&format!("disk {index}: download"));
        let mut file = std::fs::File::create(format!("{out}/disk-{index}.img"))?;
        let mut body = api.download_image(&image, 0).await?.body;
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            file.write_all(&chunk)?;
            total_written += chunk.len() as u64;
        }
        file.sync_all()?;
        at(&format!("disk {index}: cleanup"));
        api.delete_image(&image).await?;
        api.delete_volume(&tmp.id).await?;
        poll("volume deletion", || async {
            Ok(api.get_volume(&tmp.id).await?.is_none())
        })
        .await?;
        api.delete_snapshot(&snap.id).await?;
        poll("snapshot deletion", || async {
            Ok(api.get_snapshot(&snap.id).await?.is_none())
        })
        .await?;
    }
    println!(
        "{}",
        serde_json::json!({"bytesWritten": total_written, "disks": server.volumes_attached.len()})
    );
    Ok(())
}
