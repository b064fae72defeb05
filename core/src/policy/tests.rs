//! Validation of the spec: defaults, and errors that name the field as the user wrote it.

use mlcanary_filter::config::RawConfig;

use super::*;
use crate::fixtures::TestPolicy;

fn err(p: &TestPolicy) -> String {
    p.validate().expect_err("must be refused").to_string()
}

#[test]
fn step_weight_ladder_ends_at_max_weight() {
    let v = TestPolicy::fraud_model()
        .step_weight(30, Some(100))
        .validated();
    assert_eq!(v.steps_bp, vec![3000, 6000, 9000, 10000]);
    let v = TestPolicy::fraud_model().step_weight(10, None).validated();
    assert_eq!(v.steps_bp, vec![1000, 2000, 3000, 4000, 5000]);
    let v = TestPolicy::fraud_model()
        .step_weight(25, Some(50))
        .validated();
    assert_eq!(v.steps_bp, vec![2500, 5000]);
}

#[test]
fn schedule_errors_name_the_field() {
    let t = TestPolicy::fraud_model();
    assert_eq!(
        err(&t.clone().step_weight(0, None)),
        "spec.schedule.stepWeight: must be 1..=100"
    );
    assert_eq!(
        err(&t.clone().step_weight(101, None)),
        "spec.schedule.stepWeight: must be 1..=100"
    );
    assert!(err(&t.clone().step_weight(20, Some(10))).starts_with("spec.schedule.maxWeight:"));
    assert!(err(&t.clone().steps(&[5, 10, 10])).starts_with("spec.schedule.steps[2]:"));
    assert_eq!(
        err(&t.clone().steps(&[5, 120])),
        "spec.schedule.steps[1]: must be 1..=100"
    );
    assert!(err(&t.clone().steps(&[])).starts_with("spec.schedule.steps:"));
    let mut both = t.clone().steps(&[5]);
    both.spec.schedule.step_weight = Some(5);
    assert!(err(&both).starts_with("spec.schedule.steps: set either"));
    assert!(
        err(&t.clone().steps(&[5, 10]).pause(2, None)).starts_with("spec.schedule.pauses[0].step:")
    );
    let mut bad_interval = t.clone();
    bad_interval.spec.schedule.interval = "soon".into();
    assert!(err(&bad_interval).starts_with("spec.schedule.interval:"));
    assert!(err(&t.clone().deadline("0s")).starts_with("spec.progressDeadline:"));
}

#[test]
fn analysis_errors_name_the_field() {
    let t = TestPolicy::fraud_model();
    assert_eq!(
        err(&t.clone().failure_threshold(0)),
        "spec.analysis.failureThreshold: must be at least 1"
    );
    assert!(err(&t.clone().min_requests(0)).starts_with("spec.analysis.minRequests:"));
    assert!(
        err(&t.clone().only_error_rate(1.5)).starts_with("spec.analysis.checks[0].errorRate.max:")
    );
    let mut p = t.clone();
    p.spec.analysis.checks[1].latency.as_mut().unwrap().max_ms = Some(100.0);
    assert_eq!(
        err(&p),
        "spec.analysis.checks[1].latency: needs exactly one of `maxMs`, `maxRatioToStable`"
    );
    let mut p = t.clone();
    p.spec.analysis.checks[3]
        .custom
        .as_mut()
        .unwrap()
        .comparison = "==".into();
    assert!(err(&p).starts_with("spec.analysis.checks[3].custom.comparison:"));
    let mut p = t.clone();
    p.spec.analysis.checks[3].custom.as_mut().unwrap().query = "up".into();
    assert!(err(&p).starts_with("spec.analysis.checks[3].custom.query:"));
    let mut p = t.clone();
    p.spec.analysis.checks[2].name = "errors".into();
    assert!(err(&p).starts_with("spec.analysis.checks[2].name:"));
    let mut p = t.clone();
    p.spec.analysis.checks[0].latency = p.spec.analysis.checks[1].latency.clone();
    assert!(err(&p).starts_with("spec.analysis.checks[0]: needs exactly one"));
    let mut p = t.clone();
    p.spec.analysis.harm_margin = Some(1.0);
    assert!(err(&p).starts_with("spec.analysis.harmMargin:"));
    let mut p = t.clone();
    p.spec.analysis.unhealthy_baseline = Some("ignore".into());
    assert!(err(&p).starts_with("spec.analysis.unhealthyBaseline:"));
    let mut p = t;
    p.spec.analysis.checks.clear();
    assert!(err(&p).starts_with("spec.analysis.checks:"));
}

#[test]
fn one_budget_is_split_across_the_checks() {
    use crate::policy::validated::{CheckKind, UnhealthyBaseline};
    let alpha_of = |p: &ValidatedPolicy| match p.checks[0].kind {
        CheckKind::ErrorRate { alpha, .. } => alpha,
        _ => unreachable!("the error-rate check comes first"),
    };
    let mut t = TestPolicy::fraud_model().only_error_rate(0.01);
    let p = t.validated();
    assert_eq!((p.alpha, alpha_of(&p)), (0.01, 0.01));
    assert_eq!(p.unhealthy_baseline, UnhealthyBaseline::Hold);
    assert_eq!(p.harm_margin, 1.5);
    // A second budgeted check halves the share; one that sets its own alpha spends from it.
    let mut second = t.spec.analysis.checks[0].clone();
    second.name = "errors-2".into();
    t.spec.analysis.checks.push(second.clone());
    assert_eq!(alpha_of(&t.validated()), 0.005);
    t.spec.analysis.checks[1].error_rate.as_mut().unwrap().alpha = Some(0.008);
    assert!((alpha_of(&t.validated()) - 0.002).abs() < 1e-12);
    t.spec.analysis.checks[1].error_rate.as_mut().unwrap().alpha = Some(0.01);
    assert!(err(&t).starts_with("spec.analysis.checks: the checks' own alphas add up to 0.01"));
}

/// The filter's reason for the same mistake, to check the controller says the same thing.
fn filter_reason(p: &TestPolicy) -> String {
    let mut raw = TestPolicy::fraud_model()
        .validate()
        .unwrap()
        .filter_template;
    raw.sticky = p
        .spec
        .routing
        .sticky
        .as_ref()
        .map(|s| mlcanary_filter::config::RawSticky {
            header: s.header.clone(),
            cookie: s.cookie.clone(),
            salt: s.salt.clone(),
            assign_cookie: s.assign_cookie,
            cookie_max_age_s: None,
        });
    raw.rules[0].variant = p.spec.routing.rules[0].variant.clone();
    raw.variants[0].weight_bp = 10_000;
    match mlcanary_filter::Config::try_from(RawConfig {
        variant_header: None,
        inbound: false,
        policies: vec![raw],
    }) {
        Err(mlcanary_filter::ConfigError::Invalid { reason, .. }) => reason,
        other => panic!("filter accepted it: {other:?}"),
    }
}

#[test]
fn routing_is_refused_exactly_as_the_filter_refuses_it() {
    let sticky = |header: &str, cookie: Option<&str>, assign| {
        Some(StickySpec {
            header: Some(header.into()),
            cookie: cookie.map(Into::into),
            salt: None,
            assign_cookie: assign,
        })
    };
    let p = TestPolicy::fraud_model().sticky(sticky("x-user-id", None, true));
    assert_eq!(
        err(&p),
        format!("spec.routing.sticky.assignCookie: {}", filter_reason(&p))
    );
    let p = TestPolicy::fraud_model().sticky(sticky("X-User-Id", None, false));
    assert_eq!(
        err(&p),
        format!("spec.routing.sticky.header: {}", filter_reason(&p))
    );
    let mut p = TestPolicy::fraud_model();
    p.spec.routing.rules[0].variant = "shadow".into();
    assert_eq!(
        err(&p),
        format!("spec.routing.rules[0].variant: {}", filter_reason(&p))
    );

    let mut p = TestPolicy::fraud_model();
    p.spec.routing.rules[1].match_.one_of = Some(vec![]);
    assert!(
        err(&p).starts_with("spec.routing.rules[1].match.oneOf:"),
        "{}",
        err(&p)
    );
    let mut p = TestPolicy::fraud_model();
    p.spec.target.hosts[1] = "fraud:8080".into();
    assert!(err(&p).starts_with("spec.target.hosts[1]:"));
    let mut p = TestPolicy::fraud_model();
    p.spec.target.canary_subset = Some("can ary".into());
    assert!(err(&p).starts_with("spec.target.canarySubset:"));
    let mut p = TestPolicy::fraud_model();
    p.metadata.name = "fraud.model".into();
    assert!(err(&p).starts_with("metadata.name:"));
}

#[test]
fn target_errors() {
    let mut p = TestPolicy::fraud_model();
    p.spec.target.hosts = vec!["*".into()];
    assert!(err(&p).starts_with("spec.target.destinationHost:"));
    p.spec.target.destination_host = Some("fraud-model".into());
    assert_eq!(p.validate().unwrap().destination_host, "fraud-model");
    let mut p = TestPolicy::fraud_model();
    p.spec.target.stable_subset = Some("canary".into());
    assert!(err(&p).starts_with("spec.target.canarySubset: must differ"));
    let mut p = TestPolicy::fraud_model();
    p.spec.target.virtual_service.clear();
    assert_eq!(err(&p), "spec.target.virtualService: must not be empty");
}

#[test]
fn status_round_trips_in_camel_case() {
    let s = CanaryPolicyStatus {
        phase: Phase::Progressing,
        canary_weight_bp: 500,
        step_index: Some(0),
        ..Default::default()
    };
    let j = serde_json::to_value(&s).unwrap();
    assert_eq!(j["phase"], "Progressing");
    assert_eq!(j["canaryWeightBp"], 500);
    assert_eq!(serde_json::from_value::<CanaryPolicyStatus>(j).unwrap(), s);
}
