//! The `CanaryPolicy` custom resource (`mlcanary.io/v1alpha1`): kube's wrapper around the core
//! model. The spec, the status and their validation are [`mlcanary_core::policy`]; this module adds
//! the resource (metadata, printer columns, the CRD), its validation into a [`ValidatedPolicy`]
//! (name and namespace from the metadata), and reading policies from YAML files ([`file`](mod@file)).

pub mod file;

use kube::{CustomResource, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use mlcanary_core::policy::*;

// The resource's spec: exactly the core `CanaryPolicySpec` (same JSON, same schema and description:
// a doc comment here would replace the spec's), under a name of this crate as kube's derive needs.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "mlcanary.io",
    version = "v1alpha1",
    kind = "CanaryPolicy",
    namespaced,
    status = "CanaryPolicyStatus",
    // Not `canary`: Flagger's Canary CRD has that short name.
    shortname = "mlc",
    doc = "A canary rollout of one model behind one VirtualService: the spec is written by the user, the status by the controller.",
    printcolumn = r#"{"name":"Status","type":"string","description":"phase of the rollout","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Weight (%)","type":"number","description":"canary weight in percent","jsonPath":".status.canaryWeightPercent"}"#,
    printcolumn = r#"{"name":"Step","type":"string","description":"current step / number of steps","jsonPath":".status.step"}"#,
    printcolumn = r#"{"name":"Failed","type":"integer","description":"consecutive failed analyses","jsonPath":".status.failedChecks"}"#,
    printcolumn = r#"{"name":"Last transition","type":"date","description":"time of the last phase change","jsonPath":".status.lastTransitionTime"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(transparent)]
pub struct ResourceSpec(pub CanaryPolicySpec);

impl std::ops::Deref for ResourceSpec {
    type Target = CanaryPolicySpec;
    fn deref(&self) -> &CanaryPolicySpec {
        &self.0
    }
}

impl std::ops::DerefMut for ResourceSpec {
    fn deref_mut(&mut self) -> &mut CanaryPolicySpec {
        &mut self.0
    }
}

impl From<CanaryPolicySpec> for ResourceSpec {
    fn from(spec: CanaryPolicySpec) -> Self {
        ResourceSpec(spec)
    }
}

/// A resource validates as its spec, named by `metadata.name`, in `metadata.namespace`.
impl TryFrom<&CanaryPolicy> for ValidatedPolicy {
    type Error = ValidationError;

    fn try_from(p: &CanaryPolicy) -> Result<Self, Self::Error> {
        let name = p.metadata.name.as_deref().ok_or_else(|| ValidationError {
            field: "metadata.name".into(),
            reason: "missing".into(),
        })?;
        let mut v = ValidatedPolicy::from_spec(name, &p.spec)?;
        v.namespace = p.namespace();
        Ok(v)
    }
}

#[cfg(test)]
mod tests;
