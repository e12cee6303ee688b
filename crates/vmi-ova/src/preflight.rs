//! Preflight of an OVA import, pure: from the descriptor (read by the caller from the start of
//! the archive) to the report both front doors print, and the facts the import continues with.
//! The network rules are exactly those of OpenStack (`vmi_core::network`); a source network
//! exists when the descriptor names it (its `NetworkSection` or a NIC's connection).

use std::collections::BTreeSet;

use vmi_api::VirtualMachineImport;
use vmi_core::model::{DiskSource, NetworkRef, VmModel};
use vmi_core::names::sanitize_vm_name;
use vmi_core::network::{self, Destination, Resolution, ResolvedMapping};
use vmi_core::preflight::{Check, CheckId, Report};

use crate::ovf::{DiskFormat, Envelope, Selection};

/// What the import continues with when preflight found the VM.
#[derive(Clone, Debug)]
pub struct OvaFacts {
    pub model: VmModel,
    pub resolved: Vec<ResolvedMapping>,
    /// The sanitised name of the VM to create.
    pub imported_name: Option<String>,
    /// Disk format of each disk of the model, in order.
    pub formats: Vec<DiskFormat>,
}

/// The inputs of the evaluation.
#[derive(Clone, Copy)]
pub struct OvaPreflightInput<'a> {
    pub import: &'a VirtualMachineImport,
    /// Where the archive is (credentials removed), for messages.
    pub url: &'a str,
    /// `source.tls`, decided by the caller from the URL scheme and the TLS settings.
    pub tls: &'a Check,
    /// Existence of destination networks where a cluster is reachable; `None` in the CLI.
    pub destination_exists: Option<&'a (dyn Fn(&Destination) -> bool + Sync)>,
}

impl std::fmt::Debug for OvaPreflightInput<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OvaPreflightInput")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// Evaluates every check. `descriptor` is the parsed envelope, or why it could not be read.
pub fn evaluate(
    input: &OvaPreflightInput<'_>,
    descriptor: Result<&Envelope, String>,
) -> (Report, Option<OvaFacts>) {
    let spec = &input.import.spec;
    let mut report = Report::new(vmi_core::input::object_key(&input.import.metadata));
    report.checks.push(input.tls.clone());
    let env = match descriptor {
        Ok(env) => {
            report.checks.push(Check::pass(
                CheckId::SourceReadable,
                input.url,
                format!(
                    "OVF {} descriptor read: {} virtual system(s), {} disk(s), {} network(s)",
                    match env.version {
                        crate::ovf::OvfVersion::V1 => "1.x",
                        crate::ovf::OvfVersion::V2 => "2.x",
                    },
                    env.systems.len(),
                    env.disks.len(),
                    env.networks.len()
                ),
            ));
            env
        }
        Err(why) => {
            report
                .checks
                .push(Check::fail(CheckId::SourceReadable, input.url, why));
            skip_rest(&mut report, input, "the descriptor could not be read");
            return (report.sorted(), None);
        }
    };

    let wanted = spec.virtual_machine_name.as_str();
    let system = match select_system(env, wanted) {
        Ok(s) => s,
        Err(check) => {
            report.checks.push(check);
            skip_rest(&mut report, input, "vm.found failed");
            return (report.sorted(), None);
        }
    };
    let system_id = system.id.as_deref().or(system.name.as_deref());
    let model = match crate::ovf::describe(
        env,
        &Selection {
            system: system_id,
            configuration: None,
        },
    ) {
        Ok(m) => m,
        Err(e) => {
            report.checks.push(Check::fail(
                CheckId::VmFound,
                wanted,
                format!("the descriptor's virtual system cannot be imported: {e}"),
            ));
            skip_rest(&mut report, input, "vm.found failed");
            return (report.sorted(), None);
        }
    };
    report.checks.push(Check::pass(
        CheckId::VmFound,
        wanted,
        format!(
            "virtual system '{}': {} vCPU, {} MiB, {} disk(s), {} NIC(s)",
            model.name,
            model.cpu.vcpus(),
            model.memory_mib,
            model.disks.len(),
            model.nics.len()
        ),
    ));
    report.checks.push(Check::skip(
        CheckId::VmState,
        model.name.clone(),
        "an OVA is a file: there is no running VM to stop",
    ));
    let imported_name = sanitize_vm_name(&model.name);
    report
        .checks
        .push(name_check(&model.name, imported_name.as_deref()));

    let resolved = network_checks(input, env, &model, &mut report);
    let formats = disk_formats(env, &model);
    report.checks.push(disk_check(&model, &formats));
    report.checks.push(Check::skip(
        CheckId::Quota,
        "",
        "an OVA import makes no temporary resources on a cloud",
    ));
    (
        report.sorted(),
        Some(OvaFacts {
            model,
            resolved,
            imported_name,
            formats,
        }),
    )
}

/// The network rules, with the descriptor's `NetworkSection` and the NICs' connections as
/// the source networks that exist.
fn network_checks(
    input: &OvaPreflightInput<'_>,
    env: &Envelope,
    model: &VmModel,
    report: &mut Report,
) -> Vec<ResolvedMapping> {
    let spec = &input.import.spec;
    let known: BTreeSet<&str> = env
        .networks
        .iter()
        .map(|n| n.name.as_str())
        .chain(model.nics.iter().map(|n| n.network.name.as_str()))
        .collect();
    let resolved: Vec<ResolvedMapping> = spec
        .network_mapping
        .iter()
        .map(|m| ResolvedMapping {
            mapping: m.clone(),
            resolution: if known.contains(m.source_network.as_str()) {
                Resolution::Found(NetworkRef {
                    id: None,
                    name: m.source_network.clone(),
                })
            } else {
                Resolution::NotFound
            },
        })
        .collect();
    report.checks.extend(network::check_duplicates(&resolved));
    report.checks.extend(network::check_sources_exist(
        &resolved,
        "the OVF descriptor",
    ));
    report
        .checks
        .extend(network::check_sources_used(&resolved, &model.nics));
    report
        .checks
        .extend(network::check_unmapped(&resolved, &model.nics));
    report.checks.extend(network::check_destinations(
        &spec.network_mapping,
        input.destination_exists,
    ));

    resolved
}

/// The virtual system to import: the one whose `ovf:id` or `Name` is `wanted`, else the only
/// one.
fn select_system<'e>(
    env: &'e Envelope,
    wanted: &str,
) -> Result<&'e crate::ovf::VirtualSystem, Check> {
    if let Some(s) = env
        .systems
        .iter()
        .find(|s| s.id.as_deref() == Some(wanted) || s.name.as_deref() == Some(wanted))
        .or_else(|| (env.systems.len() == 1).then(|| &env.systems[0]))
    {
        return Ok(s);
    }
    let names: Vec<String> = env
        .systems
        .iter()
        .map(|s| {
            format!(
                "'{}'",
                s.name.as_deref().or(s.id.as_deref()).unwrap_or("(unnamed)")
            )
        })
        .collect();
    Err(Check::fail(
        CheckId::VmFound,
        wanted,
        format!(
            "the OVA holds {} virtual systems ({}); set virtualMachineName to the ovf:id or Name of one",
            env.systems.len(),
            names.join(", ")
        ),
    ))
}

fn name_check(name: &str, imported: Option<&str>) -> Check {
    match imported {
        Some(n) if n == name => Check::pass(CheckId::VmName, name, format!("imported as '{n}'")),
        Some(n) => Check::pass(
            CheckId::VmName,
            name,
            format!("'{name}' is not a DNS-1123 label; imported as '{n}'"),
        ),
        None => Check::fail(
            CheckId::VmName,
            name,
            format!(
                "'{name}' has no letters or digits usable in a Kubernetes name; edit the Name of the VirtualSystem in the OVF descriptor"
            ),
        ),
    }
}

/// The format of each disk of `model`, from the descriptor's `Disk` and `File` elements.
pub fn disk_formats(env: &Envelope, model: &VmModel) -> Vec<DiskFormat> {
    model
        .disks
        .iter()
        .map(|d| {
            let DiskSource::OvaFile { file_name } = &d.source else {
                return DiskFormat::Unknown;
            };
            let file_id = env
                .files
                .iter()
                .find(|f| &f.href == file_name)
                .map(|f| &f.id);
            env.disks
                .iter()
                .find(|vd| vd.file_ref.as_ref() == file_id)
                .map_or(DiskFormat::Unknown, |vd| vd.format)
        })
        .collect()
}

/// The `qemu-img` format name of a disk format; `None` when it cannot be converted.
pub fn qemu_format(f: DiskFormat) -> Option<&'static str> {
    match f {
        DiskFormat::VmdkStreamOptimized | DiskFormat::VmdkSparse | DiskFormat::Vmdk => Some("vmdk"),
        DiskFormat::Qcow2 => Some("qcow2"),
        DiskFormat::Vhd => Some("vpc"),
        DiskFormat::Vhdx => Some("vhdx"),
        DiskFormat::Vdi => Some("vdi"),
        DiskFormat::Raw => Some("raw"),
        DiskFormat::Unknown => None,
    }
}

fn disk_check(model: &VmModel, formats: &[DiskFormat]) -> Check {
    if model.disks.is_empty() {
        return Check::fail(
            CheckId::DiskExportable,
            "",
            "the virtual system has no disk with a file in the OVA",
        );
    }
    let bad: Vec<String> = model
        .disks
        .iter()
        .zip(formats)
        .filter(|(_, f)| qemu_format(**f).is_none())
        .map(|(d, _)| d.label.clone())
        .collect();
    if bad.is_empty() {
        let list: Vec<String> = model
            .disks
            .iter()
            .zip(formats)
            .map(|(d, f)| format!("{} ({f:?}, {} bytes)", d.label, d.size_bytes))
            .collect();
        Check::pass(CheckId::DiskExportable, "", list.join("; "))
    } else {
        Check::fail(
            CheckId::DiskExportable,
            bad.join(", "),
            "the disk format is not one vm-import converts (VMDK, qcow2, VHD, VHDX, VDI, raw); convert the disk and repackage the OVA",
        )
    }
}

fn skip_rest(report: &mut Report, input: &OvaPreflightInput<'_>, why: &str) {
    let have: BTreeSet<CheckId> = report.checks.iter().map(|c| c.id).collect();
    for id in [
        CheckId::VmFound,
        CheckId::VmState,
        CheckId::VmName,
        CheckId::NetworkSourceExists,
        CheckId::NetworkSourceUsed,
        CheckId::NetworkUnmapped,
        CheckId::DiskExportable,
        CheckId::Quota,
    ] {
        if !have.contains(&id) {
            report
                .checks
                .push(Check::skip(id, "", format!("skipped: {why}")));
        }
    }
    // Checks that need no descriptor still run, so that every input mistake shows at once.
    let textual: Vec<ResolvedMapping> = input
        .import
        .spec
        .network_mapping
        .iter()
        .map(|m| ResolvedMapping {
            mapping: m.clone(),
            resolution: Resolution::NotFound,
        })
        .collect();
    report.checks.extend(network::check_duplicates(&textual));
    report.checks.extend(network::check_destinations(
        &input.import.spec.network_mapping,
        input.destination_exists,
    ));
}
