//! mlcanary's data plane: a proxy-wasm HTTP filter that picks a model variant for every request,
//! tags it for the route match, and measures each variant.
//!
//! The decision code (`config`, `rules`, `hash`, `decide`, `stats`) is pure and host-free: it is
//! tested natively, under Node (wasm-bindgen-test) and reused by the controller. The proxy-wasm glue
//! lives in `proxy`, behind the default `proxy` feature.
#![deny(rust_2018_idioms)]
#![deny(unsafe_code)]

pub mod b64;
pub mod config;
pub mod decide;
pub mod feedback;
pub mod hash;
pub mod headers;
pub mod predictions;
pub mod rules;
pub mod stats;
pub mod ticket;

#[cfg(feature = "proxy")]
// The ABI: `#[no_mangle]` exports and the host imports (`proxy::abi`).
#[allow(unsafe_code)]
mod proxy;

pub use config::{Config, ConfigError, Policy, RawConfig};
pub use decide::{decide, Decision, Reason, RequestAttrs};
