//! Ground truth through a real Envoy: the ticket on each reply, and the feedback path the filter
//! answers itself — good, forged, expired, replayed, malformed and oversized feedback. Only valid
//! tickets move an outcome counter; the model never sees a feedback request.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use mlcanary_e2e::envoy::{find_sample, Envoy, EnvoySetup};
use mlcanary_e2e::http::{self, Response};
use mlcanary_e2e::upstream::Upstream;
use mlcanary_filter::b64;
use mlcanary_filter::ticket::{self, Key};
use serde_json::{json, Value};

const HOST: &str = "fraud-model";
const PLAIN: &str = "plain-model";
const KEY: &str = "bWxjYW5hcnktdGVzdC1rZXktMDEyMzQ1Njc4OWFiY2RlZg==";
const OLD_KEY: &str = "b2xkLWtleS1vbGQta2V5LW9sZC1rZXktb2xkLWtleQ==";
const BANDS: [&str; 3] = ["18-30", "31-60", "60+"];
const MAX_BODY: usize = 16 * 1024;

fn config() -> Value {
    let variants = json!([
        {"name": "stable", "weight_bp": 5000},
        {"name": "canary", "weight_bp": 5000}
    ]);
    json!({"policies": [
        {
            "name": "fraud-model", "namespace": "ml", "hosts": [HOST],
            "variants": variants,
            "sticky": {"header": "x-user-id", "salt": "fraud-model"},
            "segment": {"header": "x-customer-age-band", "values": BANDS},
            "predictions": {"format": "tfserving", "class_index": 1, "positive_threshold": 0.5},
            "feedback": {"keys": [KEY, OLD_KEY], "max_age_s": 600, "max_body_bytes": MAX_BODY}
        },
        {
            "name": "plain-model", "namespace": "ml", "hosts": [PLAIN],
            "variants": variants,
            "predictions": {"format": "tfserving", "class_index": 1}
        }
    ]})
}

struct Rig {
    stable: Upstream,
    canary: Upstream,
    envoy: Envoy,
}

impl Rig {
    fn start() -> Rig {
        let stable = Upstream::start("stable");
        let canary = Upstream::start("canary");
        // Stable says "legit" (class 1 at 0.1), the canary "fraud" (0.8).
        stable.set_body(Some(r#"{"predictions": [[0.9, 0.1]]}"#));
        canary.set_body(Some(r#"{"predictions": [[0.2, 0.8]]}"#));
        let mut setup = EnvoySetup::new(
            &[("stable", stable.port), ("canary", canary.port)],
            config(),
        );
        // One worker, one VM: the replay window is per VM (SECURITY.md), so a replay is refused
        // here whichever connection it comes on.
        setup.concurrency = 1;
        let envoy = Envoy::start(setup);
        Rig {
            stable,
            canary,
            envoy,
        }
    }

    fn served(&self) -> u64 {
        self.stable.served.load(Ordering::SeqCst) + self.canary.served.load(Ordering::SeqCst)
    }

    fn predict(&self, host: &str, user: usize, band: &str) -> Response {
        let user = format!("customer-{user}");
        let r = http::post(
            self.envoy.port,
            host,
            "/v1/models/fraud:predict",
            &[("x-user-id", &user), ("x-customer-age-band", band)],
            br#"{"instances": [{"amount": 12.5}]}"#,
        )
        .unwrap_or_else(|e| panic!("predict through envoy: {e}\n{}", self.envoy.log_tail()));
        assert_eq!(r.status, 200, "{r:?}");
        r
    }

    fn feedback(&self, body: &[u8]) -> Response {
        self.feedback_with("POST", HOST, body)
    }

    fn feedback_with(&self, method: &str, host: &str, body: &[u8]) -> Response {
        let req = format!(
            "{method} /v1/models/fraud:feedback HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        http::send_raw(self.envoy.port, &bytes)
            .unwrap_or_else(|e| panic!("feedback through envoy: {e}\n{}", self.envoy.log_tail()))
    }

    /// Every `mlcanary_feedback_total` series: (variant, segment, outcome) → count.
    fn outcomes(&self) -> HashMap<(String, String, String), f64> {
        let text = self.envoy.prometheus();
        let mut out = HashMap::new();
        for v in ["stable", "canary"] {
            for s in BANDS {
                for o in ["tp", "fp", "tn", "fn"] {
                    let labels = [
                        ("policy_namespace", "ml"),
                        ("policy", "fraud-model"),
                        ("variant", v),
                        ("segment", s),
                        ("outcome", o),
                    ];
                    // A tuple's four counters are defined together: zeros are left out.
                    if let Some(n) = find_sample(&text, "mlcanary_feedback_total", &labels) {
                        if n > 0.0 {
                            out.insert((v.into(), s.into(), o.into()), n);
                        }
                    }
                }
            }
        }
        out
    }

    fn rejected(&self, reason: &str) -> f64 {
        let labels = [
            ("policy_namespace", "ml"),
            ("policy", "fraud-model"),
            ("reason", reason),
        ];
        find_sample(
            &self.envoy.prometheus(),
            "mlcanary_feedback_rejected_total",
            &labels,
        )
        .unwrap_or(0.0)
    }
}

fn key(b: &str) -> Key {
    Key::new(b64::decode_std(b).unwrap()).unwrap()
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn items(tickets: &[(&str, u8)]) -> Vec<u8> {
    let v: Vec<Value> = tickets
        .iter()
        .map(|(t, l)| json!({"ticket": t, "label": l}))
        .collect();
    json!({ "feedback": v }).to_string().into_bytes()
}

/// The ticket the filter put into a reply's JSON.
fn ticket_of(r: &Response) -> Option<String> {
    let v: Value = serde_json::from_str(&r.body).ok()?;
    v.get(ticket::FIELD)?.as_str().map(str::to_owned)
}

fn answer(r: &Response) -> Value {
    assert_eq!(r.header("content-type"), Some("application/json"), "{r:?}");
    serde_json::from_str(&r.body).expect("a JSON answer")
}

#[test]
fn tickets_and_labels_count_per_variant_and_segment_and_nothing_else_does() {
    let r = Rig::start();
    let k = key(KEY);
    // Predictions: each reply carries a ticket that says who answered, for whom, and what.
    let mut tickets = Vec::new();
    for i in 0..60 {
        let band = BANDS[i % 3];
        let resp = r.predict(HOST, i, band);
        let canary = resp.body.contains("0.8");
        let t = ticket_of(&resp).unwrap_or_else(|| panic!("no ticket in {resp:?}"));
        let t = t.as_str();
        let got = ticket::verify(std::slice::from_ref(&k), t, now_s(), 600).expect("valid ticket");
        assert_eq!(got.variant, if canary { "canary" } else { "stable" });
        assert_eq!(got.segment, band);
        assert_eq!(
            (got.namespace.as_str(), got.policy.as_str()),
            ("ml", "fraud-model")
        );
        assert_eq!(got.classes, vec![canary]);
        assert_eq!(got.scores, vec![if canary { 800 } else { 100 }]);
        // The reply is the model's, with the ticket as one more member.
        let mut v: Value = serde_json::from_str(&resp.body).unwrap();
        v.as_object_mut().unwrap().remove(ticket::FIELD);
        let p = if canary { [0.2, 0.8] } else { [0.9, 0.1] };
        assert_eq!(v, json!({"predictions": [p]}), "{resp:?}");
        tickets.push((t.to_owned(), canary, band));
    }
    let served = r.served();
    assert_eq!(served, 60);
    // A policy without `feedback` signs nothing.
    let plain = r.predict(PLAIN, 1, "18-30");
    assert_eq!(ticket_of(&plain), None);
    assert_eq!(
        plain.header("content-length"),
        Some("29"),
        "untouched: {plain:?}"
    );

    // Good feedback: every transaction turned out to be fraud (label 1).
    let good: Vec<(&str, u8)> = tickets.iter().map(|(t, _, _)| (t.as_str(), 1)).collect();
    let resp = r.feedback(&items(&good));
    assert_eq!(resp.status, 200, "{resp:?}");
    let a = answer(&resp);
    assert_eq!(a["accepted"], 60, "{a}");
    let mut want: HashMap<(String, String, String), f64> = HashMap::new();
    for (_, canary, band) in &tickets {
        let (v, o) = if *canary {
            ("canary", "tp")
        } else {
            ("stable", "fn")
        };
        *want
            .entry((v.into(), (*band).into(), o.into()))
            .or_default() += 1.0;
    }
    let counted = mlcanary_e2e::envoy::wait_for(mlcanary_e2e::patience::SETTLE, || {
        let got = r.outcomes();
        (got == want).then_some(got)
    });
    assert_eq!(counted.unwrap_or_else(|| r.outcomes()), want);

    // Then everything that must count nothing.
    let (t0, _, _) = &tickets[0];
    let mut forged = ticket::verify(std::slice::from_ref(&k), t0, now_s(), 600).unwrap();
    forged.variant = if forged.variant == "canary" {
        "stable".into()
    } else {
        "canary".into()
    };
    let stranger = Key::new(b"an-attacker-made-up-this-key".to_vec()).unwrap();
    let forged_key = ticket::sign(&stranger, &forged);
    // The payload altered, the MAC kept.
    let (_, mac) = t0.rsplit_once('.').unwrap();
    let (head, _) = ticket::sign(&k, &forged)
        .rsplit_once('.')
        .map(|(h, m)| (h.to_owned(), m.to_owned()))
        .unwrap();
    let altered = format!("{head}.{mac}");
    let mut old = forged.clone();
    old.issued = now_s() - 3600;
    old.nonce ^= 1;
    let expired = ticket::sign(&k, &old);
    let mut other = forged.clone();
    other.policy = "plain-model".into();
    let wrong_policy = ticket::sign(&k, &other);
    let bad = [
        (forged_key.as_str(), 0),
        (altered.as_str(), 0),
        (expired.as_str(), 0),
        (wrong_policy.as_str(), 0),
        (t0.as_str(), 0), // a replay, with the opposite label
        ("v1.garbage", 1),
    ];
    let resp = r.feedback(&items(&bad));
    assert_eq!(resp.status, 200, "{resp:?}");
    let a = answer(&resp);
    assert_eq!(a["accepted"], 0, "{a}");
    assert_eq!(
        a["results"],
        json!([
            "unknown_key",
            "bad_mac",
            "expired",
            "wrong_policy",
            "replay",
            "malformed"
        ])
    );
    for reason in [
        "unknown_key",
        "bad_mac",
        "expired",
        "wrong_policy",
        "replay",
        "malformed",
    ] {
        let n = mlcanary_e2e::envoy::wait_for(mlcanary_e2e::patience::SETTLE, || {
            (r.rejected(reason) == 1.0).then_some(())
        });
        assert!(n.is_some(), "{reason}: {}", r.rejected(reason));
    }

    // Bodies the filter refuses outright, each with a clear status and reason.
    let cases: [(&str, &str, Vec<u8>, u16, &str); 5] = [
        ("POST", HOST, b"not json".to_vec(), 400, "not JSON"),
        (
            "POST",
            HOST,
            br#"{"feedback": 3}"#.to_vec(),
            400,
            "`feedback` array",
        ),
        ("POST", HOST, Vec::new(), 400, "empty"),
        ("GET", HOST, Vec::new(), 405, "POST"),
        (
            "POST",
            HOST,
            vec![b' '; MAX_BODY + 1],
            413,
            "over 16384 bytes",
        ),
    ];
    for (method, host, body, status, says) in cases {
        let resp = r.feedback_with(method, host, &body);
        assert_eq!(
            resp.status,
            status,
            "{method} {} bytes: {resp:?}",
            body.len()
        );
        let a = answer(&resp);
        let e = a["error"].as_str().unwrap_or_default();
        assert!(e.contains(says), "{e:?} should say {says:?}");
    }
    // An oversized body without a declared length (chunked) is refused as it arrives.
    let chunk = vec![b' '; 9000];
    let mut raw = format!(
        "POST /v1/models/fraud:feedback HTTP/1.1\r\nhost: {HOST}\r\nconnection: close\r\n\
         transfer-encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..2 {
        raw.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        raw.extend_from_slice(&chunk);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let resp = http::send_raw(r.envoy.port, &raw).expect("chunked feedback");
    assert_eq!(resp.status, 413, "{resp:?}");

    // Nothing above moved an outcome counter, and no feedback request reached a model.
    assert_eq!(r.outcomes(), want);
    assert_eq!(
        r.served(),
        served + 1,
        "only the plain-model prediction was served"
    );
    // The previous key still verifies (rotation): a ticket it signed counts.
    let mut rotated = forged.clone();
    rotated.variant = "canary".into();
    rotated.segment = "60+".into();
    rotated.classes = vec![true];
    rotated.nonce = 0x5eed;
    rotated.issued = now_s();
    let resp = r.feedback(&items(&[(&ticket::sign(&key(OLD_KEY), &rotated), 0)]));
    assert_eq!(answer(&resp)["accepted"], 1, "{resp:?}");
    *want
        .entry(("canary".into(), "60+".into(), "fp".into()))
        .or_default() += 1.0;
    let counted = mlcanary_e2e::envoy::wait_for(mlcanary_e2e::patience::SETTLE, || {
        (r.outcomes() == want).then_some(())
    });
    assert!(counted.is_some(), "{:?} != {want:?}", r.outcomes());
}

/// A batched reply's ticket covers each instance; labels name the instance they are for.
#[test]
fn a_batch_gets_one_ticket_and_labels_per_instance() {
    let r = Rig::start();
    r.canary.set_body(Some(
        r#"{"predictions": [[0.2, 0.8], [0.7, 0.3], [0.4, 0.6]]}"#,
    ));
    r.stable.set_body(Some(
        r#"{"predictions": [[0.2, 0.8], [0.7, 0.3], [0.4, 0.6]]}"#,
    ));
    let resp = r.predict(HOST, 7, "60+");
    let t = ticket_of(&resp).expect("ticket");
    let got = ticket::verify(&[key(KEY)], &t, now_s(), 600).unwrap();
    assert_eq!(got.classes, vec![true, false, true]);
    assert_eq!(got.scores, vec![800, 300, 600]);
    let body = json!({"feedback": [
        {"ticket": t, "label": 0, "instance": 0},
        {"ticket": t, "label": 0, "instance": 1},
        {"ticket": t, "label": 1, "instance": 2},
        {"ticket": t, "label": 1, "instance": 3}
    ]});
    let a = answer(&r.feedback(body.to_string().as_bytes()));
    assert_eq!(
        a["results"],
        json!(["counted", "counted", "counted", "malformed"])
    );
    let v = got.variant.as_str();
    let want: HashMap<(String, String, String), f64> = [("fp", 1.0), ("tn", 1.0), ("tp", 1.0)]
        .into_iter()
        .map(|(o, n)| ((v.to_owned(), "60+".to_owned(), o.to_owned()), n))
        .collect();
    let counted = mlcanary_e2e::envoy::wait_for(mlcanary_e2e::patience::SETTLE, || {
        (r.outcomes() == want).then_some(())
    });
    assert!(counted.is_some(), "{:?} != {want:?}", r.outcomes());
}
