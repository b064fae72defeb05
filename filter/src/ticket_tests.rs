use super::*;

fn key(b: u8) -> Key {
    Key::new(vec![b; 32]).unwrap()
}

fn ticket() -> Ticket {
    Ticket {
        namespace: "ml".into(),
        policy: "fraud-model".into(),
        variant: "canary".into(),
        segment: "60+".into(),
        classes: vec![true, false],
        scores: vec![912, 33],
        issued: 1_765_000_000,
        nonce: 0x0123_4567_89ab_cdef,
    }
}

#[test]
fn round_trip_with_the_current_or_the_previous_key() {
    let (new, old) = (key(1), key(2));
    let s = sign(&old, &ticket());
    assert!(s.starts_with(&format!("v1.{}.", old.id)));
    let keys = [new.clone(), old];
    assert_eq!(verify(&keys, &s, 1_765_000_100, 3600), Ok(ticket()));
    assert_eq!(
        verify(&[new], &s, 1_765_000_100, 3600),
        Err(Reject::UnknownKey)
    );
}

#[test]
fn any_changed_character_is_refused() {
    let k = key(7);
    let s = sign(&k, &ticket());
    for i in 0..s.len() {
        let mut b = s.clone().into_bytes();
        b[i] = if b[i] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(b).unwrap();
        assert!(
            verify(std::slice::from_ref(&k), &forged, 1_765_000_000, 60).is_err(),
            "{i}"
        );
    }
}

#[test]
fn age_window() {
    let k = key(3);
    let s = sign(&k, &ticket());
    let keys = [k];
    assert!(verify(&keys, &s, 1_765_000_060, 60).is_ok());
    assert_eq!(verify(&keys, &s, 1_765_000_061, 60), Err(Reject::Expired));
    assert!(verify(&keys, &s, 1_765_000_000 - MAX_SKEW_S, 60).is_ok());
    assert_eq!(
        verify(&keys, &s, 1_765_000_000 - MAX_SKEW_S - 1, 60),
        Err(Reject::Future)
    );
}

#[test]
fn short_keys_and_junk() {
    assert!(Key::new(vec![0; MIN_KEY_BYTES - 1]).is_none());
    let keys = [key(4)];
    for junk in ["", ".", "v1", "v1..", "v2.a.b.c", "v1.a.b.c.d", "v1.x.y.!!"] {
        assert!(verify(&keys, junk, 0, 60).is_err(), "{junk:?}");
    }
    assert_eq!(
        verify(&keys, &"v".repeat(2000), 0, 60),
        Err(Reject::Malformed)
    );
}

#[test]
fn embedding_keeps_the_json_valid() {
    for body in [
        &br#"{"predictions": [[0.2, 0.8]]}"#[..],
        b"  {\n}",
        b"{}",
        br#"{"outputs":[{"name":"p","data":[0.5]}]}"#,
    ] {
        let with = embed(body, "v1.abc.def.ghi").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&with).unwrap();
        assert_eq!(v[FIELD], "v1.abc.def.ghi");
        let mut v = v;
        v.as_object_mut().unwrap().remove(FIELD);
        assert_eq!(
            v,
            serde_json::from_slice::<serde_json::Value>(body).unwrap()
        );
    }
    assert_eq!(embed(b"[1]", "t"), None);
    assert_eq!(embed(b"", "t"), None);
}

#[test]
fn the_key_id_never_shows_the_secret() {
    let k = key(9);
    assert_eq!(k.id.len(), 8);
    assert!(!format!("{k:?}").contains("9, 9"));
}
