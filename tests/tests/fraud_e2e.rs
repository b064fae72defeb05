//! The fraud-detection case study end to end (issue: ML-aware canary analysis): real Envoy with
//! the filter, `mlcanary local`, TF-Serving-compatible model servers, customers' traffic. Both
//! rounds begin with a shadow phase. v2 must pass its shadow and be promoted step by step; v3 must
//! be stopped *in the shadow phase* by the per-segment fairness check — not errors or latency —
//! before any customer received one of its answers.

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
fn v2_is_promoted_and_v3_is_rolled_back_by_the_fairness_check() {
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
}
