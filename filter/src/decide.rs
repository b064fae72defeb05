//! The per-request variant decision: a plain function over the policy, the request's attributes
//! and a random source. The proxy-wasm adapter only reads headers for it and applies the result.

use crate::config::Policy;
use crate::hash::{bucket, SplitMix64, BUCKETS};
use crate::rules::Source;

/// Read access to the request attributes a decision may need. Implementations fetch lazily, so a
/// policy without rules or sticky keys costs no lookups.
pub trait RequestAttrs {
    /// A request header by lowercase name.
    fn header(&mut self, name: &str) -> Option<&str>;
    /// A cookie by name.
    fn cookie(&mut self, name: &str) -> Option<&str>;
    /// A query parameter of the path by name.
    fn query(&mut self, name: &str) -> Option<&str>;
}

/// Why a request got its variant (for tests, debugging and the `assign` CLI).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The trusted override header named it.
    Override,
    /// User-attribute rule number N matched.
    Rule(usize),
    /// The sticky key's bucket.
    Sticky,
    /// No key: a fresh random id was assigned (and is returned as a cookie).
    Assigned,
    /// No key: a random bucket for this request only.
    Random,
}

/// A fresh sticky id, 16 lowercase hex characters, held inline so that assigning one allocates
/// nothing until the adapter writes the cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AssignedId([u8; 16]);

impl AssignedId {
    pub fn from_u64(v: u64) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 16];
        for (i, b) in out.iter_mut().enumerate() {
            *b = HEX[((v >> (60 - 4 * i)) & 0xf) as usize];
        }
        AssignedId(out)
    }

    pub fn as_str(&self) -> &str {
        // The bytes are ASCII hex digits by construction.
        std::str::from_utf8(&self.0).unwrap_or("0000000000000000")
    }
}

/// The outcome for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Index into the policy's variants.
    pub variant: usize,
    pub reason: Reason,
    /// Set when the client had no key and the policy assigns cookies.
    pub assigned: Option<AssignedId>,
}

/// Decide the variant of a request under `policy`. First that applies wins: trusted override,
/// user-attribute rules in order, the sticky key's bucket, then (no key) an assigned id or a random
/// bucket.
pub fn decide(policy: &Policy, req: &mut impl RequestAttrs, rng: &mut SplitMix64) -> Decision {
    let done = |variant, reason| Decision {
        variant,
        reason,
        assigned: None,
    };
    if let Some(h) = &policy.override_header {
        if let Some(v) = req.header(h).and_then(|name| policy.variant_index(name)) {
            return done(v, Reason::Override);
        }
    }
    for (i, rule) in policy.rules.iter().enumerate() {
        let value = match &rule.source {
            Source::Header(n) => req.header(n),
            Source::Cookie(n) => req.cookie(n),
            Source::Query(n) => req.query(n),
        };
        if value.is_some_and(|v| rule.matcher.matches(v)) {
            return done(rule.variant, Reason::Rule(i));
        }
    }
    if let Some(sticky) = &policy.sticky {
        if let Some(b) = sticky_bucket(sticky, req) {
            return done(policy.variant_for_bucket(b), Reason::Sticky);
        }
        if sticky.assign_cookie {
            let id = AssignedId::from_u64(rng.next_u64());
            let b = bucket(&sticky.salt, id.as_str());
            return Decision {
                variant: policy.variant_for_bucket(b),
                reason: Reason::Assigned,
                assigned: Some(id),
            };
        }
    }
    let b = (rng.next_u64() % u64::from(BUCKETS)) as u32;
    done(policy.variant_for_bucket(b), Reason::Random)
}

/// The bucket of the request's sticky key: the header if present and non-empty, else the cookie.
fn sticky_bucket(sticky: &crate::config::Sticky, req: &mut impl RequestAttrs) -> Option<u32> {
    if let Some(h) = &sticky.header {
        if let Some(key) = req.header(h).filter(|k| !k.is_empty()) {
            return Some(bucket(&sticky.salt, key));
        }
    }
    let c = sticky.cookie.as_ref()?;
    let key = req.cookie(c).filter(|k| !k.is_empty())?;
    Some(bucket(&sticky.salt, key))
}

/// The variant a user with sticky key `key` gets under `policy`, ignoring rules: what `mlcanary
/// assign` prints. `None` when the policy is not sticky.
pub fn assign(policy: &Policy, key: &str) -> Option<usize> {
    let sticky = policy.sticky.as_ref()?;
    Some(policy.variant_for_bucket(bucket(&sticky.salt, key)))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;
    use crate::config::Config;

    /// Request attributes from plain maps.
    #[derive(Default)]
    struct Req {
        headers: HashMap<String, String>,
        cookie: Option<String>,
        path: String,
    }

    impl Req {
        fn header(mut self, k: &str, v: &str) -> Self {
            self.headers.insert(k.into(), v.into());
            self
        }
        fn cookie(mut self, c: &str) -> Self {
            self.cookie = Some(c.into());
            self
        }
        fn path(mut self, p: &str) -> Self {
            self.path = p.into();
            self
        }
    }

    impl RequestAttrs for Req {
        fn header(&mut self, name: &str) -> Option<&str> {
            self.headers.get(name).map(String::as_str)
        }
        fn cookie(&mut self, name: &str) -> Option<&str> {
            crate::rules::cookie_value(self.cookie.as_deref()?, name)
        }
        fn query(&mut self, name: &str) -> Option<&str> {
            crate::rules::query_value(&self.path, name)
        }
    }

    fn policy(canary_bp: u32, extra: serde_json::Value) -> Policy {
        let mut p = serde_json::json!({
            "name": "fraud-model",
            "hosts": ["fraud-model"],
            "variants": [
                {"name": "stable", "weight_bp": 10_000 - canary_bp},
                {"name": "canary", "weight_bp": canary_bp}
            ],
            "sticky": {"header": "x-user-id", "cookie": "uid", "salt": "s1"}
        });
        for (k, v) in extra.as_object().into_iter().flatten() {
            p[k] = v.clone();
        }
        let c = serde_json::json!({ "policies": [p] });
        Config::from_json(c.to_string().as_bytes())
            .unwrap() // ok: test
            .policies
            .remove(0)
    }

    fn rng() -> SplitMix64 {
        SplitMix64(7)
    }

    #[test]
    fn rules_in_order_then_sticky_then_random() {
        let p = policy(
            0,
            serde_json::json!({
                "rules": [
                    {"match": {"header": "x-user-segment", "exact": "beta"}, "variant": "canary"},
                    {"match": {"cookie": "team", "prefix": "ml-"}, "variant": "canary"},
                    {"match": {"query": "tester", "regex": "[0-9]+"}, "variant": "canary"},
                    {"match": {"header": "x-tier", "one_of": ["gold", "platinum"]}, "variant": "stable"}
                ]
            }),
        );
        let d = |mut r: Req| decide(&p, &mut r, &mut rng());
        assert_eq!(
            d(Req::default().header("x-user-segment", "beta")).reason,
            Reason::Rule(0)
        );
        assert_eq!(
            d(Req::default().cookie("a=1; team=ml-ops")).reason,
            Reason::Rule(1)
        );
        assert_eq!(
            d(Req::default().path("/x?tester=42")).reason,
            Reason::Rule(2)
        );
        assert_eq!(
            d(Req::default().path("/x?tester=4a")).reason,
            Reason::Random
        );
        assert_eq!(
            d(Req::default().header("x-tier", "gold")).reason,
            Reason::Rule(3)
        );
        let r = d(Req::default()
            .header("x-user-segment", "beta")
            .header("x-tier", "gold"));
        assert_eq!(
            r,
            Decision {
                variant: 1,
                reason: Reason::Rule(0),
                assigned: None
            }
        );
        assert_eq!(
            d(Req::default().header("x-user-id", "u1")).reason,
            Reason::Sticky
        );
        assert_eq!(d(Req::default().cookie("uid=u1")).reason, Reason::Sticky);
        // An empty key is no key.
        assert_eq!(
            d(Req::default().header("x-user-id", "")).reason,
            Reason::Random
        );
    }

    #[test]
    fn the_header_key_wins_over_the_cookie_and_both_hash_the_same() {
        let p = policy(5000, serde_json::json!({}));
        let by_header = decide(
            &p,
            &mut Req::default().header("x-user-id", "u9"),
            &mut rng(),
        );
        let by_cookie = decide(&p, &mut Req::default().cookie("uid=u9"), &mut rng());
        assert_eq!(by_header.variant, by_cookie.variant);
        assert_eq!(Some(by_header.variant), assign(&p, "u9"));
    }

    #[test]
    fn override_needs_the_configured_header_and_a_known_variant() {
        let p = policy(
            0,
            serde_json::json!({"override": {"header": "x-mlcanary-force"}}),
        );
        let mut r = Req::default().header("x-mlcanary-force", "canary");
        assert_eq!(decide(&p, &mut r, &mut rng()).variant, 1);
        let mut r = Req::default().header("x-mlcanary-force", "nonsense");
        assert_eq!(decide(&p, &mut r, &mut rng()).variant, 0);
        // Without the opt-in, the same header means nothing.
        let p = policy(0, serde_json::json!({}));
        let mut r = Req::default().header("x-mlcanary-force", "canary");
        assert_eq!(decide(&p, &mut r, &mut rng()).variant, 0);
    }

    #[test]
    fn anonymous_clients_get_an_id_that_routes_them_the_same_way_next_time() {
        let p = policy(
            3000,
            serde_json::json!({"sticky": {"cookie": "uid", "salt": "s1", "assign_cookie": true}}),
        );
        let mut g = rng();
        for _ in 0..200 {
            let d = decide(&p, &mut Req::default(), &mut g);
            assert_eq!(d.reason, Reason::Assigned);
            let id = d.assigned.unwrap(); // ok: test
            assert_eq!(id.as_str().len(), 16);
            let again = decide(
                &p,
                &mut Req::default().cookie(&format!("uid={}", id.as_str())),
                &mut g,
            );
            assert_eq!((again.reason, again.variant), (Reason::Sticky, d.variant));
        }
    }

    /// The split of 100 000 keys is within ±1 percentage point of the weight.
    #[test]
    fn the_sticky_split_follows_the_weight() {
        for salt in ["fraud-model", "v7", ""] {
            for canary_bp in [100, 500, 2500, 5000, 9000] {
                let mut p = policy(canary_bp, serde_json::json!({}));
                p.sticky.as_mut().unwrap().salt = salt.into(); // ok: test
                let n = 100_000;
                let on_canary = (0..n)
                    .filter(|i| assign(&p, &format!("user-{i}")) == Some(1))
                    .count();
                let got = on_canary as f64 / n as f64;
                let want = f64::from(canary_bp) / 10_000.0;
                assert!(
                    (got - want).abs() < 0.01,
                    "salt {salt:?} weight {want}: got {got}"
                );
            }
        }
    }

    #[test]
    fn the_random_split_follows_the_weight() {
        let p = policy(2500, serde_json::json!({"sticky": null}));
        let mut g = SplitMix64(12345);
        let n = 100_000;
        let on_canary = (0..n)
            .filter(|_| decide(&p, &mut Req::default(), &mut g).variant == 1)
            .count();
        let got = on_canary as f64 / n as f64;
        assert!((got - 0.25).abs() < 0.01, "got {got}");
    }

    proptest! {
        /// As the canary grows, no user on it ever leaves it.
        #[test]
        fn users_never_leave_a_growing_canary(
            keys in prop::collection::vec("[a-zA-Z0-9@._-]{1,40}", 1..50),
            mut weights in prop::collection::vec(0u32..=10_000, 2..8),
        ) {
            weights.sort_unstable();
            for key in &keys {
                let mut was_canary = false;
                for &w in &weights {
                    let is_canary = assign(&policy(w, serde_json::json!({})), key) == Some(1);
                    prop_assert!(is_canary || !was_canary, "{key} left the canary at {w} bp");
                    was_canary = is_canary;
                }
            }
        }

        /// A matching rule decides, whatever the weights and the sticky key.
        #[test]
        fn rules_beat_percentages(w in 0u32..=10_000, key in "[a-z0-9]{0,12}", to_stable in any::<bool>()) {
            let target = if to_stable { "stable" } else { "canary" };
            let p = policy(w, serde_json::json!({
                "rules": [{"match": {"header": "x-user-segment", "exact": "beta"}, "variant": target}]
            }));
            let mut r = Req::default().header("x-user-segment", "beta").header("x-user-id", &key);
            let d = decide(&p, &mut r, &mut rng());
            prop_assert_eq!(d.variant, usize::from(!to_stable));
            prop_assert_eq!(d.reason, Reason::Rule(0));
        }

        /// Every decision names a variant with weight, unless a rule chose it.
        #[test]
        fn no_traffic_to_a_zero_weight_variant(key in "[a-z0-9]{1,12}", seed in any::<u64>()) {
            for w in [0u32, 10_000] {
                let p = policy(w, serde_json::json!({}));
                let want = usize::from(w == 10_000);
                prop_assert_eq!(decide(&p, &mut Req::default().header("x-user-id", &key), &mut SplitMix64(seed)).variant, want);
                prop_assert_eq!(decide(&p, &mut Req::default(), &mut SplitMix64(seed)).variant, want);
            }
        }
    }
}
