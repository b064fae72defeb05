use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{json, Value};
use tower_test::mock;

use super::cluster::{current_view, start_patch, with_client};
use super::*;
use crate::fixtures::AsResource;
use crate::policy::{CanaryPolicy, CanaryPolicyStatus, VerdictStatus};

const POLICY_PATH: &str = "/apis/mlcanary.io/v1alpha1/namespaces/ml/canarypolicies/fraud-model";

/// A scripted `Watch`: each look pops the next answer (the last one repeats).
struct Script(VecDeque<Result<Option<PolicyView>, ClientError>>, usize);

impl Watch for Script {
    async fn look(&mut self, _: &str, _: Option<&str>) -> Result<Option<PolicyView>, ClientError> {
        self.1 += 1;
        if self.0.len() > 1 {
            return self.0.pop_front().unwrap_or(Ok(None));
        }
        match self.0.front() {
            Some(Ok(v)) => Ok(v.clone()),
            Some(Err(e)) => Err(ClientError::Unreachable {
                what: "x".into(),
                reason: e.to_string(),
            }),
            None => Ok(None),
        }
    }
}

fn view(phase: Phase, bp: u32) -> PolicyView {
    PolicyView {
        name: "fraud-model".into(),
        phase,
        canary_weight_bp: bp,
        step_index: Some(1),
        steps_bp: vec![1000, 5000],
        last_verdicts: vec![VerdictStatus {
            name: "errors".into(),
            verdict: "pass".into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[test]
fn outcomes_and_exit_codes() {
    assert_eq!(
        WaitOutcome::of(Phase::Promoted),
        Some(WaitOutcome::Promoted)
    );
    assert_eq!(
        WaitOutcome::of(Phase::RolledBack).map(WaitOutcome::exit_code),
        Some(1)
    );
    assert_eq!(
        WaitOutcome::of(Phase::Failed).map(WaitOutcome::exit_code),
        Some(2)
    );
    assert_eq!(WaitOutcome::of(Phase::Paused), None);
    let t = PipelineError::Timeout {
        policy: "p".into(),
        phase: None,
        canary: Some("img:v2".into()),
        after: Duration::from_secs(1),
    };
    assert_eq!(t.exit_code(), 2);
    assert!(t.to_string().contains("no status was about img:v2"), "{t}");
    assert_eq!(
        progress_line(&view(Phase::Progressing, 5000)),
        "fraud-model Progressing canary=50.00% step=2/2 | errors: pass"
    );
}

#[tokio::test]
async fn wait_follows_progress_until_the_end_and_prints_each_change_once() {
    let mut src = Script(
        VecDeque::from([
            Ok(None),
            Ok(Some(view(Phase::Progressing, 1000))),
            Ok(Some(view(Phase::Progressing, 1000))),
            Err(ClientError::Unreachable {
                what: "api".into(),
                reason: "reset".into(),
            }),
            Ok(Some(view(Phase::Progressing, 5000))),
            Ok(Some(view(Phase::RolledBack, 0))),
        ]),
        0,
    );
    let mut err = Vec::new();
    let o = wait_for(
        &mut src,
        "fraud-model",
        None,
        Duration::from_secs(5),
        Duration::from_millis(1),
        &mut err,
    )
    .await
    .unwrap();
    assert_eq!(o, WaitOutcome::RolledBack);
    let text = String::from_utf8(err).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[0].contains("canary=10.00%"));
    assert!(lines[1].contains("retrying"));
    assert!(lines[2].contains("canary=50.00%"));
    assert!(lines[3].contains("RolledBack canary=0.00%"));
}

#[tokio::test]
async fn wait_times_out_and_stops_on_a_missing_policy() {
    let mut src = Script(
        VecDeque::from([Ok(Some(view(Phase::Progressing, 1000)))]),
        0,
    );
    let e = wait_for(
        &mut src,
        "fraud-model",
        None,
        Duration::from_millis(50),
        Duration::from_millis(10),
        &mut Vec::new(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            e,
            PipelineError::Timeout {
                phase: Some(Phase::Progressing),
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(e.exit_code(), 2);
    assert!(src.1 <= 10, "bounded polling: {} looks", src.1);
    let mut gone = Script(
        VecDeque::from([Err(ClientError::NotFound("x".into())), Ok(None)]),
        0,
    );
    let e = wait_for(
        &mut gone,
        "x",
        None,
        Duration::from_secs(5),
        Duration::from_millis(1),
        &mut Vec::new(),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, PipelineError::Client(ClientError::NotFound(_))));
}

#[test]
fn start_url_and_body() {
    assert_eq!(
        api::start_url("http://127.0.0.1:8080/", None, "fraud-model").unwrap(),
        "http://127.0.0.1:8080/api/policies/fraud-model/start"
    );
    assert_eq!(
        api::start_url("http://h", Some("ml"), "fraud-model").unwrap(),
        "http://h/api/policies/ml/fraud-model/start"
    );
    assert!(api::start_url("http://h", None, "a/b").is_err());
    assert!(api::start_url("http://h", Some("a/b"), "c").is_err());
    assert!(api::start_url("h:1", None, "a").is_err());
    assert_eq!(api::start_body("v2"), json!({"canary": "v2"}));
}

/// Method, path and body of each request a test server saw.
type Seen = Arc<Mutex<Vec<(String, String, String)>>>;

/// A server for the HTTP API contract: answers each request with the scripted (status, body),
/// records method, path and body.
fn api_server(script: Vec<(u16, Value)>) -> (String, Seen, std::thread::JoinHandle<()>) {
    let server = tiny_http::Server::http("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", server.server_addr());
    let seen: Arc<Mutex<Vec<(String, String, String)>>> = Arc::default();
    let rec = seen.clone();
    let t = std::thread::spawn(move || {
        for (status, body) in script {
            let Ok(Some(mut req)) = server.recv_timeout(Duration::from_secs(5)) else {
                return;
            };
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(req.as_reader(), &mut text);
            rec.lock()
                .unwrap()
                .push((req.method().to_string(), req.url().to_owned(), text));
            let _ = req.respond(
                tiny_http::Response::from_string(body.to_string()).with_status_code(status),
            );
        }
    });
    (base, seen, t)
}

#[tokio::test]
async fn http_start_posts_the_canary_and_wait_reads_the_policy() {
    let promoted = serde_json::to_value(view(Phase::Promoted, 10000)).unwrap();
    let (base, seen, t) = api_server(vec![
        (202, json!({"accepted": "start"})),
        (
            200,
            serde_json::to_value(view(Phase::Progressing, 1000)).unwrap(),
        ),
        (200, promoted),
        (404, json!({"error": "no policy named \"nope\""})),
    ]);
    api::start(&base, None, "fraud-model", "v2").await.unwrap();
    let mut w = api::HttpWatch::new(&base, None).unwrap();
    let o = wait_for(
        &mut w,
        "fraud-model",
        None,
        Duration::from_secs(5),
        Duration::from_millis(1),
        &mut Vec::new(),
    )
    .await
    .unwrap();
    assert_eq!(o, WaitOutcome::Promoted);
    let e = api::start(&base, None, "nope", "v2").await.unwrap_err();
    assert_eq!(e.exit_code(), 4, "{e}");
    t.join().unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[0].0, "POST");
    assert_eq!(seen[0].1, "/api/policies/fraud-model/start");
    assert_eq!(
        serde_json::from_str::<Value>(&seen[0].2).unwrap(),
        json!({"canary": "v2"})
    );
    assert_eq!(
        (seen[1].0.as_str(), seen[1].1.as_str()),
        ("GET", "/api/policies/fraud-model")
    );
}

fn obj(spec_version: Option<&str>, status_version: Option<&str>, phase: Phase) -> CanaryPolicy {
    let mut p = CanaryPolicy::test().resource();
    p.spec.target.canary_version = spec_version.map(Into::into);
    p.status = Some(CanaryPolicyStatus {
        phase,
        canary_version: status_version.map(Into::into),
        ..Default::default()
    });
    p
}

#[test]
fn a_status_about_an_earlier_version_is_not_this_rollout() {
    assert!(current_view(&obj(Some("v2"), Some("v1"), Phase::Promoted)).is_none());
    assert!(current_view(&obj(Some("v2"), None, Phase::Promoted)).is_none());
    let v = current_view(&obj(Some("v2"), Some("v2"), Phase::Progressing)).unwrap();
    assert_eq!(v.phase, Phase::Progressing);
    assert!(current_view(&obj(None, None, Phase::Pending)).is_some());
}

#[tokio::test]
async fn cluster_start_patches_the_canary_version_and_wait_reads_until_it_is_rolled_out() {
    let (svc, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(svc, "default");
    let server = tokio::spawn(async move {
        // start: one merge patch of spec.target.canaryVersion.
        let (req, send) = handle.next_request().await.expect("patch");
        assert_eq!(req.method(), Method::PATCH);
        assert_eq!(req.uri().path(), POLICY_PATH);
        assert_eq!(
            req.headers().get("content-type").unwrap(),
            "application/merge-patch+json"
        );
        let bytes = req.into_body().collect_bytes().await.unwrap();
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body, start_patch("v2"));
        let answer = obj(Some("v2"), Some("v1"), Phase::Promoted);
        send.send_response(
            Response::builder()
                .status(StatusCode::OK)
                .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                .unwrap(),
        );
        // wait: the earlier rollout's Promoted must not count; then v2 progresses and is
        // rolled back.
        for o in [
            obj(Some("v2"), Some("v1"), Phase::Promoted),
            obj(Some("v2"), Some("v2"), Phase::Progressing),
            obj(Some("v2"), Some("v2"), Phase::RolledBack),
        ] {
            let (req, send) = handle.next_request().await.expect("get");
            assert_eq!(req.method(), Method::GET);
            assert_eq!(req.uri().path(), POLICY_PATH);
            send.send_response(
                Response::builder()
                    .status(StatusCode::OK)
                    .body(Body::from(serde_json::to_vec(&o).unwrap()))
                    .unwrap(),
            );
        }
    });
    let mut k = with_client(client, Some("ml".into()));
    super::cluster::start(&k, "fraud-model", "v2")
        .await
        .unwrap();
    let mut err = Vec::new();
    let o = wait_for(
        &mut k,
        "fraud-model",
        None,
        Duration::from_secs(5),
        Duration::from_millis(1),
        &mut err,
    )
    .await
    .unwrap();
    assert_eq!(o, WaitOutcome::RolledBack);
    server.await.unwrap();
    let text = String::from_utf8(err).unwrap();
    assert!(!text.contains("Promoted"), "{text}");
}

#[test]
fn the_reconciler_restarts_on_a_new_canary_version() {
    use crate::reconcile::plan::with_new_canary;
    let t = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let mut o = obj(Some("v2"), Some("v1"), Phase::Promoted);
    if let Some(s) = o.status.as_mut() {
        s.canary_weight_bp = 10000;
    }
    let s = with_new_canary(&o, o.status.clone().unwrap(), t);
    assert_eq!(s.phase, Phase::Pending);
    assert_eq!(s.canary_weight_bp, 0);
    assert_eq!(s.canary_version.as_deref(), Some("v2"));
    assert_eq!(
        s.history.last().map(|h| h.reason.as_str()),
        Some("new rollout of v2")
    );
    // The same version: nothing changes.
    let same = obj(Some("v2"), Some("v2"), Phase::Progressing);
    assert_eq!(
        with_new_canary(&same, same.status.clone().unwrap(), t),
        same.status.clone().unwrap()
    );
}

#[test]
fn start_command_restarts_from_a_terminal_phase() {
    let t = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let done = CanaryPolicyStatus {
        phase: Phase::RolledBack,
        failed_checks: 2,
        ..Default::default()
    };
    let out = mlcanary_core::rollout::command(
        &done,
        mlcanary_core::rollout::Command::Start {
            canary: "v3".into(),
        },
        t,
    )
    .expect("start applies in any phase");
    assert_eq!(out.status.phase, Phase::Pending);
    assert_eq!(out.status.failed_checks, 0);
    assert_eq!(out.status.canary_version.as_deref(), Some("v3"));
    assert_eq!(
        out.events,
        vec![mlcanary_core::rollout::RolloutEvent::Restarted {
            canary: "v3".into()
        }]
    );
}

const V1: &str = "ghcr.io/acme/fraud-model:v1";
const V2: &str = "ghcr.io/acme/fraud-model:v2";

fn view_of_version(version: &str, phase: Phase) -> PolicyView {
    PolicyView {
        canary_version: Some(version.into()),
        ..view(phase, if phase == Phase::Promoted { 10000 } else { 0 })
    }
}

#[test]
fn about_keeps_only_a_view_of_the_awaited_version() {
    let v1 = view_of_version(V1, Phase::Promoted);
    assert_eq!(about(v1.clone(), None), Some(v1.clone()));
    assert_eq!(about(v1.clone(), Some(V2)), None);
    assert_eq!(about(view(Phase::Promoted, 10000), Some(V2)), None);
    assert_eq!(about(v1.clone(), Some(V1)), Some(v1));
}

/// A mocked API server answering each GET of the policy with the next object (until the client
/// goes away).
fn serve_gets(objs: Vec<CanaryPolicy>) -> (kube::Client, tokio::task::JoinHandle<()>) {
    let (svc, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(async move {
        for o in objs {
            let Some((req, send)) = handle.next_request().await else {
                return;
            };
            assert_eq!(req.method(), Method::GET);
            assert_eq!(req.uri().path(), POLICY_PATH);
            send.send_response(
                Response::builder()
                    .status(StatusCode::OK)
                    .body(Body::from(serde_json::to_vec(&o).unwrap()))
                    .unwrap(),
            );
        }
    });
    (kube::Client::new(svc, "default"), server)
}

#[tokio::test]
async fn wait_canary_ignores_the_previous_promotion_and_reports_the_new_rollback() {
    // A `deploymentRef` target: the spec names no version; the status names the template's image.
    // The first two reads come before the controller noticed the new template.
    let (client, server) = serve_gets(vec![
        obj(None, Some(V1), Phase::Promoted),
        obj(None, Some(V1), Phase::Promoted),
        obj(None, Some(V2), Phase::Progressing),
        obj(None, Some(V2), Phase::RolledBack),
    ]);
    let mut k = with_client(client, Some("ml".into()));
    let mut err = Vec::new();
    let o = wait_for(
        &mut k,
        "fraud-model",
        Some(V2),
        Duration::from_secs(5),
        Duration::from_millis(1),
        &mut err,
    )
    .await
    .unwrap();
    server.await.unwrap();
    assert_eq!(o, WaitOutcome::RolledBack);
    assert_eq!(o.exit_code(), 1);
    let text = String::from_utf8(err).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        format!("fraud-model: waiting for the rollout of {V2} to begin"),
        "{text}"
    );
    assert!(!text.contains("Promoted"), "{text}");
    assert!(lines.last().unwrap().contains("RolledBack"), "{text}");

    // Without --canary the stale status is all there is to go by: it reads as the verdict.
    let (client, server) = serve_gets(vec![obj(None, Some(V1), Phase::Promoted)]);
    let mut k = with_client(client, Some("ml".into()));
    let o = wait_for(
        &mut k,
        "fraud-model",
        None,
        Duration::from_secs(5),
        Duration::from_millis(1),
        &mut Vec::new(),
    )
    .await
    .unwrap();
    server.await.unwrap();
    assert_eq!(o, WaitOutcome::Promoted);
}

#[tokio::test]
async fn wait_canary_times_out_when_no_rollout_of_it_begins() {
    let (client, _server) = serve_gets(vec![obj(None, Some(V1), Phase::Promoted); 100]);
    let mut k = with_client(client, Some("ml".into()));
    let e = wait_for(
        &mut k,
        "fraud-model",
        Some(V2),
        Duration::from_millis(30),
        Duration::from_millis(5),
        &mut Vec::new(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&e, PipelineError::Timeout { phase: None, canary: Some(c), .. } if c == V2),
        "{e}"
    );
    assert_eq!(e.exit_code(), 2);
}

#[tokio::test]
async fn http_wait_canary_reads_the_views_canary_version() {
    let json = |v: PolicyView| serde_json::to_value(v).unwrap();
    let (base, seen, t) = api_server(vec![
        (200, json(view_of_version(V1, Phase::Promoted))),
        (200, json(view_of_version(V2, Phase::Progressing))),
        (200, json(view_of_version(V2, Phase::RolledBack))),
    ]);
    let mut w = api::HttpWatch::new(&base, Some("ml".into())).unwrap();
    let mut err = Vec::new();
    let o = wait_for(
        &mut w,
        "fraud-model",
        Some(V2),
        Duration::from_secs(5),
        Duration::from_millis(1),
        &mut err,
    )
    .await
    .unwrap();
    t.join().unwrap();
    assert_eq!(o, WaitOutcome::RolledBack);
    let text = String::from_utf8(err).unwrap();
    assert!(!text.contains("Promoted"), "{text}");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    assert!(seen
        .iter()
        .all(|(m, path, _)| m == "GET" && path == "/api/policies/ml/fraud-model"));
}

#[test]
fn wait_takes_canary_and_refuses_an_empty_one() {
    use crate::cli::{Cli, Command};
    use clap::Parser;
    let cli = Cli::try_parse_from([
        "mlcanary",
        "wait",
        "fraud-model",
        "-n",
        "ml",
        "--canary",
        V2,
        "--timeout",
        "45m",
    ])
    .unwrap();
    let Command::Wait(args) = cli.command else {
        panic!("not wait: {:?}", cli.command)
    };
    assert_eq!(args.canary.as_deref(), Some(V2));
    assert_eq!(args.timeout, Duration::from_secs(45 * 60));
    // An unset CI variable: refused before any connection.
    let empty = WaitArgs {
        canary: Some(String::new()),
        ..args
    };
    let e = run_wait(&empty).unwrap_err();
    assert_eq!(e.exit_code(), 2, "{e}");
}
