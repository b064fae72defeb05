//! In-memory adapters for engine tests: a source that replays scripted windows, a target that
//! records every write, a clock moved by hand and a webhook sender that records its calls.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use futures::future::BoxFuture;
use serde_json::Value;

use crate::engine::{Clock, Engine};
use crate::hooks::{HookError, WebhookSender};
use crate::metrics::{unix_ms, MetricsError, MetricsSource, Reading};
use crate::policy::ValidatedPolicy;
use crate::traffic::{DesiredTraffic, TrafficError, TrafficTarget};
use mlcanary_core::analysis::{VariantWindow, Window};
use mlcanary_core::policy::validated::Webhook;
use mlcanary_core::render::RouteError;
use mlcanary_core::window::Mark;

/// Replays scripted results; once the script is used up, every fetch is "unreachable".
#[derive(Default)]
pub struct FakeSource {
    pub script: VecDeque<Result<Window, MetricsError>>,
    pub fetches: usize,
}

impl FakeSource {
    pub fn push(&mut self, r: Result<Window, MetricsError>) -> &mut Self {
        self.script.push_back(r);
        self
    }
}

impl MetricsSource for FakeSource {
    /// The next scripted window, whatever the mark (a scripted window is already a difference).
    async fn fetch(
        &mut self,
        _policy: &ValidatedPolicy,
        _since: Option<&Mark>,
        now: SystemTime,
    ) -> Result<Reading, MetricsError> {
        self.fetches += 1;
        let window = self
            .script
            .pop_front()
            .unwrap_or_else(|| Err(unreachable()))?;
        Ok(scripted(window, now))
    }
}

/// A scripted window as a source's reading at `now`.
fn scripted(window: Window, now: SystemTime) -> Reading {
    Reading {
        window: Some(window),
        mark: Mark {
            at_ms: unix_ms(now),
            counters: Default::default(),
        },
    }
}

pub fn unreachable() -> MetricsError {
    MetricsError::Unreachable {
        url: "http://fake".into(),
        reason: "connection refused".into(),
    }
}

/// `n` requests per variant, with the given error counts.
pub fn window(n: u64, stable_errors: u64, canary_errors: u64) -> Window {
    let v = |errors| VariantWindow {
        requests: n,
        errors,
        ..Default::default()
    };
    Window {
        stable: v(stable_errors),
        canary: v(canary_errors),
        ..Default::default()
    }
}

/// Records writes; `fail` makes the next writes fail.
#[derive(Default)]
pub struct FakeTarget {
    pub writes: Mutex<Vec<DesiredTraffic>>,
    pub fail: AtomicBool,
}

impl FakeTarget {
    pub fn writes(&self) -> Vec<DesiredTraffic> {
        self.writes.lock().expect("lock").clone()
    }

    /// The canary percent of the default route of each write, in order.
    pub fn canary_percents(&self) -> Vec<u32> {
        self.writes()
            .iter()
            .map(|d| {
                let default = d.routes.last().expect("default route");
                default.route[1].weight.expect("weighted")
            })
            .collect()
    }
}

impl TrafficTarget for FakeTarget {
    async fn apply(&self, desired: &DesiredTraffic) -> Result<(), TrafficError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(TrafficError::Route(RouteError::NoDestination {
                route: "fake failure".into(),
            }));
        }
        self.writes.lock().expect("lock").push(desired.clone());
        Ok(())
    }
}

/// A clock tests move by hand (shared by clones).
#[derive(Clone)]
pub struct ManualClock(Arc<Mutex<SystemTime>>);

impl ManualClock {
    pub fn at(t: SystemTime) -> Self {
        ManualClock(Arc::new(Mutex::new(t)))
    }

    pub fn now(&self) -> SystemTime {
        *self.0.lock().unwrap()
    }

    pub fn set(&self, t: SystemTime) {
        *self.0.lock().unwrap() = t;
    }

    pub fn advance(&self, d: std::time::Duration) {
        let t = self.now() + d;
        self.set(t);
    }

    pub fn clock(&self) -> Clock {
        let c = self.clone();
        Arc::new(move || c.now())
    }
}

/// Records every webhook call (hook URL and body) and answers with scripted HTTP statuses, one per
/// call, the last repeating (none: 200). Retries are the HTTP sender's, tested with it.
#[derive(Default)]
pub struct FakeSender {
    pub answers: Mutex<VecDeque<u16>>,
    pub calls: Mutex<Vec<(String, Value)>>,
}

impl FakeSender {
    pub fn answering(statuses: &[u16]) -> Arc<Self> {
        Arc::new(FakeSender {
            answers: Mutex::new(statuses.iter().copied().collect()),
            calls: Mutex::default(),
        })
    }

    pub fn calls(&self) -> Vec<(String, Value)> {
        self.calls.lock().unwrap().clone()
    }
}

impl WebhookSender for FakeSender {
    fn send<'a>(
        &'a self,
        hook: &'a Webhook,
        body: &'a Value,
    ) -> BoxFuture<'a, Result<(), HookError>> {
        self.calls
            .lock()
            .unwrap()
            .push((hook.url.clone(), body.clone()));
        let status = {
            let mut a = self.answers.lock().unwrap();
            if a.len() > 1 {
                a.pop_front().unwrap_or(200)
            } else {
                a.front().copied().unwrap_or(200)
            }
        };
        Box::pin(async move {
            if (200..300).contains(&status) {
                Ok(())
            } else {
                Err(HookError::Status {
                    status,
                    attempts: 1,
                })
            }
        })
    }
}

/// An engine on `clock` whose webhooks go to `sender`.
pub fn engine(clock: &ManualClock, sender: Arc<FakeSender>) -> Engine {
    Engine::new(clock.clock(), sender)
}
