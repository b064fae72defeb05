//! The few statistics the checks need: the standard normal tail, z-tests for proportions, and the
//! chi-square tail for the homogeneity test behind prediction drift.

/// `erfc(x)`, Numerical Recipes' Chebyshev fit (`erfcc`): fractional error below 1.2e-7 everywhere,
/// far finer than any alpha a rollout uses.
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// `P(Z > z)` for a standard normal `Z`: the one-sided p-value of a z statistic.
pub fn upper_tail(z: f64) -> f64 {
    if z.is_nan() {
        return 1.0;
    }
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// One-sided two-proportion z-test (pooled variance) of H1: rate A > rate B. Returns the p-value;
/// 0.5 when the pooled rate is 0 or 1 (both samples identical: no evidence either way), 1.0 with an
/// empty sample.
pub fn two_proportion_greater(errors_a: u64, n_a: u64, errors_b: u64, n_b: u64) -> f64 {
    if n_a == 0 || n_b == 0 {
        return 1.0;
    }
    let (na, nb) = (n_a as f64, n_b as f64);
    let (pa, pb) = (errors_a as f64 / na, errors_b as f64 / nb);
    let pooled = (errors_a + errors_b) as f64 / (na + nb);
    let se = (pooled * (1.0 - pooled) * (1.0 / na + 1.0 / nb)).sqrt();
    if se == 0.0 {
        return 0.5;
    }
    upper_tail((pa - pb) / se)
}

/// One-sided one-proportion z-test of H1: the true rate > `p0`. With `p0 = 0` any error is
/// conclusive (p-value 0) and none is not (1.0).
pub fn one_proportion_greater(errors: u64, n: u64, p0: f64) -> f64 {
    if n == 0 {
        return 1.0;
    }
    let p = errors as f64 / n as f64;
    let se = (p0 * (1.0 - p0) / n as f64).sqrt();
    if se == 0.0 {
        return if p > p0 { 0.0 } else { 1.0 };
    }
    upper_tail((p - p0) / se)
}

/// Two-sided two-proportion z-test (pooled variance) of H1: rate A ≠ rate B. Returns the p-value;
/// 1.0 when the pooled rate is 0 or 1 (identical samples) or a sample is empty.
pub fn two_proportion_two_sided(x_a: u64, n_a: u64, x_b: u64, n_b: u64) -> f64 {
    if n_a == 0 || n_b == 0 {
        return 1.0;
    }
    let (na, nb) = (n_a as f64, n_b as f64);
    let (xa, xb) = (x_a.min(n_a) as f64, x_b.min(n_b) as f64);
    let pooled = (xa + xb) / (na + nb);
    let se = (pooled * (1.0 - pooled) * (1.0 / na + 1.0 / nb)).sqrt();
    if se == 0.0 {
        return 1.0;
    }
    (2.0 * upper_tail(((xa / na - xb / nb) / se).abs())).min(1.0)
}

/// `ln Γ(x)` for `x > 0`, Lanczos (g = 7, 9 terms): relative error ~1e-15.
fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    let x = x - 1.0;
    let mut a = G[0];
    let t = x + 7.5;
    for (i, g) in G.iter().enumerate().skip(1) {
        a += g / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// Regularized upper incomplete gamma `Q(a, x)`: the series for `x < a + 1`, Lentz's continued
/// fraction otherwise (Numerical Recipes `gammq`), to ~1e-14.
fn gamma_q(a: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    let ln_pre = a * x.ln() - x - ln_gamma(a);
    if x < a + 1.0 {
        let (mut ap, mut sum, mut del) = (a, 1.0 / a, 1.0 / a);
        for _ in 0..1000 {
            ap += 1.0;
            del *= x / ap;
            sum += del;
            if del.abs() < sum.abs() * 1e-15 {
                break;
            }
        }
        (1.0 - sum * ln_pre.exp()).clamp(0.0, 1.0)
    } else {
        const TINY: f64 = 1e-300;
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / TINY;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..1000 {
            let an = -(i as f64) * (i as f64 - a);
            b += 2.0;
            d = an * d + b;
            if d.abs() < TINY {
                d = TINY;
            }
            c = b + an / c;
            if c.abs() < TINY {
                c = TINY;
            }
            d = 1.0 / d;
            let del = d * c;
            h *= del;
            if (del - 1.0).abs() < 1e-15 {
                break;
            }
        }
        (ln_pre.exp() * h).clamp(0.0, 1.0)
    }
}

/// `P(X > x)` for `X ~ χ²(df)`; 1.0 for `df == 0` (no degrees of freedom: no evidence).
pub fn chi_square_upper_tail(x: f64, df: usize) -> f64 {
    if df == 0 || x.is_nan() {
        return 1.0;
    }
    gamma_q(df as f64 / 2.0, x / 2.0)
}

/// Pearson's chi-square test of homogeneity for two samples over the same bins (counts per bin).
/// Bins empty in both samples are dropped; `df = bins kept - 1`. Returns `(statistic, df,
/// p-value)`; `None` when a sample is empty.
pub fn chi_square_homogeneity(a: &[f64], b: &[f64]) -> Option<(f64, usize, f64)> {
    let (na, nb): (f64, f64) = (a.iter().sum(), b.iter().sum());
    if na <= 0.0 || nb <= 0.0 || a.len() != b.len() {
        return None;
    }
    let n = na + nb;
    let mut stat = 0.0;
    let mut bins = 0usize;
    for (&oa, &ob) in a.iter().zip(b) {
        let col = oa + ob;
        if col <= 0.0 {
            continue;
        }
        bins += 1;
        let (ea, eb) = (na * col / n, nb * col / n);
        stat += (oa - ea).powi(2) / ea + (ob - eb).powi(2) / eb;
    }
    let df = bins.saturating_sub(1);
    Some((stat, df, chi_square_upper_tail(stat, df)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) {
        assert!((a - b).abs() < tol, "{a} vs {b}");
    }

    #[test]
    fn normal_tail_matches_tables() {
        close(upper_tail(0.0), 0.5, 1e-7);
        close(upper_tail(1.0), 0.158_655_25, 1e-7);
        close(upper_tail(1.644_853_6), 0.05, 1e-7);
        close(upper_tail(1.959_964), 0.025, 1e-7);
        close(upper_tail(-1.959_964), 0.975, 1e-7);
        close(upper_tail(3.0), 0.001_349_898, 1e-8);
    }

    #[test]
    fn two_proportion_hand_computed() {
        // 30/1000 vs 10/1000: pooled 0.02, se = sqrt(0.02·0.98·0.002) = 0.006261, z = 3.1944,
        // p = 0.000700.
        close(two_proportion_greater(30, 1000, 10, 1000), 0.000_700, 2e-5);
        // Same rate: z = 0, p = 0.5.
        close(two_proportion_greater(10, 1000, 10, 1000), 0.5, 1e-7);
        close(two_proportion_greater(0, 1000, 0, 1000), 0.5, 1e-7);
    }

    #[test]
    fn two_sided_hand_computed() {
        // 30/1000 vs 10/1000: z = 3.1944 (above), two-sided p = 2 · 0.000700 = 0.001401; the
        // same the other way round.
        close(
            two_proportion_two_sided(30, 1000, 10, 1000),
            0.001_401,
            4e-5,
        );
        close(
            two_proportion_two_sided(10, 1000, 30, 1000),
            0.001_401,
            4e-5,
        );
        // 60/400 vs 50/500: pooled 110/900 = 0.12222, se = sqrt(0.12222·0.87778·(1/400+1/500))
        // = 0.021972, z = 0.05/0.021972 = 2.2756, p = 2·0.011435 = 0.022870.
        close(two_proportion_two_sided(60, 400, 50, 500), 0.022_870, 5e-5);
        assert_eq!(two_proportion_two_sided(0, 1000, 0, 1000), 1.0);
        assert_eq!(two_proportion_two_sided(5, 0, 0, 1000), 1.0);
    }

    #[test]
    fn chi_square_tail_matches_tables() {
        // Critical values at 0.05 from the tables; with df = 2 the tail is exactly exp(-x/2).
        close(chi_square_upper_tail(3.841_459, 1), 0.05, 1e-6);
        close(chi_square_upper_tail(5.991_465, 2), 0.05, 1e-6);
        close(chi_square_upper_tail(7.0, 2), (-3.5f64).exp(), 1e-9);
        close(chi_square_upper_tail(30.143_527, 19), 0.05, 1e-6);
        close(chi_square_upper_tail(36.190_869, 19), 0.01, 1e-6);
        close(chi_square_upper_tail(0.5, 19), 1.0, 1e-9);
        assert_eq!(chi_square_upper_tail(10.0, 0), 1.0);
    }

    #[test]
    fn homogeneity_hand_computed() {
        // 2×2: [30, 70] vs [10, 90]: column totals 40, 160; expected 20, 80 each side.
        // X² = 100/20 + 100/80 + 100/20 + 100/80 = 12.5, df 1, p = erfc(√6.25) = 0.000407.
        let (x, df, p) = chi_square_homogeneity(&[30.0, 70.0, 0.0], &[10.0, 90.0, 0.0]).unwrap();
        close(x, 12.5, 1e-9);
        assert_eq!(df, 1, "the empty third bin is dropped");
        close(p, 0.000_407_2, 2e-6);
        assert!(chi_square_homogeneity(&[0.0, 0.0], &[1.0, 2.0]).is_none());
    }

    #[test]
    fn one_proportion_hand_computed() {
        // 20/1000 vs 0.01: se = sqrt(0.01·0.99/1000) = 0.0031464, z = 3.1782, p = 0.000741.
        close(one_proportion_greater(20, 1000, 0.01), 0.000_741, 2e-5);
        assert_eq!(one_proportion_greater(1, 1000, 0.0), 0.0);
        assert_eq!(one_proportion_greater(0, 1000, 0.0), 1.0);
    }
}
