//! `mlcanary`: parse the command line, run it, map errors to exit codes. Everything else is in the
//! library.
#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use mlcanary_controller::cli::{run, Cli};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(&cli.command, &mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mlcanary: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
