use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::*;
use crate::policy::{CanaryPolicy, Phase, WebhookSpec};

/// A webhook receiver on 127.0.0.1: answers the scripted `(status, delay)` per request (the last
/// one repeats) and records each request's path and JSON body. Stops after `max` requests or when
/// dropped (bounded: `recv_timeout`).
pub(crate) struct HookServer {
    pub base: String,
    pub received: Arc<Mutex<Vec<(String, Value)>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HookServer {
    pub fn start(script: Vec<(u16, u64)>) -> Self {
        let server = tiny_http::Server::http("127.0.0.1:0").expect("bind 127.0.0.1");
        let base = format!("http://{}", server.server_addr());
        let received: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (rec, stop2) = (received.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut k = 0usize;
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) && k < 200 {
                let Ok(Some(mut req)) = server.recv_timeout(Duration::from_millis(50)) else {
                    continue;
                };
                let mut body = String::new();
                let _ = std::io::Read::read_to_string(req.as_reader(), &mut body);
                let json = serde_json::from_str(&body).unwrap_or(Value::Null);
                rec.lock().unwrap().push((req.url().to_owned(), json));
                let (status, delay) = script[k.min(script.len() - 1)];
                k += 1;
                std::thread::sleep(Duration::from_millis(delay));
                let _ =
                    req.respond(tiny_http::Response::from_string("{}").with_status_code(status));
            }
        });
        HookServer {
            base,
            received,
            stop,
            thread: Some(thread),
        }
    }

    pub fn bodies(&self) -> Vec<(String, Value)> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for HookServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub(crate) fn hook(name: &str, type_: &str, url: &str) -> WebhookSpec {
    WebhookSpec {
        name: name.into(),
        type_: type_.into(),
        url: url.into(),
        timeout: Some("300ms".into()),
        retries: Some(1),
    }
}

fn policy_with(hooks: Vec<WebhookSpec>) -> ValidatedPolicy {
    let mut p = CanaryPolicy::test()
        .only_error_rate(0.01)
        .no_pauses()
        .failure_threshold(2);
    p.0.spec.webhooks = hooks;
    p.validated()
}

#[test]
fn webhooks_validate_with_field_names() {
    let p = policy_with(vec![hook("gate", "preRollout", "http://127.0.0.1:1/x")]);
    assert_eq!(p.webhooks[0].kind, HookKind::PreRollout);
    assert_eq!(p.webhooks[0].timeout, Duration::from_millis(300));
    let err = |h: Vec<WebhookSpec>| {
        let mut p = CanaryPolicy::test().only_error_rate(0.01).no_pauses();
        p.0.spec.webhooks = h;
        ValidatedPolicy::try_from(&p.0).unwrap_err().field
    };
    assert_eq!(
        err(vec![hook("a", "preDeploy", "http://x")]),
        "spec.webhooks[0].type"
    );
    assert_eq!(
        err(vec![hook("a", "step", "ftp://x")]),
        "spec.webhooks[0].url"
    );
    assert_eq!(
        err(vec![
            hook("a", "step", "http://x"),
            hook("a", "event", "http://y")
        ]),
        "spec.webhooks[1].name"
    );
    let mut slow = hook("a", "step", "http://x");
    slow.retries = Some(11);
    assert_eq!(err(vec![slow]), "spec.webhooks[0].retries");
    let mut t = hook("a", "step", "http://x");
    t.timeout = Some("soon".into());
    assert_eq!(err(vec![t]), "spec.webhooks[0].timeout");
}

#[test]
fn the_planner_fires_step_rollback_and_event_hooks() {
    let p = policy_with(vec![
        hook("s", "step", "http://h/s"),
        hook("r", "rollback", "http://h/r"),
        hook("e", "event", "http://h/e"),
        hook("g", "confirmPromotion", "http://h/g"),
    ]);
    let names = |events: &[RolloutEvent]| -> Vec<String> {
        notifications(&p, events)
            .iter()
            .map(|(h, e)| format!("{}:{}", h.name, event_name(e)))
            .collect()
    };
    assert_eq!(
        names(&[RolloutEvent::Advanced {
            from_bp: 500,
            to_bp: 1000
        }]),
        ["s:Advanced", "e:Advanced"]
    );
    assert_eq!(
        names(&[
            RolloutEvent::AnalysisFailed {
                consecutive: 2,
                threshold: 2,
                checks: vec!["errors".into()]
            },
            RolloutEvent::RolledBack {
                from_bp: 1000,
                reason: "x".into()
            }
        ]),
        ["e:AnalysisFailed", "r:RolledBack", "e:RolledBack"]
    );
    assert!(names(&[RolloutEvent::Held(crate::rollout::Hold::NoConclusiveData)]).is_empty());
    assert_eq!(
        names(&[RolloutEvent::Promoted { from_bp: 5000 }]),
        ["e:Promoted"]
    );
}

#[test]
fn payload_carries_policy_step_and_verdicts() {
    let p = policy_with(vec![hook("s", "step", "http://h/s")]);
    let status = CanaryPolicyStatus {
        phase: Phase::Progressing,
        canary_weight_bp: 1000,
        step_index: Some(1),
        canary_version: Some("v2".into()),
        ..Default::default()
    };
    let v = VerdictStatus {
        name: "errors".into(),
        verdict: "pass".into(),
        n_canary: 120,
        n_stable: 2000,
        message: "ok".into(),
        ..Default::default()
    };
    let body = payload(
        &p,
        HookKind::Step,
        &status,
        Some(&RolloutEvent::Advanced {
            from_bp: 500,
            to_bp: 1000,
        }),
        &[v],
    );
    assert_eq!(body["name"], "fraud-model");
    assert_eq!(body["namespace"], "ml");
    assert_eq!(body["type"], "step");
    assert_eq!(body["phase"], "Progressing");
    assert_eq!(body["canaryWeightBp"], 1000);
    assert_eq!(body["stepIndex"], 1);
    assert_eq!(body["canaryVersion"], "v2");
    assert_eq!(body["event"], "Advanced");
    assert_eq!(body["message"], "canary weight 500 -> 1000 bp");
    assert_eq!(body["verdicts"][0]["name"], "errors");
    assert_eq!(body["verdicts"][0]["nCanary"], 120);
    assert!(body["stepsBp"].is_array());
}

#[test]
fn backoff_doubles_and_is_capped() {
    assert_eq!(send::backoff(1), Duration::from_millis(200));
    assert_eq!(send::backoff(2), Duration::from_millis(400));
    assert_eq!(send::backoff(30), send::BACKOFF_MAX);
}

#[tokio::test]
async fn a_failing_hook_is_retried_until_2xx() {
    let server = HookServer::start(vec![(500, 0), (503, 0), (200, 0)]);
    let mut h = policy_with(vec![hook("n", "event", &format!("{}/notify", server.base))])
        .webhooks
        .remove(0);
    h.retries = 2;
    let body = serde_json::json!({"hello": "world"});
    Sender::new()
        .unwrap()
        .call(&h, &body)
        .await
        .expect("third attempt answers 200");
    let got = server.bodies();
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|(path, b)| path == "/notify" && b == &body));
}

#[tokio::test]
async fn retries_are_bounded_and_timeouts_count_as_failures() {
    let server = HookServer::start(vec![(500, 0)]);
    let h = policy_with(vec![hook("n", "event", &server.base)])
        .webhooks
        .remove(0);
    let e = Sender::new()
        .unwrap()
        .call(&h, &Value::Null)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            HookError::Status {
                status: 500,
                attempts: 2
            }
        ),
        "{e}"
    );
    assert_eq!(server.bodies().len(), 2, "1 + retries attempts");

    let slow = HookServer::start(vec![(200, 1500)]);
    let h = policy_with(vec![hook("n", "event", &slow.base)])
        .webhooks
        .remove(0);
    let started = std::time::Instant::now();
    let e = Sender::new()
        .unwrap()
        .call(&h, &Value::Null)
        .await
        .unwrap_err();
    // Both attempts timed out (300 ms each) and it gave up: the outcome, not the time it took,
    // which a loaded machine can stretch (printed for the curious).
    assert!(e.to_string().contains("timed out"), "{e}");
    assert!(
        matches!(e, HookError::Transport { attempts: 2, .. }),
        "{e:?}"
    );
    println!("two timed-out attempts in {:?}", started.elapsed());
}

#[tokio::test]
async fn an_unreachable_hook_fails_after_its_attempts() {
    // Bind then drop: nothing listens on the port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let h = policy_with(vec![hook(
        "n",
        "event",
        &format!("http://127.0.0.1:{port}"),
    )])
    .webhooks
    .remove(0);
    let e = Sender::new()
        .unwrap()
        .call(&h, &Value::Null)
        .await
        .unwrap_err();
    assert!(matches!(e, HookError::Transport { attempts: 2, .. }), "{e}");
}

#[test]
fn pure_gate_refusals() {
    use crate::rollout::gates::{refuse, Gate};
    let p = policy_with(vec![]);
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let pending = CanaryPolicyStatus::default();
    let once = refuse(
        &pending,
        None,
        &p,
        t,
        Gate::PreRollout,
        "smoke",
        "answered 500",
    );
    assert_eq!(once.status.phase, Phase::Pending);
    assert_eq!(once.status.canary_weight_bp, 0);
    assert_eq!(once.status.failed_checks, 1);
    let c = &once.status.conditions[0];
    assert_eq!(c.reason, "PreRolloutWebhookFailed");
    assert!(c.message.contains("smoke"), "{}", c.message);
    let twice = refuse(
        &once.status,
        None,
        &p,
        t,
        Gate::PreRollout,
        "smoke",
        "answered 500",
    );
    assert_eq!(twice.status.phase, Phase::RolledBack);
    assert_eq!(twice.status.canary_weight_bp, 0);
    assert!(twice.status.history.is_empty(), "no traffic ever moved");
}
