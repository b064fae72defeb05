//! The e-processes' contract, checked by simulation with fixed seeds: under the null, looking after
//! every row rejects at most α of the time (up to Monte-Carlo error); under a real effect they
//! reject soon. Each simulation also runs a test that *does* break the contract (a fixed-horizon
//! z-test looked at repeatedly, or clumped events without their dispersion factor), so the
//! simulation is shown to be able to see a violation.

use super::*;

struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Poisson(λ) by inversion (λ here is at most a few hundred).
    fn poisson(&mut self, lambda: f64) -> f64 {
        let u = self.unit();
        let (mut k, mut p) = (0.0, (-lambda).exp());
        let mut cdf = p;
        while u > cdf && k < 10_000.0 {
            k += 1.0;
            p *= lambda / k;
            cdf += p;
        }
        k
    }
}

const RUNS: u32 = 2000;
const LOOKS: usize = 30;
const ALPHA: f64 = 0.05;
/// Monte-Carlo allowance: three standard errors of a rate of α over `RUNS` runs.
fn slack() -> f64 {
    3.0 * (ALPHA * (1.0 - ALPHA) / RUNS as f64).sqrt()
}

/// Shares of the canary over the looks: the steps of a rollout.
fn share(look: usize) -> f64 {
    [0.05, 0.1, 0.2, 0.5][(look / 3).min(3)]
}

/// One rollout's rows (one per look) with canary / stable rates `pc`, `ps`, events in clumps of
/// `clump` (a user's batch failing together).
fn rows(rng: &mut Rng, pc: f64, ps: f64, clump: f64) -> Vec<RateRow> {
    (0..LOOKS)
        .map(|i| {
            let n = 6000.0;
            let (n_c, n_s) = (n * share(i), n * (1.0 - share(i)));
            RateRow {
                n_c,
                x_c: clump * rng.poisson(n_c * pc / clump),
                n_s,
                x_s: clump * rng.poisson(n_s * ps / clump),
            }
        })
        .collect()
}

/// Share of runs in which `rejects` fires at some look.
fn ever(mut run: impl FnMut(&mut Rng) -> bool) -> f64 {
    let mut rng = Rng(7);
    (0..RUNS).filter(|_| run(&mut rng)).count() as f64 / RUNS as f64
}

fn ratio_ever_rejects(rows: &[RateRow], phi: f64) -> bool {
    (1..=rows.len()).any(|t| ratio_log_e(&rows[..t], 1.0, Side::Above, phi) >= threshold(ALPHA))
}

/// The fixed-horizon pooled z-test on the summed counts, looked at after every row.
fn z_ever_rejects(rows: &[RateRow]) -> bool {
    let mut s = RateRow::default();
    rows.iter().any(|r| {
        s.n_c += r.n_c;
        s.x_c += r.x_c;
        s.n_s += r.n_s;
        s.x_s += r.x_s;
        let p = (s.x_c + s.x_s) / (s.n_c + s.n_s);
        let se = (p * (1.0 - p) * (1.0 / s.n_c + 1.0 / s.n_s)).sqrt();
        se > 0.0 && (s.x_c / s.n_c - s.x_s / s.n_s) / se > 1.645
    })
}

#[test]
fn the_ratio_test_keeps_its_level_over_every_look_where_repeated_z_tests_do_not() {
    let e = ever(|rng| ratio_ever_rejects(&rows(rng, 0.01, 0.01, 1.0), 1.0));
    let z = ever(|rng| z_ever_rejects(&rows(rng, 0.01, 0.01, 1.0)));
    assert!(
        e <= ALPHA + slack(),
        "e-process rejected a true null in {e}"
    );
    assert!(z > 2.0 * ALPHA, "repeated z-tests should inflate: {z}");
}

#[test]
fn clumped_events_need_the_dispersion_factor() {
    let plain = ever(|rng| ratio_ever_rejects(&rows(rng, 0.01, 0.01, 4.0), 1.0));
    let corrected = ever(|rng| ratio_ever_rejects(&rows(rng, 0.01, 0.01, 4.0), 4.0));
    assert!(corrected <= ALPHA + slack(), "with φ = 4: {corrected}");
    assert!(
        plain > 2.0 * ALPHA,
        "clumps of 4 without φ should inflate: {plain}"
    );
}

#[test]
fn the_absolute_test_keeps_its_level_at_the_bound() {
    let q0 = 0.01;
    let e = ever(|rng| {
        let (mut n, mut x) = (0.0, 0.0);
        (0..LOOKS).any(|_| {
            n += 300.0;
            x += rng.poisson(300.0 * q0);
            rate_log_e(n, x, q0, Side::Above, 1.0) >= threshold(ALPHA)
        })
    });
    assert!(e <= ALPHA + slack(), "{e}");
}

#[test]
fn the_lower_side_keeps_its_level_too() {
    let e = ever(|rng| {
        let rows = rows(rng, 0.015, 0.01, 1.0);
        (1..=rows.len()).any(|t| ratio_log_e(&rows[..t], 1.5, Side::Below, 1.0) >= threshold(ALPHA))
    });
    assert!(e <= ALPHA + slack(), "{e}");
}

#[test]
fn a_real_effect_is_found_within_a_few_looks() {
    let mut rng = Rng(3);
    let looks_to_reject = |rows: &[RateRow]| {
        (1..=rows.len())
            .find(|&t| ratio_log_e(&rows[..t], 1.0, Side::Above, 1.0) >= threshold(0.01))
    };
    let three = rows(&mut rng, 0.03, 0.01, 1.0);
    assert!(looks_to_reject(&three).is_some_and(|t| t <= 3), "{three:?}");
    let healthy = rows(&mut rng, 0.01, 0.01, 1.0);
    assert_eq!(looks_to_reject(&healthy), None);
    // And harm beyond 1.5× is excluded for the healthy canary by the end.
    assert!(ratio_log_e(&healthy, 1.5, Side::Below, 1.0) >= threshold(0.01));
}

#[test]
fn intervals_cover_the_truth_and_narrow_with_data() {
    let mut rng = Rng(11);
    let rows = rows(&mut rng, 0.02, 0.01, 1.0);
    let (lo3, hi3) = ratio_interval(&rows[..3], 0.01, 1.0);
    let (lo, hi) = ratio_interval(&rows, 0.01, 1.0);
    assert!(lo < 2.0 && 2.0 < hi, "[{lo}, {hi}]");
    assert!(hi - lo < hi3 - lo3, "[{lo}, {hi}] vs [{lo3}, {hi3}]");
    // The interval's ends are the tests' decisions.
    assert!(ratio_log_e(&rows, lo * 0.99, Side::Above, 1.0) >= threshold(0.01));
    assert!(ratio_log_e(&rows, hi * 1.01, Side::Below, 1.0) >= threshold(0.01));
    let (rlo, rhi) = rate_interval(6000.0, 60.0, 0.01, 1.0);
    assert!(rlo < 0.01 && 0.01 < rhi && rhi < 0.02, "[{rlo}, {rhi}]");
}

#[test]
fn no_data_is_no_evidence_and_degenerate_bounds_behave() {
    assert_eq!(ratio_log_e(&[], 1.0, Side::Above, 1.0), 0.0);
    let empty_canary = RateRow {
        n_s: 100.0,
        x_s: 5.0,
        ..Default::default()
    };
    assert_eq!(ratio_log_e(&[empty_canary], 1.0, Side::Above, 1.0), 0.0);
    assert_eq!(ratio_interval(&[], 0.01, 1.0), (1e-3, 1e3));
    assert_eq!(rate_log_e(10.0, 0.0, 0.0, Side::Above, 1.0), 0.0);
    assert_eq!(rate_log_e(10.0, 1.0, 0.0, Side::Above, 1.0), f64::INFINITY);
    assert_eq!(rate_interval(0.0, 0.0, 0.01, 1.0), (0.0, 1.0));
    assert_eq!(p_value(0.0), 1.0);
    assert!((p_value(threshold(0.01)) - 0.01).abs() < 1e-12);
}
