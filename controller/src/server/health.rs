//! Liveness and readiness as plain state the loops set and the server reads.
//!
//! - **live** (`/healthz`): some loop beat within `stale_after`. The lease loop beats every renew
//!   period on every replica (leader or not) and the reconciler on every reconcile, so a wedged
//!   runtime or a dead loop task stops the beats and the kubelet restarts the pod.
//! - **ready** (`/readyz`): set once the API server answered the first time (the lease loop's first
//!   round trip, or the watch's first list), so a pod with no RBAC or no API never reads ready.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Shared health state.
#[derive(Debug)]
pub struct Health {
    last_beat: Mutex<Option<Instant>>,
    ready: AtomicBool,
    stale_after: Duration,
}

impl Health {
    /// Live while the last beat is younger than `stale_after`.
    pub fn new(stale_after: Duration) -> Self {
        Health {
            last_beat: Mutex::new(None),
            ready: AtomicBool::new(false),
            stale_after,
        }
    }

    /// A loop is alive now.
    pub fn beat(&self) {
        self.beat_at(Instant::now());
    }

    fn beat_at(&self, at: Instant) {
        if let Ok(mut b) = self.last_beat.lock() {
            *b = Some(at);
        }
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Alive at `now`: a beat, and not too old.
    pub fn is_live_at(&self, now: Instant) -> bool {
        let last = self.last_beat.lock().ok().and_then(|b| *b);
        last.is_some_and(|t| now.saturating_duration_since(t) < self.stale_after)
    }

    pub fn is_live(&self) -> bool {
        self.is_live_at(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_only_after_a_recent_beat() {
        let h = Health::new(Duration::from_secs(30));
        let t0 = Instant::now();
        assert!(!h.is_live_at(t0), "no beat yet");
        h.beat_at(t0);
        assert!(h.is_live_at(t0 + Duration::from_secs(29)));
        assert!(!h.is_live_at(t0 + Duration::from_secs(30)), "stale");
        assert!(!h.is_ready());
        h.set_ready(true);
        assert!(h.is_ready());
    }
}
