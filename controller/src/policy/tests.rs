use std::time::Duration;

use kube::CustomResourceExt;

use super::file::{parse_policies, validate_policies, FileError};
use super::validated::{CheckKind, LatencyBound, Pause};
use super::*;
use crate::fixtures::POLICY_FILE;

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
            bound: LatencyBound::RatioToStable(1.2),
            alpha: fraud.alpha / 3.0,
        }
    );
    let churn = &all[1].1;
    assert_eq!(churn.steps_bp, vec![2000, 4000, 6000]);
    assert_eq!(churn.failure_threshold, 1);
    assert_eq!(churn.min_requests, 100);
    assert_eq!(churn.alpha, 0.01);
    assert_eq!(churn.harm_margin, 1.5);
    assert_eq!(churn.progress_deadline, Duration::from_secs(600));
    assert_eq!(churn.filter_template.hosts, vec!["churn".to_string()]);
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
    assert_eq!(
        cols,
        [
            "Status",
            "Weight (%)",
            "Step",
            "Failed",
            "Last transition",
            "Age"
        ]
    );
    let yaml = serde_yaml::to_string(&crd).unwrap();
    assert!(
        yaml.contains("stepWeight"),
        "schema uses the camelCase field names"
    );
    assert!(yaml.contains("canaryWeightBp"));
    assert!(yaml.contains("canaryWeightPercent"));
}
