//! The OVA source: where the archive is (`file://`, `http://`, `https://` with optional basic
//! auth and CA from the Secret), read as one stream. Preflight reads only up to the descriptor;
//! the export streams the whole archive through the verified extraction of `vmi_ova::archive`.
//! An HTTP connection cut mid-way is reopened with a Range request at the byte where it
//! stopped, transparently to the tar reader; nothing is ever held in memory beyond a chunk.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use vmi_api::OvaSource;
use vmi_core::input::SecretData;
use vmi_core::preflight::{Check, CheckId};
use vmi_core::secret::Sensitive;
use vmi_openstack::config::TlsOptions;

use crate::progress::ProgressSink;

/// Where an OVA is.
#[derive(Clone)]
pub struct OvaLocation {
    target: Target,
    /// For messages: the URL without credentials.
    shown: String,
    auth: Option<(String, Sensitive)>,
    tls: TlsOptions,
    /// Longest silence of the server (`httpTimeoutSeconds`); `None`: no limit.
    timeout: Option<Duration>,
}

#[derive(Clone, Debug)]
enum Target {
    File(PathBuf),
    Http(String),
}

impl std::fmt::Debug for OvaLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OvaLocation")
            .field("url", &self.shown)
            .finish_non_exhaustive()
    }
}

impl OvaLocation {
    /// From an `OvaSource` and its Secret (`username`, `password`, `ca.crt`, as upstream).
    /// `base` resolves relative `file://` paths (the directory of the CLI's input file).
    pub fn from_source(
        src: &OvaSource,
        secret: Option<&SecretData>,
        base: Option<&Path>,
    ) -> Result<OvaLocation, String> {
        let url = src.spec.url.trim();
        let target = if let Some(path) = url.strip_prefix("file://") {
            let p = PathBuf::from(path);
            let p = match base {
                Some(b) if p.is_relative() => b.join(p),
                _ => p,
            };
            Target::File(p)
        } else if url.starts_with("http://") || url.starts_with("https://") {
            Target::Http(url.to_owned())
        } else {
            return Err(format!(
                "OvaSource spec.url '{url}': use http://, https:// or (for the CLI) file://"
            ));
        };
        let get = |k: &str| secret.and_then(|s| s.get(k)).map(Sensitive::expose);
        let auth = match (get("username"), get("password")) {
            (Some(u), Some(p)) => Some((u.to_owned(), Sensitive::new(p))),
            (Some(_), None) | (None, Some(_)) => {
                return Err(
                    "the Secret must hold both username and password for basic auth, or neither"
                        .into(),
                );
            }
            (None, None) => None,
        };
        let timeout = match src.spec.http_timeout_seconds {
            Some(0) => None,
            Some(s) if s > 0 => Some(Duration::from_secs(u64::try_from(s).unwrap_or(600))),
            Some(s) => return Err(format!("spec.httpTimeoutSeconds {s} is negative")),
            None => Some(Duration::from_mins(10)),
        };
        Ok(OvaLocation {
            shown: match &target {
                Target::File(p) => format!("file://{}", p.display()),
                Target::Http(u) => strip_userinfo(u),
            },
            target,
            auth,
            tls: TlsOptions {
                ca_pem: get("ca.crt").map(str::to_owned),
                insecure: src.spec.insecure_skip_tls_verify.unwrap_or(false),
            },
            timeout,
        })
    }

    /// The URL for messages (no credentials).
    pub fn describe(&self) -> &str {
        &self.shown
    }

    /// `source.tls`: verified HTTPS passes; plain HTTP and verification off warn; files skip.
    pub fn tls_check(&self) -> Check {
        match &self.target {
            Target::File(_) => Check::skip(CheckId::SourceTls, &self.shown, "a local file"),
            Target::Http(u) if u.starts_with("http://") => Check::warn(
                CheckId::SourceTls,
                &self.shown,
                "plain HTTP: the archive is not protected in transit (the manifest's digests are still verified); prefer https://",
            ),
            Target::Http(_) if self.tls.insecure => Check::warn(
                CheckId::SourceTls,
                &self.shown,
                "TLS certificate verification is OFF (insecureSkipTlsVerify): the server's identity is not checked",
            ),
            Target::Http(_) => Check::pass(
                CheckId::SourceTls,
                &self.shown,
                "certificate verified against the system roots and the Secret's ca.crt",
            ),
        }
    }

    /// A blocking reader of the archive. Call from a blocking thread (`spawn_blocking`).
    fn open(
        &self,
        rt: tokio::runtime::Handle,
        progress: Option<Arc<dyn ProgressSink>>,
    ) -> Result<Box<dyn Read + Send>, String> {
        match &self.target {
            Target::File(p) => {
                let f = std::fs::File::open(p)
                    .map_err(|e| format!("cannot open {}: {e}", p.display()))?;
                let total = f.metadata().ok().map(|m| m.len());
                Ok(Box::new(Counting {
                    inner: f,
                    done: 0,
                    total,
                    reported: 0,
                    progress,
                }))
            }
            Target::Http(url) => {
                let tls =
                    vmi_openstack::tls::client_config(&self.tls).map_err(|e| e.to_string())?;
                let mut b = reqwest::Client::builder()
                    .tls_backend_preconfigured(tls)
                    .connect_timeout(Duration::from_secs(30));
                if let Some(t) = self.timeout {
                    b = b.read_timeout(t);
                }
                let client = b.build().map_err(|e| format!("HTTP client: {e}"))?;
                let mut r = HttpReader {
                    rt,
                    client,
                    url: url.clone(),
                    shown: self.shown.clone(),
                    auth: self.auth.clone(),
                    offset: 0,
                    total: None,
                    body: None,
                    buf: Bytes::new(),
                    resumes: 0,
                    max_resumes: 10,
                };
                r.reopen()?;
                Ok(Box::new(Counting {
                    total: r.total,
                    inner: r,
                    done: 0,
                    reported: 0,
                    progress,
                }))
            }
        }
    }

    /// Reads the archive up to its descriptor (preflight): the rest is never downloaded.
    pub async fn read_descriptor(&self) -> Result<vmi_ova::archive::DescriptorOnly, String> {
        let loc = self.clone();
        let rt = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let reader = loc.open(rt, None)?;
            vmi_ova::archive::read_descriptor(reader)
                .map_err(|e| format!("{}: {e}", loc.describe()))
        })
        .await
        .map_err(|e| format!("the descriptor reader ended abnormally: {e}"))?
    }

    /// Streams the whole archive into `dir`, verifying the manifest's digests.
    pub async fn extract(
        &self,
        dir: &Path,
        progress: Arc<dyn ProgressSink>,
    ) -> Result<vmi_ova::archive::Ova, ExtractError> {
        let loc = self.clone();
        let dir = dir.to_owned();
        let rt = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let reader = loc.open(rt, Some(progress)).map_err(ExtractError::Open)?;
            vmi_ova::archive::extract(reader, &dir, &vmi_ova::archive::ExtractOptions::default())
                .map_err(ExtractError::Archive)
        })
        .await
        .map_err(|e| ExtractError::Open(format!("the extraction ended abnormally: {e}")))?
    }
}

/// Preflight of an OVA import: reads the archive up to its descriptor (nothing more) and
/// evaluates every check. Returns the report, the facts when the VM was found, and the
/// archive's warnings.
pub async fn preflight(
    loc: &OvaLocation,
    import: &vmi_api::VirtualMachineImport,
    cluster: Option<&crate::run::ClusterView>,
) -> (
    vmi_core::preflight::Report,
    Option<vmi_ova::preflight::OvaFacts>,
    Vec<String>,
) {
    let namespace = import
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| vmi_core::input::DEFAULT_NAMESPACE.to_owned());
    let exists = |d: &vmi_core::network::Destination| {
        cluster.is_some_and(|c| c.network_exists(d, &namespace))
    };
    let tls = loc.tls_check();
    let descriptor = loc.read_descriptor().await;
    let input = vmi_ova::preflight::OvaPreflightInput {
        import,
        url: loc.describe(),
        tls: &tls,
        destination_exists: cluster.map(|_| &exists as &(dyn Fn(&_) -> bool + Sync)),
    };
    let (mut report, facts) = vmi_ova::preflight::evaluate(
        &input,
        descriptor
            .as_ref()
            .map(|d| &d.descriptor.envelope)
            .map_err(Clone::clone),
    );
    if let Some(c) = cluster {
        report.checks.extend(c.checks.iter().cloned());
        report = report.sorted();
    }
    let warnings = descriptor
        .map(|d| d.warnings.iter().map(ToString::to_string).collect())
        .unwrap_or_default();
    (report, facts, warnings)
}

/// Why the extraction failed.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("{0}")]
    Open(String),
    #[error(transparent)]
    Archive(#[from] vmi_ova::archive::ArchiveError),
}

impl ExtractError {
    /// CamelCase kind, for conditions and Events.
    pub fn reason(&self) -> &'static str {
        match self {
            ExtractError::Open(_) => "SourceUnreachable",
            ExtractError::Archive(vmi_ova::archive::ArchiveError::DigestMismatch { .. }) => {
                "ChecksumMismatch"
            }
            ExtractError::Archive(vmi_ova::archive::ArchiveError::Read { .. }) => "DownloadFailed",
            ExtractError::Archive(_) => "BadArchive",
        }
    }
}

fn strip_userinfo(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            if path.is_empty() {
                format!("{scheme}://{host}")
            } else {
                format!("{scheme}://{host}/{path}")
            }
        }
        None => url.to_owned(),
    }
}

/// Counts bytes for the progress reports (every 4 MiB).
struct Counting<R> {
    inner: R,
    done: u64,
    total: Option<u64>,
    reported: u64,
    progress: Option<Arc<dyn ProgressSink>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        if let Some(p) = &self.progress
            && (self.done - self.reported >= 4 << 20 || n == 0)
        {
            p.disk_bytes(0, self.done, self.total);
            self.reported = self.done;
        }
        Ok(n)
    }
}

type Body = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// A blocking reader over an HTTP(S) body that resumes with Range after a cut.
struct HttpReader {
    rt: tokio::runtime::Handle,
    client: reqwest::Client,
    url: String,
    shown: String,
    auth: Option<(String, Sensitive)>,
    offset: u64,
    total: Option<u64>,
    body: Option<Body>,
    buf: Bytes,
    resumes: u32,
    max_resumes: u32,
}

fn io_error(msg: String) -> std::io::Error {
    std::io::Error::other(msg)
}

impl HttpReader {
    fn reopen(&mut self) -> Result<(), String> {
        let mut req = self.client.get(&self.url);
        if let Some((u, p)) = &self.auth {
            req = req.basic_auth(u, Some(p.expose()));
        }
        if self.offset > 0 {
            req = req.header(reqwest::header::RANGE, format!("bytes={}-", self.offset));
        }
        let shown = self.shown.clone();
        let offset = self.offset;
        let resp = self
            .rt
            .block_on(req.send())
            .map_err(|e| describe_send_error(&shown, &e))?;
        let status = resp.status().as_u16();
        match status {
            200 if offset == 0 => {
                self.total = resp.content_length();
            }
            206 => {
                let range = resp
                    .headers()
                    .get(reqwest::header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let start = range
                    .strip_prefix("bytes ")
                    .and_then(|r| r.split('-').next())
                    .and_then(|s| s.parse::<u64>().ok());
                if start != Some(offset) {
                    return Err(format!(
                        "{shown}: asked to resume at byte {offset}, the server answered Content-Range '{range}'"
                    ));
                }
                if let Some(total) = range.rsplit('/').next().and_then(|t| t.parse().ok()) {
                    self.total = Some(total);
                }
            }
            200 => {
                return Err(format!(
                    "{shown}: the connection was cut at byte {offset} and the server does not support Range requests, so the download cannot resume"
                ));
            }
            401 | 403 => {
                return Err(format!(
                    "{shown}: HTTP {status}: the server refused the credentials; check username and password in the OvaSource's Secret"
                ));
            }
            404 => {
                return Err(format!(
                    "{shown}: HTTP 404: no file at this URL; check spec.url"
                ));
            }
            _ => return Err(format!("{shown}: HTTP {status}")),
        }
        self.body = Some(Box::pin(resp.bytes_stream()));
        Ok(())
    }
}

fn describe_send_error(shown: &str, e: &reqwest::Error) -> String {
    let mut chain = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        src = s.source();
    }
    if chain.contains("certificate") || chain.contains("UnknownIssuer") {
        format!(
            "{shown}: TLS certificate not trusted ({chain}); put the CA in the Secret's ca.crt, or set insecureSkipTlsVerify (not recommended)"
        )
    } else if e.is_connect() {
        format!("{shown}: cannot connect ({chain}); check the host and port in spec.url")
    } else if e.is_timeout() {
        format!("{shown}: timed out ({chain}); raise spec.httpTimeoutSeconds")
    } else {
        format!("{shown}: {chain}")
    }
}

impl Read for HttpReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if !self.buf.is_empty() {
                let n = self.buf.len().min(out.len());
                out[..n].copy_from_slice(&self.buf[..n]);
                self.buf = self.buf.slice(n..);
                self.offset += n as u64;
                return Ok(n);
            }
            if self.body.is_none() {
                self.reopen().map_err(io_error)?;
            }
            let next = match self.body.as_mut() {
                Some(b) => self.rt.block_on(b.next()),
                None => None,
            };
            match next {
                Some(Ok(chunk)) => self.buf = chunk,
                end => {
                    let complete = self.total.is_none_or(|t| self.offset >= t);
                    if end.is_none() && complete {
                        return Ok(0);
                    }
                    // Cut mid-way: reopen at the current byte.
                    self.body = None;
                    self.resumes += 1;
                    if self.resumes > self.max_resumes {
                        let why = match end {
                            Some(Err(e)) => e.to_string(),
                            _ => "the body ended early".to_owned(),
                        };
                        return Err(io_error(format!(
                            "{}: cut {} times, last at byte {} ({why})",
                            self.shown, self.resumes, self.offset
                        )));
                    }
                    tracing::warn!(url = %self.shown, offset = self.offset, "download cut; resuming with a Range request");
                    std::thread::sleep(Duration::from_millis(500 << self.resumes.min(4)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn credentials_never_show_in_the_url() {
        assert_eq!(
            strip_userinfo("https://user:pw@files.example/x.ova"),
            "https://files.example/x.ova"
        );
        assert_eq!(strip_userinfo("http://h:8080"), "http://h:8080");
    }
}
