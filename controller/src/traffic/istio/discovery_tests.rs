//! Versions by discovery, against a mocked API server: which group is asked, and which version
//! each write's path and body then use.

use http::{Method, Response, StatusCode};
use kube::client::Body;
use serde_json::Value;

use super::tests::{
    discovered, expect, futures_poll_none, inbound_deleted, json_response, status, target, vs,
    ApiHandle, EXT, NET, NET_VERSIONS, VS, WP,
};
use super::versions::DiscoveryError;
use super::*;
use crate::traffic::{TrafficError, TrafficTarget};

fn vs_path(version: &str) -> String {
    format!("/apis/networking.istio.io/{version}/namespaces/ml/virtualservices/fraud-model")
}

/// The sample VirtualService as the API server returns it at `version`.
fn vs_at(version: &str, resource_version: &str) -> Value {
    let mut v = vs(resource_version);
    v["apiVersion"] = VIRTUAL_SERVICE.api_version(version).into();
    v
}

/// A read and an accepted apply of the VirtualService at `version`; returns the apply's body.
async fn read_and_apply(handle: &mut ApiHandle, version: &str) -> Value {
    let path = vs_path(version);
    let (_, send) = expect(handle, Method::GET, &path).await;
    send.send_response(json_response(StatusCode::OK, &vs_at(version, "5")));
    let (body, send) = expect(handle, Method::PATCH, &path).await;
    send.send_response(json_response(StatusCode::OK, &body));
    body
}

/// What the API server answers for a path it does not serve: a plain-text 404.
fn page_not_found() -> Response<Body> {
    Response::builder()
        .status(StatusCode::NOT_FOUND)
        .body(Body::from("404 page not found\n".as_bytes().to_vec()))
        .unwrap()
}

#[tokio::test]
async fn istio_serving_v1_is_written_as_v1_and_asked_once() {
    let (t, mut handle) = target();
    let d = super::tests::desired(500);
    let server = tokio::spawn(async move {
        for round in 0..2 {
            if round == 0 {
                discovered(&mut handle, EXT, &["v1alpha1"]).await;
            }
            let (body, send) = expect(&mut handle, Method::PATCH, WP).await;
            assert_eq!(body["apiVersion"], "extensions.istio.io/v1alpha1");
            send.send_response(json_response(StatusCode::OK, &body));
            if round == 0 {
                discovered(&mut handle, NET, NET_VERSIONS).await;
            }
            let body = read_and_apply(&mut handle, "v1").await;
            assert_eq!(body["apiVersion"], "networking.istio.io/v1");
            assert_eq!(body["kind"], "VirtualService");
            if round == 0 {
                // Then known absent: the second write deletes nothing.
                inbound_deleted(&mut handle, false).await;
            }
        }
        handle
    });
    t.apply(&d).await.unwrap();
    // The second write asks nothing: the versions are cached.
    t.apply(&d).await.unwrap();
    let mut handle = server.await.unwrap();
    assert!(futures_poll_none(&mut handle).await);
}

#[tokio::test]
async fn istio_before_1_22_is_written_as_v1beta1() {
    let (t, mut handle) = target();
    let d = super::tests::desired(500);
    let server = tokio::spawn(async move {
        discovered(&mut handle, NET, &["v1beta1", "v1alpha3"]).await;
        let body = read_and_apply(&mut handle, "v1beta1").await;
        assert_eq!(body["apiVersion"], "networking.istio.io/v1beta1");
        assert_eq!(body["metadata"]["resourceVersion"], "5");
        assert_eq!(body["spec"]["http"][3]["route"][1]["weight"], 5);
        handle
    });
    t.apply_routes(&d).await.unwrap();
    let mut handle = server.await.unwrap();
    assert!(futures_poll_none(&mut handle).await);
}

#[tokio::test]
async fn no_istio_is_a_clear_error_and_nothing_is_written() {
    let (t, mut handle) = target();
    let d = super::tests::desired(500);
    let server = tokio::spawn(async move {
        let (_, send) = expect(&mut handle, Method::GET, "/apis/extensions.istio.io").await;
        send.send_response(page_not_found());
        handle
    });
    let e = t.apply(&d).await.unwrap_err();
    assert!(
        matches!(
            e,
            TrafficError::Discovery(DiscoveryError::NotInstalled {
                group: "extensions.istio.io",
                kind: "WasmPlugin"
            })
        ),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        "the API server does not serve extensions.istio.io (needed for WasmPlugin): is Istio \
         installed in this cluster?"
    );
    let mut handle = server.await.unwrap();
    assert!(futures_poll_none(&mut handle).await, "no write, no retry");
}

#[tokio::test]
async fn an_istio_too_old_is_named_and_asked_again_next_time() {
    let (t, mut handle) = target();
    let d = super::tests::desired(500);
    let server = tokio::spawn(async move {
        discovered(&mut handle, NET, &["v1alpha3"]).await;
        // Upgraded meanwhile: the next write asks again.
        discovered(&mut handle, NET, NET_VERSIONS).await;
        read_and_apply(&mut handle, "v1").await;
        handle
    });
    let e = t.apply_routes(&d).await.unwrap_err();
    assert!(
        matches!(
            e,
            TrafficError::Discovery(DiscoveryError::Unsupported {
                kind: "VirtualService",
                ..
            })
        ),
        "{e}"
    );
    t.apply_routes(&d).await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn discovery_retries_transient_errors_then_gives_up_with_a_typed_error() {
    let (t, mut handle) = target();
    let d = super::tests::desired(500);
    let server = tokio::spawn(async move {
        let (_, send) = expect(&mut handle, Method::GET, "/apis/networking.istio.io").await;
        send.send_response(json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &status(503, "ServiceUnavailable"),
        ));
        discovered(&mut handle, NET, NET_VERSIONS).await;
        read_and_apply(&mut handle, "v1").await;
        handle
    });
    t.apply_routes(&d).await.unwrap();
    server.await.unwrap();

    let (t, mut handle) = target();
    let server = tokio::spawn(async move {
        for _ in 0..MAX_ATTEMPTS {
            let (_, send) = expect(&mut handle, Method::GET, "/apis/networking.istio.io").await;
            send.send_error(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "connection refused",
            ));
        }
        handle
    });
    let e = t.apply_routes(&d).await.unwrap_err();
    assert!(
        matches!(
            e,
            TrafficError::Discovery(DiscoveryError::Request {
                group: "networking.istio.io",
                ..
            })
        ),
        "{e}"
    );
    let mut handle = server.await.unwrap();
    assert!(futures_poll_none(&mut handle).await, "bounded attempts");
}

#[tokio::test]
async fn a_404_after_istio_changed_discovers_again_and_writes_the_served_version() {
    let (t, mut handle) = target();
    let d = super::tests::desired(500);
    let server = tokio::spawn(async move {
        discovered(&mut handle, NET, &["v1", "v1beta1"]).await;
        let (_, send) = expect(&mut handle, Method::GET, VS).await;
        send.send_response(json_response(StatusCode::OK, &vs_at("v1", "5")));
        // Istio went back to a release without v1 between the read and the write.
        let (_, send) = expect(&mut handle, Method::PATCH, VS).await;
        send.send_response(page_not_found());
        discovered(&mut handle, NET, &["v1beta1", "v1alpha3"]).await;
        let body = read_and_apply(&mut handle, "v1beta1").await;
        assert_eq!(body["apiVersion"], "networking.istio.io/v1beta1");
        handle
    });
    t.apply_routes(&d).await.unwrap();
    let mut handle = server.await.unwrap();
    assert!(futures_poll_none(&mut handle).await);
}

#[tokio::test]
async fn a_missing_virtual_service_stays_a_404() {
    let (t, mut handle) = target();
    let d = super::tests::desired(500);
    let server = tokio::spawn(async move {
        discovered(&mut handle, NET, NET_VERSIONS).await;
        let (_, send) = expect(&mut handle, Method::GET, VS).await;
        send.send_response(json_response(
            StatusCode::NOT_FOUND,
            &status(404, "NotFound"),
        ));
        // Asked again in case the version went away; it did not: the object is missing.
        discovered(&mut handle, NET, NET_VERSIONS).await;
        handle
    });
    let e = t.apply_routes(&d).await.unwrap_err();
    assert!(
        matches!(e, TrafficError::Kube(kube::Error::Api(ref s)) if s.code == 404),
        "{e}"
    );
    let mut handle = server.await.unwrap();
    assert!(futures_poll_none(&mut handle).await);
}
