use super::*;

#[test]
fn wilson_and_quantiles() {
    let (lo, hi) = report::wilson(10, 100);
    assert!(
        (lo - 0.0552).abs() < 1e-3 && (hi - 0.1744).abs() < 1e-3,
        "{lo} {hi}"
    );
    assert_eq!(report::wilson(0, 0), (0.0, 1.0));
    let mut xs = vec![3.0, 1.0, 2.0, 4.0];
    assert_eq!(report::quantile(&mut xs, 0.5), Some(2.0));
    assert_eq!(report::quantile(&mut xs, 0.9), Some(4.0));
    assert_eq!(report::quantile(&mut [], 0.5), None);
}

#[test]
fn draws_have_their_means() {
    let mut rng = Rng(5);
    let n = 4000;
    let mean = |f: &mut dyn FnMut() -> u64| (0..n).map(|_| f() as f64).sum::<f64>() / n as f64;
    let p = mean(&mut || rng.poisson(3.0));
    assert!((p - 3.0).abs() < 0.15, "{p}");
    let b = mean(&mut || rng.binomial(6000, 0.05));
    assert!((b - 300.0).abs() < 2.0, "{b}");
}

#[test]
fn clustered_errors_are_overdispersed_at_the_stated_rate() {
    let mut rng = Rng(9);
    let s = Stream {
        max_burst: 4,
        ..stream(0.01, 0.01)
    };
    let counts: Vec<f64> = (0..2000)
        .map(|_| s.window(&mut rng, 0.0, 30.0, 0.5).stable.errors as f64)
        .collect();
    let m = counts.iter().sum::<f64>() / counts.len() as f64;
    let var = counts.iter().map(|c| (c - m) * (c - m)).sum::<f64>() / (counts.len() - 1) as f64;
    // 150 rps × 30 s × 50 % × 1 % ≈ 22.5 errors; bursts of 1–4 give variance ≈ 3× the mean.
    assert!((m - 22.5).abs() < 1.0, "{m}");
    assert!(var / m > 2.5 && var / m < 3.5, "dispersion {}", var / m);
}

#[test]
fn flagger_advances_on_each_pass_and_counts_failures_for_good() {
    let f = Flagger {
        min_success: 99.0,
        threshold: 5,
        interval_s: 60.0,
    };
    let clean = f.run(&mut Rng(1), &stream(0.0, 0.0), &STEPS, HORIZON_S);
    assert_eq!((clean.fate, clean.at_s), (Fate::Promoted, 240.0));
    // Always failing: five failed checks, rolled back at the start of the sixth interval.
    let broken = f.run(&mut Rng(1), &stream(0.0, 0.5), &STEPS, HORIZON_S);
    assert_eq!((broken.fate, broken.at_s), (Fate::RolledBack, 300.0));
}

#[test]
fn mlcanary_rolls_back_a_broken_canary_and_promotes_a_healthy_one() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let p = policy(0.01, false);
    let broken = rt.block_on(mlcanary_run(&p, &mut Rng(2), &stream(0.01, 0.2)));
    assert_eq!(broken.fate, Fate::RolledBack);
    assert!(broken.at_s <= 60.0, "{broken:?}");
    let healthy = rt.block_on(mlcanary_run(&p, &mut Rng(2), &stream(0.002, 0.002)));
    assert_eq!(healthy.fate, Fate::Promoted, "{healthy:?}");
    // A shared outage holds (baseline unhealthy) rather than rolling back.
    let outage = Stream {
        outage: Some(Outage {
            from_s: 0.0,
            to_s: 3600.0,
            rate: 0.05,
        }),
        ..stream(0.002, 0.002)
    };
    let held = rt.block_on(mlcanary_run(&p, &mut Rng(2), &outage));
    assert_eq!(held.fate, Fate::Held, "{held:?}");
}

#[test]
fn flags_split_over_segments_and_a_biased_canary_fails_on_fairness() {
    let mut rng = Rng(4);
    let w = flagged(4.0).window(&mut rng, 0.0, 30.0, 0.5);
    let seg: u64 = w.canary.segments.values().map(|s| s.scored).sum();
    assert_eq!(
        (seg, w.canary.scored),
        (w.canary.requests, w.canary.requests)
    );
    let elderly = w.canary.segments["60+"];
    assert!(
        elderly.positives > w.stable.segments["60+"].positives,
        "24 % vs 6 % on half each"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let p = policy(0.01, true);
    let biased = rt.block_on(mlcanary_run(&p, &mut Rng(3), &flagged(4.0)));
    assert_eq!(
        (biased.fate, biased.by_fairness),
        (Fate::RolledBack, true),
        "{biased:?}"
    );
    let fair = rt.block_on(mlcanary_run(&p, &mut Rng(3), &flagged(1.0)));
    assert_eq!(fair.fate, Fate::Promoted, "{fair:?}");
    // Flagger's point-value fairness metric counts the same biased canary's failures too.
    let f = Flagger {
        min_success: 99.0,
        threshold: 5,
        interval_s: 60.0,
    };
    let e = f.run(&mut Rng(3), &flagged(4.0), &STEPS, HORIZON_S);
    assert!(e.by_fairness && e.fate == Fate::RolledBack, "{e:?}");
}

#[test]
fn a_shadow_window_copies_stable_requests_at_the_same_rates() {
    let mut rng = Rng(3);
    for shared in [0.0, 1.0] {
        let s = shadow::ShadowStream {
            base: flagged(1.0),
            shared,
        };
        let (mut n, mut m, mut es, mut ec, mut ps, mut pc) = (0, 0, 0, 0, 0, 0);
        for _ in 0..400 {
            let w = s.window(&mut rng, 0.0, 30.0);
            assert_eq!(w.canary.requests, 0, "no live canary request in shadow");
            n += w.stable.requests;
            m += w.shadow.requests;
            es += w.stable.errors;
            ec += w.shadow.errors;
            ps += w.stable.positives;
            pc += w.shadow.positives;
        }
        let share = m as f64 / n as f64;
        assert!((share - shadow::MIRROR).abs() < 0.005, "{share}");
        let rate = |x: u64, n: u64| x as f64 / n as f64;
        assert!(
            (rate(es, n) - rate(ec, m)).abs() < 0.001,
            "errors, shared {shared}"
        );
        assert!(
            (rate(ps, n) - rate(pc, m)).abs() < 0.002,
            "flags, shared {shared}"
        );
    }
}
