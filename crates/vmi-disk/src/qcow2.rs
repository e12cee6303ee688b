//! A streaming qcow2 writer: data arrives in increasing guest order and is appended; the
//! metadata (L2 tables as they fill, then the L1 table, the refcounts and the header) is
//! written around it. Memory: one cluster, one L2 table and the L1 table (8 bytes per 512 MiB
//! of virtual size), whatever the disk size. Zero clusters are not allocated.
//!
//! The file is qcow2 version 3 (compat 1.1), 64 KiB clusters, 16-bit refcounts, no backing
//! file: what `qemu-img create -f qcow2` makes. `qemu-img check` finds it clean.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};

const CLUSTER_BITS: u32 = 16;
const CLUSTER: u64 = 1 << CLUSTER_BITS;
/// The cluster size as a buffer length.
const CLUSTER_LEN: usize = 1 << CLUSTER_BITS;
/// L2 entries per table (8 bytes each).
const L2_ENTRIES: u64 = CLUSTER / 8;
/// 16-bit refcounts per refcount block.
const REFCOUNTS_PER_BLOCK: u64 = CLUSTER / 2;
/// "Refcount is exactly one": lets qemu write in place.
const COPIED: u64 = 1 << 63;

#[derive(Debug, thiserror::Error)]
pub enum Qcow2Error {
    #[error("qcow2 writer: {0}")]
    Io(#[from] std::io::Error),
    #[error(
        "qcow2 writer: data at offset {offset} after offset {after}: data must arrive in increasing order"
    )]
    OutOfOrder { offset: u64, after: u64 },
    #[error("qcow2 writer: data at offset {offset} beyond the virtual size {size}")]
    BeyondEnd { offset: u64, size: u64 },
    #[error("qcow2 writer: cluster {index} does not follow the plan (expected {expected:?})")]
    Plan { index: u64, expected: Option<u64> },
}

/// Writes a qcow2 image of `virtual_size` bytes from data given in increasing guest order.
#[derive(Debug)]
pub struct Qcow2Writer {
    file: File,
    virtual_size: u64,
    /// Next free host cluster (cluster 0 is the header).
    next_free: u64,
    l1: Vec<u64>,
    /// The L2 table being filled and its index in L1.
    l2: Vec<u64>,
    l2_index: Option<u64>,
    /// The guest cluster being assembled.
    cluster: Vec<u8>,
    cluster_index: Option<u64>,
    /// End of the last data given (for the ordering check).
    last_end: u64,
    /// Host bytes written so far.
    written: u64,
}

fn div_ceil(a: u64, b: u64) -> u64 {
    a.div_ceil(b)
}

impl Qcow2Writer {
    pub fn new(file: File, virtual_size: u64) -> Result<Self, Qcow2Error> {
        file.set_len(0)?;
        let l1_size = div_ceil(div_ceil(virtual_size, CLUSTER), L2_ENTRIES).max(1);
        Ok(Self {
            file,
            virtual_size,
            next_free: 1,
            l1: vec![0; usize::try_from(l1_size).unwrap_or(usize::MAX)],
            l2: vec![0; CLUSTER_LEN / 8],
            l2_index: None,
            cluster: vec![0; CLUSTER_LEN],
            cluster_index: None,
            last_end: 0,
            written: 0,
        })
    }

    /// Host bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// Writes `data` at guest `offset`; offsets must not go backwards.
    pub fn write_at(&mut self, offset: u64, mut data: &[u8]) -> Result<(), Qcow2Error> {
        if offset < self.last_end {
            return Err(Qcow2Error::OutOfOrder {
                offset,
                after: self.last_end,
            });
        }
        if offset + data.len() as u64 > self.virtual_size {
            return Err(Qcow2Error::BeyondEnd {
                offset,
                size: self.virtual_size,
            });
        }
        self.last_end = offset + data.len() as u64;
        let mut pos = offset;
        while !data.is_empty() {
            let index = pos / CLUSTER;
            let within = usize::try_from(pos % CLUSTER).unwrap_or(0);
            let n = (CLUSTER_LEN - within).min(data.len());
            if self.cluster_index != Some(index) {
                self.flush_cluster()?;
                self.cluster_index = Some(index);
                self.cluster.fill(0);
            }
            self.cluster[within..within + n].copy_from_slice(&data[..n]);
            data = &data[n..];
            pos += n as u64;
        }
        Ok(())
    }

    fn flush_cluster(&mut self) -> Result<(), Qcow2Error> {
        let Some(index) = self.cluster_index.take() else {
            return Ok(());
        };
        if self.cluster.iter().all(|b| *b == 0) {
            return Ok(());
        }
        let l2_index = index / L2_ENTRIES;
        if self.l2_index != Some(l2_index) {
            self.flush_l2()?;
            self.l2_index = Some(l2_index);
            self.l2.fill(0);
        }
        let cluster = std::mem::take(&mut self.cluster);
        let host = self.allocate(&cluster);
        self.cluster = cluster;
        self.l2[usize::try_from(index % L2_ENTRIES).unwrap_or(0)] = host? | COPIED;
        Ok(())
    }

    fn flush_l2(&mut self) -> Result<(), Qcow2Error> {
        let Some(index) = self.l2_index.take() else {
            return Ok(());
        };
        let mut table = Vec::with_capacity(CLUSTER_LEN);
        for e in &self.l2 {
            table.extend_from_slice(&e.to_be_bytes());
        }
        let host = self.allocate(&table)?;
        self.l1[usize::try_from(index).unwrap_or(0)] = host | COPIED;
        Ok(())
    }

    /// Appends one cluster; returns its host offset.
    fn allocate(&mut self, data: &[u8]) -> Result<u64, Qcow2Error> {
        let host = self.next_free * CLUSTER;
        self.file.seek(SeekFrom::Start(host))?;
        self.file.write_all(data)?;
        self.next_free += 1;
        self.written += CLUSTER;
        Ok(host)
    }

    /// Syncs what was written (a checkpoint of the data, not a valid image yet).
    pub fn sync(&mut self) -> Result<(), Qcow2Error> {
        self.file.sync_data()?;
        Ok(())
    }

    /// Writes the L1 table, the refcounts and the header; returns the file size.
    pub fn finish(mut self) -> Result<u64, Qcow2Error> {
        self.flush_cluster()?;
        self.flush_l2()?;
        // L1 table.
        let l1_offset = self.next_free * CLUSTER;
        let mut l1 = Vec::with_capacity(self.l1.len() * 8);
        for e in &self.l1 {
            l1.extend_from_slice(&e.to_be_bytes());
        }
        let l1_clusters = div_ceil(l1.len() as u64, CLUSTER);
        l1.resize(usize::try_from(l1_clusters * CLUSTER).unwrap_or(0), 0);
        self.file.seek(SeekFrom::Start(l1_offset))?;
        self.file.write_all(&l1)?;
        self.next_free += l1_clusters;
        // Refcount table and blocks covering every cluster, themselves included.
        let base = self.next_free;
        let (table_clusters, blocks) = refcount_layout(base, 0);
        let table_offset = base * CLUSTER;
        let first_block = base + table_clusters;
        let total = first_block + blocks;
        self.file.seek(SeekFrom::Start(table_offset))?;
        self.file
            .write_all(&refcount_table(table_clusters, blocks, first_block))?;
        for i in 0..blocks {
            self.file.write_all(&refcount_block(i, total))?;
        }
        let h = header(
            self.virtual_size,
            self.l1.len() as u64,
            l1_offset,
            table_offset,
            table_clusters,
        );
        self.file.seek(SeekFrom::Start(0))?;
        self.file.write_all(&h)?;
        let size = total * CLUSTER;
        self.file.set_len(size)?;
        self.file.sync_all()?;
        Ok(size)
    }
}

/// Refcount table clusters and refcount blocks needed when `before` clusters precede them and
/// `after` follow them (all with refcount 1, the refcount structures included).
fn refcount_layout(before: u64, after: u64) -> (u64, u64) {
    let (mut blocks, mut table_clusters) = (1, 1);
    loop {
        let total = before + table_clusters + blocks + after;
        let b = div_ceil(total, REFCOUNTS_PER_BLOCK);
        let t = div_ceil(b * 8, CLUSTER);
        if b == blocks && t == table_clusters {
            return (table_clusters, blocks);
        }
        (blocks, table_clusters) = (b, t);
    }
}

fn refcount_table(table_clusters: u64, blocks: u64, first_block: u64) -> Vec<u8> {
    let mut table = vec![0u8; usize::try_from(table_clusters * CLUSTER).unwrap_or(0)];
    for i in 0..blocks {
        let at = usize::try_from(i * 8).unwrap_or(0);
        table[at..at + 8].copy_from_slice(&((first_block + i) * CLUSTER).to_be_bytes());
    }
    table
}

/// Refcount block `i`: refcount 1 for every cluster below `total`.
fn refcount_block(i: u64, total: u64) -> Vec<u8> {
    let mut block = vec![0u8; CLUSTER_LEN];
    let first = i * REFCOUNTS_PER_BLOCK;
    let n = total.saturating_sub(first).min(REFCOUNTS_PER_BLOCK);
    for k in 0..usize::try_from(n).unwrap_or(0) {
        block[2 * k..2 * k + 2].copy_from_slice(&1u16.to_be_bytes());
    }
    block
}

/// The qcow2 v3 header (104 bytes and the end-of-extensions marker), padded to a cluster.
fn header(
    virtual_size: u64,
    l1_size: u64,
    l1_offset: u64,
    table_offset: u64,
    table_clusters: u64,
) -> Vec<u8> {
    let mut h = Vec::with_capacity(CLUSTER_LEN);
    h.extend_from_slice(b"QFI\xfb");
    h.extend_from_slice(&3u32.to_be_bytes()); // version
    h.extend_from_slice(&0u64.to_be_bytes()); // backing file offset
    h.extend_from_slice(&0u32.to_be_bytes()); // backing file size
    h.extend_from_slice(&CLUSTER_BITS.to_be_bytes());
    h.extend_from_slice(&virtual_size.to_be_bytes());
    h.extend_from_slice(&0u32.to_be_bytes()); // no encryption
    h.extend_from_slice(&u32::try_from(l1_size).unwrap_or(u32::MAX).to_be_bytes());
    h.extend_from_slice(&l1_offset.to_be_bytes());
    h.extend_from_slice(&table_offset.to_be_bytes());
    h.extend_from_slice(
        &u32::try_from(table_clusters)
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    h.extend_from_slice(&0u32.to_be_bytes()); // snapshots
    h.extend_from_slice(&0u64.to_be_bytes());
    h.extend_from_slice(&0u64.to_be_bytes()); // incompatible features
    h.extend_from_slice(&0u64.to_be_bytes()); // compatible features
    h.extend_from_slice(&0u64.to_be_bytes()); // autoclear features
    h.extend_from_slice(&4u32.to_be_bytes()); // refcount order: 16 bits
    h.extend_from_slice(&104u32.to_be_bytes()); // header length
    h.extend_from_slice(&[0u8; 8]); // end of header extensions
    h.resize(CLUSTER_LEN, 0);
    h
}

/// Cluster size of the qcow2 files written here.
pub const CLUSTER_SIZE: u64 = CLUSTER;

/// A qcow2 writer for when the allocated clusters are known before the data (a VMDK's grain
/// tables come before its grains): the whole file is laid out up front and written strictly in
/// order — header, L1, refcounts, then each L2 table followed by its data clusters — so that
/// digests of the file are computed while it is written, with no second pass.
///
/// Memory: the allocation as runs of clusters, the L1 table and one cluster.
#[derive(Debug)]
pub struct PlannedQcow2Writer {
    out: std::io::BufWriter<File>,
    hasher: crate::digest::MultiHasher,
    /// Allocated guest clusters, as `(first, count)` runs in increasing order.
    runs: Vec<(u64, u64)>,
    /// Cursor: run index and offset within it of the next cluster expected.
    run: usize,
    within: u64,
    /// The L2 group of the last table written.
    group: Option<u64>,
    /// Host cluster of the next cluster to write.
    next_host: u64,
    total: u64,
    written: u64,
}

impl PlannedQcow2Writer {
    /// Lays out and writes the metadata. `runs` are the allocated guest clusters.
    pub fn new(
        file: File,
        virtual_size: u64,
        mut runs: Vec<(u64, u64)>,
        algorithms: &[crate::digest::Algorithm],
    ) -> Result<Self, Qcow2Error> {
        file.set_len(0)?;
        runs.retain(|r| r.1 > 0);
        runs.sort_unstable();
        let l1_size = div_ceil(div_ceil(virtual_size, CLUSTER), L2_ENTRIES).max(1);
        let l1_clusters = div_ceil(l1_size * 8, CLUSTER);
        // Data clusters per L2 group.
        let mut groups: Vec<(u64, u64)> = Vec::new();
        for &(first, count) in &runs {
            let mut c = first;
            let end = first + count;
            while c < end {
                let g = c / L2_ENTRIES;
                let group_end = ((g + 1) * L2_ENTRIES).min(end);
                match groups.last_mut() {
                    Some(last) if last.0 == g => last.1 += group_end - c,
                    _ => groups.push((g, group_end - c)),
                }
                c = group_end;
            }
        }
        let data: u64 = groups.iter().map(|g| g.1).sum();
        let before = 1 + l1_clusters;
        let (table_clusters, blocks) = refcount_layout(before, groups.len() as u64 + data);
        let table_offset = before * CLUSTER;
        let first_block = before + table_clusters;
        let first_group = first_block + blocks;
        let total = first_group + groups.len() as u64 + data;
        let mut l1 = vec![0u64; usize::try_from(l1_size).unwrap_or(0)];
        let mut host = first_group;
        for &(g, n) in &groups {
            l1[usize::try_from(g).unwrap_or(0)] = (host * CLUSTER) | COPIED;
            host += 1 + n;
        }
        let mut w = Self {
            out: std::io::BufWriter::with_capacity(1 << 20, file),
            hasher: crate::digest::MultiHasher::new(algorithms),
            runs,
            run: 0,
            within: 0,
            group: None,
            next_host: first_group,
            total,
            written: 0,
        };
        w.put(&header(
            virtual_size,
            l1_size,
            CLUSTER,
            table_offset,
            table_clusters,
        ))?;
        let mut l1_bytes = Vec::with_capacity(usize::try_from(l1_clusters * CLUSTER).unwrap_or(0));
        for e in &l1 {
            l1_bytes.extend_from_slice(&e.to_be_bytes());
        }
        l1_bytes.resize(usize::try_from(l1_clusters * CLUSTER).unwrap_or(0), 0);
        w.put(&l1_bytes)?;
        w.put(&refcount_table(table_clusters, blocks, first_block))?;
        for i in 0..blocks {
            w.put(&refcount_block(i, total))?;
        }
        Ok(w)
    }

    fn put(&mut self, data: &[u8]) -> Result<(), Qcow2Error> {
        self.hasher.update(data);
        self.out.write_all(data)?;
        self.written += data.len() as u64;
        Ok(())
    }

    /// The next guest cluster the plan expects.
    fn expected(&self) -> Option<u64> {
        self.runs.get(self.run).map(|r| r.0 + self.within)
    }

    /// Writes guest cluster `index` (`data` at most one cluster; shorter is zero-padded).
    pub fn write_cluster(&mut self, index: u64, data: &[u8]) -> Result<(), Qcow2Error> {
        let Some(want) = self.expected().filter(|w| *w == index) else {
            return Err(Qcow2Error::Plan {
                index,
                expected: self.expected(),
            });
        };
        let group = want / L2_ENTRIES;
        if self.group != Some(group) {
            self.write_l2(group)?;
        }
        let mut cluster = data.to_vec();
        cluster.resize(CLUSTER_LEN, 0);
        self.put(&cluster)?;
        self.next_host += 1;
        self.within += 1;
        if self.within == self.runs[self.run].1 {
            self.run += 1;
            self.within = 0;
        }
        Ok(())
    }

    /// Writes the L2 table of `group`: its data clusters follow it, in guest order.
    fn write_l2(&mut self, group: u64) -> Result<(), Qcow2Error> {
        let mut table = vec![0u8; CLUSTER_LEN];
        let mut host = self.next_host + 1;
        let (lo, hi) = (group * L2_ENTRIES, (group + 1) * L2_ENTRIES);
        // The runs not yet written that fall in this group (the cursor's run first).
        for (k, &(first, count)) in self.runs.iter().enumerate().skip(self.run) {
            let start = if k == self.run {
                first + self.within
            } else {
                first
            };
            let end = first + count;
            if start >= hi {
                break;
            }
            for c in start.max(lo)..end.min(hi) {
                let at = usize::try_from((c - lo) * 8).unwrap_or(0);
                table[at..at + 8].copy_from_slice(&((host * CLUSTER) | COPIED).to_be_bytes());
                host += 1;
            }
        }
        self.put(&table)?;
        self.next_host += 1;
        self.group = Some(group);
        Ok(())
    }

    /// Checks every planned cluster was written; returns the file size and its digests.
    pub fn finish(mut self) -> Result<(u64, crate::digest::Digests), Qcow2Error> {
        if let Some(index) = self.expected() {
            return Err(Qcow2Error::Plan {
                index,
                expected: None,
            });
        }
        debug_assert_eq!(self.written, self.total * CLUSTER);
        self.out.flush()?;
        let file = self
            .out
            .into_inner()
            .map_err(|e| Qcow2Error::Io(e.into_error()))?;
        file.sync_all()?;
        Ok((self.written, self.hasher.finish()))
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Writes `chunks` through the writer and checks the result with qemu-img against the raw
    /// image they make.
    fn check(virtual_size: u64, chunks: &[(u64, Vec<u8>)]) {
        let dir = tempfile::tempdir().unwrap();
        let q = dir.path().join("w.qcow2");
        let mut w = Qcow2Writer::new(File::create(&q).unwrap(), virtual_size).unwrap();
        let mut raw = vec![0u8; usize::try_from(virtual_size).unwrap()];
        for (off, data) in chunks {
            w.write_at(*off, data).unwrap();
            let o = usize::try_from(*off).unwrap();
            raw[o..o + data.len()].copy_from_slice(data);
        }
        w.finish().unwrap();
        let st = Command::new("qemu-img")
            .args(["check", "-f", "qcow2"])
            .arg(&q)
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "qemu-img check: {}",
            String::from_utf8_lossy(&st.stdout)
        );
        let r = dir.path().join("raw");
        std::fs::write(&r, &raw).unwrap();
        let cmp = Command::new("qemu-img")
            .args(["compare", "-f", "qcow2", "-F", "raw"])
            .arg(&q)
            .arg(&r)
            .output()
            .unwrap();
        assert!(
            cmp.status.success(),
            "qemu-img compare: {}",
            String::from_utf8_lossy(&cmp.stdout)
        );
    }

    #[test]
    fn sparse_data_across_l2_tables_round_trips() {
        let size = 1_200 << 20; // three L2 tables
        let data = |seed: u8, n: usize| {
            (0..n)
                .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1)
                .collect::<Vec<u8>>()
        };
        check(
            size,
            &[
                (0, data(1, 100)),
                (70_000, data(2, 200_000)),
                (600 << 20, data(3, 65_536)),
                ((1_100 << 20) + 5, data(4, 10)),
                (size - 3, data(5, 3)),
            ],
        );
    }

    #[test]
    fn an_empty_disk_and_zero_data_allocate_nothing() {
        check(10 << 20, &[]);
        check(10 << 20, &[(0, vec![0u8; 1 << 20])]);
        let dir = tempfile::tempdir().unwrap();
        let q = dir.path().join("e.qcow2");
        let mut w = Qcow2Writer::new(File::create(&q).unwrap(), 1 << 30).unwrap();
        w.write_at(0, &vec![0u8; 4 << 20]).unwrap();
        let size = w.finish().unwrap();
        assert!(size <= 4 * CLUSTER, "{size}");
    }

    #[test]
    fn a_planned_writer_hashes_what_it_writes_and_matches_the_seeking_one() {
        let dir = tempfile::tempdir().unwrap();
        let size: u64 = 1_100 << 20;
        let clusters: Vec<u64> = vec![0, 1, 2, 700, 8191, 8192, 8193, 16_000, 17_599];
        let runs: Vec<(u64, u64)> = clusters.iter().map(|c| (*c, 1)).collect();
        let p = dir.path().join("p.qcow2");
        let mut w = PlannedQcow2Writer::new(
            File::create(&p).unwrap(),
            size,
            runs,
            &[crate::digest::Algorithm::Sha256],
        )
        .unwrap();
        let mut raw = vec![0u8; usize::try_from(size).unwrap()];
        for &c in &clusters {
            let data: Vec<u8> = (0..CLUSTER).map(|i| ((i + c) % 251) as u8 | 1).collect();
            w.write_cluster(c, &data).unwrap();
            let o = usize::try_from(c * CLUSTER).unwrap();
            raw[o..o + data.len()].copy_from_slice(&data);
        }
        let (len, digests) = w.finish().unwrap();
        assert_eq!(len, std::fs::metadata(&p).unwrap().len());
        let on_disk = crate::digest::file_digests(&p, &[crate::digest::Algorithm::Sha256]).unwrap();
        assert_eq!(digests.sha256, on_disk.sha256);
        let st = Command::new("qemu-img")
            .args(["check", "-f", "qcow2"])
            .arg(&p)
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stdout)
        );
        let r = dir.path().join("raw");
        std::fs::write(&r, &raw).unwrap();
        let cmp = Command::new("qemu-img")
            .args(["compare", "-f", "qcow2", "-F", "raw"])
            .arg(&p)
            .arg(&r)
            .output()
            .unwrap();
        assert!(
            cmp.status.success(),
            "{}",
            String::from_utf8_lossy(&cmp.stdout)
        );
    }

    #[test]
    fn a_planned_writer_refuses_data_off_the_plan_and_a_short_stream() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = PlannedQcow2Writer::new(
            File::create(dir.path().join("a")).unwrap(),
            1 << 30,
            vec![(4, 2)],
            &[],
        )
        .unwrap();
        assert!(matches!(
            w.write_cluster(3, b"x"),
            Err(Qcow2Error::Plan {
                index: 3,
                expected: Some(4)
            })
        ));
        w.write_cluster(4, b"x").unwrap();
        assert!(matches!(w.finish(), Err(Qcow2Error::Plan { index: 5, .. })));
    }

    #[test]
    fn out_of_order_data_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Qcow2Writer::new(File::create(dir.path().join("x")).unwrap(), 1 << 20).unwrap();
        w.write_at(1000, b"ab").unwrap();
        assert!(matches!(
            w.write_at(10, b"c"),
            Err(Qcow2Error::OutOfOrder { .. })
        ));
        assert!(matches!(
            w.write_at(1 << 20, b"c"),
            Err(Qcow2Error::BeyondEnd { .. })
        ));
    }
}
