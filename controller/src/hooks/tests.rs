use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;

use super::*;
use mlcanary_core::fixtures::{webhook as hook, with_webhooks as policy_with};

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
