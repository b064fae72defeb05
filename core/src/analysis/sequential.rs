//! Anytime-valid tests for rates: test martingales (e-processes) one may look at after every
//! interval without inflating the error rate, and the confidence sequences they invert into.
//!
//! Everything is in log space (`ln E`). By Ville's inequality, for an e-process `E_t` under its null
//! `P(∃t: E_t ≥ 1/α) ≤ α`: a check rejects when `ln E ≥ ln(1/α)`, however often it looks.
//!
//! Two families, each a mixture (equal weights) over a grid of alternatives so that no effect size
//! has to be guessed:
//! - **ratio to stable**, conditional on the split (Lindon, Sanden & Shirikian, KDD 2022): with
//!   canary / stable counts `n_c, x_c, n_s, x_s` and `θ = p_c / p_s`, given the `x_c + x_s` events
//!   the canary's share is `Binomial(x_c + x_s, π(θ))`, `π(θ) = θ n_c / (θ n_c + n_s)` (exact when
//!   the counts are Poisson; for rates that are not small it is the Poisson approximation — at
//!   `θ0 = 1` still valid, because the true hypergeometric law is less spread than this binomial).
//!   The null `θ ≤ θ0` is tested against `θ0 × m`, `θ ≥ θ0` against `θ0 / m`, for `m` in
//!   [`MULTIPLIERS`]; `π` is recomputed per row, so a weight change alters the share, not the test.
//! - **absolute**: one variant's own Bernoulli counts against a rate `q0`, alternatives on the odds
//!   scale (`odds(q0) × m` above, `/ m` below), so they stay in (0, 1).
//!
//! Under the null, each alternative's likelihood ratio has expectation ≤ 1 (monotone likelihood
//! ratio), so each product over rows is a test martingale and their average is an e-process.
//!
//! **Dependence**: clustered events (sticky users, batched predictions) make the binomial variance
//! too small. Each log likelihood ratio is divided by a dispersion factor `φ ≥ 1` (`L^(1/φ)`, a
//! quasi-likelihood correction): exact when events come in clumps of `φ`, still valid under the
//! binomial model (`E[L^a] ≤ E[L]^a ≤ 1` for `0 < a ≤ 1`). `φ` is estimated from stable
//! ([`crate::window::Dispersion`]).

use crate::window::{StepWindow, VariantWindow};

/// Alternatives as multiples of the null's value (on the ratio or odds scale).
pub const MULTIPLIERS: [f64; 8] = [1.1, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0];

/// One stretch of both variants' counts at one canary share (the engine sums each weight's windows).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RateRow {
    pub n_c: f64,
    pub x_c: f64,
    pub n_s: f64,
    pub x_s: f64,
}

/// One row per weight of the rollout, from the `(trials, events)` that `of` reads off each
/// variant's window.
pub fn rows(steps: &[StepWindow], of: impl Fn(&VariantWindow) -> (f64, f64)) -> Vec<RateRow> {
    steps
        .iter()
        .map(|s| {
            let ((n_c, x_c), (n_s, x_s)) = (of(&s.window.canary), of(&s.window.stable));
            RateRow {
                n_c,
                x_c: x_c.min(n_c),
                n_s,
                x_s: x_s.min(n_s),
            }
        })
        .collect()
}

impl RateRow {
    /// All rows added up.
    pub fn sum(rows: &[RateRow]) -> RateRow {
        rows.iter().fold(RateRow::default(), |a, r| RateRow {
            n_c: a.n_c + r.n_c,
            x_c: a.x_c + r.x_c,
            n_s: a.n_s + r.n_s,
            x_s: a.x_s + r.x_s,
        })
    }
}

/// Which side of the null the alternatives lie on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Null `value ≤ v0`, alternatives above.
    Above,
    /// Null `value ≥ v0`, alternatives below.
    Below,
}

fn log_sum_exp_mean(terms: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = terms.collect();
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if max.is_infinite() {
        return max;
    }
    let sum: f64 = v.iter().map(|t| (t - max).exp()).sum();
    max + (sum / v.len() as f64).ln()
}

/// `x ln(a/b)` with `0 ln(·) = 0`, and `+∞` when `b = 0 < a`.
fn xlog_ratio(x: f64, a: f64, b: f64) -> f64 {
    if x == 0.0 {
        0.0
    } else {
        x * (a.ln() - b.ln())
    }
}

fn pi(theta: f64, r: &RateRow) -> f64 {
    theta * r.n_c / (theta * r.n_c + r.n_s)
}

/// `ln` of one row's conditional likelihood ratio of `theta` against `theta0`.
fn ratio_row_log_lr(r: &RateRow, theta: f64, theta0: f64) -> f64 {
    if r.n_c <= 0.0 || r.n_s <= 0.0 {
        return 0.0;
    }
    let (p1, p0) = (pi(theta, r), pi(theta0, r));
    xlog_ratio(r.x_c, p1, p0) + xlog_ratio(r.x_s, 1.0 - p1, 1.0 - p0)
}

/// `ln E` of the mixture e-process for the canary / stable rate ratio against `theta0` on `side`,
/// over every row of the rollout.
pub fn ratio_log_e(rows: &[RateRow], theta0: f64, side: Side, phi: f64) -> f64 {
    let phi = phi.max(1.0);
    log_sum_exp_mean(MULTIPLIERS.iter().map(|m| {
        let theta = match side {
            Side::Above => theta0 * m,
            Side::Below => theta0 / m,
        };
        rows.iter()
            .map(|r| ratio_row_log_lr(r, theta, theta0))
            .sum::<f64>()
            / phi
    }))
}

fn odds_rate(q0: f64, m: f64) -> f64 {
    let odds = q0 / (1.0 - q0) * m;
    odds / (1.0 + odds)
}

/// `ln E` of the mixture e-process for one variant's rate (`x` events in `n` Bernoulli trials)
/// against `q0` on `side`.
pub fn rate_log_e(n: f64, x: f64, q0: f64, side: Side, phi: f64) -> f64 {
    let phi = phi.max(1.0);
    let x = x.min(n);
    // Degenerate nulls: a rate ≤ 0 is refuted by one event; ≥ 1 (or ≤ 1) by nothing.
    match side {
        Side::Above if q0 <= 0.0 => {
            return if x > 0.0 { f64::INFINITY } else { 0.0 };
        }
        Side::Above if q0 >= 1.0 => return 0.0,
        Side::Below if q0 >= 1.0 => {
            return if x < n { f64::INFINITY } else { 0.0 };
        }
        Side::Below if q0 <= 0.0 => return 0.0,
        _ => {}
    }
    log_sum_exp_mean(MULTIPLIERS.iter().map(|m| {
        let q = match side {
            Side::Above => odds_rate(q0, *m),
            Side::Below => odds_rate(q0, 1.0 / m),
        };
        (xlog_ratio(x, q, q0) + xlog_ratio(n - x, 1.0 - q, 1.0 - q0)) / phi
    }))
}

/// `ln(1/α)`: the level a `ln E` must reach to reject at `alpha`.
pub fn threshold(alpha: f64) -> f64 {
    -(alpha.clamp(f64::MIN_POSITIVE, 1.0)).ln()
}

/// The always-valid p-value an e-value stands for: `min(1, 1/E)`.
pub fn p_value(log_e: f64) -> f64 {
    (-log_e).exp().min(1.0)
}

/// A confidence sequence's current interval `[lo, hi]`: every value neither one-sided test rejects
/// at `alpha` (so the interval covers the truth at all times with probability ≥ 1 − 2α). Values
/// are found by bisection on the log scale within `[range.0, range.1]`; an end the data cannot
/// bound is the range's end.
pub fn interval(log_e: impl Fn(f64, Side) -> f64, alpha: f64, range: (f64, f64)) -> (f64, f64) {
    let t = threshold(alpha);
    // Rejection of "value ≥ v" (Below) grows with v; of "value ≤ v" (Above) shrinks with v.
    let hi = bisect(range, |v| log_e(v, Side::Below) >= t, true);
    let lo = bisect(range, |v| log_e(v, Side::Above) >= t, false);
    (lo.min(hi), hi.max(lo))
}

/// With `rejects` monotone in `v`: for `upward` the smallest `v` rejected (or `range.1`), else the
/// largest `v` rejected (or `range.0`).
fn bisect(range: (f64, f64), rejects: impl Fn(f64) -> bool, upward: bool) -> f64 {
    let edge = if upward { range.1 } else { range.0 };
    if !rejects(edge) {
        return edge;
    }
    let (mut a, mut b) = (range.0.ln(), range.1.ln());
    for _ in 0..60 {
        let mid = 0.5 * (a + b);
        let r = rejects(mid.exp());
        // Keep the boundary between a not-rejected and a rejected end.
        if r == upward {
            b = mid;
        } else {
            a = mid;
        }
    }
    if upward {
        b.exp()
    } else {
        a.exp()
    }
}

/// Where a rate ratio stands against a band `[lo, hi]` (`lo = 0`: no lower side), each side
/// tested at `alpha / 2`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BandTest {
    /// Shown above `hi`.
    pub above: bool,
    /// Shown below `lo`.
    pub below: bool,
    /// The ratio's interval (at `alpha / 2` a side).
    pub interval: (f64, f64),
    /// `ln E` of the side that is further out (for the always-valid p-value).
    pub log_e: f64,
}

impl BandTest {
    pub fn outside(&self) -> bool {
        self.above || self.below
    }
}

/// The band test on `rows`.
pub fn ratio_band(rows: &[RateRow], lo: f64, hi: f64, alpha: f64, phi: f64) -> BandTest {
    let t = threshold(alpha / 2.0);
    let up = ratio_log_e(rows, hi, Side::Above, phi);
    let down = if lo > 0.0 {
        ratio_log_e(rows, lo, Side::Below, phi)
    } else {
        0.0
    };
    BandTest {
        above: up >= t,
        below: down >= t,
        interval: ratio_interval(rows, alpha / 2.0, phi),
        log_e: up.max(down),
    }
}

/// An interval's upper end for a person, `∞` where the data cannot bound it yet (the search
/// range's end).
pub fn show_upper(x: f64, decimals: usize) -> String {
    if x >= 1e3 {
        "∞".to_owned()
    } else {
        format!("{x:.decimals$}")
    }
}

/// The rate ratio's interval over `rows`.
pub fn ratio_interval(rows: &[RateRow], alpha: f64, phi: f64) -> (f64, f64) {
    interval(
        |v, side| ratio_log_e(rows, v, side, phi),
        alpha,
        (1e-3, 1e3),
    )
}

/// One variant's rate interval.
pub fn rate_interval(n: f64, x: f64, alpha: f64, phi: f64) -> (f64, f64) {
    if n <= 0.0 {
        return (0.0, 1.0);
    }
    let (lo, hi) = interval(
        |v, side| rate_log_e(n, x, v, side, phi),
        alpha,
        (1e-6, 1.0 - 1e-9),
    );
    (if lo <= 1e-6 { 0.0 } else { lo }, hi)
}

#[cfg(test)]
mod tests;
