//! Streaming reader of monolithicSparse VMDK (what `qemu-img convert -O vmdk` writes, and hence
//! what Cinder uploads as `disk_format: vmdk`): fed the file's bytes in order, it yields each
//! allocated grain with its guest offset, without ever holding more than one grain.
//!
//! Layout it needs (qemu's): the grain directory and grain tables before the first grain.
//! Memory holds the allocation map as runs of grains contiguous both in the file and in the
//! guest, so it stays small for any layout qemu produces. Compressed (streamOptimized) VMDKs
//! are refused: they are not sparse-uploaded by Cinder.

const SECTOR: u64 = 512;
const MAGIC: u32 = 0x564d_444b; // "KDMV"
const FLAG_ZEROED_GTE: u32 = 1 << 2;
const FLAG_COMPRESSED: u32 = 1 << 16;
const FLAG_MARKERS: u32 = 1 << 17;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VmdkError {
    #[error("not a sparse VMDK (bad magic number)")]
    Magic,
    #[error("VMDK {0} is not supported for streaming")]
    Unsupported(String),
    #[error("VMDK metadata is inconsistent: {0}")]
    Corrupt(String),
}

/// A piece of guest data found in the stream.
#[derive(Debug, PartialEq, Eq)]
pub struct Extent<'a> {
    pub guest_offset: u64,
    pub data: &'a [u8],
}

#[derive(Debug, Clone, Copy)]
struct Header {
    flags: u32,
    capacity: u64,
    grain_size: u64,
    gtes_per_gt: u64,
    gd_offset: u64,
    over_head: u64,
}

/// A run of grains contiguous in the file and in the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    file_sector: u64,
    guest_grain: u64,
    count: u64,
}

/// Feeds on the VMDK byte stream, calls back with each allocated grain.
#[derive(Debug, Default)]
pub struct VmdkStream {
    pos: u64,
    header: Option<Header>,
    head: Vec<u8>,
    /// Grain table sectors still to read, in file order, with their GD index.
    pending_gts: Vec<(u64, u64)>,
    gd: Vec<u8>,
    gd_read: bool,
    gt_buf: Vec<u8>,
    runs: Vec<Run>,
    runs_sorted: bool,
    run_cursor: usize,
    grain: Vec<u8>,
    grain_guest: Option<u64>,
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

impl VmdkStream {
    pub fn new() -> Self {
        Self::default()
    }

    /// The virtual size, once the header was read.
    pub fn capacity(&self) -> Option<u64> {
        self.header.map(|h| h.capacity * SECTOR)
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Where the metadata ends (the first grain), once the header was read.
    pub fn metadata_end(&self) -> Option<u64> {
        self.header.map(|h| h.over_head * SECTOR)
    }

    /// Once the grain tables were read: the grain size in bytes and the allocated grains as
    /// `(first grain, count)` runs in guest order.
    pub fn allocation(&self) -> Option<(u64, Vec<(u64, u64)>)> {
        let h = self.header?;
        if !self.gd_read || !self.pending_gts.is_empty() {
            return None;
        }
        let mut by_guest: Vec<(u64, u64)> =
            self.runs.iter().map(|r| (r.guest_grain, r.count)).collect();
        by_guest.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(by_guest.len());
        for (g, n) in by_guest {
            match merged.last_mut() {
                Some(last) if last.0 + last.1 == g => last.1 += n,
                _ => merged.push((g, n)),
            }
        }
        Some((h.grain_size * SECTOR, merged))
    }

    /// Consumes the next bytes of the file; `emit` gets each complete allocated grain.
    pub fn feed(
        &mut self,
        mut data: &[u8],
        emit: &mut dyn FnMut(Extent<'_>) -> std::io::Result<()>,
    ) -> Result<(), FeedError> {
        while !data.is_empty() {
            let Some(h) = self.header else {
                let n = (512 - self.head.len()).min(data.len());
                self.head.extend_from_slice(&data[..n]);
                self.pos += n as u64;
                data = &data[n..];
                if self.head.len() == 512 {
                    self.parse_header()?;
                }
                continue;
            };
            let over_head = h.over_head * SECTOR;
            if self.pos < over_head {
                // Metadata region: collect the grain directory and grain tables.
                let n = usize::try_from((over_head - self.pos).min(data.len() as u64))
                    .unwrap_or(data.len());
                self.metadata(&data[..n])?;
                self.pos += n as u64;
                data = &data[n..];
                continue;
            }
            if !self.runs_sorted {
                if !self.gd_read || !self.pending_gts.is_empty() {
                    return Err(VmdkError::Unsupported(
                        "with grain tables after the first grain".into(),
                    )
                    .into());
                }
                self.runs.sort_by_key(|r| r.file_sector);
                self.runs_sorted = true;
            }
            let grain_bytes = h.grain_size * SECTOR;
            let in_grain = self.pos % grain_bytes;
            let n = usize::try_from((grain_bytes - in_grain).min(data.len() as u64))
                .unwrap_or(data.len());
            if in_grain == 0 {
                self.grain.clear();
                self.grain_guest = self.lookup(self.pos / SECTOR, h.grain_size);
            }
            if self.grain_guest.is_some() {
                self.grain.extend_from_slice(&data[..n]);
            }
            self.pos += n as u64;
            data = &data[n..];
            if self.pos.is_multiple_of(grain_bytes)
                && let Some(g) = self.grain_guest.take()
            {
                let guest_offset = g * grain_bytes;
                let end = (guest_offset + grain_bytes).min(h.capacity * SECTOR);
                let len = usize::try_from(end.saturating_sub(guest_offset))
                    .unwrap_or(0)
                    .min(self.grain.len());
                emit(Extent {
                    guest_offset,
                    data: &self.grain[..len],
                })
                .map_err(FeedError::Io)?;
            }
        }
        Ok(())
    }

    /// Checks the stream ended where the data did: a grain cut short is an error.
    pub fn finish(
        &mut self,
        emit: &mut dyn FnMut(Extent<'_>) -> std::io::Result<()>,
    ) -> Result<(), FeedError> {
        let Some(h) = self.header else {
            return Err(VmdkError::Corrupt("the stream ended inside the header".into()).into());
        };
        if let Some(g) = self.grain_guest.take() {
            // The last grain of a disk whose size is not a multiple of the grain size.
            let guest_offset = g * h.grain_size * SECTOR;
            let len = usize::try_from((h.capacity * SECTOR).saturating_sub(guest_offset))
                .unwrap_or(0)
                .min(self.grain.len());
            if len < self.grain.len() || len == 0 {
                return Err(VmdkError::Corrupt("the stream ended inside a grain".into()).into());
            }
            emit(Extent {
                guest_offset,
                data: &self.grain[..len],
            })
            .map_err(FeedError::Io)?;
        }
        Ok(())
    }

    fn parse_header(&mut self) -> Result<(), VmdkError> {
        let b = &self.head;
        if le_u32(b, 0) != MAGIC {
            return Err(VmdkError::Magic);
        }
        let h = Header {
            flags: le_u32(b, 8),
            capacity: le_u64(b, 12),
            grain_size: le_u64(b, 20),
            gtes_per_gt: u64::from(le_u32(b, 44)),
            gd_offset: le_u64(b, 56),
            over_head: le_u64(b, 64),
        };
        if h.flags & (FLAG_COMPRESSED | FLAG_MARKERS) != 0 {
            return Err(VmdkError::Unsupported(
                "with compressed grains (streamOptimized)".into(),
            ));
        }
        if h.grain_size == 0 || h.gtes_per_gt == 0 || h.gd_offset == u64::MAX || h.gd_offset == 0 {
            return Err(VmdkError::Corrupt(format!(
                "grain size {}, {} entries per table, directory at sector {}",
                h.grain_size, h.gtes_per_gt, h.gd_offset
            )));
        }
        if h.gd_offset >= h.over_head {
            return Err(VmdkError::Unsupported(
                "with the grain directory after the first grain".into(),
            ));
        }
        self.header = Some(h);
        Ok(())
    }

    fn gd_len(h: &Header) -> u64 {
        h.capacity.div_ceil(h.grain_size * h.gtes_per_gt) * 4
    }

    /// Handles bytes of the metadata region starting at `self.pos`.
    fn metadata(&mut self, data: &[u8]) -> Result<(), VmdkError> {
        let Some(h) = self.header else { return Ok(()) };
        let start = self.pos;
        let end = start + data.len() as u64;
        // Grain directory.
        let gd_start = h.gd_offset * SECTOR;
        let gd_end = gd_start + Self::gd_len(&h);
        if !self.gd_read && end > gd_start && start < gd_end {
            let from = gd_start.max(start) - start;
            let to = gd_end.min(end) - start;
            self.gd.extend_from_slice(
                &data[usize::try_from(from).unwrap_or(0)..usize::try_from(to).unwrap_or(0)],
            );
            if self.gd.len() as u64 == gd_end - gd_start {
                self.gd_read = true;
                let mut gts: Vec<(u64, u64)> = self
                    .gd
                    .chunks_exact(4)
                    .enumerate()
                    .map(|(i, c)| (u64::from(le_u32(c, 0)), i as u64))
                    .filter(|(s, _)| *s != 0)
                    .collect();
                gts.sort_unstable();
                for (s, _) in &gts {
                    if *s * SECTOR < gd_end || *s >= h.over_head {
                        return Err(VmdkError::Unsupported(
                            "with grain tables outside the metadata region".into(),
                        ));
                    }
                }
                gts.reverse(); // pop from the end = lowest sector first
                self.pending_gts = gts;
            }
        }
        // Grain tables.
        let gt_len = h.gtes_per_gt * 4;
        while let Some(&(sector, gd_index)) = self.pending_gts.last() {
            let table_start = sector * SECTOR;
            let table_end = table_start + gt_len;
            let from = table_start.max(start);
            let to = table_end.min(end);
            if from >= to {
                break;
            }
            self.gt_buf.extend_from_slice(
                &data[usize::try_from(from - start).unwrap_or(0)
                    ..usize::try_from(to - start).unwrap_or(0)],
            );
            if self.gt_buf.len() as u64 == gt_len {
                let zeroed = h.flags & FLAG_ZEROED_GTE != 0;
                let table = std::mem::take(&mut self.gt_buf);
                for (j, c) in table.chunks_exact(4).enumerate() {
                    let grain_sector = u64::from(le_u32(c, 0));
                    if grain_sector == 0 || (zeroed && grain_sector == 1) {
                        continue;
                    }
                    if grain_sector < h.over_head {
                        return Err(VmdkError::Corrupt(format!(
                            "a grain at sector {grain_sector}, inside the metadata"
                        )));
                    }
                    self.add_run(
                        grain_sector,
                        gd_index * h.gtes_per_gt + j as u64,
                        h.grain_size,
                    );
                }
                self.pending_gts.pop();
            } else {
                break;
            }
        }
        Ok(())
    }

    fn add_run(&mut self, file_sector: u64, guest_grain: u64, grain_size: u64) {
        if let Some(last) = self.runs.last_mut()
            && last.file_sector + last.count * grain_size == file_sector
            && last.guest_grain + last.count == guest_grain
        {
            last.count += 1;
            return;
        }
        self.runs.push(Run {
            file_sector,
            guest_grain,
            count: 1,
        });
    }

    /// The guest grain stored at file `sector`, if any (sectors are looked up in increasing
    /// order, so a cursor walks the sorted runs).
    fn lookup(&mut self, sector: u64, grain_size: u64) -> Option<u64> {
        while let Some(r) = self.runs.get(self.run_cursor) {
            let end = r.file_sector + r.count * grain_size;
            if sector >= end {
                self.run_cursor += 1;
                continue;
            }
            if sector < r.file_sector {
                return None;
            }
            let k = (sector - r.file_sector) / grain_size;
            return (sector - r.file_sector)
                .is_multiple_of(grain_size)
                .then_some(r.guest_grain + k);
        }
        None
    }

    /// Runs kept in memory (for tests and diagnostics).
    pub fn runs(&self) -> usize {
        self.runs.len()
    }
}

/// Why feeding failed: the VMDK, or the consumer of its data.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error(transparent)]
    Vmdk(#[from] VmdkError),
    #[error(transparent)]
    Io(std::io::Error),
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;
    use std::process::Command;

    /// A raw image with data at `spots`, converted to VMDK by qemu-img.
    fn vmdk_of(dir: &std::path::Path, size: u64, spots: &[(u64, usize)]) -> (Vec<u8>, Vec<u8>) {
        let mut raw = vec![0u8; usize::try_from(size).unwrap()];
        for (k, (off, len)) in spots.iter().enumerate() {
            let o = usize::try_from(*off).unwrap();
            for (i, b) in raw[o..o + len].iter_mut().enumerate() {
                *b = ((i * 7 + k * 13) % 251) as u8 | 1;
            }
        }
        let r = dir.join("in.raw");
        std::fs::write(&r, &raw).unwrap();
        let v = dir.join("in.vmdk");
        let st = Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", "vmdk"])
            .arg(&r)
            .arg(&v)
            .status()
            .unwrap();
        assert!(st.success());
        (raw, std::fs::read(v).unwrap())
    }

    fn replay(vmdk: &[u8], chunk: usize, size: u64) -> Vec<u8> {
        let mut out = vec![0u8; usize::try_from(size).unwrap()];
        let mut s = VmdkStream::new();
        let mut emit = |e: Extent<'_>| {
            let o = usize::try_from(e.guest_offset).unwrap();
            out[o..o + e.data.len()].copy_from_slice(e.data);
            Ok(())
        };
        for c in vmdk.chunks(chunk) {
            s.feed(c, &mut emit).unwrap();
        }
        s.finish(&mut emit).unwrap();
        assert_eq!(s.capacity(), Some(size));
        out
    }

    #[test]
    fn a_qemu_vmdk_streams_back_to_its_raw_content_whatever_the_chunking() {
        let dir = tempfile::tempdir().unwrap();
        let size = 300 << 20;
        let (raw, vmdk) = vmdk_of(
            dir.path(),
            size,
            &[
                (0, 1000),
                (5 << 20, 300_000),
                (256 << 20, 65_536),
                (size - 100, 100),
            ],
        );
        for chunk in [1, 511, 4096, 65_536, 1 << 20] {
            if chunk == 1 && vmdk.len() > 4 << 20 {
                continue;
            }
            assert!(replay(&vmdk, chunk, size) == raw, "chunk size {chunk}");
        }
    }

    #[test]
    fn contiguous_data_takes_one_run() {
        let dir = tempfile::tempdir().unwrap();
        let (_, vmdk) = vmdk_of(dir.path(), 64 << 20, &[(1 << 20, 8 << 20)]);
        let mut s = VmdkStream::new();
        s.feed(&vmdk, &mut |_| Ok(())).unwrap();
        assert_eq!(s.runs(), 1);
    }

    #[test]
    fn garbage_and_compressed_vmdks_are_refused() {
        let mut s = VmdkStream::new();
        let err = s.feed(&[0u8; 600], &mut |_| Ok(())).unwrap_err();
        assert!(matches!(err, FeedError::Vmdk(VmdkError::Magic)));
        let dir = tempfile::tempdir().unwrap();
        let (_, mut vmdk) = vmdk_of(dir.path(), 1 << 20, &[(0, 10)]);
        vmdk[10] |= 1; // flags byte 2: compressed grains
        let err = VmdkStream::new().feed(&vmdk, &mut |_| Ok(())).unwrap_err();
        assert!(err.to_string().contains("compressed"), "{err}");
    }
}
