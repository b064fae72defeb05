//! A hundred policies sharing one WasmPlugin, reconciled against a mocked API server with the real
//! Istio target: every request is counted by verb and resource. The plugin's config is one
//! document for all of them, so it is written when it changes — once at start, once per step of
//! any policy — never by each policy's tick; a peer's step that the store does not show yet is
//! kept, not undone.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{reflector, watcher};
use kube::Client;
use serde_json::{json, Value};
use tokio::sync::watch;
use tower_test::mock;

use super::*;
use crate::fixtures::AsResource;
use crate::metrics::{MetricsError, Reading};
use crate::policy::{CanaryPolicyStatus, Phase, PolicyKey};
use crate::server::{ControllerMetrics, Health};
use crate::traffic::IstioTarget;
use mlcanary_core::window::{Mark, VariantWindow, Window};

const N: usize = 100;
const NOW: u64 = 1_800_000_000;

/// Windows by policy name: empty (the policy holds) unless set. Counts its batch reads
/// (`prepare`) and the fetches that found theirs prepared; clones share all of it.
#[derive(Clone, Default)]
struct ByPolicy {
    windows: Arc<Mutex<BTreeMap<String, Window>>>,
    prepared: Arc<Mutex<std::collections::BTreeSet<PolicyKey>>>,
    /// (policies per prepare, fetches that found theirs prepared).
    batches: Arc<Mutex<(Vec<usize>, usize)>>,
}

impl MetricsSource for ByPolicy {
    async fn prepare(&mut self, policies: &[&ValidatedPolicy], _now: SystemTime) {
        self.batches.lock().unwrap().0.push(policies.len());
        *self.prepared.lock().unwrap() = policies.iter().map(|p| p.key()).collect();
    }

    fn prepared_for(&self, policy: &PolicyKey) -> bool {
        self.prepared.lock().unwrap().contains(policy)
    }

    async fn fetch(
        &mut self,
        p: &ValidatedPolicy,
        _since: Option<&Mark>,
        now: SystemTime,
    ) -> Result<Reading, MetricsError> {
        if self.prepared.lock().unwrap().remove(&p.key()) {
            self.batches.lock().unwrap().1 += 1;
        }
        let window = self.windows.lock().unwrap().get(&p.name).cloned();
        Ok(Reading {
            window: Some(window.unwrap_or_default()),
            mark: Mark {
                at_ms: crate::metrics::unix_ms(now),
                counters: Default::default(),
            },
        })
    }
}

/// Requests by `VERB kind` (`PATCH wasmplugins`, `GET virtualservices`, ...), and the last
/// WasmPlugin body.
#[derive(Default)]
struct Seen {
    count: BTreeMap<String, usize>,
    plugin: Option<Value>,
}

/// Answer every request the way the API server would for these objects, recording it.
fn serve(mut handle: mock::Handle<Request<Body>, Response<Body>>, seen: Arc<Mutex<Seen>>) {
    tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            let method = req.method().clone();
            let path = req.uri().path().to_owned();
            let parts: Vec<&str> = path.split('/').collect();
            // .../namespaces/ml/<kind>/<name>[/status]
            let at = parts.iter().position(|p| *p == "namespaces").unwrap_or(0);
            let kind = parts.get(at + 2).copied().unwrap_or_default().to_owned();
            let name = parts.get(at + 3).copied().unwrap_or_default().to_owned();
            let sub = parts
                .get(at + 4)
                .map(|s| format!("/{s}"))
                .unwrap_or_default();
            let bytes = req.into_body().collect_bytes().await.unwrap();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let answer = match (&method, kind.as_str()) {
                // Discovery of an Istio group (`/apis/<group>`): what Istio ≥ 1.22 serves.
                (&Method::GET, group) if parts.len() == 3 => {
                    let version = if group == "extensions.istio.io" {
                        "v1alpha1"
                    } else {
                        "v1"
                    };
                    json!({"kind": "APIGroup", "apiVersion": "v1", "name": group,
                           "versions": [{"groupVersion": format!("{group}/{version}"),
                                         "version": version}]})
                }
                (&Method::GET, "virtualservices") => json!({
                    "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                    "metadata": {"name": name, "namespace": "ml", "resourceVersion": "1"},
                    "spec": {"hosts": [name], "http": []}
                }),
                (&Method::PATCH, "wasmplugins") => {
                    seen.lock().unwrap().plugin = Some(body.clone());
                    body
                }
                (&Method::DELETE, "wasmplugins") => json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "reason": "NotFound", "code": 404
                }),
                (&Method::PATCH, "canarypolicies") => {
                    let mut obj = serde_json::to_value(policy(&name, 500)).unwrap();
                    obj["status"] = body["status"].clone();
                    obj
                }
                _ => body,
            };
            *seen
                .lock()
                .unwrap()
                .count
                .entry(format!("{method} {kind}{sub}"))
                .or_default() += 1;
            let status = match (&method, kind.as_str()) {
                (&Method::POST, _) => StatusCode::CREATED,
                // No policy is in shadow: no inbound plugin is there to delete.
                (&Method::DELETE, "wasmplugins") => StatusCode::NOT_FOUND,
                _ => StatusCode::OK,
            };
            send.send_response(
                Response::builder()
                    .status(status)
                    .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                    .unwrap(),
            );
        }
    });
}

/// Policy `name` on its own host and VirtualService, in plugin `mlcanary`, at step 0.
fn policy(name: &str, canary_bp: u32) -> CanaryPolicy {
    let mut p = CanaryPolicy::test()
        .only_error_rate(0.01)
        .no_pauses()
        .resource();
    p.metadata.name = Some(name.to_owned());
    p.metadata.generation = Some(3);
    p.metadata.uid = Some(format!("uid-{name}"));
    p.metadata.finalizers = Some(vec![FINALIZER.to_owned()]);
    p.spec.target.virtual_service = name.to_owned();
    p.spec.target.hosts = vec![name.to_owned()];
    p.spec.target.destination_host = None;
    p.status = Some(CanaryPolicyStatus {
        phase: Phase::Progressing,
        canary_weight_bp: canary_bp,
        step_index: Some(0),
        observed_generation: Some(3),
        last_progress_time: Some(
            humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_secs(NOW))
                .to_string(),
        ),
        ..Default::default()
    });
    p
}

fn passing() -> Window {
    let v = VariantWindow {
        requests: 5000,
        ..Default::default()
    };
    Window {
        stable: v.clone(),
        canary: v,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_hundred_policies_share_one_plugin_written_only_when_it_changes() {
    let (svc, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(svc, "ml");
    let seen = Arc::new(Mutex::new(Seen::default()));
    serve(handle, seen.clone());
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "mlcanary".into(),
            instance: Some("mlcanary-0".into()),
        },
    );
    let (store, mut writer) = reflector::store();
    let objs: Vec<Arc<CanaryPolicy>> = (0..N)
        .map(|i| Arc::new(policy(&format!("model-{i:03}"), 500)))
        .collect();
    for o in &objs {
        writer.apply_watcher_event(&watcher::Event::Apply(o.as_ref().clone()));
    }
    let (tx, rx) = watch::channel(true);
    let secs = Arc::new(AtomicU64::new(NOW));
    let clock = {
        let secs = secs.clone();
        Arc::new(move || SystemTime::UNIX_EPOCH + Duration::from_secs(secs.load(Ordering::SeqCst)))
    };
    let source = ByPolicy::default();
    let ctx = Arc::new(Context::new(
        client.clone(),
        recorder,
        source.clone(),
        IstioTarget::new(client).with_backoff(Duration::ZERO),
        store,
        Arc::new(ControllerMetrics::new()),
        Arc::new(Health::new(Duration::from_secs(30))),
        rx,
        clock,
    ));
    let writes = |seen: &Arc<Mutex<Seen>>| {
        let s = seen.lock().unwrap();
        let n = |k: &str| s.count.get(k).copied().unwrap_or(0);
        (
            n("PATCH wasmplugins"),
            n("PATCH virtualservices"),
            n("PATCH canarypolicies/status"),
        )
    };
    let deletes = |seen: &Arc<Mutex<Seen>>| {
        let s = seen.lock().unwrap();
        s.count.get("DELETE wasmplugins").copied().unwrap_or(0)
    };
    let round = |secs_later: u64| {
        let (ctx, objs, secs) = (ctx.clone(), objs.clone(), secs.clone());
        async move {
            secs.fetch_add(secs_later, Ordering::SeqCst);
            for o in objs {
                reconcile(o, ctx.clone()).await.unwrap();
            }
        }
    };

    // Start: every policy's routes once, the shared config once.
    round(0).await;
    assert_eq!(writes(&seen), (1, N, N), "first round");
    // None is in shadow: each inbound plugin, unknown at start, is deleted once.
    assert_eq!(deletes(&seen), N, "first round");
    let discoveries = |seen: &Arc<Mutex<Seen>>| {
        let s = seen.lock().unwrap();
        let n = |k: &str| s.count.get(k).copied().unwrap_or(0);
        (n("GET networking.istio.io"), n("GET extensions.istio.io"))
    };
    assert_eq!(discoveries(&seen), (1, 1), "each Istio group asked once");
    // One interval later, nothing changed: nothing is rewritten.
    round(60).await;
    assert_eq!(writes(&seen), (1, N, 2 * N), "steady state");
    assert_eq!(deletes(&seen), N, "known absent: not deleted again");
    // Each round's counters were read in one batch for all of them, by the first reconcile.
    assert_eq!(*source.batches.lock().unwrap(), (vec![N, N], 2 * N));

    // One policy steps (5 % → 10 %); the store does not show its new status yet.
    source
        .windows
        .lock()
        .unwrap()
        .insert("model-042".into(), passing());
    round(60).await;
    assert_eq!(
        writes(&seen),
        (2, N + 1, 3 * N),
        "one plugin write and one route write for the step, none from its 99 peers"
    );
    let plugin = seen.lock().unwrap().plugin.clone().unwrap();
    let policies = plugin["spec"]["pluginConfig"]["policies"]
        .as_array()
        .unwrap();
    assert_eq!(policies.len(), N);
    let canary_bp = |name: &str| {
        policies.iter().find(|p| p["name"] == name).unwrap()["variants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "canary")
            .unwrap()["weight_bp"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(canary_bp("model-042"), 1000, "the step is in effect");
    assert_eq!(canary_bp("model-041"), 500);
    round(60).await;
    assert_eq!(
        writes(&seen).0,
        2,
        "the peers rendered the step from what was written, not the stale store"
    );

    // Another replica leads for a while: what this one wrote is no longer known to be in effect.
    tx.send(false).unwrap();
    reconcile(objs[0].clone(), ctx.clone()).await.unwrap();
    tx.send(true).unwrap();
    secs.fetch_add(60, Ordering::SeqCst);
    let before = writes(&seen);
    reconcile(objs[1].clone(), ctx.clone()).await.unwrap();
    let after = writes(&seen);
    assert_eq!(
        (after.0 - before.0, after.1 - before.1),
        (1, 1),
        "a new term writes again"
    );
    assert_eq!(
        deletes(&seen),
        N + 1,
        "and no longer knows which inbound plugins are there"
    );
    assert_eq!(discoveries(&seen), (1, 1), "and still knows the versions");
}
