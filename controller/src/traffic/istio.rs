//! The Istio target: server-side apply (field manager `mlcanary`, forced) of the VirtualService routes
//! a policy owns and of the WasmPlugin's `spec.pluginConfig`.
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

use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use super::{DesiredTraffic, TrafficError, TrafficTarget};
use mlcanary_core::render::{check_routes, splice_routes};

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

/// `networking.istio.io/v1` VirtualService.
pub fn virtual_service_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("networking.istio.io", "v1", "VirtualService"),
        "virtualservices",
    )
}

/// `extensions.istio.io/v1alpha1` WasmPlugin.
pub fn wasm_plugin_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("extensions.istio.io", "v1alpha1", "WasmPlugin"),
        "wasmplugins",
    )
}

/// Writes to the Kubernetes API.
#[derive(Clone)]
pub struct IstioTarget {
    client: Client,
    /// First retry delay; doubles per attempt.
    backoff: Duration,
}

impl IstioTarget {
    pub fn new(client: Client) -> Self {
        IstioTarget {
            client,
            backoff: Duration::from_millis(200),
        }
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

    /// Read, splice, apply the owned VirtualService routes.
    pub async fn apply_routes(&self, d: &DesiredTraffic) -> Result<(), TrafficError> {
        check_routes(&d.routes)?;
        let ar = virtual_service_resource();
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &d.namespace, &ar);
        let name = d.virtual_service.as_str();
        let mut attempt = 0;
        loop {
            let current = match api.get(name).await {
                Ok(c) => c,
                Err(e) => {
                    self.retry_or_fail(attempt, "VirtualService", name, e)
                        .await?;
                    attempt += 1;
                    continue;
                }
            };
            let existing = current
                .data
                .pointer("/spec/http")
                .and_then(serde_json::Value::as_array)
                .cloned()
                .unwrap_or_default();
            let http = splice_routes(&existing, &d.policy, &d.routes)?;
            let patch = json!({
                "apiVersion": "networking.istio.io/v1",
                "kind": "VirtualService",
                "metadata": {
                    "name": name,
                    "namespace": d.namespace,
                    "resourceVersion": current.resource_version(),
                },
                "spec": { "http": http },
            });
            match api
                .patch(name, &Self::params(), &Patch::Apply(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) => {
                    self.retry_or_fail(attempt, "VirtualService", name, e)
                        .await?;
                    attempt += 1;
                }
            }
        }
    }

    /// Apply the WasmPlugin's `spec.pluginConfig` (only that field is ours).
    pub async fn apply_plugin_config(&self, d: &DesiredTraffic) -> Result<(), TrafficError> {
        let ar = wasm_plugin_resource();
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &d.namespace, &ar);
        let patch = json!({
            "apiVersion": "extensions.istio.io/v1alpha1",
            "kind": "WasmPlugin",
            "metadata": { "name": d.wasm_plugin, "namespace": d.namespace },
            "spec": { "pluginConfig": serde_json::to_value(&*d.plugin_config)? },
        });
        let name = d.wasm_plugin.as_str();
        let mut attempt = 0;
        loop {
            match api
                .patch(name, &Self::params(), &Patch::Apply(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) => {
                    self.retry_or_fail(attempt, "WasmPlugin", name, e).await?;
                    attempt += 1;
                }
            }
        }
    }
}

impl TrafficTarget for IstioTarget {
    /// Filter config first: the filter must know a variant before a route sends traffic tagged with
    /// it; both carry the same split, so either order is safe for untagged traffic. The routes are
    /// checked before anything is written, so a refused split never leaves half of it applied.
    async fn apply(&self, d: &DesiredTraffic) -> Result<(), TrafficError> {
        check_routes(&d.routes)?;
        self.apply_plugin_config(d).await?;
        self.apply_routes(d).await
    }

    /// Routes first: once they send everything to the resting subset a tag the filter still sets
    /// changes nothing, whereas a config without the policy while the old routes stand would send
    /// untagged requests by the old split.
    async fn revert(&self, d: &DesiredTraffic) -> Result<(), TrafficError> {
        check_routes(&d.routes)?;
        self.apply_routes(d).await?;
        self.apply_plugin_config(d).await
    }

    /// The VirtualService alone: a WasmPlugin shared by many policies is not rewritten for each.
    async fn apply_routes_only(&self, d: &DesiredTraffic) -> Result<(), TrafficError> {
        self.apply_routes(d).await
    }
}

#[cfg(test)]
mod tests;
