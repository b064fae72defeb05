//! User-attribute rules: where a value comes from (header, cookie, query parameter) and how it is
//! matched (exact, prefix, anchored regex, one-of).

use regex_lite::Regex;

/// Where a rule reads its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A request header (lowercase name).
    Header(String),
    /// A cookie in the `cookie` header.
    Cookie(String),
    /// A query parameter of `:path` (raw, not percent-decoded).
    Query(String),
}

/// How a rule matches the value it read.
#[derive(Debug, Clone)]
pub enum Matcher {
    Exact(String),
    Prefix(String),
    /// Anchored at both ends when compiled.
    Regex(Regex),
    OneOf(Vec<String>),
}

impl Matcher {
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Matcher::Exact(e) => value == e,
            Matcher::Prefix(p) => value.starts_with(p.as_str()),
            Matcher::Regex(r) => r.is_match(value),
            Matcher::OneOf(list) => list.iter().any(|v| v == value),
        }
    }
}

/// A validated rule: a request whose `source` value `matcher` accepts goes to `variant`.
#[derive(Debug, Clone)]
pub struct Rule {
    pub source: Source,
    pub matcher: Matcher,
    /// Index into the policy's variants.
    pub variant: usize,
}

/// The value of cookie `name` in a `Cookie` header (RFC 6265 `a=b; c=d`), first one wins.
/// Quotes around a value are removed; nothing else is decoded. Never allocates.
pub fn cookie_value<'h>(header: &'h str, name: &str) -> Option<&'h str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        if k.trim() != name {
            return None;
        }
        let v = v.trim();
        Some(
            v.strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v),
        )
    })
}

/// The raw value of query parameter `name` in a request path (`/p?a=1&b=2`), first one wins.
/// A parameter present with no `=` reads as the empty string. Never allocates.
pub fn query_value<'p>(path: &'p str, name: &str) -> Option<&'p str> {
    let query = path.split_once('?')?.1;
    let query = query.split_once('#').map_or(query, |(q, _)| q);
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_by_exact_name() {
        let h = "a=1; mlcanary-uid=u42;b=\"q\" ; mlcanary-uid=second";
        assert_eq!(cookie_value(h, "mlcanary-uid"), Some("u42"));
        assert_eq!(cookie_value(h, "b"), Some("q"));
        assert_eq!(cookie_value(h, "a"), Some("1"));
        assert_eq!(cookie_value(h, "uid"), None);
        assert_eq!(cookie_value("", "a"), None);
        assert_eq!(cookie_value("novalue; a", "a"), None);
        assert_eq!(cookie_value("a=", "a"), Some(""));
    }

    #[test]
    fn query_parameters_are_found_by_exact_name() {
        let p = "/v1/models/fraud:predict?beta=1&tier=gold&flag#frag";
        assert_eq!(query_value(p, "tier"), Some("gold"));
        assert_eq!(query_value(p, "beta"), Some("1"));
        assert_eq!(query_value(p, "flag"), Some(""));
        assert_eq!(query_value(p, "frag"), None);
        assert_eq!(query_value("/no-query", "a"), None);
        assert_eq!(query_value("/p?tiers=x", "tier"), None);
    }

    #[test]
    fn matchers() {
        assert!(Matcher::Exact("beta".into()).matches("beta"));
        assert!(!Matcher::Exact("beta".into()).matches("beta2"));
        assert!(Matcher::Prefix("int-".into()).matches("int-7"));
        assert!(!Matcher::Prefix("int-".into()).matches("in"));
        let re = Matcher::Regex(Regex::new("^(?:tester-[0-9]+)$").unwrap()); // ok: test
        assert!(re.matches("tester-12"));
        assert!(!re.matches("xtester-12"));
        let one = Matcher::OneOf(vec!["a".into(), "b".into()]);
        assert!(one.matches("b") && !one.matches("c"));
    }
}
