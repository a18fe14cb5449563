//! The `ipvs-manager` binary: parses the command line and reports errors with
//! their whole chain of causes.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = ipvs_manager::cli::Cli::parse();
    match ipvs_manager::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ipvs-manager: {e:#}");
            ExitCode::FAILURE
        }
    }
}
