//! Cross-platform vectors: the same checks natively (`cargo test`) and compiled to wasm32 under Node
//! (`wasm-bindgen-test`), against answers computed independently of this crate
//! (`gen_hash_vectors.py`). Together they guarantee one user = one variant on every Envoy.

use mlcanary_filter::config::Config;
use mlcanary_filter::decide::{assign, decide, Reason, RequestAttrs};
use mlcanary_filter::hash::{bucket, SplitMix64};
use mlcanary_filter::rules::{cookie_value, query_value};

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

const VECTORS: &str = include_str!("hash_vectors.txt");

fn vectors() -> impl Iterator<Item = (&'static str, &'static str, u32)> {
    VECTORS.lines().filter(|l| !l.starts_with('#')).map(|l| {
        let mut f = l.split('\t');
        let (s, k, b) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
        (s, k, b.parse().unwrap())
    })
}

#[test]
fn buckets_match_the_documented_hash() {
    let mut n = 0;
    for (salt, key, want) in vectors() {
        assert_eq!(bucket(salt, key), want, "salt {salt:?} key {key:?}");
        n += 1;
    }
    assert_eq!(n, 824);
}

#[test]
fn splitmix64_matches_the_reference_sequence() {
    let mut g = SplitMix64(0);
    assert_eq!(g.next_u64(), 0xe220_a839_7b1d_cdaf);
    assert_eq!(g.next_u64(), 0x6e78_9e6a_a1b9_65f4);
    assert_eq!(g.next_u64(), 0x06c4_5d18_8009_454f);
}

struct Req<'a> {
    headers: &'a [(&'a str, &'a str)],
    cookie: Option<&'a str>,
    path: &'a str,
}

impl RequestAttrs for Req<'_> {
    fn header(&mut self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| *v)
    }
    fn cookie(&mut self, name: &str) -> Option<&str> {
        cookie_value(self.cookie?, name)
    }
    fn query(&mut self, name: &str) -> Option<&str> {
        query_value(self.path, name)
    }
}

fn config(canary_bp: u32) -> Config {
    let json = format!(
        r#"{{"policies": [{{
            "name": "fraud-model", "hosts": ["fraud-model"],
            "variants": [{{"name": "stable", "weight_bp": {}}}, {{"name": "canary", "weight_bp": {canary_bp}}}],
            "sticky": {{"header": "x-user-id", "cookie": "mlcanary-uid", "salt": "fraud-model"}},
            "rules": [
                {{"match": {{"header": "x-user-segment", "exact": "beta"}}, "variant": "canary"}},
                {{"match": {{"cookie": "tester", "regex": "t-[0-9]+"}}, "variant": "canary"}},
                {{"match": {{"query": "pin", "one_of": ["stable"]}}, "variant": "stable"}}
            ]
        }}]}}"#,
        10_000 - canary_bp
    );
    Config::from_json(json.as_bytes()).unwrap()
}

#[test]
fn sticky_decisions_follow_the_independent_buckets() {
    for canary_bp in [0, 500, 2000, 5000, 10_000] {
        let c = config(canary_bp);
        let p = &c.policies[0];
        for (salt, key, b) in vectors().filter(|(s, k, _)| *s == "fraud-model" && !k.is_empty()) {
            assert_eq!(salt, "fraud-model");
            // The canary (listed last) owns the top `canary_bp` buckets.
            let want = usize::from(b >= 10_000 - canary_bp);
            assert_eq!(assign(p, key), Some(want), "key {key:?} at {canary_bp}");
            let mut r = Req {
                headers: &[("x-user-id", key)],
                cookie: None,
                path: "/",
            };
            let d = decide(p, &mut r, &mut SplitMix64(1));
            assert_eq!((d.variant, d.reason), (want, Reason::Sticky));
        }
    }
}

#[test]
fn rule_decisions() {
    let c = config(0);
    let p = &c.policies[0];
    let cases: [(Req<'_>, usize, Reason); 4] = [
        (
            Req {
                headers: &[("x-user-segment", "beta")],
                cookie: None,
                path: "/",
            },
            1,
            Reason::Rule(0),
        ),
        (
            Req {
                headers: &[],
                cookie: Some("a=b; tester=t-17"),
                path: "/",
            },
            1,
            Reason::Rule(1),
        ),
        (
            Req {
                headers: &[],
                cookie: Some("tester=t-17x"),
                path: "/",
            },
            0,
            Reason::Random,
        ),
        (
            Req {
                headers: &[],
                cookie: None,
                path: "/p?pin=stable",
            },
            0,
            Reason::Rule(2),
        ),
    ];
    for (mut r, variant, reason) in cases {
        let d = decide(p, &mut r, &mut SplitMix64(3));
        assert_eq!((d.variant, d.reason), (variant, reason));
    }
}
