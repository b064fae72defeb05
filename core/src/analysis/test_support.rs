//! For the checks' tests: one pair of windows as a rollout's whole evidence.

use super::Observations;
use crate::window::{Evidence, VariantWindow, Window};

/// `canary` / `stable` recorded as the only window, at 5 % (stable's dispersion not yet measured:
/// the judge assumes its prior).
pub struct Once {
    pub evidence: Evidence,
    pub window: Window,
}

impl Once {
    pub fn new(canary: &VariantWindow, stable: &VariantWindow) -> Once {
        let window = Window {
            canary: canary.clone(),
            stable: stable.clone(),
            ..Default::default()
        };
        let mut evidence = Evidence::default();
        evidence.record(500, &window);
        Once { evidence, window }
    }

    pub fn obs(&self) -> Observations<'_> {
        Observations {
            evidence: &self.evidence,
            weight_bp: 500,
            latest: &self.window,
        }
    }
}
