//! Test builders: the core's fixture policy, and the same policy as a kube resource.

use kube::api::ObjectMeta;
pub use mlcanary_core::fixtures::{TestPolicy, POLICY_FILE};

use crate::policy::CanaryPolicy;

impl CanaryPolicy {
    /// The fixture's first policy (`fraud-model`), to change and then validate or wrap.
    pub fn test() -> TestPolicy {
        TestPolicy::fraud_model()
    }
}

/// A [`TestPolicy`] as the resource a cluster or a policy file holds.
pub trait AsResource {
    fn resource(&self) -> CanaryPolicy;
}

impl AsResource for TestPolicy {
    fn resource(&self) -> CanaryPolicy {
        CanaryPolicy {
            metadata: ObjectMeta {
                name: Some(self.metadata.name.clone()),
                namespace: self.metadata.namespace.clone(),
                ..ObjectMeta::default()
            },
            spec: self.spec.clone().into(),
            status: None,
        }
    }
}
