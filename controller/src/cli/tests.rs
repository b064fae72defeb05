use std::path::PathBuf;

use clap::Parser;

use super::*;
use crate::fixtures::POLICY_FILE;

fn run_args(args: &[&str]) -> Result<String, CliError> {
    let cli = Cli::try_parse_from(args).expect("args parse");
    let mut out = Vec::new();
    run(&cli.command, &mut out)?;
    Ok(String::from_utf8(out).unwrap())
}

#[test]
fn validate_ok_and_field_named_failure() {
    let out = run_args(&["mlcanary", "validate", POLICY_FILE]).unwrap();
    assert_eq!(
        out,
        "fraud-model: ok (steps 5%, 10%, 25%, 50%)\nchurn-model: ok (steps 20%, 40%, 60%)\n"
    );
    let dir = std::env::temp_dir().join(format!("mlcanary-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad: PathBuf = dir.join("bad.yaml");
    let text = std::fs::read_to_string(POLICY_FILE)
        .unwrap()
        .replace("steps: [5, 10, 25, 50]", "steps: [5, 10, 5]");
    std::fs::write(&bad, text).unwrap();
    let e = run_args(&["mlcanary", "validate", bad.to_str().unwrap()]).unwrap_err();
    assert!(e.to_string().contains("spec.schedule.steps[2]"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn assign_matches_the_filter_hash() {
    // canary at 500 bp: the canary owns buckets 9500..10000.
    let out = run_args(&[
        "mlcanary",
        "assign",
        "--policy",
        POLICY_FILE,
        "--name",
        "fraud-model",
        "--user",
        "u-1",
        "--canary-bp",
        "500",
    ])
    .unwrap();
    let b = bucket("fraud-model-v7", "u-1");
    let want = if b >= 9500 { "canary" } else { "stable" };
    assert_eq!(
        out,
        format!("{want} (bucket {b} of 10000, canary at 500 bp)\n")
    );
    let all = run_args(&[
        "mlcanary",
        "assign",
        "--policy",
        POLICY_FILE,
        "--name",
        "fraud-model",
        "--user",
        "u-1",
        "--canary-bp",
        "10000",
    ])
    .unwrap();
    assert!(all.starts_with("canary "), "{all}");
    // Several policies and no --name; a policy without a sticky key.
    assert!(matches!(
        run_args(&["mlcanary", "assign", "--policy", POLICY_FILE, "--user", "u"]),
        Err(CliError::Usage(_))
    ));
    let e = run_args(&[
        "mlcanary",
        "assign",
        "--policy",
        POLICY_FILE,
        "--name",
        "churn-model",
        "--user",
        "u",
    ])
    .unwrap_err();
    assert!(e.to_string().contains("no sticky key"), "{e}");
}

#[test]
fn crd_prints_yaml() {
    let out = run_args(&["mlcanary", "crd"]).unwrap();
    assert!(out.contains("name: canarypolicies.mlcanary.io"), "{out}");
    assert_eq!(out, crd_yaml().unwrap());
}

#[test]
fn controller_options_and_defaults() {
    let cli = Cli::try_parse_from(["mlcanary", "controller", "--namespace", "ml"]).unwrap();
    let Command::Controller(args) = cli.command else {
        panic!("not the controller command");
    };
    assert_eq!(args.namespace.as_deref(), Some("ml"));
    assert_eq!(args.prometheus, "http://prometheus.istio-system:9090");
    assert_eq!(args.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(args.lease_name, "mlcanary-controller");
}
