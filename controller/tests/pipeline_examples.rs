//! The pipeline examples (`examples/ci/`) run what the project builds and follow the model's
//! lifecycle. Each file is rendered with sample values (Argo parameters, Actions expressions and
//! env) and its shell scripts split into commands; then:
//!
//! - every container image is one the project builds (tagged with the crate's version) or an
//!   allow-listed builder pinned to a release, and every step running sh, kubectl or mlcanary runs
//!   in the CLI image (the controller image has no shell);
//! - every `mlcanary` command parses with the real command line and is `wait --canary` or
//!   `status`; every `kubectl` command targets `deployment/fraud-model`, never a `-canary` or
//!   `-stable` Deployment; the version waited for is the image set on the Deployment;
//! - the Actions workflow puts mlcanary and kubectl (from the CLI image) on the PATH and exports
//!   KUBECONFIG before any step runs them.
//!
//! The checks return problems rather than panic, so the last tests feed them the old examples'
//! shape and see them fail.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use clap::Parser;
use mlcanary_controller::cli::{Cli, Command};
use serde_json::Value;
use support::images;
use support::schema::yaml_documents;
use support::shell::{simple_commands, substitute};

/// Third-party images a pipeline may run: builders that need no shell of ours, by repository;
/// the tag must be a release (`vX.Y.Z`).
const ALLOWED_BUILDERS: &[&str] = &["gcr.io/kaniko-project/executor"];
/// Actions a workflow may use, by name; each pinned to a major version at least.
const ALLOWED_ACTIONS: &[&str] = &["actions/checkout", "docker/login-action"];
/// Where the CLI image holds the two programs (deploy/Dockerfile, `cli` stage).
const CLI_BINARIES: [(&str, &str); 2] = [
    ("mlcanary", "/usr/local/bin/mlcanary"),
    ("kubectl", "/usr/local/bin/kubectl"),
];

fn read(rel: &str) -> String {
    let p = support::repo_root().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// What one file runs, and the problems found on the way.
#[derive(Debug, Default)]
struct Findings {
    problems: Vec<String>,
    /// `--canary` of each `mlcanary wait`.
    canaries: Vec<String>,
    /// The image of each `kubectl set image deployment/fraud-model model=IMAGE`.
    set_images: Vec<String>,
}

fn cli_image() -> String {
    images::tagged(images::CLI)
}

/// Release tags only: `vX.Y.Z` or `X.Y.Z`.
fn is_release_tag(tag: &str) -> bool {
    let parts: Vec<&str> = tag.trim_start_matches('v').split('.').collect();
    parts.len() == 3 && parts.iter().all(|p| p.parse::<u32>().is_ok())
}

impl Findings {
    /// An image a step runs; `runs_ours` when the step runs sh, kubectl or mlcanary.
    fn image(&mut self, at: &str, image: &str, runs_ours: bool) {
        let built = [images::CLI, images::CONTROLLER, images::FILTER].map(images::tagged);
        let builder = image
            .rsplit_once(':')
            .is_some_and(|(repo, tag)| ALLOWED_BUILDERS.contains(&repo) && is_release_tag(tag));
        if !built.iter().any(|b| b == image) && !builder {
            self.problems.push(format!(
                "{at}: image {image} is neither one the project builds ({built:?}) nor an \
                 allow-listed builder at a release tag"
            ));
        }
        if runs_ours && image != cli_image() {
            self.problems.push(format!(
                "{at}: runs sh/kubectl/mlcanary in {image}, not the CLI image {}",
                cli_image()
            ));
        }
    }

    /// A command line; only `mlcanary` and `kubectl` are judged.
    fn command(&mut self, at: &str, argv: &[String]) {
        let line = argv.join(" ");
        if argv.iter().any(|w| w.contains("<unset ")) {
            self.problems
                .push(format!("{at}: `{line}` uses a variable nothing sets"));
        }
        match argv.first().map(String::as_str) {
            Some("mlcanary") => match Cli::try_parse_from(argv) {
                Err(e) => self.problems.push(format!(
                    "{at}: `{line}` does not parse ({:?}): {}",
                    e.kind(),
                    e.to_string().lines().next().unwrap_or_default()
                )),
                Ok(cli) => match cli.command {
                    Command::Wait(w) => match w.canary {
                        Some(c) => self.canaries.push(c),
                        None => self.problems.push(format!(
                            "{at}: `{line}` waits without --canary: a finished earlier rollout \
                             would read as the verdict"
                        )),
                    },
                    Command::Status(_) => {}
                    other => self.problems.push(format!(
                        "{at}: `{line}` is not the lifecycle flow (wait --canary, status): {other:?}"
                    )),
                },
            },
            Some("kubectl") => {
                if !argv.iter().any(|w| w == "deployment/fraud-model") {
                    self.problems
                        .push(format!("{at}: `{line}` does not target deployment/fraud-model"));
                }
                if argv.iter().any(|w| w.contains("-canary") || w.contains("-stable")) {
                    self.problems.push(format!(
                        "{at}: `{line}` touches a -canary/-stable Deployment (the controller owns \
                         stable)"
                    ));
                }
                if argv.windows(2).any(|w| w == ["set", "image"]) {
                    self.set_images.extend(
                        argv.iter()
                            .filter_map(|w| w.strip_prefix("model="))
                            .map(str::to_owned),
                    );
                }
            }
            _ => {}
        }
    }

    /// The checks across steps.
    fn finish(mut self) -> Vec<String> {
        if self.set_images.is_empty() {
            self.problems.push(
                "no step commits a new version (kubectl set image deployment/fraud-model)".into(),
            );
        }
        if self.canaries.is_empty() {
            self.problems
                .push("no step runs mlcanary wait --canary".into());
        }
        for c in &self.canaries {
            if !self.set_images.contains(c) {
                self.problems.push(format!(
                    "waits for {c}, but the Deployment is given {:?}",
                    self.set_images
                ));
            }
        }
        self.problems
    }
}

/// `argv` runs one of the programs the CLI image holds, or a shell.
fn runs_ours(program: &str) -> bool {
    let base = program.rsplit('/').next().unwrap_or(program);
    matches!(base, "sh" | "bash" | "mlcanary" | "kubectl")
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The problems of an Argo WorkflowTemplate / Workflow.
fn check_argo(text: &str) -> Vec<String> {
    let mut f = Findings::default();
    let docs = match yaml_documents(text) {
        Ok(d) => d,
        Err(e) => return vec![format!("not YAML: {e}")],
    };
    let spec = &docs[0]["spec"];
    let mut params = BTreeMap::new();
    for p in spec["arguments"]["parameters"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let name = p["name"].as_str().unwrap_or_default().to_owned();
        let value = match (p["value"].as_str(), name.as_str()) {
            (Some(v), _) => v.to_owned(),
            (None, "image") => "ghcr.io/acme/fraud-model:v2".to_owned(),
            (None, _) => format!("sample-{name}"),
        };
        params.insert(format!("workflow.parameters.{name}"), value);
    }
    let render = |s: &str, problems: &mut Vec<String>| {
        substitute(s, "{{", "}}", &|k| params.get(k).cloned(), problems)
    };
    for t in spec["templates"].as_array().into_iter().flatten() {
        let name = t["name"].as_str().unwrap_or("?");
        let mut containers: Vec<(&str, &Value)> = Vec::new();
        for kind in ["container", "script"] {
            if t[kind].is_object() {
                containers.push((kind, &t[kind]));
            }
        }
        for kind in ["initContainers", "sidecars"] {
            containers.extend(t[kind].as_array().into_iter().flatten().map(|c| (kind, c)));
        }
        for (kind, c) in containers {
            let at = format!("template {name} ({kind})");
            let image = render(c["image"].as_str().unwrap_or_default(), &mut f.problems);
            let argv: Vec<String> = strings(&c["command"])
                .into_iter()
                .chain(strings(&c["args"]))
                .map(|a| render(&a, &mut f.problems))
                .collect();
            let program = argv.first().cloned().unwrap_or_default();
            f.image(&at, &image, runs_ours(&program));
            // A shell runs the script's source, or the argument after -c.
            let script = match (kind, argv.iter().position(|a| a == "-c")) {
                ("script", _) => Some(render(
                    c["source"].as_str().unwrap_or_default(),
                    &mut f.problems,
                )),
                (_, Some(i)) if runs_ours(&program) => argv.get(i + 1).cloned(),
                _ => None,
            };
            match script {
                Some(s) => {
                    for cmd in simple_commands(&s, &BTreeMap::new()) {
                        f.command(&at, &cmd);
                    }
                }
                None => f.command(&at, &argv),
            }
        }
    }
    f.finish()
}

/// Sample values of the `${{ ... }}` expressions a workflow may use.
fn expression(key: &str) -> Option<String> {
    Some(match key {
        "github.repository" => "acme/fraud-model".into(),
        "github.ref_name" => "model-v2".into(),
        "github.actor" => "release-bot".into(),
        k if k.starts_with("secrets.") => "<secret>".into(),
        k if k.starts_with("steps.") && k.contains(".outputs.") => "0".into(),
        _ => return None,
    })
}

/// The image of `docker create|run [flags] IMAGE ...`: the first word that is neither a flag nor
/// the value of one.
fn docker_image(cmd: &[String]) -> Option<&str> {
    const WITH_VALUE: &[&str] = &[
        "-e",
        "--env",
        "-v",
        "--volume",
        "-w",
        "--workdir",
        "-u",
        "--user",
        "--name",
        "--network",
        "--entrypoint",
        "--mount",
        "--env-file",
        "--platform",
    ];
    if cmd.first().map(String::as_str) != Some("docker")
        || !matches!(cmd.get(1).map(String::as_str), Some("create" | "run"))
    {
        return None;
    }
    let mut words = cmd[2..].iter();
    while let Some(w) = words.next() {
        if WITH_VALUE.contains(&w.as_str()) {
            words.next();
        } else if !w.starts_with('-') {
            return Some(w);
        }
    }
    None
}

/// The `KEY=VALUE` lines a step appends to the file at `target` (`$GITHUB_ENV`, `$GITHUB_PATH`).
fn appended_to<'a>(cmds: &'a [Vec<String>], target: &str) -> Vec<&'a str> {
    cmds.iter()
        .filter(|c| c[0] == "echo" && c.len() == 4 && c[2] == ">>" && c[3] == target)
        .map(|c| c[1].as_str())
        .collect()
}

/// The problems of a GitHub Actions workflow.
fn check_actions(text: &str) -> Vec<String> {
    let mut f = Findings::default();
    let docs = match yaml_documents(text) {
        Ok(d) => d,
        Err(e) => return vec![format!("not YAML: {e}")],
    };
    let temp = "/home/runner/work/_temp";
    let runner: BTreeMap<String, String> = [
        ("RUNNER_TEMP", temp.to_owned()),
        (
            "GITHUB_ENV",
            format!("{temp}/_runner_file_commands/set_env"),
        ),
        (
            "GITHUB_PATH",
            format!("{temp}/_runner_file_commands/add_path"),
        ),
        (
            "GITHUB_OUTPUT",
            format!("{temp}/_runner_file_commands/set_output"),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let env_of = |v: &Value, problems: &mut Vec<String>| -> BTreeMap<String, String> {
        v.as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| {
                let raw = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                (
                    k.clone(),
                    substitute(&raw, "${{", "}}", &expression, problems),
                )
            })
            .collect()
    };
    for (job_name, job) in docs[0]["jobs"].as_object().into_iter().flatten() {
        for image in [&job["container"], &job["container"]["image"]]
            .into_iter()
            .chain(
                job["services"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(_, s)| &s["image"]),
            )
            .filter_map(Value::as_str)
        {
            f.image(&format!("job {job_name}"), image, true);
        }
        let job_env = env_of(&job["env"], &mut f.problems);
        // What earlier steps left for later ones.
        let mut exported: BTreeMap<String, String> = BTreeMap::new();
        let mut path_dirs: BTreeSet<String> = BTreeSet::new();
        let mut installed: BTreeMap<String, String> = BTreeMap::new();
        for (i, step) in job["steps"].as_array().into_iter().flatten().enumerate() {
            let at = format!(
                "job {job_name} step {} ({})",
                i + 1,
                step["name"]
                    .as_str()
                    .or(step["uses"].as_str())
                    .unwrap_or("?")
            );
            if let Some(uses) = step["uses"].as_str() {
                match uses.strip_prefix("docker://") {
                    Some(image) => f.image(&at, image, true),
                    None => {
                        let (action, version) = uses.split_once('@').unwrap_or((uses, ""));
                        if !ALLOWED_ACTIONS.contains(&action) || version.is_empty() {
                            f.problems.push(format!(
                                "{at}: uses {uses}, not an allow-listed pinned action"
                            ));
                        }
                    }
                }
            }
            let Some(run) = step["run"].as_str() else {
                continue;
            };
            let mut vars = runner.clone();
            vars.extend(job_env.clone());
            vars.extend(exported.clone());
            vars.extend(env_of(&step["env"], &mut f.problems));
            let script = substitute(run, "${{", "}}", &expression, &mut f.problems);
            let cmds = simple_commands(&script, &vars);
            let on_path = |bin: &str| {
                installed
                    .get(bin)
                    .and_then(|p| p.rsplit_once('/'))
                    .is_some_and(|(dir, _)| path_dirs.contains(dir))
            };
            for cmd in &cmds {
                let program = cmd[0].as_str();
                if matches!(program, "mlcanary" | "kubectl") {
                    if !on_path(program) {
                        f.problems.push(format!(
                            "{at}: runs {program} before a step installs it from the CLI image"
                        ));
                    }
                    if !exported.contains_key("KUBECONFIG") {
                        f.problems.push(format!(
                            "{at}: runs {program} before a step exports KUBECONFIG"
                        ));
                    }
                }
                if let Some(image) = docker_image(cmd) {
                    f.image(&at, image, true);
                }
                f.command(&at, cmd);
            }
            // `docker create` of the CLI image, `docker cp <id>:/usr/local/bin/X DIR/X`.
            let from_cli = cmds.iter().any(|c| {
                c.len() >= 3 && c[0] == "docker" && c[1] == "create" && c[2] == cli_image()
            });
            for c in cmds
                .iter()
                .filter(|c| c.len() == 4 && c[0] == "docker" && c[1] == "cp")
            {
                for (bin, in_image) in CLI_BINARIES {
                    if from_cli && c[2].ends_with(&format!(":{in_image}")) {
                        installed.insert(bin.to_owned(), c[3].clone());
                    }
                }
            }
            path_dirs.extend(
                appended_to(&cmds, &runner["GITHUB_PATH"])
                    .into_iter()
                    .map(str::to_owned),
            );
            for line in appended_to(&cmds, &runner["GITHUB_ENV"]) {
                let Some((k, v)) = line.split_once('=') else {
                    continue;
                };
                // KUBECONFIG must name the file the step wrote (`... > "$RUNNER_TEMP/kubeconfig"`).
                let written = cmds
                    .iter()
                    .any(|c| c.windows(2).any(|w| w[0] == ">" && w[1] == v));
                if k == "KUBECONFIG" && !written {
                    f.problems.push(format!(
                        "{at}: exports KUBECONFIG={v}, a file it did not write"
                    ));
                }
                exported.insert(k.to_owned(), v.to_owned());
            }
        }
    }
    f.finish()
}

#[test]
fn the_argo_workflow_runs_the_cli_image_and_the_lifecycle() {
    let problems = check_argo(&read("examples/ci/argo-workflow.yaml"));
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn the_actions_workflow_installs_what_it_runs_and_follows_the_lifecycle() {
    let problems = check_actions(&read("examples/ci/github-actions.yaml"));
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn the_cli_image_holds_the_programs_where_the_workflow_copies_them_from() {
    let df = read("deploy/Dockerfile");
    for (bin, path) in CLI_BINARIES {
        assert!(df.contains(path), "deploy/Dockerfile puts {bin} at {path}");
    }
    for rel in [
        "examples/ci/argo-workflow.yaml",
        "examples/ci/github-actions.yaml",
    ] {
        assert!(
            read(rel).contains(&format!("--target cli -t {} .", cli_image())),
            "{rel} names the build of the image it runs"
        );
    }
}

#[test]
fn the_shell_splitter_finds_commands_in_arms_pipes_and_substitutions() {
    let vars = BTreeMap::from([("IMAGE".to_owned(), "img:v2".to_owned())]);
    let cmds = simple_commands(
        "set +e # comment\n  1) mlcanary status p -n ml ;;\n\
         id=$(docker create \"$IMAGE\")\ndocker rm \"$id\"\nprintf '%s' \"$X\" | base64 -d > \"${IMAGE}.cfg\" && echo ok",
        &vars,
    );
    let cmds: Vec<String> = cmds.iter().map(|c| c.join(" ")).collect();
    assert_eq!(
        cmds,
        [
            "set +e",
            "mlcanary status p -n ml",
            "docker create img:v2",
            "id=<output>",
            "docker rm <output>",
            "printf %s <unset X>",
            "base64 -d > img:v2.cfg",
            "echo ok",
        ]
    );
}

#[test]
fn the_checks_fail_on_the_old_argo_shape() {
    // What examples/ci/argo-workflow.yaml did before: `sh` in the distroless controller image at a
    // tag never built, third-party kubectl, the two-Deployments flow, and no --canary.
    let old = r#"
apiVersion: argoproj.io/v1alpha1
kind: WorkflowTemplate
spec:
  arguments:
    parameters: [{name: image}, {name: version}]
  templates:
    - name: kubectl
      script:
        image: bitnami/kubectl:latest
        command: [sh]
        source: kubectl -n ml set image deployment/fraud-model-canary model={{workflow.parameters.image}}
    - name: mlcanary
      script:
        image: ghcr.io/mlcanary/mlcanary:latest
        command: [sh]
        source: |
          mlcanary rollout start fraud-model --canary {{workflow.parameters.version}} -n ml
          mlcanary wait fraud-model -n ml --timeout 45m
    - name: build
      container:
        image: gcr.io/kaniko-project/executor:latest
"#;
    let problems = check_argo(old).join("\n");
    for want in [
        "image bitnami/kubectl:latest is neither",
        "runs sh/kubectl/mlcanary in ghcr.io/mlcanary/mlcanary:latest",
        "image gcr.io/kaniko-project/executor:latest is neither",
        "does not target deployment/fraud-model",
        "touches a -canary/-stable Deployment",
        "`mlcanary rollout start fraud-model --canary sample-version -n ml` is not the lifecycle",
        "waits without --canary",
        "no step runs mlcanary wait --canary",
    ] {
        assert!(problems.contains(want), "missing {want:?} in:\n{problems}");
    }
    // A flag the real command line does not have.
    let typo = old.replace("--timeout 45m", "--canary x --time-out 45m");
    assert!(check_argo(&typo).join("\n").contains("does not parse"));
}

#[test]
fn the_checks_fail_on_the_old_actions_shape() {
    // examples/ci/github-actions.yaml before: mlcanary and kubectl assumed on the runner, no
    // kubeconfig, the stable Deployment rolled forward by hand.
    let old = r#"
jobs:
  canary:
    runs-on: ubuntu-latest
    env: {POLICY: fraud-model, IMAGE: "ghcr.io/${{ github.repository }}/m:${{ github.ref_name }}"}
    steps:
      - uses: actions/checkout@v4
      - run: kubectl -n ml set image deployment/fraud-model model="$IMAGE"
      - run: mlcanary wait "$POLICY" -n ml --canary "$IMAGE"
      - run: kubectl -n ml set image deployment/fraud-model-stable model="$IMAGE"
      - uses: some/kubectl-action@main
      - run: docker run --rm -v "$RUNNER_TEMP:/w" ghcr.io/mlcanary/mlcanary-cli:latest mlcanary status
"#;
    let problems = check_actions(old).join("\n");
    for want in [
        "step 2 (?): runs kubectl before a step installs it",
        "step 2 (?): runs kubectl before a step exports KUBECONFIG",
        "step 3 (?): runs mlcanary before a step installs it",
        "touches a -canary/-stable Deployment",
        "uses some/kubectl-action@main, not an allow-listed",
        "image ghcr.io/mlcanary/mlcanary-cli:latest is neither",
    ] {
        assert!(problems.contains(want), "missing {want:?} in:\n{problems}");
    }
}
