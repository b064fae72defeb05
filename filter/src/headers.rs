//! A header map as the proxy-wasm ABI serialises it, read in place.
//!
//! One host call (`proxy_get_header_map_pairs`) fetches every request header at once; every lookup
//! after that (host, sticky key, rules, cookies, segment) is a scan of this buffer with no further
//! host call and no allocation. Layout: `u32 n`, then `n` × (`u32 key_len`, `u32 value_len`), then
//! each key and value followed by a NUL byte; all integers little-endian. A malformed buffer reads
//! as an empty map: the filter then treats the request as having no attributes, never panics.

use crate::decide::RequestAttrs;
use crate::rules::{cookie_value, query_value};

/// A serialised header map.
#[derive(Debug, Default, Clone)]
pub struct HeaderPairs {
    buf: Vec<u8>,
}

impl HeaderPairs {
    pub fn new(buf: Vec<u8>) -> Self {
        HeaderPairs { buf }
    }

    /// Build the serialised form (tests and benchmarks).
    pub fn serialize<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a [u8])> + Clone) -> Self {
        let n = pairs.clone().into_iter().count() as u32;
        let mut buf = n.to_le_bytes().to_vec();
        for (k, v) in pairs.clone() {
            buf.extend_from_slice(&(k.len() as u32).to_le_bytes());
            buf.extend_from_slice(&(v.len() as u32).to_le_bytes());
        }
        for (k, v) in pairs {
            buf.extend_from_slice(k.as_bytes());
            buf.push(0);
            buf.extend_from_slice(v);
            buf.push(0);
        }
        HeaderPairs { buf }
    }

    /// Every (name, value) pair in order; stops at the first inconsistency.
    pub fn iter(&self) -> Pairs<'_> {
        let b = &self.buf;
        let n = read_u32(b, 0).unwrap_or(0) as usize;
        // The size table must fit, or the map is treated as empty.
        let table_end = n
            .checked_mul(8)
            .and_then(|t| t.checked_add(4))
            .unwrap_or(usize::MAX);
        if table_end > b.len() {
            return Pairs {
                buf: b,
                n: 0,
                i: 0,
                data: 0,
            };
        }
        Pairs {
            buf: b,
            n,
            i: 0,
            data: table_end,
        }
    }

    /// The first value of header `name` (lowercase, as Envoy stores them).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|(k, _)| *k == name.as_bytes())
            .map(|(_, v)| v)
    }

    /// The first value of `name` as UTF-8; a non-UTF-8 value reads as absent.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Every value of `name` that is UTF-8 (HTTP/2 clients may split `cookie` into several).
    pub fn all_str<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.iter()
            .filter(move |(k, _)| *k == name.as_bytes())
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
    }
}

/// Request attributes straight from the request's header map: the cookie header(s) and `:path`
/// are parsed in place on demand.
impl RequestAttrs for HeaderPairs {
    fn header(&mut self, name: &str) -> Option<&str> {
        self.get_str(name)
    }

    fn cookie(&mut self, name: &str) -> Option<&str> {
        self.all_str("cookie").find_map(|h| cookie_value(h, name))
    }

    fn query(&mut self, name: &str) -> Option<&str> {
        query_value(self.get_str(":path")?, name)
    }
}

fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// Iterator over a serialised map's pairs.
pub struct Pairs<'a> {
    buf: &'a [u8],
    n: usize,
    i: usize,
    data: usize,
}

impl<'a> Iterator for Pairs<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.i >= self.n {
            return None;
        }
        let k_len = read_u32(self.buf, 4 + self.i * 8)? as usize;
        let v_len = read_u32(self.buf, 8 + self.i * 8)? as usize;
        let k_end = self.data.checked_add(k_len)?;
        let v_start = k_end.checked_add(1)?;
        let v_end = v_start.checked_add(v_len)?;
        let key = self.buf.get(self.data..k_end)?;
        let value = self.buf.get(v_start..v_end)?;
        self.data = v_end.checked_add(1)?;
        self.i += 1;
        Some((key, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_what_was_serialised() {
        let m = HeaderPairs::serialize([
            (":authority", &b"fraud-model:8501"[..]),
            ("cookie", b"a=1"),
            ("x-user-id", b"u42"),
            ("cookie", b"mlcanary-uid=x"),
            ("x-bad", &[0xff, 0xfe]),
            ("x-empty", b""),
        ]);
        assert_eq!(m.get_str(":authority"), Some("fraud-model:8501"));
        assert_eq!(m.get_str("x-user-id"), Some("u42"));
        assert_eq!(m.get_str("cookie"), Some("a=1"));
        assert_eq!(
            m.all_str("cookie").collect::<Vec<_>>(),
            vec!["a=1", "mlcanary-uid=x"]
        );
        assert_eq!(m.get("x-bad"), Some(&[0xff, 0xfe][..]));
        assert_eq!(m.get_str("x-bad"), None);
        assert_eq!(m.get_str("x-empty"), Some(""));
        assert_eq!(m.get_str("missing"), None);
        assert_eq!(m.iter().count(), 6);
    }

    #[test]
    fn malformed_buffers_read_as_empty_or_truncated() {
        assert_eq!(HeaderPairs::new(vec![]).iter().count(), 0);
        assert_eq!(HeaderPairs::new(vec![1, 0]).iter().count(), 0);
        // Claims 1000 pairs with no table.
        assert_eq!(
            HeaderPairs::new(1000u32.to_le_bytes().to_vec())
                .iter()
                .count(),
            0
        );
        // Claims a u32::MAX-long key.
        let mut b = 1u32.to_le_bytes().to_vec();
        b.extend_from_slice(&u32::MAX.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(b"k\0\0");
        assert_eq!(HeaderPairs::new(b).get("k"), None);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(buf in prop::collection::vec(any::<u8>(), 0..256), name in "[a-z:-]{0,8}") {
            let m = HeaderPairs::new(buf);
            let _ = m.get(&name);
            let _ = m.all_str(&name).count();
            prop_assert!(m.iter().count() <= 256 / 8);
        }

        #[test]
        fn round_trip(pairs in prop::collection::vec(("[a-z-]{1,12}", prop::collection::vec(any::<u8>(), 0..40)), 0..20)) {
            let m = HeaderPairs::serialize(pairs.iter().map(|(k, v)| (k.as_str(), v.as_slice())));
            let got: Vec<(Vec<u8>, Vec<u8>)> = m.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
            let want: Vec<(Vec<u8>, Vec<u8>)> = pairs.iter().map(|(k, v)| (k.as_bytes().to_vec(), v.clone())).collect();
            prop_assert_eq!(got, want);
        }
    }
}
