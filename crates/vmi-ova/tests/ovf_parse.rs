//! The OVF parser over descriptors shaped like real exporters' (VMware vCenter/ovftool,
//! VirtualBox 4 and 7, an OVF 2.0 envelope), each described into the neutral model and
//! snapshotted; and descriptors that are wrong, each rejected with a message naming the element.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::pedantic
)]

use rstest::rstest;
use vmi_api::{DiskBus, NetworkInterfaceModel};
use vmi_core::model::{BootMode, DiskSource, VmModel};
use vmi_ova::ovf::{self, DiskFormat, OvfError, OvfVersion, Selection};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn describe(name: &str, system: Option<&str>, configuration: Option<&str>) -> VmModel {
    let env = ovf::parse(&fixture(name)).unwrap();
    ovf::describe(
        &env,
        &Selection {
            system,
            configuration,
        },
    )
    .unwrap()
}

fn files(m: &VmModel) -> Vec<&str> {
    m.disks
        .iter()
        .map(|d| match &d.source {
            DiskSource::OvaFile { file_name } => file_name.as_str(),
            other => panic!("unexpected source {other:?}"),
        })
        .collect()
}

/// Expected facts per descriptor; the whole model is also snapshotted.
struct Want {
    name: &'static str,
    topology: (u32, u32, u32),
    memory_mib: u64,
    boot: BootMode,
    secure_boot: bool,
    tpm: bool,
    disks: &'static [(&'static str, u64, Option<DiskBus>)],
    nics: &'static [(&'static str, &'static str, Option<NetworkInterfaceModel>)],
}

const GIB: u64 = 1 << 30;

#[rstest]
#[case::vmware_vcenter_scsi_sata(
    "vmware-vcenter-scsi-sata.ovf", None, None,
    Want {
        name: "web01",
        topology: (2, 2, 1),
        memory_mib: 8192,
        boot: BootMode::Uefi,
        secure_boot: true,
        tpm: true,
        // SCSI 0:0, SCSI 0:1, then SATA 0:0, although the SATA disk's item comes first.
        disks: &[
            ("web01-disk1.vmdk", 40 * GIB, Some(DiskBus::Scsi)),
            ("web01-disk2.vmdk", 100 * GIB, Some(DiskBus::Scsi)),
            ("web01-disk3.vmdk", 512 << 20, Some(DiskBus::Sata)),
        ],
        nics: &[
            ("00:50:56:ab:12:34", "VM Network", None),
            ("", "Backup & Storage", Some(NetworkInterfaceModel::E1000e)),
        ],
    }
)]
#[case::virtualbox_7_ide_sata(
    "virtualbox-7-ide-sata.ovf", None, None,
    Want {
        name: "dev-box",
        topology: (1, 2, 1),
        memory_mib: 4096,
        boot: BootMode::Uefi,
        secure_boot: false,
        tpm: true,
        disks: &[
            ("dev-box-disk001.vmdk", 25 * GIB, Some(DiskBus::Sata)),
            ("dev-box-disk002.vmdk", 8 * GIB, Some(DiskBus::Sata)),
        ],
        nics: &[
            ("08:00:27:c5:b3:d1", "NAT", Some(NetworkInterfaceModel::E1000)),
            ("08:00:27:9a:0f:21", "Bridged", Some(NetworkInterfaceModel::Pcnet)),
        ],
    }
)]
#[case::virtualbox_4_ide_only(
    "virtualbox-4-ide-only.ovf", None, None,
    Want {
        name: "legacy",
        topology: (1, 1, 1),
        memory_mib: 512,
        boot: BootMode::Bios,
        secure_boot: false,
        tpm: false,
        // IDE becomes SATA: KubeVirt has no IDE bus.
        disks: &[("legacy-disk1.vmdk", 10 * GIB, Some(DiskBus::Sata))],
        nics: &[("", "HostOnly", Some(NetworkInterfaceModel::Pcnet))],
    }
)]
#[case::ovf2_collection_default_configuration(
    "ovf2-collection-efi.ovf", None, None,
    Want {
        name: "app-server",
        topology: (1, 2, 1),
        memory_mib: 4096,
        boot: BootMode::Uefi,
        secure_boot: false,
        tpm: false,
        // vmw:BootOrderSection names the data disk.
        disks: &[
            ("app-data.vmdk", 50 * GIB, Some(DiskBus::Scsi)),
            ("app-root.vmdk", 20 * GIB, Some(DiskBus::Scsi)),
        ],
        nics: &[
            ("52:54:00:12:34:56", "frontend", Some(NetworkInterfaceModel::Virtio)),
            ("52:54:00:ab:cd:ef", "backend", Some(NetworkInterfaceModel::Virtio)),
        ],
    }
)]
#[case::ovf2_collection_large_configuration(
    "ovf2-collection-efi.ovf", Some("app"), Some("large"),
    Want {
        name: "app-server",
        topology: (2, 4, 1),
        memory_mib: 16384,
        boot: BootMode::Uefi,
        secure_boot: false,
        tpm: false,
        disks: &[
            ("app-data.vmdk", 50 * GIB, Some(DiskBus::Scsi)),
            ("app-root.vmdk", 20 * GIB, Some(DiskBus::Scsi)),
        ],
        nics: &[
            ("52:54:00:12:34:56", "frontend", Some(NetworkInterfaceModel::Virtio)),
            ("52:54:00:ab:cd:ef", "backend", Some(NetworkInterfaceModel::Virtio)),
        ],
    }
)]
#[case::ovf2_collection_second_system_by_name(
    "ovf2-collection-efi.ovf", Some("db-server"), None,
    Want {
        name: "db-server",
        topology: (1, 4, 1),
        memory_mib: 8192,
        boot: BootMode::Bios,
        secure_boot: false,
        tpm: false,
        disks: &[("db-root.qcow2", 10 * GIB, Some(DiskBus::Virtio))],
        nics: &[("", "backend", None)],
    }
)]
fn descriptors_as_exporters_write_them_describe_into_the_model(
    #[case] file: &str,
    #[case] system: Option<&str>,
    #[case] configuration: Option<&str>,
    #[case] want: Want,
) {
    let m = describe(file, system, configuration);
    assert_eq!(m.name, want.name);
    assert_eq!(
        (m.cpu.sockets, m.cpu.cores, m.cpu.threads),
        want.topology,
        "cpu"
    );
    assert_eq!(m.memory_mib, want.memory_mib);
    assert_eq!(m.firmware.boot, want.boot);
    assert_eq!(m.firmware.secure_boot, want.secure_boot);
    assert_eq!(m.firmware.tpm, want.tpm);
    let disks: Vec<_> = m
        .disks
        .iter()
        .zip(files(&m))
        .map(|(d, f)| (f, d.size_bytes, d.bus))
        .collect();
    assert_eq!(disks, want.disks);
    let nics: Vec<_> = m
        .nics
        .iter()
        .map(|n| (n.mac.as_str(), n.network.name.as_str(), n.model))
        .collect();
    assert_eq!(nics, want.nics);
    assert!(m.nics.iter().all(|n| n.network.id.is_none()));

    let snapshot = format!(
        "{}{}{}",
        file.trim_end_matches(".ovf"),
        system.map(|s| format!("-{s}")).unwrap_or_default(),
        configuration.map(|c| format!("-{c}")).unwrap_or_default()
    );
    insta::assert_yaml_snapshot!(snapshot, m);
}

#[test]
fn the_envelope_keeps_references_disks_networks_and_formats() {
    let env = ovf::parse(&fixture("vmware-vcenter-scsi-sata.ovf")).unwrap();
    assert_eq!(env.version, OvfVersion::V1);
    assert_eq!(env.files.len(), 4);
    assert_eq!(env.files[3].href, "web01.nvram");
    assert_eq!(env.files[0].size, Some(1_932_735_488));
    assert_eq!(env.disks[0].format, DiskFormat::VmdkStreamOptimized);
    assert_eq!(env.disks[0].populated_size, Some(4_295_229_440));
    let networks: Vec<_> = env.networks.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(networks, ["VM Network", "Backup & Storage"]);
    let sys = env.system(None).unwrap();
    assert_eq!(sys.system_type.as_deref(), Some("vmx-19"));
    assert_eq!(sys.boot_disks, ["12"]);
    assert_eq!(
        sys.description.as_deref(),
        Some("Front-end web server (nginx).\nOwner: web team <web@example.com>")
    );

    let v2 = ovf::parse(&fixture("ovf2-collection-efi.ovf")).unwrap();
    assert_eq!(v2.version, OvfVersion::V2);
    assert_eq!(v2.systems.len(), 2);
    assert_eq!(v2.configuration(None).unwrap(), Some("small"));
    assert_eq!(v2.disks[2].format, DiskFormat::Qcow2);
    insta::assert_yaml_snapshot!("ovf2-collection-efi-envelope", v2);
}

#[test]
fn a_byte_order_mark_and_crlf_line_ends_are_accepted() {
    let text = String::from_utf8(fixture("virtualbox-4-ide-only.ovf")).unwrap();
    let mut bytes = b"\xEF\xBB\xBF".to_vec();
    bytes.extend_from_slice(text.replace('\n', "\r\n").as_bytes());
    let env = ovf::parse(&bytes).unwrap();
    assert_eq!(
        ovf::describe(&env, &Selection::default()).unwrap(),
        describe("virtualbox-4-ide-only.ovf", None, None)
    );
}

/// A minimal valid OVF 1.0 descriptor whose VirtualSystem body and envelope-level sections
/// the error cases replace.
fn minimal(sections: &str, hardware: &str) -> String {
    format!(
        r#"<?xml version="1.0"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
  xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
  xmlns:vmw="http://www.vmware.com/schema/ovf">
  {sections}
  <VirtualSystem ovf:id="vm">
    <Info>x</Info>
    <VirtualHardwareSection>
      <Info>x</Info>
      {hardware}
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>"#
    )
}

const REFS: &str = r#"<References><File ovf:id="f1" ovf:href="d1.vmdk"/></References>
  <DiskSection><Info>x</Info><Disk ovf:diskId="d1" ovf:fileRef="f1" ovf:capacity="1" ovf:capacityAllocationUnits="byte * 2^30"/></DiskSection>"#;
const CPU: &str = "<Item><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>";
const MEM: &str = "<Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>1024</rasd:VirtualQuantity></Item>";
const SCSI: &str = "<Item><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceSubType>lsilogic</rasd:ResourceSubType><rasd:ResourceType>6</rasd:ResourceType></Item>";

fn disk_item(host: &str, parent: &str) -> String {
    format!(
        "<Item><rasd:ElementName>Hard disk 1</rasd:ElementName><rasd:HostResource>{host}</rasd:HostResource><rasd:InstanceID>4</rasd:InstanceID><rasd:Parent>{parent}</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>"
    )
}

fn nic_item(inner: &str) -> String {
    format!(
        "<Item><rasd:ElementName>Network adapter 1</rasd:ElementName><rasd:InstanceID>5</rasd:InstanceID><rasd:ResourceSubType>E1000</rasd:ResourceSubType><rasd:ResourceType>10</rasd:ResourceType>{inner}</Item>"
    )
}

#[test]
fn the_minimal_descriptor_used_below_is_valid() {
    let xml = minimal(
        REFS,
        &format!(
            "{CPU}{MEM}{SCSI}{}{}",
            disk_item("ovf:/disk/d1", "3"),
            nic_item("<rasd:Connection>net</rasd:Connection>")
        ),
    );
    let m = ovf::describe(&ovf::parse(xml.as_bytes()).unwrap(), &Selection::default()).unwrap();
    assert_eq!(m.memory_mib, 1024);
    assert_eq!(files(&m), ["d1.vmdk"]);
    assert_eq!(m.disks[0].label, "Hard disk 1 (d1.vmdk)");
}

fn parse_and_describe(xml: &str, selection: &Selection<'_>) -> Result<VmModel, OvfError> {
    ovf::describe(&ovf::parse(xml.as_bytes())?, selection)
}

#[rstest]
#[case::not_xml("this is not XML", "not well-formed XML")]
#[case::unclosed(
    "<Envelope xmlns=\"http://schemas.dmtf.org/ovf/envelope/1\">\n<References>\n</Envelope>",
    "line 3"
)]
#[case::undeclared_prefix("<ovf:Envelope/>", "namespace prefix 'ovf' is not declared")]
#[case::not_an_envelope(
    "<html xmlns=\"http://www.w3.org/1999/xhtml\"/>",
    "the root element is {http://www.w3.org/1999/xhtml}html, not an OVF Envelope"
)]
#[case::ovf_0_9(
    "<Envelope xmlns=\"http://www.vmware.com/schema/ovf/1/envelope\"/>",
    "not an OVF Envelope"
)]
#[case::no_namespace("<Envelope/>", "Envelope (in no namespace)")]
#[case::entity(
    "<!DOCTYPE x [<!ENTITY big \"aaaa\">]><Envelope xmlns=\"http://schemas.dmtf.org/ovf/envelope/1\"><References>&big;</References></Envelope>",
    "unknown entity &big;"
)]
#[case::no_system(
    r#"<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"/>"#,
    "the envelope has no VirtualSystem"
)]
fn malformed_documents_are_rejected(#[case] xml: &str, #[case] message: &str) {
    let e = parse_and_describe(xml, &Selection::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains(message), "{e}");
}

#[rstest]
#[case::file_without_href(
    r#"<References><File ovf:id="f1"/></References>"#,
    "",
    r#"References/File "f1": the attribute ovf:href is missing"#
)]
#[case::duplicate_file_id(
    r#"<References><File ovf:id="f1" ovf:href="a"/><File ovf:id="f1" ovf:href="b"/></References>"#,
    "",
    r#"References/File: ovf:id "f1" appears more than once"#
)]
#[case::bad_file_size(
    r#"<References><File ovf:id="f1" ovf:href="a" ovf:size="12kB"/></References>"#,
    "",
    r#"References/File "f1": ovf:size "12kB" is invalid"#
)]
#[case::disk_without_capacity(
    r#"<DiskSection><Disk ovf:diskId="d1" ovf:fileRef="f1"/></DiskSection>"#,
    "",
    r#"DiskSection/Disk "d1": the attribute ovf:capacity is missing"#
)]
#[case::disk_capacity_units(
    r#"<DiskSection><Disk ovf:diskId="d1" ovf:capacity="1" ovf:capacityAllocationUnits="furlongs"/></DiskSection>"#, "",
    r#"DiskSection/Disk "d1": ovf:capacityAllocationUnits "furlongs" is invalid: not a unit of bytes"#
)]
#[case::disk_capacity_overflow(
    r#"<DiskSection><Disk ovf:diskId="d1" ovf:capacity="18446744073709551615" ovf:capacityAllocationUnits="byte * 2^30"/></DiskSection>"#, "",
    "does not fit in 64 bits"
)]
#[case::disk_capacity_property(
    r#"<DiskSection><Disk ovf:diskId="d1" ovf:capacity="${disk.size}"/></DiskSection>"#,
    "",
    "refers to a property"
)]
#[case::item_without_type(
    REFS, "<Item><rasd:InstanceID>9</rasd:InstanceID><rasd:ElementName>thing</rasd:ElementName></Item>",
    r#"VirtualSystem "vm": Item InstanceID "9" ("thing"): the element rasd:ResourceType is missing"#
)]
#[case::item_bad_quantity(
    REFS,
    "<Item><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>two</rasd:VirtualQuantity></Item>",
    r#"Item InstanceID "1": rasd:VirtualQuantity "two" is invalid"#
)]
fn wrong_descriptors_are_rejected_naming_the_element(
    #[case] sections: &str,
    #[case] hardware: &str,
    #[case] message: &str,
) {
    let e = parse_and_describe(&minimal(sections, hardware), &Selection::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains(message), "{e}");
}

#[rstest]
#[case::no_cpu(format!("{MEM}"), "the element Item with rasd:ResourceType 3 (processor) is missing")]
#[case::no_memory(format!("{CPU}"), "the element Item with rasd:ResourceType 4 (memory) is missing")]
#[case::zero_cpus(
    "<Item><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>0</rasd:VirtualQuantity></Item>".to_owned() + MEM,
    "the vCPU count must be between 1"
)]
#[case::memory_units(
    CPU.to_owned() + "<Item><rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>1024</rasd:VirtualQuantity></Item>",
    r#"Item InstanceID "2": rasd:AllocationUnits "hertz * 10^6" is invalid: not a unit of bytes"#
)]
#[case::memory_not_whole_mib(
    CPU.to_owned() + "<Item><rasd:AllocationUnits>byte</rasd:AllocationUnits><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>1000000000</rasd:VirtualQuantity></Item>",
    "1000000000 bytes of memory is not a whole number of MiB"
)]
#[case::dangling_disk(
    format!("{CPU}{MEM}{SCSI}{}", disk_item("ovf:/disk/nope", "3")),
    r#"Item InstanceID "4" ("Hard disk 1"): rasd:HostResource "ovf:/disk/nope" does not name any DiskSection/Disk"#
)]
#[case::file_host_resource(
    format!("{CPU}{MEM}{SCSI}{}", disk_item("ovf:/file/f1", "3")),
    r#"rasd:HostResource "ovf:/file/f1" is invalid: a file, not a DiskSection disk"#
)]
#[case::dangling_parent(
    format!("{CPU}{MEM}{SCSI}{}", disk_item("ovf:/disk/d1", "42")),
    r#"Item InstanceID "4" ("Hard disk 1"): rasd:Parent "42" does not name any disk controller"#
)]
#[case::nic_without_connection(
    format!("{CPU}{MEM}{}", nic_item("")),
    r#"Item InstanceID "5" ("Network adapter 1"): the element rasd:Connection (the network the NIC is on) is missing"#
)]
#[case::nic_bad_mac(
    format!("{CPU}{MEM}{}", nic_item("<rasd:Connection>n</rasd:Connection><rasd:Address>not-a-mac</rasd:Address>")),
    r#"rasd:Address "not-a-mac" is invalid: not a MAC address"#
)]
#[case::bad_cores_per_socket(
    "<Item><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>2</rasd:VirtualQuantity><vmw:CoresPerSocket>many</vmw:CoresPerSocket></Item>".to_owned() + MEM,
    r#"vmw:CoresPerSocket "many" is invalid"#
)]
fn wrong_hardware_is_rejected_naming_the_item(#[case] hardware: String, #[case] message: &str) {
    let e = parse_and_describe(&minimal(REFS, &hardware), &Selection::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains(message), "{e}");
}

#[test]
fn an_empty_disk_is_reported_as_unsupported() {
    let sections = r#"<DiskSection><Disk ovf:diskId="d1" ovf:capacity="1"/></DiskSection>"#;
    let hw = format!("{CPU}{MEM}{SCSI}{}", disk_item("ovf:/disk/d1", "3"));
    let e = parse_and_describe(&minimal(sections, &hw), &Selection::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(r#"DiskSection/Disk "d1": an empty disk (no ovf:fileRef"#),
        "{e}"
    );
}

#[test]
fn an_unknown_system_or_configuration_lists_the_available_ones() {
    let env = ovf::parse(&fixture("ovf2-collection-efi.ovf")).unwrap();
    let e = ovf::describe(
        &env,
        &Selection {
            system: Some("web"),
            configuration: None,
        },
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        e,
        r#"no VirtualSystem has the id or name "web"; the descriptor has: "app", "db""#
    );
    let e = ovf::describe(
        &env,
        &Selection {
            system: None,
            configuration: Some("huge"),
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains(r#""small", "large""#), "{e}");
}

#[test]
fn an_unprefixed_ovf_attribute_is_accepted_and_prefixes_do_not_matter() {
    // Same descriptor, attributes unqualified and the OVF namespace bound to another prefix.
    let xml = minimal(
        REFS,
        &format!("{CPU}{MEM}{SCSI}{}", disk_item("ovf:/disk/d1", "3")),
    )
    .replace("ovf:id=\"f1\" ovf:href", "id=\"f1\" href")
    .replace("xmlns:ovf=", "xmlns:envelope=")
    .replace("ovf:", "envelope:")
    .replace("envelope:/disk", "ovf:/disk");
    let m = parse_and_describe(&xml, &Selection::default()).unwrap();
    assert_eq!(files(&m), ["d1.vmdk"]);
}

#[test]
fn deeply_nested_or_huge_descriptors_are_refused_without_crashing() {
    let deep = format!(
        "<Envelope xmlns=\"http://schemas.dmtf.org/ovf/envelope/1\">{}",
        "<a>".repeat(100_000)
    );
    let e = ovf::parse(deep.as_bytes()).unwrap_err().to_string();
    assert!(e.contains("nested deeper than"), "{e}");
    let huge = vec![b' '; ovf::MAX_DESCRIPTOR_BYTES + 1];
    assert!(matches!(ovf::parse(&huge), Err(OvfError::TooLarge { .. })));
    let e = ovf::parse(b"<a>\xff</a>").unwrap_err().to_string();
    assert!(e.contains("not UTF-8"), "{e}");
}

#[test]
fn disks_are_ordered_by_controller_group_bus_number_and_unit() {
    let ids = ["a", "b", "c", "d", "e"];
    let refs: String = ids
        .iter()
        .map(|i| format!(r#"<File ovf:id="f{i}" ovf:href="{i}.vmdk"/>"#))
        .collect();
    let disks: String = ids
        .iter()
        .map(|i| format!(r#"<Disk ovf:diskId="{i}" ovf:fileRef="f{i}" ovf:capacity="1"/>"#))
        .collect();
    let sections = format!("<References>{refs}</References><DiskSection>{disks}</DiskSection>");
    let controller = |id: u32, address: u32, rt: u32, sub: &str| {
        format!(
            "<Item><rasd:Address>{address}</rasd:Address><rasd:InstanceID>{id}</rasd:InstanceID>\
             <rasd:ResourceSubType>{sub}</rasd:ResourceSubType><rasd:ResourceType>{rt}</rasd:ResourceType></Item>"
        )
    };
    let disk = |id: u32, disk: &str, parent: Option<u32>, unit: u32| {
        let parent = parent
            .map(|p| format!("<rasd:Parent>{p}</rasd:Parent>"))
            .unwrap_or_default();
        format!(
            "<Item><rasd:AddressOnParent>{unit}</rasd:AddressOnParent><rasd:HostResource>ovf:/disk/{disk}</rasd:HostResource>\
             <rasd:InstanceID>{id}</rasd:InstanceID>{parent}<rasd:ResourceType>17</rasd:ResourceType></Item>"
        )
    };
    // vCenter lists "IDE 1" (InstanceID 3) before "IDE 0" (InstanceID 4).
    let hardware = [
        CPU.to_owned(),
        MEM.to_owned(),
        controller(3, 1, 5, ""),
        controller(4, 0, 5, ""),
        controller(5, 0, 20, "vmware.nvme.controller"),
        disk(10, "a", Some(3), 0),
        disk(11, "b", Some(5), 0),
        disk(12, "c", None, 0),
        disk(13, "d", Some(4), 1),
        disk(14, "e", Some(4), 0),
    ]
    .concat();
    let m = parse_and_describe(&minimal(&sections, &hardware), &Selection::default()).unwrap();
    assert_eq!(
        files(&m),
        ["e.vmdk", "d.vmdk", "a.vmdk", "b.vmdk", "c.vmdk"]
    );
    let buses: Vec<_> = m.disks.iter().map(|d| d.bus).collect();
    // NVMe has no KubeVirt bus and a disk without controller has none: the import's default.
    assert_eq!(
        buses,
        [
            Some(DiskBus::Sata),
            Some(DiskBus::Sata),
            Some(DiskBus::Sata),
            None,
            None
        ]
    );
}

#[test]
fn a_descriptor_at_every_limit_is_described_quickly() {
    let n = ovf::MAX_ENTRIES;
    let mut refs = String::new();
    let mut disks = String::new();
    let mut hw = format!("{CPU}{MEM}");
    for i in 0..n {
        refs.push_str(&format!(r#"<File ovf:id="f{i}" ovf:href="d{i}.vmdk"/>"#));
        disks.push_str(&format!(
            r#"<Disk ovf:diskId="d{i}" ovf:fileRef="f{i}" ovf:capacity="1"/>"#
        ));
    }
    // Half controllers, half disks, each disk on its own controller, in reverse order.
    for i in 0..(n - 2) / 2 {
        hw.push_str(&format!(
            "<Item><rasd:Address>{i}</rasd:Address><rasd:InstanceID>c{i}</rasd:InstanceID><rasd:ResourceType>6</rasd:ResourceType></Item>"
        ));
    }
    for i in (0..(n - 2) / 2).rev() {
        hw.push_str(&format!(
            "<Item><rasd:HostResource>ovf:/disk/d{i}</rasd:HostResource><rasd:InstanceID>x{i}</rasd:InstanceID><rasd:Parent>c{i}</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>"
        ));
    }
    let xml = minimal(
        &format!("<References>{refs}</References><DiskSection>{disks}</DiskSection>"),
        &hw,
    );
    let started = std::time::Instant::now();
    let m = parse_and_describe(&xml, &Selection::default()).unwrap();
    assert_eq!(m.disks.len(), (n - 2) / 2);
    assert_eq!(files(&m)[0], "d0.vmdk");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    // One more File is refused.
    let e = parse_and_describe(
        &minimal(
            &format!(r#"<References>{refs}<File ovf:id="extra" ovf:href="x"/></References>"#),
            "",
        ),
        &Selection::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("References: more than 4096 File elements"),
        "{e}"
    );
}
