use serde_json::json;

use super::*;
use crate::fixtures::TestPolicy;
use crate::weights::Weights;

#[test]
fn filter_policy_lists_stable_then_canary_summing_to_10000() {
    let v = TestPolicy::fraud_model().validated();
    let p = render_policy(&v, Weights::with_canary_bp(500));
    let w: Vec<(&str, u32)> = p
        .variants
        .iter()
        .map(|v| (v.name.as_str(), v.weight_bp))
        .collect();
    assert_eq!(w, [("stable", 9500), ("canary", 500)]);
    assert_eq!(p.name, "fraud-model");
    assert_eq!(p.model.as_deref(), Some("fraud"));
    assert_eq!(p.rules.len(), 2);
    // The filter accepts it and puts the canary at the top of the hash range.
    let raw = render_config(&[(&v, Weights::with_canary_bp(500))]).unwrap();
    let cfg = mlcanary_filter::Config::try_from(raw).unwrap();
    assert_eq!(cfg.policies[0].variant_for_bucket(9_499), 0);
    assert_eq!(cfg.policies[0].variant_for_bucket(9_500), 1);
}

#[test]
fn shared_plugin_config_is_checked_across_policies() {
    let a = TestPolicy::fraud_model().validated();
    let mut b = a.clone();
    b.name = "other".into();
    b.filter_template.name = "other".into();
    // Same host, same model: the filter would refuse it, so rendering refuses it.
    let e = render_config(&[(&a, Weights::ALL_STABLE), (&b, Weights::ALL_STABLE)]).unwrap_err();
    assert!(e.to_string().contains("two policies claim host"), "{e}");
    b.filter_template.model = Some("other-model".into());
    let raw = render_config(&[
        (&a, Weights::ALL_STABLE),
        (&b, Weights::with_canary_bp(2500)),
    ])
    .unwrap();
    assert_eq!(raw.policies.len(), 2);
    assert_eq!(raw.policies[1].variants[1].weight_bp, 2500);
}

#[test]
fn the_shadow_mirrors_stable_routes_to_the_canary_and_its_inbound_side_measures_them() {
    let v = TestPolicy::fraud_model().validated();
    let routes = owned_routes(&v, Weights::shadow(1250));
    assert_eq!(
        serde_json::to_value(&routes).unwrap(),
        json!([
            {"name": "mlcanary-fraud-model-canary",
             "match": [{"headers": {"x-mlcanary-variant": {"exact": "canary"}}}],
             "route": [{"destination": {"host": "fraud-model", "subset": "canary"}}]},
            {"name": "mlcanary-fraud-model-stable",
             "match": [{"headers": {"x-mlcanary-variant": {"exact": "stable"}}}],
             "route": [{"destination": {"host": "fraud-model", "subset": "stable"}}],
             "mirror": {"host": "fraud-model", "subset": "canary"},
             "mirrorPercentage": {"value": 12.5}},
            {"name": "mlcanary-fraud-model-default",
             "route": [{"destination": {"host": "fraud-model", "subset": "stable"}, "weight": 100},
                       {"destination": {"host": "fraud-model", "subset": "canary"}, "weight": 0}],
             "mirror": {"host": "fraud-model", "subset": "canary"},
             "mirrorPercentage": {"value": 12.5}},
        ])
    );
    check_routes(&routes).unwrap();
    // Outbound, the canary gets no live request; the inbound config measures its shadow only.
    let raw = render_config(&[(&v, Weights::shadow(1250))]).unwrap();
    assert_eq!(raw.policies[0].variants[1].weight_bp, 0);
    assert_eq!(raw.policies[0].shadow.as_deref(), Some("canary"));
    assert!(!raw.inbound);
    let inbound = inbound_config(&raw);
    assert!(inbound.inbound);
    assert_eq!(inbound.policies.len(), 1);
    mlcanary_filter::Config::try_from(inbound).unwrap();
    // Live steps mirror nothing, and their inbound side measures nothing.
    let live = render_config(&[(&v, Weights::with_canary_bp(500))]).unwrap();
    assert_eq!(live.policies[0].shadow, None);
    assert!(inbound_config(&live).policies.is_empty());
    assert!(owned_routes(&v, Weights::with_canary_bp(500))
        .iter()
        .all(|r| r.mirror.is_none() && r.mirror_percentage.is_none()));
}

#[test]
fn routes_have_the_design_shape() {
    let v = TestPolicy::fraud_model().validated();
    let routes = owned_routes(&v, Weights::with_canary_bp(500));
    assert_eq!(
        serde_json::to_value(&routes).unwrap(),
        json!([
            {"name": "mlcanary-fraud-model-canary",
             "match": [{"headers": {"x-mlcanary-variant": {"exact": "canary"}}}],
             "route": [{"destination": {"host": "fraud-model", "subset": "canary"}}]},
            {"name": "mlcanary-fraud-model-stable",
             "match": [{"headers": {"x-mlcanary-variant": {"exact": "stable"}}}],
             "route": [{"destination": {"host": "fraud-model", "subset": "stable"}}]},
            {"name": "mlcanary-fraud-model-default",
             "route": [{"destination": {"host": "fraud-model", "subset": "stable"}, "weight": 95},
                       {"destination": {"host": "fraud-model", "subset": "canary"}, "weight": 5}]}
        ])
    );
    check_routes(&routes).unwrap();
    for bp in [0, 1, 4_950, 10_000] {
        check_routes(&owned_routes(&v, Weights::with_canary_bp(bp))).unwrap();
    }
}

#[test]
fn bad_routes_are_refused() {
    let v = TestPolicy::fraud_model().validated();
    let mut r = owned_routes(&v, Weights::with_canary_bp(500));
    r[2].route[1].weight = Some(0);
    r[2].route[0].weight = Some(0);
    assert_eq!(
        check_routes(&r),
        Err(RouteError::BadTotal {
            route: "mlcanary-fraud-model-default".into(),
            total: 0
        })
    );
    let mut r = owned_routes(&v, Weights::with_canary_bp(500));
    r[0].route[0].destination.host.clear();
    assert!(matches!(
        check_routes(&r),
        Err(RouteError::EmptyHost { .. })
    ));
    let mut r = owned_routes(&v, Weights::with_canary_bp(500));
    r[1].route.clear();
    assert!(matches!(
        check_routes(&r),
        Err(RouteError::NoDestination { .. })
    ));
}

#[test]
fn splice_keeps_foreign_routes_and_replaces_owned_ones() {
    let v = TestPolicy::fraud_model().validated();
    let existing = vec![
        json!({"name": "mlcanary-fraud-model-canary", "route": []}),
        json!({"name": "health", "match": [{"uri": {"exact": "/health"}}], "route": []}),
        json!({"route": [{"destination": {"host": "x"}}]}),
        json!({"name": "mlcanary-fraud-model-default", "route": []}),
        json!({"name": "mlcanary-other-default", "route": []}),
    ];
    let owned = owned_routes(&v, Weights::with_canary_bp(1000));
    let out = splice_routes(&existing, "fraud-model", &owned).unwrap();
    let names: Vec<Option<&str>> = out.iter().map(|r| r["name"].as_str()).collect();
    assert_eq!(
        names,
        [
            Some("mlcanary-fraud-model-canary"),
            Some("mlcanary-fraud-model-stable"),
            Some("health"),
            None,
            Some("mlcanary-other-default"),
            Some("mlcanary-fraud-model-default"),
        ]
    );
    assert_eq!(out[5]["route"][1]["weight"], 10);
}

#[test]
fn desired_traffic_holds_every_peer_in_the_filter_config() {
    let fraud = TestPolicy::fraud_model().validated();
    let churn = TestPolicy::churn_model().validated();
    let peers = [
        (&churn, Weights::with_canary_bp(2000)),
        // A stale entry for the policy itself is replaced by the new weights.
        (&fraud, Weights::with_canary_bp(9000)),
    ];
    let d = desired_traffic(&fraud, Weights::with_canary_bp(500), &peers).unwrap();
    let names: Vec<&str> = d
        .plugin_config
        .policies
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(names, ["churn-model", "fraud-model"]);
    let w = |i: usize| d.plugin_config.policies[i].variants[1].weight_bp;
    assert_eq!((w(0), w(1)), (2000, 500));
    assert_eq!(d.routes.len(), 3, "only the policy's own routes");
}

#[test]
fn desired_all_renders_the_shared_config_once_as_each_policy_alone_would() {
    let fraud = TestPolicy::fraud_model().validated();
    let churn = TestPolicy::churn_model().validated();
    let at = [
        (&fraud, Weights::with_canary_bp(500)),
        (&churn, Weights::with_canary_bp(2000)),
    ];
    let all = desired_all(&at).unwrap();
    assert_eq!(all.len(), 2);
    for (d, (p, w)) in all.iter().zip(at) {
        assert_eq!(d, &desired_traffic(p, w, &at).unwrap(), "{}", p.name);
    }
    assert!(
        std::sync::Arc::ptr_eq(&all[0].plugin_config, &all[1].plugin_config),
        "one document for both"
    );
}

/// A policy is its namespace and name: the rendered policy carries its namespace (the stats' tag),
/// and a same-named peer of another namespace stays in the config when this one is reverted.
#[test]
fn namespaces_render_and_a_revert_keeps_the_same_named_peer() {
    let prod = TestPolicy::fraud_model().validated();
    assert_eq!(
        render_policy(&prod, Weights::ALL_STABLE)
            .namespace
            .as_deref(),
        Some("ml")
    );
    let mut staging = prod.clone();
    staging.namespace = Some("staging".into());
    staging.filter_template.hosts = vec!["fraud-model.staging".into()];
    let peers = [
        (&prod, Weights::with_canary_bp(2500)),
        (&staging, Weights::ALL_STABLE),
    ];
    let d = reverted_traffic(&prod, Weights::ALL_STABLE, &peers).unwrap();
    let left: Vec<(Option<&str>, &str)> = d
        .plugin_config
        .policies
        .iter()
        .map(|p| (p.namespace.as_deref(), p.name.as_str()))
        .collect();
    assert_eq!(left, [(Some("staging"), "fraud-model")]);
    assert_eq!(d.routes.len(), 1, "the default route alone: {:?}", d.routes);
    let promoted = crate::policy::CanaryPolicyStatus {
        phase: crate::policy::Phase::Promoted,
        canary_weight_bp: 10_000,
        ..Default::default()
    };
    assert_eq!(
        crate::rollout::resting_weights(&promoted),
        Weights::ALL_CANARY
    );
    let rolled_back = crate::policy::CanaryPolicyStatus {
        phase: crate::policy::Phase::RolledBack,
        ..promoted
    };
    assert_eq!(
        crate::rollout::resting_weights(&rolled_back),
        Weights::ALL_STABLE
    );
}
