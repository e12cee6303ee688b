//! `make-demo-ova OUT_DIR [--disk-mib N] [--random-mib M]`: makes a small demo OVA from
//! scratch, identically every time. The options make larger ones for benchmarks (a disk of
//! N MiB with M MiB of incompressible data from 1 MiB on); the defaults make the committed
//! `examples/ova/demo-vm.ova`.
//!
//! - `OUT_DIR/demo-vm-disk1.raw`: a 64 MiB raw disk with a marker at the start, deterministic
//!   pseudo-random data at 1 MiB, a text block at 32 MiB and a marker at the end (the rest is
//!   holes);
//! - `OUT_DIR/demo-vm.ova`: a tar of `demo-vm.ovf` (OVF 1.0, written here), `demo-vm.mf`
//!   (SHA256 lines) and `demo-vm-disk1.vmdk` (the raw disk converted by
//!   `qemu-img convert -O vmdk -o subformat=streamOptimized`), in that order, with fixed
//!   owners, modes and modification times.
//!
//! The VM: "demo-vm", 2 vCPUs with 1 core per socket, 2048 MiB, UEFI, one SATA controller with
//! the disk, two E1000 NICs on "VM Network" and "Storage Network" with fixed MACs.
//!
//! qemu-img writes a random content id (`CID=`) into the VMDK's descriptor; it is replaced by
//! a fixed one so that the output is byte-for-byte reproducible.

use std::fmt::Write as _;
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use vmi_disk::Algorithm;
use vmi_disk::digest::file_digests;

const NAME: &str = "demo-vm";
/// The shape of the disk.
#[derive(Clone, Copy, Debug)]
struct Shape {
    disk_mib: u64,
    /// Incompressible bytes written from 1 MiB on.
    random_bytes: u64,
}

const DEFAULT_SHAPE: Shape = Shape {
    disk_mib: 64,
    random_bytes: 256 << 10,
};
const MARKER: &[u8] = b"VMI-OVA-DEMO-DISK v1: vm-import demo disk, made by make-demo-ova\n";
const END_MARKER: &[u8] = b"VMI-OVA-DEMO-DISK END\n";
/// 2023-11-14T22:13:20Z, for every tar entry.
const MTIME: u64 = 1_700_000_000;
/// Replaces qemu-img's random VMDK content id.
const FIXED_CID: &[u8; 8] = b"766d6931";
const MACS: [&str; 2] = ["00:50:56:00:de:01", "00:50:56:00:de:02"];
const NETWORKS: [&str; 2] = ["VM Network", "Storage Network"];

const USAGE: &str = "usage: make-demo-ova OUT_DIR [--disk-mib N] [--random-mib M]";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((out, shape)) = parse_args(&args) else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    if let Err(e) = run(Path::new(out), shape) {
        eprintln!("make-demo-ova: {e:#}");
        std::process::exit(1);
    }
}

fn parse_args(args: &[String]) -> Option<(&str, Shape)> {
    let (out, mut rest) = args.split_first()?;
    if out.starts_with('-') {
        return None;
    }
    let mut shape = DEFAULT_SHAPE;
    while let [flag, value, tail @ ..] = rest {
        let n: u64 = value.parse().ok()?;
        match flag.as_str() {
            "--disk-mib" => shape.disk_mib = n,
            "--random-mib" => shape.random_bytes = n << 20,
            _ => return None,
        }
        rest = tail;
    }
    let fits = shape.disk_mib >= 2 && (1 << 20) + shape.random_bytes + 4096 <= shape.disk_mib << 20;
    (rest.is_empty() && fits).then_some((out.as_str(), shape))
}

fn run(out: &Path, shape: Shape) -> Result<()> {
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let work = out.join(".make-demo-ova");
    if work.exists() {
        fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    }
    fs::create_dir(&work).with_context(|| format!("creating {}", work.display()))?;

    let raw = out.join(format!("{NAME}-disk1.raw"));
    write_raw_disk(&raw, shape)?;
    let vmdk_name = format!("{NAME}-disk1.vmdk");
    let vmdk = work.join(&vmdk_name);
    qemu_img_stream_optimized(&raw, &vmdk)?;
    fix_cid(&vmdk)?;
    let vmdk_size = fs::metadata(&vmdk)?.len();

    let ovf_name = format!("{NAME}.ovf");
    let ovf = descriptor(&vmdk_name, vmdk_size, shape.disk_mib);
    let ovf_path = work.join(&ovf_name);
    fs::write(&ovf_path, &ovf)?;

    let mf_name = format!("{NAME}.mf");
    let mut mf = String::new();
    for (name, path) in [(&ovf_name, &ovf_path), (&vmdk_name, &vmdk)] {
        let d = file_digests(path, &[Algorithm::Sha256])
            .with_context(|| format!("hashing {}", path.display()))?;
        let hex = d.sha256.context("no SHA-256 computed")?;
        writeln!(mf, "SHA256({name})= {hex}")?;
    }
    let mf_path = work.join(&mf_name);
    fs::write(&mf_path, &mf)?;

    let ova = out.join(format!("{NAME}.ova"));
    pack(
        &ova,
        &[
            (ovf_name.as_str(), ovf_path.as_path()),
            (mf_name.as_str(), mf_path.as_path()),
            (vmdk_name.as_str(), vmdk.as_path()),
        ],
    )?;
    fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;

    let sha = file_digests(&ova, &[Algorithm::Sha256])?
        .sha256
        .unwrap_or_default();
    println!(
        "{}  {} bytes  sha256 {sha}",
        ova.display(),
        fs::metadata(&ova)?.len()
    );
    println!(
        "{}  {} MiB (the source disk)",
        raw.display(),
        shape.disk_mib
    );
    Ok(())
}

/// A sparse raw disk with recognisable, deterministic content.
fn write_raw_disk(path: &Path, shape: Shape) -> Result<()> {
    let mut f = fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    f.set_len(shape.disk_mib << 20)?;
    f.write_all(MARKER)?;
    // xorshift64* output from 1 MiB on: incompressible, so the VMDK has real grains.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    f.seek(SeekFrom::Start(1 << 20))?;
    let mut left = shape.random_bytes;
    let mut random = Vec::with_capacity(1 << 20);
    while left > 0 {
        random.clear();
        let n = usize::try_from(left.min(1 << 20))?;
        while random.len() < n {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            random.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
        random.truncate(n);
        f.write_all(&random)?;
        left -= n as u64;
    }
    // A text block at 32 MiB (on disks large enough).
    if shape.disk_mib > 33 {
        let mut text = String::new();
        for i in 0..2048 {
            writeln!(text, "vm-import demo block {i:05}")?;
        }
        f.seek(SeekFrom::Start(32 << 20))?;
        f.write_all(text.as_bytes())?;
    }
    f.seek(SeekFrom::Start((shape.disk_mib << 20) - 4096))?;
    f.write_all(END_MARKER)?;
    f.sync_all()?;
    Ok(())
}

fn qemu_img_stream_optimized(raw: &Path, vmdk: &Path) -> Result<()> {
    let out = Command::new("qemu-img")
        .args([
            "convert",
            "-f",
            "raw",
            "-O",
            "vmdk",
            "-o",
            "subformat=streamOptimized",
        ])
        .arg(raw)
        .arg(vmdk)
        .output()
        .context("running qemu-img (install qemu-utils)")?;
    if !out.status.success() {
        bail!(
            "qemu-img convert failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Replaces the random `CID=xxxxxxxx` in the VMDK's embedded descriptor (in its first 64 KiB)
/// with a fixed value of the same length.
fn fix_cid(vmdk: &Path) -> Result<()> {
    let mut data = fs::read(vmdk)?;
    let head = data.len().min(64 << 10);
    let at = data[..head]
        .windows(5)
        .position(|w| w == b"\nCID=")
        .context("no CID= line in the VMDK descriptor")?
        + 5;
    // qemu-img prints the CID with `%x`: 1 to 8 hex digits.
    let end = at
        + data[at..head]
            .iter()
            .position(|b| *b == b'\n')
            .context("CID= line not terminated in the VMDK descriptor")?;
    let old = &data[at..end];
    if old.is_empty() || old.len() > FIXED_CID.len() || !old.iter().all(u8::is_ascii_hexdigit) {
        bail!("unexpected CID value in the VMDK descriptor");
    }
    // A shorter CID grows the descriptor text into the NUL padding that follows it, so that
    // every offset after the descriptor stays where it was.
    let grow = FIXED_CID.len() - old.len();
    let nul = end
        + data[end..head]
            .iter()
            .position(|b| *b == 0)
            .context("no padding after the VMDK descriptor")?;
    if data.len() < nul + grow || data[nul..nul + grow].iter().any(|b| *b != 0) {
        bail!("not enough padding after the VMDK descriptor to fix its CID");
    }
    data.splice(at..end, FIXED_CID.iter().copied());
    data.drain(nul + grow..nul + 2 * grow);
    fs::write(vmdk, data)?;
    Ok(())
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The NetworkSection's networks and the NIC items, one per network.
fn networks_and_nics() -> (String, String) {
    let mut nets = String::new();
    let mut nics = String::new();
    for (i, (net, mac)) in NETWORKS.iter().zip(MACS).enumerate() {
        let net = xml_escape(net);
        let _ = write!(
            nets,
            "    <Network ovf:name=\"{net}\">\n      <Description>The {net} network</Description>\n    </Network>\n"
        );
        let _ = write!(
            nics,
            r"      <Item>
        <rasd:Address>{mac}</rasd:Address>
        <rasd:AddressOnParent>{unit}</rasd:AddressOnParent>
        <rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>
        <rasd:Connection>{net}</rasd:Connection>
        <rasd:Description>E1000 ethernet adapter on &quot;{net}&quot;</rasd:Description>
        <rasd:ElementName>Network adapter {n}</rasd:ElementName>
        <rasd:InstanceID>{id}</rasd:InstanceID>
        <rasd:ResourceSubType>E1000</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType>
      </Item>
",
            unit = 7 + i,
            n = i + 1,
            id = 5 + i,
        );
    }
    (nets, nics)
}

/// The OVF 1.0 descriptor, in the shape VMware's ovftool writes.
fn descriptor(vmdk_name: &str, vmdk_size: u64, disk_mib: u64) -> String {
    let (nets, nics) = networks_and_nics();
    let vmdk_name = xml_escape(vmdk_name);
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!--Generated by vm-import make-demo-ova-->
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:cim="http://schemas.dmtf.org/wbem/wscim/1/common" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <References>
    <File ovf:href="{vmdk_name}" ovf:id="file1" ovf:size="{vmdk_size}"/>
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
    <Disk ovf:capacity="{disk_mib}" ovf:capacityAllocationUnits="byte * 2^20" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <NetworkSection>
    <Info>The list of logical networks</Info>
{nets}  </NetworkSection>
  <VirtualSystem ovf:id="{NAME}">
    <Info>A virtual machine</Info>
    <Name>{NAME}</Name>
    <OperatingSystemSection ovf:id="101" vmw:osType="otherLinux64Guest">
      <Info>The kind of installed guest operating system</Info>
      <Description>Other Linux (64-bit)</Description>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>{NAME}</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>vmx-15</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>
        <rasd:Description>Number of Virtual CPUs</rasd:Description>
        <rasd:ElementName>2 virtual CPU(s)</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>2</rasd:VirtualQuantity>
        <vmw:CoresPerSocket ovf:required="false">1</vmw:CoresPerSocket>
      </Item>
      <Item>
        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:Description>Memory Size</rasd:Description>
        <rasd:ElementName>2048MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>2048</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:Description>SATA Controller</rasd:Description>
        <rasd:ElementName>SATA controller 0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>vmware.sata.ahci</rasd:ResourceSubType>
        <rasd:ResourceType>20</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>0</rasd:AddressOnParent>
        <rasd:ElementName>Hard disk 1</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource>
        <rasd:InstanceID>4</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>
{nics}      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="efi"/>
      <vmw:Config ovf:required="false" vmw:key="bootOptions.efiSecureBootEnabled" vmw:value="false"/>
    </VirtualHardwareSection>
    <AnnotationSection ovf:required="false">
      <Info>A human-readable annotation</Info>
      <Annotation>vm-import demo VM: a 64 MiB disk with a marker, no operating system.</Annotation>
    </AnnotationSection>
  </VirtualSystem>
</Envelope>
"#
    )
}

/// Packs the entries, in this order, into a deterministic ustar archive (written to a
/// `.part` file, then renamed).
fn pack(ova: &Path, entries: &[(&str, &Path)]) -> Result<()> {
    let part: PathBuf = ova.with_extension("ova.part");
    let file = fs::File::create(&part).with_context(|| format!("creating {}", part.display()))?;
    let mut builder = tar::Builder::new(std::io::BufWriter::new(file));
    for (name, path) in entries {
        let data = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut header = tar::Header::new_ustar();
        header.set_path(name)?;
        header.set_size(data.metadata()?.len());
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(MTIME);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        builder
            .append(&header, data)
            .with_context(|| format!("adding {name}"))?;
    }
    let mut w = builder.into_inner()?;
    w.flush()?;
    w.into_inner()
        .map_err(std::io::IntoInnerError::into_error)?
        .sync_all()?;
    fs::rename(&part, ova).with_context(|| format!("renaming to {}", ova.display()))?;
    Ok(())
}
