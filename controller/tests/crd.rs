//! The committed `istio/crd.yaml` is the generated one, and it is a well-formed
//! `apiextensions.k8s.io/v1` CRD with what `kubectl` and the controller rely on.

mod support;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use mlcanary_controller::cli::crd_yaml;
use serde_json::Value;

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
    // `mlc`, not `canary`: Flagger's Canary CRD has that one.
    assert_eq!(
        crd.spec.names.short_names.as_deref(),
        Some(&["mlc".to_owned()][..])
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
    let columns: Vec<(&str, &str, &str)> = v
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| (c.name.as_str(), c.type_.as_str(), c.json_path.as_str()))
        .collect();
    assert_eq!(
        columns,
        [
            ("Status", "string", ".status.phase"),
            ("Weight (%)", "number", ".status.canaryWeightPercent"),
            ("Step", "string", ".status.step"),
            ("Failed", "integer", ".status.failedChecks"),
            ("Last transition", "date", ".status.lastTransitionTime"),
            ("Age", "date", ".metadata.creationTimestamp"),
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

/// The generated CRD as JSON.
fn generated() -> Value {
    serde_yaml::from_str(&crd_yaml().expect("the CRD encodes")).expect("the CRD is YAML")
}

fn status_schema(crd: &Value) -> &Value {
    &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
}

/// Every status column reads a field the schema has, of the column's type: the API server prunes
/// fields a structural schema does not declare, and a column on a pruned field is always empty.
#[test]
fn every_status_column_reads_a_declared_field_of_its_type() {
    let crd = generated();
    let status = status_schema(&crd);
    let mut checked = 0;
    for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array()
        .expect("printer columns")
    {
        let path = c["jsonPath"].as_str().unwrap_or_default();
        let Some(field) = path.strip_prefix(".status.") else {
            continue;
        };
        let prop = &status["properties"][field];
        let want = match c["type"].as_str() {
            Some("date") => "string",
            Some(t) => t,
            None => panic!("column {c} has no type"),
        };
        assert_eq!(prop["type"], want, "column {c}: field {field} is {prop}");
        checked += 1;
    }
    assert_eq!(checked, 5, "five status columns");
}

/// Why a description would read wrongly in `kubectl explain`: rustdoc link syntax, a Rust path,
/// Rust-only notation. `None` when it reads as plain words.
fn leak(description: &str) -> Option<&'static str> {
    if description.contains("[`") || description.contains("`]") || description.contains("](") {
        return Some("rustdoc link syntax");
    }
    if description.contains("::") {
        return Some("a Rust path");
    }
    // An intra-doc link without backticks: `[Name]` (a plain `[5, 10]` or `[low, high]` is fine).
    let mut rest = description;
    while let Some(open) = rest.find('[') {
        let after = &rest[open + 1..];
        let Some(close) = after.find(']') else { break };
        let inner = &after[..close];
        let ident = inner
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && inner.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if ident {
            return Some("rustdoc link syntax");
        }
        rest = &after[close..];
    }
    for word in ["..=", "Option<", "Vec<", "humantime", "crate", "Self"] {
        if description.contains(word) {
            return Some("Rust notation");
        }
    }
    None
}

#[test]
fn the_leak_check_catches_what_it_is_for() {
    for bad in [
        "The newest [`MAX_DIFFERENCES`] differences.",
        "See [Foo] for more.",
        "Runs once (see `reconcile::command`).",
        "Percent added per step (1..=100).",
        "Per attempt (humantime).",
        "See [the docs](https://example.com).",
    ] {
        assert!(leak(bad).is_some(), "{bad:?} passed");
    }
    for good in [
        "Explicit canary weights in percent, e.g. `[5, 10, 25, 50]`.",
        "The canary's value as an anytime-valid interval `[low, high]`.",
        "`--metric-labels-allowlist=pods=[mlcanary.io/subset]`",
        "Timeout of one attempt, a duration such as `10s`.",
    ] {
        assert_eq!(leak(good), None, "{good:?}");
    }
}

/// Every `description` under `node`, with its path, into `out`; `missing` collects the properties under
/// `spec` that have none (or an empty one).
fn walk(
    node: &Value,
    path: &str,
    in_spec: bool,
    out: &mut Vec<(String, String)>,
    missing: &mut Vec<String>,
) {
    let Some(map) = node.as_object() else { return };
    if let Some(d) = map.get("description").and_then(Value::as_str) {
        out.push((path.to_owned(), d.to_owned()));
    }
    if let Some(props) = map.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            let p = format!("{path}.{name}");
            let spec = in_spec || p == ".spec";
            let described = child
                .get("description")
                .and_then(Value::as_str)
                .is_some_and(|d| !d.trim().is_empty());
            if spec && !described {
                missing.push(p.clone());
            }
            walk(child, &p, spec, out, missing);
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = map.get(key) {
            walk(child, &format!("{path}[]"), in_spec, out, missing);
        }
    }
}

/// The CRD's descriptions are what `kubectl explain` shows: the project's plain words, not
/// rustdoc. Every spec field has one.
#[test]
fn descriptions_read_as_plain_words_and_every_spec_field_has_one() {
    let crd = generated();
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let (mut all, mut missing) = (Vec::new(), Vec::new());
    walk(schema, "", false, &mut all, &mut missing);
    assert!(all.len() > 100, "only {} descriptions found", all.len());
    let leaks: Vec<String> = all
        .iter()
        .filter_map(|(p, d)| leak(d).map(|why| format!("{p}: {why}: {d:?}")))
        .collect();
    assert!(
        leaks.is_empty(),
        "descriptions leaking Rust:\n{}",
        leaks.join("\n")
    );
    assert!(
        missing.is_empty(),
        "spec fields without a description:\n{}",
        missing.join("\n")
    );
    // The walk reaches nested spec fields (not vacuous).
    assert!(all
        .iter()
        .any(|(p, _)| p == ".spec.analysis.checks[].latency.maxMs"));
}
