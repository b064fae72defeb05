use proptest::prelude::*;

use super::*;

const P: &str = "fraud-model";
const NS: &str = "ml";
const ID: PolicyId<'static> = PolicyId {
    namespace: NS,
    name: P,
};
const V: [&str; 2] = ["stable", "canary"];

/// `labels` with the policy's namespace, as the filter tags every series.
fn in_ns<'a>(labels: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<(&'a str, &'a str)> {
    labels
        .into_iter()
        .chain([("policy_namespace", NS)])
        .collect()
}

/// `(name, labels, value)`, as a source reads a sample.
type Sample<'a> = (&'a str, &'a [(&'a str, &'a str)], f64);

/// Counters from samples, as a source would add them.
fn counters(samples: &[Sample<'_>]) -> Counters {
    let mut c = Counters::default();
    for (name, labels, v) in samples {
        c.add(name, in_ns(labels.iter().copied()), *v, ID, V);
    }
    c
}

#[test]
fn only_the_policys_families_and_variants_are_kept() {
    let c = counters(&[
        (REQUESTS, &[("policy", P), ("variant", "canary")], 5.0),
        (REQUESTS, &[("policy", "other"), ("variant", "canary")], 7.0),
        (REQUESTS, &[("policy", P), ("variant", "shadow")], 9.0),
        // The same name in another namespace is another policy (`in_ns` adds ours after it).
        (
            REQUESTS,
            &[
                ("policy", P),
                ("policy_namespace", "staging"),
                ("variant", "canary"),
            ],
            11.0,
        ),
        (
            "mlcanary_request_duration_ms_sum",
            &[("policy", P), ("variant", "canary")],
            1.0,
        ),
        (REQUESTS, &[("policy", P), ("variant", "stable")], f64::NAN),
    ]);
    let w = c.window_since(&Counters::default(), "stable", "canary");
    assert_eq!((w.canary.requests, w.stable.requests), (5, 0));
}

#[test]
fn resets_are_per_instance_and_new_series_count_from_zero() {
    let a: &[(&str, &str)] = &[("policy", P), ("variant", "canary"), ("pod", "a")];
    let b: &[(&str, &str)] = &[("policy", P), ("variant", "canary"), ("pod", "b")];
    let a_err: &[(&str, &str)] = &[("policy", P), ("variant", "canary"), ("pod", "a")];
    let prev = counters(&[
        (REQUESTS, a, 100.0),
        (ERRORS, a_err, 10.0),
        (REQUESTS, b, 50.0),
    ]);
    // Pod a restarted (its errors went back to 1; its requests, 120, did not look reset on their
    // own): all of a's series count from zero. Pod b grew by 5. A new pod c counts whole.
    let c: &[(&str, &str)] = &[("policy", P), ("variant", "canary"), ("pod", "c")];
    let cur = counters(&[
        (REQUESTS, a, 120.0),
        (ERRORS, a_err, 1.0),
        (REQUESTS, b, 55.0),
        (REQUESTS, c, 3.0),
    ]);
    let w = cur.window_since(&prev, "stable", "canary");
    assert_eq!((w.canary.requests, w.canary.errors), (120 + 5 + 3, 1));
}

#[test]
fn a_falling_uptime_is_a_restart_even_when_counters_grew() {
    let s: &[(&str, &str)] = &[("policy", P), ("variant", "stable")];
    let prev = counters(&[(REQUESTS, s, 100.0), (UPTIME, &[], 600.0)]);
    let cur = counters(&[(REQUESTS, s, 150.0), (UPTIME, &[], 20.0)]);
    assert_eq!(
        cur.window_since(&prev, "stable", "canary").stable.requests,
        150
    );
    let later = counters(&[(REQUESTS, s, 170.0), (UPTIME, &[], 40.0)]);
    assert_eq!(
        later.window_since(&cur, "stable", "canary").stable.requests,
        20
    );
}

#[test]
fn histograms_and_segments_are_summed_by_bound_and_label() {
    let seg = |s: &'static str, le: &'static str| -> Vec<(&'static str, &'static str)> {
        vec![
            ("policy", P),
            ("variant", "canary"),
            ("segment", s),
            ("le", le),
        ]
    };
    let bucket = "mlcanary_request_duration_ms_bucket";
    let mut cur = Counters::default();
    for (s, le, v) in [
        ("60+", "10", 2.0),
        ("60+", "+Inf", 3.0),
        ("other", "10", 1.0),
        ("other", "+Inf", 4.0),
    ] {
        cur.add(bucket, in_ns(seg(s, le)), v, ID, V);
    }
    for (s, v) in [("60+", 3.0), ("other", 4.0)] {
        let l = [("policy", P), ("variant", "canary"), ("segment", s)];
        cur.add(REQUESTS, in_ns(l), v, ID, V);
    }
    let w = cur.window_since(&Counters::default(), "stable", "canary");
    assert_eq!(
        w.canary.duration,
        vec![
            Bucket {
                le: 10.0,
                count: 3.0
            },
            Bucket {
                le: f64::INFINITY,
                count: 7.0
            }
        ]
    );
    assert_eq!(w.canary.requests, 7);
    assert_eq!(w.canary.segments["60+"].requests, 3);
    assert_eq!(w.canary.segments["other"].requests, 4);
}

#[test]
fn the_persisted_map_reads_back_the_same_counters() {
    let c = counters(&[
        (
            REQUESTS,
            &[("policy", P), ("variant", "canary"), ("segment", "60+")],
            5.0,
        ),
        (
            "mlcanary_prediction_score_bucket",
            &[("policy", P), ("variant", "stable"), ("le", "+Inf")],
            9.0,
        ),
        (
            ERRORS,
            &[("policy", P), ("variant", "stable"), ("pod", "we\"ird")],
            2.0,
        ),
        (UPTIME, &[], 33.0),
        (ERRORS, &[("policy", P), ("variant", "canary")], 0.0),
    ]);
    let map = c.to_map();
    assert_eq!(map.len(), 4, "zero series are left out: {map:?}");
    assert!(map.contains_key(r#"mlcanary_requests_total{variant="canary",segment="60+"}"#));
    let back = Counters::from_map(&map, ID, V);
    let zero = Counters::default();
    assert_eq!(
        back.window_since(&zero, "stable", "canary"),
        c.window_since(&zero, "stable", "canary")
    );
    assert_eq!(back.to_map(), map);
}

proptest! {
    /// However a stream of cumulative counts is cut into reads, the windows add up to its growth:
    /// nothing lost, nothing counted twice (no resets here).
    #[test]
    fn windows_telescope(incs in prop::collection::vec((0u64..50, 0u64..50), 1..30),
                         cuts in prop::collection::vec(any::<bool>(), 30)) {
        let (mut s, mut c) = (0u64, 0u64);
        let read = |s: u64, c: u64| counters(&[
            (REQUESTS, &[("policy", P), ("variant", "stable")], s as f64),
            (REQUESTS, &[("policy", P), ("variant", "canary")], c as f64),
        ]);
        let mut prev = Counters::default();
        let (mut sum_s, mut sum_c) = (0, 0);
        for (i, (ds, dc)) in incs.iter().enumerate() {
            s += ds;
            c += dc;
            if cuts[i] || i + 1 == incs.len() {
                let cur = read(s, c);
                let w = cur.window_since(&prev, "stable", "canary");
                sum_s += w.stable.requests;
                sum_c += w.canary.requests;
                prev = cur;
            }
        }
        prop_assert_eq!((sum_s, sum_c), (s, c));
    }
}

#[test]
fn shadow_series_are_the_canarys_shadow_and_survive_a_mark() {
    let live: &[(&str, &str)] = &[("policy", P), ("variant", "canary")];
    let shadow: &[(&str, &str)] = &[("policy", P), ("variant", "canary"), ("phase", "shadow")];
    let stable_shadow: &[(&str, &str)] =
        &[("policy", P), ("variant", "stable"), ("phase", "shadow")];
    let stable: &[(&str, &str)] = &[("policy", P), ("variant", "stable")];
    let prev = counters(&[(REQUESTS, shadow, 10.0), (REQUESTS, stable, 100.0)]);
    let cur = counters(&[
        (REQUESTS, live, 3.0),
        (REQUESTS, shadow, 25.0),
        (ERRORS, shadow, 2.0),
        (REQUESTS, stable_shadow, 99.0),
        (REQUESTS, stable, 250.0),
    ]);
    let w = cur.window_since(&prev, "stable", "canary");
    assert_eq!(
        (
            w.stable.requests,
            w.canary.requests,
            w.shadow.requests,
            w.shadow.errors
        ),
        (150, 3, 15, 2),
        "a stable shadow is nobody's"
    );
    // A mark persists the phase: read back, the same window.
    let back = Counters::from_map(&prev.to_map(), ID, V);
    assert_eq!(back, prev);
    assert!(prev.to_map().keys().any(|k| k.contains("phase=\"shadow\"")));
    assert_eq!(w.clone().judged(true).canary, w.shadow);
    assert_eq!(w.clone().judged(false).canary, w.canary);
}

#[test]
fn labels_go_to_their_cells_per_variant_and_segment_and_survive_a_mark() {
    let fb = |v: &'static str, seg: &'static str, o: &'static str| {
        [
            ("policy", P),
            ("variant", v),
            ("segment", seg),
            ("outcome", o),
        ]
    };
    let (a, b, c, d) = (
        fb("canary", "60+", "fp"),
        fb("canary", "60+", "tp"),
        fb("canary", "18-30", "fp"),
        fb("stable", "60+", "fn"),
    );
    let prev = counters(&[(FEEDBACK, &a, 2.0), (FEEDBACK, &d, 1.0)]);
    let now = counters(&[
        (FEEDBACK, &a, 7.0),
        (FEEDBACK, &b, 3.0),
        (FEEDBACK, &c, 1.0),
        (FEEDBACK, &d, 1.0),
        (FEEDBACK, &fb("canary", "60+", "bogus"), 50.0),
    ]);
    // Persisted as a mark and read back: the outcome label is kept.
    let prev = Counters::from_map(&prev.to_map(), ID, V);
    let w = now.window_since(&prev, "stable", "canary");
    assert_eq!(
        w.canary.labels,
        Labels {
            tp: 3,
            fp: 6,
            tn: 0,
            fn_: 0
        }
    );
    assert_eq!(w.canary.segments["60+"].labels.fp, 5);
    assert_eq!(w.canary.segments["18-30"].labels.fp, 1);
    assert!(w.stable.labels.is_empty(), "no new stable labels");
}
