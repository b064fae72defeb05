//! The status page's files, compiled into the binary with `include_str!`: the controller serves
//! them itself, so the page works with no internet and no build step.

/// `GET /`.
pub const INDEX_HTML: &str = include_str!("assets/index.html");
/// `GET /ui/app.js`: polling, rendering and the SVG charts.
pub const APP_JS: &str = include_str!("assets/app.js");
/// `GET /ui/app.css`.
pub const APP_CSS: &str = include_str!("assets/app.css");

/// The asset at `path` with its content type.
pub fn asset(path: &str) -> Option<(&'static str, &'static str)> {
    match path {
        "/" | "/index.html" => Some(("text/html; charset=utf-8", INDEX_HTML)),
        "/ui/app.js" => Some(("text/javascript; charset=utf-8", APP_JS)),
        "/ui/app.css" => Some(("text/css; charset=utf-8", APP_CSS)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_assets() {
        // Every script and stylesheet the page names is served here, and nothing comes from
        // another origin (the page must work with no internet).
        for needed in ["/ui/app.js", "/ui/app.css"] {
            assert!(INDEX_HTML.contains(needed), "{needed}");
            assert!(asset(needed).is_some(), "{needed}");
        }
        for text in [INDEX_HTML, APP_JS, APP_CSS] {
            assert!(!text.contains("http://"), "absolute URL in an asset");
            assert!(!text.contains("https://"), "absolute URL in an asset");
            assert!(!text.contains("//cdn"), "CDN in an asset");
        }
        assert_eq!(asset("/").map(|a| a.0), Some("text/html; charset=utf-8"));
        assert_eq!(asset("/ui/other.js"), None);
    }
}
