//! Stat names and the error classification: pure, so the glue only defines and bumps ids.
//!
//! Envoy's Wasm metrics carry no labels, so labels ride in the name and Envoy's `stats_tags` regexes
//! lift them out (the convention Istio's own stats use): the stat
//! `segment=.=60+;.;variant=.=canary;.;policy=.=fraud-model;.;policy_namespace=.=ml;.;mlcanary_requests_total`
//! is exported on `/stats/prometheus` as
//! `mlcanary_requests_total{policy_namespace="ml",policy="fraud-model",variant="canary",segment="60+"}`.
//!
//! A shadow's stats (mirrored requests measured on the canary's inbound side) carry one more tag,
//! `phase=.=shadow;.;`, exported as `phase="shadow"`; live stats carry none (a series without
//! `phase` is live), so the live names are what they were before shadows existed.
//!
//! The namespace tag is `policy_namespace`, not `namespace`: Prometheus' usual Kubernetes pod
//! scrape (Istio's `envoy-stats` monitor among them) attaches a `namespace` target label — the
//! scraped proxy's own namespace — which would push ours aside to `exported_namespace`.

/// Tags mlcanary puts in its stat names, with the regex Envoy (`stats_config.stats_tags`) or Istio
/// (`extraStatTags` + these regexes) needs to extract each.
pub const TAGS: [(&str, &str); 7] = [
    ("policy_namespace", r"(policy_namespace=\.=(.*?);\.;)"),
    ("policy", r"(policy=\.=(.*?);\.;)"),
    ("variant", r"(variant=\.=(.*?);\.;)"),
    ("segment", r"(segment=\.=(.*?);\.;)"),
    ("phase", r"(phase=\.=(.*?);\.;)"),
    ("outcome", r"(outcome=\.=(.*?);\.;)"),
    ("reason", r"(reason=\.=(.*?);\.;)"),
];

/// The `phase` label of a shadow's series.
pub const SHADOW_PHASE: &str = "shadow";

/// Which requests a stat counts: those users sent (live), or the copies Envoy mirrored to a
/// variant in its shadow phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Phase {
    #[default]
    Live,
    Shadow,
}

/// Counter: requests seen per (policy, variant, segment).
pub const REQUESTS: &str = "mlcanary_requests_total";
/// Counter: requests that ended in an error (5xx, gRPC non-OK, reset / no response).
pub const ERRORS: &str = "mlcanary_errors_total";
/// Histogram: request duration in milliseconds, first request byte to end of stream.
pub const DURATION: &str = "mlcanary_request_duration_ms";
/// Histogram: prediction scores per mille (score × 1000, clamped to 0..=1000), one per instance.
pub const PREDICTION_SCORE: &str = "mlcanary_prediction_score";
/// Counter: scored instances (the denominator of the positive rate).
pub const PREDICTIONS: &str = "mlcanary_predictions_total";
/// Counter: instances whose score reached the policy's positive threshold.
pub const POSITIVES: &str = "mlcanary_positive_predictions_total";
/// Counter: replies the filter could not read scores from (too large, compressed, not JSON, no
/// predictions, unexpected shape). Counted, never fatal: the reply passes on untouched.
pub const PARSE_FAILURES: &str = "mlcanary_body_parse_failures_total";
/// Bucket bounds (per mille) for `mlcanary_prediction_score`: twenty bins of 0.05. Envoy takes
/// them from `stats_config.histogram_bucket_settings` (Istio: `statsHistogramBuckets`); with
/// Envoy's default buckets the histogram still works, only coarser.
pub const SCORE_BUCKETS: [u32; 20] = [
    50, 100, 150, 200, 250, 300, 350, 400, 450, 500, 550, 600, 650, 700, 750, 800, 850, 900, 950,
    1000,
];
/// Bucket bounds (ms) for `mlcanary_request_duration_ms`, chosen for model serving: 1 ms to 10 s in
/// 1-2.5-5 steps (a latency check tests at the bound at or above its `maxMs`, so 25, 50, 100, 250
/// ms are exact), 13 bounds where Envoy's default has 19 reaching an hour. Set like the score
/// buckets; with Envoy's default the histogram still works, with more series.
pub const DURATION_BUCKETS: [u32; 13] =
    [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000];
/// Series one (policy, variant, segment) tuple exports once it has served a request, with the
/// bucket layouts above: two counters and the duration histogram (13 bounds, `+Inf`, `_sum`,
/// `_count`); a policy that reads predictions adds the score histogram (20 bounds, `+Inf`, `_sum`,
/// `_count`) and three counters.
pub const SERIES_PER_TUPLE: usize = 2 + (DURATION_BUCKETS.len() + 3);
/// [`SERIES_PER_TUPLE`] for a policy that reads predictions.
pub const SERIES_PER_TUPLE_WITH_PREDICTIONS: usize =
    SERIES_PER_TUPLE + (SCORE_BUCKETS.len() + 3) + 3;
/// Counter: labels counted through the feedback path per (policy, variant, segment) and `outcome`
/// (`tp`, `fp`, `tn`, `fn`: the ticket's prediction against the label).
pub const FEEDBACK: &str = "mlcanary_feedback_total";
/// Counter: feedback items refused per policy and `reason` (see [`crate::ticket::Reject`]).
pub const FEEDBACK_REJECTED: &str = "mlcanary_feedback_rejected_total";
/// Counter (untagged): configs the filter refused.
pub const CONFIG_REJECTED: &str = "mlcanary_config_rejected_total";

/// The policy a stat belongs to: its namespace and name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyId<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
}

/// The tagged stat name of `family` for one (policy, variant, segment) tuple in `phase`.
pub fn stat_name(
    family: &str,
    policy: PolicyId<'_>,
    variant: &str,
    segment: Option<&str>,
    phase: Phase,
) -> String {
    let mut s = String::with_capacity(
        family.len() + policy.namespace.len() + policy.name.len() + variant.len() + 90,
    );
    if phase == Phase::Shadow {
        s.push_str("phase=.=");
        s.push_str(SHADOW_PHASE);
        s.push_str(";.;");
    }
    if let Some(seg) = segment {
        s.push_str("segment=.=");
        s.push_str(seg);
        s.push_str(";.;");
    }
    s.push_str("variant=.=");
    s.push_str(variant);
    s.push_str(";.;policy=.=");
    s.push_str(policy.name);
    s.push_str(";.;policy_namespace=.=");
    s.push_str(policy.namespace);
    s.push_str(";.;");
    s.push_str(family);
    s
}

/// `family`'s name for one value of an extra tag (`outcome`, `reason`) ahead of `base`, the tuple's
/// tags as [`stat_name`] writes them without the family.
pub fn tagged(tag: &str, value: &str, base: &str, family: &str) -> String {
    format!("{tag}=.={value};.;{base}{family}")
}

/// The tags of a policy alone (for [`FEEDBACK_REJECTED`]).
pub fn policy_tags(policy: PolicyId<'_>) -> String {
    format!(
        "policy=.={};.;policy_namespace=.={};.;",
        policy.name, policy.namespace
    )
}

/// How a stream ended, as far as the error count is concerned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    /// HTTP status of the response; 0 when none was sent (reset, timeout before headers).
    pub status: u16,
    /// `grpc-status` from the response headers or trailers, when present.
    pub grpc_status: Option<u32>,
}

impl Outcome {
    /// 5xx, no response at all, or a gRPC status other than OK. Envoy's own local replies for
    /// upstream failures (503 no healthy upstream, 504 timeout) are 5xx and counted here too.
    pub fn is_error(&self) -> bool {
        self.status == 0 || self.status >= 500 || self.grpc_status.is_some_and(|g| g != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_tags_envoy_can_extract() {
        let id = |namespace, name| PolicyId { namespace, name };
        assert_eq!(
            stat_name(REQUESTS, id("ml", "fraud-model"), "canary", None, Phase::Live),
            "variant=.=canary;.;policy=.=fraud-model;.;policy_namespace=.=ml;.;mlcanary_requests_total"
        );
        assert_eq!(
            stat_name(ERRORS, id("default", "p"), "stable", Some("60+"), Phase::Live),
            "segment=.=60+;.;variant=.=stable;.;policy=.=p;.;policy_namespace=.=default;.;mlcanary_errors_total"
        );
        assert_eq!(
            stat_name(REQUESTS, id("ml", "p"), "canary", Some("60+"), Phase::Shadow),
            "phase=.=shadow;.;segment=.=60+;.;variant=.=canary;.;policy=.=p;.;policy_namespace=.=ml;.;mlcanary_requests_total"
        );
    }

    #[test]
    fn feedback_names() {
        let id = PolicyId {
            namespace: "ml",
            name: "p",
        };
        let base = stat_name("", id, "canary", Some("60+"), Phase::Live);
        assert_eq!(
            tagged("outcome", "fp", &base, FEEDBACK),
            "outcome=.=fp;.;segment=.=60+;.;variant=.=canary;.;policy=.=p;.;policy_namespace=.=ml;.;mlcanary_feedback_total"
        );
        assert_eq!(
            tagged("reason", "bad_mac", &policy_tags(id), FEEDBACK_REJECTED),
            "reason=.=bad_mac;.;policy=.=p;.;policy_namespace=.=ml;.;mlcanary_feedback_rejected_total"
        );
    }

    #[test]
    fn errors() {
        let o = |status, grpc_status| Outcome {
            status,
            grpc_status,
        };
        assert!(!o(200, None).is_error());
        assert!(!o(404, None).is_error());
        assert!(o(500, None).is_error());
        assert!(o(503, None).is_error());
        assert!(o(0, None).is_error());
        assert!(o(200, Some(14)).is_error());
        assert!(!o(200, Some(0)).is_error());
    }
}
