//! The Istio target: server-side apply (field manager `mlcanary`, forced) of the VirtualService routes
//! a policy owns and of the WasmPlugin's `spec.pluginConfig`.
//!
//! `spec.http` of a VirtualService is an atomic list for server-side apply, so applying only our routes
//! would delete everyone else's. The writer therefore reads the current list, splices in the owned
//! routes ([`crate::render::splice_routes`]) and applies the whole list with the `resourceVersion` it
//! read: a concurrent writer makes the apply fail with 409 Conflict, and the read–splice–apply is
//! retried with exponential backoff, a bounded number of times.

use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use super::{DesiredTraffic, TrafficError, TrafficTarget};
use crate::render::{check_routes, splice_routes};

/// The field manager of every write.
pub const FIELD_MANAGER: &str = "mlcanary";
/// Attempts per object before giving up on conflicts.
pub const MAX_ATTEMPTS: u32 = 5;

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

    fn delay(&self, attempt: u32) -> Duration {
        self.backoff.saturating_mul(1 << attempt.min(10))
    }

    /// Read, splice, apply the owned VirtualService routes.
    pub async fn apply_routes(&self, d: &DesiredTraffic) -> Result<(), TrafficError> {
        check_routes(&d.routes)?;
        let ar = virtual_service_resource();
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &d.namespace, &ar);
        for attempt in 0..MAX_ATTEMPTS {
            let current = api.get(&d.virtual_service).await?;
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
                    "name": d.virtual_service,
                    "namespace": d.namespace,
                    "resourceVersion": current.resource_version(),
                },
                "spec": { "http": http },
            });
            match api
                .patch(&d.virtual_service, &Self::params(), &Patch::Apply(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(s)) if s.is_conflict() => {
                    tracing::debug!(attempt, vs = %d.virtual_service, "conflict, retrying");
                    tokio::time::sleep(self.delay(attempt)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(TrafficError::Conflict {
            kind: "VirtualService",
            name: d.virtual_service.clone(),
            attempts: MAX_ATTEMPTS,
        })
    }

    /// Apply the WasmPlugin's `spec.pluginConfig` (only that field is ours).
    pub async fn apply_plugin_config(&self, d: &DesiredTraffic) -> Result<(), TrafficError> {
        let ar = wasm_plugin_resource();
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &d.namespace, &ar);
        let patch = json!({
            "apiVersion": "extensions.istio.io/v1alpha1",
            "kind": "WasmPlugin",
            "metadata": { "name": d.wasm_plugin, "namespace": d.namespace },
            "spec": { "pluginConfig": serde_json::to_value(&d.plugin_config)? },
        });
        for attempt in 0..MAX_ATTEMPTS {
            match api
                .patch(&d.wasm_plugin, &Self::params(), &Patch::Apply(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(s)) if s.is_conflict() => {
                    tokio::time::sleep(self.delay(attempt)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(TrafficError::Conflict {
            kind: "WasmPlugin",
            name: d.wasm_plugin.clone(),
            attempts: MAX_ATTEMPTS,
        })
    }
}

impl TrafficTarget for IstioTarget {
    /// Filter config first: the filter must know a variant before a route sends traffic tagged with
    /// it; both carry the same split, so either order is safe for untagged traffic.
    async fn apply(&self, d: &DesiredTraffic) -> Result<(), TrafficError> {
        self.apply_plugin_config(d).await?;
        self.apply_routes(d).await
    }
}

#[cfg(test)]
mod tests;
