//! Adding windows up: the evidence sums every window of a rollout per canary weight.

use super::{Bucket, SegmentCounts, VariantWindow, Window};

impl Window {
    /// This window followed by `later`: counts and histograms added, custom values from `later`
    /// (a PromQL value is already a rate or a level over its own range, so it cannot be summed).
    pub fn absorb(&mut self, later: &Window) {
        self.stable.absorb(&later.stable);
        self.canary.absorb(&later.canary);
        self.shadow.absorb(&later.shadow);
    }
}

impl VariantWindow {
    pub fn absorb(&mut self, later: &VariantWindow) {
        self.requests += later.requests;
        self.errors += later.errors;
        self.duration = add_cumulative(&self.duration, &later.duration);
        self.scores = add_cumulative(&self.scores, &later.scores);
        self.scored += later.scored;
        self.positives += later.positives;
        self.labels = self.labels.add(&later.labels);
        for (k, v) in &later.custom {
            self.custom.insert(k.clone(), *v);
        }
        for (label, c) in &later.segments {
            let s = self.segments.entry(label.clone()).or_default();
            *s = SegmentCounts {
                requests: s.requests + c.requests,
                errors: s.errors + c.errors,
                scored: s.scored + c.scored,
                positives: s.positives + c.positives,
                labels: s.labels.add(&c.labels),
            };
        }
    }
}

/// The sum of two cumulative histograms, over the union of their bounds. Between its own bounds a
/// cumulative histogram is a step function: its count at `le` is that of its largest bound ≤ `le`.
fn add_cumulative(a: &[Bucket], b: &[Bucket]) -> Vec<Bucket> {
    if a.is_empty() {
        return b.to_vec();
    }
    if b.is_empty() {
        return a.to_vec();
    }
    let at = |h: &[Bucket], le: f64| {
        h.iter()
            .take_while(|x| x.le <= le)
            .last()
            .map_or(0.0, |x| x.count)
    };
    let mut bounds: Vec<f64> = a.iter().chain(b).map(|x| x.le).collect();
    bounds.sort_by(f64::total_cmp);
    bounds.dedup();
    bounds
        .into_iter()
        .map(|le| Bucket {
            le,
            count: at(a, le) + at(b, le),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::fixtures::buckets as h;

    #[test]
    fn histograms_add_over_the_union_of_bounds() {
        let a = h(&[(1.0, 2.0), (5.0, 4.0), (f64::INFINITY, 5.0)]);
        let b = h(&[(1.0, 1.0), (5.0, 1.0), (f64::INFINITY, 3.0)]);
        assert_eq!(
            add_cumulative(&a, &b),
            h(&[(1.0, 3.0), (5.0, 5.0), (f64::INFINITY, 8.0)])
        );
        let c = h(&[(2.0, 1.0), (f64::INFINITY, 2.0)]);
        assert_eq!(
            add_cumulative(&a, &c),
            h(&[(1.0, 2.0), (2.0, 3.0), (5.0, 5.0), (f64::INFINITY, 7.0)])
        );
        assert_eq!(add_cumulative(&[], &c), c);
        assert_eq!(add_cumulative(&c, &[]), c);
    }

    #[test]
    fn windows_add_counts_segments_and_keep_the_latest_custom_value() {
        let mut w = Window::default();
        w.canary.requests = 10;
        w.canary.errors = 1;
        w.canary.scored = 10;
        w.canary.positives = 2;
        w.canary.custom.insert("q".into(), 1.0);
        w.canary.labels = crate::window::Labels {
            tp: 1,
            fp: 2,
            tn: 3,
            fn_: 4,
        };
        w.canary.segments.insert(
            "60+".into(),
            SegmentCounts {
                requests: 3,
                errors: 0,
                scored: 3,
                positives: 2,
                ..Default::default()
            },
        );
        let mut later = Window::default();
        later.canary.requests = 5;
        later.canary.scored = 5;
        later.canary.positives = 1;
        later.canary.custom.insert("q".into(), 7.0);
        later.canary.labels = crate::window::Labels {
            tp: 10,
            fp: 20,
            tn: 30,
            fn_: 40,
        };
        later.canary.segments.insert(
            "60+".into(),
            SegmentCounts {
                requests: 2,
                errors: 1,
                scored: 2,
                positives: 1,
                ..Default::default()
            },
        );
        later.canary.segments.insert(
            "other".into(),
            SegmentCounts {
                requests: 1,
                errors: 0,
                scored: 1,
                positives: 0,
                ..Default::default()
            },
        );
        later.stable.requests = 100;
        w.absorb(&later);
        assert_eq!(
            (
                w.canary.requests,
                w.canary.errors,
                w.canary.scored,
                w.canary.positives
            ),
            (15, 1, 15, 3)
        );
        assert_eq!(w.canary.custom["q"], 7.0);
        assert_eq!(
            w.canary.labels,
            crate::window::Labels {
                tp: 11,
                fp: 22,
                tn: 33,
                fn_: 44
            }
        );
        assert_eq!(
            w.canary.segments["60+"],
            SegmentCounts {
                requests: 5,
                errors: 1,
                scored: 5,
                positives: 3,
                ..Default::default()
            }
        );
        assert_eq!(w.canary.segments["other"].requests, 1);
        assert_eq!(w.stable.requests, 100);
    }
}
