//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod images;
pub mod schema;
pub mod shell;

use std::path::PathBuf;

/// The repository root (the workspace).
pub fn repo_root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}
