//! `mlcanary local --http`: the status page's JSON API on the real binary, and an operator command
//! through it applied at once as a tick would — traffic files rewritten (checked through Envoy),
//! `status.json` written, the exit code earned. The page itself is tested in a browser by
//! `tests/browser/`.

use mlcanary_e2e::local::{error_rate_policy_gated, wait_all_served_by, Mlcanary, Traffic};
use mlcanary_e2e::upstream::Upstream;
use mlcanary_e2e::{http, patience};
use serde_json::Value;

const HOST: &str = "fraud-model";

fn json(r: &http::Response) -> Value {
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {r:?}"))
}

#[test]
fn an_abort_through_the_api_rolls_back_at_once_and_traffic_follows() {
    let stable = Upstream::start("stable");
    let canary = Upstream::start("canary");
    // Gated: however slow the machine, the rollout cannot end Promoted before the abort.
    let mut m = Mlcanary::local(
        &error_rate_policy_gated("1s", "[20, 40, 60, 80]", 10),
        &[("stable", stable.port), ("canary", canary.port)],
        &["--watch", "--http", "127.0.0.1:0"],
    );
    let port = m.listener_port(patience::START);
    let page = format!("{}/", m.http_base(patience::START));
    let http_port: u16 = page
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("bad page address {page}"));
    assert!(
        m.output().contains(&format!("status page: {page}")),
        "{}",
        m.output()
    );
    let mut bg = Traffic::background(port, HOST);

    // The API reads what the loop does: wait for a step past the first on real data.
    let at = m.wait_status(patience::ROLLOUT, |s| {
        let w = s["policies"]["default/fraud-model"]["canaryWeightBp"].as_u64()?;
        (w >= 4000).then_some(w)
    });
    assert!(at.is_some(), "no second step:\n{}", m.output());
    let one = http::get(http_port, "x", "/api/policies/fraud-model", &[]).expect("GET detail");
    assert_eq!(one.status, 200);
    let one = json(&one);
    assert_eq!(one["stepsBp"], serde_json::json!([2000, 4000, 6000, 8000]));
    assert!(
        one["series"]["weight"].as_array().map_or(0, Vec::len) >= 2,
        "{one}"
    );
    assert_eq!(one["series"]["checks"]["errors"][0]["threshold"], 0.01);
    let list = json(&http::get(http_port, "x", "/api/policies", &[]).expect("GET list"));
    assert_eq!(list[0]["name"], "fraud-model");
    let missing = http::get(http_port, "x", "/api/policies/nope", &[]).expect("GET unknown");
    assert_eq!(missing.status, 404);
    assert!(json(&missing)["error"].is_string());

    let resume = http::post(http_port, "x", "/api/policies/fraud-model/resume", &[], b"")
        .expect("POST resume");
    assert_eq!(resume.status, 409, "not paused: {resume:?}");
    let abort = http::post(http_port, "x", "/api/policies/fraud-model/abort", &[], b"")
        .expect("POST abort");
    assert_eq!(abort.status, 202, "{abort:?}");
    assert_eq!(json(&abort), serde_json::json!({"accepted": "abort"}));

    // Applied before the answer: status.json already says so, and Envoy sends everyone to stable.
    let s = m.status().unwrap_or_default();
    let p = &s["policies"]["default/fraud-model"];
    assert_eq!(p["phase"], "RolledBack", "{s}");
    assert_eq!(p["canaryWeightBp"], 0);
    let last = p["history"].as_array().and_then(|h| h.last()).cloned();
    assert_eq!(
        last.as_ref().map(|h| &h["reason"]),
        Some(&Value::from("aborted by operator"))
    );
    bg.stop();
    // Envoy applies the new split when its file watch fires, a moment after the files were
    // written: wait for it, then every user is on stable.
    let all = wait_all_served_by(port, HOST, "stable", 100);
    assert!(all.is_ok(), "not all on stable after the abort: {all:?}");
    let again = http::post(
        http_port,
        "x",
        "/api/policies/fraud-model/promote",
        &[],
        b"",
    )
    .expect("POST promote");
    assert_eq!(again.status, 409, "ended: {again:?}");
    let events = json(&http::get(http_port, "x", "/api/policies/fraud-model", &[]).expect("GET"));
    let kinds: Vec<&str> = events["series"]["events"]
        .as_array()
        .map(|e| e.iter().filter_map(|e| e["kind"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(kinds.last(), Some(&"rolledBack"), "{kinds:?}");

    let code = m.terminate().and_then(|s| s.code());
    assert_eq!(code, Some(1), "rolled back: exit 1\n{}", m.output());
    assert!(m.output().contains("abort by operator"), "{}", m.output());
}
