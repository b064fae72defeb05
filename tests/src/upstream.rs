//! A small upstream standing for one model variant: answers with its name and the variant tag it
//! received, and fails a chosen share of requests with 500.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use tiny_http::{Header, Response, Server};

pub struct Upstream {
    pub name: String,
    pub port: u16,
    /// Share of requests answered with 500, per mille.
    pub fail_per_mille: Arc<AtomicU32>,
    /// Requests served so far.
    pub served: Arc<AtomicU64>,
    /// A fixed reply body (e.g. a TF Serving `:predict` reply) instead of the default one.
    pub body: Arc<std::sync::Mutex<Option<String>>>,
    server: Arc<Server>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Upstream {
    pub fn start(name: &str) -> Upstream {
        let server = Arc::new(Server::http("127.0.0.1:0").expect("bind upstream on 127.0.0.1"));
        let port = server
            .server_addr()
            .to_ip()
            .map(|a| a.port())
            .expect("upstream port");
        let fail_per_mille = Arc::new(AtomicU32::new(0));
        let served = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let body = Arc::new(std::sync::Mutex::new(None));
        let threads = (0..4)
            .map(|_| {
                let (server, name) = (server.clone(), name.to_string());
                let (fail, served, stop, body) = (
                    fail_per_mille.clone(),
                    served.clone(),
                    stop.clone(),
                    body.clone(),
                );
                std::thread::spawn(move || serve(&server, &name, &fail, &served, &stop, &body))
            })
            .collect();
        Upstream {
            name: name.into(),
            port,
            fail_per_mille,
            served,
            body,
            server,
            stop,
            threads,
        }
    }

    pub fn set_fail_per_mille(&self, v: u32) {
        self.fail_per_mille.store(v, Ordering::SeqCst);
    }

    /// Answer with `body` from now on (`None`: the default `served_by` JSON).
    pub fn set_body(&self, body: Option<&str>) {
        if let Ok(mut b) = self.body.lock() {
            *b = body.map(str::to_string);
        }
    }
}

fn serve(
    server: &Server,
    name: &str,
    fail: &AtomicU32,
    served: &AtomicU64,
    stop: &AtomicBool,
    fixed: &std::sync::Mutex<Option<String>>,
) {
    while !stop.load(Ordering::SeqCst) {
        let Ok(Some(req)) = server.recv_timeout(std::time::Duration::from_millis(100)) else {
            continue;
        };
        let n = served.fetch_add(1, Ordering::SeqCst);
        let tag = req
            .headers()
            .iter()
            .find(|h| h.field.equiv("x-mlcanary-variant"))
            .map(|h| h.value.as_str().to_string())
            .unwrap_or_default();
        // Deterministic failure pattern: exactly `fail` of every 1000 requests.
        let f = u64::from(fail.load(Ordering::SeqCst));
        let status = if (n % 1000) * f / 1000 != ((n % 1000) + 1) * f / 1000 {
            500
        } else {
            200
        };
        let fixed = fixed.lock().ok().and_then(|b| b.clone());
        let body =
            fixed.unwrap_or_else(|| format!("{{\"served_by\":\"{name}\",\"tag\":\"{tag}\"}}"));
        let ct = Header::from_bytes("content-type", "application/json").expect("static header");
        let _ = req.respond(
            Response::from_string(body)
                .with_status_code(status)
                .with_header(ct),
        );
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.server.unblock();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
