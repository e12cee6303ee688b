//! How to reach and log into a cloud: from a Kubernetes Secret (upstream keys plus ours), from
//! `clouds.yaml`, or from the `OS_*` environment variables. Pure: callers read files and the
//! environment and pass their contents in.

use std::collections::BTreeMap;

use vmi_api::EndpointInterface;
use vmi_core::Sensitive;
use vmi_core::input::SecretData;

/// Everything needed to open a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloudConfig {
    /// Keystone URL as given (with or without `/v3`).
    pub auth_url: String,
    /// Region of the catalog endpoints; `None` accepts any region (a single-region cloud).
    pub region: Option<String>,
    pub interface: EndpointInterface,
    pub credentials: Credentials,
    pub tls: TlsOptions,
    /// Where the configuration came from, for messages ("Secret default/creds", "clouds.yaml
    /// cloud vmi-demo", "OS_* environment").
    pub origin: String,
}

/// TLS settings: verification against the system roots plus `ca_pem`, unless `insecure`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// Extra trusted CA certificates, PEM.
    pub ca_pem: Option<String>,
    /// Certificate verification off. Never the default; preflight warns about it.
    pub insecure: bool,
}

/// Keystone v3 credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credentials {
    Password {
        user: UserRef,
        password: Sensitive,
        project: ProjectScope,
    },
    ApplicationCredential(ApplicationCredential),
}

/// An application credential, by id or by name (a name needs the user).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplicationCredential {
    pub id: Option<String>,
    pub name: Option<String>,
    pub user: Option<UserRef>,
    pub secret: Sensitive,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserRef {
    Name { name: String, domain: DomainRef },
    Id(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DomainRef {
    Name(String),
    Id(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProjectScope {
    Name { name: String, domain: DomainRef },
    Id(String),
}

impl Credentials {
    /// Who logs in, for messages (never the secret).
    pub fn describe(&self) -> String {
        match self {
            Credentials::Password { user, project, .. } => {
                format!("user {} in project {}", user.describe(), project.describe())
            }
            Credentials::ApplicationCredential(ac) => match (&ac.id, &ac.name) {
                (Some(id), _) => format!("application credential {id}"),
                (None, Some(name)) => format!("application credential '{name}'"),
                (None, None) => "application credential".to_owned(),
            },
        }
    }
}

impl UserRef {
    pub fn describe(&self) -> String {
        match self {
            UserRef::Name { name, domain } => format!("'{name}' (domain {})", domain.describe()),
            UserRef::Id(id) => format!("id {id}"),
        }
    }
}

impl DomainRef {
    pub fn describe(&self) -> String {
        match self {
            DomainRef::Name(n) => format!("'{n}'"),
            DomainRef::Id(id) => format!("id {id}"),
        }
    }
}

impl ProjectScope {
    pub fn describe(&self) -> String {
        match self {
            ProjectScope::Name { name, domain } => {
                format!("'{name}' (domain {})", domain.describe())
            }
            ProjectScope::Id(id) => format!("id {id}"),
        }
    }
}

/// Why credentials or settings cannot be assembled. Messages name the origin and the key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{origin}: `{key}` is missing or empty; {hint}")]
    Missing {
        origin: String,
        key: String,
        hint: String,
    },
    #[error("{origin}: `{key}` = '{value}' is not valid: {hint}")]
    Invalid {
        origin: String,
        key: String,
        value: String,
        hint: String,
    },
    #[error("{origin}: no cloud named '{cloud}' (clouds present: {available})")]
    NoSuchCloud {
        origin: String,
        cloud: String,
        available: String,
    },
    #[error("{origin}: not valid YAML: {message}")]
    Yaml { origin: String, message: String },
}

/// Reads a key/value source (Secret data, clouds.yaml `auth` section, environment): the
/// lookups and their aliases are the only difference between the three.
struct Keys<'a> {
    origin: &'a str,
    get: &'a dyn Fn(&str) -> Option<String>,
}

impl Keys<'_> {
    fn first(&self, keys: &[&str]) -> Option<String> {
        keys.iter()
            .find_map(|k| (self.get)(k).filter(|v| !v.trim().is_empty()))
    }
    fn require(&self, keys: &[&str], hint: &str) -> Result<String, ConfigError> {
        self.first(keys).ok_or_else(|| ConfigError::Missing {
            origin: self.origin.to_owned(),
            key: keys[0].to_owned(),
            hint: hint.to_owned(),
        })
    }
}

/// Names of the keys of one credential source.
struct KeyNames {
    username: &'static [&'static str],
    user_id: &'static [&'static str],
    password: &'static [&'static str],
    project_name: &'static [&'static str],
    project_id: &'static [&'static str],
    domain_name: &'static [&'static str],
    domain_id: &'static [&'static str],
    user_domain_name: &'static [&'static str],
    user_domain_id: &'static [&'static str],
    project_domain_name: &'static [&'static str],
    project_domain_id: &'static [&'static str],
    app_cred_id: &'static [&'static str],
    app_cred_name: &'static [&'static str],
    app_cred_secret: &'static [&'static str],
}

const SNAKE_KEYS: KeyNames = KeyNames {
    username: &["username"],
    user_id: &["user_id"],
    password: &["password"],
    project_name: &["project_name", "tenant_name"],
    project_id: &["project_id", "tenant_id"],
    domain_name: &["domain_name"],
    domain_id: &["domain_id"],
    user_domain_name: &["user_domain_name"],
    user_domain_id: &["user_domain_id"],
    project_domain_name: &["project_domain_name"],
    project_domain_id: &["project_domain_id"],
    app_cred_id: &["application_credential_id"],
    app_cred_name: &["application_credential_name"],
    app_cred_secret: &["application_credential_secret"],
};

const ENV_KEYS: KeyNames = KeyNames {
    username: &["OS_USERNAME"],
    user_id: &["OS_USER_ID"],
    password: &["OS_PASSWORD"],
    project_name: &["OS_PROJECT_NAME", "OS_TENANT_NAME"],
    project_id: &["OS_PROJECT_ID", "OS_TENANT_ID"],
    domain_name: &["OS_DOMAIN_NAME"],
    domain_id: &["OS_DOMAIN_ID"],
    user_domain_name: &["OS_USER_DOMAIN_NAME"],
    user_domain_id: &["OS_USER_DOMAIN_ID"],
    project_domain_name: &["OS_PROJECT_DOMAIN_NAME"],
    project_domain_id: &["OS_PROJECT_DOMAIN_ID"],
    app_cred_id: &["OS_APPLICATION_CREDENTIAL_ID"],
    app_cred_name: &["OS_APPLICATION_CREDENTIAL_NAME"],
    app_cred_secret: &["OS_APPLICATION_CREDENTIAL_SECRET"],
};

fn domain(
    keys: &Keys<'_>,
    names: &[&str],
    ids: &[&str],
    fallback: Option<&DomainRef>,
) -> DomainRef {
    if let Some(id) = keys.first(ids) {
        DomainRef::Id(id)
    } else if let Some(n) = keys.first(names) {
        DomainRef::Name(n)
    } else {
        fallback
            .cloned()
            .unwrap_or_else(|| DomainRef::Name("Default".to_owned()))
    }
}

/// Builds credentials from any key source. Upstream semantics are kept: `domain_name` is the
/// domain of both the user and the project unless `user_domain_name` / `project_domain_name`
/// say otherwise; `project_id` wins over `project_name`. An application credential is used when
/// its secret is present.
fn credentials(
    keys: &Keys<'_>,
    n: &KeyNames,
    auth_type: Option<&str>,
) -> Result<Credentials, ConfigError> {
    let wants_app_cred = auth_type.is_some_and(|t| t.contains("application"))
        || keys.first(n.app_cred_secret).is_some();
    let shared_domain = keys
        .first(n.domain_id)
        .map(DomainRef::Id)
        .or_else(|| keys.first(n.domain_name).map(DomainRef::Name));
    let user_domain = domain(
        keys,
        n.user_domain_name,
        n.user_domain_id,
        shared_domain.as_ref(),
    );
    let user = if let Some(id) = keys.first(n.user_id) {
        Some(UserRef::Id(id))
    } else {
        keys.first(n.username).map(|name| UserRef::Name {
            name,
            domain: user_domain.clone(),
        })
    };
    if wants_app_cred {
        let secret = keys.require(
            n.app_cred_secret,
            "an application credential needs its secret",
        )?;
        let id = keys.first(n.app_cred_id);
        let name = keys.first(n.app_cred_name);
        if id.is_none() && (name.is_none() || user.is_none()) {
            return Err(ConfigError::Missing {
                origin: keys.origin.to_owned(),
                key: n.app_cred_id[0].to_owned(),
                hint: "give the application credential's id (or its name and the user)".to_owned(),
            });
        }
        return Ok(Credentials::ApplicationCredential(ApplicationCredential {
            id,
            name,
            user,
            secret: Sensitive::new(secret),
        }));
    }
    let user = user.ok_or_else(|| ConfigError::Missing {
        origin: keys.origin.to_owned(),
        key: n.username[0].to_owned(),
        hint: "password authentication needs a user name (or id), or give an application \
               credential instead"
            .to_owned(),
    })?;
    let password = keys.require(n.password, "password authentication needs the password")?;
    let project = if let Some(id) = keys.first(n.project_id) {
        ProjectScope::Id(id)
    } else {
        let name = keys.require(
            n.project_name,
            "give the project to work in, by name or by id (project_id)",
        )?;
        let project_domain = domain(
            keys,
            n.project_domain_name,
            n.project_domain_id,
            shared_domain.as_ref().or(Some(&user_domain)),
        );
        ProjectScope::Name {
            name,
            domain: project_domain,
        }
    };
    Ok(Credentials::Password {
        user,
        password: Sensitive::new(password),
        project,
    })
}

/// Settings that come from the OpenstackSource object rather than from the credentials.
#[derive(Clone, Debug, Default)]
pub struct SourceSettings {
    pub endpoint: String,
    pub region: Option<String>,
    pub interface: Option<EndpointInterface>,
    pub insecure: bool,
}

/// From a Kubernetes Secret as referenced by an `OpenstackSource`.
///
/// Keys: upstream `username`, `password`, `project_name`, `domain_name`, `ca_cert`; added
/// `user_domain_name`, `project_domain_name`, `user_domain_id`, `project_domain_id`,
/// `project_id`, `user_id`, `application_credential_id`, `application_credential_name`,
/// `application_credential_secret`.
pub fn from_secret(
    secret: &SecretData,
    source: &SourceSettings,
) -> Result<CloudConfig, ConfigError> {
    let origin = format!("Secret {}/{}", secret.namespace, secret.name);
    let get = |k: &str| secret.get(k).map(|v| v.expose().to_owned());
    let keys = Keys {
        origin: &origin,
        get: &get,
    };
    let credentials = credentials(&keys, &SNAKE_KEYS, None)?;
    Ok(CloudConfig {
        auth_url: source.endpoint.clone(),
        region: source.region.clone().filter(|r| !r.is_empty()),
        interface: source.interface.unwrap_or_default(),
        credentials,
        tls: TlsOptions {
            ca_pem: keys.first(&["ca_cert"]),
            insecure: source.insecure,
        },
        origin,
    })
}

fn parse_bool(origin: &str, key: &str, v: &str) -> Result<bool, ConfigError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(ConfigError::Invalid {
            origin: origin.to_owned(),
            key: key.to_owned(),
            value: v.to_owned(),
            hint: "use true or false".to_owned(),
        }),
    }
}

fn parse_interface(origin: &str, key: &str, v: &str) -> Result<EndpointInterface, ConfigError> {
    match v
        .trim()
        .trim_end_matches("URL")
        .to_ascii_lowercase()
        .as_str()
    {
        "public" | "" => Ok(EndpointInterface::Public),
        "internal" => Ok(EndpointInterface::Internal),
        "admin" => Ok(EndpointInterface::Admin),
        _ => Err(ConfigError::Invalid {
            origin: origin.to_owned(),
            key: key.to_owned(),
            value: v.to_owned(),
            hint: "use public, internal or admin".to_owned(),
        }),
    }
}

/// File contents the caller read for a configuration that names a file (`cacert`,
/// `OS_CACERT`): path → PEM text.
pub type FileReader<'a> = &'a dyn Fn(&str) -> Result<String, String>;

/// From the `OS_*` environment variables (as `openstack` CLI users set them by sourcing an
/// openrc file). `env` is the process environment, passed in by the caller.
pub fn from_env(
    env: &BTreeMap<String, String>,
    read_file: FileReader<'_>,
) -> Result<CloudConfig, ConfigError> {
    let origin = "OS_* environment variables".to_owned();
    let get = |k: &str| env.get(k).cloned();
    let keys = Keys {
        origin: &origin,
        get: &get,
    };
    let auth_url = keys.require(&["OS_AUTH_URL"], "set OS_AUTH_URL to the Keystone URL")?;
    let credentials = credentials(&keys, &ENV_KEYS, keys.first(&["OS_AUTH_TYPE"]).as_deref())?;
    let ca_pem = match keys.first(&["OS_CACERT"]) {
        Some(path) => Some(read_file(&path).map_err(|e| ConfigError::Invalid {
            origin: origin.clone(),
            key: "OS_CACERT".into(),
            value: path.clone(),
            hint: e,
        })?),
        None => None,
    };
    let insecure = match keys.first(&["OS_INSECURE"]) {
        Some(v) => parse_bool(&origin, "OS_INSECURE", &v)?,
        None => false,
    };
    let interface = match keys.first(&["OS_INTERFACE", "OS_ENDPOINT_TYPE"]) {
        Some(v) => parse_interface(&origin, "OS_INTERFACE", &v)?,
        None => EndpointInterface::Public,
    };
    Ok(CloudConfig {
        auth_url,
        region: keys.first(&["OS_REGION_NAME"]),
        interface,
        credentials,
        tls: TlsOptions { ca_pem, insecure },
        origin,
    })
}

/// From the text of a `clouds.yaml` (and optionally `secure.yaml`, merged over it as
/// openstacksdk does), for the cloud called `cloud`.
pub fn from_clouds_yaml(
    origin_path: &str,
    clouds_yaml: &str,
    secure_yaml: Option<&str>,
    cloud: &str,
    read_file: FileReader<'_>,
) -> Result<CloudConfig, ConfigError> {
    let origin = format!("{origin_path} (cloud '{cloud}')");
    let parse = |text: &str| -> Result<serde_yaml::Value, ConfigError> {
        serde_yaml::from_str(text).map_err(|e| ConfigError::Yaml {
            origin: origin_path.to_owned(),
            message: e.to_string(),
        })
    };
    let doc = parse(clouds_yaml)?;
    let clouds = doc
        .get("clouds")
        .cloned()
        .unwrap_or(serde_yaml::Value::Null);
    let Some(mut entry) = clouds.get(cloud).cloned() else {
        let available = clouds
            .as_mapping()
            .map(|m| {
                m.keys()
                    .filter_map(serde_yaml::Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        return Err(ConfigError::NoSuchCloud {
            origin: origin_path.to_owned(),
            cloud: cloud.to_owned(),
            available: if available.is_empty() {
                "none".into()
            } else {
                available
            },
        });
    };
    if let Some(secure) = secure_yaml
        && let Some(over) = parse(secure)?.get("clouds").and_then(|c| c.get(cloud))
    {
        merge(&mut entry, over);
    }
    let scalar = |v: Option<&serde_yaml::Value>| -> Option<String> {
        match v? {
            serde_yaml::Value::String(s) => Some(s.clone()),
            serde_yaml::Value::Bool(b) => Some(b.to_string()),
            serde_yaml::Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    };
    let auth = entry
        .get("auth")
        .cloned()
        .unwrap_or(serde_yaml::Value::Null);
    let get = |k: &str| scalar(auth.get(k));
    let keys = Keys {
        origin: &origin,
        get: &get,
    };
    let auth_url = keys.require(&["auth_url"], "the cloud needs auth.auth_url")?;
    let auth_type = scalar(entry.get("auth_type"));
    let credentials = credentials(&keys, &SNAKE_KEYS, auth_type.as_deref())?;
    let ca_pem = match scalar(entry.get("cacert")) {
        Some(path) => Some(read_file(&path).map_err(|e| ConfigError::Invalid {
            origin: origin.clone(),
            key: "cacert".into(),
            value: path.clone(),
            hint: e,
        })?),
        None => None,
    };
    let insecure = match scalar(entry.get("verify")) {
        Some(v) => !parse_bool(&origin, "verify", &v)?,
        None => false,
    };
    let interface = match scalar(entry.get("interface")) {
        Some(v) => parse_interface(&origin, "interface", &v)?,
        None => EndpointInterface::Public,
    };
    Ok(CloudConfig {
        auth_url,
        region: scalar(entry.get("region_name")),
        interface,
        credentials,
        tls: TlsOptions { ca_pem, insecure },
        origin,
    })
}

fn merge(base: &mut serde_yaml::Value, over: &serde_yaml::Value) {
    match (base, over) {
        (serde_yaml::Value::Mapping(b), serde_yaml::Value::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// The places `clouds.yaml` is looked for, in order, as openstacksdk does: `$OS_CLIENT_CONFIG_FILE`,
/// the current directory, `~/.config/openstack`, `/etc/openstack`.
pub fn clouds_yaml_candidates(env: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(f) = env.get("OS_CLIENT_CONFIG_FILE").filter(|f| !f.is_empty()) {
        out.push(f.clone());
    }
    out.push("clouds.yaml".to_owned());
    if let Some(home) = env.get("HOME").filter(|h| !h.is_empty()) {
        out.push(format!("{home}/.config/openstack/clouds.yaml"));
    }
    out.push("/etc/openstack/clouds.yaml".to_owned());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(pairs: &[(&str, &str)]) -> SecretData {
        SecretData {
            namespace: "default".into(),
            name: "creds".into(),
            data: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Sensitive::new(*v)))
                .collect(),
        }
    }
    fn settings() -> SourceSettings {
        SourceSettings {
            endpoint: "https://keystone/v3".into(),
            region: Some("RegionOne".into()),
            ..Default::default()
        }
    }
    fn no_files(p: &str) -> Result<String, String> {
        Err(format!("no file {p}"))
    }

    #[test]
    fn upstream_keys_use_domain_name_for_user_and_project() {
        let s = secret(&[
            ("username", "u"),
            ("password", "p"),
            ("project_name", "pr"),
            ("domain_name", "d"),
        ]);
        let c = from_secret(&s, &settings()).unwrap();
        assert_eq!(
            c.credentials,
            Credentials::Password {
                user: UserRef::Name {
                    name: "u".into(),
                    domain: DomainRef::Name("d".into())
                },
                password: Sensitive::new("p"),
                project: ProjectScope::Name {
                    name: "pr".into(),
                    domain: DomainRef::Name("d".into())
                },
            }
        );
        assert!(!c.tls.insecure);
    }

    #[test]
    fn separate_user_and_project_domains_and_project_id() {
        let s = secret(&[
            ("username", "u"),
            ("password", "p"),
            ("project_name", "ignored"),
            ("project_id", "pid"),
            ("user_domain_name", "users"),
            ("project_domain_name", "projects"),
            ("ca_cert", "PEM"),
        ]);
        let c = from_secret(&s, &settings()).unwrap();
        let Credentials::Password { user, project, .. } = c.credentials else {
            panic!()
        };
        assert_eq!(
            user,
            UserRef::Name {
                name: "u".into(),
                domain: DomainRef::Name("users".into())
            }
        );
        assert_eq!(project, ProjectScope::Id("pid".into()));
        assert_eq!(c.tls.ca_pem.as_deref(), Some("PEM"));

        let s = secret(&[
            ("username", "u"),
            ("password", "p"),
            ("project_name", "pr"),
            ("user_domain_name", "users"),
            ("project_domain_name", "projects"),
        ]);
        let Credentials::Password { project, .. } =
            from_secret(&s, &settings()).unwrap().credentials
        else {
            panic!()
        };
        assert_eq!(
            project,
            ProjectScope::Name {
                name: "pr".into(),
                domain: DomainRef::Name("projects".into())
            }
        );
    }

    #[test]
    fn application_credentials_by_id() {
        let s = secret(&[
            ("application_credential_id", "ac"),
            ("application_credential_secret", "s"),
        ]);
        let c = from_secret(&s, &settings()).unwrap();
        assert!(
            matches!(c.credentials, Credentials::ApplicationCredential(ApplicationCredential { id: Some(ref id), .. }) if id == "ac")
        );
    }

    #[test]
    fn a_missing_key_names_the_secret_and_the_key() {
        let s = secret(&[("username", "u"), ("project_name", "pr")]);
        let err = from_secret(&s, &settings()).unwrap_err().to_string();
        assert!(err.contains("Secret default/creds"), "{err}");
        assert!(err.contains("`password`"), "{err}");
    }

    #[test]
    fn debug_of_a_config_never_shows_the_password() {
        let s = secret(&[
            ("username", "u"),
            ("password", "hunter2"),
            ("project_name", "pr"),
        ]);
        let c = from_secret(&s, &settings()).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn environment_like_an_openrc() {
        let env: BTreeMap<String, String> = [
            ("OS_AUTH_URL", "http://127.0.0.1:5000/v3"),
            ("OS_USERNAME", "demo"),
            ("OS_PASSWORD", "pw"),
            ("OS_PROJECT_NAME", "demo"),
            ("OS_USER_DOMAIN_NAME", "Default"),
            ("OS_PROJECT_DOMAIN_NAME", "Default"),
            ("OS_REGION_NAME", "RegionOne"),
            ("OS_INTERFACE", "internal"),
            ("OS_CACERT", "/ca.pem"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let read = |p: &str| {
            if p == "/ca.pem" {
                Ok("PEM".to_owned())
            } else {
                Err("no".to_owned())
            }
        };
        let c = from_env(&env, &read).unwrap();
        assert_eq!(c.region.as_deref(), Some("RegionOne"));
        assert_eq!(c.interface, EndpointInterface::Internal);
        assert_eq!(c.tls.ca_pem.as_deref(), Some("PEM"));
        assert!(
            from_env(&BTreeMap::new(), &no_files)
                .unwrap_err()
                .to_string()
                .contains("OS_AUTH_URL")
        );
    }

    const CLOUDS: &str = r"
clouds:
  vmi-demo:
    auth:
      auth_url: http://127.0.0.1:5000/v3
      username: demo
      project_name: demo
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
    interface: public
    identity_api_version: 3
  appcred:
    auth_type: v3applicationcredential
    auth:
      auth_url: https://k/v3
      application_credential_id: abc
      application_credential_secret: xyz
    verify: false
";

    #[test]
    fn clouds_yaml_with_secure_yaml_password() {
        let secure = "clouds:\n  vmi-demo:\n    auth:\n      password: pw\n";
        let c =
            from_clouds_yaml("clouds.yaml", CLOUDS, Some(secure), "vmi-demo", &no_files).unwrap();
        assert_eq!(c.auth_url, "http://127.0.0.1:5000/v3");
        let Credentials::Password { password, .. } = c.credentials else {
            panic!()
        };
        assert_eq!(password.expose(), "pw");
    }

    #[test]
    fn clouds_yaml_application_credential_and_verify_false() {
        let c = from_clouds_yaml("clouds.yaml", CLOUDS, None, "appcred", &no_files).unwrap();
        assert!(c.tls.insecure);
        assert!(matches!(
            c.credentials,
            Credentials::ApplicationCredential(_)
        ));
    }

    #[test]
    fn an_unknown_cloud_lists_the_known_ones() {
        let err = from_clouds_yaml("clouds.yaml", CLOUDS, None, "nope", &no_files)
            .unwrap_err()
            .to_string();
        assert!(err.contains("vmi-demo, appcred"), "{err}");
    }
}
