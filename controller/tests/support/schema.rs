//! A structural OpenAPI v3 check of objects against CRD schemas: every field must be declared with a
//! matching type (what the API server would prune or reject), required fields present, enums and
//! maxima respected. Not a full validator (no CEL, no `oneOf`), but it catches misspelt fields,
//! wrong nesting and wrong types, which is what hand-written manifests and rendered objects get wrong.
//!
//! Shared by the integration tests (`mod support;`) and the crate's unit tests (`#[path]` include
//! from `src/render/tests.rs`), so there is one checker.
#![allow(dead_code)]

use std::path::PathBuf;

use serde_json::Value;

/// Istio's generated CRD file: `$MLCANARY_ISTIO_CRDS`, else `<workspace>/../shared/istio/crds.gen.yaml`.
pub fn istio_crds_path() -> PathBuf {
    std::env::var_os("MLCANARY_ISTIO_CRDS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../shared/istio/crds.gen.yaml"
            ))
        })
}

/// Every YAML document of `text` as JSON (empty documents skipped).
pub fn yaml_documents(text: &str) -> Result<Vec<Value>, serde_yaml::Error> {
    let mut docs = Vec::new();
    for de in serde_yaml::Deserializer::from_str(text) {
        let doc: Value = serde::Deserialize::deserialize(de)?;
        if !doc.is_null() {
            docs.push(doc);
        }
    }
    Ok(docs)
}

/// The `openAPIV3Schema` of `kind` at `version` among the CRDs in `crds`.
pub fn schema_in(crds: &[Value], kind: &str, version: &str) -> Option<Value> {
    crds.iter()
        .filter(|d| d.pointer("/spec/names/kind").and_then(Value::as_str) == Some(kind))
        .flat_map(|d| {
            d["spec"]["versions"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .find(|v| v["name"] == version)
        .map(|v| v["schema"]["openAPIV3Schema"].clone())
}

/// The schema of an Istio kind from the shared CRD file; panics with the path when missing.
pub fn istio_schema(kind: &str, version: &str) -> Value {
    let path = istio_crds_path();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (set MLCANARY_ISTIO_CRDS)", path.display()));
    let crds = yaml_documents(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    schema_in(&crds, kind, version)
        .unwrap_or_else(|| panic!("{kind} {version} not in {}", path.display()))
}

/// `Ok` when `value` conforms to `schema`; else the path of the first offending field.
pub fn conforms(value: &Value, schema: &Value, path: &str) -> Result<(), String> {
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true))
        && schema.get("properties").is_none()
    {
        return Ok(());
    }
    if value.is_null() {
        return if schema.get("nullable") == Some(&Value::Bool(true)) {
            Ok(())
        } else {
            Err(format!("{path}: null is not allowed"))
        };
    }
    let ty = schema.get("type").and_then(Value::as_str);
    let ok = match (ty, value) {
        (None, _) => true,
        (Some("object"), Value::Object(_)) | (Some("array"), Value::Array(_)) => true,
        (Some("string"), Value::String(_)) | (Some("boolean"), Value::Bool(_)) => true,
        (Some("integer"), Value::Number(n)) => n.is_i64() || n.is_u64(),
        (Some("number"), Value::Number(_)) => true,
        _ => false,
    };
    if !ok {
        return Err(format!("{path}: {value} is not {ty:?}"));
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            return Err(format!("{path}: {value} is not one of {allowed:?}"));
        }
    }
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
        if value.as_f64().is_some_and(|v| v > max) {
            return Err(format!("{path}: above maximum {max}"));
        }
    }
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
        if value.as_f64().is_some_and(|v| v < min) {
            return Err(format!("{path}: below minimum {min}"));
        }
    }
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let sub = schema
                    .pointer(&format!("/properties/{k}"))
                    .or_else(|| schema.get("additionalProperties").filter(|a| a.is_object()))
                    .ok_or_else(|| format!("{path}.{k}: not in the schema"))?;
                conforms(v, sub, &format!("{path}.{k}"))?;
            }
            for r in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let r = r.as_str().unwrap_or_default();
                if !map.contains_key(r) {
                    return Err(format!("{path}.{r}: required"));
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                conforms(v, &schema["items"], &format!("{path}[{i}]"))?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// A Kubernetes object against its CRD schema: `metadata` is the API server's (not in the CRD's
/// schema), so it is checked for a name only; `apiVersion` and `kind` are checked by the caller.
pub fn object_conforms(obj: &Value, schema: &Value) -> Result<(), String> {
    let mut body = obj.clone();
    let map = body
        .as_object_mut()
        .ok_or_else(|| "not a mapping".to_owned())?;
    let meta = map
        .remove("metadata")
        .ok_or_else(|| "metadata: required".to_owned())?;
    if meta.get("name").and_then(Value::as_str).is_none() {
        return Err("metadata.name: required".into());
    }
    map.remove("apiVersion");
    map.remove("kind");
    conforms(&body, schema, "")
}
