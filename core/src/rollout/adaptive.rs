//! The adaptive schedule: the next canary weight follows the evidence instead of a fixed list.
//!
//! Each analysis interval is classified into one [`Evidence`]:
//! - **Wide**: every check passes with a margin of at least `wideMargin` and at least
//!   `sampleFactor` × the check's minimum sample → the weight is multiplied by `growthFactor`
//!   (the increase bounded to `[minStep, maxStep]`);
//! - **Pass**: every check passes, not all widely → grow by `minStep`;
//! - **Marginal**: every check passes but one has less than `marginalMargin` headroom → step
//!   *back* by one growth step (never below the first weight: 0 is a rollback, not a step);
//! - **Inconclusive** (or no data) → hold (the rollout's deadline rules apply);
//! - **Fail** below `failureThreshold` → step back like a marginal pass; at the threshold the
//!   rollout rolls back to 0 (the state machine's rule, unchanged).
//!
//! Every weight stays within `[initial, maxWeight]`; at `maxWeight` a (non-marginal) pass promotes,
//! or waits at the manual gate — the same as the last fixed step.
//!
//! **Margin** (headroom to the limit, 1 = none of the allowance used, 0 = at the limit, negative =
//! past it), per check kind: absolute limits `1 − value / limit` (error rate, latency `maxMs`, PSI,
//! positive-rate shift); limits relative to stable measure the *excess* allowance, `(limit −
//! canary) / (limit − stable)` (latency `maxRatioToStable`, cpu, memory), so a canary equal to
//! stable has margin 1; custom checks `|threshold − value| / |threshold|` on the passing side.
//! Segment disparity has no single number in its verdict: it never counts as wide.
//!
//! A **sequential** check (one whose verdict carries an anytime-valid interval, e.g. the error
//! rate) is never marginal — its failure test already bounds the risk of going on — and is wide
//! once it has excluded harm beyond the policy's margin.

use crate::analysis::{Outcome, Verdict};
use crate::policy::validated::{
    Adaptive, Check, CheckKind, LatencyBound, ShiftBound, ValidatedPolicy,
};
use crate::weights::Weights;

/// What one interval's verdicts say, for the adaptive schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evidence {
    Wide,
    Pass,
    Marginal,
    Inconclusive,
    Fail,
}

/// The smallest sample the check itself needs before a verdict (0: none applies).
fn check_min_sample(check: &Check, policy: &ValidatedPolicy) -> u64 {
    match &check.kind {
        CheckKind::ErrorRate { .. } | CheckKind::Latency { .. } => policy.min_requests,
        CheckKind::PredictionDrift { min_samples, .. }
        | CheckKind::PositiveRate { min_samples, .. } => *min_samples,
        CheckKind::SegmentDisparity {
            min_samples_per_segment,
            ..
        } => *min_samples_per_segment,
        CheckKind::Resource(r) => {
            if r.resource == crate::policy::validated::Resource::Cpu {
                policy.min_requests
            } else {
                0
            }
        }
        // Labels arrive late, whatever the weight: they hold no step of their own.
        CheckKind::Custom { .. }
        | CheckKind::LabelRate { .. }
        | CheckKind::EqualizedOdds { .. } => 0,
    }
}

/// `1 − value / limit` for "value ≤ limit"; a zero limit is all-or-nothing.
fn absolute(value: f64, limit: f64) -> f64 {
    if limit > 0.0 {
        1.0 - value / limit
    } else if value <= limit {
        1.0
    } else {
        -1.0
    }
}

/// `(limit − canary) / (limit − stable)`: the share of the allowed excess over stable not used.
fn relative(canary: f64, stable: f64, limit: f64) -> f64 {
    let allowance = limit - stable;
    if allowance > 0.0 {
        ((limit - canary) / allowance).min(1.0)
    } else if canary <= limit {
        1.0
    } else {
        -1.0
    }
}

/// Headroom of a verdict to its check's limit (see the module doc); `None` when the verdict has
/// no number to measure it by.
pub fn margin(check: &Check, v: &Verdict) -> Option<f64> {
    let m = match &check.kind {
        CheckKind::ErrorRate { max, .. } => absolute(v.canary?, *max),
        CheckKind::Latency { bound, .. } => match bound {
            LatencyBound::MaxMs(ms) => absolute(v.canary?, *ms),
            LatencyBound::RatioToStable(_) => relative(v.canary?, v.stable?, v.threshold?),
        },
        CheckKind::PredictionDrift { max_psi, .. } => absolute(v.canary?, *max_psi),
        CheckKind::PositiveRate { bound, .. } => {
            let (c, s) = (v.canary?, v.stable?);
            match bound {
                ShiftBound::Absolute(max) => absolute((c - s).abs(), *max),
                ShiftBound::Relative(max) if s > 0.0 => absolute((c - s).abs() / s, *max),
                ShiftBound::Relative(_) => return None,
            }
        }
        CheckKind::Resource(_) => relative(v.canary?, v.stable?, v.threshold?),
        CheckKind::Custom {
            comparison,
            threshold,
            ..
        } => {
            let value = v.canary?;
            if *threshold == 0.0 {
                return None;
            }
            let m = (threshold - value).abs() / threshold.abs();
            if comparison.holds(value, *threshold) {
                m
            } else {
                -m
            }
        }
        CheckKind::SegmentDisparity { .. }
        | CheckKind::LabelRate { .. }
        | CheckKind::EqualizedOdds { .. } => return None,
    };
    m.is_finite().then_some(m)
}

/// Classify one interval's verdicts (`None` / empty: no data).
pub fn classify(verdicts: Option<&[Verdict]>, policy: &ValidatedPolicy, a: &Adaptive) -> Evidence {
    let Some(verdicts) = verdicts.filter(|v| !v.is_empty()) else {
        return Evidence::Inconclusive;
    };
    if verdicts.iter().any(|v| v.outcome == Outcome::Fail) {
        return Evidence::Fail;
    }
    if verdicts.iter().any(|v| v.outcome == Outcome::Inconclusive) {
        return Evidence::Inconclusive;
    }
    let mut all_wide = true;
    for v in verdicts {
        if v.interval.is_some() {
            // A sequential check: its failure test already bounds the risk, so a pass is never
            // "narrow"; it is wide once harm beyond the margin is excluded.
            all_wide &= v.harm_excluded;
            continue;
        }
        let check = policy.checks.iter().find(|c| c.name == v.check);
        let m = check.and_then(|c| margin(c, v));
        if m.is_some_and(|m| m < a.marginal_margin) {
            return Evidence::Marginal;
        }
        let enough = check.is_some_and(|c| {
            let need = (check_min_sample(c, policy) as f64 * a.sample_factor).ceil() as u64;
            v.n_canary >= need && (need == 0 || v.n_stable >= need)
        });
        if !(enough && m.is_some_and(|m| m >= a.wide_margin)) {
            all_wide = false;
        }
    }
    if all_wide {
        Evidence::Wide
    } else {
        Evidence::Pass
    }
}

/// The next weight from `current_bp` on `evidence`. Never above `max_bp`, never below
/// `min(current, initial)`, never more than `max_step_bp` away; grows only on `Wide` / `Pass`.
pub fn next_weight(current_bp: u32, evidence: Evidence, a: &Adaptive) -> u32 {
    let cur = current_bp.min(Weights::TOTAL_BP);
    let growth_step = |w: u32| -> u32 {
        let raw = (f64::from(w) * (a.growth_factor - 1.0)).round();
        let raw = if raw.is_finite() && raw > 0.0 {
            raw.min(f64::from(Weights::TOTAL_BP)) as u32
        } else {
            0
        };
        raw.clamp(a.min_step_bp, a.max_step_bp)
    };
    match evidence {
        Evidence::Inconclusive => cur,
        Evidence::Wide => cur.saturating_add(growth_step(cur)).min(a.max_bp).max(cur),
        Evidence::Pass => cur.saturating_add(a.min_step_bp).min(a.max_bp).max(cur),
        Evidence::Marginal | Evidence::Fail => {
            // One growth step back: the step that (roughly) led here.
            let back = growth_step((f64::from(cur) / a.growth_factor).round() as u32);
            let floor = a.initial_bp.min(cur);
            cur.saturating_sub(back).max(floor)
        }
    }
}

#[cfg(test)]
mod tests;
