//! `judge-bench`: how often and how fast mlcanary's judge rolls canaries back or promotes them,
//! against Flagger's real process, on the same simulated streams.
//!
//! **mlcanary** runs its real code path: `Engine::tick` every 30 s (evidence summed per weight for
//! the whole rollout, the anytime-valid checks, one budget, `rollout::step` with its deadline and
//! harm gate), fed by a simulated metrics source; policy: steps 5/10/20/50 %, one error-rate
//! check (`max` per scenario), every other setting mlcanary's default; the same with the adaptive
//! schedule (5 % first, up to 50 %) on a second row. **Flagger** (see
//! [`flagger`]) runs its documented loop at 1 m intervals over the same steps, with
//! request-success-rate min 99 and 98.5 and threshold 5 and 10. Traffic ([`sim`]): 150 → 250 rps,
//! errors clustered per user (bursts of 1–2; the sensitivity rows: independent, and bursts of
//! 1–4). Each rollout runs until it ends or for 60 minutes ("held").
//!
//! Prints, per scenario and judge: rolled back / promoted with Wilson 95 % intervals, median (p90)
//! time to rollback and median time to promotion from the first step; then each target as MET or
//! NOT MET.
//!
//! Then the shadow phase on the same code path ([`shadow`]); `--shadow-only 1` prints only that.
//! Then ground truth, labels arriving late ([`ground_truth`]); `--ground-truth-only 1` likewise.
//!
//! `cargo run -p mlcanary-controller --release --bin judge-bench [-- --runs 2000 --seed 1]`

mod flagger;
mod ground_truth;
mod report;
mod shadow;
mod sim;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use mlcanary_controller::engine::{Engine, TickInput};
use mlcanary_controller::hooks::HttpSender;
use mlcanary_controller::metrics::{unix_ms, MetricsError, MetricsSource, Reading};
use mlcanary_controller::policy::{CanaryPolicySpec, CanaryPolicyStatus, Phase, ValidatedPolicy};
use mlcanary_controller::traffic::{DesiredTraffic, TrafficError, TrafficTarget};
use mlcanary_core::window::Mark;

use flagger::Flagger;
use report::{pct, secs, Tally};
use sim::{Flags, Outage, Rng, Stream};

/// How a rollout ended, and when (seconds after the first step).
#[derive(Debug, Clone, Copy)]
pub struct End {
    pub fate: Fate,
    pub at_s: f64,
    /// Requests the canary served before the end.
    pub served: u64,
    /// Rolled back with the fairness check among the failed ones.
    pub by_fairness: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Promoted,
    RolledBack,
    /// Still running at the horizon.
    Held,
}

impl End {
    pub fn promoted(at_s: f64, served: u64) -> End {
        End {
            fate: Fate::Promoted,
            at_s,
            served,
            by_fairness: false,
        }
    }
    pub fn rolled_back(at_s: f64, served: u64) -> End {
        End {
            fate: Fate::RolledBack,
            at_s,
            served,
            by_fairness: false,
        }
    }
    pub fn held(served: u64) -> End {
        End {
            fate: Fate::Held,
            at_s: f64::NAN,
            served,
            by_fairness: false,
        }
    }
}

const STEPS: [f64; 4] = [0.05, 0.10, 0.20, 0.50];
const INTERVAL_S: f64 = 30.0;
const HORIZON_S: f64 = 3600.0;

/// The bench's policy: mlcanary's defaults but for the steps, the interval and the checks (the
/// error rate; with `flags` also the case study's flag-rate and fairness checks).
fn policy(max: f64, flags: bool) -> ValidatedPolicy {
    policy_with(max, "steps: [5, 10, 20, 50]", flags)
}

/// The same with the adaptive schedule's defaults (5 % first, up to 50 %).
fn adaptive_policy(max: f64, flags: bool) -> ValidatedPolicy {
    policy_with(max, "adaptive: {}", flags)
}

/// The flag checks' bounds, shared with Flagger's custom metrics.
const MAX_FLAG_SHIFT: f64 = 0.3;
const FAIR_BAND: (f64, f64) = (0.8, 1.25);

fn policy_with(max: f64, schedule: &str, flags: bool) -> ValidatedPolicy {
    let (scoring, checks) = if flags {
        (
            "routing: {segment: {header: x-age-band, values: [\"18-30\", \"31-60\", \"60+\"]}}\n\
             predictions: {format: tfserving, classIndex: 1, positiveThreshold: 0.5}\n",
            format!(
                ", {{name: flag-rate, positiveRate: {{maxRelativeShift: {MAX_FLAG_SHIFT}}}}}, \
                 {{name: fairness, segmentDisparity: {{minRatio: {}, maxRatio: {}}}}}",
                FAIR_BAND.0, FAIR_BAND.1
            ),
        )
    } else {
        ("", String::new())
    };
    let yaml = format!(
        "target: {{virtualService: m, hosts: [m], wasmPlugin: p}}\n{scoring}\
         schedule: {{interval: {INTERVAL_S}s, {schedule}}}\n\
         analysis: {{checks: [{{name: errors, errorRate: {{max: {max}}}}}{checks}]}}\n"
    );
    let spec: CanaryPolicySpec = serde_yaml::from_str(&yaml).expect("bench policy parses");
    ValidatedPolicy::from_spec("bench", &spec).expect("bench policy is valid")
}

/// Windows drawn from a [`Stream`] at the weight the bench says is in effect.
struct SimSource<'a> {
    rng: &'a mut Rng,
    stream: Stream,
    start_ms: i64,
    weight_bp: u32,
    served: u64,
}

/// A simulated source's reading at `now`: `draw(from_s, to_s)` (seconds since the rollout began
/// at `start_ms`) makes the window since the last mark; none on the first read.
fn simulated(
    since: Option<&Mark>,
    now: SystemTime,
    start_ms: i64,
    draw: impl FnOnce(f64, f64) -> mlcanary_core::window::Window,
) -> Reading {
    let at_ms = unix_ms(now);
    let s = |ms: i64| (ms - start_ms) as f64 / 1000.0;
    Reading {
        window: since.map(|m| draw(s(m.at_ms), s(at_ms))),
        mark: Mark {
            at_ms,
            counters: Default::default(),
        },
    }
}

impl MetricsSource for SimSource<'_> {
    async fn fetch(
        &mut self,
        _: &ValidatedPolicy,
        since: Option<&Mark>,
        now: SystemTime,
    ) -> Result<Reading, MetricsError> {
        Ok(simulated(since, now, self.start_ms, |from, to| {
            let share = f64::from(self.weight_bp) / 10_000.0;
            let w = self.stream.window(self.rng, from, to, share);
            self.served += w.canary.requests;
            w
        }))
    }
}

/// Writes nothing: the bench reads the weight from the status.
struct NoTarget;

impl TrafficTarget for NoTarget {
    async fn apply(&self, _: &DesiredTraffic) -> Result<(), TrafficError> {
        Ok(())
    }
}

/// One mlcanary rollout through `Engine::tick`.
async fn mlcanary_run(policy: &ValidatedPolicy, rng: &mut Rng, stream: &Stream) -> End {
    let mut source = SimSource {
        rng,
        stream: *stream,
        start_ms: unix_ms(bench_start()),
        weight_bp: 0,
        served: 0,
    };
    let (end, _) = drive(
        policy,
        &mut source,
        |s, status| s.weight_bp = status.canary_weight_bp,
        |s| s.served,
    )
    .await;
    end
}

thread_local! {
    /// The checks that failed in the last rollback [`drive`] saw (for the ground-truth report).
    static FAILED: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The checks that failed when the last rollout [`drive`] ran was rolled back.
fn last_failed() -> Vec<String> {
    FAILED.with(|f| f.borrow().clone())
}

/// When every bench rollout starts.
fn bench_start() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

/// Tick `policy` every interval from [`bench_start`] until it ends or the horizon: `before` tells
/// the source what the status has in effect, `served` reads the canary answers users got. Also
/// says whether a live step was ever entered.
async fn drive<S: MetricsSource>(
    policy: &ValidatedPolicy,
    source: &mut S,
    mut before: impl FnMut(&mut S, &CanaryPolicyStatus),
    served: impl Fn(&S) -> u64,
) -> (End, bool) {
    let start = bench_start();
    let now = Arc::new(Mutex::new(start));
    let clock = {
        let now = now.clone();
        Arc::new(move || *now.lock().unwrap())
    };
    let mut engine = Engine::new(clock, Arc::new(HttpSender::default()));
    let mut status = CanaryPolicyStatus::default();
    let mut live = false;
    let ticks = (HORIZON_S / INTERVAL_S) as u32;
    for i in 0..=ticks {
        *now.lock().unwrap() = start + Duration::from_secs_f64(INTERVAL_S * f64::from(i));
        before(source, &status);
        let input = TickInput {
            policy,
            status: &status,
            peers: &[],
        };
        let out = engine
            .tick(input, source, &NoTarget)
            .await
            .expect("the bench's target never fails");
        status = out.status;
        live |= status.step_index.is_some();
        let at = INTERVAL_S * f64::from(i);
        match status.phase {
            Phase::Promoted => return (End::promoted(at, served(source)), live),
            Phase::RolledBack | Phase::Failed => {
                let mut end = End::rolled_back(at, served(source));
                end.by_fairness = status
                    .last_verdicts
                    .iter()
                    .any(|v| v.name == "fairness" && v.verdict == "fail");
                FAILED.with(|f| {
                    *f.borrow_mut() = status
                        .last_verdicts
                        .iter()
                        .filter(|v| v.verdict == "fail")
                        .map(|v| v.name.clone())
                        .collect();
                });
                return (end, live);
            }
            _ => {}
        }
    }
    (End::held(served(source)), live)
}

/// A scenario: a stream and the check's `max`.
struct Scenario {
    name: &'static str,
    stream: Stream,
    max: f64,
    /// Runs as a multiple of `--runs` (detection scenarios need fewer).
    runs_factor: f64,
}

/// Errors in bursts of 1–2 requests in the main scenarios (variance 1.67× binomial).
const MAX_BURST: u64 = 2;

fn stream(stable: f64, canary: f64) -> Stream {
    Stream {
        stable_error_rate: stable,
        canary_error_rate: canary,
        outage: None,
        max_burst: MAX_BURST,
        flags: None,
    }
}

/// Flags at 6 % in every segment for stable; the canary's 60+ rate multiplied by `elderly`.
fn flagged(elderly: f64) -> Stream {
    Stream {
        flags: Some(Flags {
            segments: [
                ("18-30", 0.4, 0.06, 0.06),
                ("31-60", 0.4, 0.06, 0.06),
                ("60+", 0.2, 0.06, 0.06 * elderly),
            ],
        }),
        ..stream(0.002, 0.002)
    }
}

fn scenarios() -> Vec<Scenario> {
    let s = |name, stream, max, runs_factor| Scenario {
        name,
        stream,
        max,
        runs_factor,
    };
    vec![
        s(
            "healthy, stable 1 %, max 1 %",
            stream(0.01, 0.01),
            0.01,
            1.0,
        ),
        s(
            "healthy, stable 0.2 %, max 1 %",
            stream(0.002, 0.002),
            0.01,
            1.0,
        ),
        s("3x errors (1 % -> 3 %)", stream(0.01, 0.03), 0.01, 0.25),
        s("2x errors (1 % -> 2 %)", stream(0.01, 0.02), 0.01, 0.25),
        s(
            "within SLO, worse (0.3 % -> 0.9 %, max 1 %)",
            stream(0.003, 0.009),
            0.01,
            0.5,
        ),
        s(
            "SLO breach with headroom (0.2 % -> 2 %)",
            stream(0.002, 0.02),
            0.01,
            0.25,
        ),
        s(
            "independent errors: healthy, stable 1 %",
            Stream {
                max_burst: 1,
                ..stream(0.01, 0.01)
            },
            0.01,
            1.0,
        ),
        s(
            "independent errors: 3x",
            Stream {
                max_burst: 1,
                ..stream(0.01, 0.03)
            },
            0.01,
            0.25,
        ),
        s(
            "bursts of 1-4: healthy, stable 1 %",
            Stream {
                max_burst: 4,
                ..stream(0.01, 0.01)
            },
            0.01,
            1.0,
        ),
        s(
            "bursts of 1-4: 3x",
            Stream {
                max_burst: 4,
                ..stream(0.01, 0.03)
            },
            0.01,
            0.25,
        ),
        s(
            "fair canary (flags 6 % in every segment)",
            flagged(1.0),
            0.01,
            1.0,
        ),
        s(
            "4x flags in the 20 % segment (60+: 6 % -> 24 %)",
            flagged(4.0),
            0.01,
            0.25,
        ),
        s(
            "shared outage (both 5 % for 5 min from 60 s)",
            Stream {
                outage: Some(Outage {
                    from_s: 60.0,
                    to_s: 360.0,
                    rate: 0.05,
                }),
                ..stream(0.002, 0.002)
            },
            0.01,
            0.25,
        ),
    ]
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Every judge's tally on every scenario, same seeds for every judge.
fn measure(runs: u64, seed: u64) -> Vec<(String, Vec<(String, Tally)>)> {
    let judges = [
        Flagger {
            min_success: 99.0,
            threshold: 5,
            interval_s: 60.0,
        },
        Flagger {
            min_success: 98.5,
            threshold: 10,
            interval_s: 60.0,
        },
    ];
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    scenarios()
        .into_iter()
        .enumerate()
        .map(|(k, sc)| {
            let n = ((runs as f64 * sc.runs_factor).ceil() as u64).max(1);
            let seed_of = |r: u64| seed ^ (k as u64) << 40 ^ r.wrapping_mul(0x9E37_79B9);
            let mut rows = Vec::new();
            let flags = sc.stream.flags.is_some();
            for (name, p) in [
                ("mlcanary", policy(sc.max, flags)),
                (
                    "mlcanary (adaptive schedule)",
                    adaptive_policy(sc.max, flags),
                ),
            ] {
                let ends: Vec<End> = (0..n)
                    .map(|r| rt.block_on(mlcanary_run(&p, &mut Rng(seed_of(r)), &sc.stream)))
                    .collect();
                rows.push((name.to_owned(), Tally::of(&ends)));
            }
            for f in &judges {
                let ends: Vec<End> = (0..n)
                    .map(|r| f.run(&mut Rng(seed_of(r)), &sc.stream, &STEPS, HORIZON_S))
                    .collect();
                rows.push((f.name(), Tally::of(&ends)));
            }
            (sc.name.to_owned(), rows)
        })
        .collect()
}

fn main() {
    let runs = arg("--runs", 2000);
    let seed = arg("--seed", 1);
    if arg("--shadow-only", 0) == 1 {
        shadow::report(runs, seed);
        return;
    }
    if arg("--ground-truth-only", 0) == 1 {
        ground_truth::report(runs, seed);
        return;
    }
    println!(
        "judge-bench: {runs} runs per healthy scenario (fewer for detection), seed {seed}; \
         200 rps ramping 150 -> 250, clustered errors, steps 5/10/20/50 %, horizon 60 min"
    );
    let results = measure(runs, seed);
    for (name, rows) in &results {
        println!("\n## {name}");
        let flags = name.contains("flags");
        println!(
            "{:<42} {:>6} {:>24} {:>24} {:>16} {:>12}{}",
            "judge",
            "runs",
            "rolled back [95 % CI]",
            "promoted [95 % CI]",
            "rollback med/p90",
            "promote med",
            if flags {
                "   by fairness [95 % CI]"
            } else {
                ""
            }
        );
        for (judge, t) in rows {
            println!(
                "{judge:<42} {:>6} {:>24} {:>24} {:>16} {:>12}{}",
                t.runs,
                pct(t.rolled_back_rate()),
                pct(t.promoted_rate()),
                format!("{}/{}", secs(t.median_rollback()), secs(t.p90_rollback())),
                secs(t.median_promotion()),
                if flags {
                    format!(" {:>24}", pct(t.fairness_rate()))
                } else {
                    String::new()
                }
            );
        }
    }
    println!("\n## targets");
    for line in targets(&results) {
        println!("{line}");
    }
    shadow::report(runs, seed);
    ground_truth::report(runs, seed);
}

/// The targets on `results`, one line each.
fn targets(results: &[(String, Vec<(String, Tally)>)]) -> Vec<String> {
    let get = |scenario: &str, judge: &str| -> &Tally {
        &results
            .iter()
            .find(|(n, _)| n.starts_with(scenario))
            .unwrap_or_else(|| panic!("scenario {scenario}"))
            .1
            .iter()
            .find(|(j, _)| j == judge || (judge.starts_with("flagger") && j.starts_with(judge)))
            .unwrap_or_else(|| panic!("judge {judge}"))
            .1
    };
    let ml = |s| get(s, "mlcanary");
    let flagger = |s| get(s, "flagger (min 99,");
    let mut out = Vec::new();
    let mut target = |ok: bool, what: String| {
        out.push(format!("{} {what}", if ok { "MET    " } else { "NOT MET" }));
    };
    for s in ["healthy, stable 1 %", "healthy, stable 0.2 %"] {
        let (p, _, hi) = ml(s).rolled_back_rate();
        target(
            p <= 0.01 && hi <= 0.015,
            format!(
                "{s}: rolled back {:.2} % (upper {:.2} %) <= 1 % (1.5 %)",
                100.0 * p,
                100.0 * hi
            ),
        );
    }
    for (s, det, med) in [("3x errors", 0.99, 60.0), ("2x errors", 0.95, 180.0)] {
        let t = ml(s);
        let (p, _, _) = t.rolled_back_rate();
        let m = t.median_rollback().unwrap_or(f64::INFINITY);
        target(
            p >= det && m <= med,
            format!(
                "{s}: detected {:.1} % >= {:.0} %, median {m:.0} s <= {med:.0} s",
                100.0 * p,
                100.0 * det
            ),
        );
    }
    let (p, _, hi) = ml("fair canary").fairness_rate();
    target(
        p <= 0.01,
        format!(
            "fair canary failed on fairness {:.2} % (upper {:.2} %) <= 1 %",
            100.0 * p,
            100.0 * hi
        ),
    );
    let t = ml("4x flags");
    let (p, _, _) = t.fairness_rate();
    let m = t.median_rollback().unwrap_or(f64::INFINITY);
    target(
        p >= 0.99 && m <= 120.0,
        format!(
            "4x flags in a 20 % segment: rolled back by fairness {:.1} % >= 99 %, median {m:.0} s <= 120 s",
            100.0 * p
        ),
    );
    let (p, _, _) = ml("within SLO").rolled_back_rate();
    target(
        p <= 0.05,
        format!(
            "within SLO but worse: rolled back {:.1} % <= 5 %",
            100.0 * p
        ),
    );
    let (p, _, hi) = ml("2x errors").promoted_rate();
    target(
        p <= 0.01,
        format!(
            "2x errors promoted (false pass) {:.1} % (upper {:.1} %) <= 1 %",
            100.0 * p,
            100.0 * hi
        ),
    );
    // Against the faster of the two Flagger settings (the one its failed checks do not delay).
    let fastest = |s| {
        [get(s, "flagger (min 99,"), get(s, "flagger (min 98.5,")]
            .iter()
            .filter_map(|t| t.median_promotion())
            .fold(f64::INFINITY, f64::min)
    };
    if let Some(m) = ml("healthy, stable 1 %").median_promotion() {
        let f = fastest("healthy, stable 1 %");
        target(
            m <= 1.5 * f,
            format!("healthy time to promotion {m:.0} s <= 1.5 x Flagger's fastest {f:.0} s"),
        );
    }
    let (mp, fp) = (
        ml("healthy, stable 1 %").rolled_back_rate().0,
        flagger("healthy, stable 1 %").rolled_back_rate().0,
    );
    let (m3, f3) = (
        ml("3x errors").median_rollback().unwrap_or(f64::INFINITY),
        flagger("3x errors")
            .median_rollback()
            .unwrap_or(f64::INFINITY),
    );
    target(
        mp < fp && m3 < f3,
        format!(
            "against Flagger (min 99, threshold 5): false rollbacks {:.1} % < {:.1} %, 3x detection {m3:.0} s < {f3:.0} s",
            100.0 * mp,
            100.0 * fp
        ),
    );
    out
}

#[cfg(test)]
mod tests;
