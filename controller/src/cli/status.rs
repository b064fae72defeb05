//! What `mlcanary status` prints, as pure functions of [`PolicyView`]s: the table, the progress bar
//! of the steps and the one-policy detail. No I/O, so every line is tested as text.

use std::fmt::Write as _;

use super::client::PolicyView;
use crate::policy::{Phase, VerdictStatus};

/// A filled step of the progress bar.
pub const FILLED: char = '■';
/// A step not reached yet.
pub const EMPTY: char = '□';

/// Basis points as a percent: `2500` → `25%`, `250` → `2.5%`.
pub fn pct(bp: u32) -> String {
    format!("{}%", f64::from(bp) / 100.0)
}

fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Pending => "Pending",
        Phase::Progressing => "Progressing",
        Phase::Paused => "Paused",
        Phase::Promoted => "Promoted",
        Phase::RolledBack => "RolledBack",
        Phase::Failed => "Failed",
    }
}

/// The steps as a bar, `[■■■□] 25% → 50%`: one box per step, filled up to the current one, then the
/// weight now and the next one (`100%` after the last step: promotion).
pub fn progress_bar(v: &PolicyView) -> String {
    let n = v.steps_bp.len();
    let reached = match v.phase {
        Phase::Promoted => n,
        Phase::Pending | Phase::RolledBack | Phase::Failed => 0,
        Phase::Progressing | Phase::Paused => v.step_index.map_or(0, |i| (i as usize + 1).min(n)),
    };
    let mut bar = String::with_capacity(n * 3 + 2);
    bar.push('[');
    bar.extend(std::iter::repeat_n(FILLED, reached));
    bar.extend(std::iter::repeat_n(EMPTY, n - reached));
    bar.push(']');
    let now = pct(v.canary_weight_bp);
    let tail = match v.phase {
        Phase::Promoted => format!("{now} promoted"),
        Phase::RolledBack => format!("{now} rolled back"),
        Phase::Failed => "invalid spec: nothing applied".to_owned(),
        _ => {
            let next = match v.step_index {
                None => v.steps_bp.first().copied(),
                Some(i) => v.steps_bp.get(i as usize + 1).copied(),
            };
            let next = match next {
                Some(bp) => pct(bp),
                None => "100% (on promote)".to_owned(),
            };
            let paused = if v.phase == Phase::Paused {
                " (paused)"
            } else {
                ""
            };
            format!("{now} → {next}{paused}")
        }
    };
    format!("{bar} {tail}")
}

/// `errors=pass p99=inconclusive`, or `-` before the first analysis.
pub fn verdict_summary(verdicts: &[VerdictStatus]) -> String {
    if verdicts.is_empty() {
        return "-".to_owned();
    }
    verdicts
        .iter()
        .map(|v| format!("{}={}", v.name, v.verdict))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `3/4`, `shadow` in the shadow phase, or `-` before the first step.
fn step(v: &PolicyView) -> String {
    if v.shadow_mirror_bp.is_some() {
        return "shadow".to_owned();
    }
    match v.step_index {
        Some(i) if !v.steps_bp.is_empty() => format!("{}/{}", i + 1, v.steps_bp.len()),
        _ => "-".to_owned(),
    }
}

/// Left-aligned columns, two spaces apart, no trailing spaces.
fn columns(rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..rows.first().map_or(0, Vec::len))
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                let pad = widths[c].saturating_sub(cell.chars().count()) + 2;
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The table of every policy, then one progress bar per policy.
pub fn table(views: &[PolicyView]) -> String {
    let mut rows = vec![[
        "NAMESPACE",
        "NAME",
        "PHASE",
        "CANARY",
        "STEP",
        "FAILED",
        "LAST VERDICTS",
    ]
    .map(str::to_owned)
    .to_vec()];
    for v in views {
        rows.push(vec![
            v.namespace.clone(),
            v.name.clone(),
            phase_name(v.phase).to_owned(),
            pct(v.canary_weight_bp),
            step(v),
            format!("{}/{}", v.failed_checks, v.failure_threshold),
            verdict_summary(&v.last_verdicts),
        ]);
    }
    let mut out = columns(&rows);
    out.push('\n');
    let bars: Vec<Vec<String>> = views
        .iter()
        .map(|v| vec![format!("{}/{}", v.namespace, v.name), progress_bar(v)])
        .collect();
    out.push_str(&columns(&bars));
    out
}

fn num(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_owned(), |x| format!("{x:.4}"))
}

/// One policy in full: the table row and bar, each check's numbers, the condition, recent history.
pub fn detail(v: &PolicyView) -> String {
    let mut out = table(std::slice::from_ref(v));
    if !v.last_verdicts.is_empty() {
        out.push('\n');
        let mut rows = vec![[
            "CHECK", "VERDICT", "CANARY", "STABLE", "LIMIT", "INTERVAL", "N (C/S)", "P",
        ]
        .map(str::to_owned)
        .to_vec()];
        for c in &v.last_verdicts {
            rows.push(vec![
                c.name.clone(),
                c.verdict.clone(),
                num(c.canary),
                num(c.stable),
                num(c.threshold),
                c.interval.map_or_else(
                    || "-".to_owned(),
                    |[lo, hi]| format!("[{}, {}]", num(Some(lo)), num(Some(hi))),
                ),
                format!("{}/{}", c.n_canary, c.n_stable),
                c.p_value
                    .map_or_else(|| "-".to_owned(), |p| format!("{p:.3}")),
            ]);
        }
        out.push_str(&columns(&rows));
        for c in v.last_verdicts.iter().filter(|c| !c.message.is_empty()) {
            let _ = writeln!(out, "  {}: {}", c.name, c.message);
        }
    }
    if let Some(c) = v.conditions.iter().find(|c| c.type_ == "Progressing") {
        let _ = writeln!(out, "\n{} ({}): {}", c.type_, c.reason, c.message);
    }
    if !v.history.is_empty() {
        out.push_str("\nHISTORY\n");
        let start = v.history.len().saturating_sub(5);
        for h in &v.history[start..] {
            let _ = writeln!(
                out,
                "  {}  {} → {}  {}",
                h.time,
                pct(h.from_weight_bp),
                pct(h.to_weight_bp),
                h.reason
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::HistoryEntry;

    fn view(phase: Phase, bp: u32, step: Option<u32>) -> PolicyView {
        PolicyView {
            name: "fraud-model".into(),
            namespace: "ml".into(),
            phase,
            canary_weight_bp: bp,
            step_index: step,
            steps_bp: vec![500, 1000, 2500, 5000],
            failed_checks: 1,
            failure_threshold: 2,
            ..Default::default()
        }
    }

    #[test]
    fn a_shadow_is_its_own_step() {
        let mut v = view(Phase::Progressing, 0, None);
        assert_eq!(step(&v), "-");
        v.shadow_mirror_bp = Some(5000);
        assert_eq!(step(&v), "shadow");
    }

    #[test]
    fn the_bar_fills_up_to_the_current_step_and_names_the_next() {
        let cases = [
            (view(Phase::Pending, 0, None), "[□□□□] 0% → 5%"),
            (view(Phase::Progressing, 500, Some(0)), "[■□□□] 5% → 10%"),
            (view(Phase::Progressing, 2500, Some(2)), "[■■■□] 25% → 50%"),
            (
                view(Phase::Paused, 1000, Some(1)),
                "[■■□□] 10% → 25% (paused)",
            ),
            (
                view(Phase::Progressing, 5000, Some(3)),
                "[■■■■] 50% → 100% (on promote)",
            ),
            (
                view(Phase::Promoted, 10000, Some(3)),
                "[■■■■] 100% promoted",
            ),
            (view(Phase::RolledBack, 0, Some(2)), "[□□□□] 0% rolled back"),
            (
                view(Phase::Failed, 0, None),
                "[□□□□] invalid spec: nothing applied",
            ),
        ];
        for (v, want) in cases {
            assert_eq!(progress_bar(&v), want, "{:?}", v.phase);
        }
        let mut odd = view(Phase::Progressing, 250, Some(0));
        odd.steps_bp = vec![250, 750];
        assert_eq!(progress_bar(&odd), "[■□] 2.5% → 7.5%");
        // A step index past the steps (a spec edited under a running rollout) never overflows.
        let mut past = view(Phase::Progressing, 5000, Some(9));
        past.steps_bp = vec![1000];
        assert_eq!(progress_bar(&past), "[■] 50% → 100% (on promote)");
    }

    #[test]
    fn the_table_aligns_columns_and_summarises_verdicts() {
        let mut a = view(Phase::Progressing, 2500, Some(2));
        a.last_verdicts = vec![
            VerdictStatus {
                name: "errors".into(),
                verdict: "pass".into(),
                ..Default::default()
            },
            VerdictStatus {
                name: "p99".into(),
                verdict: "inconclusive".into(),
                ..Default::default()
            },
        ];
        let mut b = view(Phase::Pending, 0, None);
        b.name = "churn".into();
        b.namespace = "default".into();
        b.failed_checks = 0;
        let got = table(&[a, b]);
        let want = "\
NAMESPACE  NAME         PHASE        CANARY  STEP  FAILED  LAST VERDICTS
ml         fraud-model  Progressing  25%     3/4   1/2     errors=pass p99=inconclusive
default    churn        Pending      0%      -     0/2     -

ml/fraud-model  [■■■□] 25% → 50%
default/churn   [□□□□] 0% → 5%
";
        assert_eq!(got, want);
    }

    #[test]
    fn the_detail_shows_numbers_condition_and_recent_history() {
        let mut v = view(Phase::Progressing, 1000, Some(1));
        v.last_verdicts = vec![VerdictStatus {
            name: "errors".into(),
            verdict: "fail".into(),
            canary: Some(0.05),
            stable: Some(0.001),
            threshold: Some(0.01),
            n_canary: 400,
            n_stable: 3600,
            p_value: Some(0.0004),
            message: "canary error rate above 1%".into(),
            interval: Some([0.031, 0.074]),
            ..Default::default()
        }];
        v.history = (0..7)
            .map(|i| HistoryEntry {
                time: format!("2025-11-25T14:4{i}:00Z"),
                from_weight_bp: i * 100,
                to_weight_bp: (i + 1) * 100,
                reason: "analysis passed".into(),
            })
            .collect();
        let d = detail(&v);
        assert!(
            d.contains(
                "errors  fail     0.0500  0.0010  0.0100  [0.0310, 0.0740]  400/3600  0.000\n"
            ),
            "{d}"
        );
        assert!(d.contains("  errors: canary error rate above 1%\n"), "{d}");
        assert!(d.contains("HISTORY\n"), "{d}");
        assert!(!d.contains("14:41:00Z"), "only the last five entries: {d}");
        assert!(
            d.contains("  2025-11-25T14:46:00Z  6% → 7%  analysis passed\n"),
            "{d}"
        );
    }
}
