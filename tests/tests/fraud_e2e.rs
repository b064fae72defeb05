//! The fraud-detection case study end to end (issue: ML-aware canary analysis): real Envoy with
//! the filter, `mlcanary local`, TF-Serving-compatible model servers, customers' traffic, and the
//! labels (reviews, chargebacks) sent back through the feedback path with the filter's tickets.
//! Every round begins with a shadow phase. v2 must pass its shadow and be promoted step by step;
//! v3 must be stopped *in the shadow phase* by the per-segment fairness check — not errors or
//! latency — before any customer received one of its answers; v4, which flags every age band as
//! often as v2 but has lost its signal for the elderly, must pass every check on what it answers
//! and be rolled back by the ground-truth check alone (equalized odds, naming 60+). One test, the
//! rounds in turn: they share the machine with nothing else of this binary.

use mlcanary_e2e::{envoy_path, patience, wasm_path, workspace_root};
use mlcanary_fraud_example::demo::{describe, round, DemoConfig, RoundResult};
use mlcanary_fraud_example::model::Version;

fn config(dir: &std::path::Path) -> DemoConfig {
    let bin = std::env::var_os("MLCANARY_BIN")
        .map(Into::into)
        .unwrap_or_else(|| workspace_root().join("target/debug/mlcanary"));
    assert!(
        bin.exists(),
        "{} is missing: cargo build -p mlcanary-controller --bin mlcanary",
        bin.display()
    );
    DemoConfig {
        mlcanary: bin,
        envoy: envoy_path(),
        wasm: wasm_path(),
        policy: workspace_root().join("examples/fraud-detection/policy.yaml"),
        workdir: dir.to_path_buf(),
        rps: 400.0,
        // A whole rollout (two steps and the promotion or the rollback): only a hang reaches it.
        round_timeout: patience::ROLLOUT * 2,
        echo: false,
    }
}

fn verdict(r: &RoundResult, check: &str) -> serde_json::Value {
    r.verdicts()
        .into_iter()
        .find(|v| v["name"] == check)
        .unwrap_or_else(|| panic!("no verdict for {check}: {}", describe(r)))
}

#[test]
fn v2_is_promoted_v3_is_stopped_by_fairness_and_v4_by_ground_truth() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = config(dir.path());

    let r1 = round(&cfg, "v2", Version::V1, Version::V2).expect("round one ran");
    println!("{}", describe(&r1));
    assert_eq!(
        (r1.phase(), r1.exit_code),
        ("Promoted", Some(0)),
        "{}",
        describe(&r1)
    );
    assert_eq!(r1.status["canaryWeightBp"], 10_000);
    assert_eq!(verdict(&r1, "age-band-fairness")["verdict"], "pass");
    // The shadow passed, then the live steps: customers got v2's answers only from then on.
    assert!(r1.canary_answers() > 0, "{}", describe(&r1));
    let steps: Vec<u64> = r1.status["history"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h["toWeightBp"].as_u64())
        .collect();
    assert_eq!(steps, [2000, 5000, 10_000], "{}", describe(&r1));

    let r2 = round(&cfg, "v3", Version::V2, Version::V3).expect("round two ran");
    println!("{}", describe(&r2));
    assert_eq!(
        (r2.phase(), r2.exit_code),
        ("RolledBack", Some(1)),
        "{}",
        describe(&r2)
    );
    assert_eq!(r2.status["canaryWeightBp"], 0);
    // In the shadow phase, with zero canary answers delivered: every customer got v2's.
    assert!(r2.stopped_in_shadow(), "{}", describe(&r2));
    assert_eq!(r2.canary_answers(), 0, "{}", describe(&r2));
    assert!(
        r2.answers.keys().all(|v| v == "v2"),
        "every answer came from stable: {}",
        describe(&r2)
    );
    // Because of fairness, and not because of errors or latency.
    assert_eq!(
        r2.failed_checks(),
        vec!["age-band-fairness".to_string()],
        "{}",
        describe(&r2)
    );
    for check in ["errors", "latency-p99"] {
        assert_ne!(verdict(&r2, check)["verdict"], "fail", "{}", describe(&r2));
    }
    let fairness = verdict(&r2, "age-band-fairness");
    let message = fairness["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("segment \"60+\""),
        "the failing segment is named: {message}"
    );
    // The status keeps the numbers behind it: both rates and the sample sizes.
    assert!(
        fairness["canary"].as_f64().unwrap_or(0.0)
            > 2.0 * fairness["stable"].as_f64().unwrap_or(1.0),
        "{fairness}"
    );
    assert!(
        fairness["nCanary"].as_u64().unwrap_or(0) >= 50,
        "{fairness}"
    );
    // No weight ever moved; the rollback's reason names the check.
    assert_eq!(
        r2.status["history"],
        serde_json::Value::Null,
        "{}",
        r2.status
    );
    let reason = r2.status["conditions"].to_string();
    assert!(
        reason.contains("RolledBack") && reason.contains("age-band-fairness"),
        "{reason}"
    );

    // Round three: v4 against v2, twice the traffic (labels of frauds among the elderly are what
    // decides it, and they are scarce).
    let fast = DemoConfig {
        rps: 800.0,
        ..cfg.clone()
    };
    let r3 = round(&fast, "v4", Version::V2, Version::V4).expect("round three ran");
    println!("{}", describe(&r3));
    assert_eq!(
        (r3.phase(), r3.exit_code),
        ("RolledBack", Some(1)),
        "{}",
        describe(&r3)
    );
    // By the ground-truth check alone: every check on what the model answers passed.
    assert_eq!(
        r3.failed_checks(),
        vec!["equalized-odds".to_string()],
        "{}",
        describe(&r3)
    );
    for check in [
        "errors",
        "latency-p99",
        "flag-rate",
        "age-band-fairness",
        "false-positives",
    ] {
        assert_ne!(verdict(&r3, check)["verdict"], "fail", "{}", describe(&r3));
    }
    let odds = verdict(&r3, "equalized-odds");
    let message = odds["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("segment \"60+\""),
        "the failing segment is named: {message}"
    );
    // The labels went through the feedback path, and the filter refused none of them.
    assert!(r3.feedback.accepted > 0, "{}", describe(&r3));
    assert!(r3.feedback.rejected.is_empty(), "{}", describe(&r3));
    let reason = r3.status["conditions"].to_string();
    assert!(reason.contains("equalized-odds"), "{reason}");
}
