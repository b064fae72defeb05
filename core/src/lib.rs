//! mlcanary's decisions, in plain code: every function here maps values to values, with no I/O, no
//! clock and no async runtime, so each is tested natively and the controller's adapters stay thin.
//!
//! - [`policy`] — the `CanaryPolicy` model: the spec as written, the status, validation into a
//!   [`policy::ValidatedPolicy`] with every default;
//! - [`analysis`] — per-variant windows → per-check verdicts;
//! - [`lifecycle`] — the model's Deployments on a cluster (`deploymentRef`): stable made, copied,
//!   the canary scaled;
//! - [`rollout`] — the state machine (schedule, adaptive steps, the manual gate, webhook gates, operator commands);
//! - [`webhooks`] — which hooks a step calls and what they are sent;
//! - [`render`] — the filter config and VirtualService routes a state asks for; [`weights`];
//! - [`events`] — what a rollout event says, once for Events, the page, progress lines and webhooks;
//! - [`window`] — the counts a judgement is made on, and the evidence kept between ticks.
//!
//! The arrows run one way: `mlcanary-filter` ← this crate ← the controller's CRD, adapters and
//! loops. `tests/deps.rs` fails if an I/O crate ever becomes a dependency.
#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

pub mod analysis;
pub mod events;
pub mod lifecycle;
pub mod policy;
pub mod render;
pub mod rollout;
pub mod webhooks;
pub mod weights;
pub mod window;

#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
