use std::time::Duration;

use kube::CustomResourceExt;
use mlcanary_filter::config::RawConfig;

use super::file::{parse_policies, validate_policies, FileError};
use super::validate::{CheckKind, LatencyBound, Pause};
use super::*;
use crate::fixtures::POLICY_FILE;

fn err(p: &CanaryPolicy) -> String {
    ValidatedPolicy::try_from(p)
        .expect_err("must be refused")
        .to_string()
}

#[test]
fn fixture_validates_with_defaults_filled() {
    let text = std::fs::read_to_string(POLICY_FILE).unwrap();
    let all = validate_policies(&text).unwrap();
    assert_eq!(all.len(), 2);
    let fraud = &all[0].1;
    assert_eq!(fraud.name, "fraud-model");
    assert_eq!(fraud.namespace.as_deref(), Some("ml"));
    assert_eq!(fraud.destination_host, "fraud-model");
    assert_eq!(
        (fraud.stable_subset.as_str(), fraud.canary_subset.as_str()),
        ("stable", "canary")
    );
    assert_eq!(fraud.steps_bp, vec![500, 1000, 2500, 5000]);
    assert_eq!(
        fraud.pauses,
        vec![None, Some(Pause::For(Duration::from_secs(300))), None, None]
    );
    assert_eq!(fraud.interval, Duration::from_secs(30));
    assert_eq!(fraud.min_requests, 200);
    assert_eq!(fraud.checks.len(), 4);
    assert_eq!(
        fraud.checks[1].kind,
        CheckKind::Latency {
            quantile: 0.99,
            bound: LatencyBound::RatioToStable(1.2)
        }
    );
    let churn = &all[1].1;
    assert_eq!(churn.steps_bp, vec![2000, 4000, 6000]);
    assert_eq!(churn.failure_threshold, 2);
    assert_eq!(churn.min_requests, 100);
    assert_eq!(churn.alpha, 0.02);
    assert_eq!(churn.progress_deadline, Duration::from_secs(600));
    assert_eq!(churn.filter_template.hosts, vec!["churn".to_string()]);
}

#[test]
fn step_weight_ladder_ends_at_max_weight() {
    let v = CanaryPolicy::test().step_weight(30, Some(100)).validated();
    assert_eq!(v.steps_bp, vec![3000, 6000, 9000, 10000]);
    let v = CanaryPolicy::test().step_weight(10, None).validated();
    assert_eq!(v.steps_bp, vec![1000, 2000, 3000, 4000, 5000]);
    let v = CanaryPolicy::test().step_weight(25, Some(50)).validated();
    assert_eq!(v.steps_bp, vec![2500, 5000]);
}

#[test]
fn schedule_errors_name_the_field() {
    let t = CanaryPolicy::test();
    assert_eq!(
        err(&t.clone().step_weight(0, None).0),
        "spec.schedule.stepWeight: must be 1..=100"
    );
    assert_eq!(
        err(&t.clone().step_weight(101, None).0),
        "spec.schedule.stepWeight: must be 1..=100"
    );
    assert!(err(&t.clone().step_weight(20, Some(10)).0).starts_with("spec.schedule.maxWeight:"));
    assert!(err(&t.clone().steps(&[5, 10, 10]).0).starts_with("spec.schedule.steps[2]:"));
    assert_eq!(
        err(&t.clone().steps(&[5, 120]).0),
        "spec.schedule.steps[1]: must be 1..=100"
    );
    assert!(err(&t.clone().steps(&[]).0).starts_with("spec.schedule.steps:"));
    let mut both = t.clone().steps(&[5]);
    both.0.spec.schedule.step_weight = Some(5);
    assert!(err(&both.0).starts_with("spec.schedule.steps: set either"));
    assert!(err(&t.clone().steps(&[5, 10]).pause(2, None).0)
        .starts_with("spec.schedule.pauses[0].step:"));
    let mut bad_interval = t.clone();
    bad_interval.0.spec.schedule.interval = "soon".into();
    assert!(err(&bad_interval.0).starts_with("spec.schedule.interval:"));
    assert!(err(&t.clone().deadline("0s").0).starts_with("spec.progressDeadline:"));
}

#[test]
fn analysis_errors_name_the_field() {
    let t = CanaryPolicy::test();
    assert_eq!(
        err(&t.clone().failure_threshold(0).0),
        "spec.analysis.failureThreshold: must be at least 1"
    );
    assert!(err(&t.clone().min_requests(0).0).starts_with("spec.analysis.minRequests:"));
    assert!(err(&t.clone().only_error_rate(1.5).0)
        .starts_with("spec.analysis.checks[0].errorRate.max:"));
    let mut p = t.clone();
    p.0.spec.analysis.checks[1].latency.as_mut().unwrap().max_ms = Some(100.0);
    assert_eq!(
        err(&p.0),
        "spec.analysis.checks[1].latency: needs exactly one of `maxMs`, `maxRatioToStable`"
    );
    let mut p = t.clone();
    p.0.spec.analysis.checks[3]
        .custom
        .as_mut()
        .unwrap()
        .comparison = "==".into();
    assert!(err(&p.0).starts_with("spec.analysis.checks[3].custom.comparison:"));
    let mut p = t.clone();
    p.0.spec.analysis.checks[3].custom.as_mut().unwrap().query = "up".into();
    assert!(err(&p.0).starts_with("spec.analysis.checks[3].custom.query:"));
    let mut p = t.clone();
    p.0.spec.analysis.checks[2].name = "errors".into();
    assert!(err(&p.0).starts_with("spec.analysis.checks[2].name:"));
    let mut p = t.clone();
    p.0.spec.analysis.checks[0].latency = p.0.spec.analysis.checks[1].latency.clone();
    assert!(err(&p.0).starts_with("spec.analysis.checks[0]: needs exactly one"));
    let mut p = t;
    p.0.spec.analysis.checks.clear();
    assert!(err(&p.0).starts_with("spec.analysis.checks:"));
}

/// The filter's reason for the same mistake, to check the controller says the same thing.
fn filter_reason(p: &CanaryPolicy) -> String {
    let mut raw = ValidatedPolicy::try_from(&CanaryPolicy::test().0)
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
    let p = CanaryPolicy::test().sticky(sticky("x-user-id", None, true));
    assert_eq!(
        err(&p.0),
        format!("spec.routing.sticky.assignCookie: {}", filter_reason(&p.0))
    );
    let p = CanaryPolicy::test().sticky(sticky("X-User-Id", None, false));
    assert_eq!(
        err(&p.0),
        format!("spec.routing.sticky.header: {}", filter_reason(&p.0))
    );
    let mut p = CanaryPolicy::test();
    p.0.spec.routing.rules[0].variant = "shadow".into();
    assert_eq!(
        err(&p.0),
        format!("spec.routing.rules[0].variant: {}", filter_reason(&p.0))
    );

    let mut p = CanaryPolicy::test();
    p.0.spec.routing.rules[1].match_.one_of = Some(vec![]);
    assert!(
        err(&p.0).starts_with("spec.routing.rules[1].match.oneOf:"),
        "{}",
        err(&p.0)
    );
    let mut p = CanaryPolicy::test();
    p.0.spec.target.hosts[1] = "fraud:8080".into();
    assert!(err(&p.0).starts_with("spec.target.hosts[1]:"));
    let mut p = CanaryPolicy::test();
    p.0.spec.target.canary_subset = Some("can ary".into());
    assert!(err(&p.0).starts_with("spec.target.canarySubset:"));
    let mut p = CanaryPolicy::test();
    p.0.metadata.name = Some("fraud.model".into());
    assert!(err(&p.0).starts_with("metadata.name:"));
}

#[test]
fn target_errors() {
    let mut p = CanaryPolicy::test();
    p.0.spec.target.hosts = vec!["*".into()];
    assert!(err(&p.0).starts_with("spec.target.destinationHost:"));
    p.0.spec.target.destination_host = Some("fraud-model".into());
    assert_eq!(
        ValidatedPolicy::try_from(&p.0).unwrap().destination_host,
        "fraud-model"
    );
    let mut p = CanaryPolicy::test();
    p.0.spec.target.stable_subset = Some("canary".into());
    assert!(err(&p.0).starts_with("spec.target.canarySubset: must differ"));
    let mut p = CanaryPolicy::test();
    p.0.spec.target.virtual_service.clear();
    assert_eq!(err(&p.0), "spec.target.virtualService: must not be empty");
}

#[test]
fn file_shapes() {
    let one = std::fs::read_to_string(POLICY_FILE).unwrap();
    let first = one.split("\n---\n").next().unwrap();
    // Leading separator and empty documents are fine.
    let padded = format!("---\n{first}\n---\n---\n");
    assert_eq!(parse_policies(&padded).unwrap().len(), 1);
    assert!(matches!(parse_policies("---\n"), Err(FileError::Empty)));
    let wrong_kind = first.replace("kind: CanaryPolicy", "kind: Rollout");
    match parse_policies(&wrong_kind) {
        Err(FileError::Shape {
            doc: 1,
            field: "kind",
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    let typo = first.replace("virtualService:", "virtualServce:");
    assert!(matches!(
        parse_policies(&typo),
        Err(FileError::Yaml { doc: 1, .. })
    ));
    let invalid = one.replace("stepWeight: 20", "stepWeight: 0");
    let e = validate_policies(&invalid).unwrap_err().to_string();
    assert_eq!(
        e,
        "document 2 (churn-model): spec.schedule.stepWeight: must be 1..=100"
    );
}

#[test]
fn crd_has_status_printer_columns_and_group() {
    let crd = CanaryPolicy::crd();
    assert_eq!(crd.spec.group, "mlcanary.io");
    assert_eq!(crd.spec.scope, "Namespaced");
    let v = &crd.spec.versions[0];
    assert_eq!(v.name, "v1alpha1");
    assert!(v
        .subresources
        .as_ref()
        .and_then(|s| s.status.as_ref())
        .is_some());
    let cols: Vec<&str> = v
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(cols, ["Phase", "Canary-bp", "Failed", "Age"]);
    let yaml = serde_yaml::to_string(&crd).unwrap();
    assert!(
        yaml.contains("stepWeight"),
        "schema uses the camelCase field names"
    );
    assert!(yaml.contains("canaryWeightBp"));
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
