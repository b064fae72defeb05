//! The images the project builds, by the names its recipes, manifests and examples use. Every tag
//! is the controller crate's version, so a release bumps them together.
#![allow(dead_code)]

/// The controller (`deploy/Dockerfile`, last stage).
pub const CONTROLLER: &str = "ghcr.io/mlcanary/mlcanary";
/// What pipelines run (`deploy/Dockerfile --target cli`): sh, kubectl, mlcanary.
pub const CLI: &str = "ghcr.io/mlcanary/mlcanary-cli";
/// The Wasm filter (`deploy/wasm-image/Dockerfile`).
pub const FILTER: &str = "ghcr.io/mlcanary/mlcanary-filter";

/// `version` of `[package]` in controller/Cargo.toml.
pub fn version() -> String {
    let text = std::fs::read_to_string(super::repo_root().join("controller/Cargo.toml"))
        .expect("controller/Cargo.toml");
    let mut in_package = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if let Some(v) = line.strip_prefix("version") {
            if in_package {
                if let Some(v) = v.trim().strip_prefix('=') {
                    return v.trim().trim_matches('"').to_owned();
                }
            }
        }
    }
    panic!("controller/Cargo.toml has no [package] version");
}

/// `repo:<version>`.
pub fn tagged(repo: &str) -> String {
    format!("{repo}:{}", version())
}
