//! The canary's inbound plugin during a shadow, against a mocked API server: written before the
//! mesh config and the routes, deleted after the routes stop mirroring, once.

use http::{Method, StatusCode};
use serde_json::{json, Value};

use super::tests::{
    discovered, expect, futures_poll_none, inbound_deleted, json_response, status, target, vs,
    ApiHandle, EXT, INBOUND, NET, NET_VERSIONS, VS, WP,
};
use crate::policy::CanaryPolicy;
use crate::traffic::{DesiredTraffic, TrafficError, TrafficTarget};
use mlcanary_core::render::desired_traffic;
use mlcanary_core::weights::Weights;

/// The test policy's desired traffic at `w`, rendered as the engine renders it.
fn at(w: Weights) -> DesiredTraffic {
    let v = CanaryPolicy::test().shadow(10.0, None).validated();
    desired_traffic(&v, w, &[]).unwrap()
}

/// The mesh plugin as installed (istio/wasmplugin.yaml), with a digest and a priority.
fn mesh_plugin() -> Value {
    json!({
        "apiVersion": "extensions.istio.io/v1alpha1", "kind": "WasmPlugin",
        "metadata": {"name": "mlcanary", "namespace": "istio-system", "resourceVersion": "4"},
        "spec": {
            "url": "oci://ghcr.io/mlcanary/mlcanary-filter:0.1.0",
            "sha256": "aa".repeat(32),
            "imagePullPolicy": "IfNotPresent",
            "phase": "AUTHN",
            "failStrategy": "FAIL_OPEN",
            "priority": 10,
            "match": [{"mode": "CLIENT"}],
            "pluginConfig": {"policies": []},
        }
    })
}

/// Next requests: the mesh plugin read, then the inbound plugin's apply (accepted); its body.
async fn inbound_applied(handle: &mut ApiHandle) -> Value {
    let (_, send) = expect(handle, Method::GET, WP).await;
    send.send_response(json_response(StatusCode::OK, &mesh_plugin()));
    let (body, send) = expect(handle, Method::PATCH, INBOUND).await;
    send.send_response(json_response(StatusCode::OK, &body));
    body
}

/// Next requests: the mesh config's apply, the VirtualService's read and apply; the routes.
async fn config_and_routes(handle: &mut ApiHandle, discover_net: bool) -> Value {
    let (body, send) = expect(handle, Method::PATCH, WP).await;
    send.send_response(json_response(StatusCode::OK, &body));
    if discover_net {
        discovered(handle, NET, NET_VERSIONS).await;
    }
    routes(handle).await
}

/// Next requests: the VirtualService's read and apply; the routes applied.
async fn routes(handle: &mut ApiHandle) -> Value {
    let (_, send) = expect(handle, Method::GET, VS).await;
    send.send_response(json_response(StatusCode::OK, &vs("3")));
    let (body, send) = expect(handle, Method::PATCH, VS).await;
    send.send_response(json_response(StatusCode::OK, &body));
    body["spec"]["http"].clone()
}

fn mirrors(http: &Value) -> bool {
    http.as_array()
        .unwrap()
        .iter()
        .any(|r| r.get("mirror").is_some())
}

#[tokio::test]
async fn a_shadow_writes_its_inbound_plugin_first_and_going_live_deletes_it_once() {
    let (t, mut handle) = target();
    let server = tokio::spawn(async move {
        // Shadow: the inbound plugin before anything else, running the mesh plugin's module.
        discovered(&mut handle, EXT, &["v1alpha1"]).await;
        let body = inbound_applied(&mut handle).await;
        assert_eq!(body["apiVersion"], "extensions.istio.io/v1alpha1");
        assert_eq!(body["kind"], "WasmPlugin");
        assert_eq!(
            body["metadata"],
            json!({"name": "mlcanary-shadow-fraud-model", "namespace": "ml",
                   "labels": {"app.kubernetes.io/managed-by": "mlcanary"},
                   "annotations": {"mlcanary.io/policy": "ml/fraud-model"}})
        );
        let spec = &body["spec"];
        assert_eq!(spec["match"], json!([{"mode": "SERVER"}]));
        assert_eq!(
            spec["selector"],
            json!({"matchLabels": {"mlcanary.io/subset": "canary"}})
        );
        assert_eq!(spec["url"], "oci://ghcr.io/mlcanary/mlcanary-filter:0.1.0");
        assert_eq!(spec["sha256"], "aa".repeat(32));
        assert_eq!(spec["imagePullPolicy"], "IfNotPresent");
        assert_eq!(spec["phase"], "AUTHN");
        assert_eq!(spec["failStrategy"], "FAIL_OPEN");
        assert!(spec.get("priority").is_none(), "not a module field");
        let config = &spec["pluginConfig"];
        assert_eq!(config["inbound"], true);
        assert_eq!(config["policies"].as_array().unwrap().len(), 1);
        assert_eq!(config["policies"][0]["name"], "fraud-model");
        assert_eq!(config["policies"][0]["shadow"], "canary");
        // Then the mesh config and the mirroring routes; nothing deleted (the next request is
        // the next write's).
        let http = config_and_routes(&mut handle, true).await;
        assert!(mirrors(&http), "{http:#}");

        // Live: config, routes without a mirror, then the inbound plugin goes.
        let http = config_and_routes(&mut handle, false).await;
        assert!(!mirrors(&http), "{http:#}");
        inbound_deleted(&mut handle, true).await;
        // The next live step: known absent, not deleted again.
        config_and_routes(&mut handle, false).await;
        handle
    });
    t.apply(&at(Weights::shadow(1000))).await.unwrap();
    t.apply(&at(Weights::with_canary_bp(500))).await.unwrap();
    t.apply(&at(Weights::with_canary_bp(1000))).await.unwrap();
    let mut handle = server.await.unwrap();
    assert!(futures_poll_none(&mut handle).await);
}

#[tokio::test]
async fn a_routes_only_write_writes_the_inbound_plugin_only_when_not_known_as_wanted() {
    let (t, mut handle) = target();
    let server = tokio::spawn(async move {
        discovered(&mut handle, EXT, &["v1alpha1"]).await;
        inbound_applied(&mut handle).await;
        discovered(&mut handle, NET, NET_VERSIONS).await;
        let http = routes(&mut handle).await;
        assert_eq!(http[3]["mirrorPercentage"]["value"], 10.0);
        // `maxRps` moved the mirrored share: the routes change, the inbound plugin does not.
        let http = routes(&mut handle).await;
        assert_eq!(http[3]["mirrorPercentage"]["value"], 5.0);
        // A full write reads the module again (an upgraded filter reaches the inbound side).
        inbound_applied(&mut handle).await;
        config_and_routes(&mut handle, false).await;
        // Live through the routes alone: the routes, then the delete.
        routes(&mut handle).await;
        inbound_deleted(&mut handle, true).await;
        routes(&mut handle).await;
        handle
    });
    t.apply_routes_only(&at(Weights::shadow(1000)))
        .await
        .unwrap();
    t.apply_routes_only(&at(Weights::shadow(500)))
        .await
        .unwrap();
    t.apply(&at(Weights::shadow(500))).await.unwrap();
    t.apply_routes_only(&at(Weights::with_canary_bp(500)))
        .await
        .unwrap();
    t.apply_routes_only(&at(Weights::with_canary_bp(1000)))
        .await
        .unwrap();
    let mut handle = server.await.unwrap();
    assert!(futures_poll_none(&mut handle).await);
}

#[tokio::test]
async fn a_revert_deletes_the_inbound_plugin_whatever_is_known() {
    let (t, mut handle) = target();
    let mut gone = at(Weights::ALL_STABLE);
    gone.routes.retain(|r| r.match_.is_empty());
    let server = tokio::spawn(async move {
        // A live write: deleted (404 is fine: none was there), then known absent.
        discovered(&mut handle, EXT, &["v1alpha1"]).await;
        config_and_routes(&mut handle, true).await;
        inbound_deleted(&mut handle, false).await;
        // The policy is deleted: routes, config, and the DELETE all the same.
        routes(&mut handle).await;
        let (_, send) = expect(&mut handle, Method::PATCH, WP).await;
        send.send_response(json_response(StatusCode::OK, &mesh_plugin()));
        inbound_deleted(&mut handle, false).await;
        handle
    });
    t.apply(&at(Weights::with_canary_bp(500))).await.unwrap();
    t.revert(&gone).await.unwrap();
    let mut handle = server.await.unwrap();
    assert!(futures_poll_none(&mut handle).await);
}

#[tokio::test]
async fn a_failing_delete_is_retried_and_a_refused_one_fails_the_write() {
    let (t, mut handle) = target();
    let live = at(Weights::with_canary_bp(500));
    let server = tokio::spawn(async move {
        discovered(&mut handle, EXT, &["v1alpha1"]).await;
        config_and_routes(&mut handle, true).await;
        let (_, send) = expect(&mut handle, Method::DELETE, INBOUND).await;
        send.send_response(json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &status(503, "ServiceUnavailable"),
        ));
        inbound_deleted(&mut handle, true).await;
        handle
    });
    t.apply(&live).await.unwrap();
    server.await.unwrap();

    let (t, mut handle) = target();
    let server = tokio::spawn(async move {
        discovered(&mut handle, EXT, &["v1alpha1"]).await;
        config_and_routes(&mut handle, true).await;
        let (_, send) = expect(&mut handle, Method::DELETE, INBOUND).await;
        send.send_response(json_response(
            StatusCode::FORBIDDEN,
            &status(403, "Forbidden"),
        ));
        // Still unknown: the next write deletes again.
        config_and_routes(&mut handle, false).await;
        inbound_deleted(&mut handle, false).await;
        handle
    });
    let e = t.apply(&live).await.unwrap_err();
    assert!(
        matches!(e, TrafficError::Kube(kube::Error::Api(ref s)) if s.code == 403),
        "{e}"
    );
    t.apply(&live).await.unwrap();
    let mut handle = server.await.unwrap();
    assert!(futures_poll_none(&mut handle).await);
}

#[tokio::test]
async fn after_forget_the_next_write_deletes_again() {
    let (t, mut handle) = target();
    let live = at(Weights::with_canary_bp(500));
    let server = tokio::spawn(async move {
        discovered(&mut handle, EXT, &["v1alpha1"]).await;
        config_and_routes(&mut handle, true).await;
        inbound_deleted(&mut handle, false).await;
        config_and_routes(&mut handle, false).await;
        inbound_deleted(&mut handle, true).await;
        handle
    });
    t.apply(&live).await.unwrap();
    // Another replica led meanwhile, and may have started a shadow.
    t.clone().forget();
    t.apply(&live).await.unwrap();
    let mut handle = server.await.unwrap();
    assert!(futures_poll_none(&mut handle).await);
}

#[tokio::test]
async fn without_a_module_to_copy_nothing_is_written() {
    let shadow = at(Weights::shadow(1000));
    // The mesh plugin does not exist.
    let (t, mut handle) = target();
    let server = tokio::spawn(async move {
        discovered(&mut handle, EXT, &["v1alpha1"]).await;
        let (_, send) = expect(&mut handle, Method::GET, WP).await;
        send.send_response(json_response(
            StatusCode::NOT_FOUND,
            &status(404, "NotFound"),
        ));
        // Asked again in case the version went away; it did not.
        discovered(&mut handle, EXT, &["v1alpha1"]).await;
        handle
    });
    let e = t.apply(&shadow).await.unwrap_err();
    assert!(
        matches!(
            e,
            TrafficError::NoModule {
                why: "does not exist",
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        "the shadow's inbound plugin runs the module of WasmPlugin istio-system/mlcanary, which \
         does not exist"
    );
    let mut handle = server.await.unwrap();
    assert!(futures_poll_none(&mut handle).await, "no apply, no routes");

    // It exists but names no module.
    let (t, mut handle) = target();
    let server = tokio::spawn(async move {
        discovered(&mut handle, EXT, &["v1alpha1"]).await;
        let (_, send) = expect(&mut handle, Method::GET, WP).await;
        let mut p = mesh_plugin();
        p["spec"].as_object_mut().unwrap().remove("url");
        send.send_response(json_response(StatusCode::OK, &p));
        handle
    });
    let e = t.apply(&shadow).await.unwrap_err();
    assert!(
        matches!(
            e,
            TrafficError::NoModule {
                why: "names no spec.url",
                ..
            }
        ),
        "{e}"
    );
    let mut handle = server.await.unwrap();
    assert!(futures_poll_none(&mut handle).await);
}
