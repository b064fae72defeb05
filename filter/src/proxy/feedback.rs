//! Ground truth's glue: the ticket a reply carries, and the feedback request the filter answers
//! itself. The decisions are in [`crate::ticket`] and [`crate::feedback`].

use super::abi::{self, log, now_ns, COUNTER};
use super::{Body, Route, Stream};
use crate::feedback::{self as fb, ReplayWindow};
use crate::hash::SplitMix64;
use crate::headers::HeaderPairs;
use crate::predictions::{self, BodyError};
use crate::stats::{self, PolicyId};
use crate::ticket::{self, Reject, Ticket};

fn answer(s: &mut Stream, status: u32, body: &str) {
    s.answered = true;
    if let Err(e) = abi::send_json(status, "mlcanary_feedback", body) {
        log(
            abi::LOG_WARN,
            &format!("answering a feedback request failed: status {e}"),
        );
    }
}

/// A feedback request to policy `pi` arrived: refuse what cannot be one, else wait for its body.
/// The request never goes upstream either way.
pub(super) fn begin(s: &mut Stream, pi: usize, headers: &HeaderPairs, end: bool) -> Route {
    s.feedback = Some(pi);
    let max = s.active.config.policies[pi]
        .feedback
        .as_ref()
        .map_or(0, |f| f.max_body_bytes);
    let declared = headers
        .get_str("content-length")
        .and_then(|l| l.parse::<usize>().ok());
    if headers.get_str(":method") != Some("POST") {
        answer(s, 405, &fb::error_body("feedback is sent with POST"));
    } else if end || declared == Some(0) {
        answer(
            s,
            400,
            &fb::error_body(
                r#"the body is empty: send {"feedback": [{"ticket": "...", "label": 0|1}]}"#,
            ),
        );
    } else if declared.is_some_and(|n| n > max) {
        answer(
            s,
            413,
            &fb::error_body(&format!("the body is over {max} bytes")),
        );
    }
    Route::Feedback
}

/// A chunk of a feedback request: held until the body is whole (or refused once it is too long),
/// then judged item by item and answered.
pub(super) fn request_body(
    s: &mut Stream,
    size: usize,
    end: bool,
    replay: &mut ReplayWindow,
) -> u32 {
    let Some(pi) = s.feedback else {
        return abi::CONTINUE;
    };
    if s.answered {
        return abi::PAUSE;
    }
    let active = std::rc::Rc::clone(&s.active);
    let policy = &active.config.policies[pi];
    let Some(cfg) = policy.feedback.as_ref() else {
        return abi::CONTINUE;
    };
    if size > cfg.max_body_bytes {
        answer(
            s,
            413,
            &fb::error_body(&format!("the body is over {} bytes", cfg.max_body_bytes)),
        );
        return abi::PAUSE;
    }
    if !end {
        return abi::PAUSE;
    }
    let body = match abi::buffer(abi::REQUEST_BODY, 0, size) {
        Ok(b) => b.unwrap_or_default(),
        Err(e) => {
            answer(
                s,
                400,
                &fb::error_body(&format!("reading the body failed: status {e}")),
            );
            return abi::PAUSE;
        }
    };
    let items = match fb::parse(&body) {
        Ok(items) => items,
        Err(e) => {
            answer(s, 400, &fb::error_body(&e.to_string()));
            return abi::PAUSE;
        }
    };
    let now = now_ns() / 1_000_000_000;
    let results: Vec<Result<fb::Counted, Reject>> = items
        .iter()
        .map(|it| fb::judge(policy, cfg, it.as_ref(), now, replay))
        .collect();
    for r in &results {
        match r {
            Ok(c) => {
                let slot = active.base[pi] + c.variant * policy.segment_count() + c.segment;
                if let Some(ids) = outcome_ids(s, pi, slot) {
                    abi::increment(ids[c.outcome.index()], 1);
                }
            }
            Err(reason) => {
                if let Some(ids) = rejected_ids(s, pi) {
                    abi::increment(ids[*reason as usize], 1);
                }
            }
        }
    }
    answer(s, 200, &fb::reply_body(&results));
    abi::PAUSE
}

/// Define `ids.len()` counters named by `name(i)`, or `None` (logged) if Envoy refuses one.
fn define<const N: usize>(name: impl Fn(usize) -> String) -> Option<[u32; N]> {
    let mut ids = [0; N];
    for (i, id) in ids.iter_mut().enumerate() {
        let n = name(i);
        *id = abi::define_metric(COUNTER, &n)
            .map_err(|e| log(abi::LOG_WARN, &format!("defining metric {n}: status {e}")))
            .ok()?;
    }
    Some(ids)
}

fn outcome_ids(s: &Stream, pi: usize, slot: usize) -> Option<[u32; 4]> {
    let cell = s.active.feedback.get(slot)?;
    if let Some(ids) = cell.get() {
        return Some(ids);
    }
    let p = s.active.config.policies.get(pi)?;
    let k = slot.checked_sub(s.active.base[pi])?;
    let variant = &p.variants.get(k / p.segment_count())?.name;
    let segment = p.segment.as_ref().map(|g| g.label(k % p.segment_count()));
    let id = PolicyId {
        namespace: &p.namespace,
        name: &p.name,
    };
    let base = stats::stat_name("", id, variant, segment, stats::Phase::Live);
    let ids = define(|i| {
        stats::tagged(
            "outcome",
            fb::Confusion::ALL[i].label(),
            &base,
            stats::FEEDBACK,
        )
    })?;
    cell.set(Some(ids));
    Some(ids)
}

fn rejected_ids(s: &Stream, pi: usize) -> Option<[u32; 7]> {
    let cell = s.active.rejected.get(pi)?;
    if let Some(ids) = cell.get() {
        return Some(ids);
    }
    let p = s.active.config.policies.get(pi)?;
    let base = stats::policy_tags(PolicyId {
        namespace: &p.namespace,
        name: &p.name,
    });
    let ids = define(|i| {
        stats::tagged(
            "reason",
            Reject::ALL[i].label(),
            &base,
            stats::FEEDBACK_REJECTED,
        )
    })?;
    cell.set(Some(ids));
    Some(ids)
}

/// A chunk of a reply held for its ticket: once whole, read its scores, sign the ticket into the
/// JSON and let it go. A reply over the policy's body bound goes on at once, without one.
pub(super) fn reply_body(s: &mut Stream, size: usize, end: bool, rng: &mut u64) -> u32 {
    // The config outlives the stream's borrow: no copy of the score spec per chunk.
    let active = std::rc::Rc::clone(&s.active);
    let Some(p) = active
        .config
        .policies
        .get(s.policy)
        .and_then(|p| p.predictions.as_ref())
    else {
        s.ticketing = false;
        return abi::CONTINUE;
    };
    if size > p.max_body_bytes {
        s.ticketing = false;
        s.body = Body::Failed(BodyError::TooLarge);
        return abi::CONTINUE;
    }
    if !end {
        return abi::PAUSE;
    }
    s.ticketing = false;
    let body = match abi::buffer(abi::RESPONSE_BODY, 0, size) {
        Ok(b) => b.unwrap_or_default(),
        Err(_) => {
            s.body = Body::Failed(BodyError::TooLarge);
            return abi::CONTINUE;
        }
    };
    let read = predictions::scores(&p.spec, &body);
    if let Ok(scores) = &read {
        let signed = sign(s, scores, p.positive_threshold, rng);
        if let Some(with) = signed.and_then(|t| ticket::embed(&body, &t)) {
            if let Err(e) = abi::set_buffer(abi::RESPONSE_BODY, 0, size, &with) {
                log(
                    abi::LOG_WARN,
                    &format!("adding the ticket failed: status {e}"),
                );
            }
        }
    }
    s.body = Body::Read(read);
    abi::CONTINUE
}

/// The ticket for this stream's reply, `None` without scores or a key.
fn sign(s: &Stream, scores: &[f64], threshold: f64, rng: &mut u64) -> Option<String> {
    if scores.is_empty() {
        return None;
    }
    let p = s.active.config.policies.get(s.policy)?;
    let key = p.feedback.as_ref()?.keys.first()?;
    let k = s.slot?.checked_sub(s.active.base[s.policy])?;
    let scores = &scores[..scores.len().min(ticket::MAX_INSTANCES)];
    let mut g = SplitMix64(*rng);
    let nonce = g.next_u64();
    *rng = g.0;
    let t = Ticket {
        namespace: p.namespace.clone(),
        policy: p.name.clone(),
        variant: p.variants.get(k / p.segment_count())?.name.clone(),
        segment: p
            .segment
            .as_ref()
            .map_or("", |g| g.label(k % p.segment_count()))
            .to_owned(),
        classes: scores.iter().map(|&x| x >= threshold).collect(),
        scores: scores
            .iter()
            .map(|&x| predictions::per_mille(x) as u16)
            .collect(),
        issued: now_ns() / 1_000_000_000,
        nonce,
    };
    Some(ticket::sign(key, &t))
}
