//! The per-host attachment on Istio: an EnvoyFilter that keeps the mesh-wide WasmPlugin's filter in
//! every HTTP connection manager but *disabled*, and enables it only on the virtual hosts of the
//! models' hosts (Envoy's route-based filter chain, as `mlcanary local` does). A request to any other
//! host then never enters the Wasm VM.
//!
//! The WasmPlugin stays the one that inserts the filter and carries the controller's config: this
//! object inserts nothing (so the filter is never twice in a chain), it only flips `disabled` and
//! adds `typed_per_filter_config` entries. Istio names a WasmPlugin's filter differently by release,
//! so every patch is emitted for each known name; a patch whose name is absent matches nothing, and
//! an empty `FilterConfig` under a name the chain lacks configures nothing.

use serde_json::{json, Value};
use thiserror::Error;

/// Why no per-host attachment can be rendered.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AttachmentError {
    #[error("a policy matches every host (`*`): only the every-route attachment can serve it")]
    WildcardHost,
    #[error("no model port given: Istio names a virtual host `<host>:<port>`")]
    NoPort,
}

pub use crate::policy::PluginRef;

/// The names Istio gives `namespace/name`'s filter in the HTTP chain: ≤ 1.25 (with Istio's own
/// typo), 1.26–1.29, and ≥ 1.30 (WasmPlugins translated to TrafficExtensions).
pub fn plugin_filter_names(p: &PluginRef) -> [String; 3] {
    let id = format!("{}.{}", p.namespace, p.name);
    [
        format!("extenstions.istio.io/wasmplugin/{id}"),
        format!("extensions.istio.io/wasmplugin/{id}"),
        format!("extensions.istio.io/trafficextension/{id}~istio-translated-wasmplugin"),
    ]
}

/// The per-route config that turns on a filter the connection manager declares disabled: an empty
/// `FilterConfig` (Envoy's route-based filter chain). Used by this attachment and by the local
/// Envoy's route file alike.
pub fn enabling_filter_config() -> Value {
    json!({
        "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
        "config": {},
    })
}

/// One EnvoyFilter patch that merges `value` into what `target` (`listener` / `routeConfiguration`
/// match) selects in `context`.
fn merge(apply_to: &str, context: &str, target: (&str, Value), value: Value) -> Value {
    let mut m = json!({"context": context});
    m[target.0] = target.1;
    json!({
        "applyTo": apply_to,
        "match": m,
        "patch": {"operation": "MERGE", "value": value},
    })
}

/// Where the filter runs: callers' outbound listeners and gateways (never the inbound side).
const CONTEXTS: [&str; 2] = ["SIDECAR_OUTBOUND", "GATEWAY"];

/// The EnvoyFilter for `plugin` that enables its filter only on `hosts` (each on each of `ports`:
/// Istio names a route's virtual host `<host>:<port>`). In the plugin's namespace, so it applies
/// where the plugin does (the root namespace: the whole mesh).
pub fn per_host_envoy_filter(
    plugin: &PluginRef,
    hosts: &[String],
    ports: &[u16],
) -> Result<Value, AttachmentError> {
    if hosts.iter().any(|h| h == "*") {
        return Err(AttachmentError::WildcardHost);
    }
    if ports.is_empty() {
        return Err(AttachmentError::NoPort);
    }
    let names = plugin_filter_names(plugin);
    let mut patches = Vec::new();
    for context in CONTEXTS {
        for name in &names {
            let filter = json!({"filterChain": {"filter": {
                "name": "envoy.filters.network.http_connection_manager",
                "subFilter": {"name": name},
            }}});
            let disable = json!({"disabled": true});
            patches.push(merge("HTTP_FILTER", context, ("listener", filter), disable));
        }
    }
    let enable: serde_json::Map<String, Value> = names
        .iter()
        .map(|n| (n.clone(), enabling_filter_config()))
        .collect();
    let mut vhosts: Vec<String> = hosts
        .iter()
        .flat_map(|h| ports.iter().map(move |p| format!("{h}:{p}")))
        .collect();
    vhosts.sort();
    vhosts.dedup();
    for context in CONTEXTS {
        for vhost in &vhosts {
            let route = json!({"vhost": {"name": vhost}});
            let value = json!({"typed_per_filter_config": enable});
            patches.push(merge(
                "VIRTUAL_HOST",
                context,
                ("routeConfiguration", route),
                value,
            ));
        }
    }
    Ok(json!({
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": {
            "name": format!("{}-per-host", plugin.name),
            "namespace": plugin.namespace,
            "labels": {"app.kubernetes.io/managed-by": "mlcanary"},
        },
        "spec": {"configPatches": patches},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin() -> PluginRef {
        PluginRef {
            namespace: "istio-system".into(),
            name: "mlcanary".into(),
        }
    }

    fn patches(v: &Value) -> &Vec<Value> {
        v["spec"]["configPatches"].as_array().unwrap()
    }

    #[test]
    fn disables_the_plugin_filter_under_every_name_and_inserts_nothing() {
        let hosts = [
            "fraud-model".to_string(),
            "fraud-model.ml.svc.cluster.local".into(),
        ];
        let ef = per_host_envoy_filter(&plugin(), &hosts, &[8501]).unwrap();
        let ps = patches(&ef);
        // Nothing is added to a chain: the filter can never run twice.
        assert!(ps.iter().all(|p| p["patch"]["operation"] == "MERGE"));
        let disabled: Vec<(&str, &str)> = ps
            .iter()
            .filter(|p| p["applyTo"] == "HTTP_FILTER")
            .map(|p| {
                assert_eq!(p["patch"]["value"], json!({"disabled": true}));
                let m = &p["match"];
                (
                    m["context"].as_str().unwrap(),
                    m["listener"]["filterChain"]["filter"]["subFilter"]["name"]
                        .as_str()
                        .unwrap(),
                )
            })
            .collect();
        assert_eq!(disabled.len(), 6);
        assert!(disabled.contains(&(
            "SIDECAR_OUTBOUND",
            "extensions.istio.io/wasmplugin/istio-system.mlcanary"
        )));
        assert!(disabled.contains(&(
            "GATEWAY",
            "extenstions.istio.io/wasmplugin/istio-system.mlcanary"
        )));
        assert!(!disabled.iter().any(|(c, _)| *c == "SIDECAR_INBOUND"));
    }

    #[test]
    fn enables_it_on_each_model_virtual_host_only() {
        let hosts = [
            "fraud-model".to_string(),
            "fraud-model.ml.svc.cluster.local".into(),
        ];
        let ef = per_host_envoy_filter(&plugin(), &hosts, &[8501, 8080]).unwrap();
        let vh: Vec<&Value> = patches(&ef)
            .iter()
            .filter(|p| p["applyTo"] == "VIRTUAL_HOST")
            .collect();
        let names: BTreeSet<&str> = vh
            .iter()
            .map(|p| {
                p["match"]["routeConfiguration"]["vhost"]["name"]
                    .as_str()
                    .unwrap()
            })
            .collect();
        assert_eq!(
            names.into_iter().collect::<Vec<_>>(),
            [
                "fraud-model.ml.svc.cluster.local:8080",
                "fraud-model.ml.svc.cluster.local:8501",
                "fraud-model:8080",
                "fraud-model:8501",
            ]
        );
        assert_eq!(vh.len(), 8, "four virtual hosts in two contexts");
        let cfg = &vh[0]["patch"]["value"]["typed_per_filter_config"];
        for n in plugin_filter_names(&plugin()) {
            assert_eq!(cfg[&n], enabling_filter_config());
            assert_eq!(
                cfg[&n]["@type"],
                "type.googleapis.com/envoy.config.route.v3.FilterConfig"
            );
        }
        assert_eq!(ef["metadata"]["namespace"], "istio-system");
    }

    #[test]
    fn a_wildcard_policy_or_no_port_is_refused() {
        let hosts = ["fraud-model".to_string(), "*".into()];
        assert_eq!(
            per_host_envoy_filter(&plugin(), &hosts, &[8501]),
            Err(AttachmentError::WildcardHost)
        );
        assert_eq!(
            per_host_envoy_filter(&plugin(), &hosts[..1], &[]),
            Err(AttachmentError::NoPort)
        );
    }

    use std::collections::BTreeSet;
}
