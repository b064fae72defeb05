//! The figures: rates with Wilson 95 % intervals, medians and p90s of times.

use crate::{End, Fate};

/// Wilson score interval (95 %) of `k` successes in `n`.
pub fn wilson(k: usize, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (k, n, z) = (k as f64, n as f64, 1.96f64);
    let p = k / n;
    let denom = 1.0 + z * z / n;
    let centre = (p + z * z / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / denom;
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// Nearest-rank quantile of `xs` (sorted here).
pub fn quantile(xs: &mut [f64], q: f64) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(f64::total_cmp);
    let rank = ((q * xs.len() as f64).ceil() as usize).clamp(1, xs.len());
    Some(xs[rank - 1])
}

/// One judge's results on one scenario.
#[derive(Debug, Clone)]
pub struct Tally {
    pub runs: usize,
    pub rolled_back: usize,
    /// Rolled back with the fairness check among the failed.
    pub by_fairness: usize,
    pub promoted: usize,
    pub rollback_s: Vec<f64>,
    pub promotion_s: Vec<f64>,
}

impl Tally {
    pub fn of(ends: &[End]) -> Tally {
        let mut t = Tally {
            runs: ends.len(),
            rolled_back: 0,
            by_fairness: 0,
            promoted: 0,
            rollback_s: Vec::new(),
            promotion_s: Vec::new(),
        };
        for e in ends {
            match e.fate {
                Fate::RolledBack => {
                    t.rolled_back += 1;
                    t.by_fairness += usize::from(e.by_fairness);
                    t.rollback_s.push(e.at_s);
                }
                Fate::Promoted => {
                    t.promoted += 1;
                    t.promotion_s.push(e.at_s);
                }
                Fate::Held => {}
            }
        }
        t
    }

    pub fn rolled_back_rate(&self) -> (f64, f64, f64) {
        let (lo, hi) = wilson(self.rolled_back, self.runs);
        (self.rolled_back as f64 / self.runs as f64, lo, hi)
    }

    pub fn fairness_rate(&self) -> (f64, f64, f64) {
        let (lo, hi) = wilson(self.by_fairness, self.runs);
        (self.by_fairness as f64 / self.runs as f64, lo, hi)
    }

    pub fn promoted_rate(&self) -> (f64, f64, f64) {
        let (lo, hi) = wilson(self.promoted, self.runs);
        (self.promoted as f64 / self.runs as f64, lo, hi)
    }

    pub fn median_rollback(&self) -> Option<f64> {
        quantile(&mut self.rollback_s.clone(), 0.5)
    }

    pub fn p90_rollback(&self) -> Option<f64> {
        quantile(&mut self.rollback_s.clone(), 0.9)
    }

    pub fn median_promotion(&self) -> Option<f64> {
        quantile(&mut self.promotion_s.clone(), 0.5)
    }
}

pub fn pct((p, lo, hi): (f64, f64, f64)) -> String {
    format!("{:5.1} % [{:.1}, {:.1}]", 100.0 * p, 100.0 * lo, 100.0 * hi)
}

pub fn secs(x: Option<f64>) -> String {
    x.map_or("-".into(), |s| format!("{s:.0} s"))
}
