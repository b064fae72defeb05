use super::*;
use crate::fixtures::TestPolicy;
use crate::render::render_config;
use crate::weights::Weights;

fn policy(namespace: &str, name: &str, plugin: Option<&str>) -> ValidatedPolicy {
    let mut p = TestPolicy::fraud_model().validated();
    p.name = name.into();
    p.filter_template.name = name.into();
    p.filter_template.hosts = vec![format!("{name}.{namespace}")];
    p.namespace = Some(namespace.into());
    p.wasm_plugin = plugin.map(|s| match s.split_once('/') {
        Some((ns, n)) => crate::policy::validated::PluginName {
            namespace: Some(ns.into()),
            name: n.into(),
        },
        None => crate::policy::validated::PluginName {
            namespace: None,
            name: s.into(),
        },
    });
    p
}

fn r(namespace: &str, name: &str) -> PluginRef {
    PluginRef {
        namespace: namespace.into(),
        name: name.into(),
    }
}

/// The WasmPlugin objects the controller writes for `policies` (each accepted policy in its
/// plugin's config), as (plugin, the policies its config holds).
fn rendered(scope: &MeshScope, policies: &[&ValidatedPolicy]) -> Vec<(PluginRef, Vec<PolicyKey>)> {
    let assigned = scope.assign(policies);
    let mut plugins: Vec<PluginRef> = assigned
        .iter()
        .filter_map(|(_, r)| r.clone().ok())
        .collect();
    plugins.sort();
    plugins.dedup();
    plugins
        .into_iter()
        .map(|plugin| {
            let members: Vec<(&ValidatedPolicy, Weights)> = policies
                .iter()
                .zip(&assigned)
                .filter(|(_, (_, r))| r.as_ref() == Ok(&plugin))
                .map(|(p, _)| (*p, Weights::ALL_STABLE))
                .collect();
            let config = render_config(&members).expect("renders");
            let keys = config
                .policies
                .iter()
                .map(|p| PolicyKey::new(p.namespace.as_deref().unwrap_or("default"), &p.name))
                .collect();
            (plugin, keys)
        })
        .collect()
}

/// However the accepted policies are spread, a proxy of any namespace is reached by at most one
/// rendered plugin (with the mesh plugin: exactly one), and that one holds every policy — so a
/// caller anywhere has one filter that knows every model.
fn assert_once_per_proxy(scope: &MeshScope, objects: &[(PluginRef, Vec<PolicyKey>)]) {
    let mut plugins: Vec<PluginRef> = objects.iter().map(|(p, _)| p.clone()).collect();
    plugins.extend(scope.mesh_plugin.clone());
    for ns in [
        "ml",
        "staging",
        "prod",
        "shop",
        "istio-system",
        "istio-ingress",
    ] {
        let reaching = plugins_reaching(scope, &plugins, ns);
        assert!(
            reaching.len() <= 1,
            "{ns}: the filter {} times: {reaching:?}",
            reaching.len()
        );
        if scope.mesh_plugin.is_some() {
            assert_eq!(reaching.len(), 1, "{ns}: every proxy runs the mesh plugin");
        }
    }
}

#[test]
fn with_the_mesh_plugin_every_policy_of_every_namespace_shares_it() {
    let scope = MeshScope::default();
    let a = policy("ml", "fraud-model", None);
    let b = policy("staging", "fraud-model", None);
    let c = policy("shop", "recommender", None);
    let objects = rendered(&scope, &[&a, &b, &c]);
    assert_eq!(objects.len(), 1);
    assert_eq!(objects[0].0, r("istio-system", "mlcanary"));
    assert_eq!(
        objects[0].1.len(),
        3,
        "one config names every namespace's policies"
    );
    assert_once_per_proxy(&scope, &objects);
}

#[test]
fn a_plugin_of_its_own_next_to_the_mesh_plugin_is_refused() {
    let scope = MeshScope::default();
    let a = policy("ml", "fraud-model", None);
    let own = policy("ml", "churn", Some("mlcanary"));
    let root = policy("prod", "ranker", Some("istio-system/other"));
    let got = scope.assign(&[&a, &own, &root]);
    assert!(got[0].1.is_ok());
    for (i, what) in [(1, "ml/mlcanary"), (2, "istio-system/other")] {
        let e = got[i].1.clone().unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("{what} would run the filter a second time")),
            "{e}"
        );
    }
    let objects = rendered(&scope, &[&a, &own, &root]);
    assert_eq!(
        objects.len(),
        1,
        "refused policies are in no plugin: {objects:?}"
    );
    assert_once_per_proxy(&scope, &objects);
}

#[test]
fn without_a_mesh_plugin_one_plugin_per_namespace_and_none_in_the_root() {
    let scope = MeshScope {
        mesh_plugin: None,
        ..MeshScope::default()
    };
    let ml = policy("ml", "fraud-model", Some("mlcanary"));
    let ml_too = policy("ml", "churn", Some("ml/mlcanary"));
    let shop = policy("shop", "recommender", Some("mlcanary"));
    let clash = policy("ml", "ranker", Some("second"));
    let root = policy("prod", "pricing", Some("istio-system/mlcanary"));
    let none = policy("prod", "search", None);
    let got = scope.assign(&[&ml, &ml_too, &shop, &clash, &root, &none]);
    let ok: Vec<bool> = got.iter().map(|(_, r)| r.is_ok()).collect();
    assert_eq!(ok, [true, true, true, false, false, false]);
    assert_eq!(got[5].1, Err(ScopeError::NoMeshPlugin));
    let objects = rendered(&scope, &[&ml, &ml_too, &shop, &clash, &root, &none]);
    let plugins: Vec<&PluginRef> = objects.iter().map(|(p, _)| p).collect();
    assert_eq!(plugins, [&r("ml", "mlcanary"), &r("shop", "mlcanary")]);
    assert_once_per_proxy(&scope, &objects);
}

/// First come, first served: the order decides which of two clashing policies keeps its plugin.
#[test]
fn the_earlier_policy_keeps_its_plugin() {
    let scope = MeshScope {
        mesh_plugin: None,
        ..MeshScope::default()
    };
    let first = policy("ml", "a", Some("one"));
    let second = policy("ml", "b", Some("two"));
    assert!(scope.assign(&[&first, &second])[1].1.is_err());
    assert!(scope.assign(&[&second, &first])[1].1.is_err());
    assert!(scope.assign(&[&second, &first])[0].1.is_ok());
}
