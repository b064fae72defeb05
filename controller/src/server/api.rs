//! The status page and its JSON API on the controller's endpoint (see [`crate::ui`]):
//!
//! - `GET /`, `/ui/app.js`, `/ui/app.css` — the page, compiled into the binary;
//! - `GET /api/policies` — `[PolicyView]`;
//! - `GET /api/policies/{namespace}/{name}` — `PolicyView` plus `series`; 404 `{"error"}` when
//!   unknown;
//! - `POST /api/policies/{namespace}/{name}/{promote|abort|pause|resume|start}` (`start` with a
//!   body `{"canary": VERSION}`) — 202 `{"accepted": command}`, 404 unknown policy or command, 409
//!   when the command does not apply, 501 in kube mode.
//!
//! `{namespace}/` may be left out while one namespace alone has a policy of that name (a local
//! policy file, one cluster namespace); with two it is 409 naming them.
//!
//! Live updates are by polling (the page asks every second): no long-lived connections to track on
//! a bare hyper server, nothing to reconnect after a controller restart, and the page reads exactly
//! what the CLI reads.

use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;
use serde_json::json;

use crate::ui::history::Lookup;
use crate::ui::{assets, CommandRefused, Submit, Ui};
use mlcanary_core::rollout::Command;

fn json_response(status: StatusCode, body: &impl Serialize) -> Response<Full<Bytes>> {
    let (status, text) = match serde_json::to_vec(body) {
        Ok(t) => (status, t),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            br#"{"error":"cannot encode"}"#.to_vec(),
        ),
    };
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Full::new(Bytes::from(text)))
        .unwrap_or_default()
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json_response(status, &json!({ "error": message }))
}

/// A GET for the page or the API; `None` when `path` is neither.
pub fn get(path: &str, ui: &Ui) -> Option<Response<Full<Bytes>>> {
    if let Some((ctype, body)) = assets::asset(path) {
        return Some(
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, ctype)
                .header(header::CACHE_CONTROL, "no-cache")
                .body(Full::new(Bytes::from_static(body.as_bytes())))
                .unwrap_or_default(),
        );
    }
    let rest = path.strip_prefix("/api/policies")?;
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    Some(match segments[..] {
        [] => json_response(StatusCode::OK, &ui.list()),
        [name] => detail(ui, None, name),
        [namespace, name] => detail(ui, Some(namespace), name),
        _ => error(
            StatusCode::NOT_FOUND,
            "GET /api/policies/{namespace}/{name}",
        ),
    })
}

fn detail(ui: &Ui, namespace: Option<&str>, name: &str) -> Response<Full<Bytes>> {
    match ui.detail(namespace, name) {
        Ok(d) => json_response(StatusCode::OK, &d),
        Err(e) => lookup_error(namespace, name, &e),
    }
}

/// 404 for an unknown policy, 409 for a name several namespaces use.
fn lookup_error(namespace: Option<&str>, name: &str, e: &Lookup) -> Response<Full<Bytes>> {
    let who = match namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_owned(),
    };
    match e {
        Lookup::Unknown => error(StatusCode::NOT_FOUND, &format!("no policy {who:?}")),
        Lookup::Ambiguous(_) => error(StatusCode::CONFLICT, &format!("{who}: {e}")),
    }
}

/// The largest POST body read: a command's body is a small JSON object.
pub const MAX_POST_BODY: usize = 16 * 1024;

/// The answer to a POST whose body could not be read within [`MAX_POST_BODY`].
pub fn too_large() -> Response<Full<Bytes>> {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "request body over 16 KiB or unreadable",
    )
}

/// The canary of a `start` body, `{"canary": VERSION}`.
fn start_canary(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("canary")?.as_str().map(str::to_owned)
}

/// A POST: an operator's command for one policy. `start` takes `{"canary": VERSION}` as its body.
pub async fn post(path: &str, body: &[u8], ui: &Ui) -> Response<Full<Bytes>> {
    let Some(rest) = path.strip_prefix("/api/policies/") else {
        return error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    };
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let (namespace, name, command) = match segments[..] {
        [name, command] => (None, name, command),
        [namespace, name, command] => (Some(namespace), name, command),
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                "POST /api/policies/{namespace}/{name}/{promote|abort|pause|resume|start}",
            )
        }
    };
    if command == "start" && start_canary(body).is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            "start needs a body {\"canary\": VERSION}",
        );
    }
    let Some(cmd) = Command::parse(command, start_canary(body).as_deref()) else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("unknown command {command:?} (promote, abort, pause, resume, start)"),
        );
    };
    let accepted = cmd.name();
    let key = match ui.resolve(namespace, name) {
        Ok(k) => k,
        // The kube loop takes no commands here, known policy or not.
        Err(_) if !ui.takes_commands() => {
            return error(
                StatusCode::NOT_IMPLEMENTED,
                "use kubectl/mlcanary against the cluster",
            )
        }
        Err(e) => return lookup_error(namespace, name, &e),
    };
    match ui.submit(&key, cmd).await {
        Submit::Accepted => json_response(StatusCode::ACCEPTED, &json!({ "accepted": accepted })),
        Submit::Unsupported => error(
            StatusCode::NOT_IMPLEMENTED,
            "use kubectl/mlcanary against the cluster",
        ),
        Submit::Refused(CommandRefused::UnknownPolicy) => {
            error(StatusCode::NOT_FOUND, &format!("no policy {key}"))
        }
        Submit::Refused(CommandRefused::NotApplicable(why)) => error(StatusCode::CONFLICT, &why),
        Submit::Refused(CommandRefused::Failed(why)) => {
            error(StatusCode::INTERNAL_SERVER_ERROR, &why)
        }
    }
}
