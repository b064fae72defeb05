//! The config parser and validator: any bytes give a config or a field-named error, never a panic;
//! an accepted config routes any host.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mlcanary_filter::Config;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = Config::from_json(data) {
        for p in &c.policies {
            assert_eq!(p.bounds.last().copied(), Some(10_000));
        }
        let _ = c.find_policy("fraud-model:80", Some("/v1/models/fraud:predict"));
    }
});
