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
//! **Rule.** Inconclusive below `minSamples` scored predictions on either side (PSI of two samples
//! of one distribution is inflated by noise, about `(bins − 1) · (1/n_c + 1/n_s)`). *Pass* iff
//! `PSI ≤ maxPsi`. *Fail* iff `PSI > maxPsi` **and** Pearson's chi-square homogeneity test on the
//! bin counts rejects "same distribution" at `alpha`: a large PSI from a small, noisy sample holds
//! the rollout instead of rolling it back. Otherwise inconclusive.

use super::quantile::Bucket;
use super::stats::chi_square_homogeneity;
use super::{Outcome, VariantWindow, Verdict};

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

/// The prediction-drift rule (see the module doc).
pub fn prediction_drift(
    name: &str,
    max_psi: f64,
    min_samples: u64,
    alpha: f64,
    canary: &VariantWindow,
    stable: &VariantWindow,
) -> Verdict {
    let b = bins(&canary.scores, &stable.scores);
    let (nc, ns) = b
        .as_ref()
        .map_or((0, 0), |b| (b.n_canary() as u64, b.n_stable() as u64));
    let mut v = Verdict {
        check: name.to_owned(),
        outcome: Outcome::Inconclusive,
        canary: None,
        stable: None,
        threshold: Some(max_psi),
        n_canary: nc,
        n_stable: ns,
        p_value: None,
        message: String::new(),
        ..Default::default()
    };
    let Some(b) = b else {
        v.message = "no score histogram with a +Inf bucket on both variants".into();
        return v;
    };
    if nc < min_samples || ns < min_samples {
        v.message =
            format!("{nc} canary / {ns} stable scored predictions: below minSamples {min_samples}");
        return v;
    }
    let Some(value) = psi(&b) else {
        v.message = "no scored predictions".into();
        return v;
    };
    v.canary = Some(value);
    if value <= max_psi {
        v.outcome = Outcome::Pass;
        v.message = format!("score PSI {value:.4} within {max_psi}");
        return v;
    }
    let p = chi_square_homogeneity(&b.canary, &b.stable).map_or(1.0, |(_, _, p)| p);
    v.p_value = Some(p);
    if p < alpha {
        v.outcome = Outcome::Fail;
        v.message = format!(
            "canary score distribution drifted: PSI {value:.4} above {max_psi} (chi-square p={p:.2e})"
        );
    } else {
        v.message = format!(
            "score PSI {value:.4} above {max_psi}, not significantly (p={p:.2e}, alpha {alpha})"
        );
    }
    v
}
