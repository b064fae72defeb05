//! Ground truth on the same code path: `Engine::tick` with `spec.feedback` (bake) and the label
//! checks — `falsePositiveRate {maxRatio: 1.5}` and `equalizedOdds {maxRatio: 1.5}` — next to
//! the flag-rate and fairness checks, fed windows whose labels arrive late.
//!
//! Traffic as the other scenarios (150 → 250 rps); segments 35 / 45 / 20 % (the case study's age
//! bands); fraud prevalence 4.4 %; stable detects 34 % of frauds and flags 4.8 % of legitimate
//! transactions in every band (the case study's v2). Each interval's predictions get their labels
//! later: flagged ones (reviews) one interval on, unflagged ones (chargebacks or their absence)
//! two intervals on — so the labelled set leans to flagged predictions for a while, as in life.
//!
//! The anchor on the same streams is the naive repeated look: at every interval, per band and
//! for each rate, a two-proportion z-test of canary against stable at 1 % (no correction for the
//! looks, the bands or the rates) once both have 100 labels in the rate's denominator — what a
//! dashboard alert on labelled metrics amounts to. Flagger has no ground-truth judge.
//!
//! Printed per scenario: rolled back / promoted with Wilson 95 % intervals, the median time to
//! the end, and how often the naive look would have rolled back.

use std::collections::VecDeque;
use std::time::SystemTime;

use mlcanary_controller::metrics::{unix_ms, MetricsError, MetricsSource, Reading};
use mlcanary_controller::policy::{CanaryPolicySpec, ValidatedPolicy};
use mlcanary_core::window::{Labels, Mark, SegmentCounts, Window};

use crate::report::{pct, secs, wilson, Tally};
use crate::sim::{rps, Rng};
use crate::{End, INTERVAL_S};

const BANDS: [(&str, f64); 3] = [("18-30", 0.35), ("31-60", 0.45), ("60+", 0.20)];
const PREVALENCE: f64 = 0.044;

/// Per band: (detection rate, false-positive rate).
type Rates = [(f64, f64); 3];

const STABLE: Rates = [(0.34, 0.048); 3];

/// The labels' delay in the bench: two intervals for the slowest (chargebacks).
pub const LABEL_DELAY_S: f64 = 2.0 * INTERVAL_S;

fn policy(label_delay: f64) -> ValidatedPolicy {
    let delay = if label_delay > 0.0 {
        format!(", labelDelay: {label_delay}s")
    } else {
        String::new()
    };
    let yaml = format!(
        "target: {{virtualService: m, hosts: [m], wasmPlugin: p}}\n\
         routing: {{segment: {{header: x-age-band, values: [\"18-30\", \"31-60\", \"60+\"]}}}}\n\
         predictions: {{format: tfserving, classIndex: 1, positiveThreshold: 0.5}}\n\
         feedback: {{secretRef: {{name: k}}, bake: true{delay}}}\n\
         schedule: {{interval: {INTERVAL_S}s, steps: [5, 10, 20, 50]}}\n\
         analysis: {{checks: [{{name: errors, errorRate: {{max: 0.01}}}}, \
           {{name: flag-rate, positiveRate: {{maxRelativeShift: 0.3}}}}, \
           {{name: fairness, segmentDisparity: {{minRatio: 0.8, maxRatio: 1.25}}}}, \
           {{name: fpr, falsePositiveRate: {{maxRatio: 1.5}}}}, \
           {{name: eo, equalizedOdds: {{maxRatio: 1.5}}}}]}}\n"
    );
    let spec: CanaryPolicySpec = serde_yaml::from_str(&yaml).expect("bench policy parses");
    let mut p = ValidatedPolicy::from_spec("bench", &spec).expect("bench policy is valid");
    let key = [("key".to_owned(), b"a bench key, never a real one".to_vec())];
    if let Some(f) = p.feedback.as_mut() {
        f.set_keys(&key.into_iter().collect())
            .expect("the bench key is long enough");
    }
    p
}

/// One interval's predictions of one variant in one band, and their labels.
fn draw(rng: &mut Rng, n: u64, (tpr, fpr): (f64, f64)) -> (u64, Labels) {
    let frauds = rng.binomial(n, PREVALENCE);
    let tp = rng.binomial(frauds, tpr);
    let fp = rng.binomial(n - frauds, fpr);
    let labels = Labels {
        tp,
        fp,
        tn: n - frauds - fp,
        fn_: frauds - tp,
    };
    (tp + fp, labels)
}

/// Labels due in the coming intervals, per variant and band.
type Due = VecDeque<[[Labels; 3]; 2]>;

struct Source<'a> {
    rng: &'a mut Rng,
    canary: Rates,
    start_ms: i64,
    weight_bp: u32,
    due: Due,
    served: u64,
    /// Labels arrived so far, per variant and band (for the naive look).
    seen: [[Labels; 3]; 2],
    naive_fired: bool,
}

fn add(a: &mut Labels, b: &Labels) {
    *a = a.add(b);
}

impl MetricsSource for Source<'_> {
    async fn fetch(
        &mut self,
        _: &ValidatedPolicy,
        since: Option<&Mark>,
        now: SystemTime,
    ) -> Result<Reading, MetricsError> {
        Ok(crate::simulated(since, now, self.start_ms, |from, to| {
            let n = self.rng.poisson(rps(0.5 * (from + to)) * (to - from));
            let share = f64::from(self.weight_bp) / 10_000.0;
            let nc = self.rng.binomial(n, share);
            while self.due.len() < 3 {
                self.due.push_back(Default::default());
            }
            let mut w = Window::default();
            for (vi, (v, total, rates)) in [
                (&mut w.stable, n - nc, STABLE),
                (&mut w.canary, nc, self.canary),
            ]
            .into_iter()
            .enumerate()
            {
                let mut left = total;
                let mut share_left = 1.0;
                for (bi, &(band, share)) in BANDS.iter().enumerate() {
                    let nb = if bi + 1 == BANDS.len() {
                        left
                    } else {
                        self.rng.binomial(left, (share / share_left).min(1.0))
                    };
                    left -= nb;
                    share_left -= share;
                    let (flags, l) = draw(self.rng, nb, rates[bi]);
                    // Reviews (flagged) next interval, chargebacks the one after.
                    let flagged = Labels {
                        tp: l.tp,
                        fp: l.fp,
                        ..Default::default()
                    };
                    let unflagged = Labels {
                        tn: l.tn,
                        fn_: l.fn_,
                        ..Default::default()
                    };
                    add(&mut self.due[1][vi][bi], &flagged);
                    add(&mut self.due[2][vi][bi], &unflagged);
                    let arrived = self.due[0][vi][bi];
                    add(&mut self.seen[vi][bi], &arrived);
                    v.requests += nb;
                    v.scored += nb;
                    v.positives += flags;
                    add(&mut v.labels, &arrived);
                    v.segments.insert(
                        band.to_owned(),
                        SegmentCounts {
                            requests: nb,
                            scored: nb,
                            positives: flags,
                            labels: arrived,
                            ..Default::default()
                        },
                    );
                }
            }
            self.due.pop_front();
            self.served += w.canary.requests;
            self.naive_fired |= naive(&self.seen);
            w
        }))
    }
}

/// The naive look: any band's FPR or TPR differing at |z| > 2.576 (two-proportion z-test).
fn naive(seen: &[[Labels; 3]; 2]) -> bool {
    let z = |(x1, n1): (u64, u64), (x2, n2): (u64, u64)| {
        if n1 < 100 || n2 < 100 {
            return 0.0;
        }
        let (p1, p2) = (x1 as f64 / n1 as f64, x2 as f64 / n2 as f64);
        let p = (x1 + x2) as f64 / (n1 + n2) as f64;
        let se = (p * (1.0 - p) * (1.0 / n1 as f64 + 1.0 / n2 as f64)).sqrt();
        if se > 0.0 {
            (p1 - p2) / se
        } else {
            0.0
        }
    };
    (0..3).any(|b| {
        let (s, c) = (&seen[0][b], &seen[1][b]);
        let fpr = |l: &Labels| (l.fp, l.fp + l.tn);
        let tpr = |l: &Labels| (l.tp, l.tp + l.fn_);
        z(fpr(c), fpr(s)).abs() > 2.576 || z(tpr(c), tpr(s)).abs() > 2.576
    })
}

struct GtEnd {
    end: End,
    naive: bool,
    /// The checks that failed at the end (for a rollback).
    failed: Vec<String>,
}

async fn run(policy: &ValidatedPolicy, rng: &mut Rng, canary: Rates) -> GtEnd {
    let mut source = Source {
        rng,
        canary,
        start_ms: unix_ms(crate::bench_start()),
        weight_bp: 0,
        due: VecDeque::new(),
        served: 0,
        seen: Default::default(),
        naive_fired: false,
    };
    let (end, _) = crate::drive(
        policy,
        &mut source,
        |s, status| s.weight_bp = status.canary_weight_bp,
        |s| s.served,
    )
    .await;
    GtEnd {
        end,
        naive: source.naive_fired,
        failed: crate::last_failed(),
    }
}

fn scenarios() -> Vec<(&'static str, Rates, u64)> {
    vec![
        ("healthy: canary = stable in every band", STABLE, 1),
        (
            "v4: 60+ signal lost (TPR 0.34 -> 0.06, FPR 0.048 -> 0.063)",
            [STABLE[0], STABLE[1], (0.06, 0.063)],
            4,
        ),
        ("FPR 2x in every band, TPR kept", [(0.34, 0.096); 3], 4),
    ]
}

/// Run every scenario `runs` times (detection: a quarter) and print the section.
pub fn report(runs: u64, seed: u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    println!(
        "\n# ground truth: labels 1 (flagged) / 2 (unflagged) intervals late, checks fpr + \
         equalized odds (maxRatio 1.5, bake) beside flag-rate and fairness; same code path"
    );
    println!(
        "{:<60} {:>6} {:>24} {:>24} {:>14} {:>24}",
        "scenario",
        "runs",
        "rolled back [95 % CI]",
        "promoted [95 % CI]",
        "end median",
        "naive look [95 % CI]"
    );
    let rows = [("labelDelay 60s", LABEL_DELAY_S), ("labelDelay 0", 0.0)];
    for (k, (name, canary, divisor)) in scenarios().into_iter().enumerate() {
        for (how, delay) in rows {
            let p = policy(delay);
            let n = (runs / divisor).max(1);
            let ends: Vec<GtEnd> = (0..n)
                .map(|r| {
                    let s = seed ^ (0xC3 + k as u64) << 40 ^ r.wrapping_mul(0x9E37_79B9);
                    rt.block_on(run(&p, &mut Rng(s), canary))
                })
                .collect();
            let name = format!("{name}, {how}");
            let t = Tally::of(&ends.iter().map(|e| e.end).collect::<Vec<_>>());
            let naive = ends.iter().filter(|e| e.naive).count();
            let (lo, hi) = wilson(naive, ends.len());
            let mut at: Vec<f64> = ends
                .iter()
                .filter(|e| e.end.at_s.is_finite())
                .map(|e| e.end.at_s)
                .collect();
            let mut by: std::collections::BTreeMap<&str, usize> = Default::default();
            for e in ends
                .iter()
                .filter(|e| e.end.fate == crate::Fate::RolledBack)
            {
                for c in &e.failed {
                    *by.entry(c.as_str()).or_default() += 1;
                }
            }
            let by: Vec<String> = by.iter().map(|(c, n)| format!("{c} {n}")).collect();
            println!(
                "{name:<60} {:>6} {:>24} {:>24} {:>14} {:>24}  {}",
                t.runs,
                pct(t.rolled_back_rate()),
                pct(t.promoted_rate()),
                secs(crate::report::quantile(&mut at, 0.5)),
                pct((naive as f64 / ends.len() as f64, lo, hi)),
                by.join(", "),
            );
        }
    }
}
