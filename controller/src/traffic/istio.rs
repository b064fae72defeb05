//! The Istio target: server-side apply (field manager `mlcanary`, forced) of the VirtualService routes
//! a policy owns and of the WasmPlugin's `spec.pluginConfig`; during a shadow, the canary's inbound
//! plugin too ([`inbound`]).
//!
//! `spec.http` of a VirtualService is an atomic list for server-side apply, so applying only our routes
//! would delete everyone else's. The writer therefore reads the current list, splices in the owned
//! routes ([`mlcanary_core::render::splice_routes`]) and applies the whole list with the `resourceVersion` it
//! read: a concurrent writer makes the apply fail with 409 Conflict, and the read–splice–apply is
//! retried with exponential backoff, a bounded number of times.
//!
//! The same bounded backoff covers what a busy or restarting API server answers: 429, any 5xx, and
//! transport errors (connection refused or reset, timeouts) — on the read as on the write. Every
//! other error (403, 404, 422, ...) is returned at once: retrying cannot fix it.
//!
//! Each kind is written in the version its group serves ([`versions`]): discovered before the
//! first write and cached. A 404 discovers again first: when the served version changed, the write
//! is tried again at once in the new one; else the 404 is returned.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::APIGroup;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::{json, Value};

use super::{DesiredTraffic, TrafficError, TrafficTarget};
use mlcanary_core::render::{check_routes, splice_routes, MeshScope};
use versions::{DiscoveryError, IstioKind, Served, VIRTUAL_SERVICE, WASM_PLUGIN};

pub mod inbound;
pub mod versions;

/// The field manager of every write.
pub const FIELD_MANAGER: &str = "mlcanary";
/// Attempts per object before giving up on conflicts, 5xx or transport errors.
pub const MAX_ATTEMPTS: u32 = 5;
/// The longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Worth another attempt: a conflict, 429, any 5xx, or the request never got an answer.
fn retryable(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.is_conflict() || s.code == 429 || s.code >= 500,
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// What to return once the attempts are spent: a conflict keeps its own error, anything else is
/// the last error the API gave.
fn gave_up(kind: &'static str, name: &str, last: kube::Error) -> TrafficError {
    match last {
        kube::Error::Api(s) if s.is_conflict() => TrafficError::Conflict {
            kind,
            name: name.to_owned(),
            attempts: MAX_ATTEMPTS,
        },
        e => e.into(),
    }
}

/// Not served: the object, or the version the request named. By code: for a path it does not
/// serve the API server answers a plain-text 404, which has no `NotFound` reason.
fn not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// The server-side apply body of a VirtualService's owned `spec.http` (the whole list: it is
/// atomic), at `version`, guarded by the `resource_version` it was spliced from.
pub fn virtual_service_patch(
    version: &str,
    name: &str,
    namespace: &str,
    resource_version: Option<String>,
    http: &[Value],
) -> Value {
    json!({
        "apiVersion": VIRTUAL_SERVICE.api_version(version),
        "kind": VIRTUAL_SERVICE.kind,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "resourceVersion": resource_version,
        },
        "spec": { "http": http },
    })
}

/// The server-side apply body of a WasmPlugin's `spec.pluginConfig` (only that field is ours).
pub fn wasm_plugin_patch(version: &str, name: &str, namespace: &str, config: Value) -> Value {
    json!({
        "apiVersion": WASM_PLUGIN.api_version(version),
        "kind": WASM_PLUGIN.kind,
        "metadata": { "name": name, "namespace": namespace },
        "spec": { "pluginConfig": config },
    })
}

/// Writes to the Kubernetes API.
#[derive(Clone)]
pub struct IstioTarget {
    client: Client,
    /// First retry delay; doubles per attempt.
    backoff: Duration,
    /// The versions each Istio group serves, as last discovered (shared by clones).
    served: Served,
    /// Where a policy on the mesh plugin writes its config.
    scope: MeshScope,
    /// Which inbound plugins are present (shared by clones).
    known: inbound::Known,
}

impl IstioTarget {
    pub fn new(client: Client) -> Self {
        IstioTarget {
            client,
            backoff: Duration::from_millis(200),
            served: Served::default(),
            scope: MeshScope::default(),
            known: inbound::Known::default(),
        }
    }

    /// The mesh plugin (and root namespace) this controller runs with (`--mesh-plugin`).
    pub fn with_scope(mut self, scope: MeshScope) -> Self {
        self.scope = scope;
        self
    }

    /// Change the first retry delay (tests use zero).
    pub fn with_backoff(mut self, backoff: Duration) -> Self {
        self.backoff = backoff;
        self
    }

    fn params() -> PatchParams {
        PatchParams::apply(FIELD_MANAGER).force()
    }

    /// Exponential, capped at [`MAX_BACKOFF`].
    fn delay(&self, attempt: u32) -> Duration {
        self.backoff
            .saturating_mul(1 << attempt.min(10))
            .min(MAX_BACKOFF)
    }

    /// Sleep before the next attempt, or give up with `e` when it cannot help or the attempts are
    /// spent.
    async fn retry_or_fail(
        &self,
        attempt: u32,
        kind: &'static str,
        name: &str,
        e: kube::Error,
    ) -> Result<(), TrafficError> {
        if !retryable(&e) {
            return Err(e.into());
        }
        if attempt + 1 >= MAX_ATTEMPTS {
            return Err(gave_up(kind, name, e));
        }
        tracing::debug!(attempt, kind, name, error = %e, "retrying");
        tokio::time::sleep(self.delay(attempt)).await;
        Ok(())
    }

    /// After a failed request about `kind` at `version`: `Ok` to try again, or the error to give
    /// up with. A 404 may mean the version is no longer served (Istio changed under us): the group
    /// is discovered again and, when another version is now the one to write, tried at once.
    async fn after_error(
        &self,
        attempt: u32,
        kind: &IstioKind,
        name: &str,
        version: &str,
        e: kube::Error,
    ) -> Result<(), TrafficError> {
        if not_found(&e) && attempt + 1 < MAX_ATTEMPTS {
            self.served.forget(kind.group);
            let now = self.version(kind).await?;
            if now != version {
                tracing::info!(
                    kind = kind.kind,
                    name,
                    from = version,
                    to = now,
                    "Istio API version changed"
                );
                return Ok(());
            }
        }
        self.retry_or_fail(attempt, kind.kind, name, e).await
    }

    /// The version to write `kind` as: the cached answer, else discovered from the API server.
    pub async fn version(&self, kind: &IstioKind) -> Result<&'static str, TrafficError> {
        if let Some(served) = self.served.get(kind.group) {
            return Ok(versions::pick(kind, &served)?);
        }
        let served = self.discover(kind).await?;
        let version = versions::pick(kind, &served)?;
        // Cached only when usable: a group too old is asked again next time (it may be upgraded).
        self.served.set(kind.group, served);
        Ok(version)
    }

    /// `GET /apis/<group>`: the versions the group serves, retried like any transient error.
    async fn discover(&self, kind: &IstioKind) -> Result<Vec<String>, DiscoveryError> {
        let group = kind.group;
        let mut attempt = 0;
        loop {
            let request = http::Request::get(format!("/apis/{group}"))
                .body(Vec::new())
                .map_err(|e| DiscoveryError::Request {
                    group,
                    source: kube::Error::HttpError(e),
                })?;
            match self.client.request::<APIGroup>(request).await {
                Ok(g) => return Ok(g.versions.into_iter().map(|v| v.version).collect()),
                Err(e) if not_found(&e) => {
                    return Err(DiscoveryError::NotInstalled {
                        group,
                        kind: kind.kind,
                    })
                }
                Err(e) if retryable(&e) && attempt + 1 < MAX_ATTEMPTS => {
                    tracing::debug!(attempt, group, error = %e, "retrying discovery");
                    tokio::time::sleep(self.delay(attempt)).await;
                    attempt += 1;
                }
                Err(source) => return Err(DiscoveryError::Request { group, source }),
            }
        }
    }

    /// Read, splice, apply the owned VirtualService routes.
    pub async fn apply_routes(&self, d: &DesiredTraffic) -> Result<(), TrafficError> {
        check_routes(&d.routes)?;
        let kind = &VIRTUAL_SERVICE;
        let name = d.virtual_service.as_str();
        let mut attempt = 0;
        loop {
            let version = self.version(kind).await?;
            let ar = kind.resource(version);
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.client.clone(), &d.namespace, &ar);
            let current = match api.get(name).await {
                Ok(c) => c,
                Err(e) => {
                    self.after_error(attempt, kind, name, version, e).await?;
                    attempt += 1;
                    continue;
                }
            };
            let existing = current
                .data
                .pointer("/spec/http")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let http = splice_routes(&existing, &d.policy, &d.routes)?;
            let patch = virtual_service_patch(
                version,
                name,
                &d.namespace,
                current.resource_version(),
                &http,
            );
            match api
                .patch(name, &Self::params(), &Patch::Apply(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) => {
                    self.after_error(attempt, kind, name, version, e).await?;
                    attempt += 1;
                }
            }
        }
    }

    /// Apply the WasmPlugin's `spec.pluginConfig` (only that field is ours).
    pub async fn apply_plugin_config(&self, d: &DesiredTraffic) -> Result<(), TrafficError> {
        let kind = &WASM_PLUGIN;
        let config = serde_json::to_value(&*d.plugin_config)?;
        let plugin = self.scope.resolve(&d.wasm_plugin)?;
        let (ns, name) = (plugin.namespace.as_str(), plugin.name.as_str());
        self.apply_object(kind, ns, name, |version| {
            Ok(wasm_plugin_patch(version, name, ns, config.clone()))
        })
        .await
    }

    /// Server-side apply of the body `patch` renders for the version `kind`'s group serves, to
    /// `namespace/name`, with the retries and rediscovery every write has.
    async fn apply_object(
        &self,
        kind: &IstioKind,
        namespace: &str,
        name: &str,
        patch: impl Fn(&'static str) -> Result<Value, TrafficError>,
    ) -> Result<(), TrafficError> {
        let mut attempt = 0;
        loop {
            let version = self.version(kind).await?;
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.client.clone(), namespace, &kind.resource(version));
            let body = patch(version)?;
            match api.patch(name, &Self::params(), &Patch::Apply(&body)).await {
                Ok(_) => return Ok(()),
                Err(e) => {
                    self.after_error(attempt, kind, name, version, e).await?;
                    attempt += 1;
                }
            }
        }
    }
}

impl TrafficTarget for IstioTarget {
    /// The inbound plugin first (a shadow's first mirrored request is measured), then the filter
    /// config: the filter must know a variant before a route sends traffic tagged with it; both
    /// carry the same split, so either order is safe for untagged traffic. The inbound plugin a
    /// shadow leaves goes last, once the routes mirror no more. The routes are checked before
    /// anything is written, so a refused split never leaves half of it applied.
    async fn apply(&self, d: &DesiredTraffic) -> Result<(), TrafficError> {
        check_routes(&d.routes)?;
        self.inbound_before_routes(d, true).await?;
        self.apply_plugin_config(d).await?;
        self.apply_routes(d).await?;
        self.inbound_after_routes(d, false).await
    }

    /// Routes first: once they send everything to the resting subset a tag the filter still sets
    /// changes nothing, whereas a config without the policy while the old routes stand would send
    /// untagged requests by the old split. The inbound plugin is deleted whatever is known of it:
    /// it is the policy's last write.
    async fn revert(&self, d: &DesiredTraffic) -> Result<(), TrafficError> {
        check_routes(&d.routes)?;
        self.apply_routes(d).await?;
        self.apply_plugin_config(d).await?;
        self.inbound_after_routes(d, true).await
    }

    /// The VirtualService, and the policy's own inbound plugin where it is not known to be as
    /// wanted: a WasmPlugin shared by many policies is not rewritten for each.
    async fn apply_routes_only(&self, d: &DesiredTraffic) -> Result<(), TrafficError> {
        check_routes(&d.routes)?;
        self.inbound_before_routes(d, false).await?;
        self.apply_routes(d).await?;
        self.inbound_after_routes(d, false).await
    }

    /// Another replica may have written: no inbound plugin is known present or absent.
    fn forget(&self) {
        self.known.clear();
    }
}

#[cfg(test)]
mod discovery_tests;
#[cfg(test)]
mod inbound_tests;
#[cfg(test)]
mod tests;
