//! Desired state as values: the filter config and the VirtualService routes a policy wants at a given
//! split. Pure; the traffic targets write what these return.

pub mod filter;
pub mod traffic;
pub mod virtual_service;

pub use filter::{render_config, render_policy};
pub use traffic::{desired_all, desired_traffic, DesiredTraffic};
pub use virtual_service::{check_routes, owned_routes, splice_routes, HttpRoute, RouteError};

#[cfg(test)]
mod tests;
