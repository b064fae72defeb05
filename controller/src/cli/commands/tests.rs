//! The rollout commands against both backends: a tiny HTTP server on 127.0.0.1 that serves the
//! `/api/policies` contract (and records what it was asked), and a mocked API server
//! (`tower_test::mock::pair`) that checks the verb, path, content type and body of every request.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use clap::Parser;
use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};
use tower_test::mock::{self, Handle};

use super::*;
use crate::cli::{run, Cli};
use crate::fixtures::AsResource;
use crate::policy::{CanaryPolicy, CanaryPolicyStatus, Phase};
use crate::reconcile::command::{
    pending, Pending, COMMAND_ANNOTATION, COMMAND_CANARY_ANNOTATION, COMMAND_ID_ANNOTATION,
};

// ---- HTTP backend --------------------------------------------------------------------------

/// A policy as the HTTP API serves it (the contract, written out by hand).
fn view_json(name: &str, phase: &str, bp: u32, step: Option<u32>) -> Value {
    json!({
        "name": name,
        "namespace": "ml",
        "phase": phase,
        "canaryWeightBp": bp,
        "stepIndex": step,
        "stepsBp": [500, 1000, 2500, 5000],
        "failedChecks": 0,
        "failureThreshold": 2,
        "lastVerdicts": [{
            "name": "errors", "verdict": "pass", "canary": 0.001, "stable": 0.002,
            "threshold": 0.01, "nCanary": 812, "nStable": 7311, "pValue": 0.61, "message": ""
        }],
        "history": [{"time": "2025-11-25T14:40:02Z", "fromWeightBp": 1000, "toWeightBp": bp,
                     "reason": "analysis passed"}],
        "conditions": [{"type": "Progressing", "status": "True", "reason": "Started",
                        "message": "first step"}],
        "updated": "2025-11-25T14:40:02Z"
    })
}

/// Serves the contract until dropped; records `METHOD path` of every request.
struct FakeServer {
    url: String,
    seen: Arc<Mutex<Vec<String>>>,
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

impl FakeServer {
    fn start() -> Self {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let port = server.server_addr().to_ip().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (server, seen) = (server.clone(), seen.clone());
            std::thread::spawn(move || {
                for req in server.incoming_requests() {
                    let line = format!("{} {}", req.method(), req.url());
                    seen.lock().unwrap().push(line.clone());
                    let (code, body) = match line.as_str() {
                        "GET /api/policies" => (
                            200,
                            json!([
                                view_json("fraud-model", "Progressing", 2500, Some(2)),
                                view_json("churn-model", "Promoted", 10000, Some(3)),
                            ]),
                        ),
                        "GET /api/policies/fraud-model" => {
                            let mut v = view_json("fraud-model", "Progressing", 2500, Some(2));
                            v["series"] = json!({"weight": [{"t": 1, "bp": 2500}], "checks": {}, "events": []});
                            (200, v)
                        }
                        "POST /api/policies/fraud-model/promote" => {
                            (202, json!({"accepted": "promote"}))
                        }
                        "POST /api/policies/fraud-model/resume" => (
                            409,
                            json!({"error": "fraud-model is Progressing, not paused"}),
                        ),
                        _ => (404, json!({"error": "no such policy"})),
                    };
                    let resp = tiny_http::Response::from_string(body.to_string())
                        .with_status_code(code)
                        .with_header(
                            tiny_http::Header::from_bytes("content-type", "application/json")
                                .unwrap(),
                        );
                    let _ = req.respond(resp);
                }
            })
        };
        FakeServer {
            url: format!("http://127.0.0.1:{port}"),
            seen,
            server,
            thread: Some(thread),
        }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Run the real command line (clap parsing, own runtime) and capture stdout.
fn cli(args: &[&str]) -> Result<String, CliError> {
    let cli = Cli::try_parse_from(std::iter::once("mlcanary").chain(args.iter().copied()))
        .expect("args parse");
    let mut out = Vec::new();
    run(&cli.command, &mut out)?;
    Ok(String::from_utf8(out).unwrap())
}

#[test]
fn status_over_http_prints_the_table_and_bars() {
    let s = FakeServer::start();
    let out = cli(&["status", "--server", &s.url]).unwrap();
    assert_eq!(
        out,
        "\
NAMESPACE  NAME         PHASE        CANARY  STEP  FAILED  LAST VERDICTS
ml         fraud-model  Progressing  25%     3/4   0/2     errors=pass
ml         churn-model  Promoted     100%    4/4   0/2     errors=pass

ml/fraud-model  [■■■□] 25% → 50%
ml/churn-model  [■■■■] 100% promoted
"
    );
    // -n filters the server's list; a namespace with none says so.
    let out = cli(&["status", "--server", &s.url, "-n", "other"]).unwrap();
    assert_eq!(out, "no CanaryPolicies found\n");
    assert_eq!(s.seen(), ["GET /api/policies", "GET /api/policies"]);
}

#[test]
fn status_of_one_policy_over_http_in_detail_and_json() {
    let s = FakeServer::start();
    let out = cli(&["status", "fraud-model", "--server", &s.url]).unwrap();
    assert!(out.contains("[■■■□] 25% → 50%"), "{out}");
    assert!(
        out.contains("errors  pass     0.0010  0.0020  0.0100  -         812/7311  0.610"),
        "{out}"
    );
    assert!(out.contains("Progressing (Started): first step"), "{out}");

    let out = cli(&["status", "fraud-model", "--server", &s.url, "-o", "json"]).unwrap();
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["canaryWeightBp"], 2500);
    assert_eq!(v["stepsBp"], json!([500, 1000, 2500, 5000]));
    assert_eq!(v["lastVerdicts"][0]["nCanary"], 812);
    assert!(v.get("series").is_none(), "the view, not the charts");

    let e = cli(&["status", "nope", "--server", &s.url]).unwrap_err();
    assert_eq!(e.exit_code(), 4, "{e}");
    assert!(e.to_string().contains("no such policy"), "{e}");
}

#[test]
fn commands_over_http_post_and_map_answers_to_exit_codes() {
    let s = FakeServer::start();
    let out = cli(&["promote", "fraud-model", "--server", &s.url]).unwrap();
    assert_eq!(out, "promote accepted for fraud-model\n");

    let e = cli(&["resume", "fraud-model", "--server", &s.url]).unwrap_err();
    assert_eq!(e.exit_code(), 1, "409: not applicable");
    assert_eq!(
        e.to_string(),
        "resume refused for fraud-model: fraud-model is Progressing, not paused"
    );

    let e = cli(&["abort", "nope", "--server", &s.url]).unwrap_err();
    assert_eq!(e.exit_code(), 4);
    assert_eq!(
        s.seen(),
        [
            "POST /api/policies/fraud-model/promote",
            "POST /api/policies/fraud-model/resume",
            "POST /api/policies/nope/abort",
        ]
    );
}

#[test]
fn unreachable_and_malformed_servers_have_their_own_exit_codes() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let e = cli(&["status", "--server", &url]).unwrap_err();
    assert_eq!(e.exit_code(), 3, "{e}");
    assert!(
        e.to_string().starts_with("cannot reach http://127.0.0.1:"),
        "{e}"
    );

    let e = cli(&["pause", "x", "--server", "ftp://example.org"]).unwrap_err();
    assert_eq!(e.exit_code(), 2, "{e}");
    let e = cli(&["pause", "x", "--server", "not a url"]).unwrap_err();
    assert_eq!(e.exit_code(), 2, "{e}");
}

#[test]
fn help_documents_the_exit_codes_and_the_backends() {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    let top = cmd.render_help().to_string();
    assert!(top.contains("4  no such policy"), "{top}");
    for sub in ["status", "promote", "abort", "pause", "resume"] {
        assert!(top.contains(sub), "{sub} listed: {top}");
    }
    let status = cmd
        .find_subcommand_mut("status")
        .unwrap()
        .render_long_help()
        .to_string();
    for want in [
        "--server <URL>",
        "--namespace <NS>",
        "--watch",
        "--output",
        "Exit codes:",
    ] {
        assert!(status.contains(want), "{want}: {status}");
    }
    // clap's own usage errors exit 2 as documented.
    let e = Cli::try_parse_from(["mlcanary", "promote"]).unwrap_err();
    assert_eq!(e.exit_code(), 2);
}

// ---- cluster backend (mocked API server) ------------------------------------------------------

type ApiHandle = Handle<Request<Body>, Response<Body>>;

const POLICY_PATH: &str = "/apis/mlcanary.io/v1alpha1/namespaces/ml/canarypolicies/fraud-model";

fn kube_backend() -> (Backend, ApiHandle) {
    let (svc, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(svc, "default");
    (
        Backend::Kube(KubeBackend::new(client, Some("ml".into()))),
        handle,
    )
}

fn policy(phase: Phase, bp: u32, step: Option<u32>) -> CanaryPolicy {
    let mut p = CanaryPolicy::test().resource();
    p.status = Some(CanaryPolicyStatus {
        phase,
        canary_weight_bp: bp,
        step_index: step,
        ..Default::default()
    });
    p
}

fn json_response(code: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

fn not_found() -> Response<Body> {
    json_response(
        StatusCode::NOT_FOUND,
        &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "message": "canarypolicies.mlcanary.io \"fraud-model\" not found",
                "reason": "NotFound", "code": 404}),
    )
}

async fn expect_get(handle: &mut ApiHandle, answer: Response<Body>) {
    let (req, send) = handle.next_request().await.expect("a GET");
    assert_eq!(req.method(), Method::GET);
    assert_eq!(req.uri().path(), POLICY_PATH);
    send.send_response(answer);
}

fn status_args(policy: Option<&str>) -> StatusArgs {
    StatusArgs {
        policy: policy.map(str::to_owned),
        connection: Connection::default(),
        all_namespaces: false,
        output: Output::Table,
        watch: false,
        interval: Duration::from_secs(2),
    }
}

async fn no_more_requests(handle: &mut ApiHandle) {
    let next = tokio::time::timeout(Duration::from_millis(50), handle.next_request()).await;
    assert!(next.is_err(), "unexpected request");
}

#[tokio::test]
async fn a_cluster_command_is_an_annotation_patch_the_reconciler_picks_up() {
    let (backend, mut handle) = kube_backend();
    let obj = policy(Phase::Progressing, 1000, Some(1));
    let server = {
        let obj = obj.clone();
        tokio::spawn(async move {
            expect_get(
                &mut handle,
                json_response(StatusCode::OK, &serde_json::to_value(&obj).unwrap()),
            )
            .await;
            let (req, send) = handle.next_request().await.expect("a PATCH");
            assert_eq!(req.method(), Method::PATCH);
            assert_eq!(req.uri().path(), POLICY_PATH);
            assert_eq!(
                req.uri().query().unwrap_or_default(),
                "",
                "a plain merge patch, no field manager"
            );
            assert_eq!(
                req.headers().get("content-type").unwrap(),
                "application/merge-patch+json"
            );
            let body: Value =
                serde_json::from_slice(&req.into_body().collect_bytes().await.unwrap()).unwrap();
            // Exactly the two annotations: no status, no spec.
            assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
            let annotations = body["metadata"]["annotations"].as_object().unwrap();
            assert_eq!(annotations.len(), 3, "{body}");
            assert_eq!(annotations[COMMAND_ANNOTATION], "pause");
            assert!(
                annotations[COMMAND_CANARY_ANNOTATION].is_null(),
                "a merge-patch null clears a previous start's canary"
            );
            let mut patched = serde_json::to_value(&obj).unwrap();
            let mut kept = body["metadata"]["annotations"].clone();
            kept.as_object_mut()
                .unwrap()
                .remove(COMMAND_CANARY_ANNOTATION);
            patched["metadata"]["annotations"] = kept;
            send.send_response(json_response(StatusCode::OK, &patched));
            no_more_requests(&mut handle).await;
            patched
        })
    };
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let mut out = Vec::new();
    send_command(&backend, Command::Pause, "fraud-model", now, &mut out)
        .await
        .unwrap();
    let patched = server.await.unwrap();
    let id = new_command_id(now);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!(
            "pause requested for ml/fraud-model (command id {id}); the controller applies it at once\n\
             follow it: mlcanary status fraud-model -n ml --watch\n"
        )
    );
    // What the CLI wrote is what the reconciler reads as a new command.
    let patched: CanaryPolicy = serde_json::from_value(patched).unwrap();
    assert_eq!(
        pending(&patched),
        Some(Pending {
            id: id.clone(),
            command: Ok(Command::Pause)
        })
    );
    assert_eq!(
        patched.metadata.annotations.unwrap()[COMMAND_ID_ANNOTATION],
        id
    );
}

#[tokio::test]
async fn a_cluster_command_that_does_not_apply_is_refused_before_any_write() {
    let (backend, mut handle) = kube_backend();
    let obj = policy(Phase::RolledBack, 0, Some(2));
    let server = tokio::spawn(async move {
        expect_get(
            &mut handle,
            json_response(StatusCode::OK, &serde_json::to_value(&obj).unwrap()),
        )
        .await;
        no_more_requests(&mut handle).await;
    });
    let mut out = Vec::new();
    let e = send_command(
        &backend,
        Command::Promote,
        "fraud-model",
        SystemTime::now(),
        &mut out,
    )
    .await
    .unwrap_err();
    server.await.unwrap();
    assert_eq!(e.exit_code(), 1);
    assert_eq!(
        e.to_string(),
        "ml/fraud-model: promote does not apply: the rollout is RolledBack (finished)"
    );
    assert!(out.is_empty());
}

#[tokio::test]
async fn an_unknown_cluster_policy_exits_4() {
    let (backend, mut handle) = kube_backend();
    let server = tokio::spawn(async move {
        expect_get(&mut handle, not_found()).await;
        expect_get(&mut handle, not_found()).await;
    });
    let e = send_command(
        &backend,
        Command::Abort,
        "fraud-model",
        SystemTime::now(),
        &mut Vec::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(e.exit_code(), 4, "{e}");
    let args = status_args(Some("fraud-model"));
    let e = status_once(&backend, &args, &mut Vec::new())
        .await
        .unwrap_err();
    assert_eq!(e.exit_code(), 4, "{e}");
    assert_eq!(e.to_string(), "CanaryPolicy ml/fraud-model: not found");
    server.await.unwrap();
}

#[tokio::test]
async fn cluster_status_lists_the_namespace_with_steps_from_the_spec() {
    let (backend, mut handle) = kube_backend();
    let mut churn = policy(Phase::Paused, 2000, Some(0));
    churn.metadata.name = Some("churn-model".into());
    churn.spec.schedule.steps = Some(vec![20, 40, 60]);
    let list = json!({
        "apiVersion": "mlcanary.io/v1alpha1",
        "kind": "CanaryPolicyList",
        "metadata": {"resourceVersion": "7"},
        "items": [policy(Phase::Progressing, 1000, Some(1)), churn],
    });
    let server = tokio::spawn(async move {
        let (req, send) = handle.next_request().await.expect("a LIST");
        assert_eq!(req.method(), Method::GET);
        assert_eq!(
            req.uri().path(),
            "/apis/mlcanary.io/v1alpha1/namespaces/ml/canarypolicies"
        );
        send.send_response(json_response(StatusCode::OK, &list));
    });
    let args = status_args(None);
    let mut out = Vec::new();
    let done = status_once(&backend, &args, &mut out).await.unwrap();
    server.await.unwrap();
    assert!(!done, "nothing has finished");
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "\
NAMESPACE  NAME         PHASE        CANARY  STEP  FAILED  LAST VERDICTS
ml         fraud-model  Progressing  10%     2/4   0/2     -
ml         churn-model  Paused       20%     1/3   0/2     -

ml/fraud-model  [■■□□] 10% → 25%
ml/churn-model  [■□□] 20% → 40% (paused)
"
    );
}
