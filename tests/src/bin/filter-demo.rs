//! The filter in a real Envoy, shown: two model upstreams, a 10 % sticky canary, a rule, a spoofed
//! header, a weight change delivered by ECDS without a restart, and the labelled stats.

use std::collections::BTreeMap;
use std::time::Duration;

use mlcanary_e2e::envoy::{wait_for, Envoy, EnvoySetup};
use mlcanary_e2e::http;
use mlcanary_e2e::upstream::Upstream;
use serde_json::json;

fn config(canary_bp: u32) -> serde_json::Value {
    json!({"policies": [{
        "name": "fraud-model",
        "hosts": ["fraud-model"],
        "variants": [
            {"name": "stable", "weight_bp": 10_000 - canary_bp},
            {"name": "canary", "weight_bp": canary_bp}
        ],
        "sticky": {"header": "x-user-id", "salt": "fraud-model"},
        "rules": [{"match": {"header": "x-user-segment", "exact": "beta"}, "variant": "canary"}]
    }]})
}

fn split(port: u16, users: usize) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for i in 0..users {
        let user = format!("user-{i}");
        let r = http::get(
            port,
            "fraud-model",
            "/v1/models/fraud:predict",
            &[("x-user-id", &user)],
        );
        if let Some(v) = r.ok().and_then(|r| r.served_by()) {
            *out.entry(v).or_insert(0) += 1;
        }
    }
    out
}

fn main() {
    let stable = Upstream::start("stable");
    let canary = Upstream::start("canary");
    let setup = EnvoySetup::new(
        &[("stable", stable.port), ("canary", canary.port)],
        config(1000),
    );
    let mut envoy = Envoy::start(setup);
    println!(
        "Envoy with the mlcanary filter on 127.0.0.1:{} (admin :{})",
        envoy.port, envoy.admin_port
    );

    println!(
        "\n1000 users, canary at 10 % (sticky on x-user-id):  {:?}",
        split(envoy.port, 1000)
    );
    let beta = http::get(
        envoy.port,
        "fraud-model",
        "/",
        &[("x-user-segment", "beta")],
    );
    println!(
        "x-user-segment: beta (a rule)           -> {:?}",
        beta.ok().and_then(|r| r.served_by())
    );
    let spoof = http::get(
        envoy.port,
        "fraud-model",
        "/",
        &[("x-mlcanary-variant", "canary"), ("x-user-id", "user-0")],
    );
    println!(
        "user-0 sending x-mlcanary-variant: canary -> {:?} (clients cannot pick)",
        spoof.ok().and_then(|r| r.served_by())
    );

    envoy.set_filter_config(&config(5000).to_string());
    let stat = "extension_config_discovery.http_filter.mlcanary.config_reload";
    let _ = wait_for(Duration::from_secs(10), || {
        (envoy.stat(stat)? >= 2).then_some(())
    });
    println!(
        "\nECDS file rewritten: canary at 50 %, same Envoy process: {:?}",
        split(envoy.port, 1000)
    );

    std::thread::sleep(Duration::from_millis(1500)); // one stats flush for the histograms
    println!("\nGET /stats/prometheus (mlcanary counters):");
    for line in envoy
        .prometheus()
        .lines()
        .filter(|l| l.starts_with("mlcanary_") && !l.contains("_bucket"))
    {
        println!("  {line}");
    }
}
