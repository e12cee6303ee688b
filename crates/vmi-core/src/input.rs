//! The CLI's input: the YAML documents a user would `kubectl apply` (a source, its Secret and a
//! VirtualMachineImport), parsed into typed objects. Every error names the document and field.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use serde::de::DeserializeOwned;
use vmi_api::{OpenstackSource, OvaSource, VirtualMachineImport, VmwareSource};

use crate::secret::Sensitive;

/// The namespace assumed for objects that name none (what `kubectl apply` does with the default
/// context).
pub const DEFAULT_NAMESPACE: &str = "default";

/// Why the input cannot be used. Each message names the document (1-based, in file order) and,
/// where it applies, the object and the field.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InputError {
    #[error("document {doc}: not valid YAML: {message}")]
    Yaml { doc: usize, message: String },
    #[error("document {doc}: has no `kind`; every document needs `apiVersion` and `kind`")]
    NoKind { doc: usize },
    #[error(
        "document {doc}: kind `{kind}` (apiVersion `{api_version}`) is not read by vm-import; \
         expected OpenstackSource, OvaSource, VmwareSource, VirtualMachineImport \
         (apiVersion migration.harvesterhci.io/v1beta1) or Secret (v1)"
    )]
    UnknownKind {
        doc: usize,
        kind: String,
        api_version: String,
    },
    #[error("document {doc} ({what}): field `{path}`: {message}")]
    Field {
        doc: usize,
        what: String,
        path: String,
        message: String,
    },
    #[error("document {doc} (Secret {name}): key `{key}` is not valid base64 UTF-8 text")]
    SecretEncoding {
        doc: usize,
        name: String,
        key: String,
    },
    #[error("the input has no VirtualMachineImport document; add one (see examples/)")]
    NoImport,
    #[error("the input has {count} VirtualMachineImport documents ({names}); give one per file")]
    ManyImports { count: usize, names: String },
    #[error(
        "VirtualMachineImport {import}: spec.sourceCluster.kind `{kind}` is not a source kind; \
         use OpenstackSource, VmwareSource or OvaSource"
    )]
    BadSourceKind { import: String, kind: String },
    #[error("VirtualMachineImport {import}: spec.sourceCluster.name is empty; name the source")]
    NoSourceName { import: String },
    #[error(
        "VirtualMachineImport {import}: spec.sourceCluster refers to {kind} {reference}, which is \
         not in the input; add its document{hint}"
    )]
    MissingSource {
        import: String,
        kind: &'static str,
        reference: String,
        hint: String,
    },
}

/// A parsed object with the position of its document in the input (1-based).
#[derive(Clone, Debug)]
pub struct Located<T> {
    pub doc: usize,
    pub value: T,
}

/// A Secret's data, decoded, with every value kept out of `Debug` output.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecretData {
    pub namespace: String,
    pub name: String,
    pub data: BTreeMap<String, Sensitive>,
}

impl SecretData {
    /// The value of `key`, if present and not empty.
    pub fn get(&self, key: &str) -> Option<&Sensitive> {
        self.data.get(key).filter(|v| !v.is_empty())
    }
}

/// Every document of the input, by kind.
#[derive(Clone, Debug, Default)]
pub struct Documents {
    pub imports: Vec<Located<VirtualMachineImport>>,
    pub openstack_sources: Vec<Located<OpenstackSource>>,
    pub vmware_sources: Vec<Located<VmwareSource>>,
    pub ova_sources: Vec<Located<OvaSource>>,
    pub secrets: Vec<Located<SecretData>>,
}

/// The kinds a `sourceCluster` can refer to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    Openstack,
    Vmware,
    Ova,
}

impl SourceKind {
    /// Reads `spec.sourceCluster.kind`. Upstream's README writes both `OpenstackSource` and the
    /// short `Openstack`; both are accepted, case-insensitively.
    pub fn from_reference(kind: &str) -> Option<SourceKind> {
        match kind.to_ascii_lowercase().as_str() {
            "openstacksource" | "openstack" => Some(SourceKind::Openstack),
            "vmwaresource" | "vmware" => Some(SourceKind::Vmware),
            "ovasource" | "ova" => Some(SourceKind::Ova),
            _ => None,
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            SourceKind::Openstack => "OpenstackSource",
            SourceKind::Vmware => "VmwareSource",
            SourceKind::Ova => "OvaSource",
        }
    }
}

/// The source an import refers to.
#[derive(Clone, Debug)]
pub enum SourceDoc {
    Openstack(OpenstackSource),
    Vmware(VmwareSource),
    Ova(OvaSource),
}

/// One import with everything the input says about it.
#[derive(Clone, Debug)]
pub struct ImportRequest {
    pub import: VirtualMachineImport,
    pub source_kind: SourceKind,
    /// The source document; `None` when the input lacks it and `allow_missing_source` was set
    /// (the CLI then takes the cloud from `--os-cloud` or `OS_*`).
    pub source: Option<SourceDoc>,
    /// The Secret the source refers to, if the input has it.
    pub secret: Option<SecretData>,
}

impl ImportRequest {
    /// `namespace/name` of the import.
    pub fn import_key(&self) -> String {
        object_key(&self.import.metadata)
    }
}

/// `namespace/name` of an object (namespace defaulted).
pub fn object_key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE),
        meta.name.as_deref().unwrap_or("<unnamed>")
    )
}

fn namespace_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE)
}

/// Parses a multi-document YAML stream.
pub fn parse_documents(text: &str) -> Result<Documents, InputError> {
    use serde::Deserialize;
    let mut docs = Documents::default();
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let doc = i + 1;
        let value = serde_yaml::Value::deserialize(de).map_err(|e| InputError::Yaml {
            doc,
            message: e.to_string(),
        })?;
        if value.is_null() {
            continue;
        }
        let kind = value
            .get("kind")
            .and_then(serde_yaml::Value::as_str)
            .map(str::to_owned);
        let api_version = value
            .get("apiVersion")
            .and_then(serde_yaml::Value::as_str)
            .unwrap_or("")
            .to_owned();
        let Some(kind) = kind else {
            return Err(InputError::NoKind { doc });
        };
        let group_ok = api_version == vmi_api::API_VERSION;
        match (kind.as_str(), group_ok) {
            ("VirtualMachineImport", true) => {
                docs.imports.push(Located {
                    doc,
                    value: typed(doc, &kind, value)?,
                });
            }
            ("OpenstackSource", true) => {
                docs.openstack_sources.push(Located {
                    doc,
                    value: typed(doc, &kind, value)?,
                });
            }
            ("VmwareSource", true) => {
                docs.vmware_sources.push(Located {
                    doc,
                    value: typed(doc, &kind, value)?,
                });
            }
            ("OvaSource", true) => {
                docs.ova_sources.push(Located {
                    doc,
                    value: typed(doc, &kind, value)?,
                });
            }
            ("Secret", _) if api_version == "v1" => {
                let secret: Secret = typed(doc, &kind, value)?;
                docs.secrets.push(Located {
                    doc,
                    value: secret_data(doc, secret)?,
                });
            }
            _ => {
                return Err(InputError::UnknownKind {
                    doc,
                    kind,
                    api_version,
                });
            }
        }
    }
    Ok(docs)
}

fn typed<T: DeserializeOwned>(
    doc: usize,
    kind: &str,
    value: serde_yaml::Value,
) -> Result<T, InputError> {
    let name = value
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(serde_yaml::Value::as_str)
        .map_or_else(|| kind.to_owned(), |n| format!("{kind} {n}"));
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        InputError::Field {
            doc,
            what: name,
            path,
            message,
        }
    })
}

fn secret_data(doc: usize, secret: Secret) -> Result<SecretData, InputError> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    let mut data = BTreeMap::new();
    for (key, bytes) in secret.data.unwrap_or_default() {
        let text = String::from_utf8(bytes.0).map_err(|_| InputError::SecretEncoding {
            doc,
            name: name.clone(),
            key: key.clone(),
        })?;
        data.insert(key, Sensitive::new(text));
    }
    for (key, text) in secret.string_data.unwrap_or_default() {
        data.insert(key, Sensitive::new(text));
    }
    Ok(SecretData {
        namespace: namespace_of(&secret.metadata).to_owned(),
        name,
        data,
    })
}

impl Documents {
    /// The single import of the input with its source and Secret.
    ///
    /// With `allow_missing_source` an OpenStack import whose source document is absent is
    /// accepted (the CLI takes the cloud from `--os-cloud` or the `OS_*` variables instead).
    pub fn into_request(self, allow_missing_source: bool) -> Result<ImportRequest, InputError> {
        let import = match self.imports.len() {
            0 => return Err(InputError::NoImport),
            1 => self
                .imports
                .into_iter()
                .next()
                .map(|l| l.value)
                .ok_or(InputError::NoImport)?,
            n => {
                let names = self
                    .imports
                    .iter()
                    .map(|l| object_key(&l.value.metadata))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(InputError::ManyImports { count: n, names });
            }
        };
        let import_key = object_key(&import.metadata);
        let reference = &import.spec.source_cluster;
        let ref_kind = reference.kind.clone().unwrap_or_default();
        let source_kind =
            SourceKind::from_reference(&ref_kind).ok_or_else(|| InputError::BadSourceKind {
                import: import_key.clone(),
                kind: ref_kind.clone(),
            })?;
        let ref_name = reference
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| InputError::NoSourceName {
                import: import_key.clone(),
            })?;
        let ref_ns = reference
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| namespace_of(&import.metadata).to_owned());
        let matches = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
            meta.name.as_deref() == Some(ref_name.as_str()) && namespace_of(meta) == ref_ns
        };
        let source = match source_kind {
            SourceKind::Openstack => self
                .openstack_sources
                .into_iter()
                .find(|l| matches(&l.value.metadata))
                .map(|l| SourceDoc::Openstack(l.value)),
            SourceKind::Vmware => self
                .vmware_sources
                .into_iter()
                .find(|l| matches(&l.value.metadata))
                .map(|l| SourceDoc::Vmware(l.value)),
            SourceKind::Ova => self
                .ova_sources
                .into_iter()
                .find(|l| matches(&l.value.metadata))
                .map(|l| SourceDoc::Ova(l.value)),
        };
        if source.is_none() && !(allow_missing_source && source_kind == SourceKind::Openstack) {
            let hint = if source_kind == SourceKind::Openstack {
                ", or pass --os-cloud NAME / set OS_AUTH_URL to take the cloud from clouds.yaml or \
                 the environment"
                    .to_owned()
            } else {
                String::new()
            };
            return Err(InputError::MissingSource {
                import: import_key,
                kind: source_kind.kind(),
                reference: format!("{ref_ns}/{ref_name}"),
                hint,
            });
        }
        let secret_ref = match &source {
            Some(SourceDoc::Openstack(s)) => Some((&s.spec.credentials, &s.metadata)),
            Some(SourceDoc::Vmware(s)) => Some((&s.spec.credentials, &s.metadata)),
            Some(SourceDoc::Ova(s)) => s.spec.credentials.as_ref().map(|c| (c, &s.metadata)),
            None => None,
        };
        let secret = secret_ref.and_then(|(r, source_meta)| {
            let name = r.name.as_deref()?;
            let ns = r
                .namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| namespace_of(source_meta));
            self.secrets
                .iter()
                .find(|s| s.value.name == name && s.value.namespace == ns)
                .map(|s| s.value.clone())
        });
        Ok(ImportRequest {
            import,
            source_kind,
            source,
            secret,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
apiVersion: migration.harvesterhci.io/v1beta1
kind: OpenstackSource
metadata: {name: devstack, namespace: default}
spec:
  endpoint: "https://devstack/identity"
  region: "RegionOne"
  credentials: {name: devstack-credentials, namespace: default}
---
apiVersion: v1
kind: Secret
metadata: {name: devstack-credentials, namespace: default}
data:
  username: dXNlcg==
stringData:
  password: "s3cret-pass"
---
apiVersion: migration.harvesterhci.io/v1beta1
kind: VirtualMachineImport
metadata: {name: openstack-demo, namespace: default}
spec:
  virtualMachineName: "openstack-demo"
  networkMapping:
  - {sourceNetwork: shared, destinationNetwork: default/vlan1}
  sourceCluster: {name: devstack, namespace: default, kind: Openstack,
                  apiVersion: migration.harvesterhci.io/v1beta1}
"#;

    #[test]
    fn a_source_secret_and_import_resolve_together() {
        let req = parse_documents(GOOD).unwrap().into_request(false).unwrap();
        assert_eq!(req.import_key(), "default/openstack-demo");
        assert_eq!(req.source_kind, SourceKind::Openstack);
        assert!(matches!(req.source, Some(SourceDoc::Openstack(_))));
        let secret = req.secret.unwrap();
        assert_eq!(secret.get("username").unwrap().expose(), "user");
        assert_eq!(secret.get("password").unwrap().expose(), "s3cret-pass");
        assert!(
            !format!("{secret:?}").contains("s3cret"),
            "secret leaked in Debug"
        );
    }

    #[test]
    fn a_field_error_names_the_document_object_and_field() {
        let bad = GOOD.replace(
            "destinationNetwork: default/vlan1",
            "destination: default/vlan1",
        );
        let err = parse_documents(&bad).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("document 3 (VirtualMachineImport openstack-demo)"),
            "{text}"
        );
        assert!(text.contains("spec.networkMapping[0]"), "{text}");
        assert!(text.contains("destinationNetwork"), "{text}");
    }

    #[test]
    fn a_bad_enum_value_is_reported_with_its_field() {
        let bad = GOOD.replace(
            "virtualMachineName: \"openstack-demo\"",
            "virtualMachineName: x\n  defaultDiskBusType: ide",
        );
        let text = parse_documents(&bad).unwrap_err().to_string();
        assert!(text.contains("`spec.defaultDiskBusType`"), "{text}");
        assert!(text.contains("ide"), "{text}");
    }

    #[test]
    fn an_unknown_kind_is_an_error() {
        let err =
            parse_documents("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n").unwrap_err();
        assert!(matches!(err, InputError::UnknownKind { doc: 1, .. }));
    }

    #[test]
    fn broken_yaml_names_the_document() {
        let err = parse_documents(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n---\nkind: [unclosed\n",
        )
        .unwrap_err();
        assert!(matches!(err, InputError::Yaml { doc: 2, .. }), "{err}");
    }

    #[test]
    fn a_missing_source_is_an_error_unless_allowed() {
        let only_import = GOOD.split("---").nth(2).unwrap();
        let err = parse_documents(only_import)
            .unwrap()
            .into_request(false)
            .unwrap_err();
        assert!(err.to_string().contains("--os-cloud"), "{err}");
        let req = parse_documents(only_import)
            .unwrap()
            .into_request(true)
            .unwrap();
        assert!(req.source.is_none());
    }

    #[test]
    fn two_imports_are_refused() {
        let import = GOOD.split("---").nth(2).unwrap();
        let err = parse_documents(&format!("{import}\n---\n{import}"))
            .unwrap()
            .into_request(true)
            .unwrap_err();
        assert!(matches!(err, InputError::ManyImports { count: 2, .. }));
    }
}
