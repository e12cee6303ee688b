//! `qemu-img`: image format detection and conversion.

use std::path::Path;

use serde::Deserialize;
use tokio::process::Command;

/// Disk image formats vm-import reads or writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Raw,
    Qcow2,
    Vmdk,
    Vdi,
    Vhdx,
    Vpc,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Vmdk => "vmdk",
            Format::Vdi => "vdi",
            Format::Vhdx => "vhdx",
            Format::Vpc => "vpc",
        }
    }

    /// Glance's `disk_format` or qemu-img's format name.
    pub fn parse(s: &str) -> Option<Format> {
        match s.to_ascii_lowercase().as_str() {
            "raw" | "img" | "iso" => Some(Format::Raw),
            "qcow2" => Some(Format::Qcow2),
            "vmdk" => Some(Format::Vmdk),
            "vdi" => Some(Format::Vdi),
            "vhdx" => Some(Format::Vhdx),
            "vpc" | "vhd" => Some(Format::Vpc),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QemuImgError {
    #[error("cannot run qemu-img: {0}; install qemu-utils")]
    Spawn(std::io::Error),
    #[error("qemu-img {action} {path}: {stderr}")]
    Failed {
        action: &'static str,
        path: String,
        stderr: String,
    },
    #[error("qemu-img info {path}: unexpected output: {detail}")]
    Output { path: String, detail: String },
}

/// What `qemu-img info` says.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Info {
    pub format: String,
    #[serde(rename = "virtual-size")]
    pub virtual_size: u64,
    #[serde(rename = "actual-size", default)]
    pub actual_size: Option<u64>,
}

/// `qemu-img info --output=json`. `format` forces the format (never guess a downloaded file's
/// format when the source said it: a raw disk can look like a qcow2 header).
pub async fn info(path: &Path, format: Option<Format>) -> Result<Info, QemuImgError> {
    let mut cmd = Command::new("qemu-img");
    cmd.arg("info").arg("--output=json");
    if let Some(f) = format {
        cmd.arg("-f").arg(f.as_str());
    }
    cmd.arg(path);
    let out = cmd.output().await.map_err(QemuImgError::Spawn)?;
    if !out.status.success() {
        return Err(QemuImgError::Failed {
            action: "info",
            path: path.display().to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    serde_json::from_slice(&out.stdout).map_err(|e| QemuImgError::Output {
        path: path.display().to_string(),
        detail: e.to_string(),
    })
}

/// Converts `src` (in `from`) to `dst` (in `to`); raw output is sparse. Writes to `dst.part`
/// and renames, so `dst` exists only when complete.
pub async fn convert(src: &Path, from: Format, dst: &Path, to: Format) -> Result<(), QemuImgError> {
    let part = dst.with_extension(format!("{}.part", to.as_str()));
    let mut cmd = Command::new("qemu-img");
    cmd.arg("convert")
        .arg("-f")
        .arg(from.as_str())
        .arg("-O")
        .arg(to.as_str());
    // Skip zero regions in the output (holes for raw, unallocated clusters for qcow2).
    cmd.arg("-S").arg("64k");
    cmd.arg(src).arg(&part);
    let out = cmd.output().await.map_err(QemuImgError::Spawn)?;
    if !out.status.success() {
        let _ = tokio::fs::remove_file(&part).await;
        return Err(QemuImgError::Failed {
            action: "convert",
            path: src.display().to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    tokio::fs::rename(&part, dst)
        .await
        .map_err(|e| QemuImgError::Failed {
            action: "convert",
            path: dst.display().to_string(),
            stderr: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn convert_raw_to_qcow2_and_back_keeps_the_bytes_and_sparseness() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("a.raw");
        let mut data = vec![0u8; 8 << 20];
        data[..11].copy_from_slice(b"VMI-MARKER!");
        data[(6 << 20) + 3] = 7;
        std::fs::write(&raw, &data).unwrap();
        let q = dir.path().join("a.qcow2");
        convert(&raw, Format::Raw, &q, Format::Qcow2).await.unwrap();
        let i = info(&q, None).await.unwrap();
        assert_eq!(i.format, "qcow2");
        assert_eq!(i.virtual_size, 8 << 20);
        let back = dir.path().join("b.raw");
        convert(&q, Format::Qcow2, &back, Format::Raw)
            .await
            .unwrap();
        assert_eq!(std::fs::read(&back).unwrap(), data);
        assert!(crate::sparse::allocated_bytes(&back).unwrap() < (1 << 20));
    }

    #[tokio::test]
    async fn a_bad_input_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("not.qcow2");
        std::fs::write(&p, b"garbage").unwrap();
        let err = info(&p, Some(Format::Qcow2)).await.unwrap_err();
        assert!(err.to_string().contains("not.qcow2"), "{err}");
    }
}
