//! Base64 (RFC 4648): the URL-safe alphabet without padding for tickets (they travel in headers
//! and JSON), the standard one for keys (as Kubernetes Secrets and `base64` write them). A few
//! dozen lines instead of a crate: the filter's size is on every sidecar.

const STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn encode(alphabet: &[u8; 64], bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(alphabet[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// `bytes` in URL-safe base64, unpadded.
pub fn encode_url(bytes: &[u8]) -> String {
    encode(URL, bytes)
}

/// `bytes` in standard base64, padded (how the filter config takes keys).
pub fn encode_std(bytes: &[u8]) -> String {
    let mut s = encode(STD, bytes);
    while s.len() % 4 != 0 {
        s.push('=');
    }
    s
}

fn value(alphabet: &[u8; 64], c: u8) -> Option<u32> {
    alphabet.iter().position(|&a| a == c).map(|i| i as u32)
}

fn decode(alphabet: &[u8; 64], s: &str) -> Option<Vec<u8>> {
    let s = s.as_bytes();
    // One leftover character carries no whole byte: not an encoding of anything.
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() / 4 * 3 + 2);
    for chunk in s.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= value(alphabet, c)? << (18 - 6 * i);
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        let whole = chunk.len() - 1;
        // Canonical only: the bits past the last whole byte must be zero.
        if whole < 3 && n & (0x00ff_ffff >> (8 * whole)) != 0 {
            return None;
        }
        out.extend_from_slice(&bytes[..whole]);
    }
    Some(out)
}

/// URL-safe, unpadded, canonical; `None` for anything else.
pub fn decode_url(s: &str) -> Option<Vec<u8>> {
    decode(URL, s)
}

/// Standard alphabet, padding optional; `None` for anything else.
pub fn decode_std(s: &str) -> Option<Vec<u8>> {
    let trimmed = s.trim_end_matches('=');
    if s.len() - trimmed.len() > 2 || (s.len() != trimmed.len() && s.len() % 4 != 0) {
        return None;
    }
    decode(STD, trimmed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, enc) in cases {
            assert_eq!(encode_url(plain.as_bytes()), enc);
            assert_eq!(decode_url(enc).as_deref(), Some(plain.as_bytes()));
        }
        assert_eq!(encode_url(&[0xfb, 0xff]), "-_8");
        assert_eq!(decode_std("+/8=").as_deref(), Some(&[0xfb, 0xff][..]));
        assert_eq!(decode_std("Zm9vYg==").as_deref(), Some(&b"foob"[..]));
        assert_eq!(decode_std("Zm9vYg").as_deref(), Some(&b"foob"[..]));
        assert_eq!(encode_std(b"foob"), "Zm9vYg==");
        assert_eq!(encode_std(&[0xfb, 0xff]), "+/8=");
    }

    #[test]
    fn rejects_what_is_not_canonical_base64() {
        for bad in ["Z", "Zh", "Zm9", "Zm9vY", "Zm=v", "Zm9v!", "+/8", "Zg=="] {
            assert_eq!(decode_url(bad), None, "{bad:?}");
        }
        for bad in ["Zg===", "Zm9vYg=", "-_8=", "Zh=="] {
            assert_eq!(decode_std(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn round_trips_every_length() {
        let bytes: Vec<u8> = (0..=255).collect();
        for n in 0..64 {
            assert_eq!(
                decode_url(&encode_url(&bytes[..n])).as_deref(),
                Some(&bytes[..n])
            );
        }
    }
}
