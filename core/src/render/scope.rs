//! Which WasmPlugin carries each policy's filter config, and the rule that keeps the filter once
//! per proxy. Istio applies every WasmPlugin of the mesh root namespace to every workload, and
//! every plugin of a namespace to that namespace's workloads: two plugins that reach one proxy put
//! the filter twice in its chain (each request decided and counted twice). So two different
//! plugins may coexist only in two different namespaces, neither of them the root; the mesh
//! plugin, when there is one, is installed for every proxy and admits no other.
//!
//! Policies are assigned in the order given (the controller passes them oldest first): a policy
//! whose plugin would meet an earlier one's is refused, so a newcomer can never take a running
//! rollout's filter away.

use thiserror::Error;

use crate::policy::{PluginRef, PluginTarget, PolicyKey, ValidatedPolicy};

/// The controller's view of the mesh: its root namespace and its mesh-wide plugin, if it runs one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshScope {
    pub root_namespace: String,
    pub mesh_plugin: Option<PluginRef>,
}

impl Default for MeshScope {
    /// Istio's default root namespace and the plugin `istio/wasmplugin.yaml` installs.
    fn default() -> Self {
        MeshScope {
            root_namespace: "istio-system".into(),
            mesh_plugin: Some(PluginRef {
                namespace: "istio-system".into(),
                name: "mlcanary".into(),
            }),
        }
    }
}

/// Why a policy gets no plugin.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum ScopeError {
    #[error("names no WasmPlugin and the controller runs without a mesh plugin (--mesh-plugin none): set spec.target.wasmPlugin")]
    NoMeshPlugin,
    #[error("{plugin} would run the filter a second time in proxies that already run {other} ({why}); leave spec.target.wasmPlugin out to use the mesh plugin")]
    Twice {
        plugin: PluginRef,
        other: PluginRef,
        why: &'static str,
    },
}

impl MeshScope {
    /// The plugin `target` stands for.
    pub fn resolve(&self, target: &PluginTarget) -> Result<PluginRef, ScopeError> {
        match target {
            PluginTarget::Mesh => self.mesh_plugin.clone().ok_or(ScopeError::NoMeshPlugin),
            PluginTarget::Plugin(p) => Ok(p.clone()),
        }
    }

    /// Why two different plugins would meet in one proxy, if they would.
    pub fn overlap(&self, a: &PluginRef, b: &PluginRef) -> Option<&'static str> {
        if a == b {
            None
        } else if a.namespace == self.root_namespace || b.namespace == self.root_namespace {
            Some("a plugin in the mesh root namespace applies to every proxy")
        } else if a.namespace == b.namespace {
            Some("both apply to every proxy of their namespace")
        } else {
            None
        }
    }

    /// Each policy's plugin, in order: the mesh plugin (always in place when configured) and
    /// every earlier accepted plugin stand; a plugin overlapping one of them is refused.
    pub fn assign(
        &self,
        policies: &[&ValidatedPolicy],
    ) -> Vec<(PolicyKey, Result<PluginRef, ScopeError>)> {
        let mut standing: Vec<PluginRef> = self.mesh_plugin.iter().cloned().collect();
        policies
            .iter()
            .map(|p| {
                let got = self.resolve(&p.plugin()).and_then(|plugin| {
                    if let Some((other, why)) = standing
                        .iter()
                        .find_map(|o| self.overlap(&plugin, o).map(|why| (o, why)))
                    {
                        return Err(ScopeError::Twice {
                            plugin,
                            other: other.clone(),
                            why,
                        });
                    }
                    if !standing.contains(&plugin) {
                        standing.push(plugin.clone());
                    }
                    Ok(plugin)
                });
                (p.key(), got)
            })
            .collect()
    }
}

/// The plugins that reach a proxy in `namespace`: those of the root namespace and its own.
pub fn plugins_reaching<'a>(
    scope: &MeshScope,
    plugins: impl IntoIterator<Item = &'a PluginRef>,
    namespace: &str,
) -> Vec<&'a PluginRef> {
    let mut out: Vec<&PluginRef> = plugins
        .into_iter()
        .filter(|p| p.namespace == scope.root_namespace || p.namespace == namespace)
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests;
