//! Flagger's real analysis process, the reference (its docs' `request-success-rate` check):
//! every `interval` the canary's success rate over that interval is compared with `min`; a
//! metric with no values counts as a failure; failed checks are counted over the whole analysis
//! and never reset; when `failedChecks ≥ threshold` at the start of an interval the canary is
//! rolled back; when every check passes the weight advances to the next of `stepWeights`, and a
//! pass at the last one promotes.

use crate::sim::{Rng, Stream};
use crate::End;

/// One Flagger configuration.
#[derive(Debug, Clone, Copy)]
pub struct Flagger {
    /// `thresholdRange.min` of request-success-rate, in percent.
    pub min_success: f64,
    pub threshold: u32,
    pub interval_s: f64,
}

impl Flagger {
    pub fn name(&self) -> String {
        format!(
            "flagger (min {}, threshold {}, {} s)",
            self.min_success, self.threshold, self.interval_s
        )
    }

    /// One rollout over `steps` (fractions), for at most `horizon_s`.
    pub fn run(&self, rng: &mut Rng, stream: &Stream, steps: &[f64], horizon_s: f64) -> End {
        let (mut step, mut failed, mut served) = (0usize, 0u32, 0u64);
        let mut t = 0.0;
        while t + self.interval_s <= horizon_s {
            let from = t;
            t += self.interval_s;
            if failed >= self.threshold {
                return End::rolled_back(from, served);
            }
            let w = stream.window(rng, from, t, steps[step]);
            served += w.canary.requests;
            let ok = w.canary.requests > 0 && {
                let success = 100.0 * (1.0 - w.canary.errors as f64 / w.canary.requests as f64);
                success >= self.min_success
            };
            if !ok {
                failed += 1;
            } else if step + 1 < steps.len() {
                step += 1;
            } else {
                return End::promoted(t, served);
            }
        }
        End::held(served)
    }
}
