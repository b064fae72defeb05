//! Test builders: a valid policy to start from and small methods to change one thing each.

use crate::policy::file::parse_policies;
use crate::policy::{
    validate::ValidatedPolicy, CanaryPolicy, CheckSpec, ErrorRateSpec, PauseSpec, StickySpec,
};

/// The two-policy fixture file (also used by the CLI tests).
pub const POLICY_FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/fraud-model.yaml"
);

/// Builder over a `CanaryPolicy`.
#[derive(Clone)]
pub struct TestPolicy(pub CanaryPolicy);

impl CanaryPolicy {
    /// The fixture's first policy (`fraud-model`).
    pub fn test() -> TestPolicy {
        let text = std::fs::read_to_string(POLICY_FILE).expect("fixture file");
        TestPolicy(parse_policies(&text).expect("fixture parses").remove(0))
    }
}

impl TestPolicy {
    pub fn steps(mut self, steps: &[u32]) -> Self {
        let s = &mut self.0.spec.schedule;
        s.steps = Some(steps.to_vec());
        s.step_weight = None;
        s.max_weight = None;
        s.pauses.clear();
        self
    }
    pub fn step_weight(mut self, step: u32, max: Option<u32>) -> Self {
        let s = &mut self.0.spec.schedule;
        s.steps = None;
        s.step_weight = Some(step);
        s.max_weight = max;
        s.pauses.clear();
        self
    }
    pub fn pause(mut self, step: u32, duration: Option<&str>) -> Self {
        self.0.spec.schedule.pauses.push(PauseSpec {
            step,
            duration: duration.map(Into::into),
        });
        self
    }
    pub fn no_pauses(mut self) -> Self {
        self.0.spec.schedule.pauses.clear();
        self
    }
    pub fn manual_gate(mut self, on: bool) -> Self {
        self.0.spec.schedule.manual_gate = on;
        self
    }
    pub fn failure_threshold(mut self, n: u32) -> Self {
        self.0.spec.analysis.failure_threshold = Some(n);
        self
    }
    pub fn min_requests(mut self, n: u64) -> Self {
        self.0.spec.analysis.min_requests = Some(n);
        self
    }
    pub fn deadline(mut self, d: &str) -> Self {
        self.0.spec.progress_deadline = Some(d.into());
        self
    }
    pub fn only_error_rate(mut self, max: f64) -> Self {
        self.0.spec.analysis.checks = vec![CheckSpec {
            name: "errors".into(),
            error_rate: Some(ErrorRateSpec { max }),
            ..Default::default()
        }];
        self
    }
    pub fn sticky(mut self, s: Option<StickySpec>) -> Self {
        self.0.spec.routing.sticky = s;
        self
    }
    pub fn validated(&self) -> ValidatedPolicy {
        ValidatedPolicy::try_from(&self.0).expect("test policy is valid")
    }
}
