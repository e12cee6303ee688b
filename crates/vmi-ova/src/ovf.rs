//! OVF descriptors (DMTF DSP0243, 1.x and 2.x): parsing into plain data ([`parse`]) and the
//! translation of one VirtualSystem into the neutral [`VmModel`] ([`describe`]).
//!
//! Parsing is namespace-aware: elements and attributes are matched by namespace URI and local
//! name, never by prefix (VMware writes `ovf:`/`rasd:`/`vmw:`, VirtualBox makes OVF the default
//! namespace, other tools pick their own). Tolerances for what exporters really write are listed
//! in the crate's README.md and tested in `tests/ovf_parse.rs`.
//!
//! # Disk order (the boot disk first)
//!
//! OVF has no portable boot order, so disks are ordered by where they are attached:
//! 0. disks VMware names in `vmw:BootOrderSection vmw:type="disk"` (the item's `InstanceID`),
//!    first, in the order of those sections;
//! 1. then by controller. Controllers of one kind (IDE, SCSI, SATA, other) form a group; groups
//!    come in the order of their lowest `InstanceID` (exporters number controllers in the order
//!    the VM has them: VMware's SCSI controller 0 before SATA, VirtualBox's IDE controllers
//!    before SATA, which is also the order their BIOSes look for a boot disk in); within a
//!    group, by bus number (`rasd:Address`: vCenter lists "IDE 1" before "IDE 0"), then by
//!    `InstanceID`. Disks without a `Parent` come last;
//! 2. then by `AddressOnParent` (SCSI unit, SATA port, IDE channel position), numerically;
//! 3. then in the order of the disk items in the descriptor.
//!
//! # NICs
//!
//! In the order of their items in the descriptor (which is the VM's device order for every
//! exporter we know).

use serde::Serialize;
use vmi_api::{DiskBus, NetworkInterfaceModel};
use vmi_core::model::{
    BootMode, CpuTopology, Disk, DiskSource, Firmware, NetworkRef, Nic, VmModel,
};

use crate::units::{normalize_mac, unit_bytes};
use crate::xml::{self, Element};

/// The OVF 1.x envelope namespace.
pub const OVF1_NS: &str = "http://schemas.dmtf.org/ovf/envelope/1";
/// The OVF 2.x envelope namespace.
pub const OVF2_NS: &str = "http://schemas.dmtf.org/ovf/envelope/2";
/// VMware's extensions (`vmw:Config`, `vmw:CoresPerSocket`, …).
pub const VMW_NS: &str = "http://www.vmware.com/schema/ovf";
/// VirtualBox's extensions (`vbox:Machine`).
pub const VBOX_NS: &str = "http://www.virtualbox.org/ovf/machine";
/// Prefix of the CIM namespaces the hardware items' properties live in (`rasd:`, `sasd:`,
/// `epasd:`, `vssd:`).
const CIM_NS_PREFIX: &str = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/";
const XSI_NS: &str = "http://www.w3.org/2001/XMLSchema-instance";

/// Largest descriptor accepted, in bytes. Real ones are a few tens of KiB.
pub const MAX_DESCRIPTOR_BYTES: usize = 16 << 20;

const MIB: u128 = 1 << 20;

/// Most `File`s, `Disk`s, `Network`s, configurations, VirtualSystems, items per system and
/// boot order entries accepted: real VMs have tens; the bound keeps every lookup cheap.
pub const MAX_ENTRIES: usize = 4096;

/// Why a descriptor cannot be read or described. Each message names the element (and the
/// attribute or property) at fault and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OvfError {
    #[error("the OVF descriptor is {size} bytes, more than the {limit} bytes accepted")]
    TooLarge { size: usize, limit: usize },
    #[error(
        "the OVF descriptor is not UTF-8 text (invalid byte at offset {offset}); \
         convert it to UTF-8"
    )]
    NotUtf8 { offset: usize },
    #[error("the OVF descriptor is not well-formed XML: line {line}, column {column}: {message}")]
    Xml {
        line: usize,
        column: usize,
        message: String,
    },
    #[error(
        "the root element is {found}, not an OVF Envelope (namespace {OVF1_NS} for OVF 1.x or \
         {OVF2_NS} for OVF 2.x)"
    )]
    NotAnEnvelope { found: String },
    #[error("{element}: the attribute {attribute} is missing")]
    MissingAttribute { element: String, attribute: String },
    #[error("{element}: the element {child} is missing")]
    MissingElement { element: String, child: String },
    #[error("{element}: {field} {value:?} is invalid: {reason}")]
    InvalidValue {
        element: String,
        field: String,
        value: String,
        reason: String,
    },
    #[error("{element}: {field} {reference:?} does not name any {target}")]
    DanglingReference {
        element: String,
        field: String,
        reference: String,
        target: String,
    },
    #[error("{element}: {field} {value:?} appears more than once")]
    Duplicate {
        element: String,
        field: String,
        value: String,
    },
    #[error("the envelope has no VirtualSystem")]
    NoVirtualSystem,
    #[error("no VirtualSystem has the id or name {wanted:?}; the descriptor has: {available}")]
    NoSuchVirtualSystem { wanted: String, available: String },
    #[error("the descriptor has no deployment configuration {wanted:?}; it has: {available}")]
    NoSuchConfiguration { wanted: String, available: String },
    #[error("{element}: {what} is not supported")]
    Unsupported { element: String, what: String },
    #[error("{element}: more than {limit} {what}; this is not a VM descriptor vm-import accepts")]
    TooMany {
        element: String,
        what: String,
        limit: usize,
    },
}

/// Fails when `len` reached [`MAX_ENTRIES`] before adding one more.
fn room(len: usize, element: &str, what: &str) -> Result<(), OvfError> {
    if len >= MAX_ENTRIES {
        return Err(OvfError::TooMany {
            element: element.to_owned(),
            what: what.to_owned(),
            limit: MAX_ENTRIES,
        });
    }
    Ok(())
}

/// The OVF major version of an envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum OvfVersion {
    /// `http://schemas.dmtf.org/ovf/envelope/1` (OVF 1.0, 1.1).
    #[serde(rename = "1.x")]
    V1,
    /// `http://schemas.dmtf.org/ovf/envelope/2` (OVF 2.0, 2.1).
    #[serde(rename = "2.x")]
    V2,
}

impl OvfVersion {
    /// The envelope namespace of this version.
    pub fn namespace(self) -> &'static str {
        match self {
            OvfVersion::V1 => OVF1_NS,
            OvfVersion::V2 => OVF2_NS,
        }
    }
}

/// A parsed OVF envelope: the parts vm-import uses, as written (no defaults applied except
/// where noted).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Envelope {
    pub version: OvfVersion,
    /// `References/File`, in document order.
    pub files: Vec<FileRef>,
    /// `DiskSection/Disk`, in document order.
    pub disks: Vec<VirtualDisk>,
    /// `NetworkSection/Network`, in document order.
    pub networks: Vec<Network>,
    /// `DeploymentOptionSection/Configuration`, in document order.
    pub configurations: Vec<Configuration>,
    /// Every `VirtualSystem`, including those inside `VirtualSystemCollection`s, in document
    /// order.
    pub systems: Vec<VirtualSystem>,
}

/// `References/File`: a file of the package.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FileRef {
    /// `ovf:id`.
    pub id: String,
    /// `ovf:href`: in an OVA, the name of the tar entry.
    pub href: String,
    /// `ovf:size` in bytes, when given.
    pub size: Option<u64>,
    /// `ovf:compression` (`gzip`), when given: the file is stored compressed.
    pub compression: Option<String>,
    /// `ovf:chunkSize`, when given: the file is stored split into chunks.
    pub chunk_size: Option<u64>,
}

/// `DiskSection/Disk`: a virtual disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VirtualDisk {
    /// `ovf:diskId`.
    pub disk_id: String,
    /// `ovf:fileRef`; `None` for an empty disk the deployer is asked to create.
    pub file_ref: Option<String>,
    /// `ovf:capacity` times `ovf:capacityAllocationUnits` (bytes when absent).
    pub capacity_bytes: u64,
    /// `ovf:populatedSize`, when given.
    pub populated_size: Option<u64>,
    /// `ovf:format`, the format URL as written.
    pub format_url: Option<String>,
    /// The format `ovf:format` designates.
    pub format: DiskFormat,
}

/// Disk file formats, from `ovf:format` URLs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum DiskFormat {
    /// `…vmdk.html#streamOptimized`: what VMware and VirtualBox put in OVAs.
    VmdkStreamOptimized,
    /// `…vmdk.html#sparse` or `#monolithicSparse`.
    VmdkSparse,
    /// Another or no VMDK sub-format.
    Vmdk,
    Qcow2,
    Vhd,
    Vhdx,
    Vdi,
    Raw,
    /// No `ovf:format`, or one we do not recognise.
    Unknown,
}

impl DiskFormat {
    /// Reads an `ovf:format` URL.
    pub fn from_url(url: &str) -> DiskFormat {
        let u = url.trim().to_ascii_lowercase();
        let fragment = u.rsplit_once('#').map_or("", |(_, f)| f);
        if u.contains("vmdk") {
            match fragment {
                "streamoptimized" => DiskFormat::VmdkStreamOptimized,
                "sparse" | "monolithicsparse" => DiskFormat::VmdkSparse,
                _ => DiskFormat::Vmdk,
            }
        } else if u.contains("qcow") {
            DiskFormat::Qcow2
        } else if u.contains("vhdx") {
            DiskFormat::Vhdx
        } else if u.contains("vhd") || u.contains("bb676673") {
            // Microsoft's VHD specification page is `…/bb676673.aspx`.
            DiskFormat::Vhd
        } else if u.contains("vdi") {
            DiskFormat::Vdi
        } else if u.ends_with("raw") || fragment == "raw" {
            DiskFormat::Raw
        } else {
            DiskFormat::Unknown
        }
    }
}

/// `NetworkSection/Network`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Network {
    /// `ovf:name`.
    pub name: String,
    pub description: Option<String>,
}

/// `DeploymentOptionSection/Configuration`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Configuration {
    pub id: String,
    pub label: Option<String>,
    /// `ovf:default="true"`.
    pub default: bool,
}

/// A `VirtualSystem`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VirtualSystem {
    /// `ovf:id`.
    pub id: Option<String>,
    /// The `Name` element.
    pub name: Option<String>,
    /// `AnnotationSection/Annotation`, else a `Description` element, else VirtualBox's machine
    /// description.
    pub description: Option<String>,
    /// `System/vssd:VirtualSystemType` of the hardware section (`vmx-13`, `virtualbox-2.2`).
    pub system_type: Option<String>,
    /// Items of the (first) `VirtualHardwareSection`, in document order.
    pub items: Vec<Item>,
    /// `vmw:Config` and `vmw:ExtraConfig` of the hardware section, in document order.
    pub extra_config: Vec<KeyValue>,
    /// VirtualBox's own machine description (`vbox:Machine`), when present.
    pub vbox: Option<VboxMachine>,
    /// `InstanceID`s of the disk items in VMware's `vmw:BootOrderSection`s of type `disk`, in
    /// order.
    pub boot_disks: Vec<String>,
}

/// Which element an item came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ItemKind {
    /// `Item` (CIM_ResourceAllocationSettingData).
    Item,
    /// `StorageItem` (OVF 2, CIM_StorageAllocationSettingData).
    StorageItem,
    /// `EthernetPortItem` (OVF 2, CIM_EthernetPortAllocationSettingData).
    EthernetPortItem,
}

/// A virtual hardware item: the CIM properties vm-import reads, as written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Item {
    pub kind: ItemKind,
    pub instance_id: Option<String>,
    pub resource_type: u16,
    pub resource_sub_type: Option<String>,
    /// `ElementName`, else `Caption`.
    pub element_name: Option<String>,
    pub virtual_quantity: Option<u64>,
    /// `AllocationUnits`, else `VirtualQuantityUnits`.
    pub allocation_units: Option<String>,
    pub parent: Option<String>,
    pub address: Option<String>,
    pub address_on_parent: Option<String>,
    pub host_resources: Vec<String>,
    pub connections: Vec<String>,
    /// VMware's `vmw:CoresPerSocket` (element or attribute).
    pub cores_per_socket: Option<u32>,
    /// `ovf:configuration`: the deployment configurations the item belongs to (all if empty).
    pub configurations: Vec<String>,
    /// `ovf:bound` (`min`, `max`, `normal`).
    pub bound: Option<String>,
    /// `vmw:Config` children.
    pub config: Vec<KeyValue>,
}

/// A `vmw:Config`/`vmw:ExtraConfig` key and value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

/// What vm-import reads of VirtualBox's `vbox:Machine` (all optional: it is an extension).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VboxMachine {
    pub description: Option<String>,
    pub cpu_count: Option<u32>,
    pub memory_mib: Option<u64>,
    /// `Firmware/@type`: `BIOS`, `EFI`, `EFI32`, `EFI64`, `EFIDUAL`.
    pub firmware: Option<String>,
    /// `TrustedPlatformModule/@type`: `None`, `v1_2`, `v2_0`.
    pub tpm: Option<String>,
    /// `Network/Adapter`, in slot order.
    pub adapters: Vec<VboxAdapter>,
}

/// A VirtualBox network adapter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VboxAdapter {
    pub slot: u32,
    pub enabled: bool,
    /// Normalised to `aa:bb:cc:dd:ee:ff`.
    pub mac: Option<String>,
}

// CIM ResourceType values (DSP1041 / CIM_ResourceAllocationSettingData).
const RT_OTHER: u16 = 1;
const RT_PROCESSOR: u16 = 3;
const RT_MEMORY: u16 = 4;
const RT_IDE: u16 = 5;
const RT_SCSI: u16 = 6;
const RT_ETHERNET: u16 = 10;
const RT_DISK: u16 = 17;
const RT_OTHER_STORAGE: u16 = 20;
const RT_LOGICAL_DISK: u16 = 31;

/// Parses an OVF 1.x or 2.x descriptor (UTF-8, with or without a byte-order mark).
pub fn parse(descriptor: &[u8]) -> Result<Envelope, OvfError> {
    if descriptor.len() > MAX_DESCRIPTOR_BYTES {
        return Err(OvfError::TooLarge {
            size: descriptor.len(),
            limit: MAX_DESCRIPTOR_BYTES,
        });
    }
    let bytes = descriptor
        .strip_prefix(b"\xEF\xBB\xBF")
        .unwrap_or(descriptor);
    let text = std::str::from_utf8(bytes).map_err(|e| OvfError::NotUtf8 {
        offset: e.valid_up_to(),
    })?;
    let root = xml::parse(text).map_err(|e| OvfError::Xml {
        line: e.line,
        column: e.column,
        message: e.message,
    })?;
    let version = match (root.name.as_str(), root.ns.as_deref()) {
        ("Envelope", Some(OVF1_NS)) => OvfVersion::V1,
        ("Envelope", Some(OVF2_NS)) => OvfVersion::V2,
        _ => {
            return Err(OvfError::NotAnEnvelope {
                found: match &root.ns {
                    Some(ns) => format!("{{{ns}}}{}", root.name),
                    None => format!("{} (in no namespace)", root.name),
                },
            });
        }
    };
    let cx = Cx {
        ovf: version.namespace(),
    };

    let mut env = Envelope {
        version,
        files: Vec::new(),
        disks: Vec::new(),
        networks: Vec::new(),
        configurations: Vec::new(),
        systems: Vec::new(),
    };
    if let Some(refs) = root.child(cx.ovf, "References") {
        for f in refs.children_named(cx.ovf, "File") {
            room(env.files.len(), "References", "File elements")?;
            let file = cx.file(f)?;
            if env.file(&file.id).is_some() {
                return Err(OvfError::Duplicate {
                    element: "References/File".into(),
                    field: "ovf:id".into(),
                    value: file.id,
                });
            }
            env.files.push(file);
        }
    }
    for section in &root.children {
        cx.section(section, &mut env)?;
    }
    cx.collect_systems(&root, &mut env.systems)?;
    Ok(env)
}

/// Parsing context: the envelope namespace in force.
struct Cx {
    ovf: &'static str,
}

impl Cx {
    /// An OVF attribute: qualified with the envelope namespace as the schema wants, or
    /// unqualified as some generators write it.
    fn attr<'a>(&self, el: &'a Element, name: &str) -> Option<&'a str> {
        el.attr(Some(self.ovf), name)
            .or_else(|| el.attr(None, name))
    }

    /// The section an element is: its name, or for the OVF 0.9/1.0-draft style
    /// `<Section xsi:type="ovf:DiskSection_Type">` the type's name.
    fn section_kind(&self, el: &Element) -> Option<String> {
        if el.ns.as_deref() != Some(self.ovf) {
            return None;
        }
        if el.name == "Section" {
            let ty = el.attr(Some(XSI_NS), "type")?;
            let local = ty.rsplit_once(':').map_or(ty, |(_, l)| l);
            return Some(local.trim_end_matches("_Type").to_owned());
        }
        Some(el.name.clone())
    }

    /// Reads an envelope-level section vm-import uses into `env`; ignores the others.
    fn section(&self, section: &Element, env: &mut Envelope) -> Result<(), OvfError> {
        match self.section_kind(section).as_deref() {
            Some("DiskSection") => {
                for d in section.children_named(self.ovf, "Disk") {
                    room(env.disks.len(), "DiskSection", "Disk elements")?;
                    let disk = self.disk(d)?;
                    if env.disk(&disk.disk_id).is_some() {
                        return Err(OvfError::Duplicate {
                            element: "DiskSection/Disk".into(),
                            field: "ovf:diskId".into(),
                            value: disk.disk_id,
                        });
                    }
                    env.disks.push(disk);
                }
            }
            Some("NetworkSection") => {
                for n in section.children_named(self.ovf, "Network") {
                    room(env.networks.len(), "NetworkSection", "Network elements")?;
                    let name = self
                        .attr(n, "name")
                        .ok_or_else(|| OvfError::MissingAttribute {
                            element: "NetworkSection/Network".into(),
                            attribute: "ovf:name".into(),
                        })?;
                    env.networks.push(Network {
                        name: name.to_owned(),
                        description: n
                            .child(self.ovf, "Description")
                            .and_then(Element::trimmed_text)
                            .map(str::to_owned),
                    });
                }
            }
            Some("DeploymentOptionSection") => {
                for c in section.children_named(self.ovf, "Configuration") {
                    room(
                        env.configurations.len(),
                        "DeploymentOptionSection",
                        "Configuration elements",
                    )?;
                    let id = self
                        .attr(c, "id")
                        .ok_or_else(|| OvfError::MissingAttribute {
                            element: "DeploymentOptionSection/Configuration".into(),
                            attribute: "ovf:id".into(),
                        })?;
                    env.configurations.push(Configuration {
                        id: id.to_owned(),
                        label: c
                            .child(self.ovf, "Label")
                            .and_then(Element::trimmed_text)
                            .map(str::to_owned),
                        default: self
                            .attr(c, "default")
                            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true")),
                    });
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn file(&self, f: &Element) -> Result<FileRef, OvfError> {
        let id = self
            .attr(f, "id")
            .ok_or_else(|| OvfError::MissingAttribute {
                element: "References/File".into(),
                attribute: "ovf:id".into(),
            })?
            .to_owned();
        let element = || format!("References/File {id:?}");
        let href = self
            .attr(f, "href")
            .ok_or_else(|| OvfError::MissingAttribute {
                element: element(),
                attribute: "ovf:href".into(),
            })?
            .to_owned();
        let size = self
            .attr(f, "size")
            .map(|v| parse_u64(v).map_err(|reason| invalid(element(), "ovf:size", v, reason)))
            .transpose()?;
        let chunk_size = self
            .attr(f, "chunkSize")
            .map(|v| parse_u64(v).map_err(|reason| invalid(element(), "ovf:chunkSize", v, reason)))
            .transpose()?;
        Ok(FileRef {
            id,
            href,
            size,
            compression: self
                .attr(f, "compression")
                .map(|c| c.trim().to_owned())
                .filter(|c| !c.is_empty() && !c.eq_ignore_ascii_case("identity")),
            chunk_size,
        })
    }

    fn disk(&self, d: &Element) -> Result<VirtualDisk, OvfError> {
        let disk_id = self
            .attr(d, "diskId")
            .ok_or_else(|| OvfError::MissingAttribute {
                element: "DiskSection/Disk".into(),
                attribute: "ovf:diskId".into(),
            })?
            .to_owned();
        let element = || format!("DiskSection/Disk {disk_id:?}");
        let capacity = self
            .attr(d, "capacity")
            .ok_or_else(|| OvfError::MissingAttribute {
                element: element(),
                attribute: "ovf:capacity".into(),
            })?;
        if capacity.contains("${") {
            return Err(OvfError::Unsupported {
                element: element(),
                what: format!(
                    "ovf:capacity {capacity:?} refers to a property (a disk sized at deployment)"
                ),
            });
        }
        let quantity = parse_u64(capacity)
            .map_err(|reason| invalid(element(), "ovf:capacity", capacity, reason))?;
        let units = self.attr(d, "capacityAllocationUnits");
        let unit = match units {
            None => 1,
            Some(u) => unit_bytes(u).ok_or_else(|| {
                invalid(
                    element(),
                    "ovf:capacityAllocationUnits",
                    u,
                    "not a unit of bytes (expected e.g. \"byte * 2^30\" or \"GigaBytes\")",
                )
            })?,
        };
        let capacity_bytes = u128::from(quantity)
            .checked_mul(unit)
            .and_then(|b| u64::try_from(b).ok())
            .ok_or_else(|| {
                invalid(
                    element(),
                    "ovf:capacity",
                    capacity,
                    format!(
                        "{quantity} × {} bytes does not fit in 64 bits",
                        units.unwrap_or("1")
                    ),
                )
            })?;
        let populated_size = self
            .attr(d, "populatedSize")
            .map(|v| {
                parse_u64(v).map_err(|reason| invalid(element(), "ovf:populatedSize", v, reason))
            })
            .transpose()?;
        let format_url = self.attr(d, "format").map(str::to_owned);
        Ok(VirtualDisk {
            format: format_url
                .as_deref()
                .map_or(DiskFormat::Unknown, DiskFormat::from_url),
            disk_id,
            file_ref: self
                .attr(d, "fileRef")
                .map(str::to_owned)
                .filter(|f| !f.is_empty()),
            capacity_bytes,
            populated_size,
            format_url,
        })
    }

    fn collect_systems(&self, el: &Element, out: &mut Vec<VirtualSystem>) -> Result<(), OvfError> {
        for c in &el.children {
            if c.is(self.ovf, "VirtualSystem") {
                room(out.len(), "Envelope", "VirtualSystem elements")?;
                out.push(self.system(c)?);
            } else if c.is(self.ovf, "VirtualSystemCollection") {
                self.collect_systems(c, out)?;
            }
        }
        Ok(())
    }

    fn system(&self, vs: &Element) -> Result<VirtualSystem, OvfError> {
        let id = self.attr(vs, "id").map(str::to_owned);
        let name = vs
            .child(self.ovf, "Name")
            .and_then(Element::trimmed_text)
            .map(str::to_owned);
        let label = format!(
            "VirtualSystem {:?}",
            id.as_deref().or(name.as_deref()).unwrap_or("")
        );
        let vbox = vs.child(VBOX_NS, "Machine").map(vbox_machine);
        let description = vs
            .children
            .iter()
            .filter(|c| self.section_kind(c).as_deref() == Some("AnnotationSection"))
            .find_map(|a| {
                a.child(self.ovf, "Annotation")
                    .and_then(Element::trimmed_text)
            })
            .or_else(|| {
                vs.child(self.ovf, "Description")
                    .and_then(Element::trimmed_text)
            })
            .map(str::to_owned)
            .or_else(|| vbox.as_ref().and_then(|v| v.description.clone()));

        let mut items = Vec::new();
        let mut extra_config = Vec::new();
        let mut system_type = None;
        if let Some(hw) = vs
            .children
            .iter()
            .find(|c| self.section_kind(c).as_deref() == Some("VirtualHardwareSection"))
        {
            system_type = hw
                .child(self.ovf, "System")
                .and_then(|s| s.child_any_ns("VirtualSystemType"))
                .and_then(Element::trimmed_text)
                .map(str::to_owned);
            for c in &hw.children {
                let kind = match (c.ns.as_deref(), c.name.as_str()) {
                    (Some(ns), "Item") if ns == self.ovf => Some(ItemKind::Item),
                    (Some(ns), "StorageItem") if ns == self.ovf => Some(ItemKind::StorageItem),
                    (Some(ns), "EthernetPortItem") if ns == self.ovf => {
                        Some(ItemKind::EthernetPortItem)
                    }
                    (Some(VMW_NS), "Config" | "ExtraConfig") => {
                        if let Some(kv) = key_value(c) {
                            extra_config.push(kv);
                        }
                        None
                    }
                    _ => None,
                };
                if let Some(kind) = kind {
                    room(items.len(), &label, "hardware items")?;
                    items.push(self.item(c, kind, &label, items.len())?);
                }
            }
        }
        let boot_disks = vs
            .children
            .iter()
            .filter(|c| c.is(VMW_NS, "BootOrderSection"))
            .filter(|c| {
                c.attr_prefer(&[Some(VMW_NS)], "type")
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("disk"))
            })
            .filter_map(|c| c.attr_prefer(&[Some(VMW_NS)], "instanceId"))
            .map(|id| id.trim().to_owned())
            .take(MAX_ENTRIES)
            .collect();
        Ok(VirtualSystem {
            id,
            name,
            description,
            system_type,
            items,
            extra_config,
            vbox,
            boot_disks,
        })
    }

    fn item(
        &self,
        el: &Element,
        kind: ItemKind,
        system: &str,
        index: usize,
    ) -> Result<Item, OvfError> {
        let cim = |name: &'static str| cim_children(el, name);
        let text =
            |name: &'static str| cim(name).find_map(Element::trimmed_text).map(str::to_owned);
        let instance_id = text("InstanceID");
        let element_name = text("ElementName").or_else(|| text("Caption"));
        let label = item_label(
            system,
            kind,
            index,
            instance_id.as_deref(),
            element_name.as_deref(),
        );
        let resource_type = match text("ResourceType") {
            None => {
                return Err(OvfError::MissingElement {
                    element: label,
                    child: "rasd:ResourceType".into(),
                });
            }
            Some(t) => t.parse::<u16>().map_err(|_| {
                invalid(
                    label.clone(),
                    "rasd:ResourceType",
                    &t,
                    "not a CIM resource type number",
                )
            })?,
        };
        let virtual_quantity = text("VirtualQuantity")
            .map(|v| {
                parse_u64(&v)
                    .map_err(|reason| invalid(label.clone(), "rasd:VirtualQuantity", &v, reason))
            })
            .transpose()?;
        let cores_text = el
            .children
            .iter()
            .find(|c| c.name == "CoresPerSocket")
            .and_then(Element::trimmed_text)
            .or_else(|| el.attr_prefer(&[Some(VMW_NS)], "CoresPerSocket"));
        let cores_per_socket = cores_text
            .map(|v| {
                v.trim().parse::<u32>().map_err(|_| {
                    invalid(label.clone(), "vmw:CoresPerSocket", v, "not a whole number")
                })
            })
            .transpose()?;
        Ok(Item {
            kind,
            resource_type,
            resource_sub_type: text("ResourceSubType"),
            element_name,
            virtual_quantity,
            allocation_units: text("AllocationUnits").or_else(|| text("VirtualQuantityUnits")),
            parent: text("Parent"),
            address: text("Address"),
            address_on_parent: text("AddressOnParent"),
            host_resources: cim("HostResource")
                .filter_map(Element::trimmed_text)
                .map(str::to_owned)
                .collect(),
            connections: cim("Connection")
                .filter_map(Element::trimmed_text)
                .map(str::to_owned)
                .collect(),
            cores_per_socket,
            configurations: self
                .attr(el, "configuration")
                .map(|c| c.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default(),
            bound: self.attr(el, "bound").map(|b| b.trim().to_owned()),
            config: el
                .children
                .iter()
                .filter(|c| c.is(VMW_NS, "Config"))
                .filter_map(key_value)
                .collect(),
            instance_id,
        })
    }
}

/// Children with this local name in one of the CIM namespaces (`rasd:`, `sasd:`, `epasd:`).
fn cim_children<'a>(el: &'a Element, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
    el.children.iter().filter(move |c| {
        c.name == name
            && c.ns
                .as_deref()
                .is_some_and(|n| n.starts_with(CIM_NS_PREFIX))
    })
}

fn item_label(
    system: &str,
    kind: ItemKind,
    index: usize,
    instance_id: Option<&str>,
    element_name: Option<&str>,
) -> String {
    let kind = match kind {
        ItemKind::Item => "Item",
        ItemKind::StorageItem => "StorageItem",
        ItemKind::EthernetPortItem => "EthernetPortItem",
    };
    let at = match instance_id {
        Some(id) => format!("InstanceID {id:?}"),
        None => format!("#{}", index + 1),
    };
    match element_name {
        Some(n) => format!("{system}: {kind} {at} ({n:?})"),
        None => format!("{system}: {kind} {at}"),
    }
}

/// A `vmw:Config`/`vmw:ExtraConfig` element's key and value, whichever namespace the `key`
/// and `value` attributes are in (VMware writes `vmw:key`, other tools `ovf:key` or `key`).
fn key_value(el: &Element) -> Option<KeyValue> {
    Some(KeyValue {
        key: el.attr_prefer(&[Some(VMW_NS)], "key")?.to_owned(),
        value: el
            .attr_prefer(&[Some(VMW_NS)], "value")
            .unwrap_or_default()
            .to_owned(),
    })
}

/// VirtualBox's machine description. Its elements are matched by local name only: VirtualBox
/// writes them unprefixed, so they land in whatever the default namespace is (usually OVF's).
/// Values that do not parse are ignored: this is an optional extension.
fn vbox_machine(m: &Element) -> VboxMachine {
    let hw = m.child_any_ns("Hardware");
    // VirtualBox 7.1 moved some settings one level down (`Hardware/Platform/Firmware`).
    let hw_child = |name: &str| hw.and_then(|h| h.descendant_any_ns(name, 2));
    let mut adapters: Vec<VboxAdapter> = hw_child("Network")
        .map(|n| {
            n.children
                .iter()
                .filter(|a| a.name == "Adapter")
                .filter_map(|a| {
                    Some(VboxAdapter {
                        slot: a.attr(None, "slot")?.trim().parse().ok()?,
                        enabled: a
                            .attr(None, "enabled")
                            .is_none_or(|e| e.trim().eq_ignore_ascii_case("true")),
                        mac: a.attr(None, "MACAddress").and_then(normalize_mac),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    adapters.sort_by_key(|a| a.slot);
    VboxMachine {
        description: m
            .child_any_ns("Description")
            .and_then(Element::trimmed_text)
            .map(str::to_owned),
        cpu_count: hw_child("CPU")
            .and_then(|c| c.attr(None, "count"))
            .and_then(|c| c.trim().parse().ok()),
        memory_mib: hw_child("Memory")
            .and_then(|c| c.attr(None, "RAMSize"))
            .and_then(|c| c.trim().parse().ok()),
        firmware: hw_child("Firmware")
            .and_then(|c| c.attr(None, "type"))
            .map(|t| t.trim().to_owned()),
        tpm: hw_child("TrustedPlatformModule")
            .and_then(|c| c.attr(None, "type"))
            .map(|t| t.trim().to_owned()),
        adapters,
    }
}

fn parse_u64(v: &str) -> Result<u64, String> {
    let t = v.trim();
    if t.is_empty() {
        return Err("empty".into());
    }
    t.parse::<u64>()
        .map_err(|_| "not a non-negative whole number that fits in 64 bits".into())
}

fn invalid(
    element: impl Into<String>,
    field: &str,
    value: &str,
    reason: impl Into<String>,
) -> OvfError {
    OvfError::InvalidValue {
        element: element.into(),
        field: field.to_owned(),
        value: value.to_owned(),
        reason: reason.into(),
    }
}

/// Which VirtualSystem and deployment configuration to describe.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Selection<'a> {
    /// A VirtualSystem's `ovf:id` or `Name`; `None` for the first one.
    pub system: Option<&'a str>,
    /// A `DeploymentOptionSection` configuration id; `None` for the default one (the one
    /// marked `ovf:default="true"`, else the first).
    pub configuration: Option<&'a str>,
}

impl Envelope {
    /// The selected VirtualSystem: by `ovf:id` first, then by `Name`; the first when `None`.
    pub fn system(&self, wanted: Option<&str>) -> Result<&VirtualSystem, OvfError> {
        let Some(wanted) = wanted else {
            return self.systems.first().ok_or(OvfError::NoVirtualSystem);
        };
        self.systems
            .iter()
            .find(|s| s.id.as_deref() == Some(wanted))
            .or_else(|| {
                self.systems
                    .iter()
                    .find(|s| s.name.as_deref() == Some(wanted))
            })
            .ok_or_else(|| OvfError::NoSuchVirtualSystem {
                wanted: wanted.to_owned(),
                available: list(
                    self.systems
                        .iter()
                        .map(|s| s.id.as_deref().or(s.name.as_deref()).unwrap_or("(no id)")),
                ),
            })
    }

    /// The `File` with this `ovf:id`.
    pub fn file(&self, id: &str) -> Option<&FileRef> {
        self.files.iter().find(|f| f.id == id)
    }

    /// The `Disk` with this `ovf:diskId`.
    pub fn disk(&self, id: &str) -> Option<&VirtualDisk> {
        self.disks.iter().find(|d| d.disk_id == id)
    }

    /// The selected deployment configuration id, `None` when the descriptor has none.
    pub fn configuration(&self, wanted: Option<&str>) -> Result<Option<&str>, OvfError> {
        match wanted {
            Some(w) => self
                .configurations
                .iter()
                .find(|c| c.id == w)
                .map(|c| Some(c.id.as_str()))
                .ok_or_else(|| OvfError::NoSuchConfiguration {
                    wanted: w.to_owned(),
                    available: list(self.configurations.iter().map(|c| c.id.as_str())),
                }),
            None => Ok(self
                .configurations
                .iter()
                .find(|c| c.default)
                .or(self.configurations.first())
                .map(|c| c.id.as_str())),
        }
    }
}

fn list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let v: Vec<String> = names.map(|n| format!("{n:?}")).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

impl Item {
    /// The item applies to this deployment configuration and is not a range bound.
    fn applies(&self, configuration: Option<&str>) -> bool {
        let in_config = self.configurations.is_empty()
            || configuration.is_some_and(|c| self.configurations.iter().any(|x| x == c));
        let bound_ok = self
            .bound
            .as_deref()
            .is_none_or(|b| b.is_empty() || b.eq_ignore_ascii_case("normal"));
        in_config && bound_ok
    }

    fn sub_type_lower(&self) -> String {
        self.resource_sub_type
            .as_deref()
            .unwrap_or_default()
            .to_ascii_lowercase()
    }
}

/// A storage controller the disks hang from.
struct Controller<'a> {
    item: &'a Item,
    /// `None`: a controller KubeVirt has no bus for (NVMe, unknown): the import's default
    /// applies.
    bus: Option<DiskBus>,
    rank: usize,
}

/// Whether an item is a disk controller, and the KubeVirt bus for its disks.
enum ControllerKind {
    NotAController,
    Bus(Option<DiskBus>),
}

fn controller_kind(item: &Item) -> ControllerKind {
    let sub = item.sub_type_lower();
    ControllerKind::Bus(match item.resource_type {
        // KubeVirt has no IDE bus; SATA is what a guest with IDE drivers copes with best.
        RT_IDE => Some(DiskBus::Sata),
        // lsilogic, buslogic, lsilogicsas, VirtualSCSI (pvscsi), virtio-scsi: all SCSI.
        RT_SCSI => Some(DiskBus::Scsi),
        RT_OTHER_STORAGE => {
            if sub.contains("ahci") || sub.contains("sata") {
                Some(DiskBus::Sata)
            } else if sub.contains("virtio") && sub.contains("scsi") {
                Some(DiskBus::Scsi)
            } else if sub.contains("virtio") {
                Some(DiskBus::Virtio)
            } else if sub.contains("scsi") || sub.contains("sas") {
                Some(DiskBus::Scsi)
            } else {
                // NVMe (`vmware.nvme.controller`) and unknown controllers.
                None
            }
        }
        _ => return ControllerKind::NotAController,
    })
}

/// The KubeVirt model for a NIC's `ResourceSubType`; `None` (the import's default applies) for
/// VMXNET3 and anything KubeVirt does not emulate.
fn nic_model(sub_type: Option<&str>) -> Option<NetworkInterfaceModel> {
    use NetworkInterfaceModel as M;
    let s = sub_type?
        .trim()
        .to_ascii_lowercase()
        .replace(['_', ' '], "-");
    match s.as_str() {
        "e1000" => Some(M::E1000),
        "e1000e" => Some(M::E1000e),
        "pcnet32" | "pcnet" | "am79c970a" | "am79c973" => Some(M::Pcnet),
        "virtio" | "virtio-net" | "virtionet" | "virtio-net-pci" => Some(M::Virtio),
        "rtl8139" => Some(M::Rtl8139),
        "ne2k-pci" => Some(M::Ne2kPci),
        _ => None,
    }
}

/// The disk a disk item's `HostResource` designates: `ovf:/disk/ID` (the standard form),
/// `ovf://disk/ID` or `/disk/ID` (VirtualBox). `Err` carries what else it was.
fn host_disk(host: &str) -> Result<&str, &'static str> {
    let h = host.trim();
    let h = h.strip_prefix("ovf:").unwrap_or(h);
    let h = h.trim_start_matches('/');
    if let Some(id) = h.strip_prefix("disk/") {
        if id.is_empty() {
            return Err("an empty disk id");
        }
        return Ok(id);
    }
    if h.starts_with("file/") {
        return Err("a file, not a DiskSection disk (a disk without a capacity)");
    }
    Err("not an ovf:/disk/ reference")
}

fn truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "true" | "1" | "yes" | "on"
    )
}

/// Sort key of an id or address: numbers first, in numeric order.
type NumKey = (u8, u64);

/// Numeric sort key for instance ids and addresses: numbers first, in numeric order.
fn numeric_key(s: Option<&str>) -> NumKey {
    match s.and_then(|v| v.trim().parse::<u64>().ok()) {
        Some(n) => (0, n),
        None => (1, 0),
    }
}

/// The neutral model of the selected VirtualSystem. See the module documentation for the disk
/// and NIC order.
pub fn describe(env: &Envelope, selection: &Selection<'_>) -> Result<VmModel, OvfError> {
    let system = env.system(selection.system)?;
    let configuration = env.configuration(selection.configuration)?;
    let d = Describer {
        env,
        system,
        label: format!(
            "VirtualSystem {:?}",
            system
                .id
                .as_deref()
                .or(system.name.as_deref())
                .unwrap_or("")
        ),
        items: system
            .items
            .iter()
            .enumerate()
            .filter(|(_, i)| i.applies(configuration))
            .collect(),
    };
    let source_id = system
        .id
        .clone()
        .or_else(|| system.name.clone())
        .ok_or_else(|| OvfError::MissingAttribute {
            element: "VirtualSystem".into(),
            attribute: "ovf:id".into(),
        })?;
    Ok(VmModel {
        name: system.name.clone().unwrap_or_else(|| source_id.clone()),
        source_id,
        description: system.description.clone(),
        cpu: d.cpu()?,
        memory_mib: d.memory_mib()?,
        firmware: d.firmware(),
        disks: d.disks()?,
        nics: d.nics()?,
    })
}

/// The selected VirtualSystem with the items that apply to the selected configuration.
struct Describer<'a> {
    env: &'a Envelope,
    system: &'a VirtualSystem,
    label: String,
    /// (index among all items, item) of the applicable items, in document order.
    items: Vec<(usize, &'a Item)>,
}

/// Disk sort key: position in VMware's boot order, controller rank, address on the controller,
/// position in the descriptor.
type DiskKey = (usize, usize, NumKey, usize);

impl<'a> Describer<'a> {
    fn label_of(&self, index: usize, i: &Item) -> String {
        item_label(
            &self.label,
            i.kind,
            index,
            i.instance_id.as_deref(),
            i.element_name.as_deref(),
        )
    }

    fn of_type(&self, resource_type: u16) -> impl Iterator<Item = (usize, &'a Item)> + '_ {
        self.items
            .iter()
            .copied()
            .filter(move |(_, i)| i.resource_type == resource_type)
    }

    /// The last `vmw:Config`/`vmw:ExtraConfig` with this key (case-insensitive).
    fn config(&self, key: &str) -> Option<&'a str> {
        self.system
            .extra_config
            .iter()
            .rev()
            .find(|kv| kv.key.eq_ignore_ascii_case(key))
            .map(|kv| kv.value.as_str())
    }

    fn missing_item(&self, what: &str) -> OvfError {
        OvfError::MissingElement {
            element: format!("{}: VirtualHardwareSection", self.label),
            child: what.to_owned(),
        }
    }

    /// vCPUs from the processor item, cores per socket from `vmw:CoresPerSocket` or the
    /// `cpuid.coresPerSocket` extra config; VirtualBox's CPU count without a processor item.
    fn cpu(&self) -> Result<CpuTopology, OvfError> {
        let Some((index, i)) = self.of_type(RT_PROCESSOR).next() else {
            return match self.system.vbox.as_ref().and_then(|v| v.cpu_count) {
                Some(n) if n > 0 => Ok(CpuTopology::from_hints(n, None, None, None)),
                _ => Err(self.missing_item("Item with rasd:ResourceType 3 (processor)")),
            };
        };
        let label = self.label_of(index, i);
        let q = i.virtual_quantity.ok_or_else(|| OvfError::MissingElement {
            element: label.clone(),
            child: "rasd:VirtualQuantity".into(),
        })?;
        let vcpus = u32::try_from(q).ok().filter(|v| *v > 0).ok_or_else(|| {
            invalid(
                label,
                "rasd:VirtualQuantity",
                &q.to_string(),
                "the vCPU count must be between 1 and 4294967295",
            )
        })?;
        let cores = i.cores_per_socket.or_else(|| {
            self.config("cpuid.coresPerSocket")
                .and_then(|v| v.trim().parse().ok())
        });
        Ok(CpuTopology::from_hints(vcpus, None, cores, None))
    }

    fn memory_mib(&self) -> Result<u64, OvfError> {
        match self.of_type(RT_MEMORY).next() {
            Some((index, i)) => memory_mib(i, &self.label_of(index, i)),
            None => self
                .system
                .vbox
                .as_ref()
                .and_then(|v| v.memory_mib)
                .ok_or_else(|| self.missing_item("Item with rasd:ResourceType 4 (memory)")),
        }
    }

    /// Disk controllers, ranked as the module documentation says.
    fn controllers(&self) -> Vec<Controller<'a>> {
        let mut controllers: Vec<Controller<'a>> = self
            .items
            .iter()
            .filter_map(|(_, i)| match controller_kind(i) {
                ControllerKind::NotAController => None,
                ControllerKind::Bus(bus) => Some(Controller {
                    item: i,
                    bus,
                    rank: 0,
                }),
            })
            .collect();
        let group = |c: &Controller<'_>| (c.item.resource_type, c.bus.map(DiskBus::as_str));
        let id_key = |c: &Controller<'_>| numeric_key(c.item.instance_id.as_deref());
        let mut order: Vec<(NumKey, NumKey, NumKey, usize)> = controllers
            .iter()
            .enumerate()
            .map(|(k, c)| {
                let group_first = controllers
                    .iter()
                    .filter(|o| group(o) == group(c))
                    .map(id_key)
                    .min()
                    .unwrap_or((1, 0));
                let bus_number = match c.item.address.as_deref() {
                    None => (2, 0),
                    a => numeric_key(a),
                };
                (group_first, bus_number, id_key(c), k)
            })
            .collect();
        order.sort_unstable();
        for (rank, (_, _, _, k)) in order.into_iter().enumerate() {
            if let Some(c) = controllers.get_mut(k) {
                c.rank = rank;
            }
        }
        controllers
    }

    /// The disks, boot disk first (see the module documentation).
    fn disks(&self) -> Result<Vec<Disk>, OvfError> {
        let controllers = self.controllers();
        let mut disks: Vec<(DiskKey, Disk)> = Vec::new();
        for (position, &(index, i)) in self.items.iter().enumerate() {
            let is_disk = i.resource_type == RT_DISK
                || (i.resource_type == RT_LOGICAL_DISK && i.kind == ItemKind::StorageItem);
            if !is_disk {
                continue;
            }
            let label = self.label_of(index, i);
            let (disk, file) = self.backing(i, &label)?;
            let controller = match &i.parent {
                None => None,
                Some(p) => Some(
                    controllers
                        .iter()
                        .find(|c| c.item.instance_id.as_deref() == Some(p.as_str()))
                        .ok_or_else(|| OvfError::DanglingReference {
                            element: label.clone(),
                            field: "rasd:Parent".into(),
                            reference: p.clone(),
                            target: "disk controller item (IDE, SCSI or SATA) InstanceID".into(),
                        })?,
                ),
            };
            // Missing addresses sort after numeric and non-numeric ones.
            let address = match i.address_on_parent.as_deref() {
                None => (2, 0),
                a => numeric_key(a),
            };
            let boot = i
                .instance_id
                .as_deref()
                .and_then(|id| self.system.boot_disks.iter().position(|b| b == id))
                .unwrap_or(usize::MAX);
            let key = (
                boot,
                controller.map_or(usize::MAX, |c| c.rank),
                address,
                position,
            );
            let name = i.element_name.as_deref().unwrap_or("disk");
            disks.push((
                key,
                Disk {
                    label: format!("{name} ({})", file.href),
                    source: DiskSource::OvaFile {
                        file_name: file.href.clone(),
                    },
                    size_bytes: disk.capacity_bytes,
                    bus: controller.and_then(|c| c.bus),
                },
            ));
        }
        disks.sort_by_key(|(key, _)| *key);
        Ok(disks.into_iter().map(|(_, d)| d).collect())
    }

    /// The `Disk` and `File` a disk item's `HostResource` designates.
    fn backing(&self, i: &Item, label: &str) -> Result<(&'a VirtualDisk, &'a FileRef), OvfError> {
        let host = i
            .host_resources
            .first()
            .ok_or_else(|| OvfError::MissingElement {
                element: label.to_owned(),
                child: "rasd:HostResource".into(),
            })?;
        let disk_id =
            host_disk(host).map_err(|reason| invalid(label, "rasd:HostResource", host, reason))?;
        let disk = self
            .env
            .disk(disk_id)
            .ok_or_else(|| OvfError::DanglingReference {
                element: label.to_owned(),
                field: "rasd:HostResource".into(),
                reference: host.clone(),
                target: "DiskSection/Disk".into(),
            })?;
        let disk_label = || format!("DiskSection/Disk {:?}", disk.disk_id);
        let file_ref = disk
            .file_ref
            .as_deref()
            .ok_or_else(|| OvfError::Unsupported {
                element: disk_label(),
                what: "an empty disk (no ovf:fileRef: the deployer is asked to create it)".into(),
            })?;
        let file = self
            .env
            .file(file_ref)
            .ok_or_else(|| OvfError::DanglingReference {
                element: disk_label(),
                field: "ovf:fileRef".into(),
                reference: file_ref.to_owned(),
                target: "References/File".into(),
            })?;
        Ok((disk, file))
    }

    /// NICs in item order.
    fn nics(&self) -> Result<Vec<Nic>, OvfError> {
        // VirtualBox keeps MACs in its own section: enabled adapters in slot order match the
        // NIC items in order when the counts agree.
        let vbox_macs: Vec<Option<String>> = self
            .system
            .vbox
            .as_ref()
            .map(|v| {
                v.adapters
                    .iter()
                    .filter(|a| a.enabled)
                    .map(|a| a.mac.clone())
                    .collect()
            })
            .unwrap_or_default();
        let nic_items: Vec<(usize, &Item)> = self.of_type(RT_ETHERNET).collect();
        let mut nics = Vec::new();
        for (n, &(index, i)) in nic_items.iter().enumerate() {
            let label = self.label_of(index, i);
            let network = i
                .connections
                .first()
                .ok_or_else(|| OvfError::MissingElement {
                    element: label.clone(),
                    child: "rasd:Connection (the network the NIC is on)".into(),
                })?;
            let mac = match nic_mac(i, &label)? {
                Some(m) => m,
                None if vbox_macs.len() == nic_items.len() => {
                    vbox_macs.get(n).cloned().flatten().unwrap_or_default()
                }
                None => String::new(),
            };
            nics.push(Nic {
                mac,
                network: NetworkRef {
                    id: None,
                    name: network.clone(),
                },
                model: nic_model(i.resource_sub_type.as_deref()),
            });
        }
        Ok(nics)
    }

    /// UEFI from `firmware = efi` (VMware) or VirtualBox's `Firmware type="EFI…"`; secure boot
    /// from VMware's `bootOptions.efiSecureBootEnabled` or `uefi.secureBoot.enabled` (only with
    /// UEFI); a TPM from a `*tpm*` item, `vtpm.present`, or VirtualBox's TPM type.
    fn firmware(&self) -> Firmware {
        let vbox = self.system.vbox.as_ref();
        let uefi = self
            .config("firmware")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("efi"))
            || vbox
                .and_then(|v| v.firmware.as_deref())
                .is_some_and(|f| f.trim().to_ascii_uppercase().starts_with("EFI"));
        let secure_boot = self
            .config("bootOptions.efiSecureBootEnabled")
            .is_some_and(truthy)
            || self.config("uefi.secureBoot.enabled").is_some_and(truthy);
        let tpm_item = self.items.iter().any(|(_, i)| {
            i.sub_type_lower().contains("tpm")
                || (i.resource_type == RT_OTHER
                    && i.element_name
                        .as_deref()
                        .is_some_and(|n| n.to_ascii_lowercase().contains("tpm")))
        });
        let tpm = tpm_item
            || self.config("vtpm.present").is_some_and(truthy)
            || vbox
                .and_then(|v| v.tpm.as_deref())
                .is_some_and(|t| !t.trim().is_empty() && !t.trim().eq_ignore_ascii_case("none"));
        Firmware {
            boot: if uefi { BootMode::Uefi } else { BootMode::Bios },
            secure_boot: uefi && secure_boot,
            tpm,
        }
    }
}

fn memory_mib(i: &Item, label: &str) -> Result<u64, OvfError> {
    let q = i.virtual_quantity.ok_or_else(|| OvfError::MissingElement {
        element: label.to_owned(),
        child: "rasd:VirtualQuantity".into(),
    })?;
    // Without AllocationUnits the quantity is in MiB: what every exporter that omits it means.
    let unit = match i.allocation_units.as_deref() {
        None => MIB,
        Some(u) => unit_bytes(u).ok_or_else(|| {
            invalid(
                label,
                "rasd:AllocationUnits",
                u,
                "not a unit of bytes (expected e.g. \"byte * 2^20\" or \"MegaBytes\")",
            )
        })?,
    };
    let bytes = u128::from(q)
        .checked_mul(unit)
        .ok_or_else(|| invalid(label, "rasd:VirtualQuantity", &q.to_string(), "too large"))?;
    if bytes % MIB != 0 {
        return Err(invalid(
            label,
            "rasd:VirtualQuantity",
            &q.to_string(),
            format!("{bytes} bytes of memory is not a whole number of MiB; correct the descriptor"),
        ));
    }
    u64::try_from(bytes / MIB)
        .map_err(|_| invalid(label, "rasd:VirtualQuantity", &q.to_string(), "too large"))
}

/// The MAC of a NIC item: `rasd:Address`, else a `vmw:Config` key `macAddress`/`address`.
fn nic_mac(i: &Item, label: &str) -> Result<Option<String>, OvfError> {
    if let Some(a) = i.address.as_deref().filter(|a| !a.trim().is_empty()) {
        return normalize_mac(a).map(Some).ok_or_else(|| {
            invalid(
                label,
                "rasd:Address",
                a,
                "not a MAC address (six hex octets)",
            )
        });
    }
    for kv in &i.config {
        let k = kv.key.to_ascii_lowercase();
        if (k == "macaddress" || k == "address" || k.ends_with(".address"))
            && !kv.value.trim().is_empty()
        {
            return normalize_mac(&kv.value).map(Some).ok_or_else(|| {
                invalid(
                    label,
                    &format!("vmw:Config {:?}", kv.key),
                    &kv.value,
                    "not a MAC address (six hex octets)",
                )
            });
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case(
        "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized",
        DiskFormat::VmdkStreamOptimized
    )]
    #[case(
        "http://www.vmware.com/specifications/vmdk.html#sparse",
        DiskFormat::VmdkSparse
    )]
    #[case(
        "http://www.vmware.com/interfaces/specifications/vmdk.html#monolithicSparse",
        DiskFormat::VmdkSparse
    )]
    #[case(
        "http://www.gnome.org/~markmc/qcow-image-format.html",
        DiskFormat::Qcow2
    )]
    #[case(
        "http://technet.microsoft.com/en-us/virtualserver/bb676673.aspx",
        DiskFormat::Vhd
    )]
    #[case("urn:whatever", DiskFormat::Unknown)]
    fn disk_formats_from_urls(#[case] url: &str, #[case] want: DiskFormat) {
        assert_eq!(DiskFormat::from_url(url), want);
    }

    #[rstest]
    #[case("ovf:/disk/vmdisk1", Ok("vmdisk1"))]
    #[case("ovf://disk/vmdisk1", Ok("vmdisk1"))]
    #[case("/disk/vmdisk1", Ok("vmdisk1"))]
    #[case(" ovf:/disk/d ", Ok("d"))]
    #[case("ovf:/file/file1", Err(()))]
    #[case("ovf:/disk/", Err(()))]
    #[case("disk1", Err(()))]
    fn host_resources(#[case] host: &str, #[case] want: Result<&str, ()>) {
        assert_eq!(host_disk(host).map_err(|_| ()), want);
    }

    #[rstest]
    #[case(Some("E1000"), Some(NetworkInterfaceModel::E1000))]
    #[case(Some("e1000e"), Some(NetworkInterfaceModel::E1000e))]
    #[case(Some("E1000E"), Some(NetworkInterfaceModel::E1000e))]
    #[case(Some("PCNet32"), Some(NetworkInterfaceModel::Pcnet))]
    #[case(Some("virtio"), Some(NetworkInterfaceModel::Virtio))]
    #[case(Some("virtio-net"), Some(NetworkInterfaceModel::Virtio))]
    #[case(Some("VmxNet3"), None)]
    #[case(Some("Flexible"), None)]
    #[case(None, None)]
    fn nic_models(#[case] sub: Option<&str>, #[case] want: Option<NetworkInterfaceModel>) {
        assert_eq!(nic_model(sub), want);
    }
}
