//! The lifecycle through whole reconciles against a fake API server that keeps the Deployments as
//! the cluster would: every request is recorded (verb, path, body) and checked. Traffic goes to a
//! recording target; the metrics source passes (or fails) every window.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector;
use kube::Client;
use serde_json::{json, Value};
use tokio::sync::watch;
use tower_test::mock;

use super::tests::{FixedSource, RecordingTarget};
use super::*;
use crate::fixtures::AsResource;
use crate::policy::CanaryPolicyStatus;
use crate::server::{ControllerMetrics, Health};
use mlcanary_core::analysis::{VariantWindow, Window};

const NOW: u64 = 1_800_000_000;
const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/ml/deployments";

/// The fake cluster: Deployments by name (their readiness the test's to set), the policy's last
/// status, and every request.
#[derive(Default)]
struct Cluster {
    deployments: BTreeMap<String, Value>,
    status: Option<Value>,
    requests: Vec<(String, String, Value)>,
}

impl Cluster {
    fn deployment(name: &str, image: &str, replicas: i64) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "ml", "generation": 1,
                         "labels": {"app": "fraud-model"}},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "fraud-model", "mlcanary.io/subset": "canary"}},
                "template": {
                    "metadata": {"labels": {"app": "fraud-model", "mlcanary.io/subset": "canary"}},
                    "spec": {"containers": [{"name": "model", "image": image}]}
                }
            },
            "status": {}
        })
    }

    /// Rolled out: every replica updated and available.
    fn ready(&mut self, name: &str) {
        let d = self.deployments.get_mut(name).expect("deployment");
        let n = d["spec"]["replicas"].clone();
        d["status"] = json!({"observedGeneration": d["metadata"]["generation"].clone(),
                             "replicas": n, "updatedReplicas": n, "availableReplicas": n,
                             "readyReplicas": n});
    }

    /// Requests since the last call, as `VERB path` with the body.
    fn take(&mut self) -> Vec<(String, String, Value)> {
        std::mem::take(&mut self.requests)
    }
}

fn bump_generation(d: &mut Value) {
    let g = d["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
    d["metadata"]["generation"] = json!(g);
}

fn merge(into: &mut Value, patch: &Value) {
    match (into, patch) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}

fn serve(mut handle: mock::Handle<Request<Body>, Response<Body>>, cluster: Arc<Mutex<Cluster>>) {
    tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            let method = req.method().clone();
            let path = req.uri().path().to_owned();
            let bytes = req.into_body().collect_bytes().await.unwrap();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let mut c = cluster.lock().unwrap();
            c.requests
                .push((method.to_string(), path.clone(), body.clone()));
            let rest = path
                .strip_prefix(DEPLOYMENTS)
                .map(|r| r.trim_start_matches('/'));
            let (code, answer) = match (&method, rest) {
                (&Method::GET, Some(name)) => match c.deployments.get(name) {
                    Some(d) => (StatusCode::OK, d.clone()),
                    None => (
                        StatusCode::NOT_FOUND,
                        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                               "reason": "NotFound", "code": 404, "message": "not found"}),
                    ),
                },
                (&Method::POST, Some("")) => {
                    let name = body["metadata"]["name"].as_str().unwrap().to_owned();
                    let mut d = body.clone();
                    d["metadata"]["generation"] = json!(1);
                    c.deployments.insert(name, d.clone());
                    (StatusCode::CREATED, d)
                }
                (&Method::PATCH, Some(name)) => {
                    let (name, scale) = match name.strip_suffix("/scale") {
                        Some(n) => (n, true),
                        None => (name, false),
                    };
                    let d = c
                        .deployments
                        .get_mut(name)
                        .expect("patched deployment exists");
                    merge(d, &body);
                    bump_generation(d);
                    let answer = if scale {
                        json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
                               "metadata": {"name": name, "namespace": "ml"},
                               "spec": {"replicas": d["spec"]["replicas"].clone()}})
                    } else {
                        d.clone()
                    };
                    (StatusCode::OK, answer)
                }
                (&Method::PATCH, None) if path.ends_with("/status") => {
                    c.status = Some(body["status"].clone());
                    let mut obj = serde_json::to_value(policy()).unwrap();
                    obj["status"] = body["status"].clone();
                    (StatusCode::OK, obj)
                }
                _ => (StatusCode::CREATED, body),
            };
            send.send_response(
                Response::builder()
                    .status(code)
                    .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                    .unwrap(),
            );
        }
    });
}

fn policy() -> CanaryPolicy {
    let mut p = CanaryPolicy::test()
        .only_error_rate(0.01)
        .no_pauses()
        .resource();
    p.metadata.generation = Some(1);
    p.metadata.uid = Some("uid-1".into());
    p.metadata.finalizers = Some(vec![FINALIZER.to_owned()]);
    p.spec.target.deployment_ref = Some(mlcanary_core::policy::DeploymentRefSpec {
        name: "fraud-model".into(),
        subset_label: None,
    });
    p
}

fn window(canary_errors: u64) -> Window {
    let v = |errors| VariantWindow {
        requests: 5000,
        errors,
        ..Default::default()
    };
    Window {
        stable: v(0),
        canary: v(canary_errors),
        ..Default::default()
    }
}

/// A leading context on `client` whose metrics pass or fail every window as `canary_errors` says.
fn context_on(
    client: Client,
    canary_errors: u64,
    store: reflector::Store<CanaryPolicy>,
    clock: crate::engine::Clock,
) -> Arc<Context<FixedSource, RecordingTarget>> {
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "mlcanary".into(),
            instance: Some("mlcanary-0".into()),
        },
    );
    let (tx, rx) = watch::channel(true);
    drop(tx);
    Arc::new(Context::new(
        client,
        recorder,
        FixedSource::passing(Some(window(canary_errors))),
        RecordingTarget::default(),
        store,
        Arc::new(ControllerMetrics::new()),
        Arc::new(Health::new(Duration::from_secs(30))),
        rx,
        clock,
    ))
}

struct Rig {
    ctx: Arc<Context<FixedSource, RecordingTarget>>,
    cluster: Arc<Mutex<Cluster>>,
    secs: Arc<AtomicU64>,
}

impl Rig {
    fn new(canary_errors: u64) -> Rig {
        let (svc, handle) = mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(svc, "ml");
        let cluster = Arc::new(Mutex::new(Cluster::default()));
        cluster.lock().unwrap().deployments.insert(
            "fraud-model".into(),
            Cluster::deployment("fraud-model", "m:1", 3),
        );
        cluster.lock().unwrap().ready("fraud-model");
        serve(handle, cluster.clone());
        let secs = Arc::new(AtomicU64::new(NOW));
        let clock = {
            let secs = secs.clone();
            Arc::new(move || {
                SystemTime::UNIX_EPOCH + Duration::from_secs(secs.load(Ordering::SeqCst))
            })
        };
        let ctx = context_on(client, canary_errors, reflector::store().0, clock);
        Rig { ctx, cluster, secs }
    }

    /// One reconcile of the policy at the status the fake last stored; the requests it made.
    async fn reconcile(&self, secs_later: u64) -> Vec<(String, String, Value)> {
        self.secs.fetch_add(secs_later, Ordering::SeqCst);
        let mut obj = policy();
        obj.status = self
            .cluster
            .lock()
            .unwrap()
            .status
            .clone()
            .map(|s| serde_json::from_value(s).unwrap());
        reconcile(Arc::new(obj), self.ctx.clone()).await.unwrap();
        self.cluster.lock().unwrap().take()
    }

    fn status(&self) -> Value {
        self.cluster
            .lock()
            .unwrap()
            .status
            .clone()
            .unwrap_or(Value::Null)
    }

    fn canary_percents(&self) -> Vec<u32> {
        self.ctx.target.canary_percents()
    }
}

/// The Deployment requests of a reconcile, `VERB name[/scale]`, in order.
fn deployment_calls(reqs: &[(String, String, Value)]) -> Vec<String> {
    reqs.iter()
        .filter_map(|(m, p, _)| {
            p.strip_prefix(DEPLOYMENTS)
                .map(|r| format!("{m} {}", r.trim_start_matches('/')))
        })
        .collect()
}

fn body_of<'a>(reqs: &'a [(String, String, Value)], verb: &str, suffix: &str) -> &'a Value {
    &reqs
        .iter()
        .find(|(m, p, _)| m == verb && p.ends_with(suffix))
        .unwrap_or_else(|| panic!("no {verb} …{suffix} in {reqs:?}"))
        .2
}

#[tokio::test]
async fn a_commit_is_rolled_out_promoted_copied_to_stable_and_the_canary_scaled_to_zero() {
    let rig = Rig::new(0);
    // First sight: stable is made from the template the user's Deployment runs.
    let reqs = rig.reconcile(0).await;
    assert_eq!(
        deployment_calls(&reqs),
        ["GET fraud-model", "GET fraud-model-stable", "POST "]
    );
    let created = body_of(&reqs, "POST", "/deployments");
    assert_eq!(created["metadata"]["name"], "fraud-model-stable");
    assert_eq!(
        created["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "mlcanary"
    );
    assert!(
        created["metadata"].get("ownerReferences").is_none(),
        "stable outlives the policy"
    );
    assert_eq!(created["spec"]["replicas"], 3);
    assert_eq!(
        created["spec"]["selector"]["matchLabels"],
        json!({"app": "fraud-model", "mlcanary.io/subset": "stable"})
    );
    assert_eq!(
        created["spec"]["template"]["metadata"]["labels"]["mlcanary.io/subset"],
        "stable"
    );
    assert_eq!(
        created["spec"]["template"]["spec"]["containers"][0]["image"],
        "m:1"
    );
    assert_eq!(rig.status()["lifecycle"]["stage"], "Initializing");
    assert!(rig.canary_percents().is_empty(), "no traffic moved");
    // Stable not ready yet: waits.
    let reqs = rig.reconcile(5).await;
    assert_eq!(
        deployment_calls(&reqs),
        ["GET fraud-model", "GET fraud-model-stable"]
    );
    // Ready: all traffic on stable, then the canary to zero.
    rig.cluster.lock().unwrap().ready("fraud-model-stable");
    let reqs = rig.reconcile(5).await;
    assert_eq!(rig.canary_percents(), [0]);
    assert_eq!(
        deployment_calls(&reqs),
        [
            "GET fraud-model",
            "GET fraud-model-stable",
            "PATCH fraud-model/scale"
        ]
    );
    assert_eq!(
        body_of(&reqs, "PATCH", "/scale"),
        &json!({"spec": {"replicas": 0}})
    );
    assert_eq!(rig.status()["lifecycle"]["stage"], "Idle");
    let event = body_of(&reqs, "POST", "/events");
    assert!(
        event["note"].as_str().unwrap().starts_with("initialized"),
        "{event}"
    );

    // A new model version is committed: the Deployment's template changes (replicas stay 0).
    {
        let mut c = rig.cluster.lock().unwrap();
        let d = c.deployments.get_mut("fraud-model").unwrap();
        d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("m:2");
        bump_generation(d);
        c.ready("fraud-model");
    }
    let reqs = rig.reconcile(5).await;
    assert_eq!(
        body_of(&reqs, "PATCH", "/scale"),
        &json!({"spec": {"replicas": 3}})
    );
    rig.cluster.lock().unwrap().ready("fraud-model");
    // Ready: the rollout of m:2 starts and steps on passing windows to promotion.
    let mut ticks = 0;
    while rig.status()["phase"] != "Promoted" {
        rig.reconcile(30).await;
        ticks += 1;
        assert!(ticks < 20, "never promoted: {}", rig.status());
    }
    assert_eq!(rig.status()["canaryVersion"], "m:2");
    assert_eq!(
        rig.canary_percents().last(),
        Some(&100),
        "the rollout's own promotion"
    );
    // Promotion: the template is copied to stable, which rolls out...
    let reqs = rig.reconcile(1).await;
    let copy = body_of(&reqs, "PATCH", "/deployments/fraud-model-stable");
    assert_eq!(
        copy["spec"]["template"]["spec"]["containers"][0]["image"],
        "m:2"
    );
    assert_eq!(
        copy["spec"]["template"]["metadata"]["labels"]["mlcanary.io/subset"],
        "stable"
    );
    assert_eq!(rig.status()["lifecycle"]["stage"], "Promoting");
    let reqs = rig.reconcile(5).await;
    assert!(
        !deployment_calls(&reqs)
            .iter()
            .any(|c| c.starts_with("PATCH")),
        "waits for stable"
    );
    assert_eq!(
        rig.canary_percents().last(),
        Some(&100),
        "still on the canary while stable rolls"
    );
    // ...and once it is ready: everything to stable, the canary to zero.
    rig.cluster.lock().unwrap().ready("fraud-model-stable");
    let reqs = rig.reconcile(5).await;
    assert_eq!(rig.canary_percents().last(), Some(&0));
    assert_eq!(
        body_of(&reqs, "PATCH", "/scale"),
        &json!({"spec": {"replicas": 0}})
    );
    let s = rig.status();
    assert_eq!(
        (s["phase"].as_str(), s["canaryWeightBp"].as_u64()),
        (Some("Promoted"), Some(0))
    );
    assert_eq!(s["lifecycle"]["stage"], "Idle");
    let c = rig.cluster.lock().unwrap();
    assert_eq!(
        c.deployments["fraud-model-stable"]["spec"]["template"]["spec"]["containers"][0]["image"],
        "m:2"
    );
    assert_eq!(c.deployments["fraud-model"]["spec"]["replicas"], 0);
}

#[tokio::test]
async fn a_rolled_back_commit_ends_all_on_stable_with_the_canary_at_zero() {
    let rig = Rig::new(400);
    rig.reconcile(0).await;
    rig.cluster.lock().unwrap().ready("fraud-model-stable");
    rig.reconcile(5).await;
    {
        let mut c = rig.cluster.lock().unwrap();
        let d = c.deployments.get_mut("fraud-model").unwrap();
        d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("m:bad");
        bump_generation(d);
    }
    rig.reconcile(5).await; // scaled up
    rig.cluster.lock().unwrap().ready("fraud-model");
    let mut ticks = 0;
    while rig.status()["phase"] != "RolledBack" {
        rig.reconcile(30).await;
        ticks += 1;
        assert!(ticks < 10, "never rolled back: {}", rig.status());
    }
    assert_eq!(rig.canary_percents().last(), Some(&0));
    let reqs = rig.reconcile(1).await;
    assert_eq!(
        body_of(&reqs, "PATCH", "/scale"),
        &json!({"spec": {"replicas": 0}})
    );
    assert_eq!(rig.status()["lifecycle"]["stage"], "Idle");
    // The rejected version is not retried; stable still runs m:1.
    let reqs = rig.reconcile(30).await;
    assert!(
        !deployment_calls(&reqs)
            .iter()
            .any(|c| c.starts_with("PATCH")),
        "{reqs:?}"
    );
    let c = rig.cluster.lock().unwrap();
    assert_eq!(
        c.deployments["fraud-model-stable"]["spec"]["template"]["spec"]["containers"][0]["image"],
        "m:1"
    );
}

/// Same-named policies in two namespaces (staging and prod) on the mesh plugin: each reconcile
/// writes its own namespace's VirtualService routes, one plugin config in the mesh root holds
/// both, and each one's status goes to its own object — judged and written apart.
#[tokio::test]
async fn same_named_policies_of_two_namespaces_are_reconciled_apart() {
    let (svc, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(svc, "default");
    let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    {
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Some((req, send)) = handle.next_request().await {
                let (method, path) = (req.method().to_string(), req.uri().path().to_owned());
                let bytes = req.into_body().collect_bytes().await.unwrap();
                let mut body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                if path.ends_with("/status") {
                    let mut obj = serde_json::to_value(lifecycle_free_policy()).unwrap();
                    obj["status"] = body["status"].clone();
                    body = obj;
                }
                seen.lock().unwrap().push((method, path));
                send.send_response(
                    Response::builder()
                        .status(StatusCode::OK)
                        .body(Body::from(serde_json::to_vec(&body).unwrap()))
                        .unwrap(),
                );
            }
        });
    }
    let in_ns = |ns: &str| {
        let mut p = lifecycle_free_policy();
        p.metadata.namespace = Some(ns.into());
        p.spec.target.hosts = vec![format!("fraud-model.{ns}")];
        p.spec.target.destination_host = Some("fraud-model".into());
        p
    };
    let (prod, staging) = (in_ns("prod"), in_ns("staging"));
    let store = super::finalizer_tests::store_of(vec![prod.clone(), staging.clone()]);
    let ctx = context_on(
        client,
        0,
        store,
        Arc::new(|| SystemTime::UNIX_EPOCH + Duration::from_secs(NOW)),
    );
    reconcile(Arc::new(prod), ctx.clone()).await.unwrap();
    reconcile(Arc::new(staging), ctx.clone()).await.unwrap();
    let writes = ctx.target.0.lock().unwrap();
    let namespaces: Vec<&str> = writes.iter().map(|d| d.namespace.as_str()).collect();
    assert_eq!(namespaces, ["prod", "staging"]);
    let last = writes.last().unwrap();
    let mut in_config: Vec<(Option<&str>, &str)> = last
        .plugin_config
        .policies
        .iter()
        .map(|p| (p.namespace.as_deref(), p.name.as_str()))
        .collect();
    in_config.sort();
    assert_eq!(
        in_config,
        [
            (Some("prod"), "fraud-model"),
            (Some("staging"), "fraud-model")
        ],
        "one mesh config, both policies"
    );
    assert!(writes
        .iter()
        .all(|d| d.wasm_plugin == crate::policy::PluginTarget::Mesh));
    let statuses: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(m, p)| m == "PATCH" && p.ends_with("/status"))
        .map(|(_, p)| p.clone())
        .collect();
    assert_eq!(
        statuses,
        [
            "/apis/mlcanary.io/v1alpha1/namespaces/prod/canarypolicies/fraud-model/status",
            "/apis/mlcanary.io/v1alpha1/namespaces/staging/canarypolicies/fraud-model/status"
        ]
    );
}

/// The two-Deployments fixture (no `deploymentRef`), at step 0.
fn lifecycle_free_policy() -> CanaryPolicy {
    let mut p = policy();
    p.spec.target.deployment_ref = None;
    p.status = Some(CanaryPolicyStatus {
        phase: crate::policy::Phase::Progressing,
        canary_weight_bp: 500,
        step_index: Some(0),
        last_progress_time: Some(
            humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_secs(NOW))
                .to_string(),
        ),
        ..Default::default()
    });
    p
}
