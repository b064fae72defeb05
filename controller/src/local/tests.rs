use std::fs;

use clap::Parser;

use super::*;
use crate::fixtures::POLICY_FILE;

#[derive(Parser)]
struct Wrap {
    #[command(flatten)]
    local: LocalArgs,
}

fn args(extra: &[&str]) -> LocalArgs {
    let mut v = vec!["x"];
    v.extend_from_slice(extra);
    Wrap::try_parse_from(v).unwrap().local
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mlcanary-local-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    d
}

/// A file the test can point `--wasm` at (the module is only named, not loaded, without Envoy).
fn fake_wasm(dir: &std::path::Path) -> String {
    fs::create_dir_all(dir).unwrap();
    let p = dir.join("f.wasm");
    fs::write(&p, b"\0asm").unwrap();
    p.display().to_string()
}

#[test]
fn upstream_syntax() {
    assert_eq!(
        parse_upstream("canary=127.0.0.1:8002").unwrap(),
        Upstream {
            variant: "canary".into(),
            host: "127.0.0.1".into(),
            port: 8002
        }
    );
    for bad in ["canary", "canary=host", "=h:1", "c=h:0", "c=:1", "c=h:x"] {
        let e = parse_upstream(bad).unwrap_err();
        assert_eq!(e.exit_code(), 2, "{bad}");
    }
}

#[test]
fn bad_policy_or_missing_upstream_is_exit_2_and_writes_nothing() {
    let dir = tmpdir("bad");
    let wasm = fake_wasm(&dir.join("m"));
    let bad = dir.join("bad.yaml");
    let text = fs::read_to_string(POLICY_FILE)
        .unwrap()
        .replace("failureThreshold: 2", "failureThreshold: 0");
    fs::write(&bad, text).unwrap();
    let work = dir.join("work");
    let a = args(&[
        "--policy",
        bad.to_str().unwrap(),
        "--upstream",
        "stable=127.0.0.1:1",
        "--upstream",
        "canary=127.0.0.1:2",
        "--workdir",
        work.to_str().unwrap(),
        "--wasm",
        &wasm,
    ]);
    let e = run(&a, &mut Vec::new()).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(
        e.to_string().contains("spec.analysis.failureThreshold"),
        "{e}"
    );
    let a = args(&[
        "--policy",
        POLICY_FILE,
        "--upstream",
        "stable=127.0.0.1:1",
        "--workdir",
        work.to_str().unwrap(),
        "--wasm",
        &wasm,
    ]);
    let e = run(&a, &mut Vec::new()).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("--upstream canary="), "{e}");
    assert!(!work.exists(), "nothing written for a refused run");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn once_without_envoy_writes_files_starts_and_then_holds_without_data() {
    let dir = tmpdir("once");
    let wasm = fake_wasm(&dir.join("m"));
    let work = dir.join("work");
    let a = args(&[
        "--policy",
        POLICY_FILE,
        "--upstream",
        "stable=127.0.0.1:1",
        "--upstream",
        "canary=127.0.0.1:2",
        "--workdir",
        work.to_str().unwrap(),
        "--wasm",
        &wasm,
        // Nothing listens there: the metrics are unreachable.
        "--admin-port",
        "1",
        "--once",
    ]);
    let mut out = Vec::new();
    assert_eq!(run(&a, &mut out).unwrap(), Outcome::Done);
    for f in [
        "envoy.yaml",
        "ecds/ecds.yaml",
        "rds/rds.yaml",
        "status.json",
    ] {
        assert!(work.join(f).exists(), "{f}");
    }
    let s = StatusFile::read(&work.join("status.json")).unwrap();
    assert_eq!(s.policies["ml/fraud-model"].canary_weight_bp, 500);
    assert_eq!(s.policies["ml/churn-model"].canary_weight_bp, 2000);
    assert_eq!(s.listener.as_deref(), Some("127.0.0.1:10000"));
    let rds = fs::read_to_string(work.join("rds/rds.yaml")).unwrap();
    assert!(rds.contains("\"weight\": 95"), "{rds}");
    // A second run resumes from status.json; with no metrics it holds and says so.
    let mut out = Vec::new();
    assert_eq!(run(&a, &mut out).unwrap(), Outcome::Done);
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("fraud-model Progressing canary=5.00%"),
        "{text}"
    );
    assert!(text.contains("no data (unreachable"), "{text}");
    let s = StatusFile::read(&work.join("status.json")).unwrap();
    assert_eq!(s.policies["ml/fraud-model"].canary_weight_bp, 500);
    fs::remove_dir_all(&dir).unwrap();
}
