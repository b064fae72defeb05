//! Mocked API server: every request the target sends is checked (verb, path, query, body).

use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};
use tower_test::mock::{self, Handle};

use super::*;
use crate::policy::CanaryPolicy;
use crate::render::{owned_routes, render_config};
use crate::traffic::{DesiredTraffic, TrafficError, TrafficTarget};
use crate::weights::Weights;

type ApiHandle = Handle<Request<Body>, Response<Body>>;

fn target() -> (IstioTarget, ApiHandle) {
    let (svc, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let t = IstioTarget::new(Client::new(svc, "ml")).with_backoff(Duration::ZERO);
    (t, handle)
}

fn desired(bp: u32) -> DesiredTraffic {
    let v = CanaryPolicy::test().validated();
    let w = Weights::with_canary_bp(bp);
    DesiredTraffic {
        namespace: "ml".into(),
        policy: v.name.clone(),
        virtual_service: v.virtual_service.clone(),
        routes: owned_routes(&v, w),
        wasm_plugin: v.wasm_plugin.clone(),
        plugin_config: render_config(&[(&v, w)]).unwrap(),
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

fn vs(resource_version: &str) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "fraud-model", "namespace": "ml", "resourceVersion": resource_version},
        "spec": {"hosts": ["fraud-model"], "http": [
            {"name": "health", "match": [{"uri": {"exact": "/health"}}],
             "route": [{"destination": {"host": "fraud-model", "subset": "stable"}}]},
            {"name": "mlcanary-fraud-model-default", "route": []}
        ]}
    })
}

fn conflict() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": "the object has been modified", "reason": "Conflict", "code": 409})
}

/// Next request: check method and path, that it is a forced apply by `mlcanary` when a PATCH, and
/// return its body as JSON (Null for GET).
async fn expect(
    handle: &mut ApiHandle,
    method: Method,
    path: &str,
) -> (Value, mock::SendResponse<Response<Body>>) {
    let (req, send) = handle.next_request().await.expect("a request");
    assert_eq!(req.method(), method);
    assert_eq!(req.uri().path(), path);
    if method == Method::PATCH {
        let q = req.uri().query().unwrap_or_default();
        let mut params: Vec<&str> = q.split('&').filter(|p| !p.is_empty()).collect();
        params.sort();
        assert_eq!(params, ["fieldManager=mlcanary", "force=true"], "query {q}");
        assert_eq!(
            req.headers().get("content-type").unwrap(),
            "application/apply-patch+yaml"
        );
    }
    let bytes = req.into_body().collect_bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (body, send)
}

const WP: &str = "/apis/extensions.istio.io/v1alpha1/namespaces/ml/wasmplugins/mlcanary";
const VS: &str = "/apis/networking.istio.io/v1/namespaces/ml/virtualservices/fraud-model";

#[tokio::test]
async fn applies_plugin_config_then_spliced_routes_retrying_a_conflict() {
    let (t, mut handle) = target();
    let d = desired(500);
    let server = tokio::spawn(async move {
        let (body, send) = expect(&mut handle, Method::PATCH, WP).await;
        assert_eq!(body["kind"], "WasmPlugin");
        assert_eq!(
            body["spec"].as_object().unwrap().len(),
            1,
            "only pluginConfig is ours"
        );
        let variants = &body["spec"]["pluginConfig"]["policies"][0]["variants"];
        assert_eq!(
            variants,
            &json!([{"name": "stable", "weight_bp": 9500}, {"name": "canary", "weight_bp": 500}])
        );
        send.send_response(json_response(StatusCode::OK, &body));

        // First try: read, apply with rv 7, conflict.
        let (_, send) = expect(&mut handle, Method::GET, VS).await;
        send.send_response(json_response(StatusCode::OK, &vs("7")));
        let (body, send) = expect(&mut handle, Method::PATCH, VS).await;
        assert_eq!(body["metadata"]["resourceVersion"], "7");
        send.send_response(json_response(StatusCode::CONFLICT, &conflict()));

        // Second try: read again (rv 8), apply, accepted.
        let (_, send) = expect(&mut handle, Method::GET, VS).await;
        send.send_response(json_response(StatusCode::OK, &vs("8")));
        let (body, send) = expect(&mut handle, Method::PATCH, VS).await;
        assert_eq!(body["metadata"]["resourceVersion"], "8");
        let names: Vec<&str> = body["spec"]["http"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "mlcanary-fraud-model-canary",
                "mlcanary-fraud-model-stable",
                "health",
                "mlcanary-fraud-model-default"
            ]
        );
        assert_eq!(body["spec"]["http"][3]["route"][0]["weight"], 95);
        assert_eq!(body["spec"]["http"][3]["route"][1]["weight"], 5);
        assert!(body["spec"].get("hosts").is_none(), "hosts are not ours");
        send.send_response(json_response(StatusCode::OK, &body));
        handle
    });
    t.apply(&d).await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn gives_up_after_bounded_conflicts() {
    let (t, mut handle) = target();
    let d = desired(500);
    let server = tokio::spawn(async move {
        for _ in 0..MAX_ATTEMPTS {
            let (_, send) = expect(&mut handle, Method::GET, VS).await;
            send.send_response(json_response(StatusCode::OK, &vs("7")));
            let (_, send) = expect(&mut handle, Method::PATCH, VS).await;
            send.send_response(json_response(StatusCode::CONFLICT, &conflict()));
        }
        handle
    });
    let e = t.apply_routes(&d).await.unwrap_err();
    assert!(
        matches!(
            e,
            TrafficError::Conflict {
                attempts: MAX_ATTEMPTS,
                ..
            }
        ),
        "{e}"
    );
    let mut handle = server.await.unwrap();
    // No further request was made.
    assert!(futures_poll_none(&mut handle).await);
}

async fn futures_poll_none(handle: &mut ApiHandle) -> bool {
    tokio::time::timeout(Duration::from_millis(50), handle.next_request())
        .await
        .is_err()
}

#[tokio::test]
async fn refuses_bad_routes_without_any_request() {
    let (t, mut handle) = target();
    let mut d = desired(500);
    d.routes[2].route[0].weight = Some(0);
    d.routes[2].route[1].weight = Some(0);
    let e = t.apply_routes(&d).await.unwrap_err();
    assert!(matches!(e, TrafficError::Route(_)), "{e}");
    assert!(futures_poll_none(&mut handle).await);
}

#[tokio::test]
async fn other_api_errors_are_returned_not_retried() {
    let (t, mut handle) = target();
    let d = desired(500);
    let server = tokio::spawn(async move {
        let (_, send) = expect(&mut handle, Method::PATCH, WP).await;
        let forbidden = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": "forbidden", "reason": "Forbidden", "code": 403});
        send.send_response(json_response(StatusCode::FORBIDDEN, &forbidden));
        handle
    });
    let e = t.apply(&d).await.unwrap_err();
    assert!(
        matches!(e, TrafficError::Kube(kube::Error::Api(ref s)) if s.code == 403),
        "{e}"
    );
    let mut handle = server.await.unwrap();
    assert!(futures_poll_none(&mut handle).await);
}
