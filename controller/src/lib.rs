//! mlcanary's control plane: judges a model canary against its stable baseline and moves Istio /
//! Envoy traffic forward or back.
//!
//! Pure core: [`policy`] (the CRD and its validation), [`analysis`] (verdicts), [`rollout`] (the state
//! machine), [`render`] (desired filter config and routes), [`weights`]. Adapters behind traits:
//! [`metrics`] (`MetricsSource`: Envoy admin, Prometheus) and [`traffic`] (`TrafficTarget`: Istio).
//! [`cli`] is the `mlcanary` command line.
#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

pub mod analysis;
pub mod cli;
pub mod engine;
pub mod gate;
pub mod hooks;
pub mod leader;
pub mod local;
pub mod metrics;
pub mod policy;
pub mod reconcile;
pub mod render;
pub mod rollout;
pub mod server;
pub mod tls;
pub mod traffic;
pub mod ui;
pub mod weights;
pub mod window;

#[cfg(test)]
pub mod fixtures;

pub use policy::{CanaryPolicy, CanaryPolicySpec, CanaryPolicyStatus, ValidatedPolicy};
