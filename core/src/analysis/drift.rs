//! Prediction drift: has the canary's score distribution moved away from stable's?
//!
//! **Measure.** The Population Stability Index over the score histogram's bins,
//! `PSI = Σ (c_i − s_i) · ln(c_i / s_i)`, with `c_i` / `s_i` the share of each variant's scored
//! predictions in bin `i`. Bins are the filter's cumulative buckets differenced (`(−∞, 50]`,
//! `(50, 100]`, …, `(950, 1000]`, `(1000, +∞)` per mille); only bounds both variants report are
//! used, so a histogram with other bounds (Envoy's defaults) still compares like with like.
//!
//! **Empty bins.** `ln(0)` is undefined, so a share of 0 in one variant (and not the other) is
//! replaced by [`EPSILON`] = 1e-4, the common PSI convention. The cost is a bounded term: a bin
//! holding 1 % of stable and none of the canary adds `(0.01 − 1e-4) · ln(100) ≈ 0.046`. Bins empty
//! in both variants add nothing and are skipped.
//!
//! **Rule**, anytime-valid on the whole rollout's histograms (summed per weight): every bin's share
//! gets a confidence sequence for each variant ([`sequential::rate_interval`], each at
//! `alpha / 2K` for `K` bins, so all hold together with probability ≥ 1 − alpha at all times; the
//! multinomial's dependence is covered by the union bound), and the PSI over those boxes has a
//! lower and an upper bound (each term `(c − s) ln(c / s)` is convex, 0 where `c = s`: its least
//! value over a box is at the corner nearest the diagonal, 0 if the box meets it). *Fail* iff the
//! lower bound is above `maxPsi` — every distribution the data allow is farther than `maxPsi`;
//! *pass* (the step may advance) iff not, with `minSamples` scored predictions on both variants at
//! this weight; promotion needs the point PSI within `maxPsi`. Stable's positives dispersion
//! tempers the evidence.

use super::quantile::Bucket;
use super::sequential;
use super::{Observations, Outcome, Verdict};

/// The share used for a bin one variant left empty (see the module doc).
pub const EPSILON: f64 = 1e-4;

/// Per-bin counts of both variants over the bounds they share.
#[derive(Debug, Clone, PartialEq)]
pub struct Bins {
    /// Upper bound of each bin (the last is `+Inf`).
    pub le: Vec<f64>,
    pub canary: Vec<f64>,
    pub stable: Vec<f64>,
}

impl Bins {
    pub fn n_canary(&self) -> f64 {
        self.canary.iter().sum()
    }
    pub fn n_stable(&self) -> f64 {
        self.stable.iter().sum()
    }
}

/// Cumulative count at each of `les` (sorted): the largest count listed for that bound, made
/// monotonic like PromQL does (scrape skew can make a cumulative count dip).
fn cumulative_at(buckets: &[Bucket], les: &[f64]) -> Vec<f64> {
    let mut running = 0.0f64;
    les.iter()
        .map(|&le| {
            let c = buckets
                .iter()
                .filter(|b| b.le == le && b.count.is_finite())
                .map(|b| b.count)
                .fold(0.0, f64::max);
            running = running.max(c);
            running
        })
        .collect()
}

/// Difference two cumulative histograms into per-bin counts over their common bounds. `None`
/// when either lacks a `+Inf` bucket (its total is unknown).
pub fn bins(canary: &[Bucket], stable: &[Bucket]) -> Option<Bins> {
    let mut les: Vec<f64> = canary
        .iter()
        .map(|b| b.le)
        .filter(|&le| !le.is_nan() && stable.iter().any(|s| s.le == le))
        .collect();
    les.sort_by(f64::total_cmp);
    les.dedup();
    if les.last() != Some(&f64::INFINITY) {
        return None;
    }
    let per_bin = |cum: Vec<f64>| -> Vec<f64> {
        let mut prev = 0.0;
        cum.into_iter()
            .map(|c| {
                let d = c - prev;
                prev = c;
                d
            })
            .collect()
    };
    Some(Bins {
        canary: per_bin(cumulative_at(canary, &les)),
        stable: per_bin(cumulative_at(stable, &les)),
        le: les,
    })
}

/// PSI of the canary against stable over `bins`; `None` when either side is empty.
pub fn psi(bins: &Bins) -> Option<f64> {
    let (nc, ns) = (bins.n_canary(), bins.n_stable());
    if nc <= 0.0 || ns <= 0.0 {
        return None;
    }
    let mut sum = 0.0;
    for (&c, &s) in bins.canary.iter().zip(&bins.stable) {
        if c <= 0.0 && s <= 0.0 {
            continue;
        }
        let pc = (c / nc).max(EPSILON);
        let ps = (s / ns).max(EPSILON);
        sum += (pc - ps) * (pc / ps).ln();
    }
    Some(sum)
}

/// `(c − s) ln(c / s)` with both shares at least [`EPSILON`].
fn term(c: f64, s: f64) -> f64 {
    let (c, s) = (c.max(EPSILON), s.max(EPSILON));
    (c - s) * (c / s).ln()
}

/// One bin's intervals for its share: `(canary, stable)`, each `(low, high)`.
pub type BinBox = ((f64, f64), (f64, f64));

/// The PSI's lower and upper bounds over each bin's boxes.
pub fn psi_bounds(boxes: &[BinBox]) -> (f64, f64) {
    boxes
        .iter()
        .fold((0.0, 0.0), |(lo, hi), &((cl, ch), (sl, sh))| {
            let least = if cl > sh {
                term(cl, sh)
            } else if ch < sl {
                term(ch, sl)
            } else {
                0.0
            };
            let most = [term(cl, sh), term(ch, sl), term(cl, sl), term(ch, sh)]
                .into_iter()
                .fold(0.0, f64::max);
            (lo + least, hi + most)
        })
}

/// The check's parameters, as validated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DriftRule {
    pub max_psi: f64,
    pub min_samples: u64,
    /// The check's share of the budget.
    pub alpha: f64,
}

/// The prediction-drift rule (see the module doc).
pub fn prediction_drift(name: &str, rule: &DriftRule, obs: &Observations<'_>) -> Verdict {
    let all = obs.evidence.total();
    let b = bins(&all.canary.scores, &all.stable.scores);
    let (nc, ns) = b
        .as_ref()
        .map_or((0, 0), |b| (b.n_canary() as u64, b.n_stable() as u64));
    let max_psi = rule.max_psi;
    let mut v = Verdict {
        check: name.to_owned(),
        outcome: Outcome::Inconclusive,
        threshold: Some(max_psi),
        n_canary: nc,
        n_stable: ns,
        ..Default::default()
    };
    let Some(b) = b else {
        v.message = "no score histogram with a +Inf bucket on both variants".into();
        return v;
    };
    let Some(value) = psi(&b) else {
        v.message = "no scored predictions".into();
        return v;
    };
    v.canary = Some(value);
    let used = b
        .canary
        .iter()
        .zip(&b.stable)
        .filter(|(c, s)| **c > 0.0 || **s > 0.0)
        .count()
        .max(1);
    let per_bin = rule.alpha / (2 * used) as f64;
    let phi = obs.evidence.dispersion.positives.phi();
    let (n_c, n_s) = (b.n_canary(), b.n_stable());
    let boxes: Vec<_> = b
        .canary
        .iter()
        .zip(&b.stable)
        .filter(|(c, s)| **c > 0.0 || **s > 0.0)
        .map(|(&c, &s)| {
            (
                sequential::rate_interval(n_c, c, per_bin, phi),
                sequential::rate_interval(n_s, s, per_bin, phi),
            )
        })
        .collect();
    let (lower, upper) = psi_bounds(&boxes);
    v.interval = Some([lower, upper]);
    let current = obs.current();
    let sampled =
        current.canary.scored >= rule.min_samples && current.stable.scored >= rule.min_samples;
    let shown = format!("score PSI {value:.4} in [{lower:.4}, {upper:.4}]");
    if lower > max_psi {
        v.outcome = Outcome::Fail;
        v.message = format!("canary score distribution drifted: {shown}, above {max_psi}");
    } else if !sampled {
        v.message = format!(
            "{shown}; {} canary / {} stable scored predictions at this weight, below minSamples {}",
            current.canary.scored, current.stable.scored, rule.min_samples
        );
    } else {
        v.outcome = Outcome::Pass;
        v.harm_excluded = value <= max_psi;
        v.message = if value <= max_psi {
            format!("{shown}: within {max_psi}")
        } else {
            format!("{shown}: above {max_psi} by its point, not shown")
        };
    }
    v
}
