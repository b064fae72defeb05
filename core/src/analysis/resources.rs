//! Resource checks: the canary's pods against stable's, relative (`canary ≤ maxRatioToStable ×
//! stable`).
//!
//! - **cpu**: CPU seconds *per request* in the window — `increase(container_cpu_usage_seconds_total
//!   [W])` summed over the variant's pods, divided by the variant's requests from the filter. Per
//!   request, because the canary gets a small share of the traffic: per pod it would always look
//!   cheaper. Idle overhead weighs more on the variant with fewer requests (usually the canary),
//!   so the check errs towards failing; it needs `minRequests` on both variants.
//! - **memory**: mean working-set bytes *per pod* (`avg_over_time(container_memory_working_set_bytes
//!   [W])`, summed per pod, averaged over the variant's pods): a model's memory is mostly its
//!   weights, not its load.
//!
//! Pods are selected by `podSelector` (label matchers on kube-state-metrics' `kube_pod_labels`,
//! `{{variant}}` for the subset); the PromQL and its label assumptions are the Prometheus source's
//! (`metrics::prometheus::resources` in the controller).
//!
//! Only a PromQL source fills the values (into [`VariantWindow::custom`] under the check's name);
//! without them (the Envoy admin source) the verdict is inconclusive — no data never fails.

use super::{Outcome, VariantWindow, Verdict};
use crate::policy::validated::{Resource, ResourceCheck, ValidatedPolicy};

/// The value compared for one variant: CPU seconds per request, or bytes per pod.
fn value(check: &ResourceCheck, name: &str, w: &VariantWindow) -> Option<f64> {
    let raw = w
        .custom
        .get(name)
        .copied()
        .filter(|v| v.is_finite() && *v >= 0.0)?;
    match check.resource {
        Resource::Cpu => (w.requests > 0).then(|| raw / w.requests as f64),
        Resource::Memory => Some(raw),
    }
}

/// Judge a resource check: pass iff `canary ≤ max_ratio × stable`; inconclusive without values,
/// with a zero stable value, or (cpu) below `minRequests`.
pub fn resource(
    name: &str,
    check: &ResourceCheck,
    policy: &ValidatedPolicy,
    canary: &VariantWindow,
    stable: &VariantWindow,
) -> Verdict {
    let (c, s) = (value(check, name, canary), value(check, name, stable));
    let mut v = Verdict {
        check: name.to_owned(),
        outcome: Outcome::Inconclusive,
        canary: c,
        stable: s,
        threshold: s.map(|s| s * check.max_ratio),
        n_canary: canary.requests,
        n_stable: stable.requests,
        p_value: None,
        message: String::new(),
        ..Default::default()
    };
    let what = match check.resource {
        Resource::Cpu => "CPU s/request",
        Resource::Memory => "memory bytes/pod",
    };
    if check.resource == Resource::Cpu
        && (canary.requests < policy.min_requests || stable.requests < policy.min_requests)
    {
        v.message = format!(
            "{} canary / {} stable requests: below minRequests {}",
            canary.requests, stable.requests, policy.min_requests
        );
        return v;
    }
    let (Some(c), Some(s)) = (c, s) else {
        v.message = format!("no {what} for both variants (resource checks need Prometheus)");
        return v;
    };
    if s <= 0.0 {
        v.message = format!("stable {what} is 0: no baseline");
        return v;
    }
    let ratio = c / s;
    if ratio <= check.max_ratio {
        v.outcome = Outcome::Pass;
        v.message = format!(
            "canary {what} {c:.4e} is {ratio:.2}× stable's {s:.4e}, within {}×",
            check.max_ratio
        );
    } else {
        v.outcome = Outcome::Fail;
        v.message = format!(
            "canary {what} {c:.4e} is {ratio:.2}× stable's {s:.4e}, above {}×",
            check.max_ratio
        );
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{resource_check as check, TestPolicy};

    fn window(requests: u64, value: Option<f64>) -> VariantWindow {
        let mut w = VariantWindow {
            requests,
            ..Default::default()
        };
        if let Some(v) = value {
            w.custom.insert("res".into(), v);
        }
        w
    }

    #[test]
    fn cpu_is_judged_per_request() {
        let p = TestPolicy::fraud_model().min_requests(100).validated();
        let c = check(Resource::Cpu);
        // Canary: 6 s over 200 requests = 0.03 s/req; stable 60 s over 3000 = 0.02: ratio 1.5.
        let v = resource(
            "res",
            &c,
            &p,
            &window(200, Some(6.0)),
            &window(3000, Some(60.0)),
        );
        assert_eq!(v.outcome, Outcome::Fail, "{}", v.message);
        assert!((v.canary.unwrap() - 0.03).abs() < 1e-12);
        assert!((v.threshold.unwrap() - 0.026).abs() < 1e-12);
        // The same total CPU over twice the requests: 0.015 s/req, cheaper than stable.
        let v = resource(
            "res",
            &c,
            &p,
            &window(400, Some(6.0)),
            &window(3000, Some(60.0)),
        );
        assert_eq!(v.outcome, Outcome::Pass, "{}", v.message);
    }

    #[test]
    fn no_values_low_traffic_or_zero_baseline_is_inconclusive() {
        let p = TestPolicy::fraud_model().min_requests(100).validated();
        let cpu = check(Resource::Cpu);
        let mem = check(Resource::Memory);
        let cases = [
            resource("res", &cpu, &p, &window(500, None), &window(500, None)),
            resource(
                "res",
                &cpu,
                &p,
                &window(50, Some(1.0)),
                &window(500, Some(1.0)),
            ),
            resource(
                "res",
                &mem,
                &p,
                &window(0, Some(1e9)),
                &window(0, Some(0.0)),
            ),
            resource(
                "res",
                &mem,
                &p,
                &window(0, Some(f64::NAN)),
                &window(0, Some(1e9)),
            ),
        ];
        for v in cases {
            assert_eq!(v.outcome, Outcome::Inconclusive, "{}", v.message);
        }
    }

    #[test]
    fn memory_is_judged_per_pod_without_a_request_minimum() {
        let p = TestPolicy::fraud_model().min_requests(100).validated();
        let m = check(Resource::Memory);
        let v = resource(
            "res",
            &m,
            &p,
            &window(0, Some(1.2e9)),
            &window(0, Some(1.0e9)),
        );
        assert_eq!(v.outcome, Outcome::Pass);
        let v = resource(
            "res",
            &m,
            &p,
            &window(0, Some(1.4e9)),
            &window(0, Some(1.0e9)),
        );
        assert_eq!(v.outcome, Outcome::Fail);
        assert!(v.message.contains("1.40×"), "{}", v.message);
    }
}
