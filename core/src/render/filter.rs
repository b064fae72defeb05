//! The filter's config: one `RawPolicy` per CanaryPolicy, all policies sharing a WasmPlugin in one
//! `RawConfig`, checked with the filter's own validation before anything is written.

use mlcanary_filter::config::{RawConfig, RawFeedback, RawPolicy};
use mlcanary_filter::ConfigError;

use crate::policy::ValidatedPolicy;
use crate::weights::Weights;

/// The filter policy for `policy` at `weights`: variants `[stable, canary]` in that order, summing to
/// 10000 bp. The order matters: the filter gives the last-listed variant the top of the hash range,
/// so users already on the canary stay there as its weight grows.
pub fn render_policy(policy: &ValidatedPolicy, weights: Weights) -> RawPolicy {
    let mut p = policy.filter_template.clone();
    p.namespace = Some(policy.namespace_or_default().to_owned());
    // The template always holds [stable, canary]; set by name so a reorder could not swap weights.
    for v in &mut p.variants {
        v.weight_bp = if v.name == policy.canary_subset {
            weights.canary_bp()
        } else {
            weights.stable_bp()
        };
    }
    if let Some(f) = &policy.feedback {
        p.feedback = Some(RawFeedback {
            keys: f.keys.clone(),
            max_age_s: Some(f.max_age.as_secs()),
            max_body_bytes: None,
            replay_window: None,
        });
    }
    // The canary's inbound side measures the copies only while the route mirrors them.
    if weights.mirror_bp() > 0 {
        p.shadow = Some(policy.canary_subset.clone());
    }
    p
}

/// The config of the models' inbound side ([`RawConfig::inbound`]): the policies of `config` in
/// their shadow phase, which the filter there measures and nothing else.
pub fn inbound_config(config: &RawConfig) -> RawConfig {
    RawConfig {
        variant_header: config.variant_header.clone(),
        inbound: true,
        policies: config
            .policies
            .iter()
            .filter(|p| p.shadow.is_some())
            .cloned()
            .collect(),
    }
}

/// The whole config for the policies sharing one plugin, validated as the filter will validate it
/// (two policies claiming the same host and model are refused here, not in Envoy's log).
pub fn render_config(policies: &[(&ValidatedPolicy, Weights)]) -> Result<RawConfig, ConfigError> {
    let raw = RawConfig {
        variant_header: None,
        inbound: false,
        policies: policies.iter().map(|(p, w)| render_policy(p, *w)).collect(),
    };
    mlcanary_filter::Config::try_from(raw.clone())?;
    Ok(raw)
}
