//! `mlcanary-core` stays plain code: no I/O crate among its dependencies (direct or not), no
//! filesystem, network, process or clock call in its sources, and its modules import each other in
//! one direction only.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Crates that do I/O or bring a runtime; none may be reachable from the core.
const EXCLUDED: &[&str] = &[
    "kube",
    "kube-client",
    "kube-runtime",
    "k8s-openapi",
    "tokio",
    "reqwest",
    "hyper",
    "hyper-util",
    "tower",
    "rustls",
    "mio",
    "socket2",
    "prometheus-http-query",
    "tracing",
];

/// Every package reachable from `package` through normal (not dev, not build) dependencies, on
/// this platform, as `cargo tree` resolves them from the lock file.
fn normal_closure(package: &str) -> BTreeSet<String> {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
            "-p",
            package,
        ])
        .arg("--manifest-path")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("UTF-8")
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn no_io_crate_is_a_dependency() {
    let deps = normal_closure("mlcanary-core");
    assert!(
        deps.contains("mlcanary-filter"),
        "the closure is real: {deps:?}"
    );
    let bad: Vec<&&str> = EXCLUDED.iter().filter(|c| deps.contains(**c)).collect();
    assert!(bad.is_empty(), "mlcanary-core depends on {bad:?}");
    // The check can fail: the controller's closure has them.
    let controller = normal_closure("mlcanary-controller");
    assert!(controller.contains("kube") && controller.contains("tokio"));
}

/// The core's source files, tests and fixtures excepted (they may read fixture files).
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if p.is_dir() {
            sources(&p, out);
        } else if name.ends_with(".rs")
            && name != "tests.rs"
            && !name.ends_with("_tests.rs")
            && name != "fixtures.rs"
        {
            out.push(p);
        }
    }
}

/// The text of a file without its `#[cfg(test)] mod tests { .. }` tail.
fn non_test_text(p: &Path) -> String {
    let text = std::fs::read_to_string(p).unwrap();
    match text.find("#[cfg(test)]\nmod tests {") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn no_filesystem_network_process_or_clock() {
    let mut files = Vec::new();
    sources(&src_dir(), &mut files);
    assert!(files.len() > 10, "{files:?}");
    for p in files {
        let text = non_test_text(&p);
        for banned in [
            "std::fs",
            "std::net",
            "std::process",
            "std::env",
            "std::thread",
            "SystemTime::now",
            "Instant::now",
        ] {
            assert!(
                !text.contains(banned),
                "{} uses {banned}: the core takes values, the controller does I/O",
                p.display()
            );
        }
    }
}
/// `crate::<module>` paths a file names (its own top-level module excluded).
fn imports(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.insert(name);
        }
    }
    out
}

#[test]
fn modules_import_in_one_direction() {
    // Top-level module → the modules it may import: a strict order, so no circle is possible.
    let order = [
        "window",
        "weights",
        "policy",
        "analysis",
        "rollout",
        "lifecycle",
        "events",
        "webhooks",
        "render",
    ];
    let mut files = Vec::new();
    sources(&src_dir(), &mut files);
    for p in files {
        let rel = p.strip_prefix(src_dir()).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        if top == "lib" {
            continue;
        }
        let rank = order
            .iter()
            .position(|m| *m == top)
            .unwrap_or_else(|| panic!("{top}: add the module to the order in this test"));
        for m in imports(&non_test_text(&p)) {
            if m == top || m == "fixtures" {
                continue;
            }
            let r = order
                .iter()
                .position(|o| *o == m)
                .unwrap_or_else(|| panic!("{}: unknown module crate::{m}", rel.display()));
            assert!(
                r < rank,
                "{} ({top}) imports crate::{m}: imports run {order:?}, left to right",
                rel.display()
            );
        }
    }
}
