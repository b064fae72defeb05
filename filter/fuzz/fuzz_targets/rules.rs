//! The rule matcher and the whole decision over arbitrary request attributes: a decision always
//! names a variant of the policy.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mlcanary_filter::decide::decide;
use mlcanary_filter::hash::SplitMix64;
use mlcanary_filter::headers::HeaderPairs;
use mlcanary_filter::Config;
use std::sync::OnceLock;

const CONFIG: &str = r#"{"policies": [{"name": "p", "hosts": ["*"],
  "variants": [{"name": "stable", "weight_bp": 7000}, {"name": "canary", "weight_bp": 3000}],
  "sticky": {"header": "x-user-id", "cookie": "uid", "assign_cookie": true},
  "override": {"header": "x-force"},
  "rules": [
    {"match": {"header": "x-seg", "regex": "(beta|gamma)-[0-9]{1,3}"}, "variant": "canary"},
    {"match": {"cookie": "t", "prefix": "qa-"}, "variant": "canary"},
    {"match": {"query": "pin", "one_of": ["stable", "s"]}, "variant": "stable"},
    {"match": {"header": "x-tier", "exact": "gold"}, "variant": "stable"}]}]}"#;

static POLICY: OnceLock<Config> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let config = POLICY
        .get_or_init(|| Config::from_json(CONFIG.as_bytes()).expect("the fixed config is valid"));
    let policy = &config.policies[0];
    // Split the input into header values for the attributes the policy reads.
    let mut parts = data.split(|&b| b == 0);
    let mut next = || parts.next().unwrap_or(&[]);
    let names = [
        ":path",
        "cookie",
        "x-user-id",
        "x-seg",
        "x-tier",
        "x-force",
        "cookie",
    ];
    let values: Vec<&[u8]> = names.iter().map(|_| next()).collect();
    let mut req = HeaderPairs::serialize(names.iter().copied().zip(values.iter().copied()));
    let d = decide(policy, &mut req, &mut SplitMix64(data.len() as u64));
    assert!(d.variant < policy.variants.len());
});
