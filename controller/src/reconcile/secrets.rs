//! The ticket keys of `spec.feedback`: read from the policy's Secret at every reconcile (a
//! rotation takes effect at the next one), for the policy and every peer sharing its plugin —
//! their configs are rendered together, and a policy with feedback but no keys is refused by the
//! filter's validation before anything is written.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use thiserror::Error;

use crate::policy::{PolicyKey, ValidatedPolicy};

#[derive(Debug, Error)]
pub enum SecretError {
    /// The Secret is missing or unusable: the policy's spec cannot be rendered (its status says
    /// why).
    #[error("{0}")]
    Invalid(String),
    /// The API server did not answer: try again.
    #[error("reading Secret {secret} of {policy}: {source}")]
    Api {
        policy: PolicyKey,
        secret: String,
        #[source]
        source: kube::Error,
    },
}

/// Fill `policy`'s keys from its Secret in its namespace (nothing without `feedback`).
pub async fn fill(client: &Client, policy: &mut ValidatedPolicy) -> Result<(), SecretError> {
    let key = policy.key();
    let namespace = policy.namespace_or_default().to_owned();
    let Some(f) = policy.feedback.as_mut() else {
        return Ok(());
    };
    let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let secret = match api.get_opt(&f.secret).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return Err(SecretError::Invalid(format!(
                "Secret {namespace}/{} (spec.feedback.secretRef) not found",
                f.secret
            )))
        }
        Err(source) => {
            return Err(SecretError::Api {
                policy: key,
                secret: f.secret.clone(),
                source,
            })
        }
    };
    let data: BTreeMap<String, Vec<u8>> = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    f.set_keys(&data)
        .map_err(|e| SecretError::Invalid(format!("{e} (spec.feedback.secretRef, {namespace})")))
}

#[cfg(test)]
mod tests {
    use http::{Method, Request, Response, StatusCode};
    use kube::client::Body;
    use serde_json::json;
    use tower_test::mock;

    use super::*;
    use mlcanary_core::policy::feedback::Feedback;

    fn with_feedback() -> ValidatedPolicy {
        let mut p = crate::policy::CanaryPolicy::test().validated();
        p.namespace = Some("ml".into());
        p.feedback = Some(Feedback {
            secret: "fraud-model-feedback".into(),
            max_age: std::time::Duration::from_secs(600),
            label_delay: std::time::Duration::ZERO,
            bake: false,
            keys: Vec::new(),
        });
        p
    }

    /// One GET of the Secret, answered with `status` and `body`; what `fill` made of it.
    async fn fill_with(
        status: StatusCode,
        body: serde_json::Value,
    ) -> (ValidatedPolicy, Result<(), SecretError>) {
        let (svc, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(svc, "default");
        let server = tokio::spawn(async move {
            let (req, send) = handle.next_request().await.expect("a GET of the Secret");
            assert_eq!(req.method(), Method::GET);
            assert_eq!(
                req.uri().path(),
                "/api/v1/namespaces/ml/secrets/fraud-model-feedback"
            );
            send.send_response(
                Response::builder()
                    .status(status)
                    .body(Body::from(serde_json::to_vec(&body).unwrap()))
                    .unwrap(),
            );
        });
        let mut p = with_feedback();
        let r = fill(&client, &mut p).await;
        server.await.unwrap();
        (p, r)
    }

    fn secret(data: serde_json::Value) -> serde_json::Value {
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "fraud-model-feedback", "namespace": "ml"}, "data": data})
    }

    #[tokio::test]
    async fn the_keys_come_from_the_secret_signing_key_first() {
        // "0123456789abcdef0123" and "previous-key-previous", base64 as the API returns them.
        let (p, r) = fill_with(
            StatusCode::OK,
            secret(json!({"key": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM=",
                          "previousKey": "cHJldmlvdXMta2V5LXByZXZpb3Vz"})),
        )
        .await;
        r.unwrap();
        assert_eq!(
            p.feedback.unwrap().keys,
            [
                "MDEyMzQ1Njc4OWFiY2RlZjAxMjM=",
                "cHJldmlvdXMta2V5LXByZXZpb3Vz"
            ]
        );
    }

    #[tokio::test]
    async fn a_missing_secret_or_key_is_a_reason_not_a_retry() {
        let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                            "reason": "NotFound", "code": 404, "message": "not found"});
        let (_, r) = fill_with(StatusCode::NOT_FOUND, status).await;
        let e = r.unwrap_err();
        assert!(matches!(e, SecretError::Invalid(_)), "{e}");
        assert!(e.to_string().contains("ml/fraud-model-feedback"), "{e}");
        let (p, r) = fill_with(StatusCode::OK, secret(json!({"previousKey": "c2hvcnQ="}))).await;
        assert!(r.unwrap_err().to_string().contains("has no `key`"));
        assert!(p.feedback.unwrap().keys.is_empty());
        let (_, r) = fill_with(StatusCode::OK, secret(json!({"key": "c2hvcnQ="}))).await;
        assert!(r.unwrap_err().to_string().contains("at least 16"));
    }

    #[tokio::test]
    async fn an_unanswered_api_is_retried() {
        let (_, r) = fill_with(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"kind": "Status",
            "apiVersion": "v1", "status": "Failure", "code": 500, "message": "etcd"}),
        )
        .await;
        assert!(matches!(r, Err(SecretError::Api { .. })));
    }
}
