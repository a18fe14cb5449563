//! A minimal runner for examples/failover/l2.rs (the lead's
//! bench_failover.rs is the real one): boots the test VM, runs the
//! measurement there and prints the median and the maximum of each kind.
//!
//! `cargo build && cargo run --example bench_failover_l2 -- [TRIALS]`

// The test topology panics on a broken set-up, as the tests it comes
// from do.
#![allow(clippy::unwrap_used)]

// The test topology, as tests/ include it; tests/support/vm.rs is left
// out (it reads variables cargo sets for tests only).
#[allow(dead_code)]
mod support {
    #[path = "../../tests/support/l2site.rs"]
    pub mod l2site;
    #[path = "../../tests/support/netns.rs"]
    pub mod netns;
    #[path = "../../tests/support/topology.rs"]
    pub mod topology;
    #[path = "../../tests/support/traffic.rs"]
    pub mod traffic;
    pub use netns::Netns;
    pub use traffic::Backend;
}

#[path = "failover/l2.rs"]
mod l2;

use std::path::Path;
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let trials: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(3);
    if std::env::var_os("IPVS_MANAGER_IN_VM").is_none_or(|v| v != "1") {
        let Ok(exe) = std::env::current_exe() else {
            return ExitCode::FAILURE;
        };
        let status = Command::new("bash")
            .arg(root.join("tests/vm/run.sh"))
            .arg("--")
            .arg(exe)
            .arg(trials.to_string())
            .status();
        return match status {
            Ok(s) if s.success() => ExitCode::SUCCESS,
            _ => ExitCode::FAILURE,
        };
    }
    let binary = root.join("target/debug/ipvs-manager");
    match l2::measure(&binary.to_string_lossy(), trials) {
        Ok(kinds) => {
            for (kind, mut times) in kinds {
                times.sort();
                let p50 = times[times.len() / 2];
                let max = times[times.len() - 1];
                println!(
                    "{kind}: p50 {p50:?} max {max:?} over {} trials",
                    times.len()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
