//! The canary's inbound plugin during a shadow ([`mlcanary_core::render::inbound`]): a WasmPlugin
//! `mlcanary-shadow-<policy>` in the policy's namespace, `SERVER` mode, selecting the canary's
//! pods, with the inbound config. It runs the module the policy's own plugin (the mesh plugin,
//! usually) runs: that plugin is read before each full write and its module fields are copied, so
//! an upgrade of the filter reaches the inbound side at the next write.
//!
//! Written before the mesh config and the routes (the first mirrored request is measured), deleted
//! after the routes stop mirroring. Which plugins are present is remembered ([`Known`]), so a
//! policy that never shadows costs one DELETE per controller term, not one per write.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::api::{Api, DeleteParams, DynamicObject};
use serde_json::{json, Map, Value};

use super::versions::WASM_PLUGIN;
use super::{not_found, IstioTarget, FIELD_MANAGER};
use crate::traffic::{DesiredTraffic, TrafficError};
use mlcanary_core::render::inbound::plugin_name;
use mlcanary_core::render::{InboundPlugin, PluginRef};

/// The label every object the controller creates carries.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The annotation naming the policy (`namespace/name`) an inbound plugin belongs to.
pub const POLICY_ANNOTATION: &str = "mlcanary.io/policy";
/// The fields of the source plugin's spec that say which module runs and how; copied as they are.
pub const MODULE_FIELDS: &[&str] = &[
    "url",
    "sha256",
    "imagePullPolicy",
    "imagePullSecret",
    "verificationKey",
    "pluginName",
    "type",
    "phase",
    "failStrategy",
    "vmConfig",
];

/// The server-side apply body of an inbound plugin: the whole object is ours. `module` is the
/// spec of the plugin whose module it runs ([`MODULE_FIELDS`] are copied from it); `policy` is
/// `namespace/name`.
pub fn inbound_plugin_patch(
    version: &str,
    plugin: &InboundPlugin,
    policy: &str,
    module: &Value,
) -> Result<Value, serde_json::Error> {
    let mut spec: Map<String, Value> = MODULE_FIELDS
        .iter()
        .filter_map(|f| module.get(*f).map(|v| ((*f).to_owned(), v.clone())))
        .collect();
    spec.insert("match".into(), json!([{"mode": "SERVER"}]));
    spec.insert("selector".into(), json!({ "matchLabels": plugin.selector }));
    spec.insert("pluginConfig".into(), serde_json::to_value(&plugin.config)?);
    Ok(json!({
        "apiVersion": WASM_PLUGIN.api_version(version),
        "kind": WASM_PLUGIN.kind,
        "metadata": {
            "name": plugin.name,
            "namespace": plugin.namespace,
            "labels": { MANAGED_BY: FIELD_MANAGER },
            "annotations": { POLICY_ANNOTATION: policy },
        },
        "spec": spec,
    }))
}

/// What the target knows of each inbound plugin, shared by clones: `Some(plugin)` written as
/// `plugin`, `None` absent; not in the map: unknown (at start, after a failed write, or once
/// another replica may have written).
#[derive(Debug, Clone, Default)]
pub struct Known(Arc<Mutex<HashMap<PluginRef, Option<InboundPlugin>>>>);

impl Known {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<PluginRef, Option<InboundPlugin>>> {
        // A poisoned lock only means a panic elsewhere; the map itself is still sound.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `at` is known to be as `want` says: written as that plugin, or (`None`) absent.
    pub fn is(&self, at: &PluginRef, want: Option<&InboundPlugin>) -> bool {
        self.map()
            .get(at)
            .is_some_and(|known| known.as_ref() == want)
    }

    fn set(&self, at: PluginRef, state: Option<InboundPlugin>) {
        self.map().insert(at, state);
    }

    fn forget(&self, at: &PluginRef) {
        self.map().remove(at);
    }

    /// Forget everything.
    pub fn clear(&self) {
        self.map().clear();
    }
}

/// Where `d`'s inbound plugin is (or would be).
fn location(d: &DesiredTraffic) -> PluginRef {
    PluginRef {
        namespace: d.namespace.clone(),
        name: plugin_name(&d.policy),
    }
}

impl IstioTarget {
    /// Before the routes: the inbound plugin `d` wants, if any. `rewrite`: even when known
    /// written as it is (a full write re-reads the module it copies).
    pub(super) async fn inbound_before_routes(
        &self,
        d: &DesiredTraffic,
        rewrite: bool,
    ) -> Result<(), TrafficError> {
        let Some(plugin) = &d.inbound else {
            return Ok(());
        };
        let at = location(d);
        if !rewrite && self.known.is(&at, Some(plugin)) {
            return Ok(());
        }
        // Unknown until the apply is answered: a failed one may still have been applied.
        self.known.forget(&at);
        self.apply_inbound(d, plugin).await?;
        self.known.set(at, Some(plugin.clone()));
        Ok(())
    }

    /// After the routes: with no mirror left, no inbound plugin. `always`: even when known absent
    /// (a deleted policy's last write).
    pub(super) async fn inbound_after_routes(
        &self,
        d: &DesiredTraffic,
        always: bool,
    ) -> Result<(), TrafficError> {
        if d.inbound.is_some() {
            return Ok(());
        }
        let at = location(d);
        if !always && self.known.is(&at, None) {
            return Ok(());
        }
        self.known.forget(&at);
        self.delete_inbound(&at).await?;
        if always {
            // The policy is gone: nothing to remember it by.
            self.known.forget(&at);
        } else {
            self.known.set(at, None);
        }
        Ok(())
    }

    /// Read the spec of `d`'s plugin (the module the inbound plugin runs), then apply `plugin`.
    pub async fn apply_inbound(
        &self,
        d: &DesiredTraffic,
        plugin: &InboundPlugin,
    ) -> Result<(), TrafficError> {
        let source = self.scope.resolve(&d.wasm_plugin)?;
        let module = self.plugin_spec(&source).await?;
        if module.get("url").and_then(Value::as_str).is_none() {
            return Err(TrafficError::NoModule {
                plugin: source,
                why: "names no spec.url",
            });
        }
        let policy = format!("{}/{}", d.namespace, d.policy);
        self.apply_object(&WASM_PLUGIN, &plugin.namespace, &plugin.name, |version| {
            Ok(inbound_plugin_patch(version, plugin, &policy, &module)?)
        })
        .await
    }

    /// `spec` of the WasmPlugin `at`.
    async fn plugin_spec(&self, at: &PluginRef) -> Result<Value, TrafficError> {
        let kind = &WASM_PLUGIN;
        let name = at.name.as_str();
        let mut attempt = 0;
        loop {
            let version = self.version(kind).await?;
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.client.clone(), &at.namespace, &kind.resource(version));
            match api.get(name).await {
                Ok(o) => return Ok(o.data.get("spec").cloned().unwrap_or(Value::Null)),
                Err(e) => {
                    let missing = not_found(&e);
                    match self.after_error(attempt, kind, name, version, e).await {
                        Ok(()) => attempt += 1,
                        Err(_) if missing => {
                            return Err(TrafficError::NoModule {
                                plugin: at.clone(),
                                why: "does not exist",
                            })
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }

    /// Delete the inbound plugin `at`; one already gone is fine.
    pub async fn delete_inbound(&self, at: &PluginRef) -> Result<(), TrafficError> {
        let kind = &WASM_PLUGIN;
        let name = at.name.as_str();
        let mut attempt = 0;
        loop {
            let version = self.version(kind).await?;
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.client.clone(), &at.namespace, &kind.resource(version));
            match api.delete(name, &DeleteParams::default()).await {
                Ok(_) => return Ok(()),
                Err(e) if not_found(&e) => return Ok(()),
                Err(e) => {
                    self.after_error(attempt, kind, name, version, e).await?;
                    attempt += 1;
                }
            }
        }
    }
}
