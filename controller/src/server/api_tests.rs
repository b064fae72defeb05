//! The status page and its API on a real socket: the page and its assets, the JSON views, and
//! commands answered by a stand-in loop.

use std::time::{Duration, SystemTime};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::policy::{CanaryPolicy, CanaryPolicyStatus, Phase, PolicyKey};
use crate::ui::{CommandRefused, CommandRequest};
use mlcanary_core::rollout;
use mlcanary_core::rollout::{Command, RolloutEvent};

/// A server on 127.0.0.1:0 with `ui`; also used by the metrics/health tests.
pub(super) async fn start(ui: Ui) -> (std::net::SocketAddr, Arc<ServerState>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = Arc::new(ServerState {
        metrics: Arc::new(ControllerMetrics::new()),
        health: Arc::new(Health::new(Duration::from_secs(30))),
        ui: Arc::new(ui),
    });
    tokio::spawn(serve(listener, state.clone()));
    (addr, state)
}

/// `(status code, content type, body)` of one request.
pub(super) async fn call(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a response head");
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    let ctype = head
        .lines()
        .find_map(|l| l.strip_prefix("content-type: "))
        .unwrap_or_default()
        .to_owned();
    (code, ctype, body.to_owned())
}

async fn json(addr: std::net::SocketAddr, method: &str, path: &str) -> (u16, Value) {
    let (code, ctype, body) = call(addr, method, path).await;
    assert_eq!(ctype, "application/json", "{method} {path}: {body}");
    (code, serde_json::from_str(&body).expect("JSON body"))
}

fn progressing() -> CanaryPolicyStatus {
    CanaryPolicyStatus {
        phase: Phase::Progressing,
        canary_weight_bp: 1000,
        step_index: Some(1),
        ..Default::default()
    }
}

#[tokio::test]
async fn the_page_and_its_assets_are_served_by_the_controller() {
    let (addr, _) = start(Ui::new()).await;
    let (code, ctype, body) = call(addr, "GET", "/").await;
    assert_eq!((code, ctype.as_str()), (200, "text/html; charset=utf-8"));
    assert!(body.contains(r#"<script src="/ui/app.js">"#), "{body}");
    let (code, ctype, js) = call(addr, "GET", "/ui/app.js").await;
    assert_eq!(
        (code, ctype.as_str()),
        (200, "text/javascript; charset=utf-8")
    );
    assert!(js.contains("/api/policies"));
    let (code, ctype, _) = call(addr, "GET", "/ui/app.css").await;
    assert_eq!((code, ctype.as_str()), (200, "text/css; charset=utf-8"));
    assert_eq!(call(addr, "GET", "/ui/nope.js").await.0, 404);
}

#[tokio::test]
async fn the_api_lists_policies_and_their_series() {
    let (addr, state) = start(Ui::new()).await;
    assert_eq!(
        json(addr, "GET", "/api/policies").await,
        (200, Value::Array(vec![]))
    );
    let p = CanaryPolicy::test().validated();
    state.ui.record(
        "ml",
        &p,
        &progressing(),
        None,
        &[RolloutEvent::Advanced {
            from_bp: 500,
            to_bp: 1000,
        }],
        SystemTime::UNIX_EPOCH + Duration::from_secs(60),
    );
    let (code, list) = json(addr, "GET", "/api/policies").await;
    assert_eq!(code, 200);
    assert_eq!(list[0]["name"], "fraud-model");
    assert_eq!(list[0]["canaryWeightBp"], 1000);
    assert!(list[0].get("series").is_none());
    let (code, one) = json(addr, "GET", "/api/policies/fraud-model").await;
    assert_eq!(code, 200);
    assert_eq!(one["stepIndex"], 1);
    assert_eq!(one["series"]["weight"][0]["t"], 60_000);
    assert_eq!(one["series"]["events"][0]["kind"], "advanced");
    let (code, err) = json(addr, "GET", "/api/policies/churn").await;
    assert_eq!(code, 404);
    assert_eq!(err["error"], "no policy \"churn\"");
}

/// Same-named policies of two namespaces are two policies: each has its own path, and the bare
/// name is refused as ambiguous, naming both namespaces.
#[tokio::test]
async fn the_api_names_policies_by_namespace() {
    let (addr, state) = start(Ui::new()).await;
    let prod = CanaryPolicy::test().validated();
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(60);
    state.ui.record("ml", &prod, &progressing(), None, &[], at);
    let (code, one) = json(addr, "GET", "/api/policies/fraud-model").await;
    assert_eq!(
        (code, one["namespace"].as_str()),
        (200, Some("ml")),
        "unique"
    );
    let mut staging = prod.clone();
    staging.namespace = Some("staging".into());
    let held = CanaryPolicyStatus {
        canary_weight_bp: 2500,
        ..progressing()
    };
    state.ui.record("staging", &staging, &held, None, &[], at);
    let (code, list) = json(addr, "GET", "/api/policies").await;
    assert_eq!((code, list.as_array().map(Vec::len)), (200, Some(2)));
    let (code, err) = json(addr, "GET", "/api/policies/fraud-model").await;
    assert_eq!(code, 409);
    assert_eq!(
        err["error"],
        "fraud-model: policies of that name are in namespaces ml, staging: name one (NAMESPACE/NAME)"
    );
    let (_, ml) = json(addr, "GET", "/api/policies/ml/fraud-model").await;
    let (_, st) = json(addr, "GET", "/api/policies/staging/fraud-model").await;
    assert_eq!(
        (ml["canaryWeightBp"].as_u64(), st["canaryWeightBp"].as_u64()),
        (Some(1000), Some(2500))
    );
    assert_eq!(
        json(addr, "GET", "/api/policies/prod/fraud-model").await.0,
        404
    );
    let (code, _) = json(addr, "POST", "/api/policies/fraud-model/pause").await;
    assert_eq!(code, 501, "kube mode: commands go through the cluster");
}

#[tokio::test]
async fn kube_mode_answers_commands_with_501() {
    let (addr, _) = start(Ui::new()).await;
    let (code, err) = json(addr, "POST", "/api/policies/fraud-model/pause").await;
    assert_eq!(code, 501);
    assert_eq!(err["error"], "use kubectl/mlcanary against the cluster");
}

/// A loop that knows one policy at `status` and applies commands as the local loop does.
async fn stand_in_loop(mut rx: tokio::sync::mpsc::Receiver<CommandRequest>) {
    let mut status = progressing();
    while let Some(req) = rx.recv().await {
        let answer = if req.policy != PolicyKey::new("ml", "fraud-model") {
            Err(CommandRefused::UnknownPolicy)
        } else {
            rollout::command(&status, req.command, SystemTime::UNIX_EPOCH)
                .map(|out| status = out.status)
                .map_err(|e| CommandRefused::NotApplicable(e.to_string()))
        };
        let _ = req.reply.send(answer);
    }
}

#[tokio::test]
async fn local_mode_applies_commands_and_refuses_what_does_not_apply() {
    let (ui, rx) = Ui::with_commands();
    tokio::spawn(stand_in_loop(rx));
    let (addr, state) = start(ui).await;
    let p = CanaryPolicy::test().validated();
    state
        .ui
        .register("ml", &p, &progressing(), SystemTime::UNIX_EPOCH);
    let (code, body) = json(addr, "POST", "/api/policies/fraud-model/pause").await;
    assert_eq!((code, body["accepted"].as_str()), (202, Some("pause")));
    let (code, body) = json(addr, "POST", "/api/policies/fraud-model/pause").await;
    assert_eq!(code, 409, "already paused: {body}");
    let (code, _) = json(addr, "POST", "/api/policies/ml/fraud-model/abort").await;
    assert_eq!(code, 202);
    let (code, body) = json(addr, "POST", "/api/policies/fraud-model/promote").await;
    assert_eq!(code, 409, "rolled back is terminal: {body}");
    assert_eq!(
        body["error"],
        "promote does not apply: the rollout is RolledBack (finished)"
    );
    let (code, _) = json(addr, "POST", "/api/policies/churn/pause").await;
    assert_eq!(code, 404);
    let (code, body) = json(addr, "POST", "/api/policies/fraud-model/rollback").await;
    assert_eq!(code, 404, "{body}");
    assert!(body["error"].as_str().unwrap().contains("unknown command"));
    // The command enum parses from the path through one function.
    assert_eq!(Command::parse("abort", None), Some(Command::Abort));
}
