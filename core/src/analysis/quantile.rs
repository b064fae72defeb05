//! `histogram_quantile` over cumulative buckets, exactly as PromQL computes it (Prometheus
//! `bucketQuantile`): sort by upper bound, require a `+Inf` bucket, force counts monotonic, merge equal
//! bounds, then interpolate linearly inside the bucket that holds the rank.

pub use crate::window::Bucket;

/// Where the quantile fell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quantile {
    /// PromQL's answer.
    pub value: f64,
    /// The rank fell in the `+Inf` bucket: the true quantile is above `value` (PromQL returns the
    /// highest finite bound), so `value` is only a lower bound.
    pub in_inf_bucket: bool,
}

/// PromQL `histogram_quantile(q, buckets)`. `None` where PromQL gives NaN: no `+Inf` bucket, fewer
/// than two buckets, or no observations. `q` outside [0, 1] gives ±∞ like PromQL.
pub fn histogram_quantile(q: f64, buckets: &[Bucket]) -> Option<Quantile> {
    if q.is_nan() {
        return None;
    }
    let plain = |value| {
        Some(Quantile {
            value,
            in_inf_bucket: false,
        })
    };
    if q < 0.0 {
        return plain(f64::NEG_INFINITY);
    }
    if q > 1.0 {
        return plain(f64::INFINITY);
    }
    let mut b: Vec<Bucket> = buckets.iter().copied().filter(|b| !b.le.is_nan()).collect();
    b.sort_by(|x, y| x.le.total_cmp(&y.le));
    if b.last().is_none_or(|l| l.le != f64::INFINITY) {
        return None;
    }
    // Merge buckets with the same bound (summing, as PromQL's coalesceBuckets does).
    let mut merged: Vec<Bucket> = Vec::with_capacity(b.len());
    for x in b {
        match merged.last_mut() {
            Some(last) if last.le == x.le => last.count += x.count,
            _ => merged.push(x),
        }
    }
    // Counts of a cumulative histogram never decrease; scrape skew can make them: take the max.
    let mut max = f64::NEG_INFINITY;
    for x in &mut merged {
        max = max.max(x.count);
        x.count = max;
    }
    let n = merged.len();
    if n < 2 {
        return None;
    }
    let observations = merged[n - 1].count;
    if observations == 0.0 || observations.is_nan() {
        return None;
    }
    let mut rank = q * observations;
    let i = merged.partition_point(|x| x.count < rank);
    if i >= n - 1 {
        return Some(Quantile {
            value: merged[n - 2].le,
            in_inf_bucket: true,
        });
    }
    if i == 0 && merged[0].le <= 0.0 {
        return plain(merged[0].le);
    }
    let mut start = 0.0;
    let end = merged[i].le;
    let mut count = merged[i].count;
    if i > 0 {
        start = merged[i - 1].le;
        count -= merged[i - 1].count;
        rank -= merged[i - 1].count;
    }
    plain(start + (end - start) * (rank / count))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::fixtures::buckets as h;

    fn value(q: f64, b: &[Bucket]) -> f64 {
        histogram_quantile(q, b)
            .map(|x| x.value)
            .unwrap_or(f64::NAN)
    }

    const INF: f64 = f64::INFINITY;

    #[test]
    fn interpolates_like_promql() {
        // 100 observations: 10 ≤ 10 ms, 60 ≤ 50 ms, 90 ≤ 100 ms, 100 ≤ 500 ms.
        let b = h(&[
            (10.0, 10.0),
            (50.0, 60.0),
            (100.0, 90.0),
            (500.0, 100.0),
            (INF, 100.0),
        ]);
        // rank 50 in (10, 50]: 10 + 40 · (50-10)/(60-10) = 42.
        assert_eq!(value(0.5, &b), 42.0);
        // rank 99 in (100, 500]: 100 + 400 · 9/10 = 460.
        assert_eq!(value(0.99, &b), 460.0);
        // rank 5 in the first bucket, interpolated from 0: 10 · 5/10 = 5.
        assert_eq!(value(0.05, &b), 5.0);
        // rank 90 is exactly the (50, 100] bucket's count: its upper bound.
        assert_eq!(value(0.9, &b), 100.0);
    }

    #[test]
    fn inf_bucket_returns_highest_finite_bound() {
        let b = h(&[(10.0, 10.0), (100.0, 50.0), (INF, 100.0)]);
        let q = histogram_quantile(0.99, &b).unwrap();
        assert_eq!(q.value, 100.0);
        assert!(q.in_inf_bucket);
    }

    #[test]
    fn nan_cases_and_out_of_range() {
        assert!(
            histogram_quantile(0.5, &h(&[(10.0, 1.0), (20.0, 2.0)])).is_none(),
            "no +Inf"
        );
        assert!(
            histogram_quantile(0.5, &h(&[(INF, 5.0)])).is_none(),
            "one bucket"
        );
        assert!(
            histogram_quantile(0.5, &h(&[(10.0, 0.0), (INF, 0.0)])).is_none(),
            "empty"
        );
        assert_eq!(
            value(-0.1, &h(&[(10.0, 1.0), (INF, 1.0)])),
            f64::NEG_INFINITY
        );
        assert_eq!(value(1.1, &h(&[(10.0, 1.0), (INF, 1.0)])), INF);
    }

    #[test]
    fn unsorted_non_monotonic_and_duplicate_buckets() {
        // Out of order, one count dipping (skew), the 50 bucket listed twice (summed).
        let b = h(&[
            (INF, 100.0),
            (50.0, 30.0),
            (10.0, 10.0),
            (50.0, 30.0),
            (100.0, 55.0),
        ]);
        // Merged: 10→10, 50→60, 100→60 (monotonic fix), +Inf→100. rank 50 in (10, 50]: 42.
        assert_eq!(value(0.5, &b), 42.0);
    }

    #[test]
    fn non_positive_first_bound_is_returned_as_is() {
        let b = h(&[(0.0, 50.0), (10.0, 100.0), (INF, 100.0)]);
        assert_eq!(value(0.2, &b), 0.0);
    }
}
