//! `fraud-model`: the fraud-detection example's model server (a TF Serving REST stand-in),
//! traffic generator and model report.

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use clap::{Parser, Subcommand};
use mlcanary_fraud_example::feedback::FeedbackPlan;
use mlcanary_fraud_example::model::{evaluate, Report, Version, ALERT_RATE};
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
        /// v1 (stable), v2 (better, fair), v3 (better overall, biased against 60+) or v4 (flags
        /// 60+ as often as v2, but misses most of their fraud).
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
        /// Send labels back with the replies' tickets (needs a policy with `feedback`).
        #[arg(long)]
        feedback: bool,
        /// From a flagged transaction's reply to the analyst's label (ms).
        #[arg(long, default_value_t = 2000)]
        review_delay_ms: u64,
        /// From an unflagged transaction's reply to its chargeback or its absence (ms).
        #[arg(long, default_value_t = 4000)]
        chargeback_delay_ms: u64,
        /// Share of transactions that ever get a label, 0..=1.
        #[arg(long, default_value_t = 1.0)]
        label_share: f64,
    },
    /// Train the versions and print how they do on held-out data.
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
                eprintln!("fraud-model: unknown version {version:?} (v1, v2, v3, v4)");
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
            feedback,
            review_delay_ms,
            chargeback_delay_ms,
            label_share,
        } => {
            if !(0.0..=1.0).contains(&label_share) {
                eprintln!("fraud-model: --label-share {label_share} is outside 0..=1");
                std::process::exit(2);
            }
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
                feedback: feedback.then_some(FeedbackPlan {
                    review_delay: Duration::from_millis(review_delay_ms),
                    chargeback_delay: Duration::from_millis(chargeback_delay_ms),
                    label_share,
                }),
            };
            let t = traffic::run(&plan, &AtomicBool::new(false));
            println!(
                "sent {} requests: {:?}, {} errors",
                t.sent, t.by_version, t.errors
            );
            if feedback {
                let f = &t.feedback;
                println!(
                    "labels: {} sent ({} tickets), {} accepted, rejected {:?}, {} unsent; \
                     {} requests refused, {} unanswered",
                    f.sent, f.tickets, f.accepted, f.rejected, f.unsent, f.non_200, f.errors
                );
            }
        }
        Cmd::Report => {
            // Large: a band's rate over its ~8 000 examples in a 40 000 set wobbles by ±4 % relative.
            let test = data::dataset(TEST_SEED, 200_000);
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
            let versions = [Version::V1, Version::V2, Version::V3, Version::V4];
            let reports: Vec<Report> = versions
                .iter()
                .map(|&v| evaluate(&trained(v), &test, 0.5))
                .collect();
            let pct = |list: &[(String, f64)]| -> Vec<String> {
                list.iter()
                    .map(|(_, p)| format!("{:.1} %", p * 100.0))
                    .collect()
            };
            for (v, r) in versions.iter().zip(&reports) {
                let band = pct(&r.positive_rate_by_band);
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
            println!(
                "\n{:<8} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
                "version", "FPR 18-30", "31-60", "60+", "TPR 18-30", "31-60", "60+"
            );
            for (v, r) in versions.iter().zip(&reports) {
                let (fpr, tpr) = (
                    pct(&r.false_positive_rate_by_band),
                    pct(&r.true_positive_rate_by_band),
                );
                println!(
                    "v{:<7} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
                    v.number(),
                    fpr[0],
                    fpr[1],
                    fpr[2],
                    tpr[0],
                    tpr[1],
                    tpr[2]
                );
            }
        }
    }
}
