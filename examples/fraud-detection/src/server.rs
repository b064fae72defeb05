//! A server that speaks the TensorFlow Serving REST API for one model — a STAND-IN for TF Serving,
//! which cannot be installed on these machines. It serves the example's real (tiny) models:
//!
//! - `GET  /v1/models/{name}` and `/v1/models/{name}/versions/{n}`: model version status;
//! - `GET  /v1/models/{name}/metadata`: the signature's inputs;
//! - `POST /v1/models/{name}[/versions/{n}|/labels/{l}]:predict`: row format `{"instances": [...]}`
//!   → `{"predictions": [[p_legit, p_fraud], ...]}`, or columnar `{"inputs": {...}}` →
//!   `{"outputs": [[...], ...]}`; errors as `{"error": "..."}` with 400 / 404, as TF Serving does.
//!
//! Fault injection for demos and tests: a share of requests can fail with 500, and a fixed delay
//! can be added.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tiny_http::{Header, Method, Response, Server};

use crate::data::Transaction;
use crate::model::Model;

/// How the stand-in behaves.
#[derive(Debug, Clone)]
pub struct Options {
    pub model_name: String,
    /// Share of `:predict` requests answered with 500, per mille.
    pub fail_per_mille: u32,
    pub delay: Duration,
}

/// A parsed request path.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    Status { model: &'a str },
    Metadata { model: &'a str },
    Predict { model: &'a str },
    Unsupported { model: &'a str, verb: &'a str },
    NotFound,
}

/// Route a TF Serving REST path (query string ignored).
pub fn route(path: &str) -> Route<'_> {
    let path = path.split('?').next().unwrap_or(path);
    let Some(rest) = path.strip_prefix("/v1/models/") else {
        return Route::NotFound;
    };
    let (target, verb) = match rest.rsplit_once(':') {
        Some((t, v)) => (t, Some(v)),
        None => (rest, None),
    };
    let mut parts = target.split('/');
    let model = parts.next().unwrap_or("");
    if model.is_empty() {
        return Route::NotFound;
    }
    let tail: Vec<&str> = parts.collect();
    let versioned = matches!(tail.as_slice(), [] | ["versions", _] | ["labels", _]);
    match (verb, tail.as_slice()) {
        (None, ["metadata"]) => Route::Metadata { model },
        (None, _) if versioned => Route::Status { model },
        (Some("predict"), _) if versioned => Route::Predict { model },
        (Some(v), _) if versioned => Route::Unsupported { model, verb: v },
        _ => Route::NotFound,
    }
}

/// Answer one request body for `:predict`: (status, JSON).
pub fn predict(model: &Model, body: &[u8]) -> (u16, Value) {
    let req: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return (400, json!({"error": format!("JSON Parse error: {e}")})),
    };
    let score = |tx: &Transaction| {
        let p = model.predict(tx);
        json!([1.0 - p, p])
    };
    if let Some(instances) = req.get("instances") {
        let Some(list) = instances.as_array() else {
            return (400, json!({"error": "\"instances\" must be a list"}));
        };
        let mut out = Vec::with_capacity(list.len());
        for (i, inst) in list.iter().enumerate() {
            match serde_json::from_value::<Transaction>(inst.clone()) {
                Ok(tx) => out.push(score(&tx)),
                Err(e) => return (400, json!({"error": format!("instances[{i}]: {e}")})),
            }
        }
        return (200, json!({ "predictions": out }));
    }
    if let Some(inputs) = req.get("inputs").and_then(Value::as_object) {
        let n = inputs
            .values()
            .filter_map(Value::as_array)
            .map(Vec::len)
            .max()
            .unwrap_or(0);
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let row: serde_json::Map<String, Value> = inputs
                .iter()
                .map(|(k, v)| (k.clone(), v.get(i).cloned().unwrap_or(Value::Null)))
                .collect();
            match serde_json::from_value::<Transaction>(Value::Object(row)) {
                Ok(tx) => out.push(score(&tx)),
                Err(e) => return (400, json!({"error": format!("inputs row {i}: {e}")})),
            }
        }
        return (200, json!({ "outputs": out }));
    }
    (400, json!({"error": "Missing 'instances' or 'inputs' key"}))
}

fn status_json(model: &Model) -> Value {
    json!({"model_version_status": [{
        "version": model.version.number().to_string(),
        "state": "AVAILABLE",
        "status": {"error_code": "OK", "error_message": ""}
    }]})
}

fn metadata_json(name: &str, model: &Model) -> Value {
    let dtype = |t: &str| json!({"dtype": t, "tensor_shape": {"dim": [{"size": "-1"}]}});
    json!({
        "model_spec": {"name": name, "signature_name": "", "version": model.version.number().to_string()},
        "metadata": {"signature_def": {"signature_def": {"serving_default": {
            "inputs": {
                "amount": dtype("DT_FLOAT"), "hour": dtype("DT_INT32"),
                "merchant_category": dtype("DT_STRING"), "foreign": dtype("DT_BOOL"),
                "age_band": dtype("DT_STRING")
            },
            "outputs": {"scores": {"dtype": "DT_FLOAT", "tensor_shape": {"dim": [{"size": "-1"}, {"size": "2"}]}}},
            "method_name": "tensorflow/serving/predict"
        }}}}
    })
}

/// A running stand-in; stops its threads on drop.
pub struct Running {
    pub port: u16,
    server: Arc<Server>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.server.unblock();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Serve `model` on `addr` (e.g. `127.0.0.1:8501`, port 0 for any) with `threads` workers.
pub fn serve(addr: &str, model: Model, opts: Options, threads: usize) -> std::io::Result<Running> {
    let server = Arc::new(Server::http(addr).map_err(std::io::Error::other)?);
    let port = server.server_addr().to_ip().map_or(0, |a| a.port());
    let stop = Arc::new(AtomicBool::new(false));
    let model = Arc::new(model);
    let counter = Arc::new(AtomicU64::new(0));
    let handles = (0..threads.max(1))
        .map(|_| {
            let (server, stop, model, opts, counter) = (
                server.clone(),
                stop.clone(),
                model.clone(),
                opts.clone(),
                counter.clone(),
            );
            std::thread::spawn(move || worker(&server, &stop, &model, &opts, &counter))
        })
        .collect();
    Ok(Running {
        port,
        server,
        stop,
        threads: handles,
    })
}

fn worker(server: &Server, stop: &AtomicBool, model: &Model, opts: &Options, counter: &AtomicU64) {
    let json_ct = Header::from_bytes("content-type", "application/json").ok();
    let version = Header::from_bytes("x-model-version", model.version.number().to_string()).ok();
    while !stop.load(Ordering::SeqCst) {
        let Ok(Some(mut req)) = server.recv_timeout(Duration::from_millis(100)) else {
            continue;
        };
        let (status, body) = match (req.method(), route(req.url())) {
            (
                _,
                Route::Status { model: m }
                | Route::Metadata { model: m }
                | Route::Predict { model: m }
                | Route::Unsupported { model: m, .. },
            ) if m != opts.model_name => (
                404,
                json!({"error": format!("Servable not found for request: Latest({m})")}),
            ),
            (Method::Get, Route::Status { .. }) => (200, status_json(model)),
            (Method::Get, Route::Metadata { .. }) => (200, metadata_json(&opts.model_name, model)),
            (Method::Post, Route::Predict { .. }) => {
                let mut body = Vec::new();
                let _ = std::io::Read::read_to_end(req.as_reader(), &mut body);
                if !opts.delay.is_zero() {
                    std::thread::sleep(opts.delay);
                }
                let n = counter.fetch_add(1, Ordering::SeqCst) % 1000;
                let f = u64::from(opts.fail_per_mille);
                if n * f / 1000 != (n + 1) * f / 1000 {
                    (500, json!({"error": "injected failure"}))
                } else {
                    predict(model, &body)
                }
            }
            (_, Route::Unsupported { verb, .. }) => (
                400,
                json!({"error": format!("this stand-in serves :predict only, not :{verb}")}),
            ),
            _ => (404, json!({"error": "Malformed request"})),
        };
        let mut resp = Response::from_string(body.to_string()).with_status_code(status);
        for h in [&json_ct, &version].into_iter().flatten() {
            resp.add_header(h.clone());
        }
        let _ = req.respond(resp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_follow_tf_serving() {
        assert_eq!(route("/v1/models/fraud"), Route::Status { model: "fraud" });
        assert_eq!(
            route("/v1/models/fraud/versions/2"),
            Route::Status { model: "fraud" }
        );
        assert_eq!(
            route("/v1/models/fraud/metadata"),
            Route::Metadata { model: "fraud" }
        );
        assert_eq!(
            route("/v1/models/fraud:predict"),
            Route::Predict { model: "fraud" }
        );
        assert_eq!(
            route("/v1/models/fraud/versions/3:predict"),
            Route::Predict { model: "fraud" }
        );
        assert_eq!(
            route("/v1/models/fraud/labels/canary:predict?x=1"),
            Route::Predict { model: "fraud" }
        );
        assert_eq!(
            route("/v1/models/fraud:classify"),
            Route::Unsupported {
                model: "fraud",
                verb: "classify"
            }
        );
        assert_eq!(route("/v1/models/"), Route::NotFound);
        assert_eq!(route("/v2/models/fraud/infer"), Route::NotFound);
        assert_eq!(route("/v1/models/fraud/bogus/1:predict"), Route::NotFound);
    }

    #[test]
    fn predict_answers_rows_and_columns_and_explains_errors() {
        let model = crate::trained(crate::model::Version::V2);
        let tx = json!({"amount": 950.0, "hour": 3, "merchant_category": "electronics", "foreign": true, "age_band": "31-60"});
        let (status, body) = predict(
            &model,
            json!({"instances": [tx.clone(), tx.clone()]})
                .to_string()
                .as_bytes(),
        );
        assert_eq!(status, 200);
        let preds = body["predictions"].as_array().unwrap();
        assert_eq!(preds.len(), 2);
        let p = preds[0][1].as_f64().unwrap();
        assert!((preds[0][0].as_f64().unwrap() + p - 1.0).abs() < 1e-12);
        assert!(
            p > 0.5,
            "a risky transaction scores above the alert cut: {p}"
        );
        let cols = json!({"inputs": {"amount": [950.0], "hour": [3], "merchant_category": ["electronics"], "foreign": [true], "age_band": ["31-60"]}});
        let (status, body) = predict(&model, cols.to_string().as_bytes());
        assert_eq!((status, body["outputs"][0][1].as_f64()), (200, Some(p)));
        let (status, body) = predict(&model, b"{oops");
        assert_eq!(status, 400);
        assert!(body["error"].as_str().unwrap().contains("JSON"));
        let (status, body) = predict(&model, br#"{"instances": [{"amount": "x"}]}"#);
        assert_eq!(status, 400);
        assert!(body["error"].as_str().unwrap().starts_with("instances[0]"));
    }
}
