//! The shadow phase on the same code path: `Engine::tick` with `spec.schedule.shadow`, fed windows
//! whose shadow is made of the *same requests* stable answered.
//!
//! While in shadow, each interval's requests all go to stable; a share `mirror` of them is copied
//! to the canary. A share `shared` of the events is decided by the request (a transaction both
//! models flag, a malformed request both fail on): such an event on a mirrored request is also the
//! canary's. The rest are each variant's own. A healthy canary has stable's rates, so its events on
//! the copies are the shared ones plus its own at `(1 − shared) × rate`; a worse one adds its extra
//! as its own. `shared = 0` is the live canary's independence; `shared = 1` is the extreme the
//! README's argument covers. After the shadow the live steps draw from the plain [`Stream`].
//!
//! Printed per scenario: rolled back / promoted with Wilson 95 % intervals, rolled back *in the
//! shadow* (before any user got a canary answer), and the canary's answers users got (mean).

use std::time::SystemTime;

use mlcanary_controller::metrics::{unix_ms, MetricsError, MetricsSource, Reading};
use mlcanary_controller::policy::ValidatedPolicy;
use mlcanary_core::window::{Mark, SegmentCounts, VariantWindow, Window};

use crate::report::{pct, secs, wilson, Tally};
use crate::sim::{rps, Rng, Stream};
use crate::{policy_with, End, Fate};

/// Mirrored share of the bench's shadow, and its least duration.
pub const MIRROR: f64 = 0.2;
pub const SHADOW: &str = "shadow: {percent: 20, duration: 5m}";

/// A stream and how much of its events the two models share on a mirrored request.
#[derive(Debug, Clone, Copy)]
pub struct ShadowStream {
    pub base: Stream,
    pub shared: f64,
}

/// `n` requests' events at `rate` in bursts, split into the request-decided part (`shared`) and
/// the variant's own.
fn events(rng: &mut Rng, n: u64, rate: f64, burst: u64, shared: f64) -> (u64, u64) {
    let s = crate::sim::clustered(rng, n, rate * shared, burst);
    let own = crate::sim::clustered(rng, n, rate * (1.0 - shared), burst);
    (s, own)
}

/// Of `k` events on `n` requests, those on the `m` mirrored ones.
fn on_copies(rng: &mut Rng, k: u64, m: u64, n: u64) -> u64 {
    if n == 0 {
        0
    } else {
        rng.binomial(k, m as f64 / n as f64)
    }
}

impl ShadowStream {
    /// One shadow interval: stable's window (every request) and the canary's shadow (the copies).
    pub fn window(&self, rng: &mut Rng, from_s: f64, to_s: f64) -> Window {
        let b = &self.base;
        let n = rng.poisson(rps(0.5 * (from_s + to_s)) * (to_s - from_s));
        let m = rng.binomial(n, MIRROR);
        let (shared, own) = events(rng, n, b.stable_error_rate, b.max_burst, self.shared);
        let extra = (b.canary_error_rate - b.stable_error_rate * self.shared).max(0.0);
        let canary_errors =
            on_copies(rng, shared, m, n) + crate::sim::clustered(rng, m, extra, b.max_burst);
        let mut stable = VariantWindow {
            requests: n,
            errors: (shared + own).min(n),
            ..Default::default()
        };
        let mut shadow = VariantWindow {
            requests: m,
            errors: canary_errors.min(m),
            ..Default::default()
        };
        if let Some(f) = &b.flags {
            let (mut left_n, mut left_m, mut share_left) = (n, m, 1.0);
            for (i, &(label, share, rate_s, rate_c)) in f.segments.iter().enumerate() {
                let last = i + 1 == f.segments.len();
                let frac = (share / share_left).min(1.0);
                let ns = if last {
                    left_n
                } else {
                    rng.binomial(left_n, frac)
                };
                let ms = if last {
                    left_m
                } else {
                    rng.binomial(left_m, frac).min(ns)
                };
                left_n -= ns;
                left_m -= ms;
                share_left -= share;
                let (sh, own) = events(rng, ns, rate_s, b.max_burst, self.shared);
                let extra = (rate_c - rate_s * self.shared).max(0.0);
                let xc =
                    on_copies(rng, sh, ms, ns) + crate::sim::clustered(rng, ms, extra, b.max_burst);
                for (v, req, pos) in [
                    (&mut stable, ns, (sh + own).min(ns)),
                    (&mut shadow, ms, xc.min(ms)),
                ] {
                    v.scored += req;
                    v.positives += pos;
                    v.segments.insert(
                        label.to_owned(),
                        SegmentCounts {
                            requests: req,
                            errors: 0,
                            scored: req,
                            positives: pos,
                            ..Default::default()
                        },
                    );
                }
            }
        }
        Window {
            stable,
            shadow,
            ..Default::default()
        }
    }
}

/// Shadow windows while the status mirrors, live ones after.
struct Source<'a> {
    rng: &'a mut Rng,
    stream: ShadowStream,
    start_ms: i64,
    weight_bp: u32,
    in_shadow: bool,
    /// Canary answers users got.
    served: u64,
}

impl MetricsSource for Source<'_> {
    async fn fetch(
        &mut self,
        _: &ValidatedPolicy,
        since: Option<&Mark>,
        now: SystemTime,
    ) -> Result<Reading, MetricsError> {
        Ok(crate::simulated(since, now, self.start_ms, |from, to| {
            if self.in_shadow {
                self.stream.window(self.rng, from, to)
            } else {
                let share = f64::from(self.weight_bp) / 10_000.0;
                let w = self.stream.base.window(self.rng, from, to, share);
                self.served += w.canary.requests;
                w
            }
        }))
    }
}

/// How a rollout with a shadow ended; `in_shadow`: rolled back before any live step.
struct ShadowEnd {
    end: End,
    in_shadow: bool,
}

async fn run(policy: &ValidatedPolicy, rng: &mut Rng, stream: &ShadowStream) -> ShadowEnd {
    let mut source = Source {
        rng,
        stream: *stream,
        start_ms: unix_ms(crate::bench_start()),
        weight_bp: 0,
        in_shadow: false,
        served: 0,
    };
    let (end, live) = crate::drive(
        policy,
        &mut source,
        |s, status| {
            s.weight_bp = status.canary_weight_bp;
            s.in_shadow = status.shadow.is_some();
        },
        |s| s.served,
    )
    .await;
    ShadowEnd {
        end,
        in_shadow: end.fate == Fate::RolledBack && !live,
    }
}

/// The scenarios: healthy at both ends of `shared`, and the case study's unfair canary.
fn scenarios() -> Vec<(&'static str, ShadowStream, usize)> {
    let errors = |shared| ShadowStream {
        base: crate::stream(0.01, 0.01),
        shared,
    };
    let flags = |elderly, shared| ShadowStream {
        base: crate::flagged(elderly),
        shared,
    };
    vec![
        (
            "healthy, errors 1 %, independent (shared 0)",
            errors(0.0),
            1,
        ),
        (
            "healthy, errors 1 %, all request-decided (shared 1)",
            errors(1.0),
            1,
        ),
        (
            "fair, flags 6 %, half request-decided (shared 0.5)",
            flags(1.0, 0.5),
            1,
        ),
        (
            "fair, flags 6 %, all request-decided (shared 1)",
            flags(1.0, 1.0),
            1,
        ),
        (
            "4x flags in 60+, shared 1 (the case study's v3)",
            flags(4.0, 1.0),
            4,
        ),
    ]
}

/// Run every scenario `runs` times (detection: a quarter) and print the section.
pub fn report(runs: u64, seed: u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    println!(
        "\n# shadow phase: {:.0} % mirrored for at least 5 min before steps 5/10/20/50 %, same \
         code path (Engine::tick); the copies are stable's own requests",
        100.0 * MIRROR
    );
    println!(
        "{:<64} {:>6} {:>24} {:>24} {:>24} {:>12} {:>14}",
        "scenario",
        "runs",
        "rolled back [95 % CI]",
        "in shadow [95 % CI]",
        "promoted [95 % CI]",
        "rollback med",
        "canary answers"
    );
    for (k, (name, stream, divisor)) in scenarios().into_iter().enumerate() {
        let n = (runs / divisor as u64).max(1);
        let flags = stream.base.flags.is_some();
        let p = policy_with(0.01, &format!("steps: [5, 10, 20, 50], {SHADOW}"), flags);
        let seed_of = |r: u64| seed ^ (0xA5 + k as u64) << 40 ^ r.wrapping_mul(0x9E37_79B9);
        let ends: Vec<ShadowEnd> = (0..n)
            .map(|r| rt.block_on(run(&p, &mut Rng(seed_of(r)), &stream)))
            .collect();
        row(&format!("{name}: shadow"), &ends);
        // The same stream and seeds without a shadow: what the live steps alone do.
        let live = crate::policy(0.01, flags);
        let ends: Vec<ShadowEnd> = (0..n)
            .map(|r| ShadowEnd {
                end: rt.block_on(crate::mlcanary_run(
                    &live,
                    &mut Rng(seed_of(r)),
                    &stream.base,
                )),
                in_shadow: false,
            })
            .collect();
        row(&format!("{name}: live only"), &ends);
    }
}

fn row(name: &str, ends: &[ShadowEnd]) {
    let t = Tally::of(&ends.iter().map(|e| e.end).collect::<Vec<_>>());
    let in_shadow = ends.iter().filter(|e| e.in_shadow).count();
    let (lo, hi) = wilson(in_shadow, ends.len());
    let served = ends.iter().map(|e| e.end.served as f64).sum::<f64>() / ends.len() as f64;
    println!(
        "{name:<64} {:>6} {:>24} {:>24} {:>24} {:>12} {:>14.0}",
        t.runs,
        pct(t.rolled_back_rate()),
        pct((in_shadow as f64 / ends.len() as f64, lo, hi)),
        pct(t.promoted_rate()),
        secs(t.median_rollback()),
        served
    );
}
