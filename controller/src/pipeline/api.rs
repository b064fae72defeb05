//! The gate against a running server's HTTP API (`--server URL`).

use reqwest::StatusCode;
use serde_json::{json, Value};

use super::{about, Watch};
use crate::cli::client::{ClientError, HttpBackend, PolicyView};

/// `{base}/api/policies/[{namespace}/]{name}/start`; names must be plain resource names.
pub fn start_url(base: &str, namespace: Option<&str>, name: &str) -> Result<String, ClientError> {
    let plain = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    if !plain(name) {
        return Err(ClientError::BadInput(format!(
            "{name:?} is not a policy name"
        )));
    }
    if let Some(ns) = namespace.filter(|ns| !plain(ns)) {
        return Err(ClientError::BadInput(format!("{ns:?} is not a namespace")));
    }
    let name = match namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_owned(),
    };
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(ClientError::BadInput(format!(
            "--server {base:?}: expected an http:// or https:// URL"
        )));
    }
    Ok(format!(
        "{}/api/policies/{name}/start",
        base.trim_end_matches('/')
    ))
}

/// The body of a start: `{"canary": VERSION}`.
pub fn start_body(canary: &str) -> Value {
    json!({ "canary": canary })
}

/// `POST /api/policies/[{namespace}/]{name}/start` with `{"canary": ...}`: 2xx started, 404 no
/// such policy, 400 / 409 refused.
pub async fn start(
    base: &str,
    namespace: Option<&str>,
    name: &str,
    canary: &str,
) -> Result<(), ClientError> {
    let url = start_url(base, namespace, name)?;
    crate::tls::install_crypto_provider();
    let unreachable = |reason: String| ClientError::Unreachable {
        what: base.to_owned(),
        reason,
    };
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(|e| unreachable(e.to_string()))?;
    let resp = client
        .post(&url)
        .header("content-type", "application/json")
        .body(start_body(canary).to_string())
        .send()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let why = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| status.to_string());
    match status {
        s if s.is_success() => Ok(()),
        StatusCode::NOT_FOUND => Err(ClientError::NotFound(format!(
            "start {name} on {base}: {why}"
        ))),
        StatusCode::BAD_REQUEST | StatusCode::CONFLICT => Err(ClientError::Refused(format!(
            "start refused for {name}: {why}"
        ))),
        _ => Err(unreachable(why)),
    }
}

/// `wait` over the HTTP API: `GET /api/policies/[{namespace}/]{name}`. The server applies a start
/// before it answers, so every status it shows is about the current rollout; with `--canary` the
/// view's `canaryVersion` must name it as well.
pub struct HttpWatch(HttpBackend);

impl HttpWatch {
    pub fn new(base: &str, namespace: Option<String>) -> Result<Self, ClientError> {
        Ok(HttpWatch(HttpBackend::new(base)?.in_namespace(namespace)))
    }
}

impl Watch for HttpWatch {
    async fn look(
        &mut self,
        policy: &str,
        canary: Option<&str>,
    ) -> Result<Option<PolicyView>, ClientError> {
        self.0.get(policy).await.map(|v| about(v, canary))
    }
}
