//! The gate against the cluster: `start` patches `spec.target.canaryVersion`; `wait` reads the
//! CanaryPolicy until its status is about the awaited version (`--canary`, else the spec's) and
//! terminal.

use kube::api::{Api, Patch, PatchParams};
use serde_json::{json, Value};

use super::{about, Watch};
use crate::cli::client::{view_of, ClientError, PolicyView};
use crate::policy::CanaryPolicy;

/// A client and the namespace of the policy.
#[derive(Clone)]
pub struct KubeGate {
    pub api: Api<CanaryPolicy>,
    pub namespace: String,
}

/// From the kubeconfig (or in-cluster), in `namespace` or the context's default.
pub async fn connect(namespace: Option<String>) -> Result<KubeGate, ClientError> {
    crate::tls::install_crypto_provider();
    let client = kube::Client::try_default()
        .await
        .map_err(|e| ClientError::Unreachable {
            what: "the Kubernetes API (kubeconfig or in-cluster config)".into(),
            reason: e.to_string(),
        })?;
    Ok(with_client(client, namespace))
}

/// Over a given client (tests: a mocked API server).
pub fn with_client(client: kube::Client, namespace: Option<String>) -> KubeGate {
    let namespace = namespace.unwrap_or_else(|| client.default_namespace().to_owned());
    KubeGate {
        api: Api::namespaced(client, &namespace),
        namespace,
    }
}

/// The JSON merge patch `start` sends.
pub fn start_patch(canary: &str) -> Value {
    json!({ "spec": { "target": { "canaryVersion": canary } } })
}

fn kube_error(e: kube::Error, what: &str) -> ClientError {
    match e {
        kube::Error::Api(s) if s.code == 404 => ClientError::NotFound(format!("{what}: not found")),
        kube::Error::Api(s) if s.code == 422 || s.code == 400 => {
            ClientError::BadInput(format!("{what}: {}", s.message))
        }
        e => ClientError::Unreachable {
            what: what.to_owned(),
            reason: e.to_string(),
        },
    }
}

/// Patch `spec.target.canaryVersion`; the reconciler starts the new rollout.
pub async fn start(k: &KubeGate, name: &str, canary: &str) -> Result<(), ClientError> {
    k.api
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(start_patch(canary)),
        )
        .await
        .map_err(|e| kube_error(e, &format!("CanaryPolicy {}/{name}", k.namespace)))?;
    Ok(())
}

/// The view of `obj` once its status is about the requested version (`spec.target.canaryVersion`
/// equals `status.canaryVersion`, or the spec names none); `None` before the reconciler has
/// picked the new version up, so a finished earlier rollout is not taken for this one.
pub fn current_view(obj: &CanaryPolicy) -> Option<PolicyView> {
    let wanted = obj.spec.target.canary_version.as_ref();
    let seen = obj.status.as_ref().and_then(|s| s.canary_version.as_ref());
    (wanted.is_none() || wanted == seen).then(|| view_of(obj))
}

impl Watch for KubeGate {
    async fn look(
        &mut self,
        policy: &str,
        canary: Option<&str>,
    ) -> Result<Option<PolicyView>, ClientError> {
        let obj = self
            .api
            .get(policy)
            .await
            .map_err(|e| kube_error(e, &format!("CanaryPolicy {}/{policy}", self.namespace)))?;
        // `--canary` names the version outright; a `deploymentRef` target has none in the spec.
        Ok(match canary {
            Some(_) => about(view_of(&obj), canary),
            None => current_view(&obj),
        })
    }
}
