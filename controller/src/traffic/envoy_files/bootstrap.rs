//! The local Envoy's bootstrap (`envoy.yaml`): admin on 127.0.0.1, one listener whose routes come
//! by RDS and whose mlcanary filter comes by ECDS from the files [`crate::traffic::envoy_files`]
//! rewrites, and one cluster per variant. Pure: paths and addresses in, a document out.
//!
//! For the shadow phase each variant also has an **inbound** listener in front of its upstream —
//! what the canary pod's own sidecar is on a cluster: a Unix socket in the work directory (no port
//! to pick or collide), `traffic_direction: INBOUND`, the filter with the inbound config (its own
//! ECDS file), every request to the variant's cluster. A route mirrors to the cluster
//! [`shadow_cluster`] of the variant, which is that socket; Envoy appends `-shadow` to the copy's
//! authority, which is how the filter there knows it.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use serde_json::{json, Value};

use super::{FILTER_NAME, ROUTE_CONFIG_NAME, WASM_TYPE_URL};

/// Envoy's `node.id` / `node.cluster` (file-based xDS refuses to start without them).
pub const NODE: &str = "mlcanary-local";
/// Name of the one listener (tests find its port by this name on the admin `/listeners`).
pub const LISTENER: &str = "mlcanary";

/// Name of the ECDS resource (and filter) of the inbound listeners.
pub const INBOUND_FILTER_NAME: &str = "mlcanary-inbound";

/// The cluster a route mirrors `variant`'s shadow to: its inbound listener.
pub fn shadow_cluster(variant: &str) -> String {
    format!("mlcanary-shadow-{variant}")
}

/// The Unix socket of `variant`'s inbound listener, in `dir`.
pub fn shadow_socket(dir: &Path, variant: &str) -> std::path::PathBuf {
    dir.join(format!("shadow-{variant}.sock"))
}

/// An upstream of one variant: the cluster is named after the variant (subset) name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub variant: String,
    pub host: String,
    pub port: u16,
}

/// What the bootstrap needs.
#[derive(Debug, Clone)]
pub struct BootstrapSpec<'a> {
    pub listen: SocketAddr,
    /// 0: the kernel picks (read it back with `--admin-address-path`).
    pub admin_port: u16,
    pub ecds: &'a Path,
    pub rds: &'a Path,
    /// The inbound listeners' filter config.
    pub inbound_ecds: &'a Path,
    /// Where the inbound listeners' sockets go.
    pub sockets: &'a Path,
    pub upstreams: &'a [Upstream],
}

fn watched(path: &Path) -> Value {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    json!({
        "path_config_source": {
            "path": path.display().to_string(),
            "watched_directory": {"path": dir.display().to_string()},
        },
        "resource_api_version": "V3",
    })
}

fn cluster(u: &Upstream) -> Value {
    // An IP is used as is; a name (e.g. `localhost`) is resolved by Envoy.
    let kind = if u.host.parse::<IpAddr>().is_ok() {
        "STATIC"
    } else {
        "STRICT_DNS"
    };
    json!({
        "name": u.variant,
        "type": kind,
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": u.variant,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                "address": u.host, "port_value": u.port}}}}]}],
        },
    })
}

fn pipe(path: &Path) -> Value {
    json!({"pipe": {"path": path.display().to_string()}})
}

/// The cluster of `u`'s inbound listener, which the routes mirror to.
fn shadow_upstream(u: &Upstream, sockets: &Path) -> Value {
    let name = shadow_cluster(&u.variant);
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {
                "address": pipe(&shadow_socket(sockets, &u.variant))}}]}],
        },
    })
}

/// `u`'s inbound listener: the inbound filter, then all of it to `u`'s cluster.
fn inbound_listener(u: &Upstream, s: &BootstrapSpec<'_>) -> Value {
    let hcm = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": format!("mlcanary_inbound_{}", u.variant),
        "route_config": {"name": format!("inbound-{}", u.variant), "virtual_hosts": [{
            "name": "inbound", "domains": ["*"],
            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": u.variant}}],
        }]},
        "http_filters": [
            {"name": INBOUND_FILTER_NAME, "config_discovery": {
                "config_source": watched(s.inbound_ecds),
                "type_urls": [WASM_TYPE_URL],
            }},
            {"name": "envoy.filters.http.router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
        ],
    });
    json!({
        "name": format!("inbound-{}", u.variant),
        "traffic_direction": "INBOUND",
        "address": pipe(&shadow_socket(s.sockets, &u.variant)),
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": hcm,
        }]}],
    })
}

/// The filter's bucket layouts (`mlcanary_filter::stats`): scores in 0.05 bins, durations for model
/// serving.
pub fn histogram_buckets() -> Value {
    use mlcanary_filter::stats::{DURATION, DURATION_BUCKETS, PREDICTION_SCORE, SCORE_BUCKETS};
    json!([
        {"match": {"suffix": PREDICTION_SCORE}, "buckets": SCORE_BUCKETS},
        {"match": {"suffix": DURATION}, "buckets": DURATION_BUCKETS},
    ])
}

/// The bootstrap document (JSON, which Envoy reads as YAML).
/// Envoy's fault filter, by the name per-route configs address it.
pub const FAULT_FILTER: &str = "envoy.filters.http.fault";
pub const FAULT_TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault";

pub fn render_bootstrap(s: &BootstrapSpec<'_>) -> String {
    let tags: Vec<Value> = mlcanary_filter::stats::TAGS
        .iter()
        .map(|(t, re)| json!({"tag_name": t, "regex": re}))
        .collect();
    let hcm = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": LISTENER,
        "rds": {"route_config_name": ROUTE_CONFIG_NAME, "config_source": watched(s.rds)},
        // Disabled here and enabled on each policy's virtual host (`render_rds`): a request to a
        // host no policy names never enters the Wasm VM.
        "http_filters": [
            {"name": FILTER_NAME, "disabled": true, "config_discovery": {
                "config_source": watched(s.ecds),
                "type_urls": [WASM_TYPE_URL],
            }},
            // No fault of its own: the feedback route's config holds its requests (after the
            // filter, which answers them), as Istio's fault filter does in a sidecar.
            {"name": FAULT_FILTER, "typed_config": {"@type": FAULT_TYPE_URL}},
            {"name": "envoy.filters.http.router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
        ],
    });
    let doc = json!({
        "node": {"id": NODE, "cluster": NODE},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": s.admin_port}}},
        // Histograms reach the admin endpoint at each flush: 1 s keeps latency windows fresh.
        "stats_flush_interval": "1s",
        "stats_config": {
            "stats_tags": tags,
            "histogram_bucket_settings": histogram_buckets(),
        },
        "static_resources": {
            "listeners": std::iter::once(json!({
                "name": LISTENER,
                "address": {"socket_address": {
                    "address": s.listen.ip().to_string(), "port_value": s.listen.port()}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": hcm,
                }]}],
            }))
            .chain(s.upstreams.iter().map(|u| inbound_listener(u, s)))
            .collect::<Vec<_>>(),
            "clusters": s.upstreams.iter().map(cluster)
                .chain(s.upstreams.iter().map(|u| shadow_upstream(u, s.sockets)))
                .collect::<Vec<_>>(),
        },
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_wires_rds_ecds_tags_and_clusters() {
        let ups = [
            Upstream {
                variant: "stable".into(),
                host: "127.0.0.1".into(),
                port: 8001,
            },
            Upstream {
                variant: "canary".into(),
                host: "localhost".into(),
                port: 8002,
            },
        ];
        let text = render_bootstrap(&BootstrapSpec {
            listen: "127.0.0.1:10000".parse().unwrap(),
            admin_port: 0,
            ecds: Path::new("/w/ecds/ecds.yaml"),
            rds: Path::new("/w/rds/rds.yaml"),
            inbound_ecds: Path::new("/w/ecds-inbound/ecds.yaml"),
            sockets: Path::new("/w"),
            upstreams: &ups,
        });
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["node"]["id"], NODE);
        assert_eq!(v["stats_flush_interval"], "1s");
        let tags: Vec<&str> = v["stats_config"]["stats_tags"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t["tag_name"].as_str())
            .collect();
        assert_eq!(
            tags,
            [
                "policy_namespace",
                "policy",
                "variant",
                "segment",
                "phase",
                "outcome",
                "reason"
            ]
        );
        let buckets = &v["stats_config"]["histogram_bucket_settings"];
        assert_eq!(buckets[0]["match"]["suffix"], "mlcanary_prediction_score");
        assert_eq!(buckets[0]["buckets"][19], 1000);
        assert_eq!(
            buckets[1]["match"]["suffix"],
            "mlcanary_request_duration_ms"
        );
        assert_eq!(buckets[1]["buckets"][5], 50);
        let l = &v["static_resources"]["listeners"][0];
        assert_eq!(l["address"]["socket_address"]["port_value"], 10000);
        let hcm = &l["filter_chains"][0]["filters"][0]["typed_config"];
        let rds = &hcm["rds"]["config_source"]["path_config_source"];
        assert_eq!(rds["path"], "/w/rds/rds.yaml");
        assert_eq!(rds["watched_directory"]["path"], "/w/rds");
        assert_eq!(hcm["rds"]["route_config_name"], ROUTE_CONFIG_NAME);
        let f = &hcm["http_filters"];
        assert_eq!(f[0]["name"], "mlcanary");
        assert_eq!(
            f[0]["disabled"], true,
            "enabled per policy virtual host only"
        );
        assert_eq!(
            f[0]["config_discovery"]["config_source"]["path_config_source"]["path"],
            "/w/ecds/ecds.yaml"
        );
        assert_eq!(
            f[1]["name"], FAULT_FILTER,
            "after the filter: holds feedback requests"
        );
        assert_eq!(f[2]["name"], "envoy.filters.http.router");
        let c = &v["static_resources"]["clusters"];
        assert_eq!(
            (c[0]["name"].as_str(), c[0]["type"].as_str()),
            (Some("stable"), Some("STATIC"))
        );
        assert_eq!(c[1]["type"], "STRICT_DNS");
        // The canary's inbound side: its listener on a socket, the inbound filter, its upstream.
        let inbound = &v["static_resources"]["listeners"][2];
        assert_eq!(inbound["name"], "inbound-canary");
        assert_eq!(inbound["traffic_direction"], "INBOUND");
        assert_eq!(inbound["address"]["pipe"]["path"], "/w/shadow-canary.sock");
        let hcm = &inbound["filter_chains"][0]["filters"][0]["typed_config"];
        assert_eq!(hcm["http_filters"][0]["name"], INBOUND_FILTER_NAME);
        assert_eq!(
            hcm["http_filters"][0]["config_discovery"]["config_source"]["path_config_source"]
                ["path"],
            "/w/ecds-inbound/ecds.yaml"
        );
        assert_eq!(
            hcm["route_config"]["virtual_hosts"][0]["routes"][0]["route"]["cluster"],
            "canary"
        );
        let shadow = &c[3];
        assert_eq!(shadow["name"], shadow_cluster("canary"));
        assert_eq!(
            shadow["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
                ["pipe"]["path"],
            "/w/shadow-canary.sock"
        );
    }
}
