//! Ground truth sent back: the labels a fraud team learns later, posted with the tickets the
//! mlcanary filter signed onto the model's replies (`POST /v1/models/<model>:feedback`).
//!
//! The simulation, per transaction that got a ticket: its true label is drawn from
//! [`crate::data::true_fraud_probability`]; a flagged transaction (score ≥ 0.5) is reviewed by an
//! analyst and labelled after `review_delay`; an unflagged one is labelled by its chargeback, or
//! by the lack of one, after `chargeback_delay` (weeks in reality, seconds in the demo). Only
//! `label_share` of the transactions ever get a label.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::traffic::Conn;

/// Labels one feedback request carries at most (the filter takes up to 1000).
pub const MAX_BATCH: usize = 500;

/// After the traffic stops, labels already due are still sent for at most this long.
pub const FLUSH_WINDOW: Duration = Duration::from_secs(2);

/// How often the sender looks for due labels.
const POLL: Duration = Duration::from_millis(100);

/// Labels waiting beyond this are dropped (counted as unsent): memory stays bounded whatever the
/// delays and the rate.
const MAX_PENDING: usize = 200_000;

/// How labels come back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FeedbackPlan {
    /// From a flagged transaction's reply to the analyst's verdict.
    pub review_delay: Duration,
    /// From an unflagged transaction's reply to its chargeback (label 1) or to the end of the
    /// chargeback window without one (label 0).
    pub chargeback_delay: Duration,
    /// Share of transactions that ever get a label, 0..=1.
    pub label_share: f64,
}

impl FeedbackPlan {
    /// The demo's: weeks compressed into seconds, every transaction labelled.
    pub const DEMO: FeedbackPlan = FeedbackPlan {
        review_delay: Duration::from_secs(2),
        chargeback_delay: Duration::from_secs(4),
        label_share: 1.0,
    };

    /// When the label of a transaction answered at `answered` becomes known.
    pub fn due(&self, answered: Instant, flagged: bool) -> Instant {
        answered
            + if flagged {
                self.review_delay
            } else {
                self.chargeback_delay
            }
    }
}

/// What the feedback path did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct FeedbackTally {
    /// Replies that carried a ticket.
    pub tickets: u64,
    /// Labels posted.
    pub sent: u64,
    /// Labels the filter counted.
    pub accepted: u64,
    /// Labels the filter refused, by reason (`bad_mac`, `expired`, `replay`, ...).
    pub rejected: BTreeMap<String, u64>,
    /// Feedback requests answered with a status other than 200.
    pub non_200: u64,
    /// Feedback requests that got no readable answer.
    pub errors: u64,
    /// Labels never posted: not yet due, or not flushed, when the traffic stopped.
    pub unsent: u64,
    /// The last non-200 answer or transport error, for the operator.
    pub last_error: Option<String>,
}

impl FeedbackTally {
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    /// Tally the answer to a request that carried `n` labels.
    pub fn record(&mut self, n: usize, answer: Result<(u16, &[u8]), String>) {
        self.sent += n as u64;
        let (status, body) = match answer {
            Ok(a) => a,
            Err(e) => {
                self.errors += 1;
                self.last_error = Some(e);
                return;
            }
        };
        let parsed: Option<Value> = serde_json::from_slice(body).ok();
        if status != 200 {
            self.non_200 += 1;
            let why = parsed.as_ref().and_then(|v| v["error"].as_str());
            self.last_error = Some(format!("{status}: {}", why.unwrap_or("(no error message)")));
            return;
        }
        let accepted = parsed.as_ref().and_then(|v| v["accepted"].as_u64());
        let rejected = parsed.as_ref().and_then(|v| v["rejected"].as_object());
        let (Some(accepted), Some(rejected)) = (accepted, rejected) else {
            self.errors += 1;
            self.last_error = Some("200 without `accepted` and `rejected`".into());
            return;
        };
        self.accepted += accepted;
        for (reason, count) in rejected {
            *self.rejected.entry(reason.clone()).or_default() += count.as_u64().unwrap_or(0);
        }
    }
}

/// One label to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub ticket: String,
    pub fraud: bool,
}

/// What the feedback path needs from a model's reply.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ReplyInfo {
    /// The filter's `mlcanary_ticket` member, if it added one.
    pub ticket: Option<String>,
    /// The fraud score, `predictions[0][1]`.
    pub score: Option<f64>,
}

/// Read the ticket and the score from a reply body; anything else (not JSON, an error reply)
/// yields neither.
pub fn reply_info(body: &[u8]) -> ReplyInfo {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return ReplyInfo::default();
    };
    ReplyInfo {
        ticket: v["mlcanary_ticket"].as_str().map(str::to_string),
        score: v["predictions"][0][1].as_f64(),
    }
}

/// The feedback request's body.
pub fn request_body(labels: &[Label]) -> Vec<u8> {
    let items: Vec<Value> = labels
        .iter()
        .map(|l| json!({"ticket": l.ticket, "label": u8::from(l.fraud)}))
        .collect();
    json!({ "feedback": items }).to_string().into_bytes()
}

/// Labels waiting for their time, earliest first.
#[derive(Debug, Default)]
pub struct DueQueue {
    /// Keyed by (due, arrival number): arrival breaks ties, so equal times keep their order.
    items: BTreeMap<(Instant, u64), Label>,
    next: u64,
    /// Labels refused because the queue was full.
    pub dropped: u64,
}

impl DueQueue {
    pub fn push(&mut self, due: Instant, label: Label) {
        if self.items.len() >= MAX_PENDING {
            self.dropped += 1;
            return;
        }
        self.items.insert((due, self.next), label);
        self.next += 1;
    }

    /// Take up to `max` labels due at `now`, earliest first.
    pub fn pop_due(&mut self, now: Instant, max: usize) -> Vec<Label> {
        let mut out = Vec::new();
        while out.len() < max {
            match self.items.first_key_value() {
                Some((&(due, _), _)) if due <= now => {
                    if let Some((_, label)) = self.items.pop_first() {
                        out.push(label);
                    }
                }
                _ => break,
            }
        }
        out
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// Where and how to post labels.
pub(crate) struct Sender<'a> {
    pub conn: Conn,
    pub path: String,
    pub host: &'a str,
}

impl Sender<'_> {
    /// Post one batch; false if it got no answer. A batch the listener refused to connect for
    /// was never delivered: it goes back in the queue, to be tried again or counted `unsent` —
    /// as at the end of a demo round, when `mlcanary local` has stopped its Envoy. One that was
    /// sent but got no answer may have been counted: not retried, lest it read as a replay.
    fn post(
        &mut self,
        batch: Vec<Label>,
        queue: &Mutex<DueQueue>,
        tally: &Mutex<FeedbackTally>,
    ) -> bool {
        let body = request_body(&batch);
        let answer = self.conn.post(&self.path, &[("host", self.host)], &body);
        match answer {
            Ok(r) => {
                if let Ok(mut t) = tally.lock() {
                    t.record(batch.len(), Ok((r.status, &r.body)));
                }
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                if let Ok(mut q) = queue.lock() {
                    let now = Instant::now();
                    for label in batch {
                        q.push(now, label);
                    }
                }
                false
            }
            Err(e) => {
                if let Ok(mut t) = tally.lock() {
                    t.record(batch.len(), Err(format!("feedback request: {e}")));
                }
                false
            }
        }
    }

    /// Post labels as they fall due until `done` is set; then flush those already due, for at
    /// most [`FLUSH_WINDOW`] and only while the listener answers. Whatever is left is `unsent`.
    pub fn run(
        &mut self,
        queue: &Mutex<DueQueue>,
        done: &AtomicBool,
        tally: &Mutex<FeedbackTally>,
    ) {
        let take = |now| {
            queue
                .lock()
                .map(|mut q| q.pop_due(now, MAX_BATCH))
                .unwrap_or_default()
        };
        while !done.load(Ordering::SeqCst) {
            let batch = take(Instant::now());
            if batch.is_empty() || !self.post(batch, queue, tally) {
                std::thread::sleep(POLL);
            }
        }
        let (stopped, deadline) = (Instant::now(), Instant::now() + FLUSH_WINDOW);
        while Instant::now() < deadline {
            let batch = take(stopped);
            if batch.is_empty() || !self.post(batch, queue, tally) {
                break;
            }
        }
        if let (Ok(q), Ok(mut t)) = (queue.lock(), tally.lock()) {
            t.unsent += q.len() as u64 + q.dropped;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(t: &str, fraud: bool) -> Label {
        Label {
            ticket: t.into(),
            fraud,
        }
    }

    #[test]
    fn the_ticket_and_score_are_read_from_the_reply() {
        let r = reply_info(br#"{"mlcanary_ticket":"v1.k.p.m","predictions":[[0.3,0.7]]}"#);
        assert_eq!(r.ticket.as_deref(), Some("v1.k.p.m"));
        assert_eq!(r.score, Some(0.7));
        let r = reply_info(br#"{"predictions":[[0.9,0.1]]}"#);
        assert_eq!((r.ticket, r.score), (None, Some(0.1)));
        assert_eq!(reply_info(br#"{"error":"x"}"#), ReplyInfo::default());
        assert_eq!(reply_info(b"not json"), ReplyInfo::default());
        assert_eq!(reply_info(br#"{"mlcanary_ticket":7}"#).ticket, None);
    }

    #[test]
    fn flagged_transactions_are_labelled_sooner() {
        let plan = FeedbackPlan::DEMO;
        let t = Instant::now();
        assert_eq!(plan.due(t, true), t + Duration::from_secs(2));
        assert_eq!(plan.due(t, false), t + Duration::from_secs(4));
    }

    #[test]
    fn the_queue_gives_due_labels_earliest_first_in_bounded_batches() {
        let t = Instant::now();
        let s = Duration::from_secs(1);
        let mut q = DueQueue::default();
        q.push(t + 3 * s, label("c", false));
        q.push(t + s, label("a", true));
        q.push(t + s, label("b", false));
        q.push(t + 9 * s, label("late", false));
        assert!(q.pop_due(t, 10).is_empty(), "nothing due yet");
        assert_eq!(
            q.pop_due(t + 5 * s, 2),
            [label("a", true), label("b", false)]
        );
        assert_eq!(q.pop_due(t + 5 * s, 2), [label("c", false)]);
        assert!(q.pop_due(t + 5 * s, 2).is_empty());
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn the_request_body_is_the_filters_format() {
        let body = request_body(&[label("t1", true), label("t2", false)]);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            json!({"feedback": [{"ticket": "t1", "label": 1}, {"ticket": "t2", "label": 0}]})
        );
    }

    #[test]
    fn answers_are_tallied_by_outcome() {
        let mut t = FeedbackTally::default();
        let ok = br#"{"accepted": 3, "rejected": {"replay": 1, "bad_mac": 1}, "results": []}"#;
        t.record(5, Ok((200, ok)));
        t.record(
            2,
            Ok((200, br#"{"accepted": 1, "rejected": {"replay": 1}}"#)),
        );
        t.record(4, Ok((413, br#"{"error": "too large"}"#)));
        t.record(1, Err("refused".into()));
        t.record(1, Ok((200, b"{}")));
        assert_eq!((t.sent, t.accepted, t.rejected_total()), (13, 4, 3));
        assert_eq!(t.rejected["replay"], 2);
        assert_eq!((t.non_200, t.errors), (1, 2));
        assert!(t.last_error.is_some());
    }

    #[test]
    fn a_flush_to_a_gone_listener_leaves_labels_unsent_and_ends() {
        // A port nobody listens on any more.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let now = Instant::now();
        let mut q = DueQueue::default();
        for i in 0..700 {
            q.push(now, label(&format!("t{i}"), false));
        }
        q.push(now + Duration::from_secs(60), label("later", true));
        let (queue, tally) = (Mutex::new(q), Mutex::new(FeedbackTally::default()));
        let mut sender = Sender {
            conn: Conn::new(&format!("127.0.0.1:{port}"), Duration::from_secs(1)),
            path: "/v1/models/fraud:feedback".into(),
            host: "fraud-model",
        };
        sender.run(&queue, &AtomicBool::new(true), &tally);
        assert!(now.elapsed() < FLUSH_WINDOW, "stops at the first failure");
        let t = tally.into_inner().unwrap();
        assert_eq!((t.sent, t.errors, t.unsent), (0, 0, 701), "{t:?}");
    }
}
