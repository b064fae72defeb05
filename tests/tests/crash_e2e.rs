//! `mlcanary local` killed with SIGKILL mid-rollout and started again on the same `--workdir`: it
//! resumes from the `status.json` it persisted — same phase, step and weight, history kept and
//! extended — replaces the Envoy the killed process left running, and finishes the rollout. And a
//! second `mlcanary local` on a directory in use refuses to start (exit 5), naming the holder.

use std::time::{Duration, Instant};

use mlcanary_e2e::local::{alive, error_rate_policy, Mlcanary, Traffic};
use mlcanary_e2e::upstream::Upstream;
use mlcanary_e2e::{free_port, http, patience};
use serde_json::Value;

const HOST: &str = "fraud-model";
const POLICY_KEY: &str = "default/fraud-model";

fn policy_status(s: &Value) -> &Value {
    &s["policies"][POLICY_KEY]
}

fn weight(s: &Value) -> Option<u64> {
    policy_status(s)["canaryWeightBp"].as_u64()
}

fn history(s: &Value) -> Vec<Value> {
    policy_status(s)["history"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn envoy_pid(s: &Value) -> Option<u32> {
    s["envoyPid"].as_u64().and_then(|p| u32::try_from(p).ok())
}

#[test]
fn sigkilled_mid_rollout_resumes_from_status_json_without_a_jump_and_finishes() {
    let stable = Upstream::start("stable");
    let canary = Upstream::start("canary");
    let (listen, admin) = (free_port(), free_port());
    let mut m = Mlcanary::local_on_ports(
        &error_rate_policy("1s", "[10, 20, 30, 40, 50, 60]", 10),
        &[("stable", stable.port), ("canary", canary.port)],
        listen,
        admin,
        &["--watch"],
    );
    let _bg = Traffic::background(listen, HOST);
    let advanced = m.wait_status(patience::ROLLOUT, |s| {
        (weight(s)? >= 2000 && policy_status(s)["phase"] == "Progressing").then_some(())
    });
    assert!(advanced.is_some(), "no step advanced:\n{}", m.output());

    let killed_pid = m.pid();
    m.kill();
    // What the killed process persisted last (written atomically: never half a file).
    let saved = m.status().expect("status.json after SIGKILL");
    let saved_policy = policy_status(&saved).clone();
    let w0 = weight(&saved).unwrap_or(0);
    let h0 = history(&saved);
    assert!((2000..10_000).contains(&w0), "{saved}");
    assert_eq!(h0.len() as u64, w0 / 1000, "{saved}");
    // Its Envoy outlived it and still serves, at the persisted split.
    let orphan = envoy_pid(&saved).expect("envoyPid");
    assert!(alive(orphan), "envoy {orphan} died with mlcanary");
    let r = http::get(
        listen,
        HOST,
        "/v1/models/fraud:predict",
        &[("x-user-id", "u1")],
    );
    assert_eq!(r.map(|r| r.status).ok(), Some(200));
    // Nobody writes status.json while mlcanary is gone.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(m.status().as_ref().map(policy_status), Some(&saved_policy));

    let restarted_at = Instant::now();
    m.rerun();
    // The first status.json of the new process: the orphan replaced, the rollout where it was.
    let first = m.wait_status(patience::START, |s| {
        (envoy_pid(s)? != orphan).then(|| s.clone())
    });
    let first = first.unwrap_or_else(|| panic!("no status from the new run:\n{}", m.output()));
    println!(
        "killed mlcanary {killed_pid} at {w0} bp; the new run wrote its first status after {:.2} s",
        restarted_at.elapsed().as_secs_f64()
    );
    assert!(!alive(orphan), "the orphan envoy {orphan} is still running");
    let p = policy_status(&first);
    assert_eq!(p["phase"], "Progressing", "{first}");
    // The first status is written after the new run's first tick, which judges the requests the
    // new Envoy served since it started (a counter reset against the persisted mark): it may
    // advance one step on that evidence, never more, and never start again.
    let (i0, i1) = (
        saved_policy["stepIndex"].as_u64().unwrap_or(0),
        p["stepIndex"].as_u64().unwrap_or(0),
    );
    assert!(i1 == i0 || i1 == i0 + 1, "step {i0} -> {i1}:\n{first}");
    let w1 = weight(&first).unwrap_or(0);
    assert!(
        w1 == w0 || w1 == w0 + 1000,
        "weight jumped {w0} -> {w1}:\n{}",
        m.output()
    );
    let h1 = history(&first);
    assert!(h1.len() >= h0.len(), "history lost:\n{first}");
    assert_eq!(&h1[..h0.len()], &h0[..], "history changed");
    assert!(h1.len() <= h0.len() + 1, "{first}");
    let out = m.output();
    assert!(
        out.contains(&format!("stopped envoy {orphan} left by a previous run")),
        "{out}"
    );
    // The new Envoy serves on the same address.
    let r = http::get(
        listen,
        HOST,
        "/v1/models/fraud:predict",
        &[("x-user-id", "u2")],
    );
    assert_eq!(r.map(|r| r.status).ok(), Some(200));

    // Resumed, not restarted: it goes on from w0 to the end, each step once.
    let end = m.wait_status(patience::ROLLOUT, |s| {
        (policy_status(s)["phase"] == "Promoted").then(|| s.clone())
    });
    let end = end.unwrap_or_else(|| panic!("not promoted:\n{}", m.output()));
    let h = history(&end);
    assert_eq!(&h[..h0.len()], &h0[..], "the saved history is a prefix");
    let weights: Vec<u64> = h.iter().filter_map(|e| e["toWeightBp"].as_u64()).collect();
    assert_eq!(weights, [1000, 2000, 3000, 4000, 5000, 6000, 10_000]);
    let out = m.output();
    assert_eq!(out.matches("started at").count(), 1, "{out}");
    assert!(!out.contains("rolled back from"), "{out}");
    assert_eq!(m.terminate().and_then(|s| s.code()), Some(0), "{out}");
}

#[test]
fn a_second_mlcanary_on_the_same_workdir_refuses_with_exit_5_and_names_the_holder() {
    let stable = Upstream::start("stable");
    let canary = Upstream::start("canary");
    let mut first = Mlcanary::local(
        &error_rate_policy("1s", "[10, 20, 30, 40, 50, 60, 70, 80, 90]", 10),
        &[("stable", stable.port), ("canary", canary.port)],
        &["--watch"],
    );
    first.listener_port(patience::START);
    let before = first.status().expect("status.json");
    let envoy = envoy_pid(&before).expect("envoyPid");
    let bootstrap = std::fs::read_to_string(first.workdir.join("envoy.yaml")).expect("bootstrap");

    let mut second = first.second();
    let code = second.wait_exit(patience::START).and_then(|s| s.code());
    let out = second.output();
    assert_eq!(code, Some(5), "{out}");
    assert!(
        out.contains("is locked by another mlcanary local (pid ")
            && out.contains(&format!("(pid {} since ", first.pid())),
        "{out}"
    );
    assert!(!out.contains("envoy listening"), "{out}");
    // The first is untouched: still running, same Envoy, same files, still ticking.
    assert!(alive(first.pid()) && alive(envoy));
    assert_eq!(
        std::fs::read_to_string(first.workdir.join("envoy.yaml")).ok(),
        Some(bootstrap)
    );
    let updated = before["updated"].clone();
    let ticking = first.wait_status(patience::SETTLE, |s| {
        (s["updated"] != updated && envoy_pid(s) == Some(envoy)).then_some(())
    });
    assert!(ticking.is_some(), "{}", first.output());
    let lock = std::fs::read_to_string(first.workdir.join("mlcanary.lock")).unwrap_or_default();
    assert!(
        lock.starts_with(&format!("pid {} since ", first.pid())),
        "{lock}"
    );
    assert_eq!(first.terminate().and_then(|s| s.code()), Some(130));
}
