//! A real Prometheus (Debian's `/usr/bin/prometheus`, `MLCANARY_PROMETHEUS` overrides) as a child:
//! its own config, its own TSDB in a temp dir, 127.0.0.1 only; killed when dropped.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::envoy::wait_for;
use crate::http;

/// The Prometheus binary; `scripts/setup.sh` installs Debian's package.
pub fn prometheus_path() -> PathBuf {
    let p = std::env::var_os("MLCANARY_PROMETHEUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/prometheus"));
    assert!(
        p.exists(),
        "{} is missing: run scripts/setup.sh",
        p.display()
    );
    p
}

pub struct Prometheus {
    child: Child,
    pub port: u16,
    tmp: tempfile::TempDir,
}

impl Prometheus {
    /// Start scraping `127.0.0.1:<target_port>/stats/prometheus` (an Envoy admin) every second and
    /// wait for `/-/ready`.
    pub fn start(target_port: u16) -> Prometheus {
        let tmp = tempfile::Builder::new()
            .prefix("mlcanary-prom-")
            .tempdir()
            .expect("temp dir");
        let config = tmp.path().join("prometheus.yml");
        fs::write(
            &config,
            format!(
                "global: {{scrape_interval: 1s, evaluation_interval: 1s}}
scrape_configs:
- job_name: envoy
  metrics_path: /stats/prometheus
  static_configs: [{{targets: ['127.0.0.1:{target_port}']}}]
"
            ),
        )
        .expect("write prometheus.yml");
        let port = crate::free_port();
        let child = spawn(tmp.path(), port);
        let p = Prometheus { child, port, tmp };
        p.wait_ready();
        p
    }

    fn wait_ready(&self) {
        let ready = wait_for(crate::patience::START, || {
            http::get(self.port, "127.0.0.1", "/-/ready", &[])
                .ok()
                .filter(|r| r.status == 200)
        });
        assert!(ready.is_some(), "prometheus not ready:\n{}", self.log());
    }

    /// Kill it (an outage): its port refuses connections until [`Prometheus::start_again`].
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Start it again on the same port, config and TSDB, and wait for `/-/ready`.
    pub fn start_again(&mut self) {
        self.child = spawn(self.tmp.path(), self.port);
        self.wait_ready();
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// An instant query's first value, if any.
    pub fn query(&self, promql: &str) -> Option<f64> {
        let q: String = promql
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let r = http::get(
            self.port,
            "127.0.0.1",
            &format!("/api/v1/query?query={q}"),
            &[],
        )
        .ok()?;
        let v: serde_json::Value = serde_json::from_str(&r.body).ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.tmp.path().join("prometheus.log")).unwrap_or_default()
    }
}

/// Prometheus on `dir/prometheus.yml`, its TSDB in `dir/data`, its log appended to
/// `dir/prometheus.log`.
fn spawn(dir: &std::path::Path, port: u16) -> Child {
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("prometheus.log"))
        .expect("log");
    Command::new(prometheus_path())
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log fd"))
        .stderr(log)
        .spawn()
        .expect("spawn prometheus")
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
