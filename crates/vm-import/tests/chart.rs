#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::pedantic
)]
//! The Helm chart (`charts/vm-import`) against the binary: CRDs, flags, values, RBAC.
//! `scripts/check-chart` runs the first two checks from the shell.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use serde_yaml::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(rel: &str) -> String {
    let path = repo().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn vm_import(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_vm-import"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "vm-import {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_chart_crds_are_the_generated_ones() {
    let generated = vm_import(&["crds"]);
    for rel in ["deploy/crds.yaml", "charts/vm-import/crds/crds.yaml"] {
        assert!(
            read(rel) == generated,
            "{rel} differs from `vm-import crds`; regenerate it: vm-import crds > {rel}"
        );
    }
}

/// Every `--flag` token of `text` (not `---`).
fn flags_in(text: &str) -> BTreeSet<String> {
    let b = text.as_bytes();
    let mut out = BTreeSet::new();
    let mut i = 0;
    while i + 2 < b.len() {
        let starts = b[i] == b'-'
            && b[i + 1] == b'-'
            && b[i + 2].is_ascii_lowercase()
            && (i == 0 || !(b[i - 1] == b'-' || b[i - 1].is_ascii_alphanumeric()));
        if starts {
            let mut j = i + 2;
            while j < b.len()
                && (b[j].is_ascii_lowercase() || b[j].is_ascii_digit() || b[j] == b'-')
            {
                j += 1;
            }
            out.insert(text[i..j].to_owned());
            i = j;
        } else {
            i += 1;
        }
    }
    out
}

/// The long options `--help` defines (its option lines, not mentions in descriptions).
fn help_flags(help: &str) -> BTreeSet<String> {
    help.lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let l = match l.as_bytes() {
                [b'-', c, b',', b' ', ..] if c.is_ascii_alphabetic() => &l[4..],
                _ => l,
            };
            let l = l.strip_prefix("--")?;
            let name: String = l
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            (!name.is_empty()).then(|| format!("--{name}"))
        })
        .collect()
}

#[test]
fn every_flag_the_chart_passes_is_a_controller_flag() {
    let help = vm_import(&["controller", "--help"]);
    let known = help_flags(&help);
    assert!(known.contains("--disk-server-url"), "{known:?}");
    let deployment = read("charts/vm-import/templates/deployment.yaml");
    let used: BTreeSet<String> = flags_in(&deployment)
        .into_iter()
        .chain(flags_in(&read("charts/vm-import/values.yaml")))
        .collect();
    for required in [
        "--disk-server-url",
        "--identity",
        "--lease-namespace",
        "--scratch-dir",
        "--metrics-bind",
        "--disk-server-bind",
        "--image-backend",
        "--disk-format",
        "--image-retries",
        "--log-format",
        "--namespace",
    ] {
        assert!(
            used.contains(required),
            "the chart does not pass {required}"
        );
    }
    let unknown: Vec<_> = used.difference(&known).collect();
    assert!(
        unknown.is_empty(),
        "the chart passes flags `vm-import controller --help` does not list: {unknown:?}"
    );
    assert!(deployment.contains("--identity=$(POD_NAME)"));
    assert!(deployment.contains("--lease-namespace={{ .Release.Namespace }}"));
    assert!(deployment.contains("fieldPath: metadata.name"));
    assert!(deployment.contains("path: /healthz") && deployment.contains("path: /readyz"));
}

fn get<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |v, k| {
        v.get(k)
            .unwrap_or_else(|| panic!("values.yaml has no {path}"))
    })
}

#[test]
fn values_and_chart_metadata_parse() {
    let values: Value = serde_yaml::from_str(&read("charts/vm-import/values.yaml")).unwrap();
    assert_eq!(get(&values, "replicas").as_u64(), Some(1));
    assert_eq!(get(&values, "service.ports.disk").as_u64(), Some(8080));
    assert_eq!(get(&values, "service.ports.metrics").as_u64(), Some(8081));
    assert_eq!(
        get(&values, "scratch.persistentVolumeClaim.size").as_str(),
        Some("200Gi")
    );
    assert_eq!(
        get(&values, "scratch.persistentVolumeClaim.enabled").as_bool(),
        Some(false)
    );
    assert_eq!(get(&values, "imageBackend").as_str(), Some("auto"));
    for key in [
        "image.repository",
        "image.tag",
        "image.pullPolicy",
        "resources",
        "scratch.persistentVolumeClaim.storageClassName",
        "watchNamespace",
        "diskFormat",
        "imageRetries",
        "logFormat",
        "extraArgs",
        "nodeSelector",
        "tolerations",
        "affinity",
        "podSecurityContext",
        "securityContext",
    ] {
        get(&values, key);
    }
    assert_eq!(
        get(&values, "podSecurityContext.runAsNonRoot").as_bool(),
        Some(true)
    );

    let chart: Value = serde_yaml::from_str(&read("charts/vm-import/Chart.yaml")).unwrap();
    assert_eq!(chart["apiVersion"].as_str(), Some("v2"));
    assert_eq!(chart["name"].as_str(), Some("vm-import"));
    assert_eq!(
        chart["appVersion"].as_str(),
        Some(env!("CARGO_PKG_VERSION")),
        "Chart.yaml appVersion is not the crate's version"
    );
}

/// The RBAC rules of `rbac.yaml`, read from its plain-YAML parts (template lines dropped):
/// (kind of the role, or `namespaced` for the rules shared by the ClusterRole / Role) → rules.
fn rbac_rules(text: &str) -> Vec<(String, Value)> {
    // Drop the leading template comment and every line with a template action.
    let text = match (text.find("/*"), text.find("*/")) {
        (Some(a), Some(b)) if a < b => format!("{}{}", &text[..a], &text[b + 2..]),
        _ => text.to_owned(),
    };
    let plain: String = text
        .lines()
        .filter(|l| !l.contains("{{"))
        .map(|l| format!("{l}\n"))
        .collect();
    let mut out = Vec::new();
    for chunk in plain.split("\n---\n") {
        let doc: Value = serde_yaml::from_str(chunk)
            .unwrap_or_else(|e| panic!("rbac.yaml part does not parse ({e}):\n{chunk}"));
        match &doc {
            Value::Sequence(rules) => {
                for r in rules {
                    out.push(("namespaced".to_owned(), r.clone()));
                }
            }
            Value::Mapping(_) => {
                let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
                if let Some(rules) = doc["rules"].as_sequence() {
                    for r in rules {
                        out.push((kind.clone(), r.clone()));
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// The calls the controller makes (crates/vmi-controller), by (API group, resource).
const CALLS: &[(&str, &str, &[&str])] = &[
    (
        "migration.harvesterhci.io",
        "openstacksources",
        &["get", "list", "watch"],
    ),
    (
        "migration.harvesterhci.io",
        "vmwaresources",
        &["get", "list", "watch"],
    ),
    (
        "migration.harvesterhci.io",
        "ovasources",
        &["get", "list", "watch"],
    ),
    (
        "migration.harvesterhci.io",
        "virtualmachineimports",
        &["get", "list", "watch", "patch"],
    ),
    (
        "migration.harvesterhci.io",
        "openstacksources/status",
        &["get", "patch", "update"],
    ),
    (
        "migration.harvesterhci.io",
        "vmwaresources/status",
        &["get", "patch", "update"],
    ),
    (
        "migration.harvesterhci.io",
        "ovasources/status",
        &["get", "patch", "update"],
    ),
    (
        "migration.harvesterhci.io",
        "virtualmachineimports/status",
        &["get", "patch", "update"],
    ),
    ("", "secrets", &["get", "list", "watch"]),
    (
        "harvesterhci.io",
        "virtualmachineimages",
        &["get", "list", "watch", "create", "delete", "patch"],
    ),
    (
        "kubevirt.io",
        "virtualmachines",
        &["get", "create", "delete"],
    ),
    ("", "persistentvolumeclaims", &["get", "create", "delete"]),
    (
        "k8s.cni.cncf.io",
        "network-attachment-definitions",
        &["list"],
    ),
    ("storage.k8s.io", "storageclasses", &["get"]),
    ("events.k8s.io", "events", &["create", "patch"]),
    (
        "coordination.k8s.io",
        "leases",
        &["get", "create", "update"],
    ),
];

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .map(|x| x.as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn rbac_grants_exactly_the_calls_the_controller_makes() {
    let text = read("charts/vm-import/templates/rbac.yaml");
    for (_, resource, _) in CALLS {
        assert!(
            text.contains(&format!("\"{resource}\"")),
            "rbac.yaml does not mention {resource}"
        );
    }
    // Every rule says why it is needed.
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    for (i, l) in lines.iter().enumerate() {
        if l.starts_with("- apiGroups:") {
            let prev = lines[..i].iter().rev().find(|p| !p.is_empty());
            assert!(
                prev.is_some_and(|p| p.starts_with('#')),
                "rbac.yaml line {}: a rule without a comment saying why",
                i + 1
            );
        }
    }

    let mut granted: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for (kind, rule) in rbac_rules(&text) {
        let verbs = strings(&rule["verbs"]);
        assert!(
            !verbs.contains(&"*".to_owned()),
            "a wildcard verb: {rule:?}"
        );
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                assert_ne!(resource, "*", "a wildcard resource: {rule:?}");
                let expected_kind = match resource.as_str() {
                    "leases" => "Role",
                    "storageclasses" | "network-attachment-definitions" => "ClusterRole",
                    _ => "namespaced",
                };
                assert_eq!(
                    kind, expected_kind,
                    "{resource} is granted in a {kind}, expected {expected_kind}"
                );
                granted
                    .entry((group.clone(), resource))
                    .or_default()
                    .extend(verbs.iter().cloned());
            }
        }
    }
    let expected: BTreeMap<(String, String), BTreeSet<String>> = CALLS
        .iter()
        .map(|(g, r, v)| {
            (
                ((*g).to_owned(), (*r).to_owned()),
                v.iter().map(|s| (*s).to_owned()).collect(),
            )
        })
        .collect();
    assert_eq!(granted, expected);
}
