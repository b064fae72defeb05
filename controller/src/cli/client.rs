//! The two backends of `mlcanary status|promote|abort|pause|resume`:
//!
//! - [`HttpBackend`]: a running `mlcanary local` or `mlcanary controller` (`--server URL`), through
//!   its HTTP API: `GET /api/policies`, `GET /api/policies/{name}`,
//!   `POST /api/policies/{name}/{promote|abort|pause|resume}` (202 accepted, 404 unknown, 409 not
//!   applicable);
//! - [`KubeBackend`]: the cluster (kubeconfig or in-cluster): CanaryPolicies are read directly and a
//!   command is a pair of annotations the reconciler applies once ([`crate::reconcile::command`]).
//!
//! Both return the same [`PolicyView`], so the output does not depend on where it came from.

use std::time::{SystemTime, UNIX_EPOCH};

use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::ResourceExt;
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use serde_json::Value;
use thiserror::Error;

use crate::exit::Exit;
use crate::policy::{CanaryPolicy, ValidatedPolicy};
use crate::reconcile::command::annotation_patch;
use mlcanary_core::rollout::applicable;
use mlcanary_core::rollout::Command;

/// One policy as the HTTP API's `/api/policies` shows it: the server's own view type.
pub use crate::ui::api::PolicyView;

/// Why a rollout command could not be done; each kind has its own exit code.
#[derive(Debug, Error)]
pub enum ClientError {
    /// Bad input: a malformed `--server` URL or policy name.
    #[error("{0}")]
    BadInput(String),
    /// The server or API is unreachable, or answered something that is not mlcanary's API.
    #[error("cannot reach {what}: {reason}")]
    Unreachable { what: String, reason: String },
    /// No such policy.
    #[error("{0}")]
    NotFound(String),
    /// The command does not apply to the rollout now, or the API server refused it.
    #[error("{0}")]
    Refused(String),
}

impl ClientError {
    /// 1 refused / not applicable, 2 bad input, 3 unreachable, 4 not found.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Refused(_) => Exit::Refused.code(),
            ClientError::BadInput(_) => Exit::BadInput.code(),
            ClientError::Unreachable { .. } => Exit::Unreachable.code(),
            ClientError::NotFound(_) => Exit::NotFound.code(),
        }
    }
}

/// A new, unique command id: the time in nanoseconds and the process id, in hex.
pub fn new_command_id(now: SystemTime) -> String {
    let nanos = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{nanos:x}-{:x}", std::process::id())
}

/// A running `mlcanary local` / `mlcanary controller`'s HTTP API.
#[derive(Debug, Clone)]
pub struct HttpBackend {
    base: Url,
    client: reqwest::Client,
    /// `-n`: policies are named `namespace/name` in the API; without it a name must be unique.
    namespace: Option<String>,
}

impl HttpBackend {
    /// `base` is the server's root, e.g. `http://127.0.0.1:8080`.
    pub fn new(base: &str) -> Result<Self, ClientError> {
        let bad = |why: String| ClientError::BadInput(format!("--server {base:?}: {why}"));
        let mut url = Url::parse(base).map_err(|e| bad(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
            return Err(bad("expected an http:// or https:// URL".into()));
        }
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        crate::tls::install_crypto_provider();
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| bad(e.to_string()))?;
        Ok(HttpBackend {
            base: url,
            client,
            namespace: None,
        })
    }

    /// Name policies in `namespace` (`-n`).
    pub fn in_namespace(mut self, namespace: Option<String>) -> Self {
        self.namespace = namespace;
        self
    }

    /// `{namespace}/{name}` segments of a policy's path (`{name}` alone without `-n`).
    fn policy_path<'a>(&'a self, name: &'a str) -> Vec<&'a str> {
        self.namespace
            .as_deref()
            .into_iter()
            .chain([name])
            .collect()
    }

    fn url(&self, segments: &[&str]) -> Result<Url, ClientError> {
        let mut url = self.base.clone();
        {
            let mut path = url
                .path_segments_mut()
                .map_err(|()| ClientError::BadInput(format!("--server {}", self.base)))?;
            path.pop_if_empty();
            path.extend(["api", "policies"]);
            path.extend(segments);
        }
        Ok(url)
    }

    fn unreachable(&self, reason: impl ToString) -> ClientError {
        ClientError::Unreachable {
            what: self.base.to_string(),
            reason: reason.to_string(),
        }
    }

    async fn send(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<(StatusCode, Vec<u8>), ClientError> {
        let resp = req.send().await.map_err(|e| self.unreachable(e))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| self.unreachable(e))?;
        Ok((status, body.to_vec()))
    }

    fn decode<T: for<'de> Deserialize<'de>>(&self, body: &[u8]) -> Result<T, ClientError> {
        serde_json::from_slice(body)
            .map_err(|e| self.unreachable(format!("not an mlcanary API answer: {e}")))
    }

    /// The `{"error": ...}` of an error answer, else the status line.
    fn error_text(status: StatusCode, body: &[u8]) -> String {
        serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| status.to_string())
    }

    /// Every policy the server runs.
    pub async fn list(&self) -> Result<Vec<PolicyView>, ClientError> {
        let (status, body) = self.send(self.client.get(self.url(&[])?)).await?;
        if !status.is_success() {
            return Err(self.unreachable(Self::error_text(status, &body)));
        }
        self.decode(&body)
    }

    /// One policy.
    pub async fn get(&self, name: &str) -> Result<PolicyView, ClientError> {
        let url = self.url(&self.policy_path(name))?;
        let (status, body) = self.send(self.client.get(url)).await?;
        match status {
            s if s.is_success() => self.decode(&body),
            StatusCode::NOT_FOUND => Err(ClientError::NotFound(format!(
                "no policy {name:?} on {}: {}",
                self.base,
                Self::error_text(status, &body)
            ))),
            _ => Err(self.unreachable(Self::error_text(status, &body))),
        }
    }

    /// Send `cmd`; the server applies it on its loop.
    pub async fn command(&self, name: &str, cmd: Command) -> Result<(), ClientError> {
        let mut path = self.policy_path(name);
        path.push(cmd.name());
        let url = self.url(&path)?;
        let (status, body) = self.send(self.client.post(url)).await?;
        let text = || Self::error_text(status, &body);
        match status {
            s if s.is_success() => Ok(()),
            StatusCode::NOT_FOUND => Err(ClientError::NotFound(format!(
                "no policy {name:?} on {}: {}",
                self.base,
                text()
            ))),
            StatusCode::CONFLICT => Err(ClientError::Refused(format!(
                "{} refused for {name}: {}",
                cmd.name(),
                text()
            ))),
            StatusCode::BAD_REQUEST => Err(ClientError::BadInput(text())),
            // `mlcanary controller`'s API is read-only: commands go through the cluster.
            StatusCode::NOT_IMPLEMENTED => Err(ClientError::Refused(format!(
                "{}: {} (omit --server to send it through the cluster)",
                cmd.name(),
                text()
            ))),
            _ => Err(self.unreachable(text())),
        }
    }
}

/// The cluster: CanaryPolicies through the API server.
#[derive(Clone)]
pub struct KubeBackend {
    client: kube::Client,
    /// `None`: every namespace (list only).
    namespace: Option<String>,
}

impl std::fmt::Debug for KubeBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeBackend")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl KubeBackend {
    /// `namespace`: `None` lists every namespace; a named policy then needs one (the client's
    /// default namespace is used).
    pub fn new(client: kube::Client, namespace: Option<String>) -> Self {
        KubeBackend { client, namespace }
    }

    /// From the kubeconfig (or the pod's service account), in `namespace` or the context's
    /// namespace; `all` lists every namespace.
    pub async fn connect(namespace: Option<String>, all: bool) -> Result<Self, ClientError> {
        crate::tls::install_crypto_provider();
        let client = kube::Client::try_default()
            .await
            .map_err(|e| ClientError::Unreachable {
                what: "the Kubernetes API (kubeconfig or in-cluster config)".into(),
                reason: e.to_string(),
            })?;
        let namespace = match (all, namespace) {
            (true, _) => None,
            (false, Some(ns)) => Some(ns),
            (false, None) => Some(client.default_namespace().to_owned()),
        };
        Ok(KubeBackend { client, namespace })
    }

    fn namespaced(&self) -> (Api<CanaryPolicy>, String) {
        let ns = self
            .namespace
            .clone()
            .unwrap_or_else(|| self.client.default_namespace().to_owned());
        (Api::namespaced(self.client.clone(), &ns), ns)
    }

    /// Every CanaryPolicy in the namespace (or all namespaces).
    pub async fn list(&self) -> Result<Vec<PolicyView>, ClientError> {
        let api: Api<CanaryPolicy> = match &self.namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        };
        let list = api.list(&ListParams::default()).await.map_err(|e| {
            kube_error(
                e,
                "CanaryPolicies (is the CRD installed? kubectl apply -k istio/)",
            )
        })?;
        Ok(list.items.iter().map(view_of).collect())
    }

    async fn get_obj(&self, name: &str) -> Result<(CanaryPolicy, Api<CanaryPolicy>), ClientError> {
        let (api, ns) = self.namespaced();
        let obj = api
            .get(name)
            .await
            .map_err(|e| kube_error(e, &format!("CanaryPolicy {ns}/{name}")))?;
        Ok((obj, api))
    }

    /// One CanaryPolicy.
    pub async fn get(&self, name: &str) -> Result<PolicyView, ClientError> {
        Ok(view_of(&self.get_obj(name).await?.0))
    }

    /// Check that `cmd` applies, then annotate the policy with it and `id`. Returns the policy's
    /// namespace.
    pub async fn command(&self, name: &str, cmd: Command, id: &str) -> Result<String, ClientError> {
        let (obj, api) = self.get_obj(name).await?;
        let ns = obj.namespace().unwrap_or_default();
        let phase = obj.status.as_ref().map(|s| s.phase).unwrap_or_default();
        applicable(phase, &cmd)
            .map_err(|why| ClientError::Refused(format!("{ns}/{name}: {why}")))?;
        api.patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(annotation_patch(&cmd, id)),
        )
        .await
        .map_err(|e| kube_error(e, &format!("CanaryPolicy {ns}/{name}")))?;
        Ok(ns)
    }
}

/// The API server's answer as one of ours: 404 not found, other refusals (403, 422, ...) refused,
/// anything else (connection, TLS, 5xx) unreachable.
fn kube_error(e: kube::Error, what: &str) -> ClientError {
    match e {
        kube::Error::Api(s) if s.code == 404 => ClientError::NotFound(format!("{what}: not found")),
        kube::Error::Api(s) if (400..500).contains(&s.code) => {
            ClientError::Refused(format!("{what}: the API server refused: {}", s.message))
        }
        other => ClientError::Unreachable {
            what: "the Kubernetes API".into(),
            reason: format!("{what}: {other}"),
        },
    }
}

/// A CanaryPolicy as the HTTP API would show it. The steps and threshold come from the validated
/// spec; an invalid spec shows none (its status says why).
pub fn view_of(obj: &CanaryPolicy) -> PolicyView {
    let status = obj.status.clone().unwrap_or_default();
    let validated = ValidatedPolicy::try_from(obj).ok();
    PolicyView {
        name: obj.name_any(),
        namespace: obj.namespace().unwrap_or_default(),
        phase: status.phase,
        canary_weight_bp: status.canary_weight_bp,
        step_index: status.step_index,
        steps_bp: validated
            .as_ref()
            .map(|v| v.steps_bp.clone())
            .unwrap_or_default(),
        canary_version: status.canary_version,
        failed_checks: status.failed_checks,
        failure_threshold: validated.as_ref().map_or_else(
            || obj.spec.analysis.failure_threshold.unwrap_or(0),
            |v| v.failure_threshold,
        ),
        shadow_mirror_bp: status.shadow.as_ref().map(|s| s.mirror_bp),
        last_verdicts: status.last_verdicts,
        history: status.history,
        conditions: status.conditions,
        updated: status
            .last_progress_time
            .or(status.last_transition_time)
            .unwrap_or_default(),
    }
}
