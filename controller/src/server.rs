//! The controller's own HTTP endpoint: `/healthz`, `/readyz` and `/metrics`, and the status page
//! with its JSON API ([`api`]: `/`, `/api/policies`, ...).
//!
//! Built on hyper 1's http1 server with `hyper-util`'s tokio glue: kube already builds hyper for its
//! client, so three fixed routes cost a couple of features rather than a web framework (axum would
//! add its router, extractors and another tower stack for no gain here). Routing is a `match` on the
//! path in [`respond`], a pure function tested without a socket.

pub mod api;
pub mod health;
pub mod registry;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use thiserror::Error;
use tokio::net::TcpListener;

use crate::ui::Ui;
pub use health::Health;
pub use registry::ControllerMetrics;

/// The OpenMetrics text content type `prometheus-client` writes.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the endpoint serves from.
#[derive(Debug)]
pub struct ServerState {
    pub metrics: Arc<ControllerMetrics>,
    pub health: Arc<Health>,
    /// The status page's data (and, locally, the way to the loop for commands).
    pub ui: Arc<Ui>,
}

/// The server could not run.
#[derive(Debug, Error)]
pub enum ServerError {
    #[error("cannot accept connections: {0}")]
    Accept(#[from] std::io::Error),
}

/// The response to a GET / HEAD request line: pure, so the routes are tested without a socket.
/// POSTs (operator commands) go through [`api::post`], which waits for the loop.
pub fn respond(method: &Method, path: &str, state: &ServerState) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: &str| {
        Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap_or_default()
    };
    if method != Method::GET && method != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match path {
        "/healthz" if state.health.is_live() => text(StatusCode::OK, "ok\n"),
        "/healthz" => text(StatusCode::SERVICE_UNAVAILABLE, "no loop beat recently\n"),
        "/readyz" if state.health.is_ready() => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        "/metrics" => match state.metrics.encode() {
            Ok(body) => Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)
                .body(Full::new(Bytes::from(body)))
                .unwrap_or_default(),
            Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n"),
        },
        _ => {
            api::get(path, &state.ui).unwrap_or_else(|| text(StatusCode::NOT_FOUND, "not found\n"))
        }
    }
}

/// Serve on `listener` until the task is dropped. A failing connection is logged and does not stop
/// the server.
pub async fn serve(listener: TcpListener, state: Arc<ServerState>) -> Result<(), ServerError> {
    loop {
        let (stream, peer) = listener.accept().await?;
        let state = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let state = state.clone();
                async move {
                    let resp = if req.method() == Method::POST {
                        let path = req.uri().path().to_owned();
                        // Bounded: a command body is a small JSON object.
                        let body = Limited::new(req.into_body(), api::MAX_POST_BODY)
                            .collect()
                            .await;
                        match body {
                            Ok(b) => api::post(&path, &b.to_bytes(), &state.ui).await,
                            Err(_) => api::too_large(),
                        }
                    } else {
                        respond(req.method(), req.uri().path(), &state)
                    };
                    Ok::<_, Infallible>(resp)
                }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(%peer, error = %e, "metrics connection failed");
            }
        });
    }
}

#[cfg(test)]
mod api_tests;
#[cfg(test)]
mod tests;
