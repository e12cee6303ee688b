//! Preflight of an OpenStack import: gathers facts through [`OpenstackApi`] (read-only calls
//! only) and evaluates them with the pure checks of `vmi_core`. Nothing on the source changes.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use tracing::{debug, instrument};
use vmi_api::VirtualMachineImport;
use vmi_core::model::{NetworkRef, Nic};
use vmi_core::names::{looks_like_uuid, sanitize_vm_name};
use vmi_core::network::{self, Destination, Resolution, ResolvedMapping};
use vmi_core::preflight::{Check, CheckId, Report};

use crate::api::{AuthInfo, NetworkQuery, OpenstackApi};
use crate::describe::{ServerNic, ordered_nics};
use crate::error::OpenstackError;
use crate::wire::{Server, ServerStatus, Volume, VolumeQuota, VolumeStatus};

/// Services an import needs from the catalog.
pub const REQUIRED_SERVICES: [&str; 4] = ["compute", "network", "image", "volumev3"];

/// What preflight is asked to check.
#[derive(Clone, Copy)]
pub struct PreflightInput<'a> {
    pub import: &'a VirtualMachineImport,
    /// The Keystone URL, for messages.
    pub endpoint: &'a str,
    /// Who logs in and from where the settings came, for messages (never secrets).
    pub credentials: &'a str,
    /// TLS verification was turned off.
    pub tls_insecure: bool,
    /// Existence of destination networks where a cluster is reachable; `None` in the CLI.
    pub destination_exists: Option<&'a (dyn Fn(&Destination) -> bool + Sync)>,
}

impl std::fmt::Debug for PreflightInput<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreflightInput")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// What preflight learned, reused by the import so that nothing is fetched twice.
#[derive(Clone, Debug)]
pub struct Facts {
    pub auth: AuthInfo,
    pub server: Server,
    pub nics: Vec<ServerNic>,
    /// The VM's NICs in the neutral model (network id and name; model not yet known).
    pub model_nics: Vec<Nic>,
    pub resolved: Vec<ResolvedMapping>,
    /// Attached volumes, fetched.
    pub volumes: Vec<Volume>,
    /// The sanitised name of the VM to create.
    pub imported_name: Option<String>,
}

/// The report, and the facts when the VM was found.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub report: Report,
    pub facts: Option<Facts>,
}

/// Runs every check. Errors of the cloud become failed checks, never a panic or an early exit
/// without a report.
#[instrument(skip_all, fields(import = %vmi_core::input::object_key(&input.import.metadata)))]
pub async fn run(api: &dyn OpenstackApi, input: &PreflightInput<'_>) -> Outcome {
    let spec = &input.import.spec;
    let mut report = Report::new(vmi_core::input::object_key(&input.import.metadata));
    report.checks.push(tls_check(input));

    let Some(auth) = auth_check(api, input, &mut report).await else {
        skip_rest(&mut report, input, "source.auth failed");
        return Outcome {
            report: report.sorted(),
            facts: None,
        };
    };
    let server = vm_found_check(api, spec, &auth, &mut report).await;
    // Networks of the mapping, in Neutron (never Nova's os-networks).
    let resolved = mapping_checks(api, input, &mut report).await;
    let Some(server) = server else {
        skip_vm_checks(&mut report, input);
        return Outcome {
            report: report.sorted(),
            facts: None,
        };
    };
    report.checks.push(state_check(&server));
    let imported_name = sanitize_vm_name(&server.name);
    report
        .checks
        .push(name_check(&server, imported_name.as_deref()));

    let (nics, model_nics) = nic_facts(api, &server, &mut report).await;
    report
        .checks
        .extend(network::check_sources_used(&resolved, &model_nics));
    report
        .checks
        .extend(network::check_unmapped(&resolved, &model_nics));
    report.checks.extend(network::check_destinations(
        &spec.network_mapping,
        input.destination_exists,
    ));

    let volumes = disk_facts(api, &server, &mut report).await;
    report.checks.push(quota_facts(api, &auth, &volumes).await);
    debug!(requests = api.request_count(), "preflight done");
    Outcome {
        report: report.sorted(),
        facts: Some(Facts {
            auth,
            server,
            nics,
            model_nics,
            resolved,
            volumes,
            imported_name,
        }),
    }
}

/// `vm.found`.
async fn vm_found_check(
    api: &dyn OpenstackApi,
    spec: &vmi_api::VirtualMachineImportSpec,
    auth: &AuthInfo,
    report: &mut Report,
) -> Option<Server> {
    match find_server(api, &spec.virtual_machine_name, auth).await {
        Ok(s) => {
            report.checks.push(Check::pass(
                CheckId::VmFound,
                spec.virtual_machine_name.clone(),
                format!("server '{}' ({}), status {}", s.name, s.id, s.status),
            ));
            Some(s)
        }
        Err(message) => {
            report.checks.push(Check::fail(
                CheckId::VmFound,
                spec.virtual_machine_name.clone(),
                message,
            ));
            None
        }
    }
}

/// Looks the mapped source networks up in Neutron and adds `network.mapping.duplicate` and
/// `network.source.exists`. Returns the resolutions (empty when the lookup failed).
async fn mapping_checks(
    api: &dyn OpenstackApi,
    input: &PreflightInput<'_>,
    report: &mut Report,
) -> Vec<ResolvedMapping> {
    match resolve_mapping(api, &input.import.spec).await {
        Ok(r) => {
            report.checks.extend(network::check_duplicates(&r));
            report
                .checks
                .extend(network::check_sources_exist(&r, "Neutron"));
            r
        }
        Err(e) => {
            report.checks.push(Check::fail(
                CheckId::NetworkSourceExists,
                "",
                format!("could not look the networks up in Neutron: {e}"),
            ));
            report
                .checks
                .extend(network::check_duplicates(&textual_mapping(input)));
            Vec::new()
        }
    }
}

/// `quota`.
async fn quota_facts(api: &dyn OpenstackApi, auth: &AuthInfo, volumes: &[Volume]) -> Check {
    match api.get_volume_quota(&auth.project_id).await {
        Ok(q) => quota_check(volumes, &q),
        Err(e) if volumes.is_empty() => Check::pass(
            CheckId::Quota,
            "",
            format!(
                "no temporary Cinder resources are needed (quota not readable: {})",
                e.reason()
            ),
        ),
        Err(e) => Check::warn(
            CheckId::Quota,
            "",
            format!(
                "could not read the Cinder quota of the project, so room for the temporary \
                 snapshots and volumes is unknown: {e}"
            ),
        ),
    }
}

/// The checks that need the VM, skipped because it was not found.
fn skip_vm_checks(report: &mut Report, input: &PreflightInput<'_>) {
    report.checks.extend(network::check_destinations(
        &input.import.spec.network_mapping,
        input.destination_exists,
    ));
    for id in [
        CheckId::VmState,
        CheckId::VmName,
        CheckId::NetworkSourceUsed,
        CheckId::NetworkUnmapped,
        CheckId::DiskExportable,
        CheckId::Quota,
    ] {
        report
            .checks
            .push(Check::skip(id, "", "skipped: the VM was not found"));
    }
}

/// The mapping as written, before any lookup.
fn textual_mapping(input: &PreflightInput<'_>) -> Vec<ResolvedMapping> {
    input
        .import
        .spec
        .network_mapping
        .iter()
        .map(|m| ResolvedMapping {
            mapping: m.clone(),
            resolution: Resolution::NotFound,
        })
        .collect()
}

/// `source.auth`: logs in and checks the catalog.
async fn auth_check(
    api: &dyn OpenstackApi,
    input: &PreflightInput<'_>,
    report: &mut Report,
) -> Option<AuthInfo> {
    let verified = verify_source(api, input.endpoint, input.credentials).await;
    report.checks.push(verified.check);
    verified.auth
}

/// What [`verify_source`] found.
#[derive(Clone, Debug)]
pub struct Verified {
    /// The `source.auth` check.
    pub check: Check,
    /// The login, when it worked and the catalog is complete.
    pub auth: Option<AuthInfo>,
    /// CamelCase kind of the outcome: `Verified`, `Unauthorized`, `TlsError`, `Unreachable`,
    /// `ServiceMissing`, …
    pub reason: &'static str,
}

/// Logs in and checks that the catalog has every service an import needs: the check
/// `source.auth`, and what a source object's status reports. Never panics; every failure is a
/// failed check whose message says what to fix.
pub async fn verify_source(api: &dyn OpenstackApi, endpoint: &str, credentials: &str) -> Verified {
    let auth = match api.authenticate().await {
        Ok(a) => a,
        Err(e) => {
            return Verified {
                check: Check::fail(
                    CheckId::SourceAuth,
                    endpoint,
                    auth_failure(endpoint, credentials, &e),
                ),
                auth: None,
                reason: e.reason(),
            };
        }
    };
    let missing: Vec<&str> = REQUIRED_SERVICES
        .iter()
        .copied()
        .filter(|s| !auth.services.iter().any(|have| have == s))
        .collect();
    if missing.is_empty() {
        let check = Check::pass(
            CheckId::SourceAuth,
            endpoint,
            format!(
                "logged in as '{}' in project '{}' ({}); catalog has {}{}",
                auth.user_name,
                auth.project_name,
                auth.project_id,
                auth.services.join(", "),
                auth.compute_microversion
                    .as_deref()
                    .map(|v| format!("; Nova microversion {v}"))
                    .unwrap_or_default()
            ),
        );
        Verified {
            check,
            auth: Some(auth),
            reason: "Verified",
        }
    } else {
        let check = Check::fail(
            CheckId::SourceAuth,
            endpoint,
            format!(
                "logged in as '{}', but the catalog has no {} endpoint for {}: an import needs \
                 compute, network, image and volumev3; check the source's region and interface",
                auth.user_name,
                missing.join(", "),
                auth.region
                    .as_deref()
                    .map_or_else(|| "any region".to_owned(), |r| format!("region '{r}'")),
            ),
        );
        Verified {
            check,
            auth: None,
            reason: "ServiceMissing",
        }
    }
}

fn name_check(server: &Server, imported: Option<&str>) -> Check {
    match imported {
        Some(n) if n == server.name => Check::pass(
            CheckId::VmName,
            server.name.clone(),
            format!("imported as '{n}'"),
        ),
        Some(n) => Check::pass(
            CheckId::VmName,
            server.name.clone(),
            format!(
                "'{}' is not a DNS-1123 label; imported as '{n}'",
                server.name
            ),
        ),
        None => Check::fail(
            CheckId::VmName,
            server.name.clone(),
            format!(
                "'{}' has no letters or digits usable in a Kubernetes name; rename the server \
                 (e.g. `openstack server set --name NEW {}`) and import again",
                server.name, server.id
            ),
        ),
    }
}

/// The server's NICs in order, and as neutral NICs. Lookup failures become failed checks.
async fn nic_facts(
    api: &dyn OpenstackApi,
    server: &Server,
    report: &mut Report,
) -> (Vec<ServerNic>, Vec<Nic>) {
    let nics = match api.list_server_ports(&server.id).await {
        Ok(ports) => ordered_nics(server, &ports),
        Err(e) => {
            report.checks.push(Check::fail(
                CheckId::NetworkUnmapped,
                server.id.clone(),
                format!("could not list the server's ports in Neutron: {e}"),
            ));
            return (Vec::new(), Vec::new());
        }
    };
    match nic_models(api, &nics).await {
        Ok(models) => (nics, models),
        Err(e) => {
            report.checks.push(Check::fail(
                CheckId::NetworkUnmapped,
                server.id.clone(),
                format!("could not look up the networks of the server's ports: {e}"),
            ));
            (nics, Vec::new())
        }
    }
}

/// Fetches the attached volumes and adds the `disk.exportable` checks.
async fn disk_facts(api: &dyn OpenstackApi, server: &Server, report: &mut Report) -> Vec<Volume> {
    let mut volumes = Vec::new();
    let mut errors = Vec::new();
    for attached in &server.volumes_attached {
        match api.get_volume(&attached.id).await {
            Ok(Some(v)) => volumes.push(v),
            Ok(None) => errors.push(Check::fail(
                CheckId::DiskExportable,
                format!("volume {}", attached.id),
                "attached to the server but not found in Cinder (deleted, or in another project)",
            )),
            Err(e) => errors.push(Check::fail(
                CheckId::DiskExportable,
                format!("volume {}", attached.id),
                format!("could not read the volume: {e}"),
            )),
        }
    }
    report.checks.extend(disk_checks(server, &volumes));
    report.checks.extend(errors);
    volumes
}

fn tls_check(input: &PreflightInput<'_>) -> Check {
    let endpoint = input.endpoint;
    if input.tls_insecure {
        return Check::warn(
            CheckId::SourceTls,
            endpoint,
            "TLS certificate verification is turned off: whoever sits between here and the cloud \
             can read the credentials; put the cloud's CA in the Secret's ca_cert instead",
        );
    }
    let parsed = url::Url::parse(endpoint).ok();
    match parsed.as_ref().map(url::Url::scheme) {
        Some("https") => Check::pass(
            CheckId::SourceTls,
            endpoint,
            "TLS certificates are verified",
        ),
        Some("http") => {
            let loopback = parsed
                .as_ref()
                .and_then(url::Url::host)
                .is_some_and(|h| match h {
                    url::Host::Domain(d) => d == "localhost",
                    url::Host::Ipv4(a) => a.is_loopback(),
                    url::Host::Ipv6(a) => a.is_loopback(),
                });
            if loopback {
                Check::pass(
                    CheckId::SourceTls,
                    endpoint,
                    "plain HTTP on the loopback interface",
                )
            } else {
                Check::warn(
                    CheckId::SourceTls,
                    endpoint,
                    "plain HTTP: credentials and disk data travel unencrypted; use the cloud's https endpoint",
                )
            }
        }
        _ => Check::skip(CheckId::SourceTls, endpoint, "not a URL"),
    }
}

fn auth_failure(endpoint: &str, credentials: &str, e: &OpenstackError) -> String {
    match e {
        OpenstackError::Api { status: 401, .. } => format!(
            "Keystone refused the credentials of {credentials} ({e}); check the user name, \
             password (or application credential) and the user and project domains"
        ),
        OpenstackError::Api { status: 404, .. } => format!(
            "no Keystone v3 at {endpoint}: {e}; the endpoint must be the Keystone URL, e.g. \
             https://keystone.example.com:5000/v3"
        ),
        _ => format!("cannot log in as {credentials}: {e}"),
    }
}

fn skip_rest(report: &mut Report, input: &PreflightInput<'_>, why: &str) {
    report.checks.push(Check::skip(
        CheckId::VmFound,
        input.import.spec.virtual_machine_name.clone(),
        format!("skipped: {why}"),
    ));
    // Checks that need no cloud still run, so that every input mistake shows at once.
    let textual = textual_mapping(input);
    report.checks.extend(network::check_duplicates(&textual));
    report.checks.extend(network::check_destinations(
        &input.import.spec.network_mapping,
        input.destination_exists,
    ));
    for id in [
        CheckId::VmState,
        CheckId::VmName,
        CheckId::NetworkSourceExists,
        CheckId::NetworkSourceUsed,
        CheckId::NetworkUnmapped,
        CheckId::DiskExportable,
        CheckId::Quota,
    ] {
        report
            .checks
            .push(Check::skip(id, "", format!("skipped: {why}")));
    }
}

/// Finds the VM by UUID or exact name; the error is the check's message.
pub async fn find_server(
    api: &dyn OpenstackApi,
    wanted: &str,
    auth: &AuthInfo,
) -> Result<Server, String> {
    let project = format!("project '{}'", auth.project_name);
    if looks_like_uuid(wanted) {
        match api.get_server(wanted).await {
            Ok(Some(s)) => return Ok(s),
            Ok(None) => {}
            Err(e) => return Err(format!("could not look the server up: {e}")),
        }
    }
    let found = api
        .find_servers_by_name(wanted)
        .await
        .map_err(|e| format!("could not list servers: {e}"))?;
    match found.len() {
        1 => Ok(found.into_iter().next().ok_or_else(String::new)?),
        0 => {
            let similar = api.find_servers_like(wanted).await.unwrap_or_default();
            let hint = if similar.is_empty() {
                String::new()
            } else {
                let names: Vec<String> = similar
                    .iter()
                    .take(5)
                    .map(|s| format!("'{}' ({})", s.name, s.id))
                    .collect();
                format!("; similar names: {}", names.join(", "))
            };
            let what = if looks_like_uuid(wanted) {
                "no server with ID or name"
            } else {
                "no server named"
            };
            Err(format!(
                "{what} '{wanted}' in {project} (names are exact and case-sensitive){hint}; fix \
                 spec.virtualMachineName"
            ))
        }
        n => {
            let ids: Vec<String> = found
                .iter()
                .map(|s| format!("{} ({})", s.id, s.status))
                .collect();
            Err(format!(
                "{n} servers are named '{wanted}' in {project}: {}; put the ID of the one you \
                 mean in spec.virtualMachineName",
                ids.join(", ")
            ))
        }
    }
}

fn state_check(server: &Server) -> Check {
    let subject = server.name.clone();
    if let Some(task) = server.task_state.as_deref() {
        return Check::fail(
            CheckId::VmState,
            subject,
            format!(
                "the server is busy (task '{task}', status {}); wait until it finishes and try again",
                server.status
            ),
        );
    }
    match server.status {
        ServerStatus::Active => Check::pass(
            CheckId::VmState,
            subject,
            "ACTIVE: the import will stop it (os-stop) once preflight has passed",
        ),
        ServerStatus::Shutoff => Check::pass(CheckId::VmState, subject, "SHUTOFF: ready to export"),
        ServerStatus::Paused | ServerStatus::Suspended => Check::fail(
            CheckId::VmState,
            subject,
            format!(
                "{}: Nova cannot stop a server in this state; resume it or stop it first",
                server.status
            ),
        ),
        ref other => Check::fail(
            CheckId::VmState,
            subject,
            format!("status {other}: an export needs the server ACTIVE or SHUTOFF"),
        ),
    }
}

async fn resolve_mapping(
    api: &dyn OpenstackApi,
    spec: &vmi_api::VirtualMachineImportSpec,
) -> Result<Vec<ResolvedMapping>, OpenstackError> {
    if spec.network_mapping.is_empty() {
        return Ok(Vec::new());
    }
    let mut query = NetworkQuery::default();
    for m in &spec.network_mapping {
        if !query.names.contains(&m.source_network) {
            query.names.push(m.source_network.clone());
        }
        if looks_like_uuid(&m.source_network) && !query.ids.contains(&m.source_network) {
            query.ids.push(m.source_network.clone());
        }
    }
    let networks = api.list_networks(&query).await?;
    Ok(spec
        .network_mapping
        .iter()
        .map(|m| {
            let as_ref = |n: &crate::wire::Network| NetworkRef {
                id: Some(n.id.clone()),
                name: n.name.clone(),
            };
            let resolution = if let Some(n) = networks.iter().find(|n| n.id == m.source_network) {
                Resolution::Found(as_ref(n))
            } else {
                // Neutron's name filter may be case-insensitive on MySQL: compare exactly here.
                let named: Vec<_> = networks
                    .iter()
                    .filter(|n| n.name == m.source_network)
                    .collect();
                match named.len() {
                    0 => Resolution::NotFound,
                    1 => Resolution::Found(as_ref(named[0])),
                    _ => Resolution::Ambiguous(named.into_iter().map(as_ref).collect()),
                }
            };
            ResolvedMapping {
                mapping: m.clone(),
                resolution,
            }
        })
        .collect())
}

/// The neutral NICs: network id from the port, name from Nova's addresses or, for ports Nova
/// does not list, from Neutron.
async fn nic_models(
    api: &dyn OpenstackApi,
    nics: &[ServerNic],
) -> Result<Vec<Nic>, OpenstackError> {
    let unnamed: Vec<String> = nics
        .iter()
        .filter(|n| n.network_name.is_none())
        .map(|n| n.port.network_id.clone())
        .collect();
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    if !unnamed.is_empty() {
        let query = NetworkQuery {
            names: Vec::new(),
            ids: unnamed,
        };
        for n in api.list_networks(&query).await? {
            names.insert(n.id, n.name);
        }
    }
    Ok(nics
        .iter()
        .map(|n| Nic {
            mac: n.port.mac_address.to_ascii_lowercase(),
            network: NetworkRef {
                id: Some(n.port.network_id.clone()),
                name: n
                    .network_name
                    .clone()
                    .or_else(|| names.get(&n.port.network_id).cloned())
                    .unwrap_or_default(),
            },
            model: None,
        })
        .collect())
}

fn device_of(volume: &Volume, server_id: &str) -> Option<String> {
    volume
        .attachments
        .iter()
        .find(|a| a.server_id.as_deref() == Some(server_id))
        .and_then(|a| a.device.clone())
}

fn disk_checks(server: &Server, volumes: &[Volume]) -> Vec<Check> {
    let mut checks = Vec::new();
    if let Some(image) = &server.image {
        let mut message = format!(
            "root disk of an image-booted server (image {image}): exported through a server \
             image (createImage)"
        );
        let mut status = vmi_core::preflight::CheckStatus::Pass;
        if let Some(eph) = server.flavor.ephemeral.filter(|e| *e > 0) {
            status = vmi_core::preflight::CheckStatus::Warn;
            let _ = write!(
                message,
                "; the flavor's {eph} GiB ephemeral disk cannot be exported by Nova and will not \
                 be imported: copy its data to a volume first if you need it"
            );
        }
        checks.push(Check::new(
            CheckId::DiskExportable,
            status,
            "root disk",
            message,
        ));
    } else if volumes.is_empty() {
        checks.push(Check::fail(
            CheckId::DiskExportable,
            "root disk",
            "the server has no image and no attached volume: nothing to export",
        ));
    }
    for v in volumes {
        let device = device_of(v, &server.id).unwrap_or_else(|| "?".to_owned());
        let subject = format!(
            "volume {} ({device})",
            v.name.as_deref().filter(|n| !n.is_empty()).unwrap_or(&v.id)
        );
        let check = if v.encrypted {
            Check::fail(
                CheckId::DiskExportable,
                subject,
                format!(
                    "volume {} is encrypted: its exported image would hold ciphertext the new VM \
                     cannot read; decrypt it (retype to an unencrypted type) before importing",
                    v.id
                ),
            )
        } else {
            match &v.status {
                VolumeStatus::InUse | VolumeStatus::Available => Check::pass(
                    CheckId::DiskExportable,
                    subject,
                    format!(
                        "volume {}, {} GiB, {}{}: exported through snapshot → volume → image",
                        v.id,
                        v.size,
                        v.status,
                        if v.bootable { ", bootable" } else { "" }
                    ),
                ),
                other => Check::fail(
                    CheckId::DiskExportable,
                    subject,
                    format!(
                        "volume {} is '{other}': Cinder cannot snapshot it in this state; {}",
                        v.id,
                        match other {
                            VolumeStatus::Error
                            | VolumeStatus::ErrorDeleting
                            | VolumeStatus::ErrorExtending
                            | VolumeStatus::ErrorRestoring
                            | VolumeStatus::ErrorManaging => "repair or reset the volume first",
                            _ => "wait until the current operation ends and try again",
                        }
                    ),
                ),
            }
        };
        checks.push(check);
    }
    checks
}

/// Each volume disk needs one snapshot and one volume of its size at a time (both count
/// against `gigabytes`), plus the per-type quotas where the cloud has them.
fn quota_check(volumes: &[Volume], quota: &VolumeQuota) -> Check {
    if volumes.is_empty() {
        return Check::pass(
            CheckId::Quota,
            "",
            "no temporary Cinder resources are needed",
        );
    }
    let mut needs: BTreeMap<String, i64> = BTreeMap::new();
    for v in volumes {
        let size = i64::try_from(v.size).unwrap_or(i64::MAX);
        *needs.entry("volumes".into()).or_default() += 1;
        *needs.entry("snapshots".into()).or_default() += 1;
        *needs.entry("gigabytes".into()).or_default() += 2 * size;
        if let Some(t) = &v.volume_type {
            *needs.entry(format!("volumes_{t}")).or_default() += 1;
            *needs.entry(format!("snapshots_{t}")).or_default() += 1;
            *needs.entry(format!("gigabytes_{t}")).or_default() += 2 * size;
        }
    }
    let mut short = Vec::new();
    for (key, need) in &needs {
        if let Some(room) = quota.get(key).and_then(|q| q.room())
            && room < *need
        {
            let q = quota.get(key).unwrap_or_default();
            short.push(format!(
                "{key}: needs {need}, {room} left (limit {}, in use {}, reserved {})",
                q.limit, q.in_use, q.reserved
            ));
        }
    }
    let summary = format!(
        "{} temporary volume(s), {} snapshot(s), {} GiB",
        needs.get("volumes").copied().unwrap_or(0),
        needs.get("snapshots").copied().unwrap_or(0),
        needs.get("gigabytes").copied().unwrap_or(0)
    );
    if short.is_empty() {
        Check::pass(CheckId::Quota, "", format!("room for {summary}"))
    } else {
        Check::fail(
            CheckId::Quota,
            "",
            format!(
                "the export needs {summary} at once, more than the project's Cinder quota allows: \
                 {}; raise the quota or free space, then import again",
                short.join("; ")
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::QuotaUsage;

    fn volume(id: &str, size: u64, status: &str) -> Volume {
        serde_json::from_value(serde_json::json!({
            "id": id, "status": status, "size": size, "volume_type": "nfs1",
            "attachments": [{"server_id": "s", "device": "/dev/vdb"}]
        }))
        .unwrap()
    }

    #[test]
    fn quota_counts_a_snapshot_and_a_volume_per_disk() {
        let vols = vec![volume("a", 4, "in-use"), volume("b", 4, "in-use")];
        let mut q = VolumeQuota::default();
        q.entries.insert(
            "volumes".into(),
            QuotaUsage {
                limit: 10,
                in_use: 8,
                reserved: 0,
            },
        );
        q.entries.insert(
            "snapshots".into(),
            QuotaUsage {
                limit: 10,
                in_use: 0,
                reserved: 0,
            },
        );
        q.entries.insert(
            "gigabytes".into(),
            QuotaUsage {
                limit: 20,
                in_use: 4,
                reserved: 0,
            },
        );
        q.entries.insert(
            "gigabytes_nfs1".into(),
            QuotaUsage {
                limit: -1,
                in_use: 5,
                reserved: 0,
            },
        );
        let c = quota_check(&vols, &q);
        assert_eq!(
            c.status,
            vmi_core::preflight::CheckStatus::Pass,
            "{}",
            c.message
        );
        q.entries.insert(
            "gigabytes".into(),
            QuotaUsage {
                limit: 20,
                in_use: 13,
                reserved: 0,
            },
        );
        let c = quota_check(&vols, &q);
        assert_eq!(c.status, vmi_core::preflight::CheckStatus::Fail);
        assert!(
            c.message.contains("gigabytes: needs 16, 7 left"),
            "{}",
            c.message
        );
    }

    #[test]
    fn volumes_in_error_fail_with_the_state_named() {
        let server: Server = serde_json::from_value(
            serde_json::json!({"id": "s", "name": "vm", "status": "SHUTOFF", "image": ""}),
        )
        .unwrap();
        let checks = disk_checks(
            &server,
            &[volume("a", 1, "error"), volume("b", 1, "in-use")],
        );
        assert_eq!(checks[0].status, vmi_core::preflight::CheckStatus::Fail);
        assert!(checks[0].message.contains("'error'"));
        assert_eq!(checks[1].status, vmi_core::preflight::CheckStatus::Pass);
    }
}
