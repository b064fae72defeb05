//! A small, forgiving parser of the Prometheus text exposition format (what Envoy's admin
//! `/stats/prometheus` serves): `# TYPE`/`# HELP` lines, samples with optional labels (escaped `\\`,
//! `\"`, `\n`), `+Inf`/`-Inf`/`NaN` values and an optional timestamp. A malformed line is skipped and
//! counted, never fatal: one odd stat must not blind the controller to the rest.

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The value of label `name`.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Everything parsed from one scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exposition {
    pub samples: Vec<Sample>,
    /// `(family, type)` from `# TYPE` lines.
    pub types: Vec<(String, String)>,
    /// Lines that could not be parsed.
    pub skipped: usize,
}

/// Parse a whole exposition.
pub fn parse(text: &str) -> Exposition {
    let mut out = Exposition::default();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let mut parts = rest.split_whitespace();
            if parts.next() == Some("TYPE") {
                if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                    out.types.push((name.to_owned(), kind.to_owned()));
                }
            }
            continue;
        }
        match parse_sample(line) {
            Some(s) => out.samples.push(s),
            None => out.skipped += 1,
        }
    }
    out
}

fn is_name_char(c: char, first: bool) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':' || (!first && c.is_ascii_digit())
}

/// Parse one sample line; `None` when malformed.
pub fn parse_sample(line: &str) -> Option<Sample> {
    let name_end = line
        .char_indices()
        .find(|&(i, c)| !is_name_char(c, i == 0))
        .map_or(line.len(), |(i, _)| i);
    if name_end == 0 {
        return None;
    }
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(r)?;
        labels = parsed;
        rest = after;
    }
    let mut fields = rest.split_whitespace();
    let value = parse_value(fields.next()?)?;
    // An optional integer timestamp; anything else after it is malformed.
    if let Some(ts) = fields.next() {
        ts.parse::<i64>().ok()?;
    }
    if fields.next().is_some() {
        return None;
    }
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Labels after the `{`; returns them and the text after the closing `}`.
fn parse_labels(mut s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start();
        if let Some(after) = s.strip_prefix('}') {
            return Some((labels, after));
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim();
        if key.is_empty()
            || !key
                .chars()
                .enumerate()
                .all(|(i, c)| is_name_char(c, i == 0))
        {
            return None;
        }
        s = s[eq + 1..].trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()? {
                    (_, 'n') => value.push('\n'),
                    (_, c) => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((key.to_owned(), value));
        s = s[end + 1..].trim_start();
        if let Some(after) = s.strip_prefix(',') {
            s = after;
        } else if !s.starts_with('}') {
            return None;
        }
    }
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_histograms_and_escapes() {
        let text = r#"# TYPE mlcanary_requests_total counter
mlcanary_requests_total{policy_namespace="ml",policy="fraud-model",variant="canary"} 42
# HELP x help text with {braces}
weird{a="q\"uo\\te",b="line\nbreak",} 1.5e3 1700000000000
mlcanary_request_duration_ms_bucket{policy="p",variant="v",le="+Inf"} 7
no_labels 3
"#;
        let e = parse(text);
        assert_eq!(e.skipped, 0);
        assert_eq!(
            e.types,
            vec![("mlcanary_requests_total".into(), "counter".into())]
        );
        assert_eq!(e.samples.len(), 4);
        assert_eq!(e.samples[0].label("variant"), Some("canary"));
        assert_eq!(e.samples[0].value, 42.0);
        assert_eq!(e.samples[1].label("a"), Some("q\"uo\\te"));
        assert_eq!(e.samples[1].label("b"), Some("line\nbreak"));
        assert_eq!(e.samples[1].value, 1500.0);
        assert_eq!(e.samples[2].label("le"), Some("+Inf"));
        assert_eq!(e.samples[3].labels, vec![]);
    }

    #[test]
    fn malformed_lines_are_skipped_and_counted() {
        let text = "ok 1\n{x=\"y\"} 1\nbad{x=\"y} 1\nbad2{x=y} 1\nnovalue\nbad3 1 2 3\nbad4 abc\nok2 +Inf\n";
        let e = parse(text);
        assert_eq!(
            e.samples
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>(),
            ["ok", "ok2"]
        );
        assert_eq!(e.skipped, 6);
        assert_eq!(e.samples[1].value, f64::INFINITY);
    }
}
