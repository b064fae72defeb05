//! Mocked API server: every request the target sends is checked (verb, path, query, body).

use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};
use tower_test::mock::{self, Handle};

use super::*;
use crate::policy::CanaryPolicy;
use crate::traffic::{DesiredTraffic, TrafficError, TrafficTarget};
use mlcanary_core::render::{owned_routes, render_config, RouteError};
use mlcanary_core::weights::Weights;

pub(super) type ApiHandle = Handle<Request<Body>, Response<Body>>;

pub(super) fn target() -> (IstioTarget, ApiHandle) {
    let (svc, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let t = IstioTarget::new(Client::new(svc, "ml")).with_backoff(Duration::ZERO);
    (t, handle)
}

pub(super) fn desired(bp: u32) -> DesiredTraffic {
    let v = CanaryPolicy::test().validated();
    let w = Weights::with_canary_bp(bp);
    DesiredTraffic {
        namespace: "ml".into(),
        policy: v.name.clone(),
        virtual_service: v.virtual_service.clone(),
        routes: owned_routes(&v, w),
        wasm_plugin: v.plugin(),
        plugin_config: std::sync::Arc::new(render_config(&[(&v, w)]).unwrap()),
        inbound: None,
    }
}

pub(super) fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

pub(super) fn vs(resource_version: &str) -> Value {
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
pub(super) async fn expect(
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

/// The mesh plugin: the test policy names none.
pub(super) const WP: &str =
    "/apis/extensions.istio.io/v1alpha1/namespaces/istio-system/wasmplugins/mlcanary";
pub(super) const VS: &str =
    "/apis/networking.istio.io/v1/namespaces/ml/virtualservices/fraud-model";
/// The test policy's inbound plugin (`mlcanary-shadow-<policy>`, in the policy's namespace).
pub(super) const INBOUND: &str =
    "/apis/extensions.istio.io/v1alpha1/namespaces/ml/wasmplugins/mlcanary-shadow-fraud-model";
pub(super) const NET: &str = "networking.istio.io";
pub(super) const EXT: &str = "extensions.istio.io";
/// What Istio ≥ 1.22 serves.
pub(super) const NET_VERSIONS: &[&str] = &["v1", "v1beta1", "v1alpha3"];

/// `GET /apis/<group>`'s answer: the group serves `versions` (the first preferred).
pub(super) fn api_group(group: &str, versions: &[&str]) -> Value {
    let gv = |v: &str| json!({"groupVersion": format!("{group}/{v}"), "version": v});
    json!({
        "kind": "APIGroup", "apiVersion": "v1", "name": group,
        "versions": versions.iter().map(|v| gv(v)).collect::<Vec<_>>(),
        "preferredVersion": gv(versions[0]),
    })
}

/// Next request: the DELETE of the test policy's inbound plugin, answered `found` (the object
/// deleted) or not (a 404: already gone).
pub(super) async fn inbound_deleted(handle: &mut ApiHandle, found: bool) {
    let (_, send) = expect(handle, Method::DELETE, INBOUND).await;
    send.send_response(if found {
        json_response(
            StatusCode::OK,
            &json!({"apiVersion": "extensions.istio.io/v1alpha1", "kind": "WasmPlugin",
                    "metadata": {"name": "mlcanary-shadow-fraud-model", "namespace": "ml"},
                    "spec": {"url": "oci://example/mlcanary:0.1"}}),
        )
    } else {
        json_response(StatusCode::NOT_FOUND, &status(404, "NotFound"))
    });
}

/// Next request: the discovery of `group`, answered with `versions`.
pub(super) async fn discovered(handle: &mut ApiHandle, group: &str, versions: &[&str]) {
    let (_, send) = expect(handle, Method::GET, &format!("/apis/{group}")).await;
    send.send_response(json_response(StatusCode::OK, &api_group(group, versions)));
}

#[tokio::test]
async fn applies_plugin_config_then_spliced_routes_retrying_a_conflict() {
    let (t, mut handle) = target();
    let d = desired(500);
    let server = tokio::spawn(async move {
        discovered(&mut handle, EXT, &["v1alpha1"]).await;
        let (body, send) = expect(&mut handle, Method::PATCH, WP).await;
        assert_eq!(body["kind"], "WasmPlugin");
        assert_eq!(body["apiVersion"], "extensions.istio.io/v1alpha1");
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

        // First try: discover, read, apply with rv 7, conflict.
        discovered(&mut handle, NET, NET_VERSIONS).await;
        let (_, send) = expect(&mut handle, Method::GET, VS).await;
        send.send_response(json_response(StatusCode::OK, &vs("7")));
        let (body, send) = expect(&mut handle, Method::PATCH, VS).await;
        assert_eq!(body["metadata"]["resourceVersion"], "7");
        send.send_response(json_response(StatusCode::CONFLICT, &conflict()));

        // Second try: read again (rv 8; the versions are known), apply, accepted.
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
        // No shadow: its inbound plugin, unknown at start, is deleted (none was there).
        inbound_deleted(&mut handle, false).await;
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
        discovered(&mut handle, NET, NET_VERSIONS).await;
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

pub(super) async fn futures_poll_none(handle: &mut ApiHandle) -> bool {
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
        discovered(&mut handle, EXT, &["v1alpha1"]).await;
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

pub(super) fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": reason, "reason": reason, "code": code})
}

#[tokio::test]
async fn retries_5xx_and_transport_errors_on_reads_and_writes_then_succeeds() {
    let (t, mut handle) = target();
    let d = desired(2000);
    let server = tokio::spawn(async move {
        // WasmPlugin: 503, then the connection fails, then accepted.
        discovered(&mut handle, EXT, &["v1alpha1"]).await;
        let (_, send) = expect(&mut handle, Method::PATCH, WP).await;
        send.send_response(json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &status(503, "ServiceUnavailable"),
        ));
        let (_, send) = expect(&mut handle, Method::PATCH, WP).await;
        send.send_error(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection reset by peer",
        ));
        let (body, send) = expect(&mut handle, Method::PATCH, WP).await;
        send.send_response(json_response(StatusCode::OK, &body));
        // VirtualService: the read fails with 500, the apply with 502, then both work.
        discovered(&mut handle, NET, NET_VERSIONS).await;
        let (_, send) = expect(&mut handle, Method::GET, VS).await;
        send.send_response(json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &status(500, "InternalError"),
        ));
        let (_, send) = expect(&mut handle, Method::GET, VS).await;
        send.send_response(json_response(StatusCode::OK, &vs("3")));
        let (_, send) = expect(&mut handle, Method::PATCH, VS).await;
        send.send_response(json_response(
            StatusCode::BAD_GATEWAY,
            &status(502, "BadGateway"),
        ));
        // The apply is retried from a fresh read: the object may have changed meanwhile.
        let (_, send) = expect(&mut handle, Method::GET, VS).await;
        send.send_response(json_response(StatusCode::OK, &vs("4")));
        let (body, send) = expect(&mut handle, Method::PATCH, VS).await;
        assert_eq!(body["metadata"]["resourceVersion"], "4");
        assert_eq!(body["spec"]["http"][3]["route"][0]["weight"], 80);
        assert_eq!(body["spec"]["http"][3]["route"][1]["weight"], 20);
        send.send_response(json_response(StatusCode::OK, &body));
        inbound_deleted(&mut handle, false).await;
        handle
    });
    t.apply(&d).await.unwrap();
    let mut handle = server.await.unwrap();
    assert!(futures_poll_none(&mut handle).await);
}

#[tokio::test]
async fn gives_up_after_bounded_5xx_with_the_last_error() {
    let (t, mut handle) = target();
    let d = desired(500);
    let server = tokio::spawn(async move {
        discovered(&mut handle, EXT, &["v1alpha1"]).await;
        for _ in 0..MAX_ATTEMPTS {
            let (_, send) = expect(&mut handle, Method::PATCH, WP).await;
            send.send_response(json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &status(503, "ServiceUnavailable"),
            ));
        }
        handle
    });
    let e = t.apply(&d).await.unwrap_err();
    assert!(
        matches!(e, TrafficError::Kube(kube::Error::Api(ref s)) if s.code == 503),
        "{e}"
    );
    let mut handle = server.await.unwrap();
    // Neither a sixth attempt nor, since the plugin config failed, any VirtualService write.
    assert!(futures_poll_none(&mut handle).await);
}

#[tokio::test]
async fn too_many_requests_is_retried() {
    let (t, mut handle) = target();
    let d = desired(500);
    let server = tokio::spawn(async move {
        discovered(&mut handle, EXT, &["v1alpha1"]).await;
        let (_, send) = expect(&mut handle, Method::PATCH, WP).await;
        send.send_response(json_response(
            StatusCode::TOO_MANY_REQUESTS,
            &status(429, "TooManyRequests"),
        ));
        let (body, send) = expect(&mut handle, Method::PATCH, WP).await;
        send.send_response(json_response(StatusCode::OK, &body));
        handle
    });
    t.apply_plugin_config(&d).await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn backoff_doubles_and_is_capped() {
    let (svc, _handle) = mock::pair::<Request<Body>, Response<Body>>();
    let t = IstioTarget::new(Client::new(svc, "ml"));
    let ms: Vec<u128> = (0..MAX_ATTEMPTS).map(|a| t.delay(a).as_millis()).collect();
    assert_eq!(ms, [200, 400, 800, 1600, 3200]);
    assert_eq!(t.delay(6), MAX_BACKOFF);
    assert_eq!(t.delay(u32::MAX), MAX_BACKOFF);
    // The worst case a tick waits on one object: the sum of the delays between attempts.
    let total: Duration = (0..MAX_ATTEMPTS - 1).map(|a| t.delay(a)).sum();
    assert_eq!(total, Duration::from_millis(3000));
}

#[tokio::test]
async fn keeps_other_owners_routes_and_fields_byte_for_byte() {
    let (t, mut handle) = target();
    let d = desired(5000);
    let theirs = json!([
        {"name": "health", "match": [{"uri": {"exact": "/health"}}],
         "route": [{"destination": {"host": "fraud-model", "subset": "stable"}}],
         "timeout": "2s", "retries": {"attempts": 3, "perTryTimeout": "500ms"}},
        {"name": "shadow-eval", "match": [{"headers": {"x-eval": {"exact": "1"}}}],
         "route": [{"destination": {"host": "fraud-eval", "port": {"number": 8501}}, "weight": 100}],
         "mirror": {"host": "fraud-audit"}, "mirrorPercentage": {"value": 5.0},
         "fault": {"delay": {"fixedDelay": "1s", "percentage": {"value": 1.0}}},
         "headers": {"request": {"set": {"x-team": "risk"}}},
         "corsPolicy": {"allowOrigins": [{"exact": "https://ops.example"}]}},
        // An owned route someone edited by hand: ours again after the apply.
        {"name": "mlcanary-fraud-model-default", "timeout": "9s",
         "route": [{"destination": {"host": "fraud-model", "subset": "canary"}, "weight": 100}]}
    ]);
    let current = json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "fraud-model", "namespace": "ml", "resourceVersion": "11",
                     "labels": {"team": "risk"}, "annotations": {"owner": "someone-else"}},
        "spec": {"hosts": ["fraud-model"], "gateways": ["mesh", "ml/edge"],
                 "tcp": [{"route": [{"destination": {"host": "fraud-model"}}]}],
                 "http": theirs.clone()}
    });
    let server = tokio::spawn(async move {
        discovered(&mut handle, NET, NET_VERSIONS).await;
        let (_, send) = expect(&mut handle, Method::GET, VS).await;
        send.send_response(json_response(StatusCode::OK, &current));
        let (body, send) = expect(&mut handle, Method::PATCH, VS).await;
        send.send_response(json_response(StatusCode::OK, &body));
        (handle, body)
    });
    t.apply_routes(&d).await.unwrap();
    let (_, body) = server.await.unwrap();
    // Only `spec.http` is in the patch: hosts, gateways, tcp, labels and annotations belong to
    // their field managers and server-side apply leaves them alone.
    let spec_keys: Vec<&String> = body["spec"].as_object().unwrap().keys().collect();
    assert_eq!(spec_keys, ["http"]);
    let mut meta_keys: Vec<&String> = body["metadata"].as_object().unwrap().keys().collect();
    meta_keys.sort();
    assert_eq!(meta_keys, ["name", "namespace", "resourceVersion"]);
    let http = body["spec"]["http"].as_array().unwrap();
    assert_eq!(http.len(), 5, "{http:#?}");
    // Their routes: every field kept, in their order, between our header routes and our default.
    assert_eq!(http[2], theirs[0]);
    assert_eq!(http[3], theirs[1]);
    // Our default route is rewritten whole (no hand-edited leftovers), at the current split.
    assert_eq!(http[4]["name"], "mlcanary-fraud-model-default");
    assert!(http[4].get("timeout").is_none(), "{:#}", http[4]);
    assert_eq!(http[4]["route"][0]["weight"], 50);
    assert_eq!(http[4]["route"][1]["weight"], 50);
}

#[tokio::test]
async fn never_writes_an_empty_host_or_subset() {
    for field in ["host", "subset"] {
        let (t, mut handle) = target();
        let mut d = desired(500);
        match field {
            "host" => d.routes[2].route[1].destination.host.clear(),
            _ => d.routes[0].route[0].destination.subset.clear(),
        }
        let e = t.apply(&d).await.unwrap_err();
        assert!(
            matches!(e, TrafficError::Route(RouteError::EmptyHost { .. })),
            "{field}: {e}"
        );
        // Refused before the plugin config too: a half-applied split is never left behind.
        assert!(futures_poll_none(&mut handle).await, "{field}");
    }
}
