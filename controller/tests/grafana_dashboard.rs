//! `deploy/grafana/dashboard.json` queries only metrics that exist: every PromQL expression in it
//! (panel targets and template variables) is scanned for metric names, and each must be one the
//! filter defines (`mlcanary_filter::stats`) or the controller's `/metrics` registry exposes
//! (`mlcanary_controller::server::ControllerMetrics`, encoded after it has seen a status). Histogram series
//! (`_bucket`, `_sum`, `_count`) count as their family.

mod support;

use std::collections::BTreeSet;

use mlcanary_controller::policy::{CanaryPolicyStatus, Phase, VerdictStatus};
use mlcanary_controller::server::ControllerMetrics;
use mlcanary_core::rollout::RolloutEvent;
use mlcanary_filter::stats;
use serde_json::Value;

fn dashboard() -> Value {
    let path = support::repo_root().join("deploy/grafana/dashboard.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// PromQL words that are not metric names (aggregations may be followed by `by (...)` rather than
/// their parenthesis, so they do not always look like calls).
const KEYWORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
];

/// The metric names in a PromQL expression: identifiers that are not function calls, keywords,
/// label names (inside `{}` or the parentheses after `by`/`without`/`on`/`ignoring`/`group_*`),
/// strings, durations in `[...]`, numbers or Grafana `$variables`.
fn metric_names(expr: &str) -> Vec<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    let mut skip_next_group = false;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            '{' | '[' => {
                let close = if c == '{' { '}' } else { ']' };
                while i < chars.len() && chars[i] != close {
                    if chars[i] == '"' {
                        i += 1;
                        while i < chars.len() && chars[i] != '"' {
                            i += 1;
                        }
                    }
                    i += 1;
                }
                i += 1;
            }
            '(' if skip_next_group => {
                while i < chars.len() && chars[i] != ')' {
                    i += 1;
                }
                i += 1;
                skip_next_group = false;
            }
            '$' => {
                i += 1;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
            }
            c if c.is_ascii_digit() || c == '.' => {
                // Numbers, also `1e3` and `0x1f`.
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut j = i;
                while j < chars.len() && chars[j].is_whitespace() {
                    j += 1;
                }
                let is_call = j < chars.len() && chars[j] == '(';
                let lower = word.to_ascii_lowercase();
                if matches!(
                    lower.as_str(),
                    "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
                ) {
                    // Their parenthesis holds label names.
                    skip_next_group = is_call;
                } else if !is_call && !KEYWORDS.contains(&lower.as_str()) {
                    names.push(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// Every PromQL expression of the dashboard, with where it is.
fn expressions(d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        let title = p["title"].as_str().unwrap_or("?").to_owned();
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().expect("every target has an expr");
            out.push((format!("panel {title:?}"), expr.to_owned()));
        }
    }
    for v in d["templating"]["list"].as_array().expect("templating") {
        let q = v["query"]["query"].as_str().or_else(|| v["query"].as_str());
        if v["type"] == "query" {
            let q = q.expect("a query variable has a query");
            // label_values(<series selector>, <label>): the selector is PromQL.
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|r| r.rsplit_once(','))
                .map(|(sel, _)| sel)
                .unwrap_or(q);
            out.push((format!("variable {}", v["name"]), inner.to_owned()));
        }
    }
    out
}

/// What exists: the filter's families and every series name the controller's registry encodes.
fn known_metrics() -> BTreeSet<String> {
    let mut known: BTreeSet<String> = [
        stats::REQUESTS,
        stats::ERRORS,
        stats::DURATION,
        stats::PREDICTION_SCORE,
        stats::PREDICTIONS,
        stats::POSITIVES,
        stats::PARSE_FAILURES,
        stats::CONFIG_REJECTED,
    ]
    .map(str::to_owned)
    .into();
    let m = ControllerMetrics::new();
    let status = CanaryPolicyStatus {
        phase: Phase::Progressing,
        canary_weight_bp: 500,
        last_verdicts: vec![VerdictStatus {
            name: "errors".into(),
            verdict: "pass".into(),
            canary: Some(0.0),
            stable: Some(0.0),
            ..Default::default()
        }],
        ..Default::default()
    };
    m.observe_status("ml", "p", &status);
    m.observe_events(
        "ml",
        "p",
        &[
            RolloutEvent::Promoted {
                from_bp: 500,
                reason: "promoted by operator".into(),
            },
            RolloutEvent::RolledBack {
                from_bp: 500,
                reason: "x".into(),
            },
        ],
    );
    m.observe_analysis("ml", "p", std::time::Duration::from_millis(3));
    m.error("status");
    let text = m.encode().expect("encode");
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name: String = line
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        known.insert(name);
    }
    known
}

fn family(name: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name)
}

#[test]
fn every_query_uses_only_metrics_that_exist() {
    let known = known_metrics();
    assert!(
        known.contains("mlcanary_controller_canary_weight_bp")
            && known.contains("mlcanary_controller_rollbacks_total"),
        "the registry was read: {known:?}"
    );
    let mut used = BTreeSet::new();
    for (where_, expr) in expressions(&dashboard()) {
        let names = metric_names(&expr);
        assert!(!names.is_empty(), "{where_}: no metric in {expr:?}");
        for n in names {
            assert!(
                known.contains(&n) || known.contains(family(&n)),
                "{where_}: {n:?} is not a metric mlcanary defines (known: {known:?})"
            );
            used.insert(family(&n).to_owned());
        }
    }
    // Not vacuous: the panels the dashboard promises are there.
    for m in [
        stats::REQUESTS,
        stats::ERRORS,
        stats::DURATION,
        stats::PREDICTION_SCORE,
        stats::POSITIVES,
        stats::PREDICTIONS,
        "mlcanary_controller_canary_weight_bp",
        "mlcanary_controller_phase",
    ] {
        assert!(used.contains(m), "no panel queries {m} (used: {used:?})");
    }
}

#[test]
fn the_scanner_finds_metrics_and_skips_everything_else() {
    assert_eq!(
        metric_names(
            r#"histogram_quantile(0.99, sum by (variant, le) (rate(mlcanary_request_duration_ms_bucket{policy="$policy", le!="+Inf"}[$__rate_interval])))"#
        ),
        ["mlcanary_request_duration_ms_bucket"]
    );
    assert_eq!(
        metric_names(
            "sum by (variant, le) (increase(a_bucket[$__range])) / ignoring (le) group_left sum by (variant) (increase(a_count[5m])) > bool 0.5e1"
        ),
        ["a_bucket", "a_count"]
    );
    assert_eq!(metric_names("up == 1 and on (job) nope"), ["up", "nope"]);
    // A typo is a name the test then refuses.
    let known = known_metrics();
    let typo = metric_names("rate(mlcanary_request_total[1m])");
    assert!(!known.contains(&typo[0]), "{typo:?}");
}

#[test]
fn the_dashboard_has_policy_and_namespace_variables_and_both_variants_side_by_side() {
    let d = dashboard();
    let vars: Vec<&str> = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    for v in ["datasource", "namespace", "policy"] {
        assert!(vars.contains(&v), "variable {v}: {vars:?}");
    }
    let per_variant: Vec<&str> = d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            p["targets"].as_array().into_iter().flatten().any(|t| {
                let e = t["expr"].as_str().unwrap_or_default();
                e.contains("by (variant")
                    || e.contains(", variant)")
                    || e.contains("variant=\"canary\"")
            })
        })
        .filter_map(|p| p["title"].as_str())
        .collect();
    for t in [
        "Requests per second",
        "Error rate",
        "Latency p99",
        "Prediction scores: canary",
        "Positive rate per segment",
    ] {
        assert!(
            per_variant.contains(&t),
            "{t} split by variant: {per_variant:?}"
        );
    }
    // A policy is its namespace and name: every per-policy query (the filter's stats and the
    // controller's) selects both, so same-named policies of two namespaces never add up.
    for (where_, expr) in expressions(&d) {
        // Variables list the policies (`label_values`): they select none.
        let per_policy = !expr.contains("config_rejected") && !where_.starts_with("variable");
        if expr.contains("mlcanary_") && per_policy {
            let selectors = expr.matches("policy=\"$policy\"").count();
            assert!(selectors > 0, "{where_}: {expr}");
            assert_eq!(
                expr.matches("policy_namespace=\"$namespace\", policy=\"$policy\"")
                    .count(),
                selectors,
                "{where_}: every policy selector names the namespace: {expr}"
            );
        }
    }
}
