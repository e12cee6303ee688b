//! [`OpenstackApi`] over the real REST APIs (Nova 2.1 with a negotiated microversion, Neutron
//! v2.0, Cinder v3, Glance v2).

use std::collections::BTreeMap;

use async_trait::async_trait;
use futures::StreamExt;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::api::{AuthInfo, Download, NetworkQuery, OpenstackApi, Result};
use crate::config::CloudConfig;
use crate::error::{OpenstackError, RequestLine};
use crate::session::{Call, Service, Session, SessionOptions};
use crate::wire::{
    Flavor, Image, Network, Port, QuotaUsage, Server, Snapshot, Volume, VolumeAttachment,
    VolumeQuota,
};

/// Pages followed at most when listing (a bound, not an expectation).
const MAX_PAGES: usize = 200;

/// The HTTP implementation of [`OpenstackApi`].
#[derive(Debug)]
pub struct HttpOpenstack {
    session: Session,
}

impl HttpOpenstack {
    pub fn new(
        config: CloudConfig,
        options: SessionOptions,
    ) -> std::result::Result<Self, OpenstackError> {
        Ok(Self {
            session: Session::new(config, options)?,
        })
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Lists a collection, following Nova/Cinder `*_links` and Glance `next` pagination.
    async fn list<T: DeserializeOwned>(&self, call: Call, key: &str) -> Result<Vec<T>> {
        let mut out = Vec::new();
        let mut call = call;
        for _ in 0..MAX_PAGES {
            let page: serde_json::Value = self.session.json(&call).await?;
            let items = page
                .get(key)
                .cloned()
                .unwrap_or(serde_json::Value::Array(Vec::new()));
            let items: Vec<T> =
                serde_json::from_value(items).map_err(|e| OpenstackError::Decode {
                    request: RequestLine {
                        method: call.method.to_string(),
                        url: call.path.clone(),
                    },
                    detail: format!("`{key}`: {e}"),
                })?;
            out.extend(items);
            let next = next_link(&page, key);
            let Some(next) = next else { break };
            let Some(marker) = query_param(&next, "marker") else {
                break;
            };
            call.query.retain(|(k, _)| k != "marker");
            call.query.push(("marker".into(), marker));
        }
        Ok(out)
    }

    async fn get_optional<T: DeserializeOwned>(&self, call: Call) -> Result<Option<T>> {
        match self.session.json::<T>(&call).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn delete_tolerating_absence(&self, call: Call) -> Result<()> {
        match self.session.send(&call).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn next_link(page: &serde_json::Value, key: &str) -> Option<String> {
    if let Some(links) = page.get(format!("{key}_links")).and_then(|l| l.as_array()) {
        return links
            .iter()
            .find(|l| l.get("rel").and_then(|r| r.as_str()) == Some("next"))
            .and_then(|l| l.get("href"))
            .and_then(|h| h.as_str())
            .map(str::to_owned);
    }
    page.get("next").and_then(|n| n.as_str()).map(str::to_owned)
}

fn query_param(link: &str, name: &str) -> Option<String> {
    let query = link.split_once('?')?.1;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Escapes `name` for Nova's `name` filter, which is a (case-insensitive) regular expression.
pub fn regex_escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len() * 2);
    for c in name.chars() {
        if "\\.^$|?*+()[]{}".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[derive(Deserialize)]
struct ServerEnvelope {
    server: Server,
}
#[derive(Deserialize)]
struct FlavorEnvelope {
    flavor: Flavor,
}
#[derive(Deserialize)]
struct VolumeEnvelope {
    volume: Volume,
}
#[derive(Deserialize)]
struct SnapshotEnvelope {
    snapshot: Snapshot,
}
#[derive(Deserialize)]
struct AttachmentsEnvelope {
    #[serde(rename = "volumeAttachments")]
    volume_attachments: Vec<VolumeAttachment>,
}

#[async_trait]
impl OpenstackApi for HttpOpenstack {
    async fn authenticate(&self) -> Result<AuthInfo> {
        let auth = self.session.auth().await?;
        let mut services = Vec::new();
        for s in [
            Service::Compute,
            Service::Network,
            Service::Image,
            Service::Volume,
        ] {
            if self.session.endpoint(&auth, s).is_ok() {
                services.push(s.name().to_owned());
            }
        }
        let compute_microversion = if services.iter().any(|s| s == "compute") {
            self.session
                .compute_microversion()
                .await?
                .map(|v| v.to_string())
        } else {
            None
        };
        Ok(AuthInfo {
            user_name: auth.user_name.clone(),
            project_id: auth.project_id.clone(),
            project_name: auth.project_name.clone(),
            services,
            region: self.session.config().region.clone(),
            compute_microversion,
        })
    }

    fn request_count(&self) -> u64 {
        self.session.request_count()
    }

    fn global_request_id(&self) -> Option<String> {
        Some(self.session.global_request_id().to_owned())
    }

    async fn get_server(&self, id: &str) -> Result<Option<Server>> {
        Ok(self
            .get_optional::<ServerEnvelope>(Call::get(Service::Compute, format!("/servers/{id}")))
            .await?
            .map(|e| e.server))
    }

    async fn find_servers_by_name(&self, name: &str) -> Result<Vec<Server>> {
        let call = Call::get(Service::Compute, "/servers/detail")
            .query("name", format!("^{}$", regex_escape(name)));
        let servers: Vec<Server> = self.list(call, "servers").await?;
        Ok(servers.into_iter().filter(|s| s.name == name).collect())
    }

    async fn find_servers_like(&self, name: &str) -> Result<Vec<Server>> {
        let call = Call::get(Service::Compute, "/servers/detail").query("name", regex_escape(name));
        self.list(call, "servers").await
    }

    async fn list_volume_attachments(&self, server_id: &str) -> Result<Vec<VolumeAttachment>> {
        let e: AttachmentsEnvelope = self
            .session
            .json(&Call::get(
                Service::Compute,
                format!("/servers/{server_id}/os-volume_attachments"),
            ))
            .await?;
        Ok(e.volume_attachments)
    }

    async fn get_flavor(&self, id: &str) -> Result<Flavor> {
        let e: FlavorEnvelope = self
            .session
            .json(&Call::get(Service::Compute, format!("/flavors/{id}")))
            .await?;
        Ok(e.flavor)
    }

    async fn stop_server(&self, id: &str) -> Result<()> {
        self.session
            .send(&Call::post(
                Service::Compute,
                format!("/servers/{id}/action"),
                json!({"os-stop": null}),
            ))
            .await?;
        Ok(())
    }

    async fn create_server_image(
        &self,
        server_id: &str,
        name: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<String> {
        let call = Call::post(
            Service::Compute,
            format!("/servers/{server_id}/action"),
            json!({"createImage": {"name": name, "metadata": metadata}}),
        );
        let response = self.session.send(&call).await?;
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .and_then(|l| l.rsplit('/').next())
            .map(str::to_owned);
        let request = RequestLine {
            method: "POST".into(),
            url: response.url().to_string(),
        };
        let bytes = response.bytes().await.unwrap_or_default();
        let from_body = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| {
                v.get("image_id")
                    .and_then(|i| i.as_str())
                    .map(str::to_owned)
            });
        from_body
            .or(location)
            .ok_or_else(|| OpenstackError::Decode {
                request,
                detail: "createImage answered without image_id or Location".into(),
            })
    }

    async fn list_server_ports(&self, server_id: &str) -> Result<Vec<Port>> {
        self.list(
            Call::get(Service::Network, "/ports").query("device_id", server_id),
            "ports",
        )
        .await
    }

    async fn list_networks(&self, query: &NetworkQuery) -> Result<Vec<Network>> {
        let mut out: Vec<Network> = Vec::new();
        for (key, values) in [("name", &query.names), ("id", &query.ids)] {
            if values.is_empty() {
                continue;
            }
            let mut call = Call::get(Service::Network, "/networks");
            for v in values {
                call = call.query(key, v.clone());
            }
            for n in self.list::<Network>(call, "networks").await? {
                if !out.iter().any(|o| o.id == n.id) {
                    out.push(n);
                }
            }
        }
        Ok(out)
    }

    async fn get_volume(&self, id: &str) -> Result<Option<Volume>> {
        Ok(self
            .get_optional::<VolumeEnvelope>(Call::get(Service::Volume, format!("/volumes/{id}")))
            .await?
            .map(|e| e.volume))
    }

    async fn list_volumes_by_name(&self, name: &str) -> Result<Vec<Volume>> {
        let volumes: Vec<Volume> = self
            .list(
                Call::get(Service::Volume, "/volumes/detail").query("name", name),
                "volumes",
            )
            .await?;
        Ok(volumes
            .into_iter()
            .filter(|v| v.name.as_deref() == Some(name))
            .collect())
    }

    async fn create_volume_from_snapshot(
        &self,
        snapshot_id: &str,
        name: &str,
        size_gib: u64,
        metadata: &BTreeMap<String, String>,
    ) -> Result<Volume> {
        let e: VolumeEnvelope = self
            .session
            .json(&Call::post(
                Service::Volume,
                "/volumes",
                json!({"volume": {"snapshot_id": snapshot_id, "name": name, "size": size_gib, "metadata": metadata}}),
            ))
            .await?;
        Ok(e.volume)
    }

    async fn delete_volume(&self, id: &str) -> Result<()> {
        self.delete_tolerating_absence(Call::delete(Service::Volume, format!("/volumes/{id}")))
            .await
    }

    async fn upload_volume_to_image(
        &self,
        volume_id: &str,
        image_name: &str,
        disk_format: &str,
    ) -> Result<String> {
        let v: serde_json::Value = self
            .session
            .json(&Call::post(
                Service::Volume,
                format!("/volumes/{volume_id}/action"),
                json!({"os-volume_upload_image": {"image_name": image_name, "disk_format": disk_format,
                        "container_format": "bare", "force": false}}),
            ))
            .await?;
        v.get("os-volume_upload_image")
            .and_then(|u| u.get("image_id"))
            .and_then(|i| i.as_str())
            .map(str::to_owned)
            .ok_or_else(|| OpenstackError::Decode {
                request: RequestLine {
                    method: "POST".into(),
                    url: format!("/volumes/{volume_id}/action"),
                },
                detail: "os-volume_upload_image answered without image_id".into(),
            })
    }

    async fn get_snapshot(&self, id: &str) -> Result<Option<Snapshot>> {
        Ok(self
            .get_optional::<SnapshotEnvelope>(Call::get(
                Service::Volume,
                format!("/snapshots/{id}"),
            ))
            .await?
            .map(|e| e.snapshot))
    }

    async fn list_snapshots_by_name(&self, name: &str) -> Result<Vec<Snapshot>> {
        let snapshots: Vec<Snapshot> = self
            .list(
                Call::get(Service::Volume, "/snapshots/detail").query("name", name),
                "snapshots",
            )
            .await?;
        Ok(snapshots
            .into_iter()
            .filter(|s| s.name.as_deref() == Some(name))
            .collect())
    }

    async fn create_snapshot(
        &self,
        volume_id: &str,
        name: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<Snapshot> {
        let e: SnapshotEnvelope = self
            .session
            .json(&Call::post(
                Service::Volume,
                "/snapshots",
                json!({"snapshot": {"volume_id": volume_id, "name": name, "force": true, "metadata": metadata}}),
            ))
            .await?;
        Ok(e.snapshot)
    }

    async fn delete_snapshot(&self, id: &str) -> Result<()> {
        self.delete_tolerating_absence(Call::delete(Service::Volume, format!("/snapshots/{id}")))
            .await
    }

    async fn get_volume_quota(&self, project_id: &str) -> Result<VolumeQuota> {
        let v: serde_json::Value = self
            .session
            .json(
                &Call::get(Service::Volume, format!("/os-quota-sets/{project_id}"))
                    .query("usage", "True"),
            )
            .await?;
        let mut quota = VolumeQuota::default();
        if let Some(set) = v.get("quota_set").and_then(|s| s.as_object()) {
            for (k, val) in set {
                if let Ok(u) = serde_json::from_value::<QuotaUsage>(val.clone()) {
                    quota.entries.insert(k.clone(), u);
                }
            }
        }
        Ok(quota)
    }

    async fn get_image(&self, id: &str) -> Result<Option<Image>> {
        self.get_optional::<Image>(Call::get(Service::Image, format!("/images/{id}")))
            .await
    }

    async fn list_images_by_name(&self, name: &str) -> Result<Vec<Image>> {
        let images: Vec<Image> = self
            .list(
                Call::get(Service::Image, "/images").query("name", name),
                "images",
            )
            .await?;
        Ok(images
            .into_iter()
            .filter(|i| i.name.as_deref() == Some(name))
            .collect())
    }

    async fn delete_image(&self, id: &str) -> Result<()> {
        self.delete_tolerating_absence(Call::delete(Service::Image, format!("/images/{id}")))
            .await
    }

    async fn download_image(&self, id: &str, offset: u64) -> Result<Download> {
        let mut call = Call::get(Service::Image, format!("/images/{id}/file"));
        call.download = true;
        if offset > 0 {
            call = call.header("Range", format!("bytes={offset}-"));
        }
        let response = self.session.send(&call).await?;
        let request = RequestLine {
            method: "GET".into(),
            url: response.url().to_string(),
        };
        let status = response.status().as_u16();
        if status == 204 {
            return Err(OpenstackError::State {
                what: format!("image {id}"),
                detail: "has no data yet (HTTP 204): it is not active".into(),
            });
        }
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        if content_type.contains("json") || content_type.contains("html") {
            return Err(OpenstackError::Decode {
                request,
                detail: format!("expected image data, got `{content_type}` (an error page?)"),
            });
        }
        let (start, total) = if status == 206 {
            let range = response
                .headers()
                .get("content-range")
                .and_then(|v| v.to_str().ok())
                .and_then(parse_content_range)
                .ok_or_else(|| OpenstackError::Decode {
                    request: request.clone(),
                    detail: "206 without a valid Content-Range".into(),
                })?;
            if range.0 != offset {
                return Err(OpenstackError::Decode {
                    request,
                    detail: format!(
                        "asked for bytes from {offset}, got a range starting at {}",
                        range.0
                    ),
                });
            }
            range
        } else {
            (0, response.content_length())
        };
        let body = response
            .bytes_stream()
            .map(move |r| {
                r.map_err(|e| OpenstackError::Transport {
                    request: request.clone(),
                    detail: format!("download interrupted: {e}"),
                })
            })
            .boxed();
        Ok(Download { start, total, body })
    }
}

/// `bytes 100-199/1000` → (100, Some(1000)).
fn parse_content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    Some((start.parse().ok()?, total.parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nova_name_filters_are_escaped_regexes() {
        assert_eq!(
            regex_escape("vmi-Mixed_Case.Name 01"),
            "vmi-Mixed_Case\\.Name 01"
        );
        assert_eq!(regex_escape("a(b)*"), "a\\(b\\)\\*");
    }

    #[test]
    fn content_ranges_parse() {
        assert_eq!(
            parse_content_range("bytes 100-199/1000"),
            Some((100, Some(1000)))
        );
        assert_eq!(parse_content_range("bytes 0-9/*"), Some((0, None)));
        assert_eq!(parse_content_range("items 0-9/10"), None);
    }

    #[test]
    fn next_links_of_each_service() {
        let nova = json!({"servers": [], "servers_links": [{"rel": "next", "href": "http://n/v2.1/servers/detail?limit=1&marker=abc"}]});
        assert_eq!(
            query_param(&next_link(&nova, "servers").unwrap(), "marker").as_deref(),
            Some("abc")
        );
        let glance = json!({"images": [], "next": "/v2/images?marker=m2&name=x"});
        assert_eq!(
            query_param(&next_link(&glance, "images").unwrap(), "marker").as_deref(),
            Some("m2")
        );
        assert_eq!(next_link(&json!({"networks": []}), "networks"), None);
    }
}
