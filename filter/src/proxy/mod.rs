//! The thin proxy-wasm adapter: reads what the pure decision needs from Envoy, applies the result,
//! and records per-variant stats at the end of the stream.
//!
//! The module speaks the ABI itself ([`abi`]) and exports only the callbacks it acts on: a request's
//! headers (route), the reply's headers, body and trailers (outcome, cookie, scores), the log phase
//! (record) and the context's creation and deletion. Every other callback of the ABI (request
//! bodies and trailers, `on_done`, timers, …) is absent, so the host never enters the VM for it.
//! State lives in one [`Vm`] per VM (a VM runs on one worker thread); no callback re-enters another,
//! so each holds the `RefCell` for its whole run.

use std::cell::RefCell;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault};
use std::rc::Rc;

use crate::config::{Config, Predictions};
use crate::decide::{decide, AssignedId};
use crate::hash::{IdHasher, SplitMix64};
use crate::headers::HeaderPairs;
use crate::predictions::{self, BodyError};
use crate::stats::{self, Outcome, Phase};

mod abi;
mod active;
mod feedback;

use active::{Active, PredictionIds};

use abi::{log, now_ns, COUNTER};

/// At most this many instances of one batched reply go into the score histogram (one host call
/// each); the counters count every instance.
const MAX_SCORES_RECORDED: usize = 256;

/// A root context: one plugin instance (its config) in this VM.
struct Root {
    id: u32,
    active: Option<Rc<Active>>,
    rejected: Option<u32>,
}

impl Root {
    fn reject(&mut self, reason: &str) -> bool {
        log(
            abi::LOG_ERROR,
            &format!("config rejected, previous config stays in force: {reason}"),
        );
        if self.rejected.is_none() {
            self.rejected = abi::define_metric(COUNTER, stats::CONFIG_REJECTED).ok();
        }
        if let Some(id) = self.rejected {
            abi::increment(id, 1);
        }
        false
    }

    fn configure(&mut self) -> bool {
        let bytes = match abi::buffer(abi::PLUGIN_CONFIGURATION, 0, usize::MAX) {
            Ok(Some(b)) => b,
            Ok(None) => return self.reject("no plugin configuration"),
            Err(e) => return self.reject(&format!("reading plugin configuration: status {e}")),
        };
        let config = match Config::from_json(&bytes) {
            Ok(c) => c,
            Err(e) => return self.reject(&e.to_string()),
        };
        log(
            abi::LOG_INFO,
            &format!(
                "mlcanary: config loaded: {} policies",
                config.policies.len()
            ),
        );
        self.active = Some(Rc::new(Active::new(config)));
        true
    }
}

/// Everything one VM holds.
struct Vm {
    roots: Vec<Root>,
    /// Streams of a canaried model, from context creation to the log phase (or deletion). A stream
    /// no policy routes leaves at its request headers, so later callbacks find nothing and return.
    streams: HashMap<u32, Stream, BuildHasherDefault<IdHasher>>,
    /// SplitMix64 state shared by this VM's streams; seeded when the first root is created.
    rng: u64,
    /// The feedback tickets this VM has counted, to refuse a replay.
    replay: crate::feedback::ReplayWindow,
}

thread_local! {
    static VM: RefCell<Vm> = const {
        RefCell::new(Vm {
            roots: Vec::new(),
            streams: HashMap::with_hasher(BuildHasherDefault::new()),
            rng: 0,
            replay: crate::feedback::ReplayWindow::new(),
        })
    };
}

fn with_vm<T>(f: impl FnOnce(&mut Vm) -> T) -> T {
    VM.with(|vm| f(&mut vm.borrow_mut()))
}

#[cfg(target_os = "wasi")]
extern "C" {
    fn __wasm_call_ctors();
}

/// Run once when the module is instantiated: the WASI constructors, then a panic hook that says in
/// Envoy's log why the VM stopped (a panic traps it; none is expected).
#[no_mangle]
pub extern "C" fn _initialize() {
    #[cfg(target_os = "wasi")]
    // SAFETY: called once, before any other export, as the WASI reactor model requires.
    unsafe {
        __wasm_call_ctors();
    }
    std::panic::set_hook(Box::new(|info| log(abi::LOG_CRITICAL, &info.to_string())));
}

#[no_mangle]
pub extern "C" fn proxy_on_context_create(id: u32, parent: u32) {
    with_vm(|vm| {
        if parent == 0 {
            if vm.rng == 0 {
                // WASI random_get (behind RandomState) and the clock: distinct per VM.
                vm.rng = RandomState::new().hash_one(now_ns()) | 1;
            }
            if !vm.roots.iter().any(|r| r.id == id) {
                vm.roots.push(Root {
                    id,
                    active: None,
                    rejected: None,
                });
            }
            return;
        }
        // A stream before any config loaded passes through untouched: no entry.
        let Some(active) = vm
            .roots
            .iter()
            .find(|r| r.id == parent)
            .and_then(|r| r.active.clone())
        else {
            return;
        };
        vm.streams.insert(id, Stream::new(active));
    });
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(root: u32, _size: usize) -> u32 {
    with_vm(|vm| {
        vm.roots
            .iter_mut()
            .find(|r| r.id == root)
            .is_some_and(Root::configure)
    })
    .into()
}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(id: u32, _headers: usize, end: u32) -> u32 {
    with_vm(|vm| {
        let Vm { streams, rng, .. } = vm;
        let Some(s) = streams.get_mut(&id) else {
            return abi::CONTINUE;
        };
        match s.route(rng, end != 0) {
            Route::Routed => abi::CONTINUE,
            // Headers go on (a paused header callback would pause the body too): the route holds
            // the request (a fault delay) while the filter reads the body and answers.
            Route::Feedback if s.answered => abi::PAUSE,
            Route::Feedback => abi::CONTINUE,
            Route::Untouched => {
                streams.remove(&id); // not a canaried model: untouched, unmeasured
                abi::CONTINUE
            }
        }
    })
}

/// Only a feedback request's body is read (and held until it is whole); every other stream's
/// chunks pass at once.
#[no_mangle]
pub extern "C" fn proxy_on_request_body(id: u32, size: usize, end: u32) -> u32 {
    with_vm(|vm| {
        let Vm {
            streams, replay, ..
        } = vm;
        match streams.get_mut(&id) {
            Some(s) if s.feedback.is_some() => feedback::request_body(s, size, end != 0, replay),
            _ => abi::CONTINUE,
        }
    })
}

/// Run `f` on stream `id` if it is one a policy routes; every reply callback goes on at once.
fn with_stream(id: u32, f: impl FnOnce(&mut Stream)) -> u32 {
    with_vm(|vm| {
        if let Some(s) = vm.streams.get_mut(&id) {
            f(s);
        }
    });
    abi::CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_response_headers(id: u32, _headers: usize, end: u32) -> u32 {
    with_vm(|vm| match vm.streams.get_mut(&id) {
        Some(s) => s.response_headers(end != 0),
        None => abi::CONTINUE,
    })
}

/// Passes each chunk on at once (reading scores never delays or alters the reply), except for a
/// reply that gets a ticket: that one is held whole, then goes on with the ticket in its JSON.
#[no_mangle]
pub extern "C" fn proxy_on_response_body(id: u32, size: usize, end: u32) -> u32 {
    with_vm(|vm| {
        let Vm { streams, rng, .. } = vm;
        match streams.get_mut(&id) {
            Some(s) if s.ticketing => feedback::reply_body(s, size, end != 0, rng),
            Some(s) => {
                s.response_body(size);
                abi::CONTINUE
            }
            None => abi::CONTINUE,
        }
    })
}

#[no_mangle]
pub extern "C" fn proxy_on_response_trailers(id: u32, _trailers: usize) -> u32 {
    with_stream(id, Stream::response_trailers)
}

#[no_mangle]
pub extern "C" fn proxy_on_log(id: u32) {
    if let Some(s) = with_vm(|vm| vm.streams.remove(&id)) {
        s.record();
    }
}

/// A stream whose log phase never came (or a root going away) leaves here.
#[no_mangle]
pub extern "C" fn proxy_on_delete(id: u32) {
    with_vm(|vm| {
        vm.streams.remove(&id);
        vm.roots.retain(|r| r.id != id);
    });
}

/// What the filter does with a request.
enum Route {
    /// Routed and measured.
    Routed,
    /// A feedback request: held until its body is in, then answered by the filter.
    Feedback,
    /// No policy's: untouched.
    Untouched,
}

/// Per-request state: which slot to record into, and what the response said.
struct Stream {
    active: Rc<Active>,
    slot: Option<usize>,
    policy: usize,
    phase: Phase,
    started_ns: u64,
    outcome: Outcome,
    /// (policy index, id) of a sticky cookie to set on the response.
    assigned: Option<(usize, AssignedId)>,
    body: Body,
    /// The reply is held for a ticket (its policy has `feedback`).
    ticketing: bool,
    /// For a feedback request, the index of the policy it was sent to.
    feedback: Option<usize>,
    /// The filter has answered this feedback request.
    answered: bool,
}

/// The reply body, copied chunk by chunk as it passes (never held back) when scores are read.
enum Body {
    Off,
    Collecting(Vec<u8>),
    Failed(BodyError),
    /// Already read (for a ticket): the scores or why there are none.
    Read(Result<Vec<f64>, BodyError>),
}

fn header_pairs(map: u32) -> HeaderPairs {
    abi::header_pairs(map).map_or_else(HeaderPairs::default, HeaderPairs::new)
}

impl Stream {
    fn new(active: Rc<Active>) -> Stream {
        Stream {
            active,
            slot: None,
            policy: 0,
            phase: Phase::Live,
            started_ns: 0,
            outcome: Outcome::default(),
            assigned: None,
            body: Body::Off,
            ticketing: false,
            feedback: None,
            answered: false,
        }
    }

    /// Decide and tag the request, or take a feedback request.
    fn route(&mut self, rng_state: &mut u64, end: bool) -> Route {
        let yes = |b: bool| if b { Route::Routed } else { Route::Untouched };
        let active = Rc::clone(&self.active);
        let config = &active.config;
        // One host call for every header this request's decision may need.
        let mut headers = header_pairs(abi::REQUEST_HEADERS);
        let Some(authority) = headers.get_str(":authority") else {
            return Route::Untouched;
        };
        if config.inbound {
            return yes(self.measure_shadow(&headers));
        }
        let path = headers.get_str(":path");
        let Some(pi) = config.find_policy(authority, path) else {
            return Route::Untouched;
        };
        if config.policies[pi].feedback.is_some()
            && path.is_some_and(crate::feedback::is_feedback_path)
        {
            return feedback::begin(self, pi, &headers, end);
        }
        let policy = &config.policies[pi];
        let mut rng = SplitMix64(*rng_state);
        let d = decide(policy, &mut headers, &mut rng);
        *rng_state = rng.0;
        // Replacing the header also strips whatever value the client sent: a client never picks
        // its own variant (the override header is the one, opt-in, exception).
        let variant = &policy.variants[d.variant].name;
        if let Err(e) = abi::replace_header(abi::REQUEST_HEADERS, &config.variant_header, variant) {
            log(
                abi::LOG_WARN,
                &format!("tagging the request failed: status {e}"),
            );
        }
        let seg = policy
            .segment
            .as_ref()
            .map_or(0, |s| s.index(headers.get_str(&s.header)));
        self.slot = Some(active.base[pi] + d.variant * policy.segment_count() + seg);
        self.policy = pi;
        self.assigned = d.assigned.map(|id| (pi, id));
        self.started_ns = now_ns();
        Route::Routed
    }

    /// On a model's inbound side: measure a request Envoy mirrored to a policy in its shadow
    /// phase, untouched (no routing, no cookie); `false` for every other request, which the
    /// caller's filter already counted.
    fn measure_shadow(&mut self, headers: &HeaderPairs) -> bool {
        let config = &self.active.config;
        let found = headers
            .get_str(":authority")
            .and_then(|a| config.find_shadow(a, headers.get_str(":path")));
        let Some((pi, variant)) = found else {
            return false;
        };
        let policy = &config.policies[pi];
        let seg = policy
            .segment
            .as_ref()
            .map_or(0, |s| s.index(headers.get_str(&s.header)));
        self.slot = Some(self.active.base[pi] + variant * policy.segment_count() + seg);
        self.policy = pi;
        self.phase = Phase::Shadow;
        self.started_ns = now_ns();
        true
    }

    /// Read the reply's status; plan to hold its body for a ticket when its policy signs one.
    /// Headers always go on at once: proxy-wasm hosts turn a paused header callback into "pause
    /// everything", so the body would never reach the filter (hence a ticket in the body, not a
    /// header).
    fn response_headers(&mut self, end: bool) -> u32 {
        if self.feedback.is_some() {
            return abi::CONTINUE; // the filter's own answer to a feedback request
        }
        let headers = header_pairs(abi::RESPONSE_HEADERS);
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
        let signs = self.phase == Phase::Live
            && self
                .active
                .config
                .policies
                .get(self.policy)
                .is_some_and(|p| p.feedback.is_some());
        self.ticketing = signs && !end && matches!(self.body, Body::Collecting(_));
        if self.ticketing {
            // The ticket goes into the body, which changes its length: the reply goes out
            // chunked (HTTP/1.1) or framed (HTTP/2) instead.
            let _ = abi::remove_header(abi::RESPONSE_HEADERS, "content-length");
        }
        abi::CONTINUE
    }

    fn response_body(&mut self, size: usize) {
        let max = self.predictions().map_or(0, |p| p.max_body_bytes);
        if let Body::Collecting(buf) = &mut self.body {
            if buf.len() + size > max {
                self.body = Body::Failed(BodyError::TooLarge);
            } else if size > 0 {
                match abi::buffer(abi::RESPONSE_BODY, 0, size) {
                    Ok(Some(chunk)) => buf.extend_from_slice(&chunk),
                    Ok(None) => {}
                    Err(_) => self.body = Body::Failed(BodyError::TooLarge),
                }
            }
        }
    }

    fn response_trailers(&mut self) {
        let trailers = header_pairs(abi::RESPONSE_TRAILERS);
        if let Some(g) = trailers.get_str("grpc-status").and_then(|s| s.parse().ok()) {
            self.outcome.grpc_status = Some(g);
        }
    }

    /// The log phase: count the request, its outcome, its duration and its scores.
    fn record(self) {
        let Some(slot) = self
            .slot
            .and_then(|i| self.active.slot(self.policy, i, self.phase))
        else {
            return;
        };
        abi::increment(slot.requests, 1);
        if self.outcome.is_error() {
            abi::increment(slot.errors, 1);
        }
        let ms = now_ns().saturating_sub(self.started_ns) / 1_000_000;
        abi::record(slot.duration, ms);
        if let (Some(ids), Some(p)) = (slot.predictions, self.predictions()) {
            let parsed;
            let read = match &self.body {
                Body::Off => return,
                Body::Failed(e) => Err(*e),
                Body::Collecting(buf) => {
                    parsed = predictions::scores(&p.spec, buf);
                    parsed.as_deref().map_err(|e| *e)
                }
                // Read already for the ticket: not parsed again.
                Body::Read(r) => r.as_deref().map_err(|e| *e),
            };
            record_scores(ids, p.positive_threshold, read);
        }
    }

    fn predictions(&self) -> Option<&Predictions> {
        self.active
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
        let Some(sticky) = self
            .active
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
        let _ = abi::add_header(abi::RESPONSE_HEADERS, "set-cookie", &cookie);
    }
}

/// Bump the prediction stats of one reply.
fn record_scores(ids: PredictionIds, threshold: f64, read: Result<&[f64], BodyError>) {
    match read {
        Ok(scores) => {
            let positives = scores.iter().filter(|&&s| s >= threshold).count();
            for &s in scores.iter().take(MAX_SCORES_RECORDED) {
                abi::record(ids.score, predictions::per_mille(s));
            }
            abi::increment(ids.count, scores.len() as i64);
            if positives > 0 {
                abi::increment(ids.positives, positives as i64);
            }
        }
        Err(e) => {
            log(
                abi::LOG_DEBUG,
                &format!("no prediction scores in the reply: {}", e.label()),
            );
            abi::increment(ids.failures, 1);
        }
    }
}
