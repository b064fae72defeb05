//! Every YAML document under `istio/` is checked: Istio objects against Istio's own CRD schemas
//! (`MLCANARY_ISTIO_CRDS` or `<workspace>/../shared/istio/crds.gen.yaml`), CanaryPolicies against
//! our CRD schema and the controller's validation, WasmPlugin configs by the filter's own parser,
//! Kubernetes objects by their typed k8s-openapi structs, kustomizations by the files they list. A
//! kind the test does not know fails it, so nothing lands unchecked.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use mlcanary_controller::cli::crd_yaml;
use mlcanary_controller::policy::{CanaryPolicy, ValidatedPolicy};
use mlcanary_core::fixtures::TestPolicy;
use mlcanary_core::render::{owned_routes, render_config};
use mlcanary_core::weights::Weights;
use serde::de::DeserializeOwned;
use serde_json::Value;
use support::schema::{conforms, istio_schema, object_conforms, schema_in, yaml_documents};

fn istio_dir() -> PathBuf {
    support::repo_root().join("istio")
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            yaml_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
}

fn typed<T: DeserializeOwned>(doc: &Value, what: &str) {
    if let Err(e) = serde_json::from_value::<T>(doc.clone()) {
        panic!("{what}: not a valid {}: {e}", std::any::type_name::<T>());
    }
}

fn our_crd_schema() -> Value {
    let crd = yaml_documents(&crd_yaml().unwrap()).unwrap();
    schema_in(&crd, "CanaryPolicy", "v1alpha1").expect("our CRD's schema")
}

/// Check one document; returns its kind.
fn check(doc: &Value, file: &Path, dir: &Path) -> String {
    let api_version = doc["apiVersion"].as_str().unwrap_or_default();
    let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
    let name = doc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("?");
    let what = format!("{}: {kind} {name}", file.display());
    let version = api_version.rsplit('/').next().unwrap_or_default();
    match (api_version, kind.as_str()) {
        (
            "networking.istio.io/v1"
            | "networking.istio.io/v1alpha3"
            | "extensions.istio.io/v1alpha1",
            "VirtualService" | "DestinationRule" | "EnvoyFilter" | "WasmPlugin",
        ) => {
            object_conforms(doc, &istio_schema(&kind, version))
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            if kind == "WasmPlugin" {
                let raw: mlcanary_filter::config::RawConfig =
                    serde_json::from_value(doc["spec"]["pluginConfig"].clone())
                        .unwrap_or_else(|e| panic!("{what}: pluginConfig: {e}"));
                // The install splits nothing before a CanaryPolicy exists: the controller writes
                // every policy into this config.
                assert!(
                    raw.policies.is_empty(),
                    "{what}: a live policy in the install"
                );
                mlcanary_filter::Config::try_from(raw)
                    .unwrap_or_else(|e| panic!("{what}: the filter refuses pluginConfig: {e}"));
                assert_eq!(doc["spec"]["failStrategy"], "FAIL_OPEN", "{what}");
                assert_eq!(
                    doc["spec"]["match"],
                    serde_json::json!([{"mode": "CLIENT"}]),
                    "{what}"
                );
            }
        }
        ("mlcanary.io/v1alpha1", "CanaryPolicy") => {
            object_conforms(doc, &our_crd_schema()).unwrap_or_else(|e| panic!("{what}: {e}"));
            let p: CanaryPolicy =
                serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{what}: {e}"));
            ValidatedPolicy::try_from(&p).unwrap_or_else(|e| panic!("{what}: {e}"));
        }
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
            // crd.rs checks it in depth.
            assert_eq!(name, "canarypolicies.mlcanary.io", "{what}");
        }
        ("v1", "Namespace") => typed::<Namespace>(doc, &what),
        ("v1", "ServiceAccount") => typed::<ServiceAccount>(doc, &what),
        ("v1", "Service") => typed::<Service>(doc, &what),
        ("apps/v1", "Deployment") => typed::<Deployment>(doc, &what),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => typed::<ClusterRole>(doc, &what),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            typed::<ClusterRoleBinding>(doc, &what)
        }
        ("rbac.authorization.k8s.io/v1", "Role") => typed::<Role>(doc, &what),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => typed::<RoleBinding>(doc, &what),
        ("install.istio.io/v1alpha1", "IstioOperator") => {
            let dc = &doc["spec"]["meshConfig"]["defaultConfig"];
            let tags: Vec<&str> = dc["extraStatTags"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let want: Vec<&str> = mlcanary_filter::stats::TAGS
                .iter()
                .map(|(t, _)| *t)
                .collect();
            assert_eq!(
                tags, want,
                "{what}: extraStatTags must be the filter's tags"
            );
            assert_eq!(
                dc["proxyStatsMatcher"]["inclusionRegexps"],
                serde_json::json!([".*mlcanary_.*"]),
                "{what}"
            );
        }
        ("kustomize.config.k8s.io/v1beta1", "Kustomization") => {
            for r in doc["resources"].as_array().into_iter().flatten() {
                let r = r.as_str().unwrap_or_default();
                assert!(
                    dir.join(r).exists(),
                    "{what}: lists {r}, which does not exist"
                );
            }
        }
        _ => panic!("{what}: unknown kind {api_version} {kind}: teach this test to check it"),
    }
    kind
}

#[test]
fn every_manifest_is_valid() {
    let mut files = Vec::new();
    yaml_files(&istio_dir(), &mut files);
    let mut kinds = BTreeSet::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let docs = yaml_documents(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let dir = file.parent().unwrap();
        for doc in &docs {
            kinds.insert(check(doc, file, dir));
        }
    }
    // Not vacuous: the kinds the deliverable promises are all there and were checked.
    for k in [
        "VirtualService",
        "DestinationRule",
        "WasmPlugin",
        "EnvoyFilter",
        "CanaryPolicy",
        "Deployment",
        "ClusterRole",
        "Kustomization",
        "IstioOperator",
    ] {
        assert!(kinds.contains(k), "no {k} under istio/ (found {kinds:?})");
    }
}

#[test]
fn the_schema_check_catches_mistakes() {
    let text =
        std::fs::read_to_string(istio_dir().join("samples/fraud-model/virtual-service.yaml"))
            .unwrap();
    let mut vs = yaml_documents(&text).unwrap().remove(0);
    let schema = istio_schema("VirtualService", "v1");
    object_conforms(&vs, &schema).unwrap();
    vs["spec"]["http"][0]["route"][0]["destination"]["subst"] = "canary".into();
    let e = object_conforms(&vs, &schema).unwrap_err();
    assert!(e.contains("subst"), "{e}");

    let text = std::fs::read_to_string(istio_dir().join("samples/fraud-model/canary-policy.yaml"))
        .unwrap();
    let mut p = yaml_documents(&text).unwrap().remove(0);
    p["spec"]["schedule"]["stepWeigth"] = 10.into();
    assert!(object_conforms(&p, &our_crd_schema())
        .unwrap_err()
        .contains("stepWeigth"));
}

#[test]
fn every_top_level_manifest_is_in_the_kustomization_or_meant_not_to_be() {
    let dir = istio_dir();
    let k =
        yaml_documents(&std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap()).unwrap();
    let listed: BTreeSet<String> = k[0]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    let not_listed = [
        "kustomization.yaml",
        "envoyfilter-per-host.yaml",
        "mesh-config.yaml",
    ];
    for e in std::fs::read_dir(&dir).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".yaml") && !not_listed.contains(&name.as_str()) {
            assert!(
                listed.contains(&name),
                "{name} is neither in kustomization.yaml nor excluded"
            );
        }
    }
}

/// The per-host attachment under `istio/` is exactly what `mlcanary attachment` renders for the
/// sample policy (so it cannot drift from the renderer the unit tests check), and the renderer's
/// output for a sample's policy enables the filter on the sample's FQDN.
#[test]
fn the_per_host_attachment_is_the_rendered_one() {
    let file = istio_dir().join("envoyfilter-per-host.yaml");
    let on_disk = yaml_documents(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let policy = istio_dir().join("samples/fraud-model/canary-policy.yaml");
    let rendered =
        mlcanary_controller::cli::attachment_yaml(&[policy], &[8501], "istio-system/mlcanary")
            .unwrap();
    assert_eq!(
        on_disk,
        yaml_documents(&rendered).unwrap(),
        "regenerate {}",
        file.display()
    );
    assert!(
        rendered.contains("name: fraud-model.ml.svc.cluster.local:8501"),
        "{rendered}"
    );
}

#[test]
fn the_controller_deployment_is_locked_down_and_probed() {
    let text = std::fs::read_to_string(istio_dir().join("controller.yaml")).unwrap();
    let docs = yaml_documents(&text).unwrap();
    let d: Deployment = serde_json::from_value(docs[0].clone()).unwrap();
    let pod = d.spec.unwrap().template.spec.unwrap();
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some("mlcanary-controller")
    );
    assert_eq!(pod.security_context.unwrap().run_as_non_root, Some(true));
    let c = &pod.containers[0];
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert!(c
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .is_some());
    let probe_path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        p.as_ref()
            .and_then(|p| p.http_get.as_ref())
            .and_then(|h| h.path.clone())
    };
    assert_eq!(probe_path(&c.liveness_probe).as_deref(), Some("/healthz"));
    assert_eq!(probe_path(&c.readiness_probe).as_deref(), Some("/readyz"));
    let args = c.args.clone().unwrap();
    assert_eq!(
        args[..3],
        [
            "controller",
            "--prometheus",
            "http://prometheus.istio-system:9090"
        ]
    );
    // The arguments parse as the binary would parse them.
    use clap::Parser;
    let argv = std::iter::once("mlcanary".to_owned()).chain(args);
    mlcanary_controller::cli::Cli::try_parse_from(argv).expect("the Deployment's args parse");
}

/// What the core renders (the owned routes, the plugin config) is what Istio's schemas accept.
#[test]
fn rendered_objects_validate_against_istio_schemas() {
    let v = TestPolicy::fraud_model().validated();
    let vs = serde_json::json!({"spec": {"hosts": ["fraud-model"],
                             "http": owned_routes(&v, Weights::with_canary_bp(2500))}});
    let schema = istio_schema("VirtualService", "v1");
    conforms(&vs, &schema, "").unwrap();
    // The checker is not vacuous: a misspelt field is caught.
    let bad = serde_json::json!({"spec": {"http": [{"name": "x", "route": [{"destination": {"hots": "h"}}]}]}});
    assert!(conforms(&bad, &schema, "").unwrap_err().contains("hots"));

    let raw = render_config(&[(&v, Weights::with_canary_bp(2500))]).unwrap();
    let wp =
        serde_json::json!({"spec": {"pluginConfig": raw, "url": "oci://example/mlcanary:0.1"}});
    conforms(&wp, &istio_schema("WasmPlugin", "v1alpha1"), "").unwrap();
}

/// With ground truth, the routes gain the feedback route (a path regex and a fault that holds the
/// request from the model) and the plugin config the keys: both still what Istio accepts.
#[test]
fn the_feedback_route_and_keys_validate_against_istio_schemas() {
    let mut v = TestPolicy::fraud_model().validated();
    let mut fb = mlcanary_core::policy::feedback::Feedback {
        secret: "fraud-model-feedback".into(),
        max_age: std::time::Duration::from_secs(3600),
        label_delay: std::time::Duration::ZERO,
        bake: true,
        keys: Vec::new(),
    };
    fb.set_keys(
        &[("key".to_owned(), b"0123456789abcdef0123".to_vec())]
            .into_iter()
            .collect(),
    )
    .unwrap();
    v.feedback = Some(fb);
    // A ticket records the prediction: feedback needs the scores read.
    v.filter_template.predictions = Some(Default::default());
    let routes = owned_routes(&v, Weights::with_canary_bp(2500));
    let hold = &routes[0];
    assert_eq!(hold.name, "mlcanary-fraud-model-feedback");
    assert!(hold.fault.is_some());
    for version in ["v1", "v1beta1"] {
        let vs = serde_json::json!({"spec": {"hosts": ["fraud-model"], "http": routes}});
        conforms(&vs, &istio_schema("VirtualService", version), "")
            .unwrap_or_else(|e| panic!("{version}: {e}"));
    }
    let raw = render_config(&[(&v, Weights::with_canary_bp(2500))]).unwrap();
    assert_eq!(raw.policies[0].feedback.as_ref().unwrap().keys.len(), 1);
    let wp =
        serde_json::json!({"spec": {"pluginConfig": raw, "url": "oci://example/mlcanary:0.1"}});
    conforms(&wp, &istio_schema("WasmPlugin", "v1alpha1"), "").unwrap();
}

/// The VirtualService the controller writes — the sample's routes with the owned ones spliced in,
/// in the apply body the Istio target sends — conforms to Istio's schema in both versions it may
/// write: `v1` (Istio ≥ 1.22) and `v1beta1` (older releases).
#[test]
fn the_written_virtual_service_validates_as_v1_and_v1beta1() {
    use mlcanary_controller::traffic::istio::virtual_service_patch;
    let v = TestPolicy::fraud_model().validated();
    let text =
        std::fs::read_to_string(istio_dir().join("samples/fraud-model/virtual-service.yaml"))
            .unwrap();
    let sample = yaml_documents(&text).unwrap().remove(0);
    let existing = sample["spec"]["http"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let http = mlcanary_core::render::splice_routes(
        &existing,
        &v.name,
        &owned_routes(&v, Weights::with_canary_bp(2500)),
    )
    .unwrap();
    for version in ["v1", "v1beta1"] {
        let patch = virtual_service_patch(version, "fraud-model", "ml", Some("7".into()), &http);
        assert_eq!(
            patch["apiVersion"],
            format!("networking.istio.io/{version}")
        );
        // What the API server validates: the object as it is after the apply.
        let mut written = sample.clone();
        written["apiVersion"] = patch["apiVersion"].clone();
        written["spec"]["http"] = patch["spec"]["http"].clone();
        let schema = istio_schema("VirtualService", version);
        object_conforms(&written, &schema).unwrap_or_else(|e| panic!("{version}: {e}"));
        // Not vacuous: a route the schema does not know is refused in this version too.
        let mut bad = written.clone();
        bad["spec"]["http"][0]["rout"] = bad["spec"]["http"][0]["route"].clone();
        assert!(object_conforms(&bad, &schema).is_err(), "{version}");
    }
}

/// Every WasmPlugin under istio/ (install and samples), as the controller's mesh scope sees them:
/// the install's plugin is the controller's default mesh plugin, and no namespace's proxies are
/// reached by two plugins (the filter would run twice).
#[test]
fn the_install_and_samples_put_the_filter_once_in_every_chain() {
    use mlcanary_core::render::scope::plugins_reaching;
    use mlcanary_core::render::MeshScope;
    let scope = MeshScope::default();
    let mut plugins = Vec::new();
    let mut namespaces = vec!["default".to_owned(), "istio-ingress".to_owned()];
    let mut files = Vec::new();
    yaml_files(&istio_dir(), &mut files);
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in yaml_documents(&text).unwrap() {
            if let Some(ns) = doc.pointer("/metadata/namespace").and_then(Value::as_str) {
                namespaces.push(ns.to_owned());
            }
            if doc["kind"] == "WasmPlugin" {
                let ns = doc.pointer("/metadata/namespace").and_then(Value::as_str);
                plugins.push(mlcanary_core::policy::PluginRef {
                    namespace: ns.unwrap_or("default").to_owned(),
                    name: doc["metadata"]["name"].as_str().unwrap().to_owned(),
                });
            }
        }
    }
    assert_eq!(
        plugins,
        scope.mesh_plugin.clone().into_iter().collect::<Vec<_>>()
    );
    for ns in &namespaces {
        assert_eq!(plugins_reaching(&scope, &plugins, ns).len(), 1, "{ns}");
    }
}

/// The sample policy with a shadow phase, validated as the controller validates it.
fn sample_policy_in_shadow() -> ValidatedPolicy {
    let text = std::fs::read_to_string(istio_dir().join("samples/fraud-model/canary-policy.yaml"))
        .unwrap();
    let mut doc = yaml_documents(&text).unwrap().remove(0);
    doc["spec"]["schedule"]["shadow"] = serde_json::json!({"percent": 10});
    let p: CanaryPolicy = serde_json::from_value(doc).unwrap();
    ValidatedPolicy::try_from(&p).unwrap()
}

/// The inbound plugin the Istio target writes during the sample's shadow — the install's module
/// fields copied, in the apply body it sends — conforms to Istio's WasmPlugin schema, its config
/// is one the filter accepts, and it selects the pods the sample's canary subset selects.
#[test]
fn the_written_inbound_plugin_validates_and_selects_the_canarys_pods() {
    use mlcanary_controller::traffic::istio::inbound::inbound_plugin_patch;
    let policy = sample_policy_in_shadow();
    let plugin =
        mlcanary_core::render::inbound_plugin(&policy, Weights::shadow(1000)).expect("in shadow");
    let text = std::fs::read_to_string(istio_dir().join("wasmplugin.yaml")).unwrap();
    let install = yaml_documents(&text).unwrap().remove(0);
    let patch =
        inbound_plugin_patch("v1alpha1", &plugin, "ml/fraud-model", &install["spec"]).unwrap();
    assert_eq!(patch["apiVersion"], "extensions.istio.io/v1alpha1");
    assert_eq!(patch["metadata"]["name"], "mlcanary-shadow-fraud-model");
    assert_eq!(patch["metadata"]["namespace"], "ml");
    let schema = istio_schema("WasmPlugin", "v1alpha1");
    object_conforms(&patch, &schema).unwrap();
    // Istio's CEL rule (not checked by the structural check): a selector, no targetRef(s).
    for f in ["targetRef", "targetRefs"] {
        assert!(patch["spec"].get(f).is_none(), "{f}");
    }
    assert_eq!(patch["spec"]["url"], install["spec"]["url"]);
    assert_eq!(patch["spec"]["phase"], install["spec"]["phase"]);
    assert_eq!(
        patch["spec"]["match"],
        serde_json::json!([{"mode": "SERVER"}])
    );
    let raw: mlcanary_filter::config::RawConfig =
        serde_json::from_value(patch["spec"]["pluginConfig"].clone()).unwrap();
    assert!(raw.inbound);
    let cfg = mlcanary_filter::Config::try_from(raw).expect("the filter accepts it");
    assert_eq!(cfg.policies.len(), 1);
    // Not vacuous: a misspelt field is refused.
    let mut bad = patch.clone();
    bad["spec"]["selectr"] = bad["spec"]["selector"].clone();
    assert!(object_conforms(&bad, &schema)
        .unwrap_err()
        .contains("selectr"));

    // The selector is the canary subset's labels, which the sample's canary pods carry.
    let labels = serde_json::to_value(&plugin.selector).unwrap();
    let samples = istio_dir().join("samples/fraud-model");
    let dr =
        yaml_documents(&std::fs::read_to_string(samples.join("destination-rule.yaml")).unwrap())
            .unwrap()
            .remove(0);
    let canary = dr["spec"]["subsets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "canary")
        .unwrap();
    assert_eq!(canary["labels"], labels);
    assert_eq!(patch["spec"]["selector"]["matchLabels"], labels);
    let deployment =
        yaml_documents(&std::fs::read_to_string(samples.join("deployment.yaml")).unwrap())
            .unwrap()
            .remove(0);
    let pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .unwrap();
    for (k, v) in labels.as_object().unwrap() {
        assert_eq!(pod_labels.get(k), Some(v), "the canary's pods carry {k}");
    }
}

/// The controller's ClusterRole grants every verb the Istio target sends, the inbound plugin's
/// create (an apply that creates) and delete included.
#[test]
fn the_cluster_role_allows_what_the_istio_target_writes() {
    let text = std::fs::read_to_string(istio_dir().join("rbac.yaml")).unwrap();
    let role: ClusterRole = yaml_documents(&text)
        .unwrap()
        .into_iter()
        .find(|d| d["kind"] == "ClusterRole")
        .map(|d| serde_json::from_value(d).unwrap())
        .expect("a ClusterRole");
    let verbs = |group: &str, resource: &str| -> BTreeSet<String> {
        role.rules
            .iter()
            .flatten()
            .filter(|r| r.api_groups.iter().flatten().any(|g| g == group))
            .filter(|r| r.resources.iter().flatten().any(|x| x == resource))
            .flat_map(|r| r.verbs.clone())
            .collect()
    };
    let wasm = verbs("extensions.istio.io", "wasmplugins");
    for v in ["get", "create", "patch", "delete"] {
        assert!(wasm.contains(v), "wasmplugins: {v} missing from {wasm:?}");
    }
    let vs = verbs("networking.istio.io", "virtualservices");
    for v in ["get", "patch"] {
        assert!(vs.contains(v), "virtualservices: {v} missing from {vs:?}");
    }
}
