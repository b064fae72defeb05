//! `--once` judges as the loop does: the same simulated rollout run by one engine that never
//! stops, and by a fresh engine and source per tick whose only memory is the status read back from
//! JSON (what `status.json` or the CanaryPolicy status holds), reaches the same verdicts.

use std::time::{Duration, SystemTime};

use super::fakes::{engine, FakeSender, FakeTarget, ManualClock};
use super::*;
use crate::metrics::envoy::{counters, reading};
use crate::metrics::exposition::parse;
use crate::metrics::{unix_ms, Reading};
use crate::policy::CanaryPolicy;
use mlcanary_core::analysis::Outcome;
use mlcanary_core::window::Mark;

/// An Envoy whose cumulative counters grow with simulated time: `rps` per variant, the canary
/// failing `canary_errors_pm` per mille; read through the real Envoy source's differencing.
struct SimulatedEnvoy {
    start: SystemTime,
    rps: f64,
    canary_errors_pm: f64,
}

impl SimulatedEnvoy {
    fn exposition(&self, now: SystemTime) -> String {
        let s = now
            .duration_since(self.start)
            .unwrap_or_default()
            .as_secs_f64();
        let n = (self.rps * s).floor();
        let e = (n * self.canary_errors_pm / 1000.0).floor();
        format!(
            "mlcanary_requests_total{{policy_namespace=\"ml\",policy=\"fraud-model\",variant=\"stable\"}} {n}\n\
             mlcanary_requests_total{{policy_namespace=\"ml\",policy=\"fraud-model\",variant=\"canary\"}} {n}\n\
             mlcanary_errors_total{{policy_namespace=\"ml\",policy=\"fraud-model\",variant=\"canary\"}} {e}\n\
             envoy_server_uptime {s}\n"
        )
    }
}

impl MetricsSource for SimulatedEnvoy {
    async fn fetch(
        &mut self,
        policy: &ValidatedPolicy,
        since: Option<&Mark>,
        now: SystemTime,
    ) -> Result<Reading, MetricsError> {
        let cur = counters(policy, &parse(&self.exposition(now)));
        Ok(reading(policy, cur, since, unix_ms(now)))
    }
}

fn policy() -> ValidatedPolicy {
    // 1 request/s per variant and 5 s intervals against minRequests 12: every step needs three
    // intervals at its weight before it can pass, and promotion waits until the canary's error-free
    // requests show its rate below 5 % (about 140 of them).
    CanaryPolicy::test()
        .steps(&[10, 30, 60])
        .only_error_rate(0.05)
        .min_requests(12)
        .failure_threshold(2)
        .deadline("10m")
        .validated()
}

/// The verdicts (check, outcome, canary n) and the canary weight of every tick.
type Trace = Vec<(Vec<(String, Outcome, u64)>, u32)>;

fn record(trace: &mut Trace, o: &TickOutput) {
    let v = o
        .verdicts
        .iter()
        .flatten()
        .map(|v| (v.check.clone(), v.outcome, v.n_canary))
        .collect();
    trace.push((v, o.weights.canary_bp()));
}

async fn run(canary_errors_pm: f64, restart_every_tick: bool) -> (Trace, CanaryPolicyStatus) {
    let policy = policy();
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let envoy = || SimulatedEnvoy {
        start,
        rps: 1.0,
        canary_errors_pm,
    };
    let target = FakeTarget::default();
    let clock = ManualClock::at(start);
    let new_engine = || engine(&clock, Arc::new(FakeSender::default()));
    let mut engine = new_engine();
    let mut source = envoy();
    let mut status = CanaryPolicyStatus::default();
    let mut trace = Trace::new();
    for i in 0..80u64 {
        if restart_every_tick {
            engine = new_engine();
            source = envoy();
            let json = serde_json::to_string(&status).unwrap();
            status = serde_json::from_str(&json).unwrap();
        }
        clock.set(start + Duration::from_secs(5 * i + 1));
        let input = TickInput {
            policy: &policy,
            status: &status,
            peers: &[],
        };
        let o = engine.tick(input, &mut source, &target).await.unwrap();
        record(&mut trace, &o);
        status = o.status;
        if status.phase.is_terminal() {
            break;
        }
    }
    (trace, status)
}

#[tokio::test]
async fn a_healthy_rollout_is_judged_the_same_with_and_without_restarts() {
    let (looped, end) = run(0.0, false).await;
    let (once, end_once) = run(0.0, true).await;
    assert_eq!(looped, once);
    assert_eq!(end, end_once);
    assert_eq!(end.phase, crate::policy::Phase::Promoted);
    // The evidence accumulated: some verdicts were inconclusive, later ones passed on more than
    // one interval's requests.
    let outcomes: Vec<&(String, Outcome, u64)> = looped.iter().flat_map(|t| &t.0).collect();
    assert!(outcomes.iter().any(|v| v.1 == Outcome::Inconclusive));
    assert!(outcomes.iter().any(|v| v.1 == Outcome::Pass && v.2 >= 12));
}

#[tokio::test]
async fn a_failing_rollout_is_judged_the_same_with_and_without_restarts() {
    let (looped, end) = run(300.0, false).await;
    let (once, end_once) = run(300.0, true).await;
    assert_eq!(looped, once);
    assert_eq!(end, end_once);
    assert_eq!(end.phase, crate::policy::Phase::RolledBack);
}

#[tokio::test]
async fn without_the_persisted_evidence_a_restarted_controller_would_judge_less() {
    // The point of persisting it: drop the evidence from the status at every restart and the
    // verdicts differ (every tick is a bare mark, nothing is ever judged).
    let policy = policy();
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let target = FakeTarget::default();
    let mut status = CanaryPolicyStatus::default();
    for i in 0..10u64 {
        status.evidence = None;
        let mut source = SimulatedEnvoy {
            start,
            rps: 1.0,
            canary_errors_pm: 0.0,
        };
        let clock = ManualClock::at(start + Duration::from_secs(5 * i + 1));
        let input = TickInput {
            policy: &policy,
            status: &status,
            peers: &[],
        };
        let o = engine(&clock, Arc::new(FakeSender::default()))
            .tick(input, &mut source, &target)
            .await
            .unwrap();
        assert!(o.verdicts.is_none(), "no mark, no window");
        status = o.status;
    }
    assert!(status.canary_weight_bp <= 1000);
}
