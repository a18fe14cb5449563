//! Failover benchmark, run inside the real-kernel rig (see README
//! "Benchmarks"): over repeated trials, how long traffic takes to recover
//! when a load balancer goes away, in each announcement mode —
//!
//! - `bgp`: a router running BIRD 2 with ECMP learns the service address
//!   from three nodes; the time from one node's link going down until its
//!   next hop leaves the router's FIB (BFD), and from a node's SIGTERM
//!   until its route leaves the FIB (graceful withdrawal);
//! - `l2`: one owner per address on a shared bridge; the time from the
//!   owner host's link going down until a client's request is answered by
//!   another node (lease, reassignment, gratuitous ARP).
//!
//! Usage: bench_failover [--binary PATH] [--trials N] [--mode bgp|l2|both]
//!
//! Run on the host, it boots the test VM (tests/vm/run.sh) and runs itself
//! there; PATH is relative to the checkout.

// The test topologies panic on a broken set-up, as the tests they come
// from do.
#![allow(clippy::unwrap_used)]

// The test topologies, as tests/ include them (examples/failover/*.rs
// name them `crate::support::…`); tests/support/vm.rs is left out (it
// reads variables cargo sets for tests only).
#[allow(dead_code)]
mod support {
    #[path = "../../tests/support/bgp.rs"]
    pub mod bgp;
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

#[path = "failover/bgp.rs"]
mod bgp;
#[path = "failover/l2.rs"]
mod l2;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// How long traffic takes to recover when a load balancer goes away.
#[derive(clap::Parser)]
struct Args {
    /// The ipvs-manager binary, relative to the checkout.
    #[arg(long, default_value = "target/release/ipvs-manager")]
    binary: String,
    /// Trials per measure.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    trials: u32,
    /// The announcement modes to measure.
    #[arg(long, value_enum, default_value_t = Mode::Both)]
    mode: Mode,
}

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Bgp,
    L2,
    Both,
}

impl Mode {
    /// The modes measured: the one named, or both.
    fn measured(self) -> &'static [Mode] {
        match self {
            Mode::Bgp => &[Mode::Bgp],
            Mode::L2 => &[Mode::L2],
            Mode::Both => &[Mode::Bgp, Mode::L2],
        }
    }

    fn name(self) -> &'static str {
        match self {
            Mode::Bgp => "bgp",
            Mode::L2 => "l2",
            Mode::Both => "both",
        }
    }
}

/// The p50 and the maximum of `times`, in milliseconds.
fn p50_max(times: &[Duration]) -> (f64, f64) {
    let mut sorted = times.to_vec();
    sorted.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (ms(sorted[sorted.len() / 2]), ms(sorted[sorted.len() - 1]))
}

fn main() -> std::process::ExitCode {
    let args = <Args as clap::Parser>::parse();
    // On the host: the same command again, inside the VM.
    if std::env::var_os("IPVS_MANAGER_IN_VM").is_none_or(|v| v != "1") {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let Ok(exe) = std::env::current_exe() else {
            return std::process::ExitCode::FAILURE;
        };
        let status = Command::new("bash")
            .current_dir(root)
            .arg(root.join("tests/vm/run.sh"))
            .arg("--timeout")
            .arg("3600")
            .arg("--")
            .arg(exe)
            .args(std::env::args().skip(1))
            .status();
        return match status {
            Ok(s) if s.success() => std::process::ExitCode::SUCCESS,
            _ => std::process::ExitCode::FAILURE,
        };
    }
    println!(
        "{:<5} {:<50} {:>6} {:>10} {:>10}",
        "mode", "measure", "trials", "p50 ms", "max ms"
    );
    let mut failed = false;
    let trials = args.trials as usize;
    for mode in args.mode.measured() {
        let measured = match mode {
            Mode::Bgp => bgp::measure(&args.binary, trials),
            _ => l2::measure(&args.binary, trials),
        };
        let mode = mode.name();
        match measured {
            Ok(measures) => {
                for (name, times) in measures {
                    if times.is_empty() {
                        println!("{mode:<5} {name:<50} {:>6} {:>10} {:>10}", 0, "-", "-");
                        continue;
                    }
                    let (p50, max) = p50_max(&times);
                    println!(
                        "{mode:<5} {name:<50} {:>6} {p50:>10.0} {max:>10.0}",
                        times.len()
                    );
                }
            }
            Err(e) => {
                failed = true;
                eprintln!("bench_failover: {mode}: {e}");
            }
        }
    }
    if failed {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}
