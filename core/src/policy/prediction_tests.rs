//! `spec.predictions` and the three prediction checks: defaults, rendering into the filter's
//! `predictions`, and errors that name the field.

use mlcanary_filter::predictions::Format;

use super::validated::{CheckKind, ShiftBound, DEFAULT_DRIFT_MIN_SAMPLES};
use super::*;
use crate::render::render_config;
use crate::weights::Weights;

/// The case-study policy: scores from TF Serving, age-band segments, all three checks.
const FAIRNESS: &str = r#"
target:
  virtualService: fraud-model
  hosts: [fraud-model]
  wasmPlugin: mlcanary
routing:
  segment: {header: x-customer-age-band, values: ["18-30", "31-60", "60+"]}
predictions:
  format: tfserving
  classIndex: 1
  positiveThreshold: 0.7
  maxBodyBytes: 131072
schedule: {interval: 30s, steps: [5, 10, 25, 50]}
analysis:
  minRequests: 150
  alpha: 0.01
  checks:
    - name: drift
      predictionDrift: {}
    - name: positives
      positiveRate: {maxRelativeShift: 0.25}
    - name: fairness
      segmentDisparity: {minSamplesPerSegment: 80}
"#;

fn spec(yaml: &str) -> CanaryPolicySpec {
    serde_yaml::from_str(yaml).expect("spec parses")
}

fn validate(s: &CanaryPolicySpec) -> Result<ValidatedPolicy, String> {
    ValidatedPolicy::from_spec("fraud-model", s).map_err(|e| e.to_string())
}

#[test]
fn defaults_filled_and_predictions_rendered_for_the_filter() {
    let v = validate(&spec(FAIRNESS)).unwrap();
    // One budget: the three checks share alpha 0.01 equally.
    let share = 0.01 / 3.0;
    assert_eq!(
        v.checks[0].kind,
        CheckKind::PredictionDrift {
            max_psi: 0.2,
            min_samples: DEFAULT_DRIFT_MIN_SAMPLES,
            alpha: share
        }
    );
    assert_eq!(
        v.checks[1].kind,
        CheckKind::PositiveRate {
            bound: ShiftBound::Relative(0.25),
            alpha: share,
            min_samples: 150
        }
    );
    assert_eq!(
        v.checks[2].kind,
        CheckKind::SegmentDisparity {
            min_ratio: 0.8,
            max_ratio: 1.25,
            alpha: share,
            min_samples_per_segment: 80,
            min_segment_share: 0.02,
            min_ratio_between_segments: None
        }
    );
    let p = v.filter_template.predictions.clone().unwrap();
    assert_eq!(p.format, Format::Tfserving);
    assert_eq!(p.class_index, Some(1));
    assert_eq!(p.positive_threshold, Some(0.7));
    assert_eq!(p.max_body_bytes, Some(131_072));
    // What is written to the WasmPlugin: the filter accepts it and reads the same JSON keys.
    let raw = render_config(&[(&v, Weights::with_canary_bp(500))]).unwrap();
    let json = serde_json::to_value(&raw).unwrap();
    assert_eq!(
        json["policies"][0]["predictions"],
        serde_json::json!({"format": "tfserving", "class_index": 1,
                           "positive_threshold": 0.7, "max_body_bytes": 131072})
    );
    // And a policy without `predictions` renders none (the filter then reads no bodies).
    let mut plain = spec(FAIRNESS);
    plain.predictions = None;
    plain.analysis.checks.truncate(0);
    plain.analysis.checks.push(CheckSpec {
        name: "errors".into(),
        error_rate: Some(ErrorRateSpec {
            max: 0.01,
            alpha: None,
        }),
        ..Default::default()
    });
    assert!(validate(&plain)
        .unwrap()
        .filter_template
        .predictions
        .is_none());
}

#[test]
fn prediction_errors_name_the_field() {
    let cases: &[(&str, &str, &str)] = &[
        // (text in FAIRNESS, replacement, expected error prefix)
        (
            "format: tfserving",
            "format: xml",
            "spec.predictions.format: \"xml\" is not one of",
        ),
        (
            "positiveThreshold: 0.7",
            "positiveThreshold: 7",
            "spec.predictions.positiveThreshold:",
        ),
        // The filter's own refusal, its path translated to the spec's.
        (
            "maxBodyBytes: 131072",
            "maxBodyBytes: 0",
            "spec.predictions.maxBodyBytes: 0 is outside",
        ),
        (
            "classIndex: 1",
            "output: \"\"",
            "spec.predictions.output: must not be empty",
        ),
        (
            "predictionDrift: {}",
            "predictionDrift: {maxPsi: 0}",
            "spec.analysis.checks[0].predictionDrift.maxPsi:",
        ),
        (
            "predictionDrift: {}",
            "predictionDrift: {minSamples: 0}",
            "spec.analysis.checks[0].predictionDrift.minSamples:",
        ),
        (
            "positiveRate: {maxRelativeShift: 0.25}",
            "positiveRate: {maxRelativeShift: 0.25, maxAbsoluteShift: 0.1}",
            "spec.analysis.checks[1].positiveRate: needs exactly one of",
        ),
        (
            "positiveRate: {maxRelativeShift: 0.25}",
            "positiveRate: {maxAbsoluteShift: 1.5}",
            "spec.analysis.checks[1].positiveRate.maxAbsoluteShift:",
        ),
        (
            "positiveRate: {maxRelativeShift: 0.25}",
            "positiveRate: {maxRelativeShift: 0.25, alpha: 0.9}",
            "spec.analysis.checks[1].positiveRate.alpha:",
        ),
        (
            "segmentDisparity: {minSamplesPerSegment: 80}",
            "segmentDisparity: {minRatio: 1.5}",
            "spec.analysis.checks[2].segmentDisparity.minRatio:",
        ),
        (
            "segmentDisparity: {minSamplesPerSegment: 80}",
            "segmentDisparity: {maxRatio: 0.9}",
            "spec.analysis.checks[2].segmentDisparity.maxRatio:",
        ),
        (
            "segmentDisparity: {minSamplesPerSegment: 80}",
            "segmentDisparity: {minSamplesPerSegment: 0}",
            "spec.analysis.checks[2].segmentDisparity.minSamplesPerSegment:",
        ),
        (
            "segmentDisparity: {minSamplesPerSegment: 80}",
            "segmentDisparity: {minRatioBetweenSegments: 1.25}",
            "spec.analysis.checks[2].segmentDisparity.minRatioBetweenSegments:",
        ),
        (
            "segmentDisparity: {minSamplesPerSegment: 80}",
            "segmentDisparity: {minSegmentShare: 1.5}",
            "spec.analysis.checks[2].segmentDisparity.minSegmentShare:",
        ),
        (
            "      segmentDisparity: {minSamplesPerSegment: 80}",
            "      segmentDisparity: {}\n      errorRate: {max: 0.01}",
            "spec.analysis.checks[2]: needs exactly one of",
        ),
    ];
    for (from, to, want) in cases {
        assert!(FAIRNESS.contains(from), "{from}");
        let e = validate(&spec(&FAIRNESS.replace(from, to))).unwrap_err();
        assert!(e.starts_with(want), "{from} → {to}: {e}");
    }
}

#[test]
fn prediction_checks_need_predictions_and_disparity_needs_segments() {
    let mut s = spec(FAIRNESS);
    s.predictions = None;
    assert!(validate(&s)
        .unwrap_err()
        .starts_with("spec.analysis.checks[0].predictionDrift: needs spec.predictions"));
    let mut s = spec(FAIRNESS);
    s.routing.segment = None;
    assert!(validate(&s)
        .unwrap_err()
        .starts_with("spec.analysis.checks[2].segmentDisparity: needs spec.routing.segment"));
}

#[test]
fn spec_schema_has_the_prediction_fields() {
    let crd = serde_json::to_string(&schemars::schema_for!(CanaryPolicySpec)).unwrap();
    for field in [
        "predictions",
        "positiveThreshold",
        "classIndex",
        "maxBodyBytes",
        "predictionDrift",
        "maxPsi",
        "positiveRate",
        "maxRelativeShift",
        "maxAbsoluteShift",
        "segmentDisparity",
        "minSamplesPerSegment",
    ] {
        assert!(
            crd.contains(&format!("\"{field}\"")),
            "{field} missing from the spec schema"
        );
    }
}
