//! The shadow phase (`spec.schedule.shadow`): before the first live step the route mirrors a share
//! of requests to the canary while every user keeps getting stable's answers, and the judge
//! compares the shadow's answers (measured at the canary's inbound side) with stable's.
//!
//! Rules, on top of those of [`super::step`]:
//! - `Pending` with a shadow enters it (`status.shadow`, canary weight 0, the `preRollout` gate
//!   first) instead of the first step.
//! - A passing analysis goes live (the first step, [`RolloutEvent::ShadowPassed`]) once the
//!   shadow's `duration` is over — without one, once every check has also excluded harm beyond the
//!   margin (the shadow is conclusive). Until then it holds ([`Hold::Shadow`]).
//! - Failures count as at a step; at `failureThreshold` the rollout is rolled back from the shadow:
//!   the mirror stops and no user ever got a canary answer. No data holds, and the progress
//!   deadline runs, as at a step.
//! - `maxRps` caps the mirrored share at every interval from stable's observed request rate
//!   ([`capped`]): Envoy's mirror takes a share, not a rate.
//!
//! The shadow's windows are the judge's evidence at weight 0 (no user traffic), one row of the same
//! anytime-valid tests the live steps add to: one error budget for the whole rollout.

use super::{rfc3339, Hold, Next, RolloutEvent, StepOutput};
use crate::analysis::Verdict;
use crate::policy::validated::Shadow;
use crate::policy::{Phase, ShadowStatus, ValidatedPolicy};
use crate::weights::Weights;

impl Next {
    /// Leave `Pending` for the shadow phase.
    pub(super) fn enter_shadow(&mut self, sh: &Shadow) {
        self.s.shadow = Some(ShadowStatus {
            mirror_bp: sh.mirror_bp,
            since: rfc3339(self.now),
        });
        self.s.step_index = None;
        self.s.last_progress_time = Some(rfc3339(self.now));
        self.phase(
            Phase::Progressing,
            "Shadow",
            format!(
                "shadow: {:.2}% of requests mirrored to the canary; every answer users get is \
                 stable's",
                f64::from(sh.mirror_bp) / 100.0
            ),
        );
        self.events.push(RolloutEvent::ShadowStarted {
            mirror_bp: sh.mirror_bp,
        });
    }

    /// A passing analysis in shadow: the first live step, or hold.
    pub(super) fn shadow_passed(&mut self, policy: &ValidatedPolicy, verdicts: Option<&[Verdict]>) {
        let since = self
            .s
            .shadow
            .as_ref()
            .and_then(|s| super::parse_time(Some(&s.since)))
            .unwrap_or(self.now);
        let open = super::harm_not_excluded(verdicts);
        // A shadow taken out of the spec mid-phase ends at the next pass.
        let waiting = match policy.shadow.map(|s| s.duration) {
            None => None,
            Some(Some(d)) => (self.now < since + d).then(|| {
                format!(
                    "shadow passed; it lasts until {}",
                    humantime::format_rfc3339_seconds(since + d)
                )
            }),
            Some(None) => (!open.is_empty()).then(|| {
                format!(
                    "shadow passed; harm beyond the margin not yet excluded by {}",
                    open.join(", ")
                )
            }),
        };
        match waiting {
            Some(message) => {
                self.phase(Phase::Progressing, "Shadow", message);
                self.events.push(RolloutEvent::Held(Hold::Shadow));
            }
            None => {
                self.s.shadow = None;
                self.phase(
                    Phase::Progressing,
                    "ShadowPassed",
                    "shadow passed; first live step".into(),
                );
                let before = self.events.len();
                self.enter_step(policy, 0, "shadow passed");
                // The first step's event says it came from the shadow (and asks no `preRollout`
                // gate again: that opened before the shadow).
                for e in &mut self.events[before..] {
                    if let RolloutEvent::Started { to_bp } = *e {
                        *e = RolloutEvent::ShadowPassed { to_bp };
                    }
                }
            }
        }
    }
}

/// The mirrored share `maxRps` allows at stable's request rate `stable_rps` (requests per second
/// over the last interval): `percent` when there is no cap or no rate yet, else the largest share
/// whose mirrored rate stays under the cap, at least 1 bp (a shadow with no requests would never
/// conclude; the canary's load is then at most one request in ten thousand).
pub fn mirror_bp(sh: &Shadow, stable_rps: Option<f64>) -> u32 {
    match (sh.max_rps, stable_rps) {
        (Some(cap), Some(rps)) if rps > 0.0 => {
            let allowed = (cap / rps * f64::from(Weights::TOTAL_BP)).floor();
            (allowed.min(f64::from(sh.mirror_bp)) as u32).max(1)
        }
        _ => sh.mirror_bp,
    }
}

/// `out` with its shadow's mirror capped by `maxRps` at `stable_rps` (nothing changes outside the
/// shadow or without a cap).
pub fn capped(
    mut out: StepOutput,
    policy: &ValidatedPolicy,
    stable_rps: Option<f64>,
) -> StepOutput {
    if let (Some(sh), Some(st)) = (&policy.shadow, out.status.shadow.as_mut()) {
        st.mirror_bp = mirror_bp(sh, stable_rps);
        out.weights = out.status.weights();
    }
    out
}

#[cfg(test)]
mod tests;
