use std::collections::BTreeMap;

use super::*;
use crate::fixtures::TestPolicy;
use crate::policy::validated::DeploymentRef;
use crate::render::{desired_traffic, reverted_traffic};

fn shadowed() -> ValidatedPolicy {
    TestPolicy::fraud_model().shadow(10.0, None).validated()
}

#[test]
fn a_policy_in_shadow_wants_the_filter_on_its_canarys_inbound_side() {
    let v = shadowed();
    let p = inbound_plugin(&v, Weights::shadow(1000)).expect("in shadow");
    assert_eq!(p.namespace, "ml");
    assert_eq!(p.name, "mlcanary-shadow-fraud-model");
    assert_eq!(
        p.selector,
        BTreeMap::from([("mlcanary.io/subset".to_owned(), "canary".to_owned())])
    );
    // The inbound config of this policy alone, measuring the canary's shadow.
    assert!(p.config.inbound);
    assert_eq!(p.config.policies.len(), 1);
    assert_eq!(p.config.policies[0].name, "fraud-model");
    assert_eq!(p.config.policies[0].shadow.as_deref(), Some("canary"));
    mlcanary_filter::Config::try_from(p.config).expect("the filter accepts it");
}

#[test]
fn the_selector_is_the_subset_label_the_canarys_pods_carry() {
    let mut v = shadowed();
    v.canary_subset = "v2".into();
    v.filter_template.variants[1].name = "v2".into();
    v.deployment_ref = Some(DeploymentRef {
        name: "fraud-model".into(),
        subset_label: "version".into(),
    });
    let p = inbound_plugin(&v, Weights::shadow(500)).unwrap();
    assert_eq!(
        p.selector,
        BTreeMap::from([("version".to_owned(), "v2".to_owned())])
    );
    assert_eq!(p.config.policies[0].shadow.as_deref(), Some("v2"));
}

#[test]
fn no_mirror_no_inbound_plugin() {
    let v = shadowed();
    for w in [
        Weights::ALL_STABLE,
        Weights::with_canary_bp(500),
        Weights::ALL_CANARY,
        Weights::shadow(0),
    ] {
        assert_eq!(inbound_plugin(&v, w), None, "{w:?}");
    }
}

#[test]
fn desired_traffic_carries_it_and_a_revert_never_does() {
    let v = shadowed();
    let mut peer = TestPolicy::churn_model().shadow(10.0, None).validated();
    peer.namespace = Some("ml".into());
    let peers = [(&peer, Weights::shadow(2000))];
    let d = desired_traffic(&v, Weights::shadow(1000), &peers).unwrap();
    let inbound = d.inbound.expect("in shadow");
    // The shared config holds both shadows; the policy's inbound plugin only its own.
    assert_eq!(inbound_config(&d.plugin_config).policies.len(), 2);
    let names: Vec<&str> = inbound
        .config
        .policies
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(names, ["fraud-model"]);
    let live = desired_traffic(&v, Weights::with_canary_bp(500), &peers).unwrap();
    assert_eq!(live.inbound, None);
    // Whatever weights a revert is asked for, the deleted policy keeps no inbound plugin.
    let r = reverted_traffic(&v, Weights::shadow(1000), &peers).unwrap();
    assert_eq!(r.inbound, None);
}

#[test]
fn names_fit_63_characters_and_a_long_one_ends_in_a_fixed_hash() {
    let fits = "a".repeat(MAX_NAME - NAME_PREFIX.len());
    assert_eq!(plugin_name(&fits), format!("{NAME_PREFIX}{fits}"));
    let long = format!("{}-{}", "b".repeat(40), "c".repeat(22));
    let name = plugin_name(&long);
    assert_eq!(name.len(), MAX_NAME, "{name}");
    assert!(name.starts_with(&format!("{NAME_PREFIX}{}", "b".repeat(38))));
    // The hash is fixed: every replica and release names the same object.
    assert_eq!(name, plugin_name(&long));
    let (_, hash) = name.rsplit_once('-').unwrap();
    assert_eq!(hash.len(), 8);
    assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()));
    // Two names alike up to the cut get two plugins.
    let other = format!("{}-{}", "b".repeat(40), "d".repeat(22));
    assert_ne!(plugin_name(&other), name);
    // A cut that ends on a dash drops it: no `--` before the hash.
    let dashed = format!("{}-{}", "e".repeat(37), "f".repeat(30));
    let n = plugin_name(&dashed);
    assert!(n.len() <= MAX_NAME && !n.contains("--"), "{n}");
    assert!(
        n.starts_with(&format!("{NAME_PREFIX}{}-", "e".repeat(37))),
        "{n}"
    );
}
