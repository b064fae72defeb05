//! Simulated traffic: seeded, reproducible request streams for both variants of one model.
//!
//! - volume follows a diurnal ramp (150 → 250 rps over an hour), split per request at the canary
//!   weight;
//! - errors are **clustered per user**: they come in bursts of 1 to `max_burst` requests (a user
//!   retrying, a batch failing together), so interval-to-interval counts are over-dispersed:
//!   variance ≈ `E[b²]/E[b]` × binomial (bursts of 1–2: 1.67×, 1–4: 3×);
//! - a scenario sets each variant's error rate and, optionally, a shared outage (both variants
//!   failing at one rate for a while).

use mlcanary_core::window::{SegmentCounts, VariantWindow, Window};

/// SplitMix64: tiny, seedable, good enough for simulation draws; no dependency.
pub struct Rng(pub u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u = self.unit().max(f64::MIN_POSITIVE);
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    /// Poisson(λ): exact by inversion below 30, normal beyond (continuity-corrected).
    pub fn poisson(&mut self, lambda: f64) -> u64 {
        if lambda <= 0.0 {
            return 0;
        }
        if lambda >= 30.0 {
            return (lambda + lambda.sqrt() * self.normal() + 0.5).max(0.0) as u64;
        }
        let u = self.unit();
        let (mut k, mut p) = (0u64, (-lambda).exp());
        let mut cdf = p;
        while u > cdf && k < 1000 {
            k += 1;
            p *= lambda / k as f64;
            cdf += p;
        }
        k
    }

    /// Binomial(n, p) by its normal approximation (n here is thousands), exact mean.
    pub fn binomial(&mut self, n: u64, p: f64) -> u64 {
        let (nf, p) = (n as f64, p.clamp(0.0, 1.0));
        let sd = (nf * p * (1.0 - p)).sqrt();
        ((nf * p + sd * self.normal()).round().max(0.0) as u64).min(n)
    }
}

/// `n` requests' error count at rate `p`, errors in bursts of 1 to `max_burst` (uniform).
pub fn clustered(rng: &mut Rng, n: u64, p: f64, max_burst: u64) -> u64 {
    let mean_burst = (1 + max_burst) as f64 / 2.0;
    let bursts = rng.poisson(n as f64 * p / mean_burst);
    let errors: u64 = (0..bursts)
        .map(|_| 1 + (rng.unit() * max_burst as f64) as u64)
        .sum();
    errors.min(n)
}

/// What a scenario's variants do.
#[derive(Debug, Clone, Copy)]
pub struct Stream {
    pub stable_error_rate: f64,
    pub canary_error_rate: f64,
    /// Both variants fail at `rate` from `from_s` to `to_s` after the first step.
    pub outage: Option<Outage>,
    /// Errors come in bursts of 1 to this many requests (1: independent).
    pub max_burst: u64,
    /// Every request scored, flagged per segment (none: the model's replies are not read).
    pub flags: Option<Flags>,
}

/// Positive ("flagged") rates per segment: `(label, share of traffic, stable's rate, canary's)`;
/// flags come in bursts like errors (a user's transactions flagged together).
#[derive(Debug, Clone, Copy)]
pub struct Flags {
    pub segments: [(&'static str, f64, f64, f64); 3],
}

#[derive(Debug, Clone, Copy)]
pub struct Outage {
    pub from_s: f64,
    pub to_s: f64,
    pub rate: f64,
}

/// Requests per second `t_s` seconds after the first step: the diurnal ramp.
pub fn rps(t_s: f64) -> f64 {
    150.0 + 100.0 * (t_s / 3600.0).min(1.0)
}

impl Stream {
    /// The window from `from_s` to `to_s` (seconds after the first step) at canary share `share`.
    pub fn window(&self, rng: &mut Rng, from_s: f64, to_s: f64, share: f64) -> Window {
        let mid = 0.5 * (from_s + to_s);
        let n = rng.poisson(rps(mid) * (to_s - from_s));
        let n_c = rng.binomial(n, share);
        let n_s = n - n_c;
        let (pc, ps) = match self.outage {
            Some(o) if mid >= o.from_s && mid < o.to_s => (o.rate, o.rate),
            _ => (self.canary_error_rate, self.stable_error_rate),
        };
        let v = |requests, errors| VariantWindow {
            requests,
            errors,
            ..Default::default()
        };
        let mut w = Window {
            canary: v(n_c, clustered(rng, n_c, pc, self.max_burst)),
            stable: v(n_s, clustered(rng, n_s, ps, self.max_burst)),
            ..Default::default()
        };
        if let Some(f) = &self.flags {
            self.flag(rng, f, &mut w.canary, 3);
            self.flag(rng, f, &mut w.stable, 2);
        }
        w
    }

    /// Split `v`'s requests over the segments and flag them at the rate in column `col` (2:
    /// stable's, 3: the canary's).
    fn flag(&self, rng: &mut Rng, f: &Flags, v: &mut VariantWindow, col: usize) {
        let mut left = v.requests;
        let mut share_left = 1.0;
        for (i, seg) in f.segments.iter().enumerate() {
            let (label, share, stable, canary) = *seg;
            let n = if i + 1 == f.segments.len() {
                left
            } else {
                rng.binomial(left, (share / share_left).min(1.0))
            };
            left -= n;
            share_left -= share;
            let rate = if col == 3 { canary } else { stable };
            let x = clustered(rng, n, rate, self.max_burst);
            v.scored += n;
            v.positives += x;
            v.segments.insert(
                label.to_owned(),
                SegmentCounts {
                    requests: n,
                    errors: 0,
                    scored: n,
                    positives: x,
                    ..Default::default()
                },
            );
        }
    }
}
