//! The breach-to-rollback scenario: `mlcanary local` (its own Envoy, the built filter) rolls a
//! canary out under background traffic, judging Envoy's stats or a real Prometheus; once an
//! analysis has passed on real data the canary starts failing 20 % of its requests and the rollout
//! must be rolled back. `controller_e2e` checks the outcome; `bench-rollback` prints how long it
//! took. Nothing here asserts a duration.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::local::{error_rate_policy_gated, Mlcanary, Traffic};
use crate::patience;
use crate::prometheus::Prometheus;
use crate::upstream::Upstream;

pub const HOST: &str = "fraud-model";
pub const POLICY: &str = "fraud-model";
/// Its key in `status.json`: namespace (the policy file names none) and name.
pub const POLICY_KEY: &str = "default/fraud-model";
/// `failureThreshold` of the scenario's policy.
pub const FAILURE_THRESHOLD: u32 = 2;

/// Where `mlcanary local` reads its metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Envoy's admin `/stats/prometheus` (1 s interval, steps of 10 % to 80 %).
    Envoy,
    /// A real Prometheus scraping that admin every second (2 s interval, steps to 90 %).
    Prometheus,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Envoy => "envoy stats",
            Source::Prometheus => "prometheus",
        }
    }

    /// The analysis interval.
    pub fn interval(self) -> Duration {
        match self {
            Source::Envoy => Duration::from_secs(1),
            Source::Prometheus => Duration::from_secs(2),
        }
    }

    /// What an idle machine should take from the breach to the rollback: `failureThreshold`
    /// intervals, plus 2 s for the window in progress, a scrape and the status write. A reference
    /// to print next to the measured figure, not a bound to assert.
    pub fn reference(self) -> Duration {
        self.interval() * FAILURE_THRESHOLD + Duration::from_secs(2)
    }
}

pub fn weight(s: &Value) -> Option<u64> {
    s["policies"][POLICY_KEY]["canaryWeightBp"].as_u64()
}

pub fn phase(s: &Value) -> Option<&str> {
    s["policies"][POLICY_KEY]["phase"].as_str()
}

/// Everything the scenario runs; dropped in field order: traffic first, then mlcanary (and its
/// Envoy), Prometheus, the upstreams.
pub struct Rig {
    pub traffic: Traffic,
    pub m: Mlcanary,
    pub prometheus: Option<Prometheus>,
    pub stable: Upstream,
    pub canary: Upstream,
    /// Envoy's listener.
    pub port: u16,
    pub source: Source,
}

/// What [`Rig::breach`] saw.
#[derive(Debug, Clone, Copy)]
pub struct Breach {
    /// From the canary's first failing request being possible to `status.json` saying
    /// `RolledBack`.
    pub took: Duration,
    /// The canary weight when it broke.
    pub before_bp: u64,
}

impl Rig {
    /// Start the upstreams, Prometheus (for [`Source::Prometheus`]), `mlcanary local --watch`
    /// with a gated policy (it can never end Promoted before the breach, however slow the machine)
    /// and background traffic.
    pub fn start(source: Source) -> Rig {
        let stable = Upstream::start("stable");
        let canary = Upstream::start("canary");
        let upstreams = [("stable", stable.port), ("canary", canary.port)];
        let (mut m, prometheus) = match source {
            Source::Envoy => {
                let policy = error_rate_policy_gated("1s", "[10, 20, 30, 40, 50, 60, 70, 80]", 10);
                (Mlcanary::local(&policy, &upstreams, &["--watch"]), None)
            }
            Source::Prometheus => {
                // Prometheus must know the admin port before Envoy starts: pick one.
                let admin = crate::free_port();
                let prom = Prometheus::start(admin);
                let (admin, url) = (admin.to_string(), prom.url());
                // Prometheus' first scrape comes seconds after it starts and `increase()` needs
                // two samples in the window: until then windows are empty, read as below
                // minRequests (inconclusive), and the rollout holds at its first step. The breach
                // is made only after an analysis passed on real data, so no window that straddles
                // start-up is judged as the breach.
                let policy =
                    error_rate_policy_gated("2s", "[10, 20, 30, 40, 50, 60, 70, 80, 90]", 10);
                let args = ["--watch", "--admin-port", &admin, "--prometheus", &url];
                (Mlcanary::local(&policy, &upstreams, &args), Some(prom))
            }
        };
        let port = m.listener_port(patience::START);
        let traffic = Traffic::background(port, HOST);
        Rig {
            traffic,
            m,
            prometheus,
            stable,
            canary,
            port,
            source,
        }
    }

    /// Wait until an analysis passed on real data, make the canary fail 20 % of its requests and
    /// wait for the rollback. `Err` (with mlcanary's output) if there was no passing analysis or
    /// no rollback within [`patience::ROLLOUT`] each.
    pub fn breach(&mut self) -> Result<Breach, String> {
        let m = &mut self.m;
        let warm = m.wait_status(patience::ROLLOUT, |s| {
            let verdicts = s["policies"][POLICY_KEY]["lastVerdicts"].as_array()?;
            let pass = verdicts.iter().any(|v| v["verdict"] == "pass");
            (pass && phase(s) == Some("Progressing")).then(|| weight(s))
        });
        let before_bp = match warm {
            Some(Some(w)) if w > 0 && w < 10_000 => w,
            other => {
                return Err(format!(
                    "no passing analysis on real data mid-rollout ({other:?}):\n{}",
                    m.output()
                ))
            }
        };
        let breach = Instant::now();
        self.canary.set_fail_per_mille(200);
        let rolled = m.wait_status(patience::ROLLOUT, |s| {
            (phase(s) == Some("RolledBack")).then(|| weight(s))
        });
        let took = breach.elapsed();
        match rolled {
            Some(Some(0)) => Ok(Breach { took, before_bp }),
            other => Err(format!(
                "not rolled back after {:.1} s ({other:?}):\n{}",
                took.as_secs_f64(),
                m.output()
            )),
        }
    }
}
