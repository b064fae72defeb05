//! Where the split goes: targets behind one trait. The desired state is a value the core renders
//! ([`DesiredTraffic`]); a target only writes it.

pub mod envoy_files;
pub mod istio;

use std::future::Future;

use thiserror::Error;

pub use mlcanary_core::render::DesiredTraffic;
use mlcanary_core::render::RouteError;

pub use envoy_files::EnvoyFilesTarget;
pub use istio::IstioTarget;

/// Why a write failed.
#[derive(Debug, Error)]
pub enum TrafficError {
    #[error("refusing to write routes: {0}")]
    Route(#[from] RouteError),
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{kind} {name}: still conflicting after {attempts} attempts")]
    Conflict {
        kind: &'static str,
        name: String,
        attempts: u32,
    },
    #[error("cannot encode {0}")]
    Encode(#[from] serde_json::Error),
    #[error(transparent)]
    Discovery(#[from] istio::versions::DiscoveryError),
    #[error("local Envoy files: {0}")]
    Files(#[from] envoy_files::FilesError),
    #[error("no WasmPlugin: {0}")]
    Scope(Box<mlcanary_core::render::ScopeError>),
    /// The shadow's inbound plugin runs the module of the policy's plugin, which has none to give.
    #[error("the shadow's inbound plugin runs the module of WasmPlugin {plugin}, which {why}")]
    NoModule {
        plugin: mlcanary_core::render::PluginRef,
        why: &'static str,
    },
}

impl From<mlcanary_core::render::ScopeError> for TrafficError {
    fn from(e: mlcanary_core::render::ScopeError) -> Self {
        TrafficError::Scope(Box::new(e))
    }
}

/// A place weights and filter config are written to.
pub trait TrafficTarget: Sync {
    fn apply(
        &self,
        desired: &DesiredTraffic,
    ) -> impl Future<Output = Result<(), TrafficError>> + Send;

    /// Only the policy's routes: its plugin's config is known to be in effect already. The
    /// default writes everything.
    fn apply_routes_only(
        &self,
        desired: &DesiredTraffic,
    ) -> impl Future<Output = Result<(), TrafficError>> + Send {
        self.apply(desired)
    }

    /// A deleted policy's traffic ([`mlcanary_core::render::reverted_traffic`]); the default
    /// writes it as any other.
    fn revert(
        &self,
        desired: &DesiredTraffic,
    ) -> impl Future<Output = Result<(), TrafficError>> + Send {
        self.apply(desired)
    }

    /// What the target remembers of the cluster is no longer known true (another replica may
    /// have written since); the default remembers nothing.
    fn forget(&self) {}

    /// Several policies' desired traffic (sharing one plugin config), in as few writes as the
    /// target can; the default applies them one by one.
    fn apply_all(
        &self,
        desired: &[DesiredTraffic],
    ) -> impl Future<Output = Result<(), TrafficError>> + Send {
        async move {
            for d in desired {
                self.apply(d).await?;
            }
            Ok(())
        }
    }
}
