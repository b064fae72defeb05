//! A traffic generator: customers (stable user ids, each with an age band) sending transactions
//! to the model through Envoy, at a fixed rate, bounded in time and count.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::data::{age_band_for, transaction, Rng};

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
}

/// Counts by (model version answering, HTTP status class).
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub by_version: BTreeMap<String, u64>,
    pub errors: u64,
    pub sent: u64,
}

/// A customer: id and age band, fixed by the user number.
pub fn customer(seed: u64, n: u64) -> (String, &'static str) {
    let mut rng = Rng(seed ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    (format!("customer-{n}"), age_band_for(rng.f64()))
}

/// A keep-alive HTTP/1.1 connection that re-connects when the server closes it.
struct Conn {
    target: String,
    stream: Option<BufReader<TcpStream>>,
}

impl Conn {
    fn post(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<(u16, BTreeMap<String, String>)> {
        for attempt in 0..2 {
            if self.stream.is_none() {
                let s = TcpStream::connect(&self.target)?;
                s.set_read_timeout(Some(Duration::from_secs(10)))?;
                // Headers and body go out in two writes: without this, Nagle's algorithm and the
                // peer's delayed ACK add ~40 ms to every request.
                s.set_nodelay(true)?;
                self.stream = Some(BufReader::new(s));
            }
            match self.try_post(path, headers, body) {
                Ok(r) => return Ok(r),
                Err(e) if attempt == 0 => {
                    let _ = e;
                    self.stream = None; // stale keep-alive connection: retry once on a new one
                }
                Err(e) => return Err(e),
            }
        }
        Err(std::io::Error::other("unreachable"))
    }

    fn try_post(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<(u16, BTreeMap<String, String>)> {
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
            s.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                hdrs.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let len: usize = hdrs
            .get("content-length")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        let mut sink = vec![0u8; len];
        s.read_exact(&mut sink)?;
        if hdrs
            .get("connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("close"))
        {
            self.stream = None;
        }
        Ok((status, hdrs))
    }
}

/// Send traffic per `plan` until its duration or count runs out, or `stop` is set.
pub fn run(plan: &Plan, stop: &AtomicBool) -> Tally {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let start = Instant::now();
    let workers = plan.workers.max(1);
    std::thread::scope(|scope| {
        for w in 0..workers {
            let tally = tally.clone();
            scope.spawn(move || {
                let mut rng = Rng(plan.seed.wrapping_add(w as u64 * 7919));
                let mut conn = Conn {
                    target: plan.target.clone(),
                    stream: None,
                };
                let interval = Duration::from_secs_f64(workers as f64 / plan.rps.max(0.1));
                let path = format!("/v1/models/{}:predict", plan.model);
                let mut next = Instant::now();
                let mut i: u64 = 0;
                while !stop.load(Ordering::SeqCst)
                    && start.elapsed() < plan.duration
                    && i * workers as u64 + (w as u64) < plan.max_requests
                {
                    i += 1;
                    let (user, band) = customer(plan.seed, rng.below(plan.users.max(1)));
                    let body =
                        serde_json::json!({"instances": [transaction(&mut rng, band)]}).to_string();
                    let headers = [
                        ("host", plan.host.as_str()),
                        ("x-user-id", user.as_str()),
                        ("x-customer-age-band", band),
                    ];
                    let answer = conn.post(&path, &headers, body.as_bytes());
                    if let Ok(mut t) = tally.lock() {
                        t.sent += 1;
                        match answer {
                            Ok((status, h)) if status < 500 => {
                                let v = h.get("x-model-version").map_or("?", String::as_str);
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
            });
        }
    });
    let t = tally.lock().map(|t| t.clone()).unwrap_or_default();
    t
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
