//! `feedback`: the keys tickets are signed with and the feedback path's bounds (see
//! [`crate::ticket`], [`crate::feedback`]).

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError, Predictions, MAX_BODY_BYTES_LIMIT};
use crate::ticket::Key;

/// Ground-truth feedback: the keys tickets are signed with and the feedback path's bounds.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFeedback {
    /// Base64 keys (standard alphabet, at least 16 bytes each): the first signs, every one
    /// verifies — a rotated-out key stays listed second until its tickets are past `max_age_s`.
    pub keys: Vec<String>,
    /// Tickets older than this are refused (default 7 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_s: Option<u64>,
    /// Feedback bodies longer than this are refused with 413 (default 512 KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u32>,
    /// Tickets each VM remembers to refuse a replay (default 16384; 0 turns the check off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_window: Option<u32>,
}

impl std::fmt::Debug for RawFeedback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys: configs end up in logs.
        f.debug_struct("RawFeedback")
            .field("keys", &format_args!("[{} redacted]", self.keys.len()))
            .field("max_age_s", &self.max_age_s)
            .finish_non_exhaustive()
    }
}

/// Validated `feedback`.
#[derive(Debug, Clone, PartialEq)]
pub struct Feedback {
    /// The first signs; all verify.
    pub keys: Vec<Key>,
    pub max_age_s: u64,
    pub max_body_bytes: usize,
    pub replay_window: usize,
}

/// Default `feedback.max_age_s`: a week.
pub const DEFAULT_FEEDBACK_MAX_AGE_S: u64 = 7 * 24 * 3600;
/// Default `feedback.max_body_bytes`.
pub const DEFAULT_FEEDBACK_MAX_BODY_BYTES: u32 = 512 * 1024;
/// Default `feedback.replay_window`: 16384 tickets, about 0.5 MiB per VM.
pub const DEFAULT_REPLAY_WINDOW: u32 = 16 * 1024;
/// Upper bound of `feedback.replay_window`.
pub const MAX_REPLAY_WINDOW: u32 = 1 << 20;

pub(super) fn validate(
    field: &str,
    f: RawFeedback,
    predictions: &Option<Predictions>,
) -> Result<Feedback, ConfigError> {
    if predictions.is_none() {
        return Err(invalid(
            field,
            "needs `predictions`: a ticket records what the model predicted",
        ));
    }
    if f.keys.is_empty() {
        return Err(invalid(
            format!("{field}.keys"),
            "must list at least one key",
        ));
    }
    let mut keys: Vec<Key> = Vec::with_capacity(f.keys.len());
    for (i, k) in f.keys.iter().enumerate() {
        let kf = format!("{field}.keys[{i}]");
        let bytes = crate::b64::decode_std(k.trim())
            .ok_or_else(|| invalid(&kf, "is not base64 (standard alphabet)"))?;
        let key = Key::new(bytes).ok_or_else(|| {
            invalid(
                &kf,
                format!("is shorter than {} bytes", crate::ticket::MIN_KEY_BYTES),
            )
        })?;
        if keys.iter().any(|o| o.id == key.id) {
            return Err(invalid(&kf, "is listed twice"));
        }
        keys.push(key);
    }
    let max_age_s = f.max_age_s.unwrap_or(DEFAULT_FEEDBACK_MAX_AGE_S);
    if max_age_s == 0 {
        return Err(invalid(format!("{field}.max_age_s"), "must be positive"));
    }
    let max_body = f.max_body_bytes.unwrap_or(DEFAULT_FEEDBACK_MAX_BODY_BYTES);
    if max_body == 0 || max_body > MAX_BODY_BYTES_LIMIT {
        return Err(invalid(
            format!("{field}.max_body_bytes"),
            format!("{max_body} is outside 1..={MAX_BODY_BYTES_LIMIT}"),
        ));
    }
    let replay_window = f.replay_window.unwrap_or(DEFAULT_REPLAY_WINDOW);
    if replay_window > MAX_REPLAY_WINDOW {
        return Err(invalid(
            format!("{field}.replay_window"),
            format!("{replay_window} is above {MAX_REPLAY_WINDOW}"),
        ));
    }
    Ok(Feedback {
        keys,
        max_age_s,
        max_body_bytes: max_body as usize,
        replay_window: replay_window as usize,
    })
}
