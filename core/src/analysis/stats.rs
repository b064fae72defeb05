//! The chi-square tail for the homogeneity test behind prediction drift (the rate checks are
//! sequential: see [`super::sequential`]).

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
        // X² = 100/20 + 100/80 + 100/20 + 100/80 = 12.5, df 1, p = P(χ²₁ > 12.5) = 0.000407.
        let (x, df, p) = chi_square_homogeneity(&[30.0, 70.0, 0.0], &[10.0, 90.0, 0.0]).unwrap();
        close(x, 12.5, 1e-9);
        assert_eq!(df, 1, "the empty third bin is dropped");
        close(p, 0.000_407_2, 2e-6);
        assert!(chi_square_homogeneity(&[0.0, 0.0], &[1.0, 2.0]).is_none());
    }
}
