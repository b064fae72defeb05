//! The Deployments of the lifecycle (`spec.target.deploymentRef`): the thin adapter around
//! [`mlcanary_core::lifecycle::plan`]. It reads the user's Deployment (the canary) and
//! `<name>-stable`, and carries out the plan's actions: create `<name>-stable`, copy the canary's
//! pod template into it, scale the canary. No decisions here.
//!
//! `<name>-stable` has no owner reference on purpose: deleting the CanaryPolicy reverts traffic
//! to stable (its finalizer), so stable must outlive it — the garbage collector would otherwise
//! delete the Deployment serving every request. It is labelled `app.kubernetes.io/managed-by:
//! mlcanary` and annotated with its policy.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::{json, Value};

use crate::policy::CanaryPolicy;
use mlcanary_core::lifecycle::{
    stable_template, template_hash, Action, DeploymentView, Observed, TEMPLATE_HASH_ANNOTATION,
};
use mlcanary_core::policy::validated::DeploymentRef;

/// Annotation on `<name>-stable`: the CanaryPolicy (`namespace/name`) that made it.
pub const POLICY_ANNOTATION: &str = "mlcanary.io/policy";

/// `<name>-stable`.
pub fn stable_name(r: &DeploymentRef) -> String {
    format!("{}-stable", r.name)
}

/// The lifecycle's view of a Deployment. Its subset label counts only when the selector carries
/// it too (with the same value): a selector without it would also select the other subset's pods.
pub fn view(d: &Deployment, subset_label: &str) -> DeploymentView {
    let spec = d.spec.as_ref();
    let template = spec
        .map(|s| serde_json::to_value(&s.template).unwrap_or(Value::Null))
        .unwrap_or(Value::Null);
    let label = |v: &Value| {
        v.pointer("/metadata/labels")
            .and_then(|l| l.get(subset_label))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let in_template = label(&template);
    let in_selector = spec
        .and_then(|s| s.selector.match_labels.as_ref())
        .and_then(|m| m.get(subset_label))
        .cloned();
    let images = spec
        .and_then(|s| s.template.spec.as_ref())
        .map(|p| {
            p.containers
                .iter()
                .map(|c| c.image.clone().unwrap_or_default())
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let replicas = spec.and_then(|s| s.replicas).unwrap_or(1);
    let status = d.status.as_ref();
    let n = |f: fn(&k8s_openapi::api::apps::v1::DeploymentStatus) -> Option<i32>| {
        status.and_then(f).unwrap_or(0)
    };
    // `kubectl rollout status`'s test: the controller saw the latest spec, and every replica is
    // updated and available.
    let observed = status.and_then(|s| s.observed_generation) >= d.metadata.generation;
    let ready = observed
        && n(|s| s.updated_replicas) >= replicas
        && n(|s| s.available_replicas) >= replicas
        && n(|s| s.replicas) <= replicas;
    DeploymentView {
        template_hash: template_hash(&template, subset_label),
        images,
        replicas,
        ready,
        subset_label: in_template.filter(|v| Some(v) == in_selector.as_ref()),
        copied_hash: d.annotations().get(TEMPLATE_HASH_ANNOTATION).cloned(),
    }
}

/// Both Deployments as they are now (absent ones `None`), and the canary itself (the source of
/// the template actions copy).
pub async fn observe(
    api: &Api<Deployment>,
    r: &DeploymentRef,
) -> Result<(Observed, Option<Deployment>), kube::Error> {
    let canary = api.get_opt(&r.name).await?;
    let stable = api.get_opt(&stable_name(r)).await?;
    let observed = Observed {
        canary: canary.as_ref().map(|d| view(d, &r.subset_label)),
        stable: stable.as_ref().map(|d| view(d, &r.subset_label)),
    };
    Ok((observed, canary))
}

/// Carry out `action` for `policy`'s Deployments.
pub async fn act(
    api: &Api<Deployment>,
    policy: &CanaryPolicy,
    r: &DeploymentRef,
    stable_subset: &str,
    canary: &Deployment,
    action: &Action,
) -> Result<(), kube::Error> {
    match action {
        Action::CreateStable { replicas } => {
            let d = stable_deployment(policy, r, stable_subset, canary, *replicas);
            api.create(&PostParams::default(), &d).await.map(|_| ())
        }
        Action::CopyToStable => {
            let (template, hash) = stable_pod_template(r, stable_subset, canary);
            let patch = json!({
                "metadata": {"annotations": {TEMPLATE_HASH_ANNOTATION: hash}},
                "spec": {"template": template},
            });
            api.patch(
                &stable_name(r),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map(|_| ())
        }
        Action::ScaleCanary(n) => {
            let patch = json!({"spec": {"replicas": n}});
            api.patch_scale(&r.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(|_| ())
        }
    }
}

/// The canary's pod template as stable runs it (subset label set to stable's), and its hash.
fn stable_pod_template(
    r: &DeploymentRef,
    stable_subset: &str,
    canary: &Deployment,
) -> (Value, String) {
    let template = canary
        .spec
        .as_ref()
        .map(|s| serde_json::to_value(&s.template).unwrap_or(Value::Null))
        .unwrap_or(Value::Null);
    let hash = template_hash(&template, &r.subset_label);
    (
        stable_template(&template, &r.subset_label, stable_subset),
        hash,
    )
}

/// `<name>-stable` as first created: the canary's spec with the subset label set to stable's in
/// the selector and the template, owned by the CanaryPolicy.
fn stable_deployment(
    policy: &CanaryPolicy,
    r: &DeploymentRef,
    stable_subset: &str,
    canary: &Deployment,
    replicas: i32,
) -> Deployment {
    let (template, hash) = stable_pod_template(r, stable_subset, canary);
    let mut selector: BTreeMap<String, String> = canary
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.clone())
        .unwrap_or_default();
    selector.insert(r.subset_label.clone(), stable_subset.to_owned());
    let mut labels = canary.labels().clone();
    labels.insert("app.kubernetes.io/managed-by".into(), "mlcanary".into());
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": stable_name(r),
            "namespace": policy.namespace(),
            "labels": labels,
            "annotations": {
                TEMPLATE_HASH_ANNOTATION: hash,
                POLICY_ANNOTATION: format!("{}/{}", policy.namespace().unwrap_or_default(), policy.name_any()),
            },
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            "template": template,
        },
    }))
    .unwrap_or_default()
}
