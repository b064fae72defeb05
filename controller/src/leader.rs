//! Leader election on a `coordination.k8s.io/v1` Lease, so that two replicas never write the same
//! policies. kube-runtime 5 has no elector, so this is a small one in client-go's manner:
//!
//! - the holder renews `spec.renewTime` every `renew_every`;
//! - a candidate takes the lease over only when the record has not changed for `lease_duration`
//!   **by its own clock** (it remembers when it last saw the record change), so clock skew between
//!   nodes does not matter;
//! - every write carries the `resourceVersion` it read (server-side apply with a precondition) or is
//!   a create, so two candidates racing for an expired lease cannot both win: the loser gets 409;
//! - the holder counts itself leader only until `last renew sent + lease_duration`: a leader that
//!   cannot reach the API stops before anyone else can take over.
//!
//! [`decide`] is the whole policy, pure; [`Elector`] does the requests.

use std::time::{Duration, SystemTime};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::{json, Value};
use thiserror::Error;
use tokio::sync::watch;

use crate::server::Health;
use crate::traffic::istio::FIELD_MANAGER;

/// Lease timings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub lease_duration: Duration,
    pub renew_every: Duration,
    /// How often a follower looks at the lease.
    pub retry_every: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
            retry_every: Duration::from_secs(2),
        }
    }
}

/// The parts of a Lease the election reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub holder: Option<String>,
    pub lease_duration: Option<Duration>,
    pub transitions: i32,
    pub resource_version: Option<String>,
}

impl From<&Lease> for Record {
    fn from(l: &Lease) -> Self {
        let spec = l.spec.as_ref();
        Record {
            holder: spec
                .and_then(|s| s.holder_identity.clone())
                .filter(|h| !h.is_empty()),
            lease_duration: spec
                .and_then(|s| s.lease_duration_seconds)
                .and_then(|s| u64::try_from(s).ok())
                .map(Duration::from_secs),
            transitions: spec.and_then(|s| s.lease_transitions).unwrap_or(0),
            resource_version: l.metadata.resource_version.clone(),
        }
    }
}

/// What to do with the lease this round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No lease yet: create it, holding it.
    Create,
    /// Ours: renew it.
    Renew,
    /// Free or expired: take it over (one more transition).
    TakeOver,
    /// Someone else holds it.
    Follow { holder: String },
}

/// The election's rule. `record`: the lease as read (`None`: it does not exist); `unchanged_since`:
/// when this replica first saw the record in its current state (its own clock).
pub fn decide(
    record: Option<&Record>,
    unchanged_since: SystemTime,
    me: &str,
    now: SystemTime,
    timing: Timing,
) -> Decision {
    let Some(r) = record else {
        return Decision::Create;
    };
    match &r.holder {
        Some(h) if h == me => Decision::Renew,
        None => Decision::TakeOver,
        Some(h) => {
            let duration = r.lease_duration.unwrap_or(timing.lease_duration);
            let quiet = now
                .duration_since(unchanged_since)
                .unwrap_or(Duration::ZERO);
            if quiet >= duration {
                Decision::TakeOver
            } else {
                Decision::Follow { holder: h.clone() }
            }
        }
    }
}

/// Whether a holder whose last successful renew was *sent* at `renewed` still leads at `now`.
pub fn still_leading(renewed: Option<SystemTime>, now: SystemTime, timing: Timing) -> bool {
    renewed.is_some_and(|t| now.duration_since(t).unwrap_or(Duration::ZERO) < timing.lease_duration)
}

/// Why a round failed.
#[derive(Debug, Error)]
pub enum LeaderError {
    #[error("lease {name}: {source}")]
    Kube { name: String, source: kube::Error },
}

/// One replica's side of the election.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    me: String,
    timing: Timing,
    /// The record last seen and when (own clock) it was first seen in that state.
    seen: Option<(Record, SystemTime)>,
    /// When the last successful create/renew/takeover was sent.
    renewed: Option<SystemTime>,
    /// When this replica became holder (the lease's `acquireTime`).
    acquired: Option<SystemTime>,
}

fn micro(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

impl Elector {
    pub fn new(client: Client, namespace: &str, name: &str, me: &str, timing: Timing) -> Self {
        Elector {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            me: me.to_owned(),
            timing,
            seen: None,
            renewed: None,
            acquired: None,
        }
    }

    /// The Lease body this replica writes as holder.
    fn body(&self, now: SystemTime, transitions: i32, resource_version: Option<&str>) -> Value {
        let mut metadata = json!({ "name": self.name });
        if let Some(rv) = resource_version {
            metadata["resourceVersion"] = json!(rv);
        }
        json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": {
                "holderIdentity": self.me,
                "leaseDurationSeconds": self.timing.lease_duration.as_secs(),
                "acquireTime": micro(self.acquired.unwrap_or(now)),
                "renewTime": micro(now),
                "leaseTransitions": transitions,
            }
        })
    }

    fn kube_err(&self, source: kube::Error) -> LeaderError {
        LeaderError::Kube {
            name: self.name.clone(),
            source,
        }
    }

    /// One round: read, decide, write. Returns whether this replica leads afterwards.
    pub async fn round(&mut self, now: SystemTime) -> Result<bool, LeaderError> {
        let current = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.kube_err(e))?;
        let record = current.as_ref().map(Record::from);
        let since = match (&self.seen, &record) {
            (Some((old, at)), Some(r)) if old == r => *at,
            _ => now,
        };
        self.seen = record.clone().map(|r| (r, since));
        let decision = decide(record.as_ref(), since, &self.me, now, self.timing);
        let written = match &decision {
            Decision::Follow { holder } => {
                tracing::debug!(%holder, "following");
                self.acquired = None;
                false
            }
            Decision::Create => {
                self.acquired = Some(now);
                let lease: Lease = serde_json::from_value(self.body(now, 0, None))
                    .map_err(|e| self.kube_err(kube::Error::SerdeError(e)))?;
                self.write(self.api.create(&PostParams::default(), &lease).await)?
            }
            Decision::Renew | Decision::TakeOver => {
                let r = record.as_ref();
                let mut transitions = r.map_or(0, |r| r.transitions);
                if decision == Decision::TakeOver || self.acquired.is_none() {
                    if decision == Decision::TakeOver {
                        transitions += 1;
                    }
                    self.acquired.get_or_insert(now);
                }
                let body = self.body(
                    now,
                    transitions,
                    r.and_then(|r| r.resource_version.as_deref()),
                );
                let params = PatchParams::apply(FIELD_MANAGER).force();
                self.write(
                    self.api
                        .patch(&self.name, &params, &Patch::Apply(&body))
                        .await,
                )?
            }
        };
        // Following or losing a race ends any leadership at once; only an API error (below, via
        // `?`) keeps the last renew, so a leader rides out a short API outage.
        self.renewed = written.then_some(now);
        Ok(still_leading(self.renewed, now, self.timing))
    }

    /// A write's result: `Ok(true)` when it landed, `Ok(false)` when another replica won the race.
    fn write(&mut self, res: Result<Lease, kube::Error>) -> Result<bool, LeaderError> {
        match res {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.is_conflict() || s.code == 409 => {
                tracing::debug!("lost the race for the lease");
                self.acquired = None;
                Ok(false)
            }
            Err(e) => Err(self.kube_err(e)),
        }
    }

    /// Run rounds forever, publishing leadership on `leading`. Every round beats `health`; the
    /// first answered round makes the replica ready.
    pub async fn run(mut self, leading: watch::Sender<bool>, health: std::sync::Arc<Health>) {
        loop {
            let now = SystemTime::now();
            let lead = match self.round(now).await {
                Ok(lead) => {
                    health.set_ready(true);
                    lead
                }
                Err(e) => {
                    tracing::warn!(error = %e, "lease round failed");
                    still_leading(self.renewed, now, self.timing)
                }
            };
            health.beat();
            if leading.send_replace(lead) != lead {
                tracing::info!(identity = %self.me, leading = lead, "leadership changed");
            }
            let pause = if lead {
                self.timing.renew_every
            } else {
                self.timing.retry_every
            };
            tokio::time::sleep(pause).await;
        }
    }
}

#[cfg(test)]
mod tests;
