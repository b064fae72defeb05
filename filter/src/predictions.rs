//! Reading the model's answers: prediction scores from TF Serving REST `:predict` replies and
//! KServe v2 (Open Inference Protocol) replies. Pure: bytes in, scores out.
//!
//! Accepted shapes, per instance of a batch:
//! - TF Serving row format `{"predictions": [...]}` and columnar `{"outputs": [...] | {name: [...]}}`;
//!   an instance is a number `p`, `[p]`, class scores `[p0, p1, ...]` (the configured
//!   `class_index`, default 1 for two classes), or an object whose configured `output` holds one
//!   of those;
//! - KServe v2 `{"outputs": [{"name", "shape", "datatype", "data"}]}`: the configured output (or
//!   the first), `data` flat or nested, one score per row (`shape[1..]` = 1, or 2 with
//!   `class_index`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Which reply format to expect.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// TF Serving if the reply has `predictions`, KServe v2 if `outputs` is a list of tensors.
    #[default]
    Auto,
    Tfserving,
    Kserve,
}

/// Why a body gave no scores. Fixed strings: they end up in logs, never in metric names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    TooLarge,
    Compressed,
    NotJson,
    NoPredictions,
    BadShape,
}

impl BodyError {
    pub fn label(self) -> &'static str {
        match self {
            BodyError::TooLarge => "too_large",
            BodyError::Compressed => "compressed",
            BodyError::NotJson => "not_json",
            BodyError::NoPredictions => "no_predictions",
            BodyError::BadShape => "bad_shape",
        }
    }
}

/// How to find the score in a reply (validated form of the config's `predictions`).
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreSpec {
    pub format: Format,
    /// Named output (object predictions, columnar outputs, KServe tensor name).
    pub output: Option<String>,
    /// Which class score is "the" score in a class-score vector.
    pub class_index: Option<usize>,
}

/// The scores of every instance in `body`, in order.
pub fn scores(spec: &ScoreSpec, body: &[u8]) -> Result<Vec<f64>, BodyError> {
    let v: Value = serde_json::from_slice(body).map_err(|_| BodyError::NotJson)?;
    let obj = v.as_object().ok_or(BodyError::NoPredictions)?;
    let kserve_like = obj
        .get("outputs")
        .and_then(Value::as_array)
        .is_some_and(|a| a.first().is_some_and(|t| t.get("data").is_some()));
    match spec.format {
        Format::Kserve => kserve(spec, obj.get("outputs").ok_or(BodyError::NoPredictions)?),
        Format::Auto if kserve_like && !obj.contains_key("predictions") => {
            kserve(spec, &obj["outputs"])
        }
        Format::Auto | Format::Tfserving => {
            if let Some(p) = obj.get("predictions") {
                instances(spec, p)
            } else if let Some(o) = obj.get("outputs") {
                // Columnar: either the instances themselves or a map of named outputs.
                match (o, &spec.output) {
                    (Value::Object(m), Some(name)) => {
                        instances(spec, m.get(name).ok_or(BodyError::NoPredictions)?)
                    }
                    (Value::Object(_), None) => Err(BodyError::BadShape),
                    _ => instances(spec, o),
                }
            } else {
                Err(BodyError::NoPredictions)
            }
        }
    }
}

fn instances(spec: &ScoreSpec, v: &Value) -> Result<Vec<f64>, BodyError> {
    match v {
        Value::Array(items) => items.iter().map(|i| instance(spec, i)).collect(),
        // A single unbatched answer.
        other => instance(spec, other).map(|s| vec![s]),
    }
}

fn instance(spec: &ScoreSpec, v: &Value) -> Result<f64, BodyError> {
    match v {
        Value::Number(n) => n
            .as_f64()
            .filter(|f| f.is_finite())
            .ok_or(BodyError::BadShape),
        Value::Array(a) => {
            let idx = match (a.len(), spec.class_index) {
                (0, _) => return Err(BodyError::BadShape),
                (1, _) => 0,
                (_, Some(i)) => i,
                (2, None) => 1,
                _ => return Err(BodyError::BadShape),
            };
            a.get(idx)
                .and_then(Value::as_f64)
                .filter(|f| f.is_finite())
                .ok_or(BodyError::BadShape)
        }
        Value::Object(m) => {
            let name = spec.output.as_deref().ok_or(BodyError::BadShape)?;
            instance(spec, m.get(name).ok_or(BodyError::BadShape)?)
        }
        _ => Err(BodyError::BadShape),
    }
}

fn kserve(spec: &ScoreSpec, outputs: &Value) -> Result<Vec<f64>, BodyError> {
    let outputs = outputs.as_array().ok_or(BodyError::NoPredictions)?;
    let tensor = match &spec.output {
        Some(name) => outputs
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some(name)),
        None => outputs.first(),
    }
    .ok_or(BodyError::NoPredictions)?;
    let mut flat = Vec::new();
    flatten(
        tensor.get("data").ok_or(BodyError::NoPredictions)?,
        &mut flat,
    )?;
    let width: usize = match tensor.get("shape").and_then(Value::as_array) {
        Some(shape) if shape.len() > 1 => shape[1..]
            .iter()
            .map(|d| d.as_u64().unwrap_or(0) as usize)
            .product(),
        _ => 1,
    };
    let idx = match (width, spec.class_index) {
        (0, _) => return Err(BodyError::BadShape),
        (1, _) => 0,
        (_, Some(i)) if i < width => i,
        (2, None) => 1,
        _ => return Err(BodyError::BadShape),
    };
    if flat.len() % width != 0 {
        return Err(BodyError::BadShape);
    }
    Ok(flat.chunks(width).map(|row| row[idx]).collect())
}

fn flatten(v: &Value, out: &mut Vec<f64>) -> Result<(), BodyError> {
    match v {
        Value::Array(a) => a.iter().try_for_each(|x| flatten(x, out)),
        Value::Number(n) => {
            out.push(
                n.as_f64()
                    .filter(|f| f.is_finite())
                    .ok_or(BodyError::BadShape)?,
            );
            Ok(())
        }
        Value::Bool(b) => {
            out.push(if *b { 1.0 } else { 0.0 });
            Ok(())
        }
        _ => Err(BodyError::BadShape),
    }
}

/// A score as the integer Envoy's histogram records: per mille, clamped to [0, 1000].
pub fn per_mille(score: f64) -> u64 {
    (score.clamp(0.0, 1.0) * 1000.0).round() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(format: Format, output: Option<&str>, class_index: Option<usize>) -> ScoreSpec {
        ScoreSpec {
            format,
            output: output.map(Into::into),
            class_index,
        }
    }

    fn auto() -> ScoreSpec {
        spec(Format::Auto, None, None)
    }

    #[test]
    fn tf_serving_row_format_shapes() {
        assert_eq!(
            scores(&auto(), br#"{"predictions": [0.1, 0.9]}"#),
            Ok(vec![0.1, 0.9])
        );
        assert_eq!(
            scores(&auto(), br#"{"predictions": [[0.2], [0.7]]}"#),
            Ok(vec![0.2, 0.7])
        );
        assert_eq!(
            scores(&auto(), br#"{"predictions": [[0.8, 0.2], [0.3, 0.7]]}"#),
            Ok(vec![0.2, 0.7])
        );
        let s = spec(Format::Tfserving, None, Some(0));
        assert_eq!(
            scores(&s, br#"{"predictions": [[0.8, 0.2]]}"#),
            Ok(vec![0.8])
        );
        let s = spec(Format::Tfserving, Some("fraud_prob"), None);
        let body =
            br#"{"predictions": [{"fraud_prob": 0.6, "label": "x"}, {"fraud_prob": [0.4]}]}"#;
        assert_eq!(scores(&s, body), Ok(vec![0.6, 0.4]));
        // Three classes need an explicit index.
        assert_eq!(
            scores(&auto(), br#"{"predictions": [[0.1, 0.2, 0.7]]}"#),
            Err(BodyError::BadShape)
        );
        assert_eq!(
            scores(
                &spec(Format::Auto, None, Some(2)),
                br#"{"predictions": [[0.1, 0.2, 0.7]]}"#
            ),
            Ok(vec![0.7])
        );
    }

    #[test]
    fn tf_serving_columnar_format() {
        assert_eq!(
            scores(&auto(), br#"{"outputs": [0.3, 0.4]}"#),
            Ok(vec![0.3, 0.4])
        );
        let s = spec(Format::Tfserving, Some("prob"), None);
        assert_eq!(
            scores(&s, br#"{"outputs": {"prob": [[0.5], [0.6]], "x": 1}}"#),
            Ok(vec![0.5, 0.6])
        );
    }

    #[test]
    fn kserve_v2_tensors() {
        let body = br#"{"model_name": "fraud", "outputs": [
            {"name": "label", "shape": [2], "datatype": "INT64", "data": [0, 1]},
            {"name": "probs", "shape": [2, 2], "datatype": "FP32", "data": [0.9, 0.1, 0.25, 0.75]}]}"#;
        assert_eq!(scores(&auto(), body), Ok(vec![0.0, 1.0]));
        let s = spec(Format::Kserve, Some("probs"), None);
        assert_eq!(scores(&s, body), Ok(vec![0.1, 0.75]));
        let nested = br#"{"outputs": [{"name": "p", "shape": [2, 1], "datatype": "FP32", "data": [[0.3], [0.4]]}]}"#;
        assert_eq!(scores(&auto(), nested), Ok(vec![0.3, 0.4]));
        let ragged = br#"{"outputs": [{"name": "p", "shape": [2, 2], "data": [0.3, 0.4, 0.5]}]}"#;
        assert_eq!(scores(&auto(), ragged), Err(BodyError::BadShape));
    }

    #[test]
    fn bad_bodies_are_errors_not_panics() {
        assert_eq!(scores(&auto(), b"not json"), Err(BodyError::NotJson));
        assert_eq!(scores(&auto(), b""), Err(BodyError::NotJson));
        assert_eq!(scores(&auto(), b"[1, 2]"), Err(BodyError::NoPredictions));
        assert_eq!(
            scores(&auto(), br#"{"error": "model not found"}"#),
            Err(BodyError::NoPredictions)
        );
        assert_eq!(
            scores(&auto(), br#"{"predictions": [[]]}"#),
            Err(BodyError::BadShape)
        );
        assert_eq!(
            scores(&auto(), br#"{"predictions": ["a"]}"#),
            Err(BodyError::BadShape)
        );
        assert_eq!(
            scores(&auto(), br#"{"predictions": [{"p": 1}]}"#),
            Err(BodyError::BadShape)
        );
        assert_eq!(scores(&auto(), br#"{"predictions": []}"#), Ok(vec![]));
    }

    #[test]
    fn scores_scale_to_per_mille() {
        assert_eq!(per_mille(0.0), 0);
        assert_eq!(per_mille(0.4567), 457);
        assert_eq!(per_mille(1.0), 1000);
        assert_eq!(per_mille(7.0), 1000);
        assert_eq!(per_mille(-1.0), 0);
    }
}
