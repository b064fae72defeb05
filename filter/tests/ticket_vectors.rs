//! Ticket vectors from an independent implementation (`gen_ticket_vectors.py`: Python's hmac,
//! hashlib and base64), checked natively and compiled to wasm32 under Node: the .wasm that signs in
//! Envoy, the controller and any application's own verifier agree on every byte. The controller's
//! tests read the same file.

use mlcanary_filter::b64;
use mlcanary_filter::ticket::{sign, verify, Key, Ticket};

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

const VECTORS: &str = include_str!("ticket_vectors.txt");

fn key(b64: &str) -> Key {
    Key::new(b64::decode_std(b64).expect("base64 key")).expect("key length")
}

fn rows(kind: &str) -> impl Iterator<Item = Vec<&'static str>> + '_ {
    VECTORS
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .filter(move |f| f[0] == kind)
}

fn dash(s: &str) -> &str {
    if s == "-" {
        ""
    } else {
        s
    }
}

#[test]
fn signing_matches_the_independent_implementation() {
    let mut n = 0;
    for f in rows("sign") {
        let k = key(f[1]);
        let t = Ticket {
            namespace: f[2].into(),
            policy: f[3].into(),
            variant: f[4].into(),
            segment: dash(f[5]).into(),
            classes: dash(f[6]).bytes().map(|b| b == b'1').collect(),
            scores: dash(f[7])
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|s| s.parse().unwrap())
                .collect(),
            issued: f[8].parse().unwrap(),
            nonce: u64::from_str_radix(f[9], 16).unwrap(),
        };
        assert_eq!(sign(&k, &t), f[10], "{f:?}");
        assert_eq!(verify(&[k], f[10], t.issued, 60).as_ref(), Ok(&t));
        n += 1;
    }
    assert_eq!(n, 20);
}

#[test]
fn rejections_match_the_independent_implementation() {
    let mut n = 0;
    for f in rows("reject") {
        let got = verify(
            &[key(f[1])],
            f[5],
            f[2].parse().unwrap(),
            f[3].parse().unwrap(),
        );
        assert_eq!(got.map_err(|r| r.label()), Err(f[4]), "{f:?}");
        n += 1;
    }
    assert_eq!(n, 9);
}
