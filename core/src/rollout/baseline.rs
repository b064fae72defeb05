//! The `BaselineUnhealthy` condition: raised while stable breaks a check's bound as well (a shared
//! outage, a bad dependency), cleared when it no longer does, with one event when it begins.

use super::{rfc3339, Next, RolloutEvent};
use crate::analysis::Verdict;
use crate::policy::Condition;

impl Next {
    /// Keep the `BaselineUnhealthy` condition in step with `verdicts` (an event when it begins);
    /// `true` while stable breaks some check's bound.
    pub(super) fn baseline(&mut self, verdicts: Option<&[Verdict]>) -> bool {
        let checks: Vec<String> = verdicts
            .unwrap_or_default()
            .iter()
            .filter(|v| v.baseline_unhealthy)
            .map(|v| v.check.clone())
            .collect();
        let unhealthy = !checks.is_empty();
        let was = self
            .s
            .conditions
            .iter()
            .any(|c| c.type_ == BASELINE_UNHEALTHY && c.status == "True");
        if unhealthy == was {
            if let Some(c) = self
                .s
                .conditions
                .iter_mut()
                .find(|c| c.type_ == BASELINE_UNHEALTHY)
            {
                if unhealthy {
                    c.message = baseline_message(&checks);
                }
            }
            return unhealthy;
        }
        if !unhealthy
            && !self
                .s
                .conditions
                .iter()
                .any(|c| c.type_ == BASELINE_UNHEALTHY)
        {
            return false;
        }
        let c = Condition {
            type_: BASELINE_UNHEALTHY.into(),
            status: if unhealthy { "True" } else { "False" }.into(),
            reason: if unhealthy {
                "StableBreaksBound"
            } else {
                "StableWithinBounds"
            }
            .into(),
            message: if unhealthy {
                baseline_message(&checks)
            } else {
                "stable is within every check's bound".into()
            },
            last_transition_time: Some(rfc3339(self.now)),
        };
        self.s.conditions.retain(|c| c.type_ != BASELINE_UNHEALTHY);
        self.s.conditions.push(c);
        if unhealthy {
            self.events.push(RolloutEvent::BaselineUnhealthy { checks });
        }
        unhealthy
    }
}

/// The condition type raised while stable breaks a check's bound as well.
pub const BASELINE_UNHEALTHY: &str = "BaselineUnhealthy";

fn baseline_message(checks: &[String]) -> String {
    format!(
        "stable breaks the bound of {} as well: holding (a shared fault is not the canary's)",
        checks.join(", ")
    )
}
