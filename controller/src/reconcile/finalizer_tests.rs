//! Deletion through the finalizer against a mocked API server: the finalizer is added on first
//! sight; a deleted policy's traffic is reverted (routes, then the filter config without it), an
//! Event says so, and only then is the finalizer removed — verb, path and body of each request.

use std::sync::Arc;

use http::{Method, Response, StatusCode};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::client::Body;
use kube::runtime::{reflector, watcher};
use serde_json::{json, Value};

use super::tests::{
    at_step_0, body_json, context_with_store, expect_event, no_more_requests, policy, ApiHandle,
};
use super::*;
use crate::policy::{CanaryPolicyStatus, Phase};

const POLICY_PATH: &str = "/apis/mlcanary.io/v1alpha1/namespaces/ml/canarypolicies/fraud-model";

/// Next request must be a JSON patch of the policy itself (not its status); returns the patch.
async fn expect_json_patch(handle: &mut ApiHandle, obj: &CanaryPolicy) -> Value {
    let (req, send) = handle.next_request().await.expect("a JSON patch");
    assert_eq!(req.method(), Method::PATCH);
    assert_eq!(req.uri().path(), POLICY_PATH);
    assert_eq!(
        req.headers().get("content-type").unwrap(),
        "application/json-patch+json"
    );
    let patch = body_json(req).await;
    send.send_response(
        Response::builder()
            .status(StatusCode::OK)
            .body(Body::from(serde_json::to_vec(obj).unwrap()))
            .unwrap(),
    );
    patch
}

fn deleted(status: CanaryPolicyStatus) -> CanaryPolicy {
    let mut p = policy(Some(status));
    p.metadata.deletion_timestamp = Some(Time(Default::default()));
    p
}

#[tokio::test]
async fn a_new_policy_gets_the_finalizer_before_anything_else() {
    let (ctx, mut handle) = context_with_store(None, Vec::new());
    let mut obj = policy(Some(at_step_0(0)));
    obj.metadata.finalizers = None;
    let obj = Arc::new(obj);
    let server = {
        let obj = obj.clone();
        tokio::spawn(async move {
            let patch = expect_json_patch(&mut handle, &obj).await;
            assert_eq!(
                patch,
                json!([
                    {"op": "test", "path": "/metadata/finalizers", "value": null},
                    {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]}
                ])
            );
            no_more_requests(&mut handle).await;
        })
    };
    let action = reconcile(obj, ctx.clone()).await.unwrap();
    assert_eq!(
        action,
        Action::await_change(),
        "the patch brings the next reconcile"
    );
    server.await.unwrap();
    assert!(
        ctx.target.0.lock().unwrap().is_empty(),
        "no traffic written yet"
    );
}

/// A policy deleted mid-rollout (25 %) next to a peer on the same plugin: everything to stable
/// by its default route alone, the config keeps only the peer, then the Event, then the finalizer
/// goes.
#[tokio::test]
async fn deletion_reverts_traffic_then_releases_the_finalizer() {
    let mut peer = policy(None);
    peer.metadata.name = Some("churn-model".into());
    peer.spec.target.hosts = vec!["churn-model".into()];
    peer.spec.target.destination_host = None;
    peer.spec.target.virtual_service = "churn-model".into();
    let obj = Arc::new(deleted(CanaryPolicyStatus {
        canary_weight_bp: 2500,
        ..at_step_0(0)
    }));
    let (ctx, mut handle) = context_with_store(None, vec![peer, obj.as_ref().clone()]);
    let server = {
        let obj = obj.clone();
        tokio::spawn(async move {
            let ev = expect_event(&mut handle).await;
            assert_eq!(ev["type"], "Normal");
            assert_eq!(ev["reason"], "TrafficReverted");
            assert_eq!(
                ev["note"],
                "policy deleted: all traffic to stable, removed from the filter config"
            );
            let patch = expect_json_patch(&mut handle, &obj).await;
            assert_eq!(
                patch,
                json!([
                    {"op": "test", "path": "/metadata/finalizers/0", "value": FINALIZER},
                    {"op": "remove", "path": "/metadata/finalizers/0"}
                ])
            );
            no_more_requests(&mut handle).await;
        })
    };
    reconcile(obj, ctx.clone()).await.unwrap();
    server.await.unwrap();
    let writes = ctx.target.0.lock().unwrap();
    assert_eq!(writes.len(), 1);
    let d = &writes[0];
    assert_eq!(
        (d.namespace.as_str(), d.policy.as_str()),
        ("ml", "fraud-model")
    );
    let routes = serde_json::to_value(&d.routes).unwrap();
    assert_eq!(
        routes,
        json!([{"name": "mlcanary-fraud-model-default",
                "route": [{"destination": {"host": "fraud-model", "subset": "stable"}, "weight": 100}]}])
    );
    let names: Vec<&str> = d
        .plugin_config
        .policies
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(names, ["churn-model"], "the deleted policy left the config");
}

/// In the two-Deployments mode a promoted canary holds all traffic and stable may still run the
/// old model: deleting the policy keeps everyone on the canary rather than roll it back.
#[tokio::test]
async fn deleting_a_promoted_policy_keeps_the_promoted_subset() {
    let obj = Arc::new(deleted(CanaryPolicyStatus {
        phase: Phase::Promoted,
        canary_weight_bp: 10_000,
        ..Default::default()
    }));
    let (ctx, mut handle) = context_with_store(None, vec![obj.as_ref().clone()]);
    let server = {
        let obj = obj.clone();
        tokio::spawn(async move {
            let ev = expect_event(&mut handle).await;
            assert_eq!(
                ev["note"],
                "policy deleted: all traffic to canary, removed from the filter config"
            );
            expect_json_patch(&mut handle, &obj).await;
            no_more_requests(&mut handle).await;
        })
    };
    reconcile(obj, ctx.clone()).await.unwrap();
    server.await.unwrap();
    let writes = ctx.target.0.lock().unwrap();
    let dests: Vec<(&str, Option<u32>)> = writes[0].routes[0]
        .route
        .iter()
        .map(|r| (r.destination.subset.as_str(), r.weight))
        .collect();
    assert_eq!(dests, [("canary", Some(100))]);
    assert!(writes[0].plugin_config.policies.is_empty());
}

/// A write that fails keeps the finalizer: the deletion waits and the reconcile is retried.
#[tokio::test]
async fn a_failed_revert_keeps_the_finalizer() {
    let obj = Arc::new(deleted(at_step_0(0)));
    let (ctx, mut handle) = context_with_store(None, vec![obj.as_ref().clone()]);
    ctx.target.fail_next();
    let server = tokio::spawn(async move { no_more_requests(&mut handle).await });
    let err = reconcile(obj, ctx.clone()).await.unwrap_err();
    assert_eq!(err.label(), "traffic");
    server.await.unwrap();
}

/// Keep `objs` in the store the reconciler reads its peers from.
pub(super) fn store_of(objs: Vec<CanaryPolicy>) -> reflector::Store<CanaryPolicy> {
    let (store, mut writer) = reflector::store();
    for o in objs {
        writer.apply_watcher_event(&watcher::Event::Apply(o));
    }
    store
}

/// A policy asking for a WasmPlugin of its own next to the mesh plugin would run the filter twice
/// in its namespace's proxies: refused like an invalid spec (Failed, the reason on
/// `spec.target.wasmPlugin`, a Warning), nothing analysed or written.
#[tokio::test]
async fn a_second_plugin_next_to_the_mesh_plugin_is_refused() {
    let mut p = policy(Some(at_step_0(0)));
    p.spec.target.wasm_plugin = Some("mlcanary".into());
    let obj = Arc::new(p);
    let (ctx, mut handle) = context_with_store(None, vec![obj.as_ref().clone()]);
    let server = {
        let obj = obj.clone();
        tokio::spawn(async move {
            let status = super::tests::expect_status_apply(&mut handle, &obj).await;
            assert_eq!(status["phase"], "Failed");
            let message = status["conditions"][0]["message"]
                .as_str()
                .unwrap()
                .to_owned();
            assert_eq!(
                message,
                "spec.target.wasmPlugin: ml/mlcanary would run the filter a second time in proxies \
                 that already run istio-system/mlcanary (a plugin in the mesh root namespace \
                 applies to every proxy); leave spec.target.wasmPlugin out to use the mesh plugin"
            );
            let ev = expect_event(&mut handle).await;
            assert_eq!(
                (ev["type"].as_str(), ev["reason"].as_str()),
                (Some("Warning"), Some("InvalidSpec"))
            );
            no_more_requests(&mut handle).await;
        })
    };
    reconcile(obj, ctx.clone()).await.unwrap();
    server.await.unwrap();
    assert!(ctx.target.0.lock().unwrap().is_empty(), "nothing written");
}
