//! `judge-bench`: how fast and how wrongly two judges react to a canary's error rate.
//!
//! Simulates request streams at a fixed canary share (seeded, reproducible) and judges each stream
//! interval by interval with
//! - **mlcanary**: the real `analysis::evaluate` (error-rate check: minimum sample + significance
//!   tests) and the real `rollout::step` state machine (rollback after `failureThreshold`
//!   consecutive failed analyses, progress deadline), on a one-step policy held at the canary
//!   share by a manual gate, and
//! - **fixed threshold** (Flagger-style): each interval the canary's success rate below `min` is a
//!   failed check; rollback once `threshold` checks have failed (Flagger counts failed checks over
//!   the analysis, not consecutively: "interval × threshold" is its documented time to roll back).
//!
//! Prints per scenario and judge: rollback rate (detection, or false rollback for a healthy
//! canary), median and p90 time to rollback, and whether the goal holds: detect a 3× canary at
//! least 2× sooner than the fixed judge with at most 1/10 of its false rollbacks.
//!
//! A second table compares **schedules** on the real `evaluate` + `rollout::step` (with the
//! engine's rule of summing windows while inconclusive at one weight): how long a healthy canary
//! takes to reach 100 % with fixed steps vs the adaptive schedule, with the same checks, alpha,
//! minRequests and failureThreshold (the same per-analysis false-failure risk), how often each
//! rolls a healthy canary back, and how many requests a broken canary serves before its rollback.
//!
//! `cargo run -p mlcanary-controller --release --bin judge-bench [-- --runs 500 --seed 1]`

use std::time::{Duration, SystemTime};

use mlcanary_controller::policy::{CanaryPolicySpec, CanaryPolicyStatus, Phase, ValidatedPolicy};
use mlcanary_core::analysis::{evaluate, VariantWindow, Window};
use mlcanary_core::rollout;

/// The simulated traffic.
#[derive(Debug, Clone, Copy)]
struct Traffic {
    total_rps: f64,
    canary_share: f64,
    interval_s: u64,
    intervals: u32,
    stable_error_rate: f64,
}

const TRAFFIC: Traffic = Traffic {
    total_rps: 200.0,
    canary_share: 0.05,
    interval_s: 30,
    intervals: 20,
    stable_error_rate: 0.01,
};

/// SplitMix64: tiny, seedable, and good enough for Bernoulli draws; no dependency.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Binomial(n, p) by counting Bernoulli draws: exact, and fast enough for a few thousand.
    fn binomial(&mut self, n: u64, p: f64) -> u64 {
        (0..n).filter(|_| self.unit() < p).count() as u64
    }
}

/// One interval's counts for both variants.
fn interval(rng: &mut Rng, t: &Traffic, canary_error_rate: f64) -> Window {
    let requests = (t.total_rps * t.interval_s as f64).round() as u64;
    // The filter's plain percentage split draws a bucket per request.
    let canary_n = rng.binomial(requests, t.canary_share);
    let stable_n = requests - canary_n;
    let w = |n: u64, errors: u64| VariantWindow {
        requests: n,
        errors,
        ..Default::default()
    };
    Window {
        canary: w(canary_n, rng.binomial(canary_n, canary_error_rate)),
        stable: w(stable_n, rng.binomial(stable_n, t.stable_error_rate)),
    }
}

/// A judge: fed one window per interval, says whether it rolls back now.
trait Judge {
    fn name(&self) -> String;
    fn reset(&mut self);
    fn rolls_back(&mut self, w: &Window, elapsed: Duration) -> bool;
}

/// mlcanary: the real check and the real state machine.
struct Mlcanary {
    policy: ValidatedPolicy,
    status: CanaryPolicyStatus,
    t0: SystemTime,
}

impl Mlcanary {
    /// `overrides` are extra `spec.analysis` keys (YAML flow mapping entries), e.g.
    /// `alpha: 0.01`; none means mlcanary's defaults.
    fn new(max_error_rate: f64, t: &Traffic, overrides: &str) -> Self {
        let yaml = format!(
            "target: {{virtualService: m, hosts: [m], wasmPlugin: p}}\n\
             schedule: {{interval: {}s, steps: [{}], manualGate: true}}\n\
             analysis: {{{overrides}{}checks: [{{name: errors, errorRate: {{max: {max_error_rate}}}}}]}}\n",
            t.interval_s,
            (t.canary_share * 100.0).round() as u32,
            if overrides.is_empty() { "" } else { ", " },
        );
        let spec: CanaryPolicySpec = serde_yaml::from_str(&yaml).expect("bench policy parses");
        let policy = ValidatedPolicy::from_spec("bench", &spec).expect("bench policy is valid");
        let mut m = Mlcanary {
            policy,
            status: CanaryPolicyStatus::default(),
            t0: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        };
        m.reset();
        m
    }
}

impl Judge for Mlcanary {
    fn name(&self) -> String {
        format!(
            "mlcanary (alpha {}, minRequests {}, failureThreshold {})",
            self.policy.alpha, self.policy.min_requests, self.policy.failure_threshold
        )
    }
    fn reset(&mut self) {
        // Pending → Progressing at the first (and only) step; no analysis yet.
        let out = rollout::step(&CanaryPolicyStatus::default(), None, &self.policy, self.t0);
        self.status = out.status;
    }
    fn rolls_back(&mut self, w: &Window, elapsed: Duration) -> bool {
        let verdicts = evaluate(&self.policy, w);
        let out = rollout::step(
            &self.status,
            Some(&verdicts),
            &self.policy,
            self.t0 + elapsed,
        );
        self.status = out.status;
        self.status.phase == Phase::RolledBack
    }
}

/// Flagger-style fixed threshold on the canary's success rate.
struct Fixed {
    min_success: f64,
    threshold: u32,
    failed: u32,
}

impl Judge for Fixed {
    fn name(&self) -> String {
        format!(
            "fixed (success ≥ {}%, threshold {})",
            self.min_success * 100.0,
            self.threshold
        )
    }
    fn reset(&mut self) {
        self.failed = 0;
    }
    fn rolls_back(&mut self, w: &Window, _: Duration) -> bool {
        let c = &w.canary;
        let success = 1.0 - c.errors as f64 / (c.requests.max(1) as f64);
        if c.requests > 0 && success < self.min_success {
            self.failed += 1;
        }
        self.failed >= self.threshold
    }
}

/// Outcome of one scenario for one judge.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    runs: u32,
    /// Seconds to rollback of each run that rolled back.
    times: Vec<f64>,
}

impl Row {
    fn rate(&self) -> f64 {
        self.times.len() as f64 / self.runs as f64
    }
    fn quantile(&self, q: f64) -> Option<f64> {
        quantile(&self.times, q)
    }
}

/// Nearest-rank quantile (sorted copy); `None` for no data.
fn quantile(xs: &[f64], q: f64) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

/// Run `runs` seeded streams of a canary with `canary_error_rate` through `judge`. Every judge
/// sees the same streams (same seeds).
fn simulate(
    judge: &mut dyn Judge,
    t: &Traffic,
    canary_error_rate: f64,
    runs: u32,
    seed: u64,
) -> Row {
    let mut times = Vec::new();
    for run in 0..runs {
        let mut rng = Rng(seed.wrapping_mul(1_000_003).wrapping_add(run as u64));
        judge.reset();
        for i in 1..=t.intervals {
            let w = interval(&mut rng, t, canary_error_rate);
            let elapsed = Duration::from_secs(t.interval_s * i as u64);
            if judge.rolls_back(&w, elapsed) {
                times.push(elapsed.as_secs_f64());
                break;
            }
        }
    }
    Row { runs, times }
}

/// A schedule under test: `spec.schedule` keys as a YAML flow mapping body.
struct Schedule {
    label: &'static str,
    yaml: &'static str,
}

const SCHEDULES: [Schedule; 3] = [
    Schedule {
        label: "fixed stepWeight 5 → 50",
        yaml: "stepWeight: 5, maxWeight: 50",
    },
    Schedule {
        label: "fixed stepWeight 10 → 50",
        yaml: "stepWeight: 10, maxWeight: 50",
    },
    Schedule {
        label: "adaptive 5 → 50 (min 5, max step 25, ×2)",
        yaml: "adaptive: {minStepWeight: 5, maxStepWeight: 25, maxWeight: 50, growthFactor: 2}",
    },
];

/// Traffic of the schedule comparison (total rps; the canary share follows the rollout's weight).
const ROLLOUT_RPS: [f64; 2] = [200.0, 50.0];
const ROLLOUT_STABLE_ERRORS: f64 = 0.002;
const ROLLOUT_MAX_ERRORS: f64 = 0.01;
const ROLLOUT_INTERVALS: u32 = 60;

fn schedule_policy(s: &Schedule, interval_s: u64) -> ValidatedPolicy {
    let yaml = format!(
        "target: {{virtualService: m, hosts: [m], wasmPlugin: p}}\n\
         schedule: {{interval: {interval_s}s, {}}}\n\
         progressDeadline: 1h\n\
         analysis: {{checks: [{{name: errors, errorRate: {{max: {ROLLOUT_MAX_ERRORS}}}}}]}}\n",
        s.yaml
    );
    let spec: CanaryPolicySpec = serde_yaml::from_str(&yaml).expect("schedule policy parses");
    ValidatedPolicy::from_spec("bench", &spec).expect("schedule policy is valid")
}

/// One rollout to its end (or the horizon).
#[derive(Debug, Clone, Copy, PartialEq)]
enum End {
    Promoted { secs: f64 },
    RolledBack { canary_requests: u64 },
    Running,
}

/// Drive one rollout: each interval the canary gets `weight` of the requests.
fn rollout_run(p: &ValidatedPolicy, rng: &mut Rng, canary_error_rate: f64, rps: f64) -> End {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let mut status = rollout::step(&CanaryPolicyStatus::default(), None, p, t0).status;
    let interval_s = p.interval.as_secs();
    let requests = (rps * interval_s as f64).round() as u64;
    let mut pending: Option<(u32, Window)> = None;
    let mut served = 0u64;
    for i in 1..=ROLLOUT_INTERVALS {
        let share = f64::from(status.canary_weight_bp) / 10_000.0;
        let canary_n = rng.binomial(requests, share);
        let stable_n = requests - canary_n;
        served += canary_n;
        let mut w = Window {
            canary: VariantWindow {
                requests: canary_n,
                errors: rng.binomial(canary_n, canary_error_rate),
                ..Default::default()
            },
            stable: VariantWindow {
                requests: stable_n,
                errors: rng.binomial(stable_n, ROLLOUT_STABLE_ERRORS),
                ..Default::default()
            },
        };
        // The engine's rule: an inconclusive analysis keeps its window for the next one at the
        // same weight.
        if let Some((bp, mut earlier)) = pending.take() {
            if bp == status.canary_weight_bp {
                earlier.absorb(&w);
                w = earlier;
            }
        }
        let verdicts = evaluate(p, &w);
        if verdicts
            .iter()
            .any(|v| v.outcome == mlcanary_core::analysis::Outcome::Inconclusive)
            && !verdicts
                .iter()
                .any(|v| v.outcome == mlcanary_core::analysis::Outcome::Fail)
        {
            pending = Some((status.canary_weight_bp, w));
        }
        let now = t0 + Duration::from_secs(interval_s * u64::from(i));
        status = rollout::step(&status, Some(&verdicts), p, now).status;
        match status.phase {
            Phase::Promoted => {
                return End::Promoted {
                    secs: (interval_s * u64::from(i)) as f64,
                }
            }
            Phase::RolledBack => {
                return End::RolledBack {
                    canary_requests: served,
                }
            }
            _ => {}
        }
    }
    End::Running
}

/// The schedule comparison table.
fn schedules_table(runs: u32, seed: u64, interval_s: u64, rps: f64) {
    println!();
    println!(
        "Schedules: {rps} rps, canary share = its weight, stable error rate {}%, errorRate max \
         {ROLLOUT_MAX_ERRORS}, defaults (alpha 0.02, minRequests 100, failureThreshold 2), \
         {interval_s} s intervals, horizon {ROLLOUT_INTERVALS} intervals, {runs} runs",
        ROLLOUT_STABLE_ERRORS * 100.0
    );
    println!();
    println!(
        "| schedule | healthy: promoted | median time to 100 % | p90 time to 100 % | healthy: \
         false rollbacks | broken (10× errors): rolled back | median canary requests before \
         rollback |"
    );
    println!("|---|---|---|---|---|---|---|");
    for s in &SCHEDULES {
        let p = schedule_policy(s, interval_s);
        let (mut times, mut false_rb) = (Vec::new(), 0u32);
        let (mut caught, mut exposure) = (0u32, Vec::new());
        for run in 0..runs {
            let mut rng = Rng(seed.wrapping_mul(1_000_003).wrapping_add(u64::from(run)));
            match rollout_run(&p, &mut rng, ROLLOUT_STABLE_ERRORS, rps) {
                End::Promoted { secs } => times.push(secs),
                End::RolledBack { .. } => false_rb += 1,
                End::Running => {}
            }
            let mut rng = Rng(seed.wrapping_mul(7_000_003).wrapping_add(u64::from(run)));
            if let End::RolledBack { canary_requests } =
                rollout_run(&p, &mut rng, ROLLOUT_STABLE_ERRORS * 10.0, rps)
            {
                caught += 1;
                exposure.push(canary_requests as f64);
            }
        }
        let pct = |n: usize| n as f64 * 100.0 / f64::from(runs);
        println!(
            "| {} | {:.1} % | {} | {} | {:.1} % | {:.1} % | {} |",
            s.label,
            pct(times.len()),
            secs(quantile(&times, 0.5)),
            secs(quantile(&times, 0.9)),
            pct(false_rb as usize),
            pct(caught as usize),
            quantile(&exposure, 0.5).map_or_else(|| "-".into(), |x| format!("{x:.0}")),
        );
    }
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn secs(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), |s| format!("{s:.0} s"))
}

fn main() {
    let runs = arg("--runs", 500) as u32;
    let seed = arg("--seed", 1);
    // `--analysis 'alpha: 0.01, failureThreshold: 3'` tries other settings than the defaults.
    let args: Vec<String> = std::env::args().collect();
    let overrides = args
        .iter()
        .position(|a| a == "--analysis")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_default();
    let t = TRAFFIC;
    let slo = 0.01;
    let mut judges: Vec<Box<dyn Judge>> = vec![
        Box::new(Mlcanary::new(slo, &t, &overrides)),
        Box::new(Fixed {
            min_success: 1.0 - slo,
            threshold: 5,
            failed: 0,
        }),
        Box::new(Fixed {
            min_success: 0.985,
            threshold: 5,
            failed: 0,
        }),
    ];
    println!(
        "{} rps, canary {}% (~{:.0} canary requests per {} s interval), stable error rate {}%, \
         horizon {} intervals ({} s), {runs} seeded runs per scenario (seed {seed}); \
         mlcanary errorRate max {slo}",
        t.total_rps,
        t.canary_share * 100.0,
        t.total_rps * t.canary_share * t.interval_s as f64,
        t.interval_s,
        t.stable_error_rate * 100.0,
        t.intervals,
        t.intervals as u64 * t.interval_s,
    );
    println!();
    println!("| scenario | judge | rollbacks | median time to rollback | p90 time to rollback |");
    println!("|---|---|---|---|---|");
    let scenarios = [
        ("healthy (1×)", 1.0),
        ("2× errors", 2.0),
        ("3× errors", 3.0),
    ];
    let mut results: Vec<Vec<Row>> = Vec::new();
    for (label, factor) in scenarios {
        let mut rows = Vec::new();
        for j in judges.iter_mut() {
            let row = simulate(j.as_mut(), &t, t.stable_error_rate * factor, runs, seed);
            let what = if factor == 1.0 { "false" } else { "detected" };
            println!(
                "| {label} | {} | {:.1} % {what} | {} | {} |",
                j.name(),
                row.rate() * 100.0,
                secs(row.quantile(0.5)),
                secs(row.quantile(0.9)),
            );
            rows.push(row);
        }
        results.push(rows);
    }
    println!();
    for rps in ROLLOUT_RPS {
        schedules_table(runs, seed, t.interval_s, rps);
    }
    println!();
    let (healthy, triple) = (&results[0], &results[2]);
    for (k, j) in judges.iter().enumerate().skip(1) {
        let sooner = match (triple[0].quantile(0.5), triple[k].quantile(0.5)) {
            (Some(m), Some(f)) => f / m,
            _ => f64::NAN,
        };
        let (fm, ff) = (healthy[0].rate(), healthy[k].rate());
        let detects_all = triple[0].rate() >= triple[k].rate();
        let met = sooner >= 2.0 && fm <= ff / 10.0 && detects_all;
        println!(
            "goal vs {}: 3× detected {sooner:.2}× sooner (median; need ≥ 2), false rollbacks \
             {:.1} % vs {:.1} % (need ≤ {:.2} %), 3× detection {:.1} % vs {:.1} % → {}",
            j.name(),
            fm * 100.0,
            ff * 100.0,
            ff * 10.0,
            triple[0].rate() * 100.0,
            triple[k].rate() * 100.0,
            if met { "MET" } else { "NOT MET" }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_seeded_and_binomial_has_the_right_mean() {
        let (mut a, mut b) = (Rng(7), Rng(7));
        assert_eq!(a.next_u64(), b.next_u64());
        let mut r = Rng(42);
        let n = 200;
        let total: u64 = (0..n).map(|_| r.binomial(1000, 0.03)).sum();
        // Mean 30 per draw; the mean of 200 draws has sd √(29.1/200) = 0.38.
        let mean = total as f64 / n as f64;
        assert!((mean - 30.0).abs() < 2.0, "{mean}");
    }

    #[test]
    fn adaptive_reaches_100_percent_sooner_than_fixed_steps_on_a_healthy_canary() {
        let fixed = schedule_policy(&SCHEDULES[0], 30);
        let adaptive = schedule_policy(&SCHEDULES[2], 30);
        let mut sum = [0.0f64; 2];
        for run in 0..8 {
            for (k, p) in [&fixed, &adaptive].into_iter().enumerate() {
                let mut rng = Rng(run);
                match rollout_run(p, &mut rng, 0.0, 200.0) {
                    End::Promoted { secs } => sum[k] += secs,
                    other => panic!("a perfect canary must be promoted: {other:?}"),
                }
            }
        }
        assert!(
            sum[1] < sum[0],
            "adaptive {} s vs fixed {} s",
            sum[1],
            sum[0]
        );
        // A canary failing every request is rolled back under both.
        for p in [&fixed, &adaptive] {
            let mut rng = Rng(3);
            assert!(matches!(
                rollout_run(p, &mut rng, 1.0, 200.0),
                End::RolledBack { .. }
            ));
        }
    }

    #[test]
    fn nearest_rank_quantiles() {
        let xs = [30.0, 60.0, 90.0, 120.0];
        assert_eq!(quantile(&xs, 0.5), Some(60.0));
        assert_eq!(quantile(&xs, 0.9), Some(120.0));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn fixed_judge_counts_failed_checks_cumulatively() {
        let mut j = Fixed {
            min_success: 0.99,
            threshold: 2,
            failed: 0,
        };
        let w = |errors| Window {
            canary: VariantWindow {
                requests: 100,
                errors,
                ..Default::default()
            },
            stable: VariantWindow::default(),
        };
        let d = Duration::ZERO;
        assert!(!j.rolls_back(&w(2), d), "98 % success: one failed check");
        assert!(!j.rolls_back(&w(0), d), "a good interval does not reset it");
        assert!(j.rolls_back(&w(5), d), "second failed check: rollback");
    }

    #[test]
    fn mlcanary_judge_rolls_back_a_broken_canary_and_keeps_a_healthy_one() {
        let t = TRAFFIC;
        let mut m = Mlcanary::new(0.01, &t, "");
        let broken = simulate(&mut m, &t, 0.5, 5, 1);
        assert_eq!(broken.rate(), 1.0);
        // failureThreshold 2: the second interval at the earliest.
        assert_eq!(broken.quantile(0.5), Some(2.0 * t.interval_s as f64));
        let healthy = simulate(&mut m, &t, 0.0, 5, 1);
        assert_eq!(healthy.rate(), 0.0);
    }
}
