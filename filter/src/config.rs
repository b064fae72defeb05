//! The filter's configuration: JSON parsed into raw serde structs, then validated into typed form.
//!
//! Every validation error names the JSON path of the offending field, so an operator reading Envoy's
//! log (or the controller reading the same error) knows what to fix. Nothing here touches the host.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::hash::BUCKETS;
use crate::predictions::{Format, ScoreSpec};
use crate::rules::{Matcher, Rule, Source};

mod feedback;

pub use feedback::{
    Feedback, RawFeedback, DEFAULT_FEEDBACK_MAX_AGE_S, DEFAULT_FEEDBACK_MAX_BODY_BYTES,
    DEFAULT_REPLAY_WINDOW, MAX_REPLAY_WINDOW,
};

/// Default request header that carries the chosen variant to the route match.
pub const DEFAULT_VARIANT_HEADER: &str = "x-mlcanary-variant";
/// Namespace of a policy whose config names none (the controller's `DEFAULT_NAMESPACE`).
pub const DEFAULT_NAMESPACE: &str = "default";
/// Default lifetime of an assigned sticky cookie: 30 days.
pub const DEFAULT_COOKIE_MAX_AGE_S: u32 = 30 * 24 * 3600;
/// Segment label for values outside the allow-list (and for requests without the attribute).
pub const OTHER_SEGMENT: &str = "other";

/// A config the filter refuses, with the path of the field at fault.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("config is not valid JSON for this filter: {0}")]
    Json(String),
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Raw (wire) form. `deny_unknown_fields` so that a typo is an error, not a silently ignored key.
// ---------------------------------------------------------------------------------------------

/// The JSON document as written in the WasmPlugin `pluginConfig` / Envoy plugin `configuration`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant_header: Option<String>,
    /// This config runs on models' inbound side (a WasmPlugin in `SERVER` mode on the canary's
    /// pods; locally the listener in front of the canary): it routes nothing and measures only the
    /// requests Envoy mirrored to a policy in its shadow phase. Without it (the mesh's outbound
    /// side) mirrored copies are never measured, so a client cannot forge a shadow's stats.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inbound: bool,
    #[serde(default)]
    pub policies: Vec<RawPolicy>,
}

/// One model's rollout as the filter sees it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub name: String,
    /// The CanaryPolicy's namespace: part of its identity in the stats (`policy_namespace` tag),
    /// so same-named policies of two namespaces are counted apart. Default `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub variants: Vec<RawVariant>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky: Option<RawSticky>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RawRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<RawSegment>,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "override")]
    pub override_: Option<RawOverride>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predictions: Option<RawPredictions>,
    /// The variant whose shadow the filter measures: requests Envoy mirrored to it (authority
    /// `<host>-shadow`) that reach the filter on an inbound listener are recorded for this variant
    /// with `phase="shadow"`. Set by the controller during a shadow phase only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<String>,
    /// Sign a ticket onto each reply and count the labels sent back with them (needs
    /// `predictions`: a ticket records what was predicted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedback: Option<RawFeedback>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVariant {
    pub name: String,
    pub weight_bp: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSticky {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    /// Hash salt; defaults to the policy name. Change it to reshuffle every user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
    /// Give a client with no key a random id in `cookie` (Set-Cookie on the response).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub assign_cookie: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie_max_age_s: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    #[serde(rename = "match")]
    pub match_: RawMatch,
    pub variant: String,
}

/// Exactly one of `header` / `cookie` / `query`, and exactly one of `exact` / `prefix` / `regex` /
/// `one_of`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_of: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSegment {
    pub header: String,
    pub values: Vec<String>,
}

/// A trusted override: a header (set only by something the mesh trusts, e.g. an authenticating
/// gateway that strips it from outside traffic) that names the variant outright.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOverride {
    pub header: String,
}

/// Read prediction scores from the model's replies (TF Serving REST or KServe v2).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPredictions {
    #[serde(default)]
    pub format: Format,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_index: Option<usize>,
    /// A score at or above this counts as a positive prediction (default 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub positive_threshold: Option<f64>,
    /// Replies longer than this are not parsed, only counted (default 64 KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u32>,
}

// ---------------------------------------------------------------------------------------------
// Typed (validated) form.
// ---------------------------------------------------------------------------------------------

/// A validated config: every policy routable, every name safe to put in a header and a stat name.
#[derive(Debug, Clone)]
pub struct Config {
    pub variant_header: String,
    /// See [`RawConfig::inbound`].
    pub inbound: bool,
    pub policies: Vec<Policy>,
    /// Lowercase host → indices of the policies that list it, in config order.
    by_host: HashMap<Box<str>, Vec<usize>>,
    /// Policies listing `*`, tried after the host's own.
    wildcard: Vec<usize>,
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub name: String,
    pub namespace: String,
    pub model: Option<String>,
    pub variants: Vec<Variant>,
    /// Cumulative upper bounds of each variant's bucket range, in listed order (last is `BUCKETS`).
    pub bounds: Vec<u32>,
    pub sticky: Option<Sticky>,
    pub rules: Vec<Rule>,
    pub segment: Option<Segment>,
    pub override_header: Option<String>,
    pub predictions: Option<Predictions>,
    /// Index of the variant whose mirrored requests are measured as its shadow.
    pub shadow: Option<usize>,
    pub feedback: Option<Feedback>,
}

/// Validated `predictions`.
#[derive(Debug, Clone, PartialEq)]
pub struct Predictions {
    pub spec: ScoreSpec,
    pub positive_threshold: f64,
    pub max_body_bytes: usize,
}

/// Default bound on a reply body the filter copies to read scores.
pub const DEFAULT_MAX_BODY_BYTES: u32 = 64 * 1024;
/// Upper bound an operator may set: bodies are copied per in-flight request.
pub const MAX_BODY_BYTES_LIMIT: u32 = 4 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant {
    pub name: String,
    pub weight_bp: u32,
}

#[derive(Debug, Clone)]
pub struct Sticky {
    pub header: Option<String>,
    pub cookie: Option<String>,
    pub salt: String,
    pub assign_cookie: bool,
    pub cookie_max_age_s: u32,
}

#[derive(Debug, Clone)]
pub struct Segment {
    pub header: String,
    pub values: Vec<String>,
}

impl Segment {
    /// Index of `value` in the allow-list, or `values.len()` (the `other` segment).
    pub fn index(&self, value: Option<&str>) -> usize {
        value
            .and_then(|v| self.values.iter().position(|a| a == v))
            .unwrap_or(self.values.len())
    }

    /// Label of segment index `i` (`other` past the allow-list).
    pub fn label(&self, i: usize) -> &str {
        self.values.get(i).map_or(OTHER_SEGMENT, String::as_str)
    }

    /// Number of segments including `other`.
    pub fn count(&self) -> usize {
        self.values.len() + 1
    }
}

impl Policy {
    /// Index of the variant whose bucket range holds `bucket` (0..BUCKETS).
    pub fn variant_for_bucket(&self, bucket: u32) -> usize {
        // Ranges are laid out in listed order, so the last-listed variant (the canary) owns the top
        // of the range and grows downwards: users already on it stay when its weight grows.
        self.bounds
            .iter()
            .position(|&b| bucket < b)
            .unwrap_or(self.bounds.len() - 1)
    }

    pub fn variant_index(&self, name: &str) -> Option<usize> {
        self.variants.iter().position(|v| v.name == name)
    }

    /// Number of segments stats are split into (1 when the policy has no segment).
    pub fn segment_count(&self) -> usize {
        self.segment.as_ref().map_or(1, Segment::count)
    }
}

impl Config {
    /// Parse and validate a JSON config.
    pub fn from_json(bytes: &[u8]) -> Result<Config, ConfigError> {
        let raw: RawConfig =
            serde_json::from_slice(bytes).map_err(|e| ConfigError::Json(e.to_string()))?;
        Config::try_from(raw)
    }

    /// The policy and variant a mirrored request to `authority` measures: a policy in its shadow
    /// phase whose host the request was copied from. The caller checks that the request arrived
    /// on an inbound listener (a client could send such an authority itself).
    pub fn find_shadow(&self, authority: &str, path: Option<&str>) -> Option<(usize, usize)> {
        let pi = self.find_policy(shadowed_host(authority)?, path)?;
        Some((pi, self.policies[pi].shadow?))
    }

    /// The policy for a request to `authority` (port stripped, case-insensitive) and `path` (which
    /// matters only for policies narrowed to a model).
    pub fn find_policy(&self, authority: &str, path: Option<&str>) -> Option<usize> {
        let host = strip_port(authority);
        let own = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            self.by_host.get(host.to_ascii_lowercase().as_str())
        } else {
            self.by_host.get(host)
        };
        let mut candidates = own.into_iter().flatten().chain(self.wildcard.iter());
        let model = path.and_then(model_from_path);
        candidates
            .find(|&&i| {
                self.policies[i]
                    .model
                    .as_deref()
                    .is_none_or(|m| Some(m) == model)
            })
            .copied()
    }
}

/// What Envoy appends to the host of a request it mirrors (`fraud:8501` → `fraud-shadow:8501`).
pub const SHADOW_SUFFIX: &str = "-shadow";

/// The host a mirrored request was copied from: `authority` without its port and without
/// [`SHADOW_SUFFIX`]; `None` for a request that was not mirrored.
pub fn shadowed_host(authority: &str) -> Option<&str> {
    strip_port(authority)
        .strip_suffix(SHADOW_SUFFIX)
        .filter(|h| !h.is_empty())
}

/// Strip `:port` from an authority, keeping IPv6 literals (`[::1]:80` → `[::1]`) whole.
pub fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority.find(']').map_or(authority, |i| &authority[..=i]);
    }
    match authority.rfind(':') {
        Some(i) if authority[i + 1..].bytes().all(|b| b.is_ascii_digit()) => &authority[..i],
        _ => authority,
    }
}

/// The model name in a TF Serving REST (`/v1/models/<m>[/versions/N|/labels/L][:verb]`) or KServe v2
/// (`/v2/models/<m>[/versions/N]/infer`) path.
pub fn model_from_path(path: &str) -> Option<&str> {
    let path = path.split(['?', '#']).next().unwrap_or(path);
    let rest = path
        .strip_prefix("/v1/models/")
        .or_else(|| path.strip_prefix("/v2/models/"))?;
    let end = rest.find(['/', ':']).unwrap_or(rest.len());
    let model = &rest[..end];
    (!model.is_empty()).then_some(model)
}

/// Names that go into a header value and into a stat name: no separators, no tag syntax.
fn check_name(field: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if name.len() > 63 {
        return Err(invalid(
            field,
            format!("{name:?} is longer than 63 characters"),
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(invalid(
            field,
            format!("{name:?} may hold only A-Z a-z 0-9 - _"),
        ));
    }
    Ok(())
}

/// Header / cookie / query names: non-empty token characters; headers lowercase (HTTP/2 form).
fn check_key(field: &str, name: &str, lowercase: bool) -> Result<(), ConfigError> {
    if name.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if !name.bytes().all(token) {
        return Err(invalid(field, format!("{name:?} is not a valid name")));
    }
    if lowercase && name.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(invalid(field, format!("{name:?} must be lowercase")));
    }
    Ok(())
}

impl TryFrom<RawConfig> for Config {
    type Error = ConfigError;

    fn try_from(raw: RawConfig) -> Result<Self, Self::Error> {
        let variant_header = raw
            .variant_header
            .unwrap_or_else(|| DEFAULT_VARIANT_HEADER.into());
        check_key("variant_header", &variant_header, true)?;
        let mut policies: Vec<Policy> = Vec::with_capacity(raw.policies.len());
        let mut by_host: HashMap<Box<str>, Vec<usize>> = HashMap::new();
        let mut wildcard = Vec::new();
        for (i, rp) in raw.policies.into_iter().enumerate() {
            let field = format!("policies[{i}]");
            if rp.hosts.is_empty() {
                return Err(invalid(
                    format!("{field}.hosts"),
                    "must list at least one host",
                ));
            }
            for (h, host) in rp.hosts.iter().enumerate() {
                let hf = format!("{field}.hosts[{h}]");
                if host == "*" {
                    wildcard.push(i);
                    continue;
                }
                let bad = |b: u8| !(b.is_ascii_alphanumeric() || b"-._[]:".contains(&b));
                if host.is_empty() || host.bytes().any(bad) {
                    return Err(invalid(
                        hf,
                        format!("{host:?} is not a host name (or \"*\")"),
                    ));
                }
                if strip_port(host) != host {
                    return Err(invalid(hf, format!("{host:?}: list hosts without a port")));
                }
                let entry = by_host
                    .entry(host.to_ascii_lowercase().into_boxed_str())
                    .or_default();
                if !entry.contains(&i) {
                    entry.push(i);
                }
            }
            let p = validate_policy(&field, rp)?;
            if let Some(j) = policies
                .iter()
                .position(|q| q.name == p.name && q.namespace == p.namespace)
            {
                return Err(invalid(
                    format!("{field}.name"),
                    format!(
                        "{:?} in namespace {:?} is also policies[{j}]",
                        p.name, p.namespace
                    ),
                ));
            }
            policies.push(p);
        }
        // Two policies on one host are fine only when the models tell them apart.
        for (host, idx) in by_host
            .iter()
            .map(|(h, v)| (&**h, v))
            .chain((!wildcard.is_empty()).then_some(("*", &wildcard)))
        {
            let unnarrowed: Vec<usize> = idx
                .iter()
                .copied()
                .filter(|&i| policies[i].model.is_none())
                .collect();
            let models: Vec<&str> = idx
                .iter()
                .filter_map(|&i| policies[i].model.as_deref())
                .collect();
            if unnarrowed.len() > 1 {
                return Err(invalid(
                    format!("policies[{}].hosts", unnarrowed[1]),
                    format!(
                        "host {host:?} is claimed by policies[{}] too; set `model` to tell them apart",
                        unnarrowed[0]
                    ),
                ));
            }
            for (k, m) in models.iter().enumerate() {
                if models[..k].contains(m) {
                    return Err(invalid(
                        "policies",
                        format!("two policies claim host {host:?} and model {m:?}"),
                    ));
                }
            }
        }
        // A policy with a model is tried before an unnarrowed one on the same host.
        for idx in by_host.values_mut().chain(std::iter::once(&mut wildcard)) {
            idx.sort_by_key(|&i| policies[i].model.is_none());
        }
        Ok(Config {
            variant_header,
            inbound: raw.inbound,
            policies,
            by_host,
            wildcard,
        })
    }
}

fn validate_policy(field: &str, rp: RawPolicy) -> Result<Policy, ConfigError> {
    check_name(&format!("{field}.name"), &rp.name)?;
    let namespace = rp.namespace.unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
    check_name(&format!("{field}.namespace"), &namespace)?;
    if let Some(m) = &rp.model {
        let bad = |b: u8| b == b'/' || b == b':' || b == b'?' || b.is_ascii_whitespace();
        if m.is_empty() || m.bytes().any(bad) {
            return Err(invalid(
                format!("{field}.model"),
                format!("{m:?} is not a model name"),
            ));
        }
    }
    if rp.variants.is_empty() {
        return Err(invalid(
            format!("{field}.variants"),
            "must list at least one variant",
        ));
    }
    let mut variants: Vec<Variant> = Vec::with_capacity(rp.variants.len());
    let mut bounds = Vec::with_capacity(rp.variants.len());
    let mut total: u32 = 0;
    for (i, v) in rp.variants.into_iter().enumerate() {
        let vf = format!("{field}.variants[{i}]");
        check_name(&format!("{vf}.name"), &v.name)?;
        if variants.iter().any(|w| w.name == v.name) {
            return Err(invalid(
                format!("{vf}.name"),
                format!("{:?} is listed twice", v.name),
            ));
        }
        if v.weight_bp > BUCKETS {
            return Err(invalid(
                format!("{vf}.weight_bp"),
                format!("{} is over {BUCKETS} (100 %)", v.weight_bp),
            ));
        }
        total += v.weight_bp;
        bounds.push(total);
        variants.push(Variant {
            name: v.name,
            weight_bp: v.weight_bp,
        });
    }
    if total != BUCKETS {
        return Err(invalid(
            format!("{field}.variants"),
            format!("weights sum to {total} basis points; they must sum to {BUCKETS} (100 %)"),
        ));
    }
    let variant_idx = |f: &str, name: &str| -> Result<usize, ConfigError> {
        variants.iter().position(|v| v.name == name).ok_or_else(|| {
            let known: Vec<&str> = variants.iter().map(|v| v.name.as_str()).collect();
            invalid(
                f,
                format!("unknown variant {name:?} (variants: {})", known.join(", ")),
            )
        })
    };

    let sticky = match rp.sticky {
        None => None,
        Some(s) => {
            let sf = format!("{field}.sticky");
            if let Some(h) = &s.header {
                check_key(&format!("{sf}.header"), h, true)?;
            }
            if let Some(c) = &s.cookie {
                check_key(&format!("{sf}.cookie"), c, false)?;
            }
            if s.header.is_none() && s.cookie.is_none() {
                return Err(invalid(sf, "needs a key: `header`, `cookie` or both"));
            }
            if s.assign_cookie && s.cookie.is_none() {
                return Err(invalid(
                    format!("{sf}.assign_cookie"),
                    "needs `cookie`: the name of the cookie to assign",
                ));
            }
            let salt = s.salt.unwrap_or_else(|| rp.name.clone());
            if salt.is_empty() {
                return Err(invalid(format!("{sf}.salt"), "must not be empty"));
            }
            Some(Sticky {
                header: s.header,
                cookie: s.cookie,
                salt,
                assign_cookie: s.assign_cookie,
                cookie_max_age_s: s.cookie_max_age_s.unwrap_or(DEFAULT_COOKIE_MAX_AGE_S),
            })
        }
    };

    let mut rules = Vec::with_capacity(rp.rules.len());
    for (i, r) in rp.rules.into_iter().enumerate() {
        let rf = format!("{field}.rules[{i}]");
        let variant = variant_idx(&format!("{rf}.variant"), &r.variant)?;
        rules.push(validate_rule(&format!("{rf}.match"), r.match_, variant)?);
    }

    let segment = match rp.segment {
        None => None,
        Some(s) => {
            let sf = format!("{field}.segment");
            check_key(&format!("{sf}.header"), &s.header, true)?;
            if s.values.is_empty() || s.values.len() > 16 {
                return Err(invalid(
                    format!("{sf}.values"),
                    "must list 1 to 16 values (stats are split by each: keep it low-cardinality)",
                ));
            }
            for (i, v) in s.values.iter().enumerate() {
                let vf = format!("{sf}.values[{i}]");
                let bad = |c: char| c == ';' || c == '.' || c.is_control();
                if v.is_empty() || v.len() > 63 || v.contains(bad) {
                    return Err(invalid(
                        vf,
                        format!("{v:?}: 1-63 characters, no ';', '.' or control characters"),
                    ));
                }
                if v == OTHER_SEGMENT || s.values[..i].contains(v) {
                    return Err(invalid(vf, format!("{v:?} is reserved or listed twice")));
                }
            }
            Some(Segment {
                header: s.header,
                values: s.values,
            })
        }
    };

    let override_header = match rp.override_ {
        None => None,
        Some(o) => {
            check_key(&format!("{field}.override.header"), &o.header, true)?;
            Some(o.header)
        }
    };

    let predictions = match rp.predictions {
        None => None,
        Some(p) => {
            let pf = format!("{field}.predictions");
            let positive_threshold = p.positive_threshold.unwrap_or(0.5);
            if !positive_threshold.is_finite() {
                return Err(invalid(
                    format!("{pf}.positive_threshold"),
                    "must be a finite number",
                ));
            }
            let max = p.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
            if max == 0 || max > MAX_BODY_BYTES_LIMIT {
                return Err(invalid(
                    format!("{pf}.max_body_bytes"),
                    format!("{max} is outside 1..={MAX_BODY_BYTES_LIMIT}"),
                ));
            }
            if p.output.as_deref() == Some("") {
                return Err(invalid(format!("{pf}.output"), "must not be empty"));
            }
            Some(Predictions {
                spec: ScoreSpec {
                    format: p.format,
                    output: p.output,
                    class_index: p.class_index,
                },
                positive_threshold,
                max_body_bytes: max as usize,
            })
        }
    };

    let shadow = match rp.shadow {
        None => None,
        Some(name) => Some(
            variants
                .iter()
                .position(|v| v.name == name)
                .ok_or_else(|| {
                    invalid(
                        format!("{field}.shadow"),
                        format!("{name:?} is not one of the variants"),
                    )
                })?,
        ),
    };

    let feedback = match rp.feedback {
        None => None,
        Some(f) => Some(feedback::validate(
            &format!("{field}.feedback"),
            f,
            &predictions,
        )?),
    };

    Ok(Policy {
        name: rp.name,
        namespace,
        model: rp.model,
        variants,
        bounds,
        sticky,
        rules,
        segment,
        override_header,
        predictions,
        shadow,
        feedback,
    })
}

fn validate_rule(field: &str, m: RawMatch, variant: usize) -> Result<Rule, ConfigError> {
    let source = match (m.header, m.cookie, m.query) {
        (Some(h), None, None) => {
            check_key(&format!("{field}.header"), &h, true)?;
            Source::Header(h)
        }
        (None, Some(c), None) => {
            check_key(&format!("{field}.cookie"), &c, false)?;
            Source::Cookie(c)
        }
        (None, None, Some(q)) => {
            if q.is_empty() {
                return Err(invalid(format!("{field}.query"), "must not be empty"));
            }
            Source::Query(q)
        }
        _ => {
            return Err(invalid(
                field,
                "needs exactly one of `header`, `cookie`, `query`",
            ))
        }
    };
    let matcher = match (m.exact, m.prefix, m.regex, m.one_of) {
        (Some(e), None, None, None) => Matcher::Exact(e),
        (None, Some(p), None, None) => Matcher::Prefix(p),
        (None, None, Some(r), None) => {
            // Anchored: a rule names whole values, as Envoy's safe_regex does.
            let re = regex_lite::Regex::new(&format!("^(?:{r})$"))
                .map_err(|e| invalid(format!("{field}.regex"), format!("{r:?}: {e}")))?;
            Matcher::Regex(re)
        }
        (None, None, None, Some(list)) => {
            if list.is_empty() {
                return Err(invalid(
                    format!("{field}.one_of"),
                    "must list at least one value",
                ));
            }
            Matcher::OneOf(list)
        }
        _ => {
            return Err(invalid(
                field,
                "needs exactly one of `exact`, `prefix`, `regex`, `one_of`",
            ))
        }
    };
    Ok(Rule {
        source,
        matcher,
        variant,
    })
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
