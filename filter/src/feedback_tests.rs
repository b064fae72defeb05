use super::*;
use crate::config::Config;
use crate::ticket::{sign, Key, Ticket};

const KEY: &str = "bWxjYW5hcnktdGVzdC1rZXktMDEyMzQ1Njc4OWFiY2RlZg==";
const OLD_KEY: &str = "b2xkLWtleS1vbGQta2V5LW9sZC1rZXktb2xkLWtleQ==";
const NOW: u64 = 1_765_000_000;

fn config() -> Config {
    let json = format!(
        r#"{{"policies": [{{
            "name": "fraud-model", "namespace": "ml", "hosts": ["fraud-model"],
            "variants": [{{"name": "stable", "weight_bp": 8000}}, {{"name": "canary", "weight_bp": 2000}}],
            "segment": {{"header": "x-age", "values": ["18-30", "60+"]}},
            "predictions": {{"format": "tfserving", "class_index": 1}},
            "feedback": {{"keys": ["{KEY}", "{OLD_KEY}"], "max_age_s": 3600, "replay_window": 4}}
        }}]}}"#
    );
    Config::from_json(json.as_bytes()).unwrap()
}

fn key(b64: &str) -> Key {
    Key::new(crate::b64::decode_std(b64).unwrap()).unwrap()
}

fn ticket(variant: &str, segment: &str, classes: &[bool], nonce: u64) -> Ticket {
    Ticket {
        namespace: "ml".into(),
        policy: "fraud-model".into(),
        variant: variant.into(),
        segment: segment.into(),
        classes: classes.to_vec(),
        scores: classes.iter().map(|&c| if c { 900 } else { 100 }).collect(),
        issued: NOW - 10,
        nonce,
    }
}

fn item(t: &str, label: bool, instance: usize) -> Item {
    Item {
        ticket: t.into(),
        label,
        instance,
    }
}

#[test]
fn feedback_paths() {
    assert!(is_feedback_path("/v1/models/fraud:feedback"));
    assert!(is_feedback_path("/v1/models/fraud:feedback?x=1"));
    for p in [
        "/v1/models/fraud:predict",
        "/v1/models/:feedback",
        "/v1/models/a/b:feedback",
        "/v2/models/fraud:feedback",
        "/feedback",
    ] {
        assert!(!is_feedback_path(p), "{p}");
    }
}

#[test]
fn labels_count_into_the_tickets_cell() {
    let c = config();
    let (p, fb) = (&c.policies[0], c.policies[0].feedback.as_ref().unwrap());
    let mut w = ReplayWindow::default();
    let k = key(KEY);
    let cases = [
        ("canary", "60+", true, false, Confusion::Fp, 1, 1),
        ("canary", "60+", true, true, Confusion::Tp, 1, 1),
        ("stable", "18-30", false, false, Confusion::Tn, 0, 0),
        ("stable", "", false, true, Confusion::Fn, 0, 2),
    ];
    for (i, (v, seg, predicted, label, want, vi, si)) in cases.into_iter().enumerate() {
        let s = sign(&k, &ticket(v, seg, &[predicted], i as u64));
        let got = judge(p, fb, Some(&item(&s, label, 0)), NOW, &mut w);
        assert_eq!(
            got,
            Ok(Counted {
                variant: vi,
                segment: si,
                outcome: want
            })
        );
    }
}

#[test]
fn rejections_count_nothing_and_say_why() {
    let c = config();
    let (p, fb) = (&c.policies[0], c.policies[0].feedback.as_ref().unwrap());
    let mut w = ReplayWindow::default();
    let good = sign(&key(KEY), &ticket("canary", "60+", &[true, false], 1));
    let stranger = Key::new(b"somebody-elses-key-0123456789".to_vec()).unwrap();
    let mut other = ticket("canary", "60+", &[true], 2);
    other.policy = "other-model".into();
    let mut old = ticket("canary", "60+", &[true], 3);
    old.issued = NOW - 3601;
    let mut ahead = ticket("canary", "60+", &[true], 4);
    ahead.issued = NOW + 3600;
    let mut ghost = ticket("ghost", "60+", &[true], 5);
    ghost.issued = NOW;
    let k = key(KEY);
    // The MAC of a valid ticket, moved onto another payload.
    let (_, mac) = good.rsplit_once('.').unwrap();
    let other_signed = sign(&k, &ticket("stable", "60+", &[true], 6));
    let (head, _) = other_signed.rsplit_once('.').unwrap();
    let spliced = format!("{head}.{mac}");
    let cases = [
        (Some(item("not a ticket", true, 0)), Reject::Malformed),
        (None, Reject::Malformed),
        (Some(item(&good, true, 2)), Reject::Malformed),
        (
            Some(item(
                &sign(&stranger, &ticket("canary", "60+", &[true], 7)),
                true,
                0,
            )),
            Reject::UnknownKey,
        ),
        (Some(item(&spliced, true, 0)), Reject::BadMac),
        (Some(item(&sign(&k, &other), true, 0)), Reject::WrongPolicy),
        (Some(item(&sign(&k, &ghost), true, 0)), Reject::WrongPolicy),
        (Some(item(&sign(&k, &old), true, 0)), Reject::Expired),
        (Some(item(&sign(&k, &ahead), true, 0)), Reject::Future),
    ];
    for (it, want) in cases {
        assert_eq!(judge(p, fb, it.as_ref(), NOW, &mut w), Err(want), "{it:?}");
    }
    assert!(
        w.is_empty(),
        "a rejected ticket takes no place in the replay window"
    );
    // The previous key still verifies; each instance of a batch counts once.
    let prev = sign(&key(OLD_KEY), &ticket("canary", "60+", &[true, false], 8));
    assert!(judge(p, fb, Some(&item(&prev, true, 0)), NOW, &mut w).is_ok());
    assert!(judge(p, fb, Some(&item(&prev, false, 1)), NOW, &mut w).is_ok());
    assert_eq!(
        judge(p, fb, Some(&item(&prev, false, 0)), NOW, &mut w),
        Err(Reject::Replay)
    );
}

#[test]
fn the_replay_window_is_bounded() {
    let mut w = ReplayWindow::default();
    for id in 0..10 {
        assert!(w.admit(id, 4));
    }
    assert_eq!(w.len(), 4);
    assert!(!w.admit(9, 4));
    assert!(w.admit(0, 4), "forgotten once out of the window");
    assert!(w.admit(0, 0) && w.admit(0, 0), "0 turns the check off");
}

#[test]
fn bodies() {
    let ok = br#"{"feedback": [{"ticket": "t", "label": 1}, {"ticket": "u", "label": false, "instance": 3},
        {"ticket": "v", "label": 2}, {"ticket": 5, "label": 1}, {"label": 1}, {"ticket": "w", "label": 1, "x": 0}, 7]}"#;
    let items = parse(ok).unwrap();
    assert_eq!(items[0], Some(item("t", true, 0)));
    assert_eq!(items[1], Some(item("u", false, 3)));
    assert!(items[2..].iter().all(Option::is_none));
    assert!(matches!(parse(b"{"), Err(BodyError::NotJson(_))));
    assert_eq!(parse(b"[]"), Err(BodyError::Shape));
    assert_eq!(parse(br#"{"feedback": {}}"#), Err(BodyError::Shape));
    let many = format!(
        r#"{{"feedback": [{}]}}"#,
        vec!["1"; MAX_ITEMS + 1].join(",")
    );
    assert_eq!(
        parse(many.as_bytes()),
        Err(BodyError::TooMany(MAX_ITEMS + 1))
    );
}

#[test]
fn the_reply_sums_up() {
    let counted = Counted {
        variant: 0,
        segment: 0,
        outcome: Confusion::Tp,
    };
    let body = reply_body(&[Ok(counted), Err(Reject::BadMac), Err(Reject::BadMac)]);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["accepted"], 1);
    assert_eq!(v["rejected"]["bad_mac"], 2);
    assert_eq!(v["results"][1], "bad_mac");
    assert_eq!(
        reply_body(&[]),
        r#"{"accepted":0,"rejected":{},"results":[]}"#
    );
    let e: serde_json::Value = serde_json::from_str(&error_body("a \"b\" \\ \n")).unwrap();
    assert_eq!(e["error"], "a \"b\" \\ \n");
}

#[test]
fn config_errors_name_the_field() {
    let base = |fb: &str, pred: bool| {
        format!(
            r#"{{"policies": [{{"name": "p", "hosts": ["h"], "variants": [{{"name": "s", "weight_bp": 10000}}]{}, "feedback": {fb}}}]}}"#,
            if pred { r#", "predictions": {}"# } else { "" }
        )
    };
    let err = |fb: &str, pred: bool| {
        Config::from_json(base(fb, pred).as_bytes())
            .unwrap_err()
            .to_string()
    };
    assert!(err(&format!(r#"{{"keys": ["{KEY}"]}}"#), false).contains("needs `predictions`"));
    assert!(err(r#"{"keys": []}"#, true).contains("feedback.keys"));
    assert!(err(r#"{"keys": ["c2hvcnQ="]}"#, true).contains("shorter than 16 bytes"));
    assert!(err(r#"{"keys": ["***"]}"#, true).contains("not base64"));
    assert!(err(&format!(r#"{{"keys": ["{KEY}", "{KEY}"]}}"#), true).contains("listed twice"));
    assert!(err(&format!(r#"{{"keys": ["{KEY}"], "max_age_s": 0}}"#), true).contains("max_age_s"));
    let raw: crate::config::RawConfig =
        serde_json::from_str(&base(&format!(r#"{{"keys": ["{KEY}"]}}"#), true)).unwrap();
    assert!(!format!("{raw:?}").contains(KEY), "Debug never shows a key");
}

#[test]
fn the_hold_route_matches_feedback_paths_only() {
    let any = regex_lite::Regex::new(&hold_path_regex(None)).unwrap();
    assert!(any.is_match("/v1/models/fraud:feedback"));
    assert!(!any.is_match("/v1/models/fraud:predict"));
    assert!(!any.is_match("/v1/models/a/b:feedback"));
    let one = regex_lite::Regex::new(&hold_path_regex(Some("fraud.v2"))).unwrap();
    assert!(one.is_match("/v1/models/fraud.v2:feedback"));
    assert!(!one.is_match("/v1/models/fraudxv2:feedback"));
    assert!(!one.is_match("/v1/models/other:feedback"));
}
