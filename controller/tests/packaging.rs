//! The image recipes in `deploy/` point at things that exist: the controller Dockerfile builds the
//! real package and binary and runs as the UID the Deployment expects; its `cli` stage holds what
//! pipelines run (a shell, a checksum-pinned kubectl, that same binary), non-root; the Wasm image copies the
//! module the filter crate really produces into the `plugin.wasm` layout Istio pulls; and the image
//! references in the manifests and the README agree. (Images cannot be built here; this keeps the
//! recipes honest.)

mod support;

use std::path::Path;

use serde_json::Value;
use support::schema::yaml_documents;

use support::images;

const CONTROLLER_IMAGE: &str = "ghcr.io/mlcanary/mlcanary:0.1.0";
const FILTER_IMAGE: &str = "ghcr.io/mlcanary/mlcanary-filter:0.1.0";
const CLI_IMAGE: &str = "ghcr.io/mlcanary/mlcanary-cli:0.1.0";

fn read(rel: &str) -> String {
    let p = support::repo_root().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Dockerfile instructions (comments dropped, continuation lines joined).
fn instructions(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && cur.is_empty()) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(part) => {
                cur.push_str(part.trim());
                cur.push(' ');
            }
            None => {
                cur.push_str(t);
                if !cur.trim().is_empty() {
                    out.push(cur.trim().to_owned());
                }
                cur.clear();
            }
        }
    }
    out
}

/// The value of `key = "..."` in the TOML `section` (first match).
fn toml_value(text: &str, section: &str, key: &str) -> Option<String> {
    let mut inside = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            inside = t == section;
            continue;
        }
        if inside {
            if let Some((k, v)) = t.split_once('=') {
                if k.trim() == key {
                    return Some(v.trim().trim_matches('"').to_owned());
                }
            }
        }
    }
    None
}

fn version_tuple(v: &str) -> (u32, u32) {
    // "1.89-bookworm AS build" → (1, 89)
    let v: String = v
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let mut it = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

#[test]
fn the_controller_image_builds_the_real_binary_and_runs_non_root() {
    let df = instructions(&read("deploy/Dockerfile"));
    let cargo = read("controller/Cargo.toml");
    let package = toml_value(&cargo, "[package]", "name").unwrap();
    let bin = toml_value(&cargo, "[[bin]]", "name").unwrap();
    let build = df
        .iter()
        .find(|i| i.starts_with("RUN") && i.contains("cargo build"))
        .expect("a cargo build step");
    assert!(build.contains(&format!("-p {package}")), "{build}");
    assert!(build.contains(&format!("--bin {bin}")), "{build}");
    assert!(build.contains("--release"), "{build}");
    assert!(
        build.contains(&format!("target/release/{bin}")),
        "copies the binary cargo wrote: {build}"
    );

    // The builder is new enough for the crate's rust-version.
    let from_rust = df
        .iter()
        .find(|i| i.starts_with("FROM") && i.contains("rust:"))
        .expect("a rust builder stage");
    let tag = from_rust.split("rust:").nth(1).unwrap();
    let want = toml_value(&cargo, "[package]", "rust-version").unwrap();
    assert!(
        version_tuple(tag) >= version_tuple(&want),
        "{from_rust}: crate needs {want}"
    );

    // Multi-stage: the last stage is a small runtime image holding only the binary.
    let froms: Vec<&String> = df.iter().filter(|i| i.starts_with("FROM")).collect();
    assert!(froms.len() >= 2, "multi-stage: {froms:?}");
    assert!(froms.last().unwrap().contains("distroless"), "{froms:?}");
    let last_stage = df
        .iter()
        .skip_while(|i| *i != *froms.last().unwrap())
        .collect::<Vec<_>>();
    let copies: Vec<_> = last_stage
        .iter()
        .filter(|i| i.starts_with("COPY"))
        .collect();
    assert_eq!(copies.len(), 1, "only the binary: {copies:?}");
    let dest = copies[0].split_whitespace().last().unwrap();
    assert!(dest.ends_with(&format!("/{bin}")), "{dest}");
    let entry = last_stage
        .iter()
        .find(|i| i.starts_with("ENTRYPOINT"))
        .expect("ENTRYPOINT");
    assert!(entry.contains(dest), "{entry} runs {dest}");

    // Non-root, the UID the Deployment's securityContext pins.
    let user = last_stage
        .iter()
        .find(|i| i.starts_with("USER"))
        .expect("USER");
    let uid: i64 = user
        .trim_start_matches("USER")
        .trim()
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("numeric UID (runAsNonRoot needs one)");
    assert_ne!(uid, 0);
    let deploy = yaml_documents(&read("istio/controller.yaml")).unwrap();
    let pod = &deploy[0]["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsUser"], Value::from(uid));
    assert_eq!(pod["containers"][0]["image"], CONTROLLER_IMAGE);
}

/// The stages of a Dockerfile: (the `FROM` line, the instructions after it).
fn stages(df: &[String]) -> Vec<(&str, Vec<&str>)> {
    let mut out: Vec<(&str, Vec<&str>)> = Vec::new();
    for i in df {
        if i.starts_with("FROM") {
            out.push((i, Vec::new()));
        } else if let Some((_, body)) = out.last_mut() {
            body.push(i);
        }
    }
    out
}

/// The numeric UID of the stage's last `USER`.
fn stage_uid(body: &[&str]) -> i64 {
    let user = body
        .iter()
        .rev()
        .find(|i| i.starts_with("USER"))
        .expect("USER");
    user.trim_start_matches("USER")
        .trim()
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("numeric UID (runAsNonRoot needs one)")
}

#[test]
fn the_image_tags_are_the_crate_version() {
    assert_eq!(CONTROLLER_IMAGE, images::tagged(images::CONTROLLER));
    assert_eq!(FILTER_IMAGE, images::tagged(images::FILTER));
    assert_eq!(CLI_IMAGE, images::tagged(images::CLI));
}

#[test]
fn the_cli_image_has_a_shell_a_pinned_kubectl_and_the_built_binary_non_root() {
    let text = read("deploy/Dockerfile");
    let df = instructions(&text);
    let stages = stages(&df);
    let at = stages
        .iter()
        .position(|(from, _)| from.to_ascii_lowercase().ends_with(" as cli"))
        .expect("a stage `AS cli`");
    // A plain `docker build` (the last stage) must still be the controller.
    assert!(at + 1 < stages.len(), "cli is not the last stage");
    let (from, body) = &stages[at];

    // A shell: a Debian base (not distroless or scratch), and no SHELL pointing elsewhere.
    let base = from.split_whitespace().nth(1).unwrap();
    assert!(
        base.contains("debian:") && base.contains("-slim"),
        "slim Debian: {from}"
    );
    assert!(!body.iter().any(|i| i.starts_with("SHELL")), "{body:?}");
    // The same Debian release as the rust builder, whose glibc the binary needs.
    let (build_from, build) = stages
        .iter()
        .find(|(f, _)| f.ends_with("AS build"))
        .expect("a build stage");
    let release = build_from
        .split('-')
        .next_back()
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    assert!(base.contains(release), "{base} vs builder {build_from}");

    // The binary the build stage installs, at the path the examples use.
    let install = build
        .iter()
        .find(|i| i.contains("cargo build"))
        .and_then(|i| i.split("install ").nth(1))
        .expect("the build step installs the binary");
    let built = install.split_whitespace().last().unwrap();
    assert!(
        body.iter()
            .any(|i| *i == format!("COPY --from=build {built} /usr/local/bin/mlcanary")),
        "copies {built}: {body:?}"
    );

    // kubectl: a pinned release, checked against its published sum before it is installed.
    let arg = |name: &str| {
        body.iter()
            .find_map(|i| i.strip_prefix(&format!("ARG {name}=")))
            .unwrap_or_else(|| panic!("ARG {name}=..."))
    };
    let version = arg("KUBECTL_VERSION");
    let parts: Vec<&str> = version.trim_start_matches('v').split('.').collect();
    assert!(
        version.starts_with('v')
            && parts.len() == 3
            && parts.iter().all(|p| p.parse::<u32>().is_ok()),
        "a release version, not a channel: {version}"
    );
    for a in ["KUBECTL_SHA256_AMD64", "KUBECTL_SHA256_ARM64"] {
        let sum = arg(a);
        assert!(
            sum.len() == 64 && sum.chars().all(|c| c.is_ascii_hexdigit()),
            "{a}={sum}"
        );
    }
    let run = body
        .iter()
        .find(|i| i.starts_with("RUN") && i.contains("kubectl"))
        .expect("a RUN installing kubectl");
    let url = run
        .find("https://dl.k8s.io/release/${KUBECTL_VERSION}/")
        .expect("downloads the pinned release");
    let check = run.find("| sha256sum -c -").expect("a checksum check");
    let installed = run
        .find("install -m 0755 /tmp/kubectl /usr/local/bin/kubectl")
        .expect("installs kubectl");
    assert!(
        url < check && check < installed,
        "download, check, install: {run}"
    );

    // Non-root, with a home kubectl can write its cache to.
    assert_ne!(stage_uid(body), 0);
    assert!(run.contains("useradd --uid 65532"), "{run}");
    assert!(body.contains(&"ENV HOME=/home/mlcanary"), "{body:?}");

    // The header documents the build of this target with the crate's version.
    assert!(
        text.contains(&format!(
            "docker build -f deploy/Dockerfile --target cli -t {CLI_IMAGE} ."
        )),
        "the header documents the cli build"
    );
}

#[test]
fn the_wasm_image_has_the_istio_layout_of_the_module_the_filter_builds() {
    let df = instructions(&read("deploy/wasm-image/Dockerfile"));
    assert_eq!(
        df,
        ["FROM scratch", "COPY mlcanary_filter.wasm ./plugin.wasm"]
    );
    // cargo names a cdylib after the package (dashes → underscores) when [lib] has no name.
    let filter = read("filter/Cargo.toml");
    assert_eq!(toml_value(&filter, "[lib]", "name"), None);
    let lib = toml_value(&filter, "[package]", "name")
        .unwrap()
        .replace('-', "_");
    assert_eq!(format!("{lib}.wasm"), "mlcanary_filter.wasm");
    let ignore = read("deploy/wasm-image/.dockerignore");
    assert!(ignore.lines().any(|l| l == "!mlcanary_filter.wasm"));

    // The WasmPlugin (the mesh's only one: istio_manifests.rs) pulls the image the recipe
    // documents.
    let docs = yaml_documents(&read("istio/wasmplugin.yaml")).unwrap();
    assert_eq!(docs[0]["spec"]["url"], format!("oci://{FILTER_IMAGE}"));
    assert!(read("deploy/wasm-image/Dockerfile")
        .contains(&format!("docker build -t {FILTER_IMAGE} deploy/wasm-image")));
}

#[test]
fn the_readme_documents_the_build_and_push_commands() {
    let readme = read("README.md");
    for cmd in [
        format!("docker build -f deploy/Dockerfile -t {CONTROLLER_IMAGE} ."),
        format!("docker build -f deploy/Dockerfile --target cli -t {CLI_IMAGE} ."),
        format!("docker build -t {FILTER_IMAGE} deploy/wasm-image"),
        format!("oras push {FILTER_IMAGE}"),
        "kubectl apply -k istio/".to_owned(),
        "kubectl apply -k istio/samples/fraud-model/".to_owned(),
    ] {
        assert!(readme.contains(&cmd), "README lacks `{cmd}`");
    }
    assert!(Path::new(&support::repo_root().join("deploy/grafana/dashboard.json")).exists());
}

#[test]
fn the_score_bucket_bootstrap_matches_the_filter() {
    let docs = yaml_documents(&read("deploy/mesh/score-buckets-bootstrap.yaml")).unwrap();
    assert_eq!(docs[0]["kind"], "ConfigMap");
    let boot: Value = serde_json::from_str(
        docs[0]["data"]["custom_bootstrap.json"]
            .as_str()
            .expect("custom_bootstrap.json"),
    )
    .unwrap();
    let settings = &boot["stats_config"]["histogram_bucket_settings"][0];
    assert_eq!(
        settings["match"]["suffix"],
        mlcanary_filter::stats::PREDICTION_SCORE
    );
    let buckets: Vec<u32> = serde_json::from_value(settings["buckets"].clone()).unwrap();
    assert_eq!(buckets, mlcanary_filter::stats::SCORE_BUCKETS);
    let settings = &boot["stats_config"]["histogram_bucket_settings"][1];
    assert_eq!(
        settings["match"]["suffix"],
        mlcanary_filter::stats::DURATION
    );
    let buckets: Vec<u32> = serde_json::from_value(settings["buckets"].clone()).unwrap();
    assert_eq!(buckets, mlcanary_filter::stats::DURATION_BUCKETS);
}
