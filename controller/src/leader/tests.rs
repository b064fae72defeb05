//! The election rule (pure) and the requests of a round (mocked API server).

use std::time::{Duration, SystemTime};

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};
use tower_test::mock::{self, Handle};

use super::*;

type ApiHandle = Handle<Request<Body>, Response<Body>>;

fn t(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
}

fn held_by(holder: &str) -> Record {
    Record {
        holder: Some(holder.into()),
        lease_duration: Some(Duration::from_secs(15)),
        transitions: 2,
        resource_version: Some("41".into()),
    }
}

#[test]
fn the_rule() {
    let tm = Timing::default();
    assert_eq!(decide(None, t(0), "a", t(0), tm), Decision::Create);
    assert_eq!(
        decide(Some(&held_by("a")), t(0), "a", t(100), tm),
        Decision::Renew
    );
    let free = Record {
        holder: None,
        ..held_by("x")
    };
    assert_eq!(decide(Some(&free), t(0), "a", t(0), tm), Decision::TakeOver);
    // Another holder: followed until its record has been unchanged for the lease duration, by the
    // follower's own clock.
    let b = held_by("b");
    assert_eq!(
        decide(Some(&b), t(0), "a", t(14), tm),
        Decision::Follow { holder: "b".into() }
    );
    assert_eq!(decide(Some(&b), t(0), "a", t(15), tm), Decision::TakeOver);
    // The lease's own duration wins over ours.
    let long = Record {
        lease_duration: Some(Duration::from_secs(60)),
        ..held_by("b")
    };
    assert!(matches!(
        decide(Some(&long), t(0), "a", t(30), tm),
        Decision::Follow { .. }
    ));
}

#[test]
fn a_leader_stops_leading_before_anyone_can_take_over() {
    let tm = Timing::default();
    assert!(!still_leading(None, t(0), tm));
    assert!(still_leading(Some(t(0)), t(14), tm));
    assert!(
        !still_leading(Some(t(0)), t(15), tm),
        "a follower may take over at 15 s"
    );
}

fn elector() -> (Elector, ApiHandle) {
    let (svc, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let e = Elector::new(
        Client::new(svc, "default"),
        "mlcanary-system",
        "mlcanary-controller",
        "pod-a",
        Timing::default(),
    );
    (e, handle)
}

const LEASE: &str =
    "/apis/coordination.k8s.io/v1/namespaces/mlcanary-system/leases/mlcanary-controller";

fn respond(send: mock::SendResponse<Response<Body>>, status: StatusCode, body: &Value) {
    send.send_response(
        Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(body).unwrap()))
            .unwrap(),
    );
}

fn lease(holder: &str, rv: &str) -> Value {
    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
           "metadata": {"name": "mlcanary-controller", "namespace": "mlcanary-system", "resourceVersion": rv},
           "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "leaseTransitions": 2}})
}

fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": "not found", "reason": "NotFound", "code": 404})
}

async fn next(
    handle: &mut ApiHandle,
    method: Method,
    path: &str,
) -> (Request<Body>, mock::SendResponse<Response<Body>>) {
    let (req, send) = handle.next_request().await.expect("a request");
    assert_eq!(req.method(), method);
    assert_eq!(req.uri().path(), path);
    (req, send)
}

async fn body(req: Request<Body>) -> Value {
    serde_json::from_slice(&req.into_body().collect_bytes().await.unwrap()).unwrap()
}

#[tokio::test]
async fn creates_a_missing_lease_and_leads() {
    let (mut e, mut handle) = elector();
    let server = tokio::spawn(async move {
        let (_, send) = next(&mut handle, Method::GET, LEASE).await;
        respond(send, StatusCode::NOT_FOUND, &not_found());
        let (req, send) = next(
            &mut handle,
            Method::POST,
            "/apis/coordination.k8s.io/v1/namespaces/mlcanary-system/leases",
        )
        .await;
        let b = body(req).await;
        assert_eq!(b["spec"]["holderIdentity"], "pod-a");
        assert_eq!(b["spec"]["leaseDurationSeconds"], 15);
        assert_eq!(b["spec"]["renewTime"], "2027-01-15T08:00:00.000000Z");
        respond(send, StatusCode::CREATED, &b);
    });
    assert!(e.round(t(0)).await.unwrap());
    server.await.unwrap();
}

#[tokio::test]
async fn follows_a_live_holder_then_takes_over_an_expired_lease_with_a_precondition() {
    let (mut e, mut handle) = elector();
    let server = tokio::spawn(async move {
        // Round 1 and 2: held by pod-b, unchanged; nothing is written.
        for _ in 0..2 {
            let (_, send) = next(&mut handle, Method::GET, LEASE).await;
            respond(send, StatusCode::OK, &lease("pod-b", "41"));
        }
        // Round 3: still unchanged 15 s later: take over, with resourceVersion 41.
        let (_, send) = next(&mut handle, Method::GET, LEASE).await;
        respond(send, StatusCode::OK, &lease("pod-b", "41"));
        let (req, send) = next(&mut handle, Method::PATCH, LEASE).await;
        let mut q: Vec<&str> = req
            .uri()
            .query()
            .unwrap()
            .split('&')
            .filter(|p| !p.is_empty())
            .collect();
        q.sort();
        assert_eq!(q, ["fieldManager=mlcanary", "force=true"]);
        assert_eq!(
            req.headers().get("content-type").unwrap(),
            "application/apply-patch+yaml"
        );
        let b = body(req).await;
        assert_eq!(
            b["metadata"]["resourceVersion"], "41",
            "optimistic concurrency"
        );
        assert_eq!(b["spec"]["holderIdentity"], "pod-a");
        assert_eq!(b["spec"]["leaseTransitions"], 3);
        respond(send, StatusCode::OK, &b);
    });
    assert!(!e.round(t(0)).await.unwrap());
    assert!(
        !e.round(t(10)).await.unwrap(),
        "pod-b's lease is not expired yet"
    );
    assert!(e.round(t(15)).await.unwrap());
    server.await.unwrap();
}

#[tokio::test]
async fn losing_the_race_means_following_at_once() {
    let (mut e, mut handle) = elector();
    let server = tokio::spawn(async move {
        let (_, send) = next(&mut handle, Method::GET, LEASE).await;
        respond(send, StatusCode::OK, &lease("pod-a", "7"));
        let (_, send) = next(&mut handle, Method::PATCH, LEASE).await;
        respond(send, StatusCode::OK, &lease("pod-a", "8"));
        // Next renew: someone wrote in between: 409.
        let (_, send) = next(&mut handle, Method::GET, LEASE).await;
        respond(send, StatusCode::OK, &lease("pod-a", "8"));
        let (_, send) = next(&mut handle, Method::PATCH, LEASE).await;
        let conflict = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "the object has been modified", "reason": "Conflict", "code": 409});
        respond(send, StatusCode::CONFLICT, &conflict);
    });
    assert!(e.round(t(0)).await.unwrap(), "renewed its own lease");
    assert!(
        !e.round(t(5)).await.unwrap(),
        "a 409 ends leadership at once"
    );
    server.await.unwrap();
}
