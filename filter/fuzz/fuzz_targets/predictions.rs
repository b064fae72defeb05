//! The prediction-body parser: any reply body gives scores or a typed error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mlcanary_filter::predictions::{per_mille, scores, Format, ScoreSpec};

fuzz_target!(|data: &[u8]| {
    let specs = [
        ScoreSpec {
            format: Format::Auto,
            output: None,
            class_index: None,
        },
        ScoreSpec {
            format: Format::Tfserving,
            output: Some("p".into()),
            class_index: Some(2),
        },
        ScoreSpec {
            format: Format::Kserve,
            output: Some("probs".into()),
            class_index: None,
        },
    ];
    for spec in &specs {
        if let Ok(s) = scores(spec, data) {
            for v in s {
                assert!(v.is_finite());
                assert!(per_mille(v) <= 1000);
            }
        }
    }
});
