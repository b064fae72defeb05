//! The feedback path: any body gives a 400 reason or per-item results, never a panic; an item
//! counts only if its ticket verifies under the policy's key; any ticket string verifies or is
//! refused with a reason.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mlcanary_filter::config::Config;
use mlcanary_filter::feedback::{judge, parse, reply_body, ReplayWindow};
use mlcanary_filter::ticket::verify;

const CONFIG: &str = r#"{"policies": [{
    "name": "fraud-model", "namespace": "ml", "hosts": ["fraud-model"],
    "variants": [{"name": "stable", "weight_bp": 9000}, {"name": "canary", "weight_bp": 1000}],
    "segment": {"header": "x-age", "values": ["18-30", "60+"]},
    "predictions": {},
    "feedback": {"keys": ["bWxjYW5hcnktdGVzdC1rZXktMDEyMzQ1Njc4OWFiY2RlZg=="], "replay_window": 8}
}]}"#;

fuzz_target!(|data: &[u8]| {
    let config = Config::from_json(CONFIG.as_bytes()).expect("fixture config");
    let policy = &config.policies[0];
    let fb = policy.feedback.as_ref().expect("feedback");
    let now = 1_765_000_000;
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = verify(&fb.keys, s, now, fb.max_age_s);
    }
    let mut replay = ReplayWindow::new();
    if let Ok(items) = parse(data) {
        let results: Vec<_> = items
            .iter()
            .map(|it| judge(policy, fb, it.as_ref(), now, &mut replay))
            .collect();
        for (it, r) in items.iter().zip(&results) {
            if r.is_ok() {
                let it = it.as_ref().expect("a counted item parsed");
                assert!(verify(&fb.keys, &it.ticket, now, fb.max_age_s).is_ok());
            }
        }
        let _ = reply_body(&results);
    }
});
