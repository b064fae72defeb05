//! Tiny logistic-regression fraud models, trained at start-up by Newton's method (IRLS) on the
//! synthetic data set — deterministic, a few milliseconds, no external weights.

use crate::data::{Example, Transaction};

/// The three versions of the case study.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// Stable: amount and time of day only.
    V1,
    /// Better: adds merchant category and foreign use. Never sees age: fair.
    V2,
    /// Also better overall, but uses the age band and so learns the history's bias against 60+.
    V3,
}

impl Version {
    pub fn parse(s: &str) -> Option<Version> {
        match s {
            "v1" | "1" => Some(Version::V1),
            "v2" | "2" => Some(Version::V2),
            "v3" | "3" => Some(Version::V3),
            _ => None,
        }
    }

    pub fn number(self) -> u32 {
        match self {
            Version::V1 => 1,
            Version::V2 => 2,
            Version::V3 => 3,
        }
    }

    /// Which of the full feature vector's columns this version uses.
    fn mask(self) -> &'static [usize] {
        match self {
            Version::V1 => &[0, 1, 2],
            Version::V2 => &[0, 1, 2, 3, 4, 5, 6, 7],
            Version::V3 => &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        }
    }
}

/// bias, log2(1 + amount/100), night, travel, online, electronics, gaming, foreign, 31-60, 60+.
fn full_features(tx: &Transaction) -> [f64; 10] {
    let m = tx.merchant_category.as_str();
    let one = |b: bool| if b { 1.0 } else { 0.0 };
    [
        1.0,
        (1.0 + tx.amount.max(0.0) / 100.0).log2(),
        one(tx.hour < 6),
        one(m == "travel"),
        one(m == "online"),
        one(m == "electronics"),
        one(m == "gaming"),
        one(tx.foreign),
        one(tx.age_band == "31-60"),
        one(tx.age_band == "60+"),
    ]
}

#[derive(Debug, Clone)]
pub struct Model {
    pub version: Version,
    weights: Vec<f64>,
    /// Logit of the raw score at the alert budget's cut: subtracted so that the served score
    /// crosses 0.5 for the top `ALERT_RATE` of transactions, whatever the version.
    offset: f64,
}

/// Share of transactions each version is calibrated to flag (score ≥ 0.5): the fraud team's
/// review budget. Same for every version, so a fair model flags every age band alike.
pub const ALERT_RATE: f64 = 0.06;

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

impl Model {
    /// Fit on the recorded (historic) labels, as a team would: it is the data they have.
    pub fn train(version: Version, data: &[Example]) -> Model {
        let cols = version.mask();
        let k = cols.len();
        let xs: Vec<Vec<f64>> = data
            .iter()
            .map(|e| {
                let f = full_features(&e.tx);
                cols.iter().map(|&c| f[c]).collect()
            })
            .collect();
        let ys: Vec<f64> = data
            .iter()
            .map(|e| if e.historic_label { 1.0 } else { 0.0 })
            .collect();
        let lambda = 1e-3 * data.len() as f64;
        let mut w = vec![0.0; k];
        for _ in 0..25 {
            let mut grad = vec![0.0; k];
            let mut hess = vec![vec![0.0; k]; k];
            for (x, y) in xs.iter().zip(&ys) {
                let p = sigmoid(x.iter().zip(&w).map(|(a, b)| a * b).sum());
                let s = (p * (1.0 - p)).max(1e-9);
                for i in 0..k {
                    grad[i] += (y - p) * x[i];
                    for j in 0..k {
                        hess[i][j] += s * x[i] * x[j];
                    }
                }
            }
            for i in 1..k {
                grad[i] -= lambda * w[i];
                hess[i][i] += lambda;
            }
            let Some(step) = solve(hess, grad) else { break };
            let size: f64 = step.iter().map(|d| d.abs()).sum();
            for (wi, d) in w.iter_mut().zip(&step) {
                *wi += d;
            }
            if size < 1e-8 {
                break;
            }
        }
        let mut model = Model {
            version,
            weights: w,
            offset: 0.0,
        };
        let mut raw: Vec<f64> = data.iter().map(|e| model.logit(&e.tx)).collect();
        raw.sort_by(f64::total_cmp);
        let cut = ((1.0 - ALERT_RATE) * raw.len() as f64) as usize;
        model.offset = raw
            .get(cut.min(raw.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0);
        model
    }

    fn logit(&self, tx: &Transaction) -> f64 {
        let f = full_features(tx);
        self.version
            .mask()
            .iter()
            .zip(&self.weights)
            .map(|(&c, w)| f[c] * w)
            .sum()
    }

    /// The fraud score served: calibrated so that 0.5 is the version's alert cut.
    pub fn predict(&self, tx: &Transaction) -> f64 {
        sigmoid(self.logit(tx) - self.offset)
    }
}

/// Solve `a · x = b` by Gaussian elimination with partial pivoting; `None` if singular.
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        let (upper, lower) = a.split_at_mut(col + 1);
        let pivot_row = &upper[col];
        for (off, row) in lower.iter_mut().enumerate() {
            let f = row[col] / pivot_row[col];
            for (x, p) in row[col..].iter_mut().zip(&pivot_row[col..]) {
                *x -= f * p;
            }
            b[col + 1 + off] -= f * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let s: f64 = (row + 1..n).map(|c| a[row][c] * x[c]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    Some(x)
}

/// How a model does on held-out data against the TRUE labels.
#[derive(Debug, Clone)]
pub struct Report {
    pub auc: f64,
    pub positive_rate: f64,
    /// (age band, positive rate) at the threshold.
    pub positive_rate_by_band: Vec<(String, f64)>,
}

/// Area under the ROC curve (Mann–Whitney) and positive rates at `threshold`.
pub fn evaluate(model: &Model, test: &[Example], threshold: f64) -> Report {
    let mut scored: Vec<(f64, bool)> = test
        .iter()
        .map(|e| (model.predict(&e.tx), e.fraud))
        .collect();
    scored.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut rank_sum, mut pos) = (0.0, 0.0);
    for (i, (_, y)) in scored.iter().enumerate() {
        if *y {
            rank_sum += (i + 1) as f64;
            pos += 1.0;
        }
    }
    let neg = scored.len() as f64 - pos;
    let auc = (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg).max(1.0);
    let rate = |it: &mut dyn Iterator<Item = &Example>| {
        let (mut n, mut p) = (0.0, 0.0);
        for e in it {
            n += 1.0;
            if model.predict(&e.tx) >= threshold {
                p += 1.0;
            }
        }
        p / f64::max(n, 1.0)
    };
    let by_band = crate::data::AGE_BANDS
        .iter()
        .map(|b| {
            (
                b.to_string(),
                rate(&mut test.iter().filter(|e| e.tx.age_band == *b)),
            )
        })
        .collect();
    Report {
        auc,
        positive_rate: rate(&mut test.iter()),
        positive_rate_by_band: by_band,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{data, trained, TEST_SEED};

    /// The case study's premise, checked on held-out data against the true labels.
    #[test]
    fn v2_is_better_and_fair_v3_is_better_but_flags_the_elderly() {
        let test = data::dataset(TEST_SEED, 20_000);
        let r: Vec<Report> = [Version::V1, Version::V2, Version::V3]
            .iter()
            .map(|&v| evaluate(&trained(v), &test, 0.5))
            .collect();
        let band = |r: &Report, b: &str| {
            r.positive_rate_by_band
                .iter()
                .find(|(n, _)| n == b)
                .map(|x| x.1)
                .unwrap()
        };
        assert!(
            r[1].auc > r[0].auc + 0.03,
            "v2 {} vs v1 {}",
            r[1].auc,
            r[0].auc
        );
        assert!(
            r[2].auc > r[0].auc + 0.01,
            "v3 {} vs v1 {}",
            r[2].auc,
            r[0].auc
        );
        for rep in &r {
            assert!(
                (rep.positive_rate - ALERT_RATE).abs() < 0.01,
                "calibrated to the budget: {}",
                rep.positive_rate
            );
        }
        for b in data::AGE_BANDS {
            let ratio = band(&r[1], b) / band(&r[0], b);
            assert!(
                (0.8..1.25).contains(&ratio),
                "v2 fair in {b}: ratio {ratio}"
            );
        }
        assert!(
            band(&r[2], "60+") / band(&r[0], "60+") > 3.0,
            "v3 flags 60+ several times more"
        );
    }

    #[test]
    fn training_is_deterministic() {
        let tx = data::transaction(&mut data::Rng(3), "60+");
        assert_eq!(
            trained(Version::V3).predict(&tx),
            trained(Version::V3).predict(&tx)
        );
    }
}
