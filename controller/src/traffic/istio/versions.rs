//! Which version of an Istio kind to write. Istio serves `networking.istio.io/v1` from 1.22 only;
//! older releases serve `v1beta1` (and `v1alpha3`), with the same VirtualService schema. So before
//! the first write the target asks the API server which versions the kind's group serves
//! (`GET /apis/<group>`), writes the first of the kind's versions it lists, and caches the answer
//! until a write gets a 404 (Istio upgraded or downgraded under it). The WasmPlugin goes the same
//! way with its only version, `v1alpha1`: one path for every kind.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::api::{ApiResource, GroupVersionKind};
use thiserror::Error;

/// An Istio kind the controller writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IstioKind {
    pub group: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    /// The versions the controller's objects conform to, most preferred first.
    pub versions: &'static [&'static str],
}

/// VirtualService: `v1` (Istio ≥ 1.22), else `v1beta1` (every Istio 1.x the filter supports).
pub const VIRTUAL_SERVICE: IstioKind = IstioKind {
    group: "networking.istio.io",
    kind: "VirtualService",
    plural: "virtualservices",
    versions: &["v1", "v1beta1"],
};

/// WasmPlugin: `v1alpha1`, the only version Istio serves.
pub const WASM_PLUGIN: IstioKind = IstioKind {
    group: "extensions.istio.io",
    kind: "WasmPlugin",
    plural: "wasmplugins",
    versions: &["v1alpha1"],
};

impl IstioKind {
    /// The first of the kind's versions that `served` lists.
    pub fn choose(&self, served: &[String]) -> Option<&'static str> {
        self.versions
            .iter()
            .copied()
            .find(|v| served.iter().any(|s| s == v))
    }

    /// `group/version`, the `apiVersion` of the object written.
    pub fn api_version(&self, version: &str) -> String {
        format!("{}/{version}", self.group)
    }

    /// The resource at `version`, for kube's dynamic API.
    pub fn resource(&self, version: &str) -> ApiResource {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(self.group, version, self.kind),
            self.plural,
        )
    }
}

/// Why the version to write is not known.
#[derive(Debug, Error)]
pub enum DiscoveryError {
    /// The API server does not serve the group at all.
    #[error(
        "the API server does not serve {group} (needed for {kind}): is Istio installed in this \
         cluster?"
    )]
    NotInstalled {
        group: &'static str,
        kind: &'static str,
    },
    /// The group is served, but in none of the versions the controller can write.
    #[error(
        "{group} is served as {served:?}, none of {wanted:?} that mlcanary writes {kind} as: \
         this Istio is too old"
    )]
    Unsupported {
        group: &'static str,
        kind: &'static str,
        served: Vec<String>,
        wanted: &'static [&'static str],
    },
    /// The discovery request failed (retried like any transient error before it is returned).
    #[error("discovering the versions of {group}: {source}")]
    Request {
        group: &'static str,
        #[source]
        source: kube::Error,
    },
}

/// The versions each group was last found serving; clones share it.
#[derive(Debug, Clone, Default)]
pub struct Served(Arc<Mutex<HashMap<&'static str, Vec<String>>>>);

impl Served {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<&'static str, Vec<String>>> {
        // A poisoned lock only means a panic elsewhere; the map itself is still sound.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, group: &str) -> Option<Vec<String>> {
        self.map().get(group).cloned()
    }

    pub fn set(&self, group: &'static str, versions: Vec<String>) {
        self.map().insert(group, versions);
    }

    /// Forget `group`: the next write discovers it again.
    pub fn forget(&self, group: &str) {
        self.map().remove(group);
    }
}

/// The version of `kind` to write, given the versions its group serves.
pub fn pick(kind: &IstioKind, served: &[String]) -> Result<&'static str, DiscoveryError> {
    kind.choose(served)
        .ok_or_else(|| DiscoveryError::Unsupported {
            group: kind.group,
            kind: kind.kind,
            served: served.to_vec(),
            wanted: kind.versions,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn prefers_v1_and_falls_back_to_v1beta1() {
        let vs = VIRTUAL_SERVICE;
        assert_eq!(
            vs.choose(&served(&["v1alpha3", "v1beta1", "v1"])),
            Some("v1")
        );
        assert_eq!(
            vs.choose(&served(&["v1alpha3", "v1beta1"])),
            Some("v1beta1")
        );
        assert_eq!(vs.choose(&served(&["v1alpha3"])), None);
        assert_eq!(WASM_PLUGIN.choose(&served(&["v1alpha1"])), Some("v1alpha1"));
        assert_eq!(vs.api_version("v1beta1"), "networking.istio.io/v1beta1");
        let e = pick(&vs, &served(&["v1alpha3"])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "networking.istio.io is served as [\"v1alpha3\"], none of [\"v1\", \"v1beta1\"] that \
             mlcanary writes VirtualService as: this Istio is too old"
        );
    }

    #[test]
    fn the_cache_is_shared_and_forgets_a_group() {
        let a = Served::default();
        let b = a.clone();
        a.set("networking.istio.io", served(&["v1"]));
        assert_eq!(b.get("networking.istio.io"), Some(served(&["v1"])));
        b.forget("networking.istio.io");
        assert_eq!(a.get("networking.istio.io"), None);
    }
}
