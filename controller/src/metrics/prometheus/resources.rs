//! The PromQL behind the `cpu` and `memory` checks (judged by `mlcanary_core::analysis::resources`).
//!
//! **Label assumptions.** cAdvisor's series carry `namespace` and `pod` (not the pod's labels), so
//! pods are selected by joining with kube-state-metrics' `kube_pod_labels` on `(namespace, pod)`:
//! `podSelector` holds label matchers on `kube_pod_labels` with `{{variant}}` for the subset name.
//! The default, `label_mlcanary_io_subset="{{variant}}"`, expects pods labelled
//! `mlcanary.io/subset: stable|canary` and kube-state-metrics run with
//! `--metric-labels-allowlist=pods=[mlcanary.io/subset]`; with subsets named after a `version` label
//! use `label_version="{{variant}}"`. Containers `""` (the pod cgroup) and `POD` (pause) are left out.
//! The policy's namespace, when known, narrows both sides.

use std::time::Duration;

use mlcanary_core::policy::validated::{Resource, ResourceCheck};

fn seconds(w: Duration) -> String {
    format!("{}s", w.as_secs().max(1))
}

/// The PromQL for one variant: CPU seconds in the window (all its pods), or mean working-set bytes
/// per pod.
pub fn resource_query(
    check: &ResourceCheck,
    namespace: Option<&str>,
    variant: &str,
    window: Duration,
) -> String {
    let ns = namespace.map_or_else(String::new, |n| format!(",namespace=\"{n}\""));
    let selector = check.pod_selector.replace("{{variant}}", variant);
    let pods = format!("max by (namespace, pod) (kube_pod_labels{{{selector}{ns}}})");
    let containers = format!("container!=\"\",container!=\"POD\"{ns}");
    let w = seconds(window);
    match check.resource {
        Resource::Cpu => format!(
            "sum(sum by (namespace, pod) (increase(container_cpu_usage_seconds_total{{{containers}}}[{w}])) \
             * on (namespace, pod) {pods})"
        ),
        Resource::Memory => format!(
            "avg(sum by (namespace, pod) (avg_over_time(container_memory_working_set_bytes{{{containers}}}[{w}])) \
             * on (namespace, pod) {pods})"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlcanary_core::fixtures::resource_check as check;

    #[test]
    fn cpu_query_joins_pods_by_subset_label() {
        let q = resource_query(
            &check(Resource::Cpu),
            Some("ml"),
            "canary",
            Duration::from_secs(30),
        );
        assert_eq!(
            q,
            "sum(sum by (namespace, pod) (increase(container_cpu_usage_seconds_total\
             {container!=\"\",container!=\"POD\",namespace=\"ml\"}[30s])) * on (namespace, pod) \
             max by (namespace, pod) (kube_pod_labels{label_mlcanary_io_subset=\"canary\",namespace=\"ml\"}))"
        );
    }

    #[test]
    fn memory_query_with_a_custom_selector_and_no_namespace() {
        let c = ResourceCheck {
            pod_selector: r#"label_version="{{variant}}",label_app="fraud""#.into(),
            ..check(Resource::Memory)
        };
        let q = resource_query(&c, None, "stable", Duration::from_millis(200));
        assert_eq!(
            q,
            "avg(sum by (namespace, pod) (avg_over_time(container_memory_working_set_bytes\
             {container!=\"\",container!=\"POD\"}[1s])) * on (namespace, pod) \
             max by (namespace, pod) (kube_pod_labels{label_version=\"stable\",label_app=\"fraud\"}))"
        );
    }
}
