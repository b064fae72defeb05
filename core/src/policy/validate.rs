//! `CanaryPolicySpec` → [`ValidatedPolicy`]: every field checked once, at the edge, with an error that
//! names the field as the user wrote it (`spec.schedule.stepWeight: must be 1..=100`).
//!
//! The routing part is checked by the filter's own validation (`mlcanary_filter::Config::try_from`)
//! on the config the controller would render, so the controller refuses exactly what the filter
//! would refuse; the filter's field path is translated back into the spec's path.

use std::time::Duration;

use super::validate_checks::{check, CheckContext};
use super::validated::*;
use super::{CanaryPolicySpec, PauseSpec, PredictionsSpec};
use mlcanary_filter::config::{
    RawConfig, RawMatch, RawPolicy, RawPredictions, RawRule, RawSegment, RawSticky,
};
use mlcanary_filter::hash::BUCKETS;
use mlcanary_filter::predictions::Format;
use mlcanary_filter::ConfigError;

pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ValidationError {
    ValidationError {
        field: field.into(),
        reason: reason.into(),
    }
}

pub(crate) fn duration(field: &str, s: &str) -> Result<Duration, ValidationError> {
    let d = humantime::parse_duration(s)
        .map_err(|e| invalid(field, format!("{s:?} is not a duration like \"30s\": {e}")))?;
    if d.is_zero() {
        return Err(invalid(field, "must be longer than 0"));
    }
    Ok(d)
}

pub(super) fn non_empty(field: &str, s: &str) -> Result<(), ValidationError> {
    if s.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    Ok(())
}

/// `deploymentRef`: a Deployment name (with room for `-stable`), the subset label defaulted.
fn deployment_ref(d: &super::DeploymentRefSpec) -> Result<DeploymentRef, ValidationError> {
    let ok = !d.name.is_empty()
        && d.name.len() <= 253 - "-stable".len()
        && d.name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !ok {
        return Err(invalid(
            "spec.target.deploymentRef.name",
            format!("{:?} is not a Deployment name", d.name),
        ));
    }
    let subset_label = d
        .subset_label
        .clone()
        .unwrap_or_else(|| DEFAULT_SUBSET_LABEL.to_owned());
    if subset_label.is_empty() || subset_label.contains(char::is_whitespace) {
        return Err(invalid(
            "spec.target.deploymentRef.subsetLabel",
            format!("{subset_label:?} is not a label key"),
        ));
    }
    Ok(DeploymentRef {
        name: d.name.clone(),
        subset_label,
    })
}

/// `NAME` or `NAMESPACE/NAME`, each a Kubernetes object name.
fn plugin_name(s: &str) -> Result<PluginName, ValidationError> {
    let field = "spec.target.wasmPlugin";
    let dns = |part: &str| {
        !part.is_empty()
            && part.len() <= 253
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    };
    let (namespace, name) = match s.split_once('/') {
        Some((ns, n)) => (Some(ns), n),
        None => (None, s),
    };
    if !dns(name) || !namespace.is_none_or(dns) {
        return Err(invalid(
            field,
            format!("{s:?} is not NAME or NAMESPACE/NAME (lowercase object names)"),
        ));
    }
    Ok(PluginName {
        namespace: namespace.map(str::to_owned),
        name: name.to_owned(),
    })
}

impl ValidatedPolicy {
    /// Validate `spec` for the policy named `name` (the object's `metadata.name`, which the spec
    /// needs: it is the filter policy's name and the default sticky salt).
    pub fn from_spec(name: &str, spec: &CanaryPolicySpec) -> Result<Self, ValidationError> {
        let t = &spec.target;
        non_empty("spec.target.virtualService", &t.virtual_service)?;
        let wasm_plugin = t.wasm_plugin.as_deref().map(plugin_name).transpose()?;
        let deployment_ref = t.deployment_ref.as_ref().map(deployment_ref).transpose()?;
        if t.hosts.is_empty() {
            return Err(invalid("spec.target.hosts", "must list at least one host"));
        }
        let destination_host = match &t.destination_host {
            Some(h) => {
                non_empty("spec.target.destinationHost", h)?;
                h.clone()
            }
            None if t.hosts[0] == "*" => {
                return Err(invalid(
                    "spec.target.destinationHost",
                    "required when hosts[0] is \"*\" (the route needs a real host)",
                ))
            }
            None => t.hosts[0].clone(),
        };
        let stable_subset = t.stable_subset.clone().unwrap_or_else(|| "stable".into());
        let canary_subset = t.canary_subset.clone().unwrap_or_else(|| "canary".into());
        if stable_subset == canary_subset {
            return Err(invalid(
                "spec.target.canarySubset",
                "must differ from stableSubset",
            ));
        }

        let s = &spec.schedule;
        let interval = duration("spec.schedule.interval", &s.interval)?;
        let adaptive = super::validate_ext::adaptive(s)?;
        let steps_bp = match &adaptive {
            Some(a) => a.steps_bp(),
            None => steps(s.step_weight, s.max_weight, s.steps.as_deref())?,
        };
        let pauses = pauses(&s.pauses, steps_bp.len())?;
        let shadow = super::validate_ext::shadow(s)?;
        let webhooks = super::validate_ext::webhooks(&spec.webhooks)?;
        if let Some(v) = &t.canary_version {
            non_empty("spec.target.canaryVersion", v)?;
        }

        let a = &spec.analysis;
        let failure_threshold = a.failure_threshold.unwrap_or(DEFAULT_FAILURE_THRESHOLD);
        if failure_threshold == 0 {
            return Err(invalid(
                "spec.analysis.failureThreshold",
                "must be at least 1",
            ));
        }
        let min_requests = a.min_requests.unwrap_or(DEFAULT_MIN_REQUESTS);
        if min_requests == 0 {
            return Err(invalid(
                "spec.analysis.minRequests",
                "must be at least 1 (no verdict without traffic)",
            ));
        }
        let alpha = a.alpha.unwrap_or(DEFAULT_ALPHA);
        if !(alpha > 0.0 && alpha <= 0.5) {
            return Err(invalid(
                "spec.analysis.alpha",
                format!("{alpha} is not in (0, 0.5]"),
            ));
        }
        if a.checks.is_empty() {
            return Err(invalid(
                "spec.analysis.checks",
                "must list at least one check (nothing would ever pass)",
            ));
        }
        let harm_margin = a.harm_margin.unwrap_or(DEFAULT_HARM_MARGIN);
        if !(harm_margin.is_finite() && harm_margin > 1.0) {
            return Err(invalid(
                "spec.analysis.harmMargin",
                format!("{harm_margin} is not > 1 (1.5 = no worse than 1.5× stable)"),
            ));
        }
        let unhealthy_baseline = match a.unhealthy_baseline.as_deref() {
            None | Some("hold") => UnhealthyBaseline::Hold,
            Some("rollBack") => UnhealthyBaseline::RollBack,
            Some(other) => {
                return Err(invalid(
                    "spec.analysis.unhealthyBaseline",
                    format!("{other:?} is not one of \"hold\", \"rollBack\""),
                ))
            }
        };
        let ctx = CheckContext {
            alpha: super::validate_checks::budget_share(alpha, &a.checks)?,
            min_requests,
            has_predictions: spec.predictions.is_some(),
            has_segment: spec.routing.segment.is_some(),
            has_feedback: spec.feedback.is_some(),
        };
        let mut checks: Vec<Check> = Vec::with_capacity(a.checks.len());
        for (i, c) in a.checks.iter().enumerate() {
            let f = format!("spec.analysis.checks[{i}]");
            let check = check(&f, c, &ctx)?;
            if checks.iter().any(|k| k.name == check.name) {
                return Err(invalid(
                    format!("{f}.name"),
                    format!("{:?} is listed twice", c.name),
                ));
            }
            checks.push(check);
        }
        let progress_deadline = match &spec.progress_deadline {
            Some(d) => duration("spec.progressDeadline", d)?,
            None => DEFAULT_PROGRESS_DEADLINE,
        };

        let feedback = spec
            .feedback
            .as_ref()
            .map(|f| super::feedback::feedback(f, spec.predictions.is_some()))
            .transpose()?;
        let predictions = spec.predictions.as_ref().map(raw_predictions).transpose()?;
        let mut filter_template = filter_template(name, spec, &stable_subset, &canary_subset);
        filter_template.predictions = predictions;
        // The filter's own validation, on the config as it will be rendered (weights any valid split).
        let mut probe = filter_template.clone();
        probe.variants[0].weight_bp = BUCKETS;
        mlcanary_filter::Config::try_from(RawConfig {
            variant_header: None,
            inbound: false,
            policies: vec![probe],
        })
        .map_err(from_filter_error)?;

        Ok(ValidatedPolicy {
            name: name.to_owned(),
            namespace: None,
            virtual_service: t.virtual_service.clone(),
            destination_host,
            stable_subset,
            canary_subset,
            wasm_plugin,
            interval,
            steps_bp,
            pauses,
            manual_gate: s.manual_gate,
            failure_threshold,
            min_requests,
            alpha,
            harm_margin,
            unhealthy_baseline,
            checks,
            progress_deadline,
            filter_template,
            adaptive,
            webhooks,
            canary_version: t.canary_version.clone(),
            deployment_ref,
            shadow,
            feedback,
        })
    }
}

/// Step percents → basis points, from explicit `steps` or `stepWeight`/`maxWeight`.
fn steps(
    step_weight: Option<u32>,
    max_weight: Option<u32>,
    explicit: Option<&[u32]>,
) -> Result<Vec<u32>, ValidationError> {
    match (step_weight, explicit) {
        (Some(_), Some(_)) => Err(invalid(
            "spec.schedule.steps",
            "set either `steps` or `stepWeight`, not both",
        )),
        (None, None) => Err(invalid("spec.schedule", "needs `stepWeight` or `steps`")),
        (None, Some(list)) => {
            if max_weight.is_some() {
                return Err(invalid(
                    "spec.schedule.maxWeight",
                    "only goes with `stepWeight`",
                ));
            }
            if list.is_empty() {
                return Err(invalid(
                    "spec.schedule.steps",
                    "must list at least one step",
                ));
            }
            let mut prev = 0;
            for (i, &w) in list.iter().enumerate() {
                if !(1..=100).contains(&w) {
                    return Err(invalid(
                        format!("spec.schedule.steps[{i}]"),
                        "must be 1..=100",
                    ));
                }
                if w <= prev {
                    return Err(invalid(
                        format!("spec.schedule.steps[{i}]"),
                        format!("{w} is not above the previous step {prev}: steps must increase"),
                    ));
                }
                prev = w;
            }
            Ok(list.iter().map(|w| w * 100).collect())
        }
        (Some(step), None) => {
            if !(1..=100).contains(&step) {
                return Err(invalid("spec.schedule.stepWeight", "must be 1..=100"));
            }
            let max = max_weight.unwrap_or(DEFAULT_MAX_WEIGHT);
            if !(step..=100).contains(&max) {
                return Err(invalid(
                    "spec.schedule.maxWeight",
                    format!("must be {step}..=100 (at least stepWeight)"),
                ));
            }
            // stepWeight, 2×stepWeight, … while below maxWeight, then maxWeight itself.
            let mut out: Vec<u32> = (1..).map(|k| k * step).take_while(|&w| w < max).collect();
            out.push(max);
            Ok(out.into_iter().map(|w| w * 100).collect())
        }
    }
}

fn pauses(list: &[PauseSpec], n_steps: usize) -> Result<Vec<Option<Pause>>, ValidationError> {
    let mut out = vec![None; n_steps];
    for (i, p) in list.iter().enumerate() {
        let f = format!("spec.schedule.pauses[{i}]");
        let idx = p.step as usize;
        if idx >= n_steps {
            return Err(invalid(
                format!("{f}.step"),
                format!("{} is past the last step (there are {n_steps})", p.step),
            ));
        }
        if out[idx].is_some() {
            return Err(invalid(
                format!("{f}.step"),
                format!("step {idx} has a pause already"),
            ));
        }
        out[idx] = Some(match &p.duration {
            Some(d) => Pause::For(duration(&format!("{f}.duration"), d)?),
            None => Pause::UntilResumed,
        });
    }
    Ok(out)
}

/// `spec.predictions` → the filter's `predictions`; the rest of its checking is the filter's own
/// (run on the whole rendered policy).
fn raw_predictions(p: &PredictionsSpec) -> Result<RawPredictions, ValidationError> {
    let format = match p.format.as_deref() {
        None | Some("auto") => Format::Auto,
        Some("tfserving") => Format::Tfserving,
        Some("kserve") => Format::Kserve,
        Some(other) => {
            return Err(invalid(
                "spec.predictions.format",
                format!("{other:?} is not one of auto, tfserving, kserve"),
            ))
        }
    };
    if let Some(t) = p.positive_threshold {
        if !(0.0..=1.0).contains(&t) {
            // The filter accepts any finite threshold; a score is a probability, so outside
            // [0, 1] every prediction would be positive or none would.
            return Err(invalid(
                "spec.predictions.positiveThreshold",
                format!("{t} is not a score in [0, 1]"),
            ));
        }
    }
    Ok(RawPredictions {
        format,
        output: p.output.clone(),
        class_index: p.class_index.map(|i| i as usize),
        positive_threshold: p.positive_threshold,
        max_body_bytes: p.max_body_bytes,
    })
}

/// The filter policy, variants `[stable, canary]` in that order (the last-listed variant owns the
/// top of the hash range, so users on the canary stay there as it grows), both at weight 0.
fn filter_template(name: &str, spec: &CanaryPolicySpec, stable: &str, canary: &str) -> RawPolicy {
    let r = &spec.routing;
    RawPolicy {
        name: name.to_owned(),
        // Known only from the metadata; `render` sets it.
        namespace: None,
        // Set by `render` while the route mirrors to the canary.
        shadow: None,
        hosts: spec.target.hosts.clone(),
        model: spec.target.model.clone(),
        variants: vec![
            mlcanary_filter::config::RawVariant {
                name: stable.to_owned(),
                weight_bp: 0,
            },
            mlcanary_filter::config::RawVariant {
                name: canary.to_owned(),
                weight_bp: 0,
            },
        ],
        sticky: r.sticky.as_ref().map(|s| RawSticky {
            header: s.header.clone(),
            cookie: s.cookie.clone(),
            salt: s.salt.clone(),
            assign_cookie: s.assign_cookie,
            cookie_max_age_s: None,
        }),
        rules: r
            .rules
            .iter()
            .map(|rule| RawRule {
                match_: RawMatch {
                    header: rule.match_.header.clone(),
                    cookie: rule.match_.cookie.clone(),
                    query: rule.match_.query.clone(),
                    exact: rule.match_.exact.clone(),
                    prefix: rule.match_.prefix.clone(),
                    regex: rule.match_.regex.clone(),
                    one_of: rule.match_.one_of.clone(),
                },
                variant: rule.variant.clone(),
            })
            .collect(),
        segment: r.segment.as_ref().map(|s| RawSegment {
            header: s.header.clone(),
            values: s.values.clone(),
        }),
        override_: None,
        predictions: None,
        // Needs the keys, which only an adapter can read: `render` sets it.
        feedback: None,
    }
}

/// Translate the filter's error path (`policies[0].sticky.assign_cookie`) into the spec's
/// (`spec.routing.sticky.assignCookie`), keeping the filter's reason word for word.
fn from_filter_error(e: ConfigError) -> ValidationError {
    match e {
        ConfigError::Json(m) => invalid("spec.routing", m),
        ConfigError::Invalid { field, reason } => {
            let rest = field.strip_prefix("policies[0]").unwrap_or(&field);
            let rest = rest.strip_prefix('.').unwrap_or(rest);
            let mapped = match rest {
                "" => "spec".to_owned(),
                "name" => "metadata.name".to_owned(),
                "model" => "spec.target.model".to_owned(),
                "variants[0].name" => "spec.target.stableSubset".to_owned(),
                "variants[1].name" => "spec.target.canarySubset".to_owned(),
                r if r.starts_with("hosts") => format!("spec.target.{r}"),
                r if r.starts_with("sticky")
                    || r.starts_with("rules")
                    || r.starts_with("segment") =>
                {
                    format!("spec.routing.{}", camel_case(r))
                }
                r => format!("spec.{}", camel_case(r)),
            };
            invalid(mapped, reason)
        }
    }
}

/// `assign_cookie` → `assignCookie`, `one_of` → `oneOf` (path separators kept).
fn camel_case(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut upper = false;
    for c in path.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}
