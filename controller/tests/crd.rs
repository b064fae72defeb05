//! The committed `istio/crd.yaml` is the generated one, and it is a well-formed
//! `apiextensions.k8s.io/v1` CRD with what `kubectl` and the controller rely on.

mod support;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use mlcanary_controller::cli::crd_yaml;

const REGENERATE: &str = "cargo run -p mlcanary-controller --bin mlcanary -- crd > istio/crd.yaml";

fn committed() -> String {
    let path = support::repo_root().join("istio/crd.yaml");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; generate it with `{REGENERATE}`", path.display()))
}

#[test]
fn committed_crd_is_the_generated_one() {
    let generated = crd_yaml().expect("the CRD encodes");
    // Compare line by line so the failure names the first differing line, not two 300-line blobs.
    let committed = committed();
    if committed != generated {
        let first = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| committed.lines().count().min(generated.lines().count()));
        panic!(
            "istio/crd.yaml is stale (first difference at line {}: committed {:?}, generated {:?}); \
             regenerate it from the repository root with `{REGENERATE}`",
            first + 1,
            committed.lines().nth(first),
            generated.lines().nth(first),
        );
    }
}

#[test]
fn committed_crd_is_a_valid_v1_crd() {
    let crd: CustomResourceDefinition = serde_yaml::from_str(&committed())
        .expect("istio/crd.yaml is an apiextensions.k8s.io/v1 CRD");
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some("canarypolicies.mlcanary.io")
    );
    assert_eq!(crd.spec.group, "mlcanary.io");
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(crd.spec.names.kind, "CanaryPolicy");
    assert_eq!(crd.spec.names.plural, "canarypolicies");
    assert_eq!(
        crd.spec.names.short_names.as_deref(),
        Some(&["canary".to_owned()][..])
    );

    let [v] = &crd.spec.versions[..] else {
        panic!("expected one version, got {}", crd.spec.versions.len());
    };
    assert_eq!(v.name, "v1alpha1");
    assert!(v.served && v.storage);
    // The controller writes status through the subresource; without it a status patch is a 404.
    assert!(
        v.subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some(),
        "status subresource"
    );
    let columns: Vec<(&str, &str)> = v
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| (c.name.as_str(), c.json_path.as_str()))
        .collect();
    assert_eq!(
        columns,
        [
            ("Phase", ".status.phase"),
            ("Canary-bp", ".status.canaryWeightBp"),
            ("Failed", ".status.failedChecks"),
            ("Age", ".metadata.creationTimestamp"),
        ]
    );
    let schema = v
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("openAPIV3Schema");
    let props = schema.properties.as_ref().expect("top-level properties");
    assert!(props.contains_key("spec") && props.contains_key("status"));
    assert_eq!(schema.required.as_deref(), Some(&["spec".to_owned()][..]));
}
