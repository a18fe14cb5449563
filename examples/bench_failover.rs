//! Failover benchmark, run inside the real-kernel VM (tests/vm/run.sh):
//! each announcement mode's measurements, p50 and max.
//!
//! Usage: bench_failover [--binary PATH] [--trials N]
//!
//! A minimal stand-in that runs the bgp part only (examples/failover/bgp.rs).

#[path = "failover/bgp.rs"]
mod bgp;

use std::time::Duration;

fn main() {
    let mut binary = "target/debug/ipvs-manager".to_string();
    let mut trials = 3;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--binary", Some(v)) => binary = v,
            ("--trials", Some(v)) => trials = v.parse().unwrap_or(trials),
            _ => {
                eprintln!("usage: bench_failover [--binary PATH] [--trials N]");
                std::process::exit(2);
            }
        }
    }
    match bgp::measure(&binary, trials) {
        Ok(results) => {
            println!("| measurement | trials | p50 | max |");
            println!("|---|---|---|---|");
            for (name, mut samples) in results {
                samples.sort();
                let p50 = samples.get(samples.len() / 2).copied().unwrap_or_default();
                let max = samples.last().copied().unwrap_or(Duration::ZERO);
                println!("| {name} | {} | {p50:.2?} | {max:.2?} |", samples.len());
            }
        }
        Err(e) => {
            eprintln!("bench_failover: {e}");
            std::process::exit(1);
        }
    }
}
