//! The ticket keys of `spec.feedback`: read from the policy's Secret when it reconciles, at most
//! once a minute per Secret (a rotation takes effect within that), for the policy and every peer
//! sharing its plugin —
//! their configs are rendered together, and a policy with feedback but no keys is refused by the
//! filter's validation before anything is written.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

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

/// How long a Secret read stays in use: a rotation reaches the filter within this (plus a
/// reconcile), and `previousKey` keeps the old tickets valid meanwhile.
pub const FRESH_FOR: Duration = Duration::from_secs(60);

type Data = BTreeMap<String, Vec<u8>>;

/// A Secret as read at a time; `None`: not found.
type Read = (SystemTime, Option<Data>);

/// Secrets read lately, by (namespace, name).
#[derive(Default)]
pub struct SecretCache {
    read: Mutex<HashMap<(String, String), Read>>,
}

impl SecretCache {
    /// Fill `policy`'s keys from its Secret in its namespace (nothing without `feedback`), read
    /// from the API unless read within [`FRESH_FOR`] of `now`.
    pub async fn fill(
        &self,
        client: &Client,
        policy: &mut ValidatedPolicy,
        now: SystemTime,
    ) -> Result<(), SecretError> {
        let key = policy.key();
        let namespace = policy.namespace_or_default().to_owned();
        let Some(f) = policy.feedback.as_mut() else {
            return Ok(());
        };
        let id = (namespace.clone(), f.secret.clone());
        let cached = self.read.lock().ok().and_then(|m| {
            m.get(&id)
                .filter(|(at, _)| now.duration_since(*at).is_ok_and(|d| d < FRESH_FOR))
                .map(|(_, d)| d.clone())
        });
        let data = match cached {
            Some(d) => d,
            None => {
                let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
                let data = match api.get_opt(&f.secret).await {
                    Ok(s) => s.map(|s| {
                        s.data
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(k, v)| (k, v.0))
                            .collect::<Data>()
                    }),
                    Err(source) => {
                        return Err(SecretError::Api {
                            policy: key,
                            secret: f.secret.clone(),
                            source,
                        })
                    }
                };
                if let Ok(mut m) = self.read.lock() {
                    m.insert(id, (now, data.clone()));
                }
                data
            }
        };
        let Some(data) = data else {
            return Err(SecretError::Invalid(format!(
                "Secret {namespace}/{} (spec.feedback.secretRef) not found",
                f.secret
            )));
        };
        f.set_keys(&data).map_err(|e| {
            SecretError::Invalid(format!("{e} (spec.feedback.secretRef, {namespace})"))
        })
    }
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
        let r = SecretCache::default()
            .fill(&client, &mut p, SystemTime::UNIX_EPOCH)
            .await;
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
    async fn a_secret_is_read_once_a_minute_however_many_policies_name_it() {
        let (svc, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(svc, "default");
        let server = tokio::spawn(async move {
            for _ in 0..2 {
                let (req, send) = handle.next_request().await.expect("a GET");
                assert_eq!(req.method(), Method::GET);
                let body = secret(json!({"key": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM="}));
                send.send_response(
                    Response::builder()
                        .body(Body::from(serde_json::to_vec(&body).unwrap()))
                        .unwrap(),
                );
            }
        });
        let cache = SecretCache::default();
        let t0 = SystemTime::UNIX_EPOCH;
        // Three fills within the minute: one read; a fill after it: the second read.
        for at in [0, 10, 59, 61] {
            let mut p = with_feedback();
            cache
                .fill(&client, &mut p, t0 + std::time::Duration::from_secs(at))
                .await
                .unwrap();
            assert_eq!(p.feedback.unwrap().keys.len(), 1);
        }
        server.await.unwrap();
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
