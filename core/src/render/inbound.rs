//! The canary's inbound side during a shadow, on Istio. A mirrored copy reaches the canary pod's
//! own sidecar, never the caller's, so the mesh plugin (outbound) cannot see the canary's answer:
//! while a policy mirrors, a WasmPlugin of its own runs the filter in `SERVER` mode on the canary's
//! pods only, with the inbound config ([`inbound_config`]), and is removed when the shadow ends.
//!
//! It does not meet the mesh plugin in one chain (that one runs in `CLIENT` mode: the outbound
//! listeners). Two policies of one namespace in shadow at once may both select a pod (a selector
//! names a label, not a Deployment); each config then measures only its own policy's host, so
//! nothing is counted twice.

use std::collections::BTreeMap;

use mlcanary_filter::config::RawConfig;
use mlcanary_filter::hash::stable_hash;

use super::{inbound_config, render_policy};
use crate::policy::validated::DEFAULT_SUBSET_LABEL;
use crate::policy::ValidatedPolicy;
use crate::weights::Weights;

/// What every inbound plugin's name starts with.
pub const NAME_PREFIX: &str = "mlcanary-shadow-";
/// The longest name written: a label value's limit, which Istio (and tools that label by the
/// object's name) expect of an object name.
pub const MAX_NAME: usize = 63;

/// The WasmPlugin a policy in shadow wants on its canary's pods.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundPlugin {
    /// The policy's namespace: a selector reaches only pods of the plugin's namespace.
    pub namespace: String,
    /// [`plugin_name`] of the policy.
    pub name: String,
    /// `spec.selector.matchLabels`: the canary subset's label, as its DestinationRule subset (and
    /// the lifecycle) label the canary's pods.
    pub selector: BTreeMap<String, String>,
    /// `spec.pluginConfig`: the inbound config of this policy alone.
    pub config: RawConfig,
}

/// The inbound plugin `policy` wants at `weights`: one while the routes mirror to the canary,
/// none otherwise (live steps, rollback, promotion: the writer deletes it).
pub fn inbound_plugin(policy: &ValidatedPolicy, weights: Weights) -> Option<InboundPlugin> {
    if weights.mirror_bp() == 0 {
        return None;
    }
    let label = policy
        .deployment_ref
        .as_ref()
        .map_or(DEFAULT_SUBSET_LABEL, |d| d.subset_label.as_str());
    let alone = RawConfig {
        variant_header: None,
        inbound: false,
        policies: vec![render_policy(policy, weights)],
    };
    Some(InboundPlugin {
        namespace: policy.namespace_or_default().to_owned(),
        name: plugin_name(&policy.name),
        selector: BTreeMap::from([(label.to_owned(), policy.canary_subset.clone())]),
        config: inbound_config(&alone),
    })
}

/// `mlcanary-shadow-<policy>`, at most [`MAX_NAME`] characters: a longer one keeps as much of the
/// policy's name as fits and ends in a hash of the whole (a fixed function, so every controller
/// replica and release names — and deletes — the same object).
pub fn plugin_name(policy: &str) -> String {
    let full = format!("{NAME_PREFIX}{policy}");
    if full.len() <= MAX_NAME {
        return full;
    }
    let hash = format!(
        "{:08x}",
        stable_hash(NAME_PREFIX.as_bytes(), policy.as_bytes()) >> 32
    );
    let room = MAX_NAME - NAME_PREFIX.len() - 1 - hash.len();
    // Object names are ASCII; a cut inside a character (a local policy's odd name) backs off.
    let mut cut = room.min(policy.len());
    while !policy.is_char_boundary(cut) {
        cut -= 1;
    }
    let kept = policy[..cut].trim_end_matches(['-', '.']);
    format!("{NAME_PREFIX}{kept}-{hash}")
}

#[cfg(test)]
mod tests;
