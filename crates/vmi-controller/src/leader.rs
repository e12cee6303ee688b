//! Leader election on a `coordination.k8s.io/v1` Lease, so that two replicas are safe: only the
//! holder reconciles. A standby takes the lease over when the holder has not renewed it for a
//! whole lease duration, measured on the standby's own clock from the last change it saw (so
//! clock skew between nodes does not matter). A holder that cannot renew within the lease
//! duration stops: the caller exits and Kubernetes restarts it as a standby.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;
use tracing::{info, warn};

/// Settings of the election.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    /// This replica (the pod name in the chart).
    pub identity: String,
    pub duration: Duration,
    /// How often the holder renews and a standby looks.
    pub retry: Duration,
}

/// A lease record as observed: (holder, renew time) and when it was first seen locally.
type Observed = ((Option<String>, Option<String>), Instant);

/// The election's view of the lease.
#[derive(Debug)]
pub struct Elector {
    api: Api<Lease>,
    settings: LeaseSettings,
    /// The last (holder, renew time) seen and when it was first seen locally.
    observed: Option<Observed>,
}

/// Why holding stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Lost {
    /// Another replica holds the lease now.
    TakenBy(String),
    /// Renewals failed for a whole lease duration.
    RenewFailed(String),
}

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lost::TakenBy(who) => write!(f, "the leader lease was taken over by {who}"),
            Lost::RenewFailed(e) => write!(f, "the leader lease could not be renewed: {e}"),
        }
    }
}

fn secs(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}

impl Elector {
    pub fn new(client: kube::Client, settings: LeaseSettings) -> Self {
        Elector {
            api: Api::namespaced(client, &settings.namespace),
            settings,
            observed: None,
        }
    }

    /// Waits until this replica holds the lease.
    pub async fn acquire(&mut self) {
        let mut told = false;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    info!(lease = %self.settings.name, identity = %self.settings.identity, "became the leader");
                    return;
                }
                Ok(false) => {
                    if !told {
                        info!(lease = %self.settings.name, "another replica leads; standing by");
                        told = true;
                    }
                }
                Err(e) => warn!(error = %e, "leader election: cannot read the lease; retrying"),
            }
            tokio::time::sleep(self.settings.retry).await;
        }
    }

    /// Renews the lease until it is lost; returns why.
    pub async fn hold(&mut self) -> Lost {
        let mut last_ok = Instant::now();
        loop {
            tokio::time::sleep(self.settings.retry).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_ok = Instant::now(),
                Ok(false) => {
                    let holder = self
                        .observed
                        .as_ref()
                        .and_then(|((h, _), _)| h.clone())
                        .unwrap_or_default();
                    return Lost::TakenBy(holder);
                }
                Err(e) => {
                    warn!(error = %e, "leader election: renewal failed");
                    // Stop before a standby may take over.
                    if last_ok.elapsed() + self.settings.retry >= self.settings.duration {
                        return Lost::RenewFailed(e.to_string());
                    }
                }
            }
        }
    }

    /// Gives the lease up (on shutdown) so that a standby takes over at once.
    pub async fn release(&mut self) {
        if let Ok(Some(mut lease)) = self.api.get_opt(&self.settings.name).await {
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            if spec.holder_identity.as_deref() == Some(self.settings.identity.as_str()) {
                spec.holder_identity = None;
                let _ = self
                    .api
                    .replace(&self.settings.name, &PostParams::default(), &lease)
                    .await;
            }
        }
    }

    async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let me = self.settings.identity.clone();
        let Some(mut lease) = self.api.get_opt(&self.settings.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.settings.name.clone()),
                    namespace: Some(self.settings.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me),
                    lease_duration_seconds: Some(secs(self.settings.duration)),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let record = (
            spec.holder_identity.clone(),
            spec.renew_time.as_ref().map(|t| t.0.to_string()),
        );
        let seen_at = match &self.observed {
            Some((r, at)) if *r == record => *at,
            _ => {
                let at = Instant::now();
                self.observed = Some((record.clone(), at));
                at
            }
        };
        let held_by_me = spec.holder_identity.as_deref() == Some(me.as_str());
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.settings.duration, Duration::from_secs);
        let free = spec.holder_identity.as_deref().is_none_or(str::is_empty);
        if !held_by_me && !free && seen_at.elapsed() < duration {
            return Ok(false);
        }
        if !held_by_me {
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            spec.holder_identity = Some(me);
        }
        spec.renew_time = Some(now);
        spec.lease_duration_seconds = Some(secs(self.settings.duration));
        // The resourceVersion in `lease` makes this a compare-and-swap: a concurrent taker
        // gets a Conflict.
        match self
            .api
            .replace(&self.settings.name, &PostParams::default(), &lease)
            .await
        {
            Ok(l) => {
                let spec = l.spec.unwrap_or_default();
                self.observed = Some((
                    (
                        spec.holder_identity,
                        spec.renew_time.map(|t| t.0.to_string()),
                    ),
                    Instant::now(),
                ));
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}
