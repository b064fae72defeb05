//! Desired state as values: the filter config and the VirtualService routes a policy wants at a given
//! split, and the per-host attachment of the filter on Istio. Pure; the traffic targets (and the
//! CLI) write what these return.

pub mod attachment;
pub mod filter;
pub mod inbound;
pub mod scope;
pub mod traffic;
pub mod virtual_service;

pub use attachment::{enabling_filter_config, per_host_envoy_filter, AttachmentError, PluginRef};
pub use filter::{inbound_config, render_config, render_policy};
pub use inbound::{inbound_plugin, InboundPlugin};
pub use scope::{MeshScope, ScopeError};
pub use traffic::{desired_all, desired_traffic, reverted_traffic, DesiredTraffic};
pub use virtual_service::{
    check_routes, owned_routes, splice_routes, Fault, HttpRoute, Percent, RegexMatch, RouteError,
};

#[cfg(test)]
mod tests;
