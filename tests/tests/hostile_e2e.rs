//! Hostile and odd requests through a real Envoy with the filter: the filter never traps the VM,
//! every request gets the answer it would have got without the filter, and the stats still count.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use mlcanary_e2e::envoy::{wait_for, Envoy, EnvoySetup};
use mlcanary_e2e::http::{self, Response};
use mlcanary_e2e::patience;
use mlcanary_e2e::upstream::Upstream;
use serde_json::json;

const HOST: &str = "fraud-model";

fn config(max_body_bytes: u32) -> serde_json::Value {
    json!({"policies": [{
        "name": "fraud-model", "hosts": [HOST],
        "variants": [{"name": "stable", "weight_bp": 10000}, {"name": "canary", "weight_bp": 0}],
        "sticky": {"header": "x-user-id", "cookie": "mlcanary-uid", "salt": "s", "assign_cookie": true},
        "rules": [{"match": {"cookie": "tester", "regex": "qa-[0-9]+"}, "variant": "canary"}],
        "predictions": {"max_body_bytes": max_body_bytes}
    }]})
}

/// The same upstreams behind two Envoys: one with the filter, one without.
struct Pair {
    stable: Upstream,
    _canary: Upstream,
    with: Envoy,
    without: Envoy,
}

fn pair() -> Pair {
    let stable = Upstream::start("stable");
    let canary = Upstream::start("canary");
    let variants = [("stable", stable.port), ("canary", canary.port)];
    let with = Envoy::start(EnvoySetup::new(&variants, config(4096)));
    let mut plain = EnvoySetup::new(&variants, json!({}));
    plain.filter_config = None;
    let without = Envoy::start(plain);
    Pair {
        stable,
        _canary: canary,
        with,
        without,
    }
}

/// Status and upstream of one raw request, sent to both Envoys.
fn both(p: &Pair, raw: &[u8]) -> (Response, Response) {
    let a = http::send_raw(p.with.port, raw).expect("through the filter");
    let b = http::send_raw(p.without.port, raw).expect("without the filter");
    (a, b)
}

fn same_answer(p: &Pair, raw: &[u8], what: &str) -> Response {
    let (a, b) = both(p, raw);
    assert_eq!(
        a.status, b.status,
        "{what}: status with vs without the filter"
    );
    assert_eq!(
        a.served_by(),
        b.served_by(),
        "{what}: upstream with vs without the filter"
    );
    a
}

fn request(extra_headers: &str, body: &str) -> Vec<u8> {
    format!(
        "POST /v1/models/fraud:predict HTTP/1.1\r\nhost: {HOST}\r\nconnection: close\r\n\
         content-length: {}\r\n{extra_headers}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[test]
fn oversized_and_malformed_headers_and_cookies() {
    let p = pair();
    let big_id = "u".repeat(40_000);
    same_answer(
        &p,
        &request(&format!("x-user-id: {big_id}\r\n"), "{}"),
        "40 KB sticky key",
    );
    let many: String = (0..1500).map(|i| format!("c{i}=v{i}; ")).collect();
    let r = same_answer(
        &p,
        &request(&format!("cookie: {many}mlcanary-uid=last\r\n"), "{}"),
        "1500 cookies",
    );
    assert!(
        r.header("set-cookie").is_none(),
        "the sticky cookie at the end was found"
    );
    for cookie in [
        "=;;;=;",
        "mlcanary-uid",
        "mlcanary-uid==x",
        ";",
        "tester=qa-",
        "tester=\"qa-1",
        "\t=\t",
    ] {
        same_answer(&p, &request(&format!("cookie: {cookie}\r\n"), "{}"), cookie);
    }
    // Over Envoy's header limit: Envoy answers 431 itself, with or without the filter.
    let huge = "h".repeat(70 * 1024);
    let r = same_answer(
        &p,
        &request(&format!("x-user-id: {huge}\r\n"), "{}"),
        "70 KB header",
    );
    assert_eq!(r.status, 431);
    // A spoofed tag on top of everything.
    let r = http::send_raw(
        p.with.port,
        &request("x-mlcanary-variant: canary\r\ncookie: =;\r\n", "{}"),
    )
    .unwrap();
    assert_eq!(r.served_by().as_deref(), Some("stable"));
    let counted = wait_for(patience::SETTLE, || {
        p.with.sample(
            "mlcanary_requests_total",
            &[("policy", "fraud-model"), ("variant", "stable")],
        )
    });
    assert!(counted.is_some_and(|n| n >= 10.0), "{counted:?}");
}

#[test]
fn huge_and_slow_request_bodies_pass_through() {
    let p = pair();
    // Under Envoy's default 1 MiB buffer limit, which applies with and without the filter alike.
    let body = "x".repeat(900 * 1024);
    let r = same_answer(&p, &request("", &body), "900 KB request body");
    assert_eq!(r.status, 200);
    // A slow client: headers, then the body in pieces with pauses.
    let mut s = TcpStream::connect(("127.0.0.1", p.with.port)).unwrap();
    s.set_read_timeout(Some(patience::SETTLE)).unwrap();
    let head = format!("POST /v1/models/fraud:predict HTTP/1.1\r\nhost: {HOST}\r\nconnection: close\r\ncontent-length: 30\r\n\r\n");
    s.write_all(head.as_bytes()).unwrap();
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(300));
        s.write_all(b"0123456789").unwrap();
    }
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("\"served_by\":\"stable\""), "{out}");
}

#[test]
fn huge_and_malformed_reply_bodies_are_counted_and_delivered_intact() {
    let p = pair();
    let failures = |want: f64| {
        p.with.sample_eventually(
            "mlcanary_body_parse_failures_total",
            &[("policy", "fraud-model"), ("variant", "stable")],
            want,
        )
    };
    let big = format!("{{\"predictions\": [{}0.5]}}", "0.5, ".repeat(200_000));
    let bodies = [
        big.as_str(),
        "{\"predictions\": [[0.1, 0.9",
        "\u{0}\u{1}binary",
        "{\"predictions\": {\"nested\": [[[[[[1]]]]]]}}",
    ];
    for (i, b) in bodies.iter().enumerate() {
        p.stable.set_body(Some(b));
        let (a, plain) = both(&p, &request("", "{}"));
        assert_eq!(a.status, 200);
        assert_eq!(a.body.len(), b.len(), "reply {i} delivered whole");
        assert_eq!(
            a.body, plain.body,
            "reply {i} identical with and without the filter"
        );
        assert_eq!(
            failures((i + 1) as f64),
            Some((i + 1) as f64),
            "reply {i} counted as unreadable"
        );
    }
    // And the VM is alive: a good reply is read.
    p.stable.set_body(Some("{\"predictions\": [0.9]}"));
    http::send_raw(p.with.port, &request("", "{}")).unwrap();
    let pos = p.with.sample_eventually(
        "mlcanary_positive_predictions_total",
        &[("policy", "fraud-model"), ("variant", "stable")],
        1.0,
    );
    assert_eq!(pos, Some(1.0));
}
