//! Assignment tickets: what the filter tells the application about a prediction (which policy,
//! variant and segment answered, what it predicted, when), signed so that feedback sent later can
//! be attributed without the filter keeping any per-request state.
//!
//! ```text
//! ticket  = "v1." kid "." payload "." mac
//! kid     = the signing key's id: base64url(SHA-256(key))[..8]
//! payload = base64url(namespace LF policy LF variant LF segment LF classes LF scores LF issued LF nonce)
//! mac     = base64url(HMAC-SHA256(key, "v1." kid "." payload))
//! ```
//! base64url is RFC 4648 §5 without padding. `segment` is empty for a policy without segments;
//! `classes` holds one `0` / `1` per scored instance (the prediction at the policy's positive
//! threshold), `scores` the same instances' scores per mille, comma-separated (at most
//! [`MAX_INSTANCES`]); `issued` is Unix seconds; `nonce` 16 lowercase hex digits.
//!
//! Pure and host-free: the filter signs and verifies with it, the controller's `mlcanary ticket`
//! inspects with it, and `tests/ticket_vectors.txt` pins the format for every other implementation.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::b64;

/// The member of the reply's JSON object a ticket travels in (the object's first).
pub const FIELD: &str = "mlcanary_ticket";
/// Instances one ticket carries; a batched reply's later instances get no labels.
pub const MAX_INSTANCES: usize = 32;
/// Shortest key the filter accepts (128 bits).
pub const MIN_KEY_BYTES: usize = 16;
/// How far a ticket's time may be ahead of the verifier's clock (clock skew between sidecars).
pub const MAX_SKEW_S: u64 = 300;
/// Longest ticket a verifier reads; a longer string is malformed without decoding.
pub const MAX_TICKET_LEN: usize = 1024;

const VERSION: &str = "v1";

/// A signing key with its id.
#[derive(Clone, PartialEq, Eq)]
pub struct Key {
    pub id: String,
    secret: Vec<u8>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret: configs end up in logs.
        f.debug_struct("Key").field("id", &self.id).finish()
    }
}

impl Key {
    /// `None` for a key shorter than [`MIN_KEY_BYTES`].
    pub fn new(secret: Vec<u8>) -> Option<Key> {
        if secret.len() < MIN_KEY_BYTES {
            return None;
        }
        let digest = Sha256::digest(&secret);
        let mut id = b64::encode_url(&digest[..6]);
        id.truncate(8);
        Some(Key { id, secret })
    }

    fn mac(&self, signed: &str) -> Hmac<Sha256> {
        // HMAC takes a key of any length: this cannot fail.
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
        m.update(signed.as_bytes());
        m
    }
}

/// What a ticket says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub namespace: String,
    pub policy: String,
    pub variant: String,
    /// Empty for a policy without segments.
    pub segment: String,
    /// The predicted class of each instance (score at or above the positive threshold).
    pub classes: Vec<bool>,
    /// Each instance's score per mille.
    pub scores: Vec<u16>,
    /// Unix seconds.
    pub issued: u64,
    pub nonce: u64,
}

/// Why a ticket was not accepted; the label is the `reason` of
/// `mlcanary_feedback_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Not a ticket of this format (or an instance it does not carry).
    Malformed,
    /// Signed with a key this policy does not hold (never issued here, or rotated out).
    UnknownKey,
    /// The MAC does not match: forged or altered.
    BadMac,
    /// Older than the policy's maximum age.
    Expired,
    /// Issued further in the future than clock skew explains.
    Future,
    /// Valid, but for another policy than the one the feedback was sent to.
    WrongPolicy,
    /// Already counted by this VM.
    Replay,
}

impl Reject {
    pub const ALL: [Reject; 7] = [
        Reject::Malformed,
        Reject::UnknownKey,
        Reject::BadMac,
        Reject::Expired,
        Reject::Future,
        Reject::WrongPolicy,
        Reject::Replay,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Reject::Malformed => "malformed",
            Reject::UnknownKey => "unknown_key",
            Reject::BadMac => "bad_mac",
            Reject::Expired => "expired",
            Reject::Future => "future",
            Reject::WrongPolicy => "wrong_policy",
            Reject::Replay => "replay",
        }
    }
}

fn payload(t: &Ticket) -> String {
    let classes: String = t
        .classes
        .iter()
        .map(|&c| if c { '1' } else { '0' })
        .collect();
    let scores: Vec<String> = t.scores.iter().map(u16::to_string).collect();
    let plain = format!(
        "{}\n{}\n{}\n{}\n{classes}\n{}\n{}\n{:016x}",
        t.namespace,
        t.policy,
        t.variant,
        t.segment,
        scores.join(","),
        t.issued,
        t.nonce
    );
    b64::encode_url(plain.as_bytes())
}

/// The ticket for `t`, signed with `key`.
pub fn sign(key: &Key, t: &Ticket) -> String {
    let signed = format!("{VERSION}.{}.{}", key.id, payload(t));
    let mac = key.mac(&signed).finalize().into_bytes();
    format!("{signed}.{}", b64::encode_url(&mac))
}

/// `body` (a JSON object) with `"mlcanary_ticket": ticket` as its first member; `None` if `body`
/// does not start with an object. A ticket is base64url and dots: nothing to escape.
pub fn embed(body: &[u8], ticket: &str) -> Option<Vec<u8>> {
    let open = body.iter().position(|b| !b.is_ascii_whitespace())?;
    if body[open] != b'{' {
        return None;
    }
    let rest = &body[open + 1..];
    let empty = rest
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'}');
    let mut out = Vec::with_capacity(body.len() + ticket.len() + FIELD.len() + 6);
    out.extend_from_slice(&body[..=open]);
    out.push(b'"');
    out.extend_from_slice(FIELD.as_bytes());
    out.extend_from_slice(b"\":\"");
    out.extend_from_slice(ticket.as_bytes());
    out.push(b'"');
    if !empty {
        out.push(b',');
    }
    out.extend_from_slice(rest);
    Some(out)
}

fn parse_payload(bytes: &[u8]) -> Option<Ticket> {
    let text = std::str::from_utf8(bytes).ok()?;
    let f: Vec<&str> = text.split('\n').collect();
    let [namespace, policy, variant, segment, classes, scores, issued, nonce] = f[..] else {
        return None;
    };
    let classes: Vec<bool> = classes
        .bytes()
        .map(|b| match b {
            b'0' => Some(false),
            b'1' => Some(true),
            _ => None,
        })
        .collect::<Option<_>>()?;
    let scores: Vec<u16> = if scores.is_empty() {
        Vec::new()
    } else {
        scores
            .split(',')
            .map(|s| s.parse().ok().filter(|&s| s <= 1000))
            .collect::<Option<_>>()?
    };
    if classes.len() != scores.len() || classes.len() > MAX_INSTANCES || nonce.len() != 16 {
        return None;
    }
    Some(Ticket {
        namespace: namespace.to_owned(),
        policy: policy.to_owned(),
        variant: variant.to_owned(),
        segment: segment.to_owned(),
        classes,
        scores,
        issued: issued.parse().ok()?,
        nonce: u64::from_str_radix(nonce, 16).ok()?,
    })
}

/// Check `ticket`'s MAC with whichever of `keys` signed it and its age at `now` (Unix seconds);
/// the ticket's fields only once the MAC holds.
pub fn verify(keys: &[Key], ticket: &str, now: u64, max_age_s: u64) -> Result<Ticket, Reject> {
    if ticket.len() > MAX_TICKET_LEN {
        return Err(Reject::Malformed);
    }
    let (signed, mac) = ticket.rsplit_once('.').ok_or(Reject::Malformed)?;
    let mut parts = signed.split('.');
    let (Some(VERSION), Some(kid), Some(body), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Reject::Malformed);
    };
    let mac = b64::decode_url(mac).ok_or(Reject::Malformed)?;
    let key = keys
        .iter()
        .find(|k| k.id == kid)
        .ok_or(Reject::UnknownKey)?;
    key.mac(signed)
        .verify_slice(&mac)
        .map_err(|_| Reject::BadMac)?;
    let t = b64::decode_url(body)
        .and_then(|b| parse_payload(&b))
        .ok_or(Reject::Malformed)?;
    if t.issued > now.saturating_add(MAX_SKEW_S) {
        return Err(Reject::Future);
    }
    if now.saturating_sub(t.issued) > max_age_s {
        return Err(Reject::Expired);
    }
    Ok(t)
}

#[cfg(test)]
#[path = "ticket_tests.rs"]
mod tests;
