//! The thin HTTP side of webhooks: POST JSON, a timeout per attempt, bounded retries with
//! exponential backoff. A 2xx answer is success; anything else (non-2xx, timeout, connection
//! error) is one failed attempt.

use std::time::Duration;

use serde_json::Value;
use thiserror::Error;

use super::Webhook;

/// First backoff between attempts; doubles per attempt.
pub const BACKOFF_BASE: Duration = Duration::from_millis(200);
/// Longest backoff between attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Why a webhook call failed (after its retries).
#[derive(Debug, Error)]
pub enum HookError {
    #[error("cannot build an HTTP client: {0}")]
    Client(String),
    #[error("answered {status} after {attempts} attempt(s)")]
    Status { status: u16, attempts: u32 },
    #[error("{reason} after {attempts} attempt(s)")]
    Transport { reason: String, attempts: u32 },
}

/// Delay before attempt `attempt` (1 = the first retry).
pub fn backoff(attempt: u32) -> Duration {
    BACKOFF_BASE
        .saturating_mul(1 << attempt.saturating_sub(1).min(8))
        .min(BACKOFF_MAX)
}

/// A reqwest client for webhook calls (rustls with the ring provider, see [`crate::tls`]).
#[derive(Debug, Clone)]
pub struct Sender {
    client: reqwest::Client,
}

impl Sender {
    pub fn new() -> Result<Self, HookError> {
        crate::tls::install_crypto_provider();
        let client = reqwest::Client::builder()
            .build()
            .map_err(|e| HookError::Client(e.to_string()))?;
        Ok(Sender { client })
    }

    /// POST `body` to `hook.url` until a 2xx answer, at most `1 + hook.retries` attempts.
    pub async fn call(&self, hook: &Webhook, body: &Value) -> Result<(), HookError> {
        let attempts = hook.retries.saturating_add(1);
        let mut last = HookError::Transport {
            reason: "not called".into(),
            attempts: 0,
        };
        for attempt in 1..=attempts {
            if attempt > 1 {
                tokio::time::sleep(backoff(attempt - 1)).await;
            }
            let sent = self
                .client
                .post(&hook.url)
                .timeout(hook.timeout)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await;
            last = match sent {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => HookError::Status {
                    status: r.status().as_u16(),
                    attempts: attempt,
                },
                Err(e) => HookError::Transport {
                    reason: if e.is_timeout() {
                        format!(
                            "timed out after {}",
                            humantime::format_duration(hook.timeout)
                        )
                    } else {
                        e.to_string()
                    },
                    attempts: attempt,
                },
            };
        }
        Err(last)
    }
}
