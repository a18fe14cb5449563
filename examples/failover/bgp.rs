//! Failover times of `ANNOUNCE=bgp`, measured inside the real-kernel VM on
//! the topology of the trial (tests/support/bgp.rs, included here, not
//! copied): a router with its own BIRD (ECMP, BFD), three nodes with their
//! managed BIRDs, direct-routed backends. Per trial, two figures, each read
//! off the router's FIB (polled every 20 ms):
//!
//! - link down: one node's link to the router goes down → its next hop
//!   leaves the FIB (BFD's detection, interval × multiplier = 1 s here);
//! - SIGTERM: a node is told to stop → its next hop leaves the FIB (the
//!   node's own withdrawal, before it stops BIRD).
//!
//! After each, the site is made whole again (link up and the router's
//! session restarted; the node restarted on its data directory) and the
//! next trial takes the next node.

// The routed site of the trial (tests/support/bgp.rs), included once at
// the benchmark's root beside its siblings, as tests/ include it.
use crate::support::bgp::{announce_service, hop, start_cluster, BgpSite};
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

/// BIRD 2, for the router and the nodes; `BIRD_BINARY` overrides.
fn bird() -> String {
    std::env::var("BIRD_BINARY").unwrap_or_else(|_| "/usr/sbin/bird".into())
}

/// Runs `trials` rounds on one site with `binary` as the node; returns
/// each measurement's name and its samples.
pub fn measure(binary: &str, trials: usize) -> Result<Vec<(String, Vec<Duration>)>, String> {
    let bird = bird();
    let mut site = BgpSite::new(3, &bird);
    // The product's Raft timing, not the trials' slower one.
    site.raft_timing.clear();
    let _backends = site.start_backends();
    let mut nodes = start_cluster(&site, binary, &bird)?;
    let all: Vec<Ipv4Addr> = (0..3).map(hop).collect();
    announce_service(&site, 3, Duration::from_secs(120))?;
    let (mut link_down, mut sigterm) = (Vec::new(), Vec::new());
    for trial in 0..trials {
        let lb = trial % 3;
        let without: Vec<Ipv4Addr> = (0..3).filter(|&i| i != lb).map(hop).collect();

        site.lbs[lb].ip(&["link", "set", "servers", "down"]);
        link_down.push(site.wait_next_hops(&without, Duration::from_secs(30))?);
        site.lbs[lb].ip(&["link", "set", "servers", "up"]);
        // BIRD waits up to its connect-retry time (minutes) to try again
        // once a session failed: restart it now.
        restart_router_session(&site, lb)?;
        site.wait_next_hops(&all, Duration::from_secs(120))?;

        let lb = (trial + 1) % 3;
        let without: Vec<Ipv4Addr> = (0..3).filter(|&i| i != lb).map(hop).collect();
        nodes[lb].terminate()?;
        sigterm.push(site.wait_next_hops(&without, Duration::from_secs(60))?);
        let end = Instant::now() + Duration::from_secs(60);
        while !nodes[lb].exited() {
            if Instant::now() > end {
                return Err(format!("node{} still running 60 s after SIGTERM", lb + 1));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Where the time went, from the node's own log (to stderr).
        for line in nodes[lb].log().lines().filter(|l| {
            [
                "shutting down",
                "table emptied",
                "BIRD withdrew",
                "BIRD stopped",
            ]
            .iter()
            .any(|m| l.contains(m))
        }) {
            eprintln!("trial {trial} node{}: {line}", lb + 1);
        }
        eprintln!(
            "trial {trial} node{}: next hop gone {:?} after SIGTERM",
            lb + 1,
            sigterm.last().copied().unwrap_or_default()
        );
        nodes[lb].spawn(&site, binary, &bird);
        site.wait_next_hops(&all, Duration::from_secs(120))
            .map_err(|e| format!("{e}\n{}", nodes[lb].log()))?;
    }
    Ok(vec![
        (
            "bgp: link down → next hop out of the router's FIB (BFD)".into(),
            link_down,
        ),
        (
            "bgp: SIGTERM → next hop out of the router's FIB".into(),
            sigterm,
        ),
    ])
}

/// `birdc restart lbN` on the router's BIRD.
fn restart_router_session(site: &BgpSite, lb: usize) -> Result<(), String> {
    let out = Command::new("birdc")
        .arg("-s")
        .arg(site.dir.path().join("router.ctl"))
        .arg("restart")
        .arg(format!("lb{}", lb + 1))
        .output()
        .map_err(|e| format!("birdc: {e}"))?;
    out.status
        .success()
        .then_some(())
        .ok_or_else(|| format!("birdc restart: {}", String::from_utf8_lossy(&out.stderr)))
}
