//! The feedback path: labels an application sends later, with the tickets it got on the replies
//! (`POST /v1/models/<model>:feedback`, `{"feedback": [{"ticket": "...", "label": 1}, ...]}`),
//! turned into confusion-matrix counts per (policy, variant, segment). Pure: the glue reads the
//! body, calls [`judge`], bumps counters and answers.
//!
//! Nothing is kept per request: a ticket carries all it needs and its MAC proves it. The one piece
//! of state is a bounded window of the tickets this VM has counted ([`ReplayWindow`]), so one
//! label counts at most once while it is remembered.

use std::collections::{HashSet, VecDeque};
use std::hash::BuildHasherDefault;

use serde_json::Value;

use crate::config::{Feedback, Policy};
use crate::hash::IdHasher;
use crate::ticket::{self, Reject};

/// Items one feedback request may carry.
pub const MAX_ITEMS: usize = 1000;

/// The path verb of the feedback request, after the model name.
pub const VERB: &str = ":feedback";

/// How long the route holds a feedback request while the filter reads its body, then fails it:
/// the filter answers long before, and the model never sees one (see [`hold_path_regex`]).
pub const HOLD_S: u64 = 30;

/// The route regex (RE2, on the path without its query) of feedback requests to `model` (any
/// model: `None`). A policy with `feedback` gets a route matching it that delays the request
/// [`HOLD_S`] and then aborts it (a fault): proxy-wasm cannot pause a request's headers and still
/// read its body, so the headers go on — to this route, which keeps them from the model.
pub fn hold_path_regex(model: Option<&str>) -> String {
    let model = model.map_or_else(
        || "[^/]+".to_owned(),
        |m| {
            m.chars()
                .flat_map(|c| {
                    let esc = r"\.+*?()|[]{}^$".contains(c);
                    esc.then_some('\\').into_iter().chain(std::iter::once(c))
                })
                .collect()
        },
    );
    format!("^/v1/models/{model}{VERB}$")
}

/// Whether `path` is a feedback request (`/v1/models/<model>:feedback`, query ignored).
pub fn is_feedback_path(path: &str) -> bool {
    let path = path.split(['?', '#']).next().unwrap_or(path);
    path.strip_prefix("/v1/models/")
        .and_then(|rest| rest.strip_suffix(VERB))
        .is_some_and(|m| !m.is_empty() && !m.contains('/'))
}

/// One cell of the confusion matrix: the prediction the ticket recorded against the label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confusion {
    Tp,
    Fp,
    Tn,
    Fn,
}

impl Confusion {
    pub const ALL: [Confusion; 4] = [Confusion::Tp, Confusion::Fp, Confusion::Tn, Confusion::Fn];

    pub fn of(predicted: bool, label: bool) -> Confusion {
        match (predicted, label) {
            (true, true) => Confusion::Tp,
            (true, false) => Confusion::Fp,
            (false, false) => Confusion::Tn,
            (false, true) => Confusion::Fn,
        }
    }

    /// The `outcome` label of `mlcanary_feedback_total`.
    pub fn label(self) -> &'static str {
        match self {
            Confusion::Tp => "tp",
            Confusion::Fp => "fp",
            Confusion::Tn => "tn",
            Confusion::Fn => "fn",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// A body the filter answers with 400: the reason is the reply's `error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    #[error("the body must be an object with a `feedback` array")]
    Shape,
    #[error("{0} items in one request; at most {MAX_ITEMS}")]
    TooMany(usize),
}

/// One item as sent: `Err` for an item that is not `{"ticket": string, "label": 0|1|bool,
/// "instance"?: n}` (counted as malformed, the other items still count).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub ticket: String,
    pub label: bool,
    /// Which instance of a batched reply (0 for a single prediction).
    pub instance: usize,
}

fn item(v: &Value) -> Option<Item> {
    let o = v.as_object()?;
    if o.keys()
        .any(|k| !matches!(k.as_str(), "ticket" | "label" | "instance"))
    {
        return None;
    }
    let label = match o.get("label")? {
        Value::Bool(b) => *b,
        Value::Number(n) => match n.as_u64()? {
            0 => false,
            1 => true,
            _ => return None,
        },
        _ => return None,
    };
    let instance = match o.get("instance") {
        None => 0,
        Some(n) => usize::try_from(n.as_u64()?).ok()?,
    };
    Some(Item {
        ticket: o.get("ticket")?.as_str()?.to_owned(),
        label,
        instance,
    })
}

/// Parse a feedback body.
pub fn parse(body: &[u8]) -> Result<Vec<Option<Item>>, BodyError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| BodyError::NotJson(e.to_string()))?;
    let items = v
        .as_object()
        .and_then(|o| o.get("feedback"))
        .and_then(Value::as_array)
        .ok_or(BodyError::Shape)?;
    if items.len() > MAX_ITEMS {
        return Err(BodyError::TooMany(items.len()));
    }
    Ok(items.iter().map(item).collect())
}

/// The tickets one VM has counted, oldest forgotten first once `capacity` is reached.
#[derive(Debug, Default)]
pub struct ReplayWindow {
    seen: HashSet<u64, BuildHasherDefault<IdHasher>>,
    order: VecDeque<u64>,
}

impl ReplayWindow {
    pub const fn new() -> ReplayWindow {
        ReplayWindow {
            seen: HashSet::with_hasher(BuildHasherDefault::new()),
            order: VecDeque::new(),
        }
    }

    /// Remember `id`; `false` if it is remembered already.
    pub fn admit(&mut self, id: u64, capacity: usize) -> bool {
        if capacity == 0 {
            return true;
        }
        if !self.seen.insert(id) {
            return false;
        }
        self.order.push_back(id);
        while self.order.len() > capacity {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        true
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// A label that counts: into the slot of (variant, segment) of the policy, as `outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counted {
    pub variant: usize,
    pub segment: usize,
    pub outcome: Confusion,
}

/// One instance of one ticket, for the replay window: the nonce is random per reply.
fn replay_id(nonce: u64, instance: usize) -> u64 {
    nonce ^ (instance as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Judge one item sent to `policy` (which has `feedback`) at `now` (Unix seconds).
pub fn judge(
    policy: &Policy,
    fb: &Feedback,
    item: Option<&Item>,
    now: u64,
    replay: &mut ReplayWindow,
) -> Result<Counted, Reject> {
    let item = item.ok_or(Reject::Malformed)?;
    let t = ticket::verify(&fb.keys, &item.ticket, now, fb.max_age_s)?;
    if t.namespace != policy.namespace || t.policy != policy.name {
        return Err(Reject::WrongPolicy);
    }
    let variant = policy
        .variants
        .iter()
        .position(|v| v.name == t.variant)
        .ok_or(Reject::WrongPolicy)?;
    let segment = policy
        .segment
        .as_ref()
        .map_or(0, |s| s.index(Some(t.segment.as_str())));
    let predicted = *t.classes.get(item.instance).ok_or(Reject::Malformed)?;
    if !replay.admit(replay_id(t.nonce, item.instance), fb.replay_window) {
        return Err(Reject::Replay);
    }
    Ok(Counted {
        variant,
        segment,
        outcome: Confusion::of(predicted, item.label),
    })
}

/// The reply to a feedback request: how many items counted, each rejection reason's count, and
/// each item's result in order (`counted` or the reason). Written by hand: serialising a
/// `serde_json::Value` would add its serializer to every sidecar's module.
pub fn reply_body(results: &[Result<Counted, Reject>]) -> String {
    let accepted = results.iter().filter(|r| r.is_ok()).count();
    let mut out = format!(r#"{{"accepted":{accepted},"rejected":{{"#);
    let mut first = true;
    for reason in Reject::ALL {
        let n = results.iter().filter(|r| **r == Err(reason)).count();
        if n > 0 {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(&format!(r#""{}":{n}"#, reason.label()));
        }
    }
    out.push_str(r#"},"results":["#);
    for (i, r) in results.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        out.push_str(match r {
            Ok(_) => "counted",
            Err(e) => e.label(),
        });
        out.push('"');
    }
    out.push_str("]}");
    out
}

/// The body of a 400 / 405 / 413 reply: `{"error": message}`.
pub fn error_body(message: &str) -> String {
    let mut out = String::with_capacity(message.len() + 16);
    out.push_str(r#"{"error":""#);
    for c in message.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push_str(r#""}"#);
    out
}

#[cfg(test)]
#[path = "feedback_tests.rs"]
mod tests;
