//! Policies from a YAML file (local mode, `mlcanary validate`): one full `CanaryPolicy` object or
//! several separated by `---`, exactly as `kubectl apply -f` would take them.

use std::path::Path;

use serde::Deserialize;
use thiserror::Error;

use super::CanaryPolicy;
use super::{ValidatedPolicy, ValidationError};

const API_VERSION: &str = "mlcanary.io/v1alpha1";
const KIND: &str = "CanaryPolicy";

/// Why a policy file was refused.
#[derive(Debug, Error)]
pub enum FileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("document {doc}: not YAML for a CanaryPolicy: {reason}")]
    Yaml { doc: usize, reason: String },
    #[error("document {doc}: {field}: {reason}")]
    Shape {
        doc: usize,
        field: &'static str,
        reason: String,
    },
    #[error("document {doc} ({name}): {source}")]
    Invalid {
        doc: usize,
        name: String,
        source: ValidationError,
    },
    #[error("the file holds no CanaryPolicy")]
    Empty,
}

/// Parse every `CanaryPolicy` document in `text` (empty documents are skipped). Documents are
/// numbered from 1 in errors.
pub fn parse_policies(text: &str) -> Result<Vec<CanaryPolicy>, FileError> {
    let mut out = Vec::new();
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let doc = i + 1;
        let value = serde_yaml::Value::deserialize(de).map_err(|e| FileError::Yaml {
            doc,
            reason: e.to_string(),
        })?;
        if value.is_null() {
            continue;
        }
        let field_str = |k: &str| {
            value
                .get(k)
                .and_then(serde_yaml::Value::as_str)
                .map(str::to_owned)
        };
        match field_str("apiVersion") {
            Some(v) if v == API_VERSION => {}
            other => {
                return Err(FileError::Shape {
                    doc,
                    field: "apiVersion",
                    reason: format!("{other:?} is not {API_VERSION:?}"),
                })
            }
        }
        match field_str("kind") {
            Some(k) if k == KIND => {}
            other => {
                return Err(FileError::Shape {
                    doc,
                    field: "kind",
                    reason: format!("{other:?} is not {KIND:?}"),
                })
            }
        }
        let policy: CanaryPolicy = serde_yaml::from_value(value).map_err(|e| FileError::Yaml {
            doc,
            reason: e.to_string(),
        })?;
        out.push(policy);
    }
    if out.is_empty() {
        return Err(FileError::Empty);
    }
    Ok(out)
}

/// Parse and validate every policy in `text`; the first invalid one is the error.
pub fn validate_policies(text: &str) -> Result<Vec<(CanaryPolicy, ValidatedPolicy)>, FileError> {
    parse_policies(text)?
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let v = ValidatedPolicy::try_from(&p).map_err(|source| FileError::Invalid {
                doc: i + 1,
                name: p.metadata.name.clone().unwrap_or_default(),
                source,
            })?;
            Ok((p, v))
        })
        .collect()
}

/// Read, parse and validate a policy file.
pub fn load(path: &Path) -> Result<Vec<(CanaryPolicy, ValidatedPolicy)>, FileError> {
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
        path: path.display().to_string(),
        source,
    })?;
    validate_policies(&text)
}
