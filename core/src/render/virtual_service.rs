//! The VirtualService `http` routes a policy owns, in the shape of DESIGN.md:
//!
//! ```yaml
//! - name: mlcanary-<policy>-<canary>     # tagged by the filter
//!   match: [{headers: {x-mlcanary-variant: {exact: canary}}}]
//!   route: [{destination: {host: H, subset: canary}}]
//! - name: mlcanary-<policy>-<stable>
//!   match: [{headers: {x-mlcanary-variant: {exact: stable}}}]
//!   route: [{destination: {host: H, subset: stable}}]
//! - name: mlcanary-<policy>-default      # untagged traffic (filter absent / failed open)
//!   route: [{destination: {host: H, subset: stable}, weight: 95},
//!           {destination: {host: H, subset: canary}, weight: 5}]
//! ```
//!
//! A policy with `feedback` owns one more route, first: feedback requests (`/v1/models/M:feedback`)
//! are held by a fault (a delay, then an abort) while the filter reads their body and answers
//! them itself, so the model never sees one:
//!
//! ```yaml
//! - name: mlcanary-<policy>-feedback
//!   match: [{uri: {regex: "^/v1/models/[^/]+:feedback$"}}]
//!   fault: {delay: {fixedDelay: 30s, percentage: {value: 100}},
//!           abort: {httpStatus: 503, percentage: {value: 100}}}
//!   route: [{destination: {host: H, subset: stable}}]
//! ```
//!
//! In the shadow phase the stable routes (tagged and default) also carry
//! `mirror: {host: H, subset: canary}` and `mirrorPercentage: {value: P}`: every user's request is
//! answered by stable, and a share P of them is copied to the canary, whose answers Envoy drops.
//!
//! Ownership is by route name (prefix `mlcanary-<policy>-`): `http` is an atomic list for server-side
//! apply, so the writer reads the current list, [`splice_routes`] replaces only the owned entries, and
//! the whole list is applied.

use std::collections::BTreeMap;

use mlcanary_filter::config::DEFAULT_VARIANT_HEADER;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::policy::ValidatedPolicy;
use crate::weights::Weights;

/// One Istio `HTTPRoute`, only the fields mlcanary writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpRoute {
    pub name: String,
    #[serde(rename = "match", default, skip_serializing_if = "Vec::is_empty")]
    pub match_: Vec<HttpMatchRequest>,
    pub route: Vec<HttpRouteDestination>,
    /// Where requests are also copied to (the shadow phase); their answers are dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Destination>,
    /// The share of requests copied to `mirror`.
    #[serde(
        rename = "mirrorPercentage",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub mirror_percentage: Option<Percent>,
    /// Held, then failed (the feedback route).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
}

/// Istio's `HTTPFaultInjection`: a delay, then an abort, each for a share of requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    pub delay: FaultDelay,
    pub abort: FaultAbort,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultDelay {
    /// A duration such as `30s`.
    pub fixed_delay: String,
    pub percentage: Percent,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultAbort {
    pub http_status: u32,
    pub percentage: Percent,
}

impl Fault {
    /// Every request held `seconds`, then answered `503` by the proxy.
    pub fn hold(seconds: u64) -> Fault {
        let all = Percent { value: 100.0 };
        Fault {
            delay: FaultDelay {
                fixed_delay: format!("{seconds}s"),
                percentage: all,
            },
            abort: FaultAbort {
                http_status: 503,
                percentage: all,
            },
        }
    }
}

/// Istio's `Percent`: a percentage as a double (0.01 = one request in ten thousand).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Percent {
    pub value: f64,
}

impl Percent {
    /// `bp` basis points as a percent.
    pub fn from_bp(bp: u32) -> Percent {
        Percent {
            value: f64::from(bp) / 100.0,
        }
    }

    /// Back to basis points (rounded), as Envoy's `FractionalPercent` over ten thousand.
    pub fn bp(self) -> u32 {
        (self.value * 100.0).round().clamp(0.0, 10_000.0) as u32
    }
}

/// `HTTPMatchRequest`: header matches, or a path regex.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpMatchRequest {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, StringMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<RegexMatch>,
}

/// `StringMatch`, regex only (RE2, on the path without its query).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegexMatch {
    pub regex: String,
}

/// `StringMatch`, exact only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StringMatch {
    pub exact: String,
}

/// `HTTPRouteDestination`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpRouteDestination {
    pub destination: Destination,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

/// `Destination`: service host and DestinationRule subset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Destination {
    pub host: String,
    pub subset: String,
}

/// A route set mlcanary refuses to write.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum RouteError {
    #[error("route {route}: destination with an empty host or subset")]
    EmptyHost { route: String },
    #[error("route {route}: weights sum to {total}, not 100")]
    BadTotal { route: String, total: u32 },
    #[error("route {route}: no destination")]
    NoDestination { route: String },
}

/// Name prefix of the routes `policy` owns.
pub fn owned_prefix(policy: &str) -> String {
    format!("mlcanary-{policy}-")
}

/// The routes `policy` owns at `weights`: a header-match route per subset, then the weighted default.
pub fn owned_routes(policy: &ValidatedPolicy, weights: Weights) -> Vec<HttpRoute> {
    let prefix = owned_prefix(&policy.name);
    let dest = |subset: &str| Destination {
        host: policy.destination_host.clone(),
        subset: subset.to_owned(),
    };
    let mirror = (weights.mirror_bp() > 0).then(|| dest(&policy.canary_subset));
    let mirror_percentage = mirror
        .as_ref()
        .map(|_| Percent::from_bp(weights.mirror_bp()));
    let tagged = |subset: &str| HttpRoute {
        name: format!("{prefix}{subset}"),
        match_: vec![HttpMatchRequest {
            headers: BTreeMap::from([(
                DEFAULT_VARIANT_HEADER.to_owned(),
                StringMatch {
                    exact: subset.to_owned(),
                },
            )]),
            uri: None,
        }],
        route: vec![HttpRouteDestination {
            destination: dest(subset),
            weight: None,
        }],
        mirror: None,
        mirror_percentage: None,
        fault: None,
    };
    let (stable_pct, canary_pct) = weights.percents();
    let stable = HttpRoute {
        mirror: mirror.clone(),
        mirror_percentage,
        ..tagged(&policy.stable_subset)
    };
    let feedback = policy.feedback.as_ref().map(|_| HttpRoute {
        name: format!("{prefix}feedback"),
        match_: vec![HttpMatchRequest {
            headers: BTreeMap::new(),
            uri: Some(RegexMatch {
                regex: mlcanary_filter::feedback::hold_path_regex(
                    policy.filter_template.model.as_deref(),
                ),
            }),
        }],
        fault: Some(Fault::hold(mlcanary_filter::feedback::HOLD_S)),
        ..tagged(&policy.stable_subset)
    });
    feedback
        .into_iter()
        .chain([
            tagged(&policy.canary_subset),
            stable,
            HttpRoute {
                name: format!("{prefix}default"),
                match_: Vec::new(),
                route: vec![
                    HttpRouteDestination {
                        destination: dest(&policy.stable_subset),
                        weight: Some(stable_pct),
                    },
                    HttpRouteDestination {
                        destination: dest(&policy.canary_subset),
                        weight: Some(canary_pct),
                    },
                ],
                mirror,
                mirror_percentage,
                fault: None,
            },
        ])
        .collect()
}

/// Refuse a route with an empty host/subset, no destination, or weights (when any are set) that do
/// not sum to 100: the last line of defence before a write could black-hole traffic.
pub fn check_routes(routes: &[HttpRoute]) -> Result<(), RouteError> {
    for r in routes {
        if r.route.is_empty() {
            return Err(RouteError::NoDestination {
                route: r.name.clone(),
            });
        }
        if r.route
            .iter()
            .any(|d| d.destination.host.is_empty() || d.destination.subset.is_empty())
        {
            return Err(RouteError::EmptyHost {
                route: r.name.clone(),
            });
        }
        if r.route.iter().any(|d| d.weight.is_some()) {
            let total: u32 = r.route.iter().map(|d| d.weight.unwrap_or(0)).sum();
            if total != 100 {
                return Err(RouteError::BadTotal {
                    route: r.name.clone(),
                    total,
                });
            }
        }
    }
    Ok(())
}

/// The new `http` list: `existing` with the routes `policy` owned removed, the owned header-match
/// routes first (they must win before any user route), the user's routes in their order, and the
/// owned default route last (a catch-all placed earlier would shadow the user's routes).
pub fn splice_routes(
    existing: &[serde_json::Value],
    policy: &str,
    owned: &[HttpRoute],
) -> Result<Vec<serde_json::Value>, serde_json::Error> {
    let prefix = owned_prefix(policy);
    let is_owned = |r: &serde_json::Value| {
        r.get("name")
            .and_then(serde_json::Value::as_str)
            .is_some_and(|n| n.starts_with(&prefix))
    };
    let (matched, default): (Vec<&HttpRoute>, Vec<&HttpRoute>) =
        owned.iter().partition(|r| !r.match_.is_empty());
    let mut out = Vec::with_capacity(existing.len() + owned.len());
    for r in matched {
        out.push(serde_json::to_value(r)?);
    }
    out.extend(existing.iter().filter(|r| !is_owned(r)).cloned());
    for r in default {
        out.push(serde_json::to_value(r)?);
    }
    Ok(out)
}
