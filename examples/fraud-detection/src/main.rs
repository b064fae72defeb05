//! `fraud-model`: the fraud-detection example's model server (a TF Serving REST stand-in),
//! traffic generator and model report.

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use clap::{Parser, Subcommand};
use mlcanary_fraud_example::model::{evaluate, Version, ALERT_RATE};
use mlcanary_fraud_example::{data, server, traffic, trained, TEST_SEED};

#[derive(Parser)]
#[command(
    name = "fraud-model",
    about = "The fraud-detection example of mlcanary"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve one model version over the TF Serving REST API (a stand-in for TF Serving).
    Serve {
        /// v1 (stable), v2 (better, fair) or v3 (better overall, biased against 60+).
        #[arg(long)]
        version: String,
        #[arg(long, default_value = "127.0.0.1:8501")]
        listen: String,
        #[arg(long, default_value = "fraud")]
        model_name: String,
        /// Answer this share of :predict requests with 500 (per mille).
        #[arg(long, default_value_t = 0)]
        fail_per_mille: u32,
        /// Add this delay to every :predict (ms).
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
        #[arg(long, default_value_t = 4)]
        threads: usize,
    },
    /// Send customers' transactions to the model through Envoy.
    Traffic {
        /// Envoy listener, host:port.
        #[arg(long)]
        target: String,
        /// Host header (the model's service name).
        #[arg(long, default_value = "fraud-model")]
        host: String,
        #[arg(long, default_value = "fraud")]
        model_name: String,
        #[arg(long, default_value_t = 100.0)]
        rps: f64,
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        #[arg(long, default_value_t = 1_000_000)]
        max_requests: u64,
        #[arg(long, default_value_t = 5000)]
        users: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Train the three versions and print how they do on held-out data.
    Report,
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Serve {
            version,
            listen,
            model_name,
            fail_per_mille,
            delay_ms,
            threads,
        } => {
            let Some(v) = Version::parse(&version) else {
                eprintln!("fraud-model: unknown version {version:?} (v1, v2, v3)");
                std::process::exit(2);
            };
            let opts = server::Options {
                model_name,
                fail_per_mille,
                delay: Duration::from_millis(delay_ms),
            };
            match server::serve(&listen, trained(v), opts, threads) {
                Ok(running) => {
                    println!(
                        "fraud-model {version} serving the TF Serving REST API on 127.0.0.1:{}",
                        running.port
                    );
                    loop {
                        std::thread::park();
                    }
                }
                Err(e) => {
                    eprintln!("fraud-model: cannot listen on {listen}: {e}");
                    std::process::exit(1);
                }
            }
        }
        Cmd::Traffic {
            target,
            host,
            model_name,
            rps,
            seconds,
            max_requests,
            users,
            seed,
        } => {
            let plan = traffic::Plan {
                target,
                host,
                model: model_name,
                rps,
                duration: Duration::from_secs(seconds),
                max_requests,
                users,
                seed,
                workers: 4,
            };
            let t = traffic::run(&plan, &AtomicBool::new(false));
            println!(
                "sent {} requests: {:?}, {} errors",
                t.sent, t.by_version, t.errors
            );
        }
        Cmd::Report => {
            let test = data::dataset(TEST_SEED, 40_000);
            let fraud = test.iter().filter(|e| e.fraud).count() as f64 / test.len() as f64;
            println!(
                "held-out set: {} transactions, {:.2} % fraud; alert budget {:.0} %",
                test.len(),
                fraud * 100.0,
                ALERT_RATE * 100.0
            );
            println!(
                "{:<8} {:>6} {:>10} {:>10} {:>10} {:>10}",
                "version", "AUC", "flagged", "18-30", "31-60", "60+"
            );
            for v in [Version::V1, Version::V2, Version::V3] {
                let r = evaluate(&trained(v), &test, 0.5);
                let band: Vec<String> = r
                    .positive_rate_by_band
                    .iter()
                    .map(|(_, p)| format!("{:.1} %", p * 100.0))
                    .collect();
                println!(
                    "v{:<7} {:>6.3} {:>8.1} % {:>10} {:>10} {:>10}",
                    v.number(),
                    r.auc,
                    r.positive_rate * 100.0,
                    band[0],
                    band[1],
                    band[2]
                );
            }
        }
    }
}
