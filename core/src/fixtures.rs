//! Test builders: a valid policy to start from and small methods to change one thing each.

use serde::Deserialize;

use crate::policy::validated::{Resource, ResourceCheck, DEFAULT_POD_SELECTOR};

use crate::policy::{
    CanaryPolicySpec, CheckSpec, ErrorRateSpec, PauseSpec, StickySpec, ValidatedPolicy,
    ValidationError, WebhookSpec,
};

/// A cumulative histogram from `(le, count)` pairs.
pub fn buckets(pairs: &[(f64, f64)]) -> Vec<crate::window::Bucket> {
    pairs
        .iter()
        .map(|&(le, count)| crate::window::Bucket { le, count })
        .collect()
}

/// The two-policy fixture file (also used by the controller's tests).
pub const POLICY_FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/fraud-model.yaml"
);

/// A policy as a file names it: `metadata.name`, `metadata.namespace` and the spec.
#[derive(Clone, Debug, Deserialize)]
pub struct TestPolicy {
    pub metadata: Metadata,
    pub spec: CanaryPolicySpec,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Metadata {
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
}

impl TestPolicy {
    /// The fixture's first policy (`fraud-model`).
    pub fn fraud_model() -> TestPolicy {
        Self::document(0)
    }

    /// The fixture's second policy (`churn-model`, on another host).
    pub fn churn_model() -> TestPolicy {
        Self::document(1)
    }

    fn document(i: usize) -> TestPolicy {
        let text = std::fs::read_to_string(POLICY_FILE).expect("fixture file");
        let doc = serde_yaml::Deserializer::from_str(&text)
            .nth(i)
            .expect("a document");
        TestPolicy::deserialize(doc).expect("fixture parses")
    }
}

impl TestPolicy {
    pub fn steps(mut self, steps: &[u32]) -> Self {
        let s = &mut self.spec.schedule;
        s.steps = Some(steps.to_vec());
        s.step_weight = None;
        s.max_weight = None;
        s.pauses.clear();
        self
    }
    pub fn step_weight(mut self, step: u32, max: Option<u32>) -> Self {
        let s = &mut self.spec.schedule;
        s.steps = None;
        s.step_weight = Some(step);
        s.max_weight = max;
        s.pauses.clear();
        self
    }
    pub fn pause(mut self, step: u32, duration: Option<&str>) -> Self {
        self.spec.schedule.pauses.push(PauseSpec {
            step,
            duration: duration.map(Into::into),
        });
        self
    }
    pub fn no_pauses(mut self) -> Self {
        self.spec.schedule.pauses.clear();
        self
    }
    pub fn manual_gate(mut self, on: bool) -> Self {
        self.spec.schedule.manual_gate = on;
        self
    }
    pub fn failure_threshold(mut self, n: u32) -> Self {
        self.spec.analysis.failure_threshold = Some(n);
        self
    }
    pub fn min_requests(mut self, n: u64) -> Self {
        self.spec.analysis.min_requests = Some(n);
        self
    }
    pub fn deadline(mut self, d: &str) -> Self {
        self.spec.progress_deadline = Some(d.into());
        self
    }
    pub fn only_error_rate(mut self, max: f64) -> Self {
        self.spec.analysis.checks = vec![CheckSpec {
            name: "errors".into(),
            error_rate: Some(ErrorRateSpec { max, alpha: None }),
            ..Default::default()
        }];
        self
    }
    pub fn sticky(mut self, s: Option<StickySpec>) -> Self {
        self.spec.routing.sticky = s;
        self
    }
    /// Validate as the controller validates a resource: its spec, name and namespace.
    pub fn validate(&self) -> Result<ValidatedPolicy, ValidationError> {
        let mut v = ValidatedPolicy::from_spec(&self.metadata.name, &self.spec)?;
        v.namespace = self.metadata.namespace.clone();
        Ok(v)
    }
    /// A shadow phase mirroring `percent` for `duration` (none: until conclusive).
    pub fn shadow(mut self, percent: f64, duration: Option<&str>) -> Self {
        self.spec.schedule.shadow = Some(crate::policy::ShadowSpec {
            percent,
            duration: duration.map(Into::into),
            max_rps: None,
        });
        self
    }
    pub fn webhooks(mut self, hooks: Vec<WebhookSpec>) -> Self {
        self.spec.webhooks = hooks;
        self
    }
    pub fn validated(&self) -> ValidatedPolicy {
        self.validate().expect("test policy is valid")
    }
}

/// A webhook as the spec writes it, with a short timeout and one retry (tests call real servers).
pub fn webhook(name: &str, type_: &str, url: &str) -> WebhookSpec {
    WebhookSpec {
        name: name.into(),
        type_: type_.into(),
        url: url.into(),
        timeout: Some("300ms".into()),
        retries: Some(1),
    }
}

/// The fixture with one error-rate check, no pauses, threshold 2, and `hooks`: the policy the
/// webhook tests (pure and HTTP) share.
pub fn with_webhooks(hooks: Vec<WebhookSpec>) -> ValidatedPolicy {
    TestPolicy::fraud_model()
        .only_error_rate(0.01)
        .no_pauses()
        .failure_threshold(2)
        .webhooks(hooks)
        .validated()
}

/// A resource check with the default pod selector and a 1.3× limit (the query and verdict tests).
pub fn resource_check(resource: Resource) -> ResourceCheck {
    ResourceCheck {
        resource,
        max_ratio: 1.3,
        pod_selector: DEFAULT_POD_SELECTOR.to_owned(),
    }
}
