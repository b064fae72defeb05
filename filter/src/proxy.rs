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

use crate::config::Config;
use crate::decide::{decide, AssignedId, RequestAttrs};
use crate::hash::SplitMix64;
use crate::rules::{cookie_value, query_value};
use crate::stats::{self, Outcome};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::new()) });
}}

/// Metric ids of one (policy, variant, segment) tuple, defined once per config.
#[derive(Debug, Clone, Copy)]
struct Slot {
    requests: u32,
    errors: u32,
    duration: u32,
}

/// A config in force with its metric ids; shared by every stream it started.
struct Active {
    config: Config,
    slots: Vec<Slot>,
    /// First slot of each policy; a tuple's slot is `base + variant * segments + segment`.
    base: Vec<usize>,
}

impl Active {
    fn new(config: Config) -> Result<Active, String> {
        let mut slots = Vec::new();
        let mut base = Vec::with_capacity(config.policies.len());
        for p in &config.policies {
            base.push(slots.len());
            for v in &p.variants {
                for s in 0..p.segment_count() {
                    let seg = p.segment.as_ref().map(|g| g.label(s));
                    let def = |kind, family| {
                        let name = stats::stat_name(family, &p.name, &v.name, seg);
                        hostcalls::define_metric(kind, &name)
                            .map_err(|e| format!("defining metric {name}: {e:?}"))
                    };
                    slots.push(Slot {
                        requests: def(MetricType::Counter, stats::REQUESTS)?,
                        errors: def(MetricType::Counter, stats::ERRORS)?,
                        duration: def(MetricType::Histogram, stats::DURATION)?,
                    });
                }
            }
        }
        Ok(Active {
            config,
            slots,
            base,
        })
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
        match Active::new(config) {
            Ok(a) => {
                log::info!(
                    "mlcanary: config loaded: {} policies",
                    a.config.policies.len()
                );
                self.active = Some(Rc::new(a));
                true
            }
            Err(e) => self.reject(&e),
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let active = self.active.clone()?;
        Some(Box::new(Stream {
            active,
            rng: Rc::clone(&self.rng),
            slot: None,
            started_ns: 0,
            outcome: Outcome::default(),
            assigned: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Per-request state: which slot to record into, and what the response said.
struct Stream {
    active: Rc<Active>,
    rng: Rc<Cell<u64>>,
    slot: Option<usize>,
    started_ns: u64,
    outcome: Outcome,
    /// (policy index, id) of a sticky cookie to set on the response.
    assigned: Option<(usize, AssignedId)>,
}

fn request_header(name: &str) -> Option<String> {
    header(MapType::HttpRequestHeaders, name)
}

/// A header value as UTF-8; a missing, unreadable or non-UTF-8 value reads as absent.
fn header(map: MapType, name: &str) -> Option<String> {
    let bytes = hostcalls::get_map_value_bytes(map, name).ok()??;
    String::from_utf8(bytes).ok()
}

/// Request attributes fetched lazily from Envoy; the cookie header and path at most once.
struct HostAttrs {
    last: Option<String>,
    cookie: Option<Option<String>>,
    path: Option<Option<String>>,
}

impl RequestAttrs for HostAttrs {
    fn header(&mut self, name: &str) -> Option<&str> {
        self.last = request_header(name);
        self.last.as_deref()
    }

    fn cookie(&mut self, name: &str) -> Option<&str> {
        let h = self.cookie.get_or_insert_with(|| request_header("cookie"));
        cookie_value(h.as_deref()?, name)
    }

    fn query(&mut self, name: &str) -> Option<&str> {
        let p = self.path.get_or_insert_with(|| request_header(":path"));
        query_value(p.as_deref()?, name)
    }
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _n: usize, _end_of_stream: bool) -> Action {
        let active = Rc::clone(&self.active);
        let config = &active.config;
        let Some(authority) = request_header(":authority") else {
            return Action::Continue;
        };
        let mut attrs = HostAttrs {
            last: None,
            cookie: None,
            path: None,
        };
        let found = config.find_policy(&authority, || {
            let p = request_header(":path");
            attrs.path = Some(p.clone());
            p
        });
        let Some(pi) = found else {
            return Action::Continue; // not a canaried model: untouched, unmeasured
        };
        let policy = &config.policies[pi];
        let mut rng = SplitMix64(self.rng.get());
        let d = decide(policy, &mut attrs, &mut rng);
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
            .map_or(0, |s| s.index(attrs.header(&s.header)));
        self.slot = Some(active.base[pi] + d.variant * policy.segment_count() + seg);
        self.assigned = d.assigned.map(|id| (pi, id));
        self.started_ns = now_ns();
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _n: usize, _end_of_stream: bool) -> Action {
        if self.slot.is_none() {
            return Action::Continue;
        }
        let map = MapType::HttpResponseHeaders;
        self.outcome.status = header(map, ":status")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if let Some(g) = header(map, "grpc-status").and_then(|s| s.parse().ok()) {
            self.outcome.grpc_status = Some(g);
        }
        if let Some((pi, id)) = self.assigned {
            let sticky = self.active.config.policies[pi].sticky.as_ref();
            if let Some((name, max_age)) =
                sticky.and_then(|s| Some((s.cookie.as_deref()?, s.cookie_max_age_s)))
            {
                let cookie = format!(
                    "{name}={}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax",
                    id.as_str()
                );
                let _ = hostcalls::add_map_value(map, "set-cookie", &cookie);
            }
        }
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, _n: usize) -> Action {
        if self.slot.is_some() {
            let g = header(MapType::HttpResponseTrailers, "grpc-status");
            if let Some(g) = g.and_then(|s| s.parse().ok()) {
                self.outcome.grpc_status = Some(g);
            }
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        let Some(slot) = self.slot.and_then(|i| self.active.slots.get(i)) else {
            return;
        };
        let _ = hostcalls::increment_metric(slot.requests, 1);
        if self.outcome.is_error() {
            let _ = hostcalls::increment_metric(slot.errors, 1);
        }
        let ms = now_ns().saturating_sub(self.started_ns) / 1_000_000;
        let _ = hostcalls::record_metric(slot.duration, ms);
    }
}
