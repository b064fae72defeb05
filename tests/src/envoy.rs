//! A real Envoy as a child process: config rendered into a temp dir, the filter config served by
//! ECDS from a watched file (so it can be replaced without a restart), ports chosen by the kernel.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::http;

/// What to run: one route per variant on the tag header, untagged traffic to the first variant.
#[derive(Debug, Clone)]
pub struct EnvoySetup {
    /// (variant name, upstream port), in the policy's order; the first is the default route.
    pub variants: Vec<(String, u16)>,
    /// The filter's JSON config; `None` runs Envoy without the filter (benchmark baseline).
    pub filter_config: Option<serde_json::Value>,
    pub concurrency: u32,
    /// Answer every request itself with 200 and this body (an upstream for benchmarks).
    pub direct_response: Option<String>,
    /// `Some(hosts)`: the filter is disabled in the connection manager and enabled only on a virtual
    /// host for these hosts (`typed_per_filter_config`), as `mlcanary local` attaches it; requests to
    /// other hosts never enter the Wasm VM. `None`: the filter runs on every route.
    pub filter_hosts: Option<Vec<String>>,
    /// An Envoy Lua filter (inline source) before the router: the benchmark's hand-written peer.
    pub lua: Option<String>,
}

impl EnvoySetup {
    pub fn new(variants: &[(&str, u16)], filter_config: serde_json::Value) -> EnvoySetup {
        EnvoySetup {
            variants: variants.iter().map(|(n, p)| (n.to_string(), *p)).collect(),
            filter_config: Some(filter_config),
            concurrency: 2,
            direct_response: None,
            filter_hosts: None,
            lua: None,
        }
    }
}

/// A running Envoy; stopped (SIGKILL) when dropped.
pub struct Envoy {
    child: Child,
    dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    setup: EnvoySetup,
    pub admin_port: u16,
    pub port: u16,
    ecds_version: u64,
}

const ROUTER: &str =
    r#"{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}"#;

fn render_bootstrap(dir: &Path, setup: &EnvoySetup) -> String {
    let mut routes = String::new();
    for (name, _) in &setup.variants {
        let _ = write!(
            routes,
            "
              - match: {{prefix: /, headers: [{{name: x-mlcanary-variant, string_match: {{exact: {name}}}}}]}}
                route: {{cluster: {name}}}"
        );
    }
    let default = setup.variants.first().map_or("none", |(n, _)| n.as_str());
    // A config with ground truth: feedback requests are held by a fault (after the filter, which
    // answers them), as the controller's routes hold them on a cluster and locally.
    let feedback = setup
        .filter_config
        .as_ref()
        .and_then(|c| c["policies"].as_array())
        .is_some_and(|ps| ps.iter().any(|p| p.get("feedback").is_some()));
    if feedback {
        let hold = mlcanary_filter::feedback::HOLD_S;
        routes = format!(
            "
              - match: {{safe_regex: {{regex: '{re}'}}}}
                route: {{cluster: {default}}}
                typed_per_filter_config:
                  envoy.filters.http.fault:
                    \"@type\": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
                    delay: {{fixed_delay: {hold}s, percentage: {{numerator: 100}}}}
                    abort: {{http_status: 503, percentage: {{numerator: 100}}}}{routes}",
            re = mlcanary_filter::feedback::hold_path_regex(None)
        );
    }
    if let Some(body) = &setup.direct_response {
        routes = format!(
            "\n              - match: {{prefix: /}}\n                direct_response: {{status: 200, body: {{inline_string: '{body}'}}}}"
        );
    } else {
        let _ = write!(
            routes,
            "\n              - match: {{prefix: /}}\n                route: {{cluster: {default}}}"
        );
    }
    let disabled = if setup.filter_hosts.is_some() {
        "\n            disabled: true"
    } else {
        ""
    };
    let mut filter = if setup.filter_config.is_some() {
        format!(
            "
          - name: mlcanary{disabled}
            config_discovery:
              config_source:
                path_config_source:
                  path: {ecds}/ecds.yaml
                  watched_directory: {{path: {ecds}}}
              type_urls: [type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm]",
            ecds = dir.join("ecds").display()
        )
    } else {
        String::new()
    };
    if feedback {
        filter.push_str(
            "
          - name: envoy.filters.http.fault
            typed_config: {\"@type\": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault}",
        );
    }
    if let Some(lua) = &setup.lua {
        let code = lua.replace('\'', "''");
        let _ = write!(
            filter,
            "
          - name: envoy.filters.http.lua
            typed_config:
              \"@type\": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua
              default_source_code: {{inline_string: '{code}'}}"
        );
    }
    // With `filter_hosts`, the named hosts get a virtual host of their own that enables the filter;
    // every other host falls to the catch-all one, where the filter stays disabled.
    let mut virtual_hosts = String::new();
    if let Some(hosts) = &setup.filter_hosts {
        let domains: Vec<String> = hosts
            .iter()
            .flat_map(|h| [format!("\"{h}\""), format!("\"{h}:*\"")])
            .collect();
        let _ = write!(
            virtual_hosts,
            "
            - name: canaried
              domains: [{domains}]
              typed_per_filter_config:
                mlcanary: {{\"@type\": type.googleapis.com/envoy.config.route.v3.FilterConfig, config: {{}}}}
              routes:{routes}",
            domains = domains.join(", ")
        );
    }
    let _ = write!(
        virtual_hosts,
        "
            - name: models
              domains: [\"*\"]
              routes:{routes}"
    );
    let mut clusters = String::new();
    for (name, port) in &setup.variants {
        let _ = write!(
            clusters,
            "
  - name: {name}
    connect_timeout: 1s
    load_assignment: {{cluster_name: {name}, endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}}}}}]}}]}}"
        );
    }
    let tags: String = mlcanary_filter::stats::TAGS
        .iter()
        .map(|(t, re)| format!("\n  - {{tag_name: {t}, regex: '{re}'}}"))
        .collect();
    let score_family = mlcanary_filter::stats::PREDICTION_SCORE;
    let score_buckets: Vec<String> = mlcanary_filter::stats::SCORE_BUCKETS
        .iter()
        .map(u32::to_string)
        .collect();
    let score_buckets = score_buckets.join(", ");
    let duration_family = mlcanary_filter::stats::DURATION;
    let duration_buckets: Vec<String> = mlcanary_filter::stats::DURATION_BUCKETS
        .iter()
        .map(u32::to_string)
        .collect();
    let duration_buckets = duration_buckets.join(", ");
    format!(
        "node: {{id: mlcanary-e2e, cluster: mlcanary-e2e}}
admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}}}
stats_flush_interval: 1s
stats_config:
  stats_tags:{tags}
  histogram_bucket_settings:
  - match: {{suffix: {score_family}}}
    buckets: [{score_buckets}]
  - match: {{suffix: {duration_family}}}
    buckets: [{duration_buckets}]
static_resources:
  listeners:
  - name: main
    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          \"@type\": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: main
          route_config:
            virtual_hosts:{virtual_hosts}
          http_filters:{filter}
          - name: envoy.filters.http.router
            typed_config: {ROUTER}
  clusters:{clusters}
"
    )
}

/// The ECDS resource file: a DiscoveryResponse holding the Wasm filter's TypedExtensionConfig.
pub fn render_ecds(version: u64, wasm: &Path, config_json: &str) -> String {
    // YAML single-quoted scalar: only `'` needs escaping.
    let value = config_json.replace('\'', "''");
    format!(
        "version_info: \"{version}\"
resources:
- \"@type\": type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig
  name: mlcanary
  typed_config:
    \"@type\": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
    config:
      name: mlcanary
      root_id: mlcanary
      vm_config:
        vm_id: mlcanary
        runtime: envoy.wasm.runtime.v8
        code: {{local: {{filename: {wasm}}}}}
      configuration:
        \"@type\": type.googleapis.com/google.protobuf.StringValue
        value: '{value}'
",
        wasm = wasm.display()
    )
}

/// Replace `path` atomically: write a temp file beside it, then rename (what Envoy's watch expects).
pub fn write_atomic(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, content).expect("write temp file");
    fs::rename(&tmp, path).expect("rename into place");
}

impl Envoy {
    /// Start Envoy in a fresh temp dir and wait until it serves.
    pub fn start(setup: EnvoySetup) -> Envoy {
        let tmp = tempfile::Builder::new()
            .prefix("mlcanary-e2e-")
            .tempdir()
            .expect("temp dir");
        let dir = tmp.path().to_path_buf();
        let mut e = Envoy::start_in(&dir, setup, 1);
        e._tmp = Some(tmp);
        e
    }

    fn start_in(dir: &Path, setup: EnvoySetup, ecds_version: u64) -> Envoy {
        fs::create_dir_all(dir.join("ecds")).expect("ecds dir");
        if let Some(cfg) = &setup.filter_config {
            let ecds = dir.join("ecds/ecds.yaml");
            if !ecds.exists() {
                let body = render_ecds(ecds_version, &crate::wasm_path(), &cfg.to_string());
                write_atomic(&ecds, &body);
            }
        }
        fs::write(dir.join("envoy.yaml"), render_bootstrap(dir, &setup)).expect("write envoy.yaml");
        let admin_file = dir.join("admin.txt");
        let _ = fs::remove_file(&admin_file);
        let log = fs::File::create(dir.join("envoy.log")).expect("envoy.log");
        let child = Command::new(crate::envoy_path())
            .arg("-c")
            .arg(dir.join("envoy.yaml"))
            .args([
                "--concurrency",
                &setup.concurrency.to_string(),
                "--disable-hot-restart",
            ])
            .args(["-l", "info", "--admin-address-path"])
            .arg(&admin_file)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn envoy");
        let mut e = Envoy {
            child,
            dir: dir.into(),
            _tmp: None,
            setup,
            admin_port: 0,
            port: 0,
            ecds_version,
        };
        e.wait_ready();
        e
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + crate::patience::START;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "envoy exited ({status}) during start-up:\n{}",
                    self.log_tail()
                );
            }
            if self.admin_port == 0 {
                if let Ok(a) = fs::read_to_string(self.dir.join("admin.txt")) {
                    self.admin_port = a
                        .trim()
                        .rsplit(':')
                        .next()
                        .and_then(|p| p.parse().ok())
                        .unwrap_or(0);
                }
            }
            if self.admin_port != 0 && self.port == 0 {
                self.port = self.listener_port().unwrap_or(0);
            }
            if self.port != 0 && self.admin("/ready").is_some_and(|r| r.status == 200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "envoy not ready after {:?}:\n{}",
            crate::patience::START,
            self.log_tail()
        );
    }

    fn listener_port(&self) -> Option<u16> {
        let r = self.admin("/listeners?format=json")?;
        let v: serde_json::Value = serde_json::from_str(&r.body).ok()?;
        let l = v["listener_statuses"]
            .as_array()?
            .iter()
            .find(|l| l["name"] == "main")?;
        let port = l["local_address"]["socket_address"]["port_value"].as_u64()?;
        u16::try_from(port).ok().filter(|&p| p != 0)
    }

    /// GET an admin path.
    pub fn admin(&self, path: &str) -> Option<http::Response> {
        http::get(self.admin_port, "127.0.0.1", path, &[]).ok()
    }

    /// Stop this Envoy and start a new one on the same config files (new ports).
    pub fn restart(mut self) -> Envoy {
        self.stop();
        let tmp = self._tmp.take();
        let setup = self.setup.clone();
        let mut e = Envoy::start_in(&self.dir, setup, self.ecds_version);
        e._tmp = tmp;
        e
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Still the same, running process (for "no restart" checks).
    pub fn pid(&mut self) -> Option<u32> {
        matches!(self.child.try_wait(), Ok(None)).then(|| self.child.id())
    }

    /// Deliver a new filter config the way the controller does: rewrite the ECDS file atomically.
    pub fn set_filter_config(&mut self, config_json: &str) {
        self.ecds_version += 1;
        let body = render_ecds(self.ecds_version, &crate::wasm_path(), config_json);
        write_atomic(&self.dir.join("ecds/ecds.yaml"), &body);
    }

    /// The value of a plain stat from `/stats` (e.g. the ECDS update counters).
    pub fn stat(&self, name: &str) -> Option<u64> {
        let r = self.admin(&format!("/stats?filter=^{}$", name.replace('.', "\\.")))?;
        r.body.lines().find_map(|l| {
            let (k, v) = l.split_once(": ")?;
            (k == name).then(|| v.trim().parse().ok()).flatten()
        })
    }

    pub fn prometheus(&self) -> String {
        self.admin("/stats/prometheus")
            .map(|r| r.body)
            .unwrap_or_default()
    }

    /// One sample of `/stats/prometheus`: `metric{labels}` with exactly these labels.
    pub fn sample(&self, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let text = self.prometheus();
        find_sample(&text, metric, labels)
    }

    /// Like `sample`, but waits (up to [`crate::patience::SETTLE`]) for the value to reach `want`:
    /// the filter records at the end of each stream, which can come just after the client has read
    /// the whole response. Returns the last value read, so an assertion on it shows what was there.
    pub fn sample_eventually(
        &self,
        metric: &str,
        labels: &[(&str, &str)],
        want: f64,
    ) -> Option<f64> {
        let mut last = None;
        let reached = wait_for(crate::patience::SETTLE, || {
            last = self.sample(metric, labels);
            (last == Some(want)).then_some(())
        });
        reached.map_or(last, |()| Some(want))
    }

    pub fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.dir.join("envoy.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("envoy.log")).unwrap_or_default()
    }
}

/// Find `metric{a="x",b="y"} value` in Prometheus text whose label set is exactly `labels`. A
/// `labels` with `policy` but no `policy_namespace` means the filter's default namespace (a
/// config that names none): the tests' configs mostly do not.
pub fn find_sample(text: &str, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut labels = labels.to_vec();
    let has = |k: &str, l: &[(&str, &str)]| l.iter().any(|(n, _)| *n == k);
    if has("policy", &labels) && !has("policy_namespace", &labels) {
        labels.push((
            "policy_namespace",
            mlcanary_filter::config::DEFAULT_NAMESPACE,
        ));
    }
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (name, rest) = series.split_once('{').unwrap_or((series, "}"));
        if name != metric {
            return None;
        }
        let body = rest.strip_suffix('}')?;
        let mut got: Vec<(&str, &str)> = body
            .split("\",")
            .filter(|p| !p.is_empty())
            .filter_map(|p| {
                let (k, v) = p.split_once("=\"")?;
                Some((k, v.trim_end_matches('"')))
            })
            .collect();
        let mut want = labels.clone();
        got.sort_unstable();
        want.sort_unstable();
        (got == want).then(|| value.parse().ok()).flatten()
    })
}

impl Drop for Envoy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Poll `f` every 50 ms until it returns `Some`, for at most `timeout`.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
