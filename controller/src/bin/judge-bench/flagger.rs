//! Flagger's real analysis process, the reference (its docs' `request-success-rate` check):
//! every `interval` the canary's success rate over that interval is compared with `min`; a
//! metric with no values counts as a failure; failed checks are counted over the whole analysis
//! and never reset; when `failedChecks ≥ threshold` at the start of an interval the canary is
//! rolled back; when every check passes the weight advances to the next of `stepWeights`, and a
//! pass at the last one promotes.
//!
//! With flags in the stream, two custom metrics a Flagger user would add for the same bounds as
//! mlcanary's checks: the flag rate's relative shift within `MAX_FLAG_SHIFT`, and each segment's
//! canary / stable flag-rate ratio within `FAIR_BAND` — point values over the interval, like
//! every Flagger metric.

use mlcanary_core::window::Window;

use crate::sim::{Rng, Stream};
use crate::{End, FAIR_BAND, MAX_FLAG_SHIFT};

fn rate(x: u64, n: u64) -> Option<f64> {
    (n > 0).then(|| x as f64 / n as f64)
}

/// Flag rate within its shift, and every segment's ratio within the band (no values fail).
fn flags_pass(w: &Window) -> (bool, bool) {
    let shift = match (
        rate(w.canary.positives, w.canary.scored),
        rate(w.stable.positives, w.stable.scored),
    ) {
        (Some(c), Some(s)) if s > 0.0 => (c - s).abs() / s <= MAX_FLAG_SHIFT,
        _ => false,
    };
    let fair = w.stable.segments.iter().all(|(label, s)| {
        let c = w.canary.segments.get(label).copied().unwrap_or_default();
        match (rate(c.positives, c.scored), rate(s.positives, s.scored)) {
            (Some(c), Some(s)) if s > 0.0 => (FAIR_BAND.0..=FAIR_BAND.1).contains(&(c / s)),
            _ => false,
        }
    });
    (shift, fair)
}

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
        let mut unfair = false;
        let mut t = 0.0;
        while t + self.interval_s <= horizon_s {
            let from = t;
            t += self.interval_s;
            if failed >= self.threshold {
                let mut end = End::rolled_back(from, served);
                end.by_fairness = unfair;
                return end;
            }
            let w = stream.window(rng, from, t, steps[step]);
            served += w.canary.requests;
            let mut ok = w.canary.requests > 0 && {
                let success = 100.0 * (1.0 - w.canary.errors as f64 / w.canary.requests as f64);
                success >= self.min_success
            };
            if stream.flags.is_some() {
                let (shift, fair) = flags_pass(&w);
                unfair |= !fair;
                ok &= shift && fair;
            }
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
