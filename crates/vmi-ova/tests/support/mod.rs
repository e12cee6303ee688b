//! Test support: a raw tar writer that can write what a well-behaved one refuses (`..`, absolute
//! names, links, devices, lying sizes), and builders for small OVAs.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::pedantic
)]

use std::path::Path;

use vmi_disk::{Algorithm, MultiHasher};

/// Builds a tar archive header by header.
#[derive(Debug, Default)]
pub struct RawTar {
    pub bytes: Vec<u8>,
}

fn octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let s = format!("{value:0width$o}");
    field[..width].copy_from_slice(&s.as_bytes()[s.len() - width..]);
    field[width] = 0;
}

/// A ustar header.
pub fn header(name: &[u8], typeflag: u8, size: u64, linkname: &[u8]) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name);
    octal(&mut h[100..108], 0o644);
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], 1_700_000_000);
    h[156] = typeflag;
    h[157..157 + linkname.len()].copy_from_slice(linkname);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|b| u64::from(*b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

impl RawTar {
    pub fn new() -> Self {
        RawTar::default()
    }

    /// An entry whose header says `size` bytes, followed by `data` padded to a block.
    pub fn raw(
        &mut self,
        name: &[u8],
        typeflag: u8,
        size: u64,
        data: &[u8],
        link: &[u8],
    ) -> &mut Self {
        self.bytes
            .extend_from_slice(&header(name, typeflag, size, link));
        self.bytes.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.bytes.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    /// A regular file.
    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.raw(name.as_bytes(), b'0', data.len() as u64, data, b"")
    }

    /// A PAX extended header setting `path` for the next entry.
    pub fn pax_path(&mut self, path: &str) -> &mut Self {
        let body = format!(" path={path}\n");
        // The record's length counts its own digits.
        let mut len = body.len() + 1;
        while format!("{len}{body}").len() != len {
            len += 1;
        }
        let record = format!("{len}{body}");
        self.raw(
            b"PaxHeader",
            b'x',
            record.len() as u64,
            record.as_bytes(),
            b"",
        )
    }

    /// The end-of-archive marker: two zero blocks.
    pub fn finish(&mut self) -> Vec<u8> {
        self.bytes.extend(std::iter::repeat_n(0u8, 1024));
        std::mem::take(&mut self.bytes)
    }
}

pub fn sha256(data: &[u8]) -> String {
    let mut h = MultiHasher::new(&[Algorithm::Sha256]);
    h.update(data);
    h.finish().sha256.unwrap_or_default()
}

pub fn sha1(data: &[u8]) -> String {
    let mut h = MultiHasher::new(&[Algorithm::Sha1]);
    h.update(data);
    h.finish().sha1.unwrap_or_default()
}

/// A small OVF 1.0 descriptor whose VM has one disk per file (`href`, declared size).
pub fn descriptor(files: &[(&str, Option<u64>)]) -> Vec<u8> {
    let refs: String = files
        .iter()
        .enumerate()
        .map(|(i, (href, size))| {
            let size = size
                .map(|s| format!(" ovf:size=\"{s}\""))
                .unwrap_or_default();
            format!("<File ovf:id=\"file{i}\" ovf:href=\"{href}\"{size}/>")
        })
        .collect();
    let disks: String = (0..files.len())
        .map(|i| {
            format!(
                "<Disk ovf:diskId=\"vmdisk{i}\" ovf:fileRef=\"file{i}\" ovf:capacity=\"1\" \
                 ovf:capacityAllocationUnits=\"byte * 2^20\"/>"
            )
        })
        .collect();
    let items: String = (0..files.len())
        .map(|i| {
            format!(
                "<Item><rasd:AddressOnParent>{i}</rasd:AddressOnParent>\
                 <rasd:HostResource>ovf:/disk/vmdisk{i}</rasd:HostResource>\
                 <rasd:InstanceID>{}</rasd:InstanceID><rasd:Parent>3</rasd:Parent>\
                 <rasd:ResourceType>17</rasd:ResourceType></Item>",
                10 + i
            )
        })
        .collect();
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">
<References>{refs}</References>
<DiskSection><Info>Disks</Info>{disks}</DiskSection>
<VirtualSystem ovf:id="t"><Info>t</Info><VirtualHardwareSection><Info>h</Info>
<Item><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>1</rasd:VirtualQuantity></Item>
<Item><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>64</rasd:VirtualQuantity></Item>
<Item><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceType>6</rasd:ResourceType></Item>
{items}
</VirtualHardwareSection></VirtualSystem></Envelope>
"#
    )
    .into_bytes()
}

/// A manifest with SHA256 lines for these (name, content) pairs.
pub fn manifest(files: &[(&str, &[u8])]) -> Vec<u8> {
    files
        .iter()
        .map(|(name, data)| format!("SHA256({name})= {}\n", sha256(data)))
        .collect::<String>()
        .into_bytes()
}

/// Deterministic bytes of a fake disk.
pub fn disk_bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// A well-formed OVA: descriptor, manifest, then the disks (name, content).
pub fn good_ova(disks: &[(&str, &[u8])]) -> Vec<u8> {
    let ovf = descriptor(
        &disks
            .iter()
            .map(|(n, d)| (*n, Some(d.len() as u64)))
            .collect::<Vec<_>>(),
    );
    let mut listed: Vec<(&str, &[u8])> = vec![("vm.ovf", &ovf)];
    listed.extend_from_slice(disks);
    let mf = manifest(&listed);
    let mut t = RawTar::new();
    t.file("vm.ovf", &ovf).file("vm.mf", &mf);
    for (name, data) in disks {
        t.file(name, data);
    }
    t.finish()
}

/// Every path under `root`, relative, sorted.
pub fn tree(root: &Path) -> Vec<String> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(root).unwrap().display().to_string());
            if p.is_dir() && !p.is_symlink() {
                walk(&p, root, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// A reader that hands out at most `step` bytes per call, to exercise short reads.
#[derive(Debug)]
pub struct Trickle<R> {
    pub inner: R,
    pub step: usize,
}

impl<R: std::io::Read> std::io::Read for Trickle<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.step);
        self.inner.read(&mut buf[..n])
    }
}

/// A reader that fails if anything past `limit` bytes is asked for.
#[derive(Debug)]
pub struct Fence<R> {
    pub inner: R,
    pub limit: u64,
    pub pos: u64,
}

impl<R: std::io::Read> std::io::Read for Fence<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.limit - self.pos;
        if left == 0 && !buf.is_empty() {
            return Err(std::io::Error::other("read past the fence"));
        }
        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let got = self.inner.read(&mut buf[..n])?;
        self.pos += got as u64;
        Ok(got)
    }
}
