//! A traffic generator: customers (stable user ids, each with an age band) sending transactions
//! to the model through Envoy, at a fixed rate, bounded in time and count — and, if the plan
//! says so, the labels learnt later sent back with the replies' tickets (see [`crate::feedback`]).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::data::{age_band_for, transaction, true_fraud_probability, Rng};
use crate::feedback::{self, DueQueue, FeedbackPlan, FeedbackTally, Label, Sender};

/// A reply body larger than this is refused: the model's replies are a few hundred bytes.
const MAX_BODY: usize = 1 << 20;

/// What to send.
#[derive(Debug, Clone)]
pub struct Plan {
    /// `host:port` of the Envoy listener.
    pub target: String,
    /// `Host` header: the model's service name, as in the mesh.
    pub host: String,
    pub model: String,
    pub rps: f64,
    pub duration: Duration,
    pub max_requests: u64,
    pub users: u64,
    pub seed: u64,
    pub workers: usize,
    /// Send labels back through the feedback path; `None`: never.
    pub feedback: Option<FeedbackPlan>,
}

/// Counts by (model version answering, HTTP status class), and the feedback path's.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub by_version: BTreeMap<String, u64>,
    pub errors: u64,
    pub sent: u64,
    pub feedback: FeedbackTally,
}

/// A customer: id and age band, fixed by the user number.
pub fn customer(seed: u64, n: u64) -> (String, &'static str) {
    let mut rng = Rng(seed ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    (format!("customer-{n}"), age_band_for(rng.f64()))
}

/// An answer: status, headers (names in lower case) and body.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

fn invalid(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_string())
}

/// Read a `transfer-encoding: chunked` body (RFC 9112 §7.1): hex sizes with optional extensions,
/// then trailers, which are skipped. At most `limit` bytes of data.
pub fn read_chunked(r: &mut impl BufRead, limit: usize) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(invalid("body ends before its last chunk"));
        }
        let size = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| invalid("bad chunk size"))?;
        if size == 0 {
            break;
        }
        if body.len() + size > limit {
            return Err(invalid("body too large"));
        }
        let at = body.len();
        body.resize(at + size, 0);
        r.read_exact(&mut body[at..])?;
        let mut crlf = [0u8; 2];
        r.read_exact(&mut crlf)?;
        if &crlf != b"\r\n" {
            return Err(invalid("chunk not followed by CRLF"));
        }
    }
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
            return Ok(body);
        }
    }
}

/// Read the body the headers announce: chunked, by content-length, or up to the close.
fn read_body(
    r: &mut impl BufRead,
    headers: &BTreeMap<String, String>,
    closes: bool,
) -> std::io::Result<Vec<u8>> {
    let chunked = headers
        .get("transfer-encoding")
        .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
    if chunked {
        return read_chunked(r, MAX_BODY);
    }
    if let Some(len) = headers.get("content-length") {
        let len: usize = len.parse().map_err(|_| invalid("bad content-length"))?;
        if len > MAX_BODY {
            return Err(invalid("body too large"));
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body)?;
        return Ok(body);
    }
    let mut body = Vec::new();
    if closes {
        r.take(MAX_BODY as u64).read_to_end(&mut body)?;
    }
    Ok(body)
}

/// Whether `e` says the peer had closed the connection before our request.
fn stale(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
    )
}

/// A keep-alive HTTP/1.1 connection that re-connects when the server closes it.
pub(crate) struct Conn {
    target: String,
    timeout: Duration,
    stream: Option<BufReader<TcpStream>>,
}

impl Conn {
    pub(crate) fn new(target: &str, timeout: Duration) -> Conn {
        Conn {
            target: target.to_string(),
            timeout,
            stream: None,
        }
    }

    pub(crate) fn post(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Reply> {
        for attempt in 0..2 {
            if self.stream.is_none() {
                let s = TcpStream::connect(&self.target)?;
                s.set_read_timeout(Some(self.timeout))?;
                // Headers and body go out in two writes: without this, Nagle's algorithm and the
                // peer's delayed ACK add ~40 ms to every request.
                s.set_nodelay(true)?;
                self.stream = Some(BufReader::new(s));
            }
            match self.try_post(path, headers, body) {
                Ok(r) => return Ok(r),
                // A keep-alive connection the server had closed: retry once on a new one. Not
                // after a timeout, which may have been processed (a label sent twice is refused
                // as a replay) and would double the wait.
                Err(e) if attempt == 0 && stale(&e) => self.stream = None,
                Err(e) => {
                    self.stream = None;
                    return Err(e);
                }
            }
        }
        Err(std::io::Error::other("unreachable"))
    }

    fn try_post(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Reply> {
        let s = self
            .stream
            .as_mut()
            .ok_or_else(|| std::io::Error::other("not connected"))?;
        let mut req = format!(
            "POST {path} HTTP/1.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        let w = s.get_mut();
        w.write_all(req.as_bytes())?;
        w.write_all(body)?;
        let mut line = String::new();
        if s.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed",
            ));
        }
        let status = line
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let mut hdrs = BTreeMap::new();
        loop {
            line.clear();
            if s.read_line(&mut line)? == 0 {
                return Err(invalid("headers cut off"));
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                hdrs.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let closes = hdrs
            .get("connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("close"));
        let body = read_body(s, &hdrs, closes)?;
        if closes {
            self.stream = None;
        }
        Ok(Reply {
            status,
            headers: hdrs,
            body,
        })
    }
}

/// What the workers and the label sender share.
#[derive(Default)]
struct Shared {
    tally: Mutex<Tally>,
    labels: Mutex<FeedbackTally>,
    queue: Mutex<DueQueue>,
}

/// Send traffic per `plan` until its duration or count runs out, or `stop` is set; with
/// `plan.feedback`, post the labels alongside, and stop posting when the traffic stops.
pub fn run(plan: &Plan, stop: &AtomicBool) -> Tally {
    let shared = Shared::default();
    let traffic_done = AtomicBool::new(false);
    let start = Instant::now();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..plan.workers.max(1))
            .map(|w| {
                let shared = &shared;
                scope.spawn(move || worker(plan, w, start, stop, shared))
            })
            .collect();
        let sender = plan.feedback.map(|_| {
            let (shared, traffic_done) = (&shared, &traffic_done);
            scope.spawn(move || {
                Sender {
                    conn: Conn::new(&plan.target, Duration::from_secs(5)),
                    path: format!("/v1/models/{}:feedback", plan.model),
                    host: &plan.host,
                }
                .run(&shared.queue, traffic_done, &shared.labels)
            })
        });
        for h in workers {
            let _ = h.join();
        }
        traffic_done.store(true, Ordering::SeqCst);
        if let Some(s) = sender {
            let _ = s.join();
        }
    });
    let mut t = shared.tally.into_inner().unwrap_or_default();
    t.feedback = shared.labels.into_inner().unwrap_or_default();
    t
}

/// Worker `w`'s share of the traffic: one request per `workers / rps` seconds.
fn worker(plan: &Plan, w: usize, start: Instant, stop: &AtomicBool, shared: &Shared) {
    let workers = plan.workers.max(1) as u64;
    let mut rng = Rng(plan.seed.wrapping_add(w as u64 * 7919));
    let mut conn = Conn::new(&plan.target, Duration::from_secs(10));
    let interval = Duration::from_secs_f64(workers as f64 / plan.rps.max(0.1));
    let path = format!("/v1/models/{}:predict", plan.model);
    let mut next = Instant::now();
    let mut i: u64 = 0;
    while !stop.load(Ordering::SeqCst)
        && start.elapsed() < plan.duration
        && i * workers + (w as u64) < plan.max_requests
    {
        i += 1;
        let (user, band) = customer(plan.seed, rng.below(plan.users.max(1)));
        let tx = transaction(&mut rng, band);
        // Drawn before sending, whatever the answer: the same seed, the same labels.
        let truth = plan.feedback.map(|f| {
            let fraud = rng.f64() < true_fraud_probability(&tx);
            (fraud, rng.f64() < f.label_share)
        });
        let body = serde_json::json!({"instances": [tx]}).to_string();
        let headers = [
            ("host", plan.host.as_str()),
            ("x-user-id", user.as_str()),
            ("x-customer-age-band", band),
        ];
        let answer = conn.post(&path, &headers, body.as_bytes());
        if let (Some(f), Some(truth), Ok(r)) = (plan.feedback, truth, &answer) {
            schedule(&f, r, truth, shared);
        }
        if let Ok(mut t) = shared.tally.lock() {
            t.sent += 1;
            match answer {
                Ok(r) if r.status < 500 => {
                    let v = r.headers.get("x-model-version").map_or("?", String::as_str);
                    *t.by_version.entry(format!("v{v}")).or_default() += 1;
                }
                _ => t.errors += 1,
            }
        }
        next += interval;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        } else {
            next = Instant::now();
        }
    }
}

/// Count the reply's ticket and, if the transaction is to be labelled (`truth`: its true label,
/// and whether it gets one), queue its label for when it would be known.
fn schedule(plan: &FeedbackPlan, reply: &Reply, (fraud, labelled): (bool, bool), shared: &Shared) {
    if reply.status != 200 {
        return;
    }
    let info = feedback::reply_info(&reply.body);
    let (Some(ticket), Some(score)) = (info.ticket, info.score) else {
        return;
    };
    if let Ok(mut l) = shared.labels.lock() {
        l.tickets += 1;
    }
    if !labelled {
        return;
    }
    if let Ok(mut q) = shared.queue.lock() {
        q.push(
            plan.due(Instant::now(), score >= 0.5),
            Label { ticket, fraud },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::sync::Arc;

    #[test]
    fn customers_keep_their_age_band() {
        for n in 0..100 {
            assert_eq!(customer(1, n), customer(1, n));
        }
        let elderly = (0..10_000).filter(|&n| customer(1, n).1 == "60+").count();
        assert!(
            (1_700..2_300).contains(&elderly),
            "{elderly} of 10000 aged 60+"
        );
    }

    #[test]
    fn chunked_bodies_are_decoded_and_bounded() {
        let wire = b"7\r\n{\"a\": 1\r\n3;ext=1\r\n2}\n\r\n0\r\ntrailer: x\r\n\r\nNEXT";
        let mut r = std::io::Cursor::new(&wire[..]);
        assert_eq!(read_chunked(&mut r, 100).unwrap(), b"{\"a\": 12}\n");
        let mut rest = String::new();
        r.read_to_string(&mut rest).unwrap();
        assert_eq!(
            rest, "NEXT",
            "the next response starts right after the trailers"
        );
        let bad: [&[u8]; 4] = [
            b"zz\r\nab\r\n0\r\n\r\n",
            b"5\r\nab",
            b"2\r\nabXX0\r\n\r\n",
            b"2\r\nab\r\n",
        ];
        for wire in bad {
            assert!(read_chunked(&mut &wire[..], 100).is_err(), "{wire:?}");
        }
        assert!(read_chunked(&mut &b"5\r\nabcde\r\n0\r\n\r\n"[..], 4).is_err());
    }

    #[test]
    fn replies_with_a_content_length_keep_their_body() {
        let model = crate::trained(crate::model::Version::V2);
        let opts = crate::server::Options {
            model_name: "fraud".into(),
            fail_per_mille: 0,
            delay: Duration::ZERO,
        };
        let s = crate::server::serve("127.0.0.1:0", model, opts, 1).unwrap();
        let mut conn = Conn::new(&format!("127.0.0.1:{}", s.port), Duration::from_secs(5));
        let tx = serde_json::json!({"instances": [{"amount": 950.0, "hour": 3,
            "merchant_category": "electronics", "foreign": true, "age_band": "31-60"}]});
        for _ in 0..2 {
            let r = conn
                .post("/v1/models/fraud:predict", &[], tx.to_string().as_bytes())
                .unwrap();
            assert!(r.headers.contains_key("content-length"));
            let info = feedback::reply_info(&r.body);
            assert!(info.score.is_some_and(|p| p > 0.5) && info.ticket.is_none());
        }
    }

    /// A stand-in for Envoy with the filter: tickets on chunked replies, and a feedback path
    /// that records the labels it gets.
    fn fake_envoy() -> (u16, Arc<Mutex<Vec<Value>>>, impl FnOnce()) {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let port = server.server_addr().to_ip().unwrap().port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (srv, labels, halt) = (server.clone(), got.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut n = 0;
            while !halt.load(Ordering::SeqCst) {
                let Ok(Some(mut req)) = srv.recv_timeout(Duration::from_millis(20)) else {
                    continue;
                };
                let mut body = Vec::new();
                req.as_reader().read_to_end(&mut body).unwrap();
                let reply = if req.url().ends_with(":feedback") {
                    let v: Value = serde_json::from_slice(&body).unwrap();
                    let items = v["feedback"].as_array().unwrap().clone();
                    let k = items.len();
                    labels.lock().unwrap().extend(items);
                    serde_json::json!({"accepted": k, "rejected": {}, "results": []})
                } else {
                    n += 1;
                    let p = if n % 3 == 0 { 0.9 } else { 0.1 };
                    serde_json::json!({"mlcanary_ticket": format!("t{n}"), "predictions": [[1.0 - p, p]]})
                };
                // No length: tiny_http sends it chunked, as Envoy does once the filter added a ticket.
                let text = reply.to_string();
                let resp = tiny_http::Response::new(
                    200.into(),
                    vec![],
                    std::io::Cursor::new(text.into_bytes()),
                    None,
                    None,
                );
                req.respond(resp).unwrap();
            }
        });
        let halt = move || {
            stop.store(true, Ordering::SeqCst);
            server.unblock();
            thread.join().unwrap();
        };
        (port, got, halt)
    }

    #[test]
    fn labels_go_back_with_their_tickets() {
        let (port, got, halt) = fake_envoy();
        let plan = Plan {
            target: format!("127.0.0.1:{port}"),
            host: "fraud-model".into(),
            model: "fraud".into(),
            rps: 200.0,
            duration: Duration::from_millis(1500),
            max_requests: 1000,
            users: 100,
            seed: 3,
            workers: 2,
            feedback: Some(FeedbackPlan {
                review_delay: Duration::from_millis(100),
                chargeback_delay: Duration::from_millis(300),
                label_share: 0.5,
            }),
        };
        let probe = Conn::new(&plan.target, Duration::from_secs(5)).post("/", &[], b"{}");
        let probe = probe.unwrap();
        assert_eq!(probe.headers["transfer-encoding"], "chunked");
        assert!(feedback::reply_info(&probe.body).ticket.is_some());
        let t = run(&plan, &AtomicBool::new(false));
        halt();
        let f = &t.feedback;
        assert_eq!((t.errors, f.tickets), (0, t.sent), "{t:?}");
        assert!(f.sent > 50 && f.accepted == f.sent, "{f:?}");
        assert_eq!((f.rejected_total(), f.non_200, f.errors), (0, 0, 0));
        let got = got.lock().unwrap();
        assert_eq!(got.len() as u64, f.sent);
        let mut tickets: Vec<&str> = got.iter().filter_map(|l| l["ticket"].as_str()).collect();
        tickets.sort_unstable();
        tickets.dedup();
        assert_eq!(tickets.len(), got.len(), "each label is sent once");
        // About half the transactions get a label, those in flight at the end excepted.
        let share = (f.sent + f.unsent) as f64 / f.tickets as f64;
        assert!((0.35..0.65).contains(&share), "labelled share {share}");
        let frauds = got.iter().filter(|l| l["label"] == 1).count();
        assert!(
            frauds < got.len() / 4,
            "{frauds} of {} labelled fraud",
            got.len()
        );
    }
}
