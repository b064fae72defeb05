//! The reconciler against a mocked API server (`tower_test::mock::pair`): every request it sends is
//! checked — verb, path, query and body of the status apply and of the Event POSTs. ControllerMetrics and
//! traffic go through in-memory fakes (the Istio target has its own mocked-API tests).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector;
use kube::Client;
use serde_json::Value;
use tokio::sync::watch;
use tower_test::mock::{self, Handle};

use super::plan::{backoff_delay, INVALID_RECHECK};
use super::*;
use crate::fixtures::AsResource;
use crate::metrics::MetricsError;
use crate::policy::{CanaryPolicyStatus, Phase};
use crate::server::{ControllerMetrics, Health};
use crate::traffic::{DesiredTraffic, TrafficError};
use mlcanary_core::analysis::{VariantWindow, Window};

pub(super) type ApiHandle = Handle<Request<Body>, Response<Body>>;

/// Answers every fetch with the same window (or "unreachable"), counting fetches.
#[derive(Clone)]
pub(super) struct FixedSource {
    window: Option<Window>,
    fetches: Arc<AtomicUsize>,
}

impl FixedSource {
    /// Every fetch answers `window`.
    pub(super) fn passing(window: Option<Window>) -> Self {
        FixedSource {
            window,
            fetches: Arc::default(),
        }
    }
}

impl MetricsSource for FixedSource {
    async fn fetch(
        &mut self,
        _p: &ValidatedPolicy,
        _since: Option<&mlcanary_core::window::Mark>,
        now: std::time::SystemTime,
    ) -> Result<crate::metrics::Reading, MetricsError> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let window = self.window.clone().ok_or(MetricsError::Unreachable {
            url: "http://fake".into(),
            reason: "refused".into(),
        })?;
        Ok(crate::metrics::Reading {
            window: Some(window),
            mark: mlcanary_core::window::Mark {
                at_ms: crate::metrics::unix_ms(now),
                counters: Default::default(),
            },
        })
    }
}

/// Records every write; refuses the next one after `fail_next`.
#[derive(Default)]
pub(super) struct RecordingTarget(pub Mutex<Vec<DesiredTraffic>>, AtomicBool);

impl TrafficTarget for RecordingTarget {
    async fn apply(&self, d: &DesiredTraffic) -> Result<(), TrafficError> {
        if self.1.swap(false, Ordering::SeqCst) {
            return Err(TrafficError::Conflict {
                kind: "VirtualService",
                name: d.virtual_service.clone(),
                attempts: 5,
            });
        }
        self.0.lock().unwrap().push(d.clone());
        Ok(())
    }
}

impl RecordingTarget {
    pub(super) fn fail_next(&self) {
        self.1.store(true, Ordering::SeqCst);
    }

    /// The canary percent of each write's default route.
    pub(super) fn canary_percents(&self) -> Vec<u32> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|d| d.routes.last().unwrap().route[1].weight.unwrap())
            .collect()
    }
}

/// `n` requests per variant with the given errors; no latency data (latency checks not used).
fn window(n: u64, stable_errors: u64, canary_errors: u64) -> Window {
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

const NOW: u64 = 1_800_000_000;

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(NOW)
}

pub(super) type TestContext = Context<FixedSource, RecordingTarget>;

fn context(window: Option<Window>, leading: bool) -> (Arc<TestContext>, ApiHandle) {
    with_store(window, leading, reflector::store().0)
}

/// A leading context whose store holds `objs` (the peers a reconcile reads).
pub(super) fn context_with_store(
    window: Option<Window>,
    objs: Vec<CanaryPolicy>,
) -> (Arc<TestContext>, ApiHandle) {
    with_store(window, true, super::finalizer_tests::store_of(objs))
}

fn with_store(
    window: Option<Window>,
    leading: bool,
    store: reflector::Store<CanaryPolicy>,
) -> (Arc<TestContext>, ApiHandle) {
    let (svc, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(svc, "default");
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "mlcanary".into(),
            instance: Some("mlcanary-0".into()),
        },
    );
    let (tx, rx) = watch::channel(leading);
    // The sender may go: the receiver keeps the last value.
    drop(tx);
    let ctx = Context::new(
        client,
        recorder,
        FixedSource {
            window,
            fetches: Arc::default(),
        },
        RecordingTarget::default(),
        store,
        Arc::new(ControllerMetrics::new()),
        Arc::new(Health::new(Duration::from_secs(30))),
        rx,
        Arc::new(now),
    );
    (Arc::new(ctx), handle)
}

/// The fixture policy with only the error-rate check, no pauses, at generation 3, with `status`
/// and the controller's finalizer (added on its first reconcile: see `finalizer_tests`).
pub(super) fn policy(status: Option<CanaryPolicyStatus>) -> CanaryPolicy {
    let mut p = CanaryPolicy::test()
        .only_error_rate(0.01)
        .no_pauses()
        .resource();
    p.metadata.generation = Some(3);
    p.metadata.uid = Some("uid-1".into());
    p.metadata.finalizers = Some(vec![FINALIZER.to_owned()]);
    p.status = status;
    p
}

pub(super) fn at_step_0(failed_checks: u32) -> CanaryPolicyStatus {
    CanaryPolicyStatus {
        phase: Phase::Progressing,
        canary_weight_bp: 500,
        step_index: Some(0),
        failed_checks,
        last_progress_time: Some(humantime::format_rfc3339_seconds(now()).to_string()),
        ..Default::default()
    }
}

pub(super) async fn body_json(req: Request<Body>) -> Value {
    let bytes = req.into_body().collect_bytes().await.unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn sorted_query(req: &Request<Body>) -> Vec<String> {
    let mut q: Vec<String> = req
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    q.sort();
    q
}

const STATUS_PATH: &str =
    "/apis/mlcanary.io/v1alpha1/namespaces/ml/canarypolicies/fraud-model/status";
const EVENTS_PATH: &str = "/apis/events.k8s.io/v1/namespaces/ml/events";

/// Next request must be the forced status apply; returns its `status`.
pub(super) async fn expect_status_apply(handle: &mut ApiHandle, obj: &CanaryPolicy) -> Value {
    let (req, send) = handle.next_request().await.expect("a status apply");
    assert_eq!(req.method(), Method::PATCH);
    assert_eq!(req.uri().path(), STATUS_PATH);
    assert_eq!(sorted_query(&req), ["fieldManager=mlcanary", "force=true"]);
    assert_eq!(
        req.headers().get("content-type").unwrap(),
        "application/apply-patch+yaml"
    );
    let body = body_json(req).await;
    assert_eq!(body["apiVersion"], "mlcanary.io/v1alpha1");
    assert_eq!(body["kind"], "CanaryPolicy");
    assert!(
        body.get("spec").is_none(),
        "the status apply carries no spec"
    );
    let mut answer = serde_json::to_value(obj).unwrap();
    answer["status"] = body["status"].clone();
    send.send_response(
        Response::builder()
            .status(StatusCode::OK)
            .body(Body::from(serde_json::to_vec(&answer).unwrap()))
            .unwrap(),
    );
    body["status"].clone()
}

/// Next request must be an Event POST; returns the event.
pub(super) async fn expect_event(handle: &mut ApiHandle) -> Value {
    let (req, send) = handle.next_request().await.expect("an event");
    assert_eq!(req.method(), Method::POST);
    assert_eq!(req.uri().path(), EVENTS_PATH);
    let body = body_json(req).await;
    assert_eq!(body["regarding"]["kind"], "CanaryPolicy");
    assert_eq!(body["regarding"]["name"], "fraud-model");
    assert_eq!(body["regarding"]["namespace"], "ml");
    assert_eq!(body["reportingController"], "mlcanary");
    assert_eq!(body["reportingInstance"], "mlcanary-0");
    send.send_response(
        Response::builder()
            .status(StatusCode::CREATED)
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap(),
    );
    body
}

pub(super) async fn no_more_requests(handle: &mut ApiHandle) {
    let next = tokio::time::timeout(Duration::from_millis(50), handle.next_request()).await;
    assert!(
        next.is_err(),
        "unexpected request {:?}",
        next.ok().flatten().map(|r| r.0.uri().clone())
    );
}

#[tokio::test]
async fn a_passing_analysis_steps_forward_writes_status_and_an_event() {
    let (ctx, mut handle) = context(Some(window(1000, 0, 0)), true);
    let obj = Arc::new(policy(Some(at_step_0(0))));
    let server = {
        let obj = obj.clone();
        tokio::spawn(async move {
            let status = expect_status_apply(&mut handle, &obj).await;
            assert_eq!(status["phase"], "Progressing");
            assert_eq!(status["canaryWeightBp"], 1000);
            assert_eq!(status["stepIndex"], 1);
            assert_eq!(status["observedGeneration"], 3);
            assert_eq!(status["lastVerdicts"][0]["name"], "errors");
            assert_eq!(status["lastVerdicts"][0]["verdict"], "pass");
            assert_eq!(status["history"][0]["fromWeightBp"], 500);
            assert_eq!(status["history"][0]["toWeightBp"], 1000);
            // Where the next window starts rides in the status, so a new leader or a restarted
            // controller judges from the same point (a conclusive pass holds no window).
            assert!(status["evidence"]["mark"]["atMs"].as_i64().unwrap() > 0);
            assert!(status["evidence"].get("held").is_none());
            let ev = expect_event(&mut handle).await;
            assert_eq!(ev["type"], "Normal");
            assert_eq!(ev["reason"], "Advanced");
            assert_eq!(ev["action"], "Progress");
            assert_eq!(ev["note"], "advanced 5.00% -> 10.00%");
            no_more_requests(&mut handle).await;
        })
    };
    let action = reconcile(obj.clone(), ctx.clone()).await.unwrap();
    server.await.unwrap();
    assert_eq!(
        action,
        Action::requeue(Duration::from_secs(30)),
        "next look: spec.schedule.interval"
    );
    assert_eq!(ctx.target.canary_percents(), [10]);
    let scrape = ctx.metrics.encode().unwrap();
    assert!(
        scrape.contains(
            r#"mlcanary_controller_canary_weight_bp{policy_namespace="ml",policy="fraud-model"} 1000"#
        ),
        "{scrape}"
    );

    // A reconcile before the interval is over (e.g. the watch event of our own status write) runs
    // no analysis and writes nothing.
    let action = reconcile(obj, ctx.clone()).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(30)));
    assert_eq!(ctx.source.fetches.load(Ordering::SeqCst), 1);
    assert_eq!(ctx.target.canary_percents(), [10]);
}

#[tokio::test]
async fn failed_analyses_at_the_threshold_roll_back() {
    // 1 failed analysis already; 20 % canary errors against none on stable is significant.
    let (ctx, mut handle) = context(Some(window(2000, 0, 400)), true);
    let obj = Arc::new(policy(Some(at_step_0(1))));
    let server = {
        let obj = obj.clone();
        tokio::spawn(async move {
            let status = expect_status_apply(&mut handle, &obj).await;
            assert_eq!(status["phase"], "RolledBack");
            assert_eq!(status["canaryWeightBp"], 0);
            assert_eq!(status["failedChecks"], 2);
            assert_eq!(status["lastVerdicts"][0]["verdict"], "fail");
            let cond = &status["conditions"][0];
            assert_eq!(cond["type"], "Progressing");
            assert_eq!(cond["status"], "False");
            assert_eq!(cond["reason"], "RolledBack");
            let failed = expect_event(&mut handle).await;
            assert_eq!(failed["type"], "Warning");
            assert_eq!(failed["reason"], "AnalysisFailed");
            let rb = expect_event(&mut handle).await;
            assert_eq!(rb["type"], "Warning");
            assert_eq!(rb["reason"], "RolledBack");
            assert_eq!(rb["action"], "Rollback");
            assert!(
                rb["note"]
                    .as_str()
                    .unwrap()
                    .starts_with("rolled back from 5.00%: 2 consecutive failed analyses"),
                "{rb}"
            );
            no_more_requests(&mut handle).await;
        })
    };
    reconcile(obj, ctx.clone()).await.unwrap();
    server.await.unwrap();
    assert_eq!(
        ctx.target.canary_percents(),
        [0],
        "all traffic back on stable"
    );
    let scrape = ctx.metrics.encode().unwrap();
    assert!(
        scrape.contains(
            r#"mlcanary_controller_rollbacks_total{policy_namespace="ml",policy="fraud-model"} 1"#
        ),
        "{scrape}"
    );
}

#[tokio::test]
async fn an_invalid_spec_fails_with_the_field_and_applies_nothing() {
    let (ctx, mut handle) = context(Some(window(1000, 0, 0)), true);
    let mut p = policy(Some(at_step_0(0)));
    p.spec.schedule.steps = Some(vec![5, 10, 5]);
    let obj = Arc::new(p);
    let server = {
        let obj = obj.clone();
        tokio::spawn(async move {
            let status = expect_status_apply(&mut handle, &obj).await;
            assert_eq!(status["phase"], "Failed");
            assert_eq!(
                status["canaryWeightBp"], 500,
                "the weight in effect is untouched"
            );
            let cond = &status["conditions"][0];
            assert_eq!(cond["reason"], "InvalidSpec");
            assert!(
                cond["message"]
                    .as_str()
                    .unwrap()
                    .contains("spec.schedule.steps[2]"),
                "{cond}"
            );
            let ev = expect_event(&mut handle).await;
            assert_eq!(ev["type"], "Warning");
            assert_eq!(ev["reason"], "InvalidSpec");
            assert!(ev["note"]
                .as_str()
                .unwrap()
                .contains("spec.schedule.steps[2]"));
            no_more_requests(&mut handle).await;
            handle
        })
    };
    let action = reconcile(obj.clone(), ctx.clone()).await.unwrap();
    let mut handle = server.await.unwrap();
    assert_eq!(action, Action::requeue(INVALID_RECHECK));
    assert_eq!(ctx.source.fetches.load(Ordering::SeqCst), 0, "no analysis");
    assert!(ctx.target.canary_percents().is_empty(), "nothing applied");

    // Once the status says so, a reconcile of the same spec writes nothing and emits nothing.
    let mut failed = (*obj).clone();
    let mut s = at_step_0(0);
    s.phase = Phase::Failed;
    failed.status = Some(s);
    let first = plan::plan_invalid(
        &failed,
        &ValidatedPolicy::try_from(&*obj).unwrap_err(),
        now(),
    );
    failed.status = first.status;
    reconcile(Arc::new(failed), ctx.clone()).await.unwrap();
    no_more_requests(&mut handle).await;
}

#[tokio::test]
async fn a_follower_writes_nothing() {
    let (ctx, mut handle) = context(Some(window(1000, 0, 0)), false);
    let action = reconcile(Arc::new(policy(Some(at_step_0(0)))), ctx.clone())
        .await
        .unwrap();
    assert_eq!(action, Action::await_change());
    no_more_requests(&mut handle).await;
    assert_eq!(ctx.source.fetches.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn failures_back_off_exponentially_per_policy_and_reset_on_success() {
    let (ctx, mut handle) = context(None, true);
    let obj = Arc::new(policy(Some(at_step_0(0))));
    let err = || Error::Kube(kube::Error::LinesCodecMaxLineLengthExceeded);
    let delays: Vec<Action> = (0..3)
        .map(|_| error_policy(obj.clone(), &err(), ctx.clone()))
        .collect();
    assert_eq!(
        delays,
        [1, 2, 4].map(|s| Action::requeue(Duration::from_secs(s)))
    );
    // Another policy has its own count.
    let mut other = policy(None);
    other.metadata.name = Some("other".into());
    assert_eq!(
        error_policy(Arc::new(other), &err(), ctx.clone()),
        Action::requeue(backoff_delay(1))
    );

    // A successful reconcile (no data: holds, writes its verdict-less status) resets the count.
    let server = {
        let obj = obj.clone();
        tokio::spawn(async move {
            expect_status_apply(&mut handle, &obj).await;
        })
    };
    reconcile(obj.clone(), ctx.clone()).await.unwrap();
    server.await.unwrap();
    assert_eq!(
        error_policy(obj, &err(), ctx),
        Action::requeue(backoff_delay(1))
    );
}

/// `fixture` with the command annotations of `mlcanary promote` etc.
fn with_command(mut p: CanaryPolicy, cmd: &str, id: &str) -> CanaryPolicy {
    p.metadata.annotations = Some(
        [
            (command::COMMAND_ANNOTATION.to_owned(), cmd.to_owned()),
            (command::COMMAND_ID_ANNOTATION.to_owned(), id.to_owned()),
        ]
        .into(),
    );
    p
}

#[tokio::test]
async fn an_operator_command_is_applied_once_at_once_without_an_analysis() {
    let (ctx, mut handle) = context(Some(window(1000, 0, 0)), true);
    let obj = Arc::new(with_command(policy(Some(at_step_0(0))), "promote", "cmd-1"));
    let server = {
        let obj = obj.clone();
        tokio::spawn(async move {
            let status = expect_status_apply(&mut handle, &obj).await;
            assert_eq!(status["phase"], "Promoted");
            assert_eq!(status["canaryWeightBp"], 10000);
            assert_eq!(status["lastCommandId"], "cmd-1");
            assert_eq!(status["observedGeneration"], 3);
            let ev = expect_event(&mut handle).await;
            assert_eq!(ev["reason"], "Promoted");
            assert_eq!(ev["note"], "promoted from 5.00%: promoted by operator");
            no_more_requests(&mut handle).await;
            handle
        })
    };
    let action = reconcile(obj.clone(), ctx.clone()).await.unwrap();
    let mut handle = server.await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(30)));
    assert_eq!(ctx.source.fetches.load(Ordering::SeqCst), 0, "no analysis");
    assert_eq!(
        ctx.target.canary_percents(),
        [100],
        "the split was written before the status"
    );
    let scrape = ctx.metrics.encode().unwrap();
    assert!(
        scrape.contains(
            r#"mlcanary_controller_promotions_total{policy_namespace="ml",policy="fraud-model"} 1"#
        ),
        "{scrape}"
    );

    // The same annotations with the id recorded: nothing to do (a terminal tick changes nothing).
    let mut applied = (*obj).clone();
    let mut s = at_step_0(0);
    s.phase = Phase::Promoted;
    s.canary_weight_bp = 10_000;
    s.last_command_id = Some("cmd-1".into());
    s.observed_generation = Some(3);
    // As it was written: with the kubectl columns.
    let steps = ValidatedPolicy::try_from(&applied).unwrap().steps_bp.len();
    applied.status = Some(s.with_columns(Some(steps)));
    tokio::time::timeout(
        Duration::from_secs(5),
        reconcile(Arc::new(applied), ctx.clone()),
    )
    .await
    .expect("no API request: nothing to write")
    .unwrap();
    no_more_requests(&mut handle).await;
    assert_eq!(ctx.source.fetches.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_command_that_does_not_apply_is_recorded_and_explained() {
    let (ctx, mut handle) = context(Some(window(1000, 0, 0)), true);
    // `resume` on a progressing rollout: nothing changes but the id, and an Event says why.
    let obj = Arc::new(with_command(policy(Some(at_step_0(0))), "resume", "cmd-2"));
    let server = {
        let obj = obj.clone();
        tokio::spawn(async move {
            let status = expect_status_apply(&mut handle, &obj).await;
            assert_eq!(status["phase"], "Progressing");
            assert_eq!(status["canaryWeightBp"], 500);
            assert_eq!(status["lastCommandId"], "cmd-2");
            let ev = expect_event(&mut handle).await;
            assert_eq!(ev["type"], "Normal");
            assert_eq!(ev["reason"], "CommandIgnored");
            assert_eq!(
                ev["note"],
                "resume does not apply: the rollout is Progressing, not paused (id cmd-2)"
            );
            no_more_requests(&mut handle).await;
        })
    };
    reconcile(obj, ctx.clone()).await.unwrap();
    server.await.unwrap();
    assert!(ctx.target.canary_percents().is_empty(), "no traffic write");
}
