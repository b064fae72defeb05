//! mlcanary's control plane: judges a model canary against its stable baseline and moves Istio /
//! Envoy traffic forward or back.
//!
//! Every decision is in `mlcanary-core`; this crate is the CRD ([`policy`]: the kube resource around
//! the core model), the adapters behind traits ([`metrics`]: `MetricsSource` — Envoy admin,
//! Prometheus; [`traffic`]: `TrafficTarget` — Istio, Envoy files; [`hooks`]: the webhook sender;
//! [`leader`]) and the loops ([`engine`], [`reconcile`], [`local`], [`server`], [`ui`], [`cli`]).
#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

pub mod cli;
pub mod deployments;
pub mod engine;
pub mod exit;
pub mod hooks;
pub mod leader;
pub mod local;
pub mod metrics;
pub mod pipeline;
pub mod policy;
pub mod reconcile;
pub mod record;
pub mod server;
pub mod tls;
pub mod traffic;
pub mod ui;

#[cfg(test)]
pub mod fixtures;

pub use policy::{CanaryPolicy, CanaryPolicySpec, CanaryPolicyStatus, ValidatedPolicy};
