//! The local target: the files of one file-watching Envoy in a work directory — its bootstrap
//! (`envoy.yaml`, [`bootstrap`]) and the two xDS files it watches — each written atomically.
//!
//! - **ECDS** (`ecds.yaml`): a `DiscoveryResponse` holding one `TypedExtensionConfig` named
//!   `mlcanary` — the Wasm filter with the whole filter config (every policy) as a `StringValue`;
//!   and `ecds-inbound/ecds.yaml`, `mlcanary-inbound`, the same module with the inbound config
//!   (the policies in their shadow phase) for the variants' inbound listeners ([`bootstrap`]).
//! - **RDS** (`rds.yaml`): a `DiscoveryResponse` holding the `RouteConfiguration` named
//!   [`ROUTE_CONFIG_NAME`]: one virtual host per policy (its hosts as domains, with and without a
//!   port), a header-match route per variant on `x-mlcanary-variant` → the cluster of that name, then
//!   a default route with `weighted_clusters` at the current split for untagged traffic (filter
//!   absent or failed open) — the VirtualService shape of DESIGN.md in Envoy's terms. In a shadow
//!   phase the routes to stable carry `request_mirror_policies` to the canary's inbound listener. Each of these
//!   virtual hosts enables the filter, which the listener declares disabled ([`enable_filter`]).
//!
//! Clusters are named after the DestinationRule subsets (`stable`, `canary`): locally there is one
//! upstream per subset name, so two policies that share a subset name share its upstream.
//!
//! Each file is written to a temp file in the same directory, fsynced, then renamed over the old one:
//! Envoy's `watched_directory` reacts to the rename and never sees a half-written file. The files are
//! JSON, which Envoy's YAML loader reads as it is.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use mlcanary_filter::config::RawConfig;
use serde_json::{json, Value};
use thiserror::Error;

pub mod bootstrap;

pub use bootstrap::Upstream;

use super::{DesiredTraffic, TrafficError, TrafficTarget};
use bootstrap::{shadow_cluster, shadow_socket, INBOUND_FILTER_NAME};
use mlcanary_core::render::{check_routes, enabling_filter_config, inbound_config, HttpRoute};

/// Name of the route configuration the listener asks RDS for.
pub const ROUTE_CONFIG_NAME: &str = "mlcanary";
/// Name of the ECDS resource (and of the filter in the listener).
pub const FILTER_NAME: &str = "mlcanary";
/// Type URL of the Wasm HTTP filter config, for the listener's `type_urls`.
pub const WASM_TYPE_URL: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";

/// Why the files were not written.
#[derive(Debug, Error)]
pub enum FilesError {
    #[error("cannot write {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("domain {domain:?} is claimed by policies {first} and {second}: locally one policy serves a host")]
    DuplicateDomain {
        domain: String,
        first: String,
        second: String,
    },
    #[error("policy {0} is not in the filter config it sent")]
    UnknownPolicy(String),
    #[error("cannot encode: {0}")]
    Encode(#[from] serde_json::Error),
    #[error(
        "the inbound listener's socket {path} is longer than a Unix socket path may be \
         ({max} bytes): use a shorter --workdir"
    )]
    SocketPath { path: String, max: usize },
}

/// Longest Unix socket path (`sun_path` holds 108 bytes with the terminating NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// One policy's part of the route file.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyRoutes {
    pub policy: String,
    pub hosts: Vec<String>,
    pub routes: Vec<HttpRoute>,
}

/// The ECDS `DiscoveryResponse` for the Wasm filter at `wasm` with `config`.
pub fn render_ecds(version: u64, wasm: &Path, config: &RawConfig) -> Result<String, FilesError> {
    render_ecds_named(FILTER_NAME, version, wasm, config)
}

/// [`render_ecds`] for the resource `name`. Every resource runs in the one VM `mlcanary` (each
/// config is its own root context there).
pub fn render_ecds_named(
    name: &str,
    version: u64,
    wasm: &Path,
    config: &RawConfig,
) -> Result<String, FilesError> {
    let doc = json!({
        "version_info": version.to_string(),
        "resources": [{
            "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
            "name": name,
            "typed_config": {
                "@type": WASM_TYPE_URL,
                "config": {
                    "name": name,
                    "root_id": FILTER_NAME,
                    "vm_config": {
                        "vm_id": FILTER_NAME,
                        "runtime": "envoy.wasm.runtime.v8",
                        "code": {"local": {"filename": wasm.display().to_string()}},
                    },
                    "configuration": {
                        "@type": "type.googleapis.com/google.protobuf.StringValue",
                        "value": serde_json::to_string(config)?,
                    },
                },
            },
        }],
    });
    Ok(serde_json::to_string_pretty(&doc)?)
}

/// Envoy domains for filter hosts: `*` as is, others with and without a port.
fn domains(hosts: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for h in hosts {
        if h == "*" {
            out.push("*".to_owned());
        } else {
            out.push(h.clone());
            out.push(format!("{h}:*"));
        }
    }
    out
}

/// One Istio-shaped route as an Envoy route: header match (if any) on prefix `/`, then a single
/// cluster or `weighted_clusters` without the zero-weight entries (Envoy needs a positive total).
fn envoy_route(r: &HttpRoute) -> Value {
    let regex = r.match_.iter().find_map(|mr| mr.uri.as_ref());
    let mut m = match regex {
        Some(re) => json!({"safe_regex": {"regex": re.regex}}),
        None => json!({"prefix": "/"}),
    };
    let headers: Vec<Value> = r
        .match_
        .iter()
        .flat_map(|mr| mr.headers.iter())
        .map(|(name, sm)| json!({"name": name, "string_match": {"exact": sm.exact}}))
        .collect();
    if !headers.is_empty() {
        m["headers"] = Value::Array(headers);
    }
    let live: Vec<(&str, u32)> = r
        .route
        .iter()
        .map(|d| (d.destination.subset.as_str(), d.weight.unwrap_or(100)))
        .filter(|(_, w)| *w > 0)
        .collect();
    let action = match live.as_slice() {
        [(cluster, _)] => json!({"cluster": cluster}),
        many => json!({"weighted_clusters": {"clusters": many
            .iter()
            .map(|(c, w)| json!({"name": c, "weight": w}))
            .collect::<Vec<_>>()}}),
    };
    let mut action = action;
    if let (Some(to), Some(share)) = (&r.mirror, r.mirror_percentage) {
        action["request_mirror_policies"] = json!([{
            "cluster": shadow_cluster(&to.subset),
            "runtime_fraction": {"default_value": {
                "numerator": share.bp(), "denominator": "TEN_THOUSAND"}},
        }]);
    }
    let mut route = json!({"name": r.name, "match": m, "route": action});
    if let Some(f) = &r.fault {
        let share = |p: mlcanary_core::render::Percent| json!({"numerator": p.bp(), "denominator": "TEN_THOUSAND"});
        route["typed_per_filter_config"] = json!({ bootstrap::FAULT_FILTER: {
            "@type": bootstrap::FAULT_TYPE_URL,
            "delay": {"fixed_delay": f.delay.fixed_delay, "percentage": share(f.delay.percentage)},
            "abort": {"http_status": f.abort.http_status, "percentage": share(f.abort.percentage)},
        }});
    }
    route
}

/// Per-virtual-host config that turns on the filter the listener declares disabled. Only policies'
/// hosts carry it.
pub fn enable_filter() -> Value {
    json!({ FILTER_NAME: enabling_filter_config() })
}

/// The RDS `DiscoveryResponse` for every policy's routes.
pub fn render_rds(version: u64, policies: &[PolicyRoutes]) -> Result<String, FilesError> {
    let mut claimed: BTreeMap<String, &str> = BTreeMap::new();
    let mut hosts = Vec::new();
    for p in policies {
        let d = domains(&p.hosts);
        for domain in &d {
            if let Some(first) = claimed.insert(domain.clone(), &p.policy) {
                return Err(FilesError::DuplicateDomain {
                    domain: domain.clone(),
                    first: first.to_owned(),
                    second: p.policy.clone(),
                });
            }
        }
        hosts.push(json!({
            "name": p.policy,
            "domains": d,
            "typed_per_filter_config": enable_filter(),
            "routes": p.routes.iter().map(envoy_route).collect::<Vec<_>>(),
        }));
    }
    let doc = json!({
        "version_info": version.to_string(),
        "resources": [{
            "@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
            "name": ROUTE_CONFIG_NAME,
            "virtual_hosts": hosts,
        }],
    });
    Ok(serde_json::to_string_pretty(&doc)?)
}

/// Replace `path` atomically: temp file in the same directory, fsync, rename, fsync the directory.
pub fn write_atomic(path: &Path, content: &str) -> Result<(), FilesError> {
    let io_err = |source| FilesError::Io {
        path: path.display().to_string(),
        source,
    };
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // A dot-name Envoy ignores; the pid keeps two writers from sharing a temp file.
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let mut f = File::create(&tmp).map_err(io_err)?;
    f.write_all(content.as_bytes()).map_err(io_err)?;
    f.sync_all().map_err(io_err)?;
    drop(f);
    fs::rename(&tmp, path).map_err(io_err)?;
    // Persist the rename itself; not all filesystems allow opening a directory, which is harmless.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[derive(Debug, Default)]
struct State {
    version: u64,
    routes: BTreeMap<String, PolicyRoutes>,
}

/// The bootstrap's name in the work directory.
pub const BOOTSTRAP_FILE: &str = "envoy.yaml";

/// Writes the bootstrap, ECDS and RDS files of one local Envoy.
#[derive(Debug)]
pub struct EnvoyFilesTarget {
    ecds: PathBuf,
    rds: PathBuf,
    inbound_ecds: PathBuf,
    wasm: PathBuf,
    state: Mutex<State>,
}

impl EnvoyFilesTarget {
    /// `ecds` / `rds` / `inbound_ecds`: the files Envoy watches (their directories must exist,
    /// one file each); `wasm`: the filter module named in the ECDS resources.
    pub fn new(ecds: PathBuf, rds: PathBuf, inbound_ecds: PathBuf, wasm: PathBuf) -> Self {
        EnvoyFilesTarget {
            ecds,
            rds,
            inbound_ecds,
            wasm,
            state: Mutex::new(State::default()),
        }
    }

    /// The files of work directory `dir`: `ecds/ecds.yaml`, `rds/rds.yaml`,
    /// `ecds-inbound/ecds.yaml` (directories created here: Envoy watches a directory per file)
    /// and [`BOOTSTRAP_FILE`].
    pub fn in_dir(dir: &Path, wasm: PathBuf) -> Result<Self, FilesError> {
        for sub in ["ecds", "rds", "ecds-inbound"] {
            fs::create_dir_all(dir.join(sub)).map_err(|source| FilesError::Io {
                path: dir.join(sub).display().to_string(),
                source,
            })?;
        }
        Ok(Self::new(
            dir.join("ecds/ecds.yaml"),
            dir.join("rds/rds.yaml"),
            dir.join("ecds-inbound/ecds.yaml"),
            wasm,
        ))
    }

    /// Write the bootstrap next to the xDS directories: Envoy listening on `listen`, admin on
    /// 127.0.0.1:`admin_port`, one cluster per upstream. Returns its path.
    pub fn write_bootstrap(
        &self,
        listen: std::net::SocketAddr,
        admin_port: u16,
        upstreams: &[Upstream],
    ) -> Result<PathBuf, FilesError> {
        let dir = self
            .ecds
            .parent()
            .and_then(Path::parent)
            .unwrap_or_else(|| Path::new("."));
        let path = dir.join(BOOTSTRAP_FILE);
        for u in upstreams {
            let socket = shadow_socket(dir, &u.variant);
            if socket.as_os_str().len() > MAX_SOCKET_PATH {
                return Err(FilesError::SocketPath {
                    path: socket.display().to_string(),
                    max: MAX_SOCKET_PATH,
                });
            }
            // A socket left by an Envoy that did not exit cleanly would refuse the bind.
            let _ = fs::remove_file(&socket);
        }
        let text = bootstrap::render_bootstrap(&bootstrap::BootstrapSpec {
            listen,
            admin_port,
            ecds: &self.ecds,
            rds: &self.rds,
            inbound_ecds: &self.inbound_ecds,
            sockets: dir,
            upstreams,
        });
        write_atomic(&path, &text)?;
        Ok(path)
    }

    pub fn ecds_path(&self) -> &Path {
        &self.ecds
    }

    pub fn rds_path(&self) -> &Path {
        &self.rds
    }

    /// Merge `d` into the known routes and rewrite both files (filter config first, so a variant
    /// is known to the filter before a route depends on it).
    pub fn write(&self, d: &DesiredTraffic) -> Result<(), FilesError> {
        self.write_all(std::slice::from_ref(d))
    }

    /// [`Self::write`] for several policies sharing one filter config (the last one's), in one
    /// write of each file: how start-up writes every policy's split.
    pub fn write_all(&self, ds: &[DesiredTraffic]) -> Result<(), FilesError> {
        let Some(last) = ds.last() else {
            return Ok(());
        };
        let config = &last.plugin_config;
        // A poisoned lock only means another write panicked; the state is still a valid map.
        let mut st = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut routes = st.routes.clone();
        // Policies dropped from the filter config lose their routes too.
        let live: BTreeMap<&str, &Vec<String>> = config
            .policies
            .iter()
            .map(|p| (p.name.as_str(), &p.hosts))
            .collect();
        routes.retain(|name, _| live.contains_key(name.as_str()));
        for d in ds {
            let hosts = live
                .get(d.policy.as_str())
                .ok_or_else(|| FilesError::UnknownPolicy(d.policy.clone()))?;
            routes.insert(
                d.policy.clone(),
                PolicyRoutes {
                    policy: d.policy.clone(),
                    hosts: (*hosts).clone(),
                    routes: d.routes.clone(),
                },
            );
        }
        let version = st.version + 1;
        let all: Vec<PolicyRoutes> = routes.values().cloned().collect();
        let rds = render_rds(version, &all)?;
        let ecds = render_ecds(version, &self.wasm, config)?;
        let inbound = render_ecds_named(
            INBOUND_FILTER_NAME,
            version,
            &self.wasm,
            &inbound_config(config),
        )?;
        // The inbound side first: it measures a mirror from the moment a route sends one.
        write_atomic(&self.inbound_ecds, &inbound)?;
        write_atomic(&self.ecds, &ecds)?;
        write_atomic(&self.rds, &rds)?;
        st.version = version;
        st.routes = routes;
        Ok(())
    }
}

impl TrafficTarget for EnvoyFilesTarget {
    async fn apply(&self, d: &DesiredTraffic) -> Result<(), TrafficError> {
        check_routes(&d.routes)?;
        self.write(d).map_err(TrafficError::from)
    }

    /// One write of each file for all of them.
    async fn apply_all(&self, ds: &[DesiredTraffic]) -> Result<(), TrafficError> {
        for d in ds {
            check_routes(&d.routes)?;
        }
        self.write_all(ds).map_err(TrafficError::from)
    }
}

#[cfg(test)]
mod tests;
