//! The few statistics the checks need: the standard normal tail and two one-sided z-tests.

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
    fn one_proportion_hand_computed() {
        // 20/1000 vs 0.01: se = sqrt(0.01·0.99/1000) = 0.0031464, z = 3.1782, p = 0.000741.
        close(one_proportion_greater(20, 1000, 0.01), 0.000_741, 2e-5);
        assert_eq!(one_proportion_greater(1, 1000, 0.0), 0.0);
        assert_eq!(one_proportion_greater(0, 1000, 0.0), 1.0);
    }
}
