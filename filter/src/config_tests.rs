use super::*;
use serde_json::json;

fn parse(v: serde_json::Value) -> Result<Config, ConfigError> {
    Config::from_json(v.to_string().as_bytes())
}

fn base() -> serde_json::Value {
    json!({
        "policies": [{
            "name": "fraud-model",
            "hosts": ["fraud-model", "fraud-model.ml.svc.cluster.local"],
            "variants": [{"name": "stable", "weight_bp": 9500}, {"name": "canary", "weight_bp": 500}],
            "sticky": {"header": "x-user-id", "cookie": "mlcanary-uid", "salt": "v7"},
            "rules": [{"match": {"header": "x-user-segment", "exact": "beta"}, "variant": "canary"}],
            "segment": {"header": "x-customer-age-band", "values": ["18-30", "31-60", "60+"]}
        }]
    })
}

fn err_field(v: serde_json::Value) -> String {
    match parse(v) {
        Err(ConfigError::Invalid { field, .. }) => field,
        other => panic!("expected a field error, got {other:?}"),
    }
}

#[test]
fn the_design_example_is_accepted() {
    let c = parse(base()).unwrap(); // ok: test
    assert_eq!(c.variant_header, "x-mlcanary-variant");
    let p = &c.policies[0];
    assert_eq!(p.bounds, vec![9500, 10000]);
    assert_eq!(p.segment_count(), 4);
    assert_eq!(p.sticky.as_ref().unwrap().salt, "v7"); // ok: test
}

#[test]
fn weights_must_sum_to_100_percent() {
    let mut v = base();
    v["policies"][0]["variants"][1]["weight_bp"] = json!(400);
    let e = parse(v).unwrap_err().to_string();
    assert!(e.starts_with("policies[0].variants:"), "{e}");
    assert!(e.contains("9900"), "{e}");
}

#[test]
fn errors_name_the_field() {
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        (
            "/policies/0/rules/0/variant",
            json!("shadow"),
            "policies[0].rules[0].variant",
        ),
        (
            "/policies/0/rules/0/match",
            json!({"header": "x-a", "regex": "("}),
            "policies[0].rules[0].match.regex",
        ),
        (
            "/policies/0/rules/0/match",
            json!({"header": "", "exact": "a"}),
            "policies[0].rules[0].match.header",
        ),
        (
            "/policies/0/rules/0/match",
            json!({"header": "x-a", "cookie": "c", "exact": "a"}),
            "policies[0].rules[0].match",
        ),
        (
            "/policies/0/rules/0/match",
            json!({"header": "x-a"}),
            "policies[0].rules[0].match",
        ),
        (
            "/policies/0/rules/0/match",
            json!({"header": "X-A", "exact": "a"}),
            "policies[0].rules[0].match.header",
        ),
        (
            "/policies/0/sticky",
            json!({"salt": "s"}),
            "policies[0].sticky",
        ),
        (
            "/policies/0/sticky",
            json!({"header": "", "salt": "s"}),
            "policies[0].sticky.header",
        ),
        (
            "/policies/0/sticky",
            json!({"header": "x-u", "assign_cookie": true}),
            "policies[0].sticky.assign_cookie",
        ),
        ("/policies/0/name", json!("bad name"), "policies[0].name"),
        ("/policies/0/name", json!(""), "policies[0].name"),
        ("/policies/0/hosts", json!([]), "policies[0].hosts"),
        (
            "/policies/0/hosts",
            json!(["fraud-model:8501"]),
            "policies[0].hosts[0]",
        ),
        ("/policies/0/variants", json!([]), "policies[0].variants"),
        (
            "/policies/0/variants/0/name",
            json!("canary"),
            "policies[0].variants[1].name",
        ),
        (
            "/policies/0/variants/0/weight_bp",
            json!(20000),
            "policies[0].variants[0].weight_bp",
        ),
        (
            "/policies/0/segment/values",
            json!([]),
            "policies[0].segment.values",
        ),
        (
            "/policies/0/segment/values",
            json!(["a", "other"]),
            "policies[0].segment.values[1]",
        ),
        ("/policies/0/model", json!("a/b"), "policies[0].model"),
    ];
    for (ptr, value, field) in cases {
        let mut v = base();
        let (parent, key) = ptr.rsplit_once('/').unwrap(); // ok: test
        match v.pointer_mut(ptr) {
            Some(slot) => *slot = value,
            None => {
                v.pointer_mut(parent).unwrap()[key] = value; // ok: test
            }
        }
        assert_eq!(err_field(v), field, "setting {ptr}");
    }
}

#[test]
fn unknown_fields_and_bad_json_are_refused() {
    let mut v = base();
    v["policies"][0]["weights"] = json!(5);
    assert!(matches!(parse(v), Err(ConfigError::Json(m)) if m.contains("weights")));
    assert!(matches!(
        Config::from_json(b"{not json"),
        Err(ConfigError::Json(_))
    ));
    assert!(matches!(Config::from_json(b""), Err(ConfigError::Json(_))));
}

#[test]
fn duplicate_policy_names_and_host_clashes_are_refused() {
    let mut v = base();
    let mut second = v["policies"][0].clone();
    second["hosts"] = json!(["other"]);
    v["policies"].as_array_mut().unwrap().push(second.clone()); // ok: test
    assert_eq!(err_field(v.clone()), "policies[1].name");
    // The same name in another namespace is another policy.
    second["namespace"] = json!("staging");
    v["policies"][1] = second.clone();
    let c = parse(v.clone()).expect("same name, two namespaces");
    let ids: Vec<(&str, &str)> = c
        .policies
        .iter()
        .map(|p| (p.namespace.as_str(), p.name.as_str()))
        .collect();
    assert_eq!(
        ids,
        [("default", "fraud-model"), ("staging", "fraud-model")]
    );
    second["namespace"] = json!("bad namespace");
    v["policies"][1] = second.clone();
    assert_eq!(err_field(v.clone()), "policies[1].namespace");
    second["namespace"] = json!("default");
    v["policies"][1] = second.clone();
    assert_eq!(
        err_field(v.clone()),
        "policies[1].name",
        "explicit default = absent"
    );
    second["name"] = json!("other");
    second["hosts"] = json!(["fraud-model"]);
    v["policies"][1] = second.clone();
    assert_eq!(err_field(v.clone()), "policies[1].hosts");
    // The same host is fine once models tell the policies apart.
    v["policies"][0]["model"] = json!("fraud");
    v["policies"][1]["model"] = json!("fraud-v2");
    assert!(parse(v).is_ok());
}

#[test]
fn policies_are_found_by_host_and_model() {
    let mut v = base();
    v["policies"][0]["model"] = json!("fraud");
    let mut any = v["policies"][0].clone();
    any["name"] = json!("catch-all");
    any["hosts"] = json!(["*"]);
    any.as_object_mut().unwrap().remove("model"); // ok: test
    v["policies"].as_array_mut().unwrap().push(any); // ok: test
    let c = parse(v).unwrap(); // ok: test
    assert_eq!(
        c.find_policy("fraud-model", Some("/v1/models/fraud:predict")),
        Some(0)
    );
    assert_eq!(
        c.find_policy(
            "Fraud-Model:8501",
            Some("/v1/models/fraud/versions/3:predict")
        ),
        Some(0)
    );
    assert_eq!(
        c.find_policy(
            "fraud-model.ml.svc.cluster.local",
            Some("/v2/models/fraud/infer")
        ),
        Some(0)
    );
    // Another model on the same host falls through to the wildcard policy.
    assert_eq!(
        c.find_policy("fraud-model", Some("/v1/models/churn:predict")),
        Some(1)
    );
    assert_eq!(c.find_policy("fraud-model", None), Some(1));
    assert_eq!(c.find_policy("elsewhere:80", Some("/")), Some(1));
}

#[test]
fn unknown_hosts_match_no_policy() {
    let c = parse(base()).unwrap(); // ok: test
    assert_eq!(c.find_policy("fraud-model", None), Some(0));
    assert_eq!(
        c.find_policy("unknown", Some("/v1/models/fraud:predict")),
        None
    );
    assert_eq!(c.find_policy("", None), None);
}

#[test]
fn ports_and_models_are_parsed() {
    assert_eq!(strip_port("a:80"), "a");
    assert_eq!(strip_port("a"), "a");
    assert_eq!(strip_port("[::1]:8080"), "[::1]");
    assert_eq!(strip_port("[::1]"), "[::1]");
    assert_eq!(model_from_path("/v1/models/fraud:predict"), Some("fraud"));
    assert_eq!(model_from_path("/v1/models/fraud"), Some("fraud"));
    assert_eq!(
        model_from_path("/v1/models/fraud/labels/stable:predict"),
        Some("fraud")
    );
    assert_eq!(
        model_from_path("/v2/models/fraud/versions/2/infer?x=1"),
        Some("fraud")
    );
    assert_eq!(model_from_path("/v1/models/"), None);
    assert_eq!(model_from_path("/healthz"), None);
}

#[test]
fn raw_config_round_trips_through_json() {
    let raw: RawConfig = serde_json::from_value(base()).unwrap(); // ok: test
    let again: RawConfig = serde_json::from_str(&serde_json::to_string(&raw).unwrap()).unwrap(); // ok: test
    assert_eq!(raw, again);
}

#[test]
fn mirrored_requests_find_the_policy_in_shadow() {
    assert_eq!(
        shadowed_host("fraud-model-shadow:8501"),
        Some("fraud-model")
    );
    assert_eq!(shadowed_host("fraud-model-shadow"), Some("fraud-model"));
    assert_eq!(shadowed_host("fraud-model:8501"), None);
    assert_eq!(shadowed_host("-shadow"), None);
    let mut v = base();
    let c = parse(v.clone()).unwrap(); // ok: test
    assert_eq!(
        c.find_shadow("fraud-model-shadow", None),
        None,
        "no shadow phase: a mirrored request is not measured"
    );
    v["policies"][0]["shadow"] = json!("canary");
    let c = parse(v.clone()).unwrap(); // ok: test
    assert_eq!(c.find_shadow("Fraud-Model-shadow:8501", None), Some((0, 1)));
    assert_eq!(c.find_shadow("fraud-model:8501", None), None);
    assert_eq!(c.find_shadow("other-shadow", None), None);
    v["policies"][0]["shadow"] = json!("v9");
    assert_eq!(err_field(v), "policies[0].shadow");
}
