use serde_json::{json, Value};

use super::*;
use crate::policy::CanaryPolicy;
use mlcanary_core::render::desired_traffic;
use mlcanary_core::weights::Weights;

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mlcanary-files-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn ecds_is_the_wasm_extension_config_with_the_filter_json_as_a_string() {
    let p = CanaryPolicy::test().validated();
    let d = desired_traffic(&p, Weights::with_canary_bp(500), &[]).unwrap();
    let text = render_ecds(3, Path::new("/x/f.wasm"), &d.plugin_config).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["version_info"], "3");
    let r = &v["resources"][0];
    assert_eq!(
        r["@type"],
        "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"
    );
    assert_eq!(r["name"], "mlcanary");
    let c = &r["typed_config"];
    assert_eq!(c["@type"], WASM_TYPE_URL);
    assert_eq!(c["config"]["root_id"], "mlcanary");
    assert_eq!(c["config"]["vm_config"]["runtime"], "envoy.wasm.runtime.v8");
    assert_eq!(
        c["config"]["vm_config"]["code"]["local"]["filename"],
        "/x/f.wasm"
    );
    let conf = &c["config"]["configuration"];
    assert_eq!(
        conf["@type"],
        "type.googleapis.com/google.protobuf.StringValue"
    );
    // The string is the filter's own config, and the filter accepts it.
    let inner = conf["value"].as_str().unwrap();
    let cfg = mlcanary_filter::Config::from_json(inner.as_bytes()).unwrap();
    assert_eq!(cfg.policies[0].variants[1].weight_bp, 500);
}

#[test]
fn rds_has_tagged_routes_then_the_weighted_default() {
    let p = CanaryPolicy::test().validated();
    let d = desired_traffic(&p, Weights::with_canary_bp(2500), &[]).unwrap();
    let routes = PolicyRoutes {
        policy: d.policy.clone(),
        hosts: vec!["fraud-model".into(), "*".into()],
        routes: d.routes.clone(),
    };
    let v: Value = serde_json::from_str(&render_rds(7, &[routes]).unwrap()).unwrap();
    let rc = &v["resources"][0];
    assert_eq!(
        rc["@type"],
        "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
    );
    assert_eq!(rc["name"], ROUTE_CONFIG_NAME);
    let vh = &rc["virtual_hosts"][0];
    assert_eq!(vh["domains"], json!(["fraud-model", "fraud-model:*", "*"]));
    // The listener declares the filter disabled; a policy's virtual host turns it on.
    assert_eq!(
        vh["typed_per_filter_config"]["mlcanary"]["@type"],
        "type.googleapis.com/envoy.config.route.v3.FilterConfig"
    );
    assert_eq!(
        vh["routes"],
        json!([
            {"name": "mlcanary-fraud-model-canary",
             "match": {"prefix": "/", "headers": [{"name": "x-mlcanary-variant", "string_match": {"exact": "canary"}}]},
             "route": {"cluster": "canary"}},
            {"name": "mlcanary-fraud-model-stable",
             "match": {"prefix": "/", "headers": [{"name": "x-mlcanary-variant", "string_match": {"exact": "stable"}}]},
             "route": {"cluster": "stable"}},
            {"name": "mlcanary-fraud-model-default",
             "match": {"prefix": "/"},
             "route": {"weighted_clusters": {"clusters": [
                 {"name": "stable", "weight": 75}, {"name": "canary", "weight": 25}]}}}
        ])
    );
    // At 0 % (and 100 %) the default route names one cluster: Envoy refuses a zero total.
    let d0 = desired_traffic(&p, Weights::ALL_STABLE, &[]).unwrap();
    let r0 = PolicyRoutes {
        policy: d0.policy,
        hosts: vec!["fraud-model".into()],
        routes: d0.routes,
    };
    let v: Value = serde_json::from_str(&render_rds(8, &[r0]).unwrap()).unwrap();
    assert_eq!(
        v["resources"][0]["virtual_hosts"][0]["routes"][2]["route"],
        json!({"cluster": "stable"})
    );
}

#[test]
fn a_policy_with_feedback_holds_feedback_requests_by_a_fault_route_first() {
    let mut p = CanaryPolicy::test().validated();
    p.feedback = Some(mlcanary_core::policy::feedback::Feedback {
        secret: "s".into(),
        max_age: std::time::Duration::from_secs(60),
        label_delay: std::time::Duration::ZERO,
        bake: false,
        keys: vec!["MDEyMzQ1Njc4OWFiY2RlZjAxMjM=".into()],
    });
    p.filter_template.predictions = Some(Default::default());
    let d = desired_traffic(&p, Weights::with_canary_bp(2500), &[]).unwrap();
    let routes = PolicyRoutes {
        policy: d.policy.clone(),
        hosts: vec!["fraud-model".into()],
        routes: d.routes.clone(),
    };
    let v: Value = serde_json::from_str(&render_rds(1, &[routes]).unwrap()).unwrap();
    let hold = &v["resources"][0]["virtual_hosts"][0]["routes"][0];
    assert_eq!(hold["name"], "mlcanary-fraud-model-feedback");
    assert_eq!(
        hold["match"],
        json!({"safe_regex": {"regex": "^/v1/models/fraud:feedback$"}}),
        "narrowed to the policy's model"
    );
    let fault = &hold["typed_per_filter_config"][bootstrap::FAULT_FILTER];
    assert_eq!(fault["@type"], bootstrap::FAULT_TYPE_URL);
    assert_eq!(fault["delay"]["fixed_delay"], "30s");
    assert_eq!(fault["abort"]["http_status"], 503);
    assert_eq!(
        fault["abort"]["percentage"],
        json!({"numerator": 10_000, "denominator": "TEN_THOUSAND"})
    );
    // Then the usual three.
    assert_eq!(
        v["resources"][0]["virtual_hosts"][0]["routes"][1]["name"],
        "mlcanary-fraud-model-canary"
    );
}

#[test]
fn two_policies_on_one_domain_are_refused() {
    let p = CanaryPolicy::test().validated();
    let d = desired_traffic(&p, Weights::ALL_STABLE, &[]).unwrap();
    let r = |name: &str| PolicyRoutes {
        policy: name.into(),
        hosts: vec!["shared".into()],
        routes: d.routes.clone(),
    };
    let e = render_rds(1, &[r("a"), r("b")]).unwrap_err();
    assert!(e.to_string().contains("\"shared\""), "{e}");
}

#[test]
fn atomic_write_replaces_the_file_and_leaves_no_temp_file() {
    let dir = tmpdir("atomic");
    let f = dir.join("rds.yaml");
    write_atomic(&f, "one").unwrap();
    write_atomic(&f, "two").unwrap();
    assert_eq!(fs::read_to_string(&f).unwrap(), "two");
    let names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["rds.yaml"]);
    // A missing directory is an error naming the file, not a panic.
    let e = write_atomic(&dir.join("nope/rds.yaml"), "x").unwrap_err();
    assert!(e.to_string().contains("nope/rds.yaml"), "{e}");
    fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn target_keeps_every_policy_in_both_files() {
    let dir = tmpdir("target");
    let t = EnvoyFilesTarget::new(
        dir.join("ecds.yaml"),
        dir.join("rds.yaml"),
        dir.join("ecds-inbound.yaml"),
        PathBuf::from("/m.wasm"),
    );
    let text = fs::read_to_string(crate::fixtures::POLICY_FILE).unwrap();
    let pols = crate::policy::file::validate_policies(&text).unwrap();
    let (fraud, churn) = (&pols[0].1, &pols[1].1);
    let d1 = desired_traffic(fraud, Weights::with_canary_bp(1000), &[]).unwrap();
    t.apply(&d1).await.unwrap();
    let d2 = desired_traffic(
        churn,
        Weights::with_canary_bp(2000),
        &[(fraud, Weights::with_canary_bp(1000))],
    )
    .unwrap();
    t.apply(&d2).await.unwrap();
    let rds = read_json(&dir.join("rds.yaml"));
    assert_eq!(rds["version_info"], "2");
    let vhs: Vec<&str> = rds["resources"][0]["virtual_hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(vhs, ["churn-model", "fraud-model"]);
    let ecds = read_json(&dir.join("ecds.yaml"));
    let inner = ecds["resources"][0]["typed_config"]["config"]["configuration"]["value"]
        .as_str()
        .unwrap();
    let cfg = mlcanary_filter::Config::from_json(inner.as_bytes()).unwrap();
    assert_eq!(cfg.policies.len(), 2);
    fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_shadow_mirrors_stable_routes_and_configures_the_inbound_side() {
    let dir = tmpdir("shadow");
    let t = EnvoyFilesTarget::new(
        dir.join("ecds.yaml"),
        dir.join("rds.yaml"),
        dir.join("ecds-inbound.yaml"),
        PathBuf::from("/m.wasm"),
    );
    let p = CanaryPolicy::test().validated();
    t.apply(&desired_traffic(&p, Weights::shadow(2500), &[]).unwrap())
        .await
        .unwrap();
    let rds = read_json(&dir.join("rds.yaml"));
    let routes = rds["resources"][0]["virtual_hosts"][0]["routes"]
        .as_array()
        .unwrap()
        .clone();
    let mirrors: Vec<(&str, &Value)> = routes
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap(),
                &r["route"]["request_mirror_policies"],
            )
        })
        .collect();
    let to_canary = json!([{
        "cluster": "mlcanary-shadow-canary",
        "runtime_fraction": {"default_value": {"numerator": 2500, "denominator": "TEN_THOUSAND"}},
    }]);
    assert_eq!(mirrors[0], ("mlcanary-fraud-model-canary", &Value::Null));
    assert_eq!(mirrors[1], ("mlcanary-fraud-model-stable", &to_canary));
    assert_eq!(mirrors[2], ("mlcanary-fraud-model-default", &to_canary));
    // Every live request goes to stable.
    assert_eq!(routes[2]["route"]["cluster"], "stable");
    let inbound = read_json(&dir.join("ecds-inbound.yaml"));
    let r = &inbound["resources"][0];
    assert_eq!(r["name"], "mlcanary-inbound");
    let inner = r["typed_config"]["config"]["configuration"]["value"]
        .as_str()
        .unwrap();
    let cfg = mlcanary_filter::Config::from_json(inner.as_bytes()).unwrap();
    assert!(cfg.inbound);
    assert_eq!(cfg.policies[0].shadow, Some(1));
    // Live again: no mirror, and the inbound side measures nothing.
    t.apply(&desired_traffic(&p, Weights::with_canary_bp(500), &[]).unwrap())
        .await
        .unwrap();
    let rds = read_json(&dir.join("rds.yaml")).to_string();
    assert!(!rds.contains("request_mirror_policies"), "{rds}");
    let inbound = read_json(&dir.join("ecds-inbound.yaml"));
    let inner = inbound["resources"][0]["typed_config"]["config"]["configuration"]["value"]
        .as_str()
        .unwrap();
    assert!(mlcanary_filter::Config::from_json(inner.as_bytes())
        .unwrap()
        .policies
        .is_empty());
    fs::remove_dir_all(&dir).unwrap();
}
