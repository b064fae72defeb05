//! Validation of the newer spec parts: the adaptive schedule (`spec.schedule.adaptive`), the shadow
//! phase (`spec.schedule.shadow`), resource checks (`cpu`, `memory`) and webhooks (`spec.webhooks`). Same rules as [`super::validate`]:
//! every error names the field as the user wrote it.

use std::time::Duration;

use super::validate::{duration, invalid};
use super::validated::{
    Adaptive, CheckKind, HookKind, Resource, ResourceCheck, Shadow, ValidationError, Webhook,
    DEFAULT_ADAPTIVE_MAX_WEIGHT, DEFAULT_GROWTH_FACTOR, DEFAULT_MARGINAL_MARGIN, DEFAULT_MAX_STEP,
    DEFAULT_MIN_STEP, DEFAULT_POD_SELECTOR, DEFAULT_RETRIES, DEFAULT_SAMPLE_FACTOR,
    DEFAULT_TIMEOUT, DEFAULT_WIDE_MARGIN, MAX_RETRIES,
};
use super::{CheckSpec, ScheduleSpec, WebhookSpec};

fn percent(field: &str, v: u32) -> Result<u32, ValidationError> {
    if !(1..=100).contains(&v) {
        return Err(invalid(field, format!("{v} is not a percent in 1..=100")));
    }
    Ok(v)
}

/// `spec.schedule.shadow`, or `None` for no shadow phase.
pub fn shadow(s: &ScheduleSpec) -> Result<Option<Shadow>, ValidationError> {
    let Some(sh) = &s.shadow else {
        return Ok(None);
    };
    let f = "spec.schedule.shadow";
    if !(sh.percent.is_finite() && sh.percent > 0.0 && sh.percent <= 100.0) {
        return Err(invalid(
            format!("{f}.percent"),
            format!("{} is not a percent in (0, 100]", sh.percent),
        ));
    }
    // Basis points, the filter's and Envoy's unit; at least 1 bp of a positive percent.
    let mirror_bp = ((sh.percent * 100.0).round() as u32).clamp(1, 10_000);
    let duration = sh
        .duration
        .as_deref()
        .map(|d| duration(&format!("{f}.duration"), d))
        .transpose()?;
    if let Some(r) = sh.max_rps {
        if !(r.is_finite() && r > 0.0) {
            return Err(invalid(
                format!("{f}.maxRps"),
                format!("{r} is not a positive rate"),
            ));
        }
    }
    Ok(Some(Shadow {
        mirror_bp,
        duration,
        max_rps: sh.max_rps,
    }))
}

/// `spec.schedule.adaptive`, or `None` for fixed steps.
pub fn adaptive(s: &ScheduleSpec) -> Result<Option<Adaptive>, ValidationError> {
    let Some(a) = &s.adaptive else {
        return Ok(None);
    };
    let f = "spec.schedule.adaptive";
    for (set, key) in [
        (s.steps.is_some(), "steps"),
        (s.step_weight.is_some(), "stepWeight"),
        (s.max_weight.is_some(), "maxWeight"),
        (!s.pauses.is_empty(), "pauses"),
    ] {
        if set {
            return Err(invalid(
                format!("spec.schedule.{key}"),
                "does not go with `adaptive` (the evidence sets the weights)",
            ));
        }
    }
    let min_step = percent(
        &format!("{f}.minStepWeight"),
        a.min_step_weight.unwrap_or(DEFAULT_MIN_STEP),
    )?;
    let max_step = percent(
        &format!("{f}.maxStepWeight"),
        a.max_step_weight.unwrap_or(DEFAULT_MAX_STEP.max(min_step)),
    )?;
    if max_step < min_step {
        return Err(invalid(
            format!("{f}.maxStepWeight"),
            format!("{max_step} is below minStepWeight {min_step}"),
        ));
    }
    let max = percent(
        &format!("{f}.maxWeight"),
        a.max_weight.unwrap_or(DEFAULT_ADAPTIVE_MAX_WEIGHT),
    )?;
    let initial = percent(
        &format!("{f}.initialWeight"),
        a.initial_weight.unwrap_or(min_step.min(max)),
    )?;
    if initial > max {
        return Err(invalid(
            format!("{f}.initialWeight"),
            format!("{initial} is above maxWeight {max}"),
        ));
    }
    let growth = a.growth_factor.unwrap_or(DEFAULT_GROWTH_FACTOR);
    if !(growth.is_finite() && growth > 1.0 && growth <= 10.0) {
        return Err(invalid(
            format!("{f}.growthFactor"),
            format!("{growth} is not in (1, 10]"),
        ));
    }
    let wide = a.wide_margin.unwrap_or(DEFAULT_WIDE_MARGIN);
    let marginal = a.marginal_margin.unwrap_or(DEFAULT_MARGINAL_MARGIN);
    if !(wide.is_finite() && wide > 0.0 && wide <= 1.0) {
        return Err(invalid(
            format!("{f}.wideMargin"),
            format!("{wide} is not in (0, 1]"),
        ));
    }
    if !(marginal.is_finite() && (0.0..wide).contains(&marginal)) {
        return Err(invalid(
            format!("{f}.marginalMargin"),
            format!("{marginal} is not in [0, wideMargin {wide})"),
        ));
    }
    let sample_factor = a.sample_factor.unwrap_or(DEFAULT_SAMPLE_FACTOR);
    if !(sample_factor.is_finite() && sample_factor >= 1.0) {
        return Err(invalid(
            format!("{f}.sampleFactor"),
            format!("{sample_factor} is not ≥ 1"),
        ));
    }
    Ok(Some(Adaptive {
        initial_bp: initial * 100,
        min_step_bp: min_step * 100,
        max_step_bp: max_step * 100,
        max_bp: max * 100,
        growth_factor: growth,
        wide_margin: wide,
        marginal_margin: marginal,
        sample_factor,
    }))
}

/// `spec.webhooks`.
pub fn webhooks(list: &[WebhookSpec]) -> Result<Vec<Webhook>, ValidationError> {
    let mut out: Vec<Webhook> = Vec::with_capacity(list.len());
    for (i, w) in list.iter().enumerate() {
        let f = format!("spec.webhooks[{i}]");
        if w.name.is_empty() {
            return Err(invalid(format!("{f}.name"), "must not be empty"));
        }
        if out.iter().any(|h| h.name == w.name) {
            return Err(invalid(
                format!("{f}.name"),
                format!("{:?} is listed twice", w.name),
            ));
        }
        let kind = HookKind::parse(&w.type_).ok_or_else(|| {
            invalid(
                format!("{f}.type"),
                format!(
                    "{:?} is not one of preRollout, step, confirmPromotion, rollback, event",
                    w.type_
                ),
            )
        })?;
        let scheme_ok = w
            .url
            .split_once("://")
            .is_some_and(|(s, rest)| (s == "http" || s == "https") && !rest.is_empty());
        if !scheme_ok {
            return Err(invalid(
                format!("{f}.url"),
                format!("{:?} is not an http:// or https:// URL", w.url),
            ));
        }
        let timeout: Duration = match &w.timeout {
            Some(t) => duration(&format!("{f}.timeout"), t)?,
            None => DEFAULT_TIMEOUT,
        };
        let retries = w.retries.unwrap_or(DEFAULT_RETRIES);
        if retries > MAX_RETRIES {
            return Err(invalid(
                format!("{f}.retries"),
                format!("{retries} is more than {MAX_RETRIES}"),
            ));
        }
        out.push(Webhook {
            name: w.name.clone(),
            kind,
            url: w.url.clone(),
            timeout,
            retries,
        });
    }
    Ok(out)
}

/// A `cpu` / `memory` check; `None` when `c` is another kind.
pub fn resource_check(f: &str, c: &CheckSpec) -> Result<Option<CheckKind>, ValidationError> {
    let (key, resource, spec) = match (&c.cpu, &c.memory) {
        (Some(s), _) => ("cpu", Resource::Cpu, s),
        (None, Some(s)) => ("memory", Resource::Memory, s),
        (None, None) => return Ok(None),
    };
    let r = spec.max_ratio_to_stable;
    if !(r.is_finite() && r >= 1.0) {
        return Err(invalid(
            format!("{f}.{key}.maxRatioToStable"),
            format!("{r} is not ≥ 1 (1.3 = 30 % more than stable)"),
        ));
    }
    let pod_selector = match &spec.pod_selector {
        Some(s) => {
            if !s.contains("{{variant}}") {
                return Err(invalid(
                    format!("{f}.{key}.podSelector"),
                    "must contain {{variant}} (it selects one variant's pods at a time)",
                ));
            }
            if s.contains('}') && s.replace("{{variant}}", "").contains(['{', '}']) {
                return Err(invalid(
                    format!("{f}.{key}.podSelector"),
                    "label matchers only, without braces, e.g. label_version=\"{{variant}}\"",
                ));
            }
            s.clone()
        }
        None => DEFAULT_POD_SELECTOR.to_owned(),
    };
    Ok(Some(CheckKind::Resource(ResourceCheck {
        resource,
        max_ratio: r,
        pod_selector,
    })))
}
