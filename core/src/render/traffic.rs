//! Everything one policy wants written, as one value: its routes and the whole filter config of
//! the policies it shares a WasmPlugin (or a local Envoy) with. The config is one document for all
//! of them, so it is shared ([`Arc`]): rendering every policy's desired traffic at once
//! ([`desired_all`]) renders that document once, not once per policy.

use std::sync::Arc;

use mlcanary_filter::config::RawConfig;
use mlcanary_filter::ConfigError;

use super::{inbound_plugin, owned_routes, render_config, HttpRoute, InboundPlugin};
use crate::policy::{PluginTarget, ValidatedPolicy};
use crate::weights::Weights;

/// What one policy wants written.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredTraffic {
    pub namespace: String,
    /// The policy that owns `routes` (route names `mlcanary-<policy>-*`).
    pub policy: String,
    pub virtual_service: String,
    pub routes: Vec<HttpRoute>,
    pub wasm_plugin: PluginTarget,
    /// The whole filter config of every policy sharing `wasm_plugin`.
    pub plugin_config: Arc<RawConfig>,
    /// The canary's inbound plugin while the routes mirror to it; `None`: there must be none.
    pub inbound: Option<InboundPlugin>,
}

/// The routes and the whole filter config `policy` wants at `weights`, next to `peers`.
pub fn desired_traffic(
    policy: &ValidatedPolicy,
    weights: Weights,
    peers: &[(&ValidatedPolicy, Weights)],
) -> Result<DesiredTraffic, ConfigError> {
    let mut all = others(policy, peers);
    all.push((policy, weights));
    // A stable order, so the same state always renders the same document.
    all.sort_by_key(|(p, _)| p.key());
    let plugin_config = Arc::new(render_config(&all)?);
    Ok(desired(policy, weights, plugin_config))
}

/// The desired traffic of each of `policies` (all sharing one plugin) at its weights, in their
/// order, with one rendering of their shared config.
pub fn desired_all(
    policies: &[(&ValidatedPolicy, Weights)],
) -> Result<Vec<DesiredTraffic>, ConfigError> {
    let mut all = policies.to_vec();
    all.sort_by_key(|(p, _)| p.key());
    let plugin_config = Arc::new(render_config(&all)?);
    Ok(policies
        .iter()
        .map(|(p, w)| desired(p, *w, plugin_config.clone()))
        .collect())
}

/// What a deleted `policy` leaves behind: every request to the subset it rests on — stable, or the
/// canary it promoted in the two-Deployments mode (`resting`) — through its default route alone
/// (no header-match routes, so a client's own `x-mlcanary-variant` cannot pick a subset), and the
/// filter config of its peers without it, and no inbound plugin.
pub fn reverted_traffic(
    policy: &ValidatedPolicy,
    resting: Weights,
    peers: &[(&ValidatedPolicy, Weights)],
) -> Result<DesiredTraffic, ConfigError> {
    let mut rest = others(policy, peers);
    rest.sort_by_key(|(p, _)| p.key());
    let plugin_config = Arc::new(render_config(&rest)?);
    let mut d = desired(policy, resting, plugin_config);
    // A deleted policy mirrors nothing (resting weights never do): its inbound plugin goes.
    d.inbound = None;
    d.routes.retain(|r| r.match_.is_empty());
    for r in &mut d.routes {
        r.route.retain(|dest| dest.weight != Some(0));
    }
    Ok(d)
}

/// `peers` without `policy` itself (a peer list may hold it).
fn others<'p>(
    policy: &ValidatedPolicy,
    peers: &[(&'p ValidatedPolicy, Weights)],
) -> Vec<(&'p ValidatedPolicy, Weights)> {
    let me = policy.key();
    peers
        .iter()
        .filter(|(p, _)| p.key() != me)
        .copied()
        .collect()
}

fn desired(
    policy: &ValidatedPolicy,
    weights: Weights,
    plugin_config: Arc<RawConfig>,
) -> DesiredTraffic {
    DesiredTraffic {
        namespace: policy.namespace_or_default().to_owned(),
        policy: policy.name.clone(),
        virtual_service: policy.virtual_service.clone(),
        routes: owned_routes(policy, weights),
        wasm_plugin: policy.plugin(),
        plugin_config,
        inbound: inbound_plugin(policy, weights),
    }
}
