//! The thin proxy-wasm adapter: reads what the pure decision needs from Envoy, applies the result,
//! and records per-variant stats at the end of the stream.
//!
//! Host calls go through `proxy_wasm::hostcalls` with their `Result`s handled here: the SDK's trait
//! helpers `unwrap()` (and turn a non-UTF-8 header into a panic), and a panic traps the VM.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::rc::Rc;
use std::time::UNIX_EPOCH;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType};

use crate::config::{Config, Predictions};
use crate::decide::{decide, AssignedId};
use crate::hash::SplitMix64;
use crate::headers::HeaderPairs;
use crate::predictions::{self, BodyError};
use crate::stats::{self, Outcome};

mod host;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::new()) });
}}

/// Metric ids of one (policy, variant, segment) tuple, defined on the tuple's first request.
#[derive(Debug, Clone, Copy)]
struct Slot {
    requests: u32,
    errors: u32,
    duration: u32,
    /// Only for policies that read predictions.
    predictions: Option<PredictionIds>,
}

#[derive(Debug, Clone, Copy)]
struct PredictionIds {
    score: u32,
    count: u32,
    positives: u32,
    failures: u32,
}

/// At most this many instances of one batched reply go into the score histogram (one host call
/// each); the counters count every instance.
const MAX_SCORES_RECORDED: usize = 256;

/// A config in force with its metric ids; shared by every stream it started.
///
/// A tuple's metrics are defined when its first request ends, not when the config loads: a sidecar
/// exports series only for the models it calls (a mesh-wide config names every model, and defining
/// all of them in every sidecar made ~400 series per policy per pod). Envoy keeps a stat across
/// config reloads, so defining it again under a new config finds the same counters. The controller
/// reads a series that is absent as zero, so the first request still counts.
struct Active {
    config: Config,
    /// One per tuple, `None` until its first request (or while defining fails).
    slots: Vec<Cell<Option<Slot>>>,
    /// First slot of each policy; a tuple's slot is `base + variant * segments + segment`.
    base: Vec<usize>,
}

impl Active {
    fn new(config: Config) -> Active {
        let mut base = Vec::with_capacity(config.policies.len());
        let mut n = 0;
        for p in &config.policies {
            base.push(n);
            n += p.variants.len() * p.segment_count();
        }
        Active {
            config,
            slots: (0..n).map(|_| Cell::new(None)).collect(),
            base,
        }
    }

    /// The metric ids of slot `i` of policy `pi`, defined on first use. `None` if Envoy refuses a
    /// definition (logged; the request is then unmeasured, never failed).
    fn slot(&self, pi: usize, i: usize) -> Option<Slot> {
        let cell = self.slots.get(i)?;
        if let Some(s) = cell.get() {
            return Some(s);
        }
        let p = self.config.policies.get(pi)?;
        let k = i.checked_sub(*self.base.get(pi)?)?;
        let v = p.variants.get(k / p.segment_count())?;
        let seg = p.segment.as_ref().map(|g| g.label(k % p.segment_count()));
        let def = |kind, family| {
            let name = stats::stat_name(family, &p.name, &v.name, seg);
            hostcalls::define_metric(kind, &name)
                .map_err(|e| log::warn!("defining metric {name}: {e:?}"))
                .ok()
        };
        let predictions = match p.predictions {
            None => None,
            Some(_) => Some(PredictionIds {
                score: def(MetricType::Histogram, stats::PREDICTION_SCORE)?,
                count: def(MetricType::Counter, stats::PREDICTIONS)?,
                positives: def(MetricType::Counter, stats::POSITIVES)?,
                failures: def(MetricType::Counter, stats::PARSE_FAILURES)?,
            }),
        };
        let slot = Slot {
            requests: def(MetricType::Counter, stats::REQUESTS)?,
            errors: def(MetricType::Counter, stats::ERRORS)?,
            duration: def(MetricType::Histogram, stats::DURATION)?,
            predictions,
        };
        cell.set(Some(slot));
        Some(slot)
    }
}

struct Root {
    active: Option<Rc<Active>>,
    /// SplitMix64 state shared by this VM's streams (a VM runs on one worker thread).
    rng: Rc<Cell<u64>>,
    rejected: Option<u32>,
}

impl Root {
    fn new() -> Root {
        // WASI random_get (behind RandomState) and the clock: distinct per VM, no host call later.
        let seed = RandomState::new().hash_one(now_ns());
        Root {
            active: None,
            rng: Rc::new(Cell::new(seed)),
            rejected: None,
        }
    }

    fn reject(&mut self, reason: &str) -> bool {
        log::error!("config rejected, previous config stays in force: {reason}");
        if self.rejected.is_none() {
            self.rejected =
                hostcalls::define_metric(MetricType::Counter, stats::CONFIG_REJECTED).ok();
        }
        if let Some(id) = self.rejected {
            let _ = hostcalls::increment_metric(id, 1);
        }
        false
    }
}

fn now_ns() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64)
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(Some(b)) => b,
            Ok(None) => return self.reject("no plugin configuration"),
            Err(e) => return self.reject(&format!("reading plugin configuration: {e:?}")),
        };
        let config = match Config::from_json(&bytes) {
            Ok(c) => c,
            Err(e) => return self.reject(&e.to_string()),
        };
        log::info!(
            "mlcanary: config loaded: {} policies",
            config.policies.len()
        );
        self.active = Some(Rc::new(Active::new(config)));
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Never `None`: the SDK panics (and traps the VM) on a missing context.
        Some(Box::new(Stream {
            active: self.active.clone(),
            rng: Rc::clone(&self.rng),
            slot: None,
            policy: 0,
            started_ns: 0,
            outcome: Outcome::default(),
            assigned: None,
            body: Body::Off,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Per-request state: which slot to record into, and what the response said.
struct Stream {
    /// `None` only if Envoy creates a stream before any config loaded: pass-through.
    active: Option<Rc<Active>>,
    rng: Rc<Cell<u64>>,
    slot: Option<usize>,
    policy: usize,
    started_ns: u64,
    outcome: Outcome,
    /// (policy index, id) of a sticky cookie to set on the response.
    assigned: Option<(usize, AssignedId)>,
    body: Body,
}

/// The reply body, copied chunk by chunk as it passes (never held back) when scores are read.
enum Body {
    Off,
    Collecting(Vec<u8>),
    Failed(BodyError),
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _n: usize, _end_of_stream: bool) -> Action {
        let Some(active) = self.active.clone() else {
            return Action::Continue;
        };
        let config = &active.config;
        // One host call for every header this request's decision may need.
        let mut headers = host::header_pairs(MapType::HttpRequestHeaders);
        let Some(authority) = headers.get_str(":authority") else {
            return Action::Continue;
        };
        let Some(pi) = config.find_policy(authority, headers.get_str(":path")) else {
            return Action::Continue; // not a canaried model: untouched, unmeasured
        };
        let policy = &config.policies[pi];
        let mut rng = SplitMix64(self.rng.get());
        let d = decide(policy, &mut headers, &mut rng);
        self.rng.set(rng.0);
        // Replacing the header also strips whatever value the client sent: a client never picks
        // its own variant (the override header is the one, opt-in, exception).
        let variant = &policy.variants[d.variant].name;
        if let Err(e) = hostcalls::set_map_value(
            MapType::HttpRequestHeaders,
            &config.variant_header,
            Some(variant),
        ) {
            log::warn!("tagging the request failed: {e:?}");
        }
        let seg = policy
            .segment
            .as_ref()
            .map_or(0, |s| s.index(headers.get_str(&s.header)));
        self.slot = Some(active.base[pi] + d.variant * policy.segment_count() + seg);
        self.policy = pi;
        self.assigned = d.assigned.map(|id| (pi, id));
        self.started_ns = now_ns();
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _n: usize, _end_of_stream: bool) -> Action {
        if self.slot.is_none() {
            return Action::Continue;
        }
        let headers = host::header_pairs(MapType::HttpResponseHeaders);
        self.outcome.status = headers
            .get_str(":status")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if let Some(g) = headers.get_str("grpc-status").and_then(|s| s.parse().ok()) {
            self.outcome.grpc_status = Some(g);
        }
        if let Some((pi, id)) = self.assigned {
            self.set_cookie(pi, id);
        }
        self.body = self.body_plan(&headers);
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, _end_of_stream: bool) -> Action {
        let max = self.predictions().map_or(0, |p| p.max_body_bytes);
        if let Body::Collecting(buf) = &mut self.body {
            if buf.len() + body_size > max {
                self.body = Body::Failed(BodyError::TooLarge);
            } else if body_size > 0 {
                match hostcalls::get_buffer(BufferType::HttpResponseBody, 0, body_size) {
                    Ok(Some(chunk)) => buf.extend_from_slice(&chunk),
                    Ok(None) => {}
                    Err(_) => self.body = Body::Failed(BodyError::TooLarge),
                }
            }
        }
        // Always pass the chunk on: reading scores never delays or alters the reply.
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, _n: usize) -> Action {
        if self.slot.is_some() {
            let trailers = host::header_pairs(MapType::HttpResponseTrailers);
            if let Some(g) = trailers.get_str("grpc-status").and_then(|s| s.parse().ok()) {
                self.outcome.grpc_status = Some(g);
            }
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        let Some(active) = &self.active else {
            return;
        };
        let Some(slot) = self.slot.and_then(|i| active.slot(self.policy, i)) else {
            return;
        };
        let _ = hostcalls::increment_metric(slot.requests, 1);
        if self.outcome.is_error() {
            let _ = hostcalls::increment_metric(slot.errors, 1);
        }
        let ms = now_ns().saturating_sub(self.started_ns) / 1_000_000;
        let _ = hostcalls::record_metric(slot.duration, ms);
        let body = std::mem::replace(&mut self.body, Body::Off);
        if let (Some(ids), Some(p)) = (slot.predictions, self.predictions()) {
            let read = match body {
                Body::Off => return,
                Body::Failed(e) => Err(e),
                Body::Collecting(buf) => predictions::scores(&p.spec, &buf),
            };
            record_scores(ids, p.positive_threshold, read);
        }
    }
}

/// Bump the prediction stats of one reply.
fn record_scores(ids: PredictionIds, threshold: f64, read: Result<Vec<f64>, BodyError>) {
    match read {
        Ok(scores) => {
            let positives = scores.iter().filter(|&&s| s >= threshold).count();
            for &s in scores.iter().take(MAX_SCORES_RECORDED) {
                let _ = hostcalls::record_metric(ids.score, predictions::per_mille(s));
            }
            let _ = hostcalls::increment_metric(ids.count, scores.len() as i64);
            if positives > 0 {
                let _ = hostcalls::increment_metric(ids.positives, positives as i64);
            }
        }
        Err(e) => {
            log::debug!("no prediction scores in the reply: {}", e.label());
            let _ = hostcalls::increment_metric(ids.failures, 1);
        }
    }
}

impl Stream {
    fn predictions(&self) -> Option<&Predictions> {
        let active = self.active.as_ref()?;
        active
            .config
            .policies
            .get(self.policy)?
            .predictions
            .as_ref()
    }

    /// Whether (and how) to read this reply's body for scores: only successful replies of a
    /// policy that reads predictions; compressed or declared-too-large bodies fail up front.
    fn body_plan(&self, headers: &HeaderPairs) -> Body {
        let Some(p) = self.predictions() else {
            return Body::Off;
        };
        if !(200..300).contains(&self.outcome.status) {
            return Body::Off;
        }
        if headers
            .get_str("content-encoding")
            .is_some_and(|e| !e.eq_ignore_ascii_case("identity"))
        {
            return Body::Failed(BodyError::Compressed);
        }
        let declared = headers
            .get_str("content-length")
            .and_then(|l| l.parse::<usize>().ok());
        match declared {
            Some(n) if n > p.max_body_bytes => Body::Failed(BodyError::TooLarge),
            Some(n) => Body::Collecting(Vec::with_capacity(n)),
            None => Body::Collecting(Vec::new()),
        }
    }

    /// Give a keyless client the id it was routed by, so its next request is sticky.
    fn set_cookie(&self, pi: usize, id: AssignedId) {
        let Some(active) = &self.active else {
            return;
        };
        let Some(sticky) = active
            .config
            .policies
            .get(pi)
            .and_then(|p| p.sticky.as_ref())
        else {
            return;
        };
        let Some(name) = sticky.cookie.as_deref() else {
            return;
        };
        let cookie = format!(
            "{name}={}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax",
            id.as_str(),
            sticky.cookie_max_age_s
        );
        let _ = hostcalls::add_map_value(MapType::HttpResponseHeaders, "set-cookie", &cookie);
    }
}
