//! Failover time of `ANNOUNCE=l2`, on the trial's topology
//! (tests/support/l2site.rs): the owner host's link goes down, and the time
//! until the client gets an answer through another node is measured, over
//! repeated trials, once with a follower owning the address and once with
//! the leader owning it. Runs inside the real-kernel VM, as root.
//!
//! The including binary declares, at its crate root,
//! `#[path = "../tests/support/mod.rs"] mod support;` (the topology names
//! its helpers `crate::support::…`) and `#[path = "failover/l2.rs"] mod l2;`.

use crate::support::l2site::{L2Site, L2_VIP, L2_VIP2};
use crate::support::traffic::get;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

/// The lease the measurements run with (the default).
pub const LEASE_MS: u32 = 1000;

/// `trials` failovers of each kind with `binary` as the node: the kind's
/// name and the times measured, link down → first answer after it.
pub fn measure(binary: &str, trials: usize) -> Result<Vec<(String, Vec<Duration>)>, String> {
    let mut follower = Vec::new();
    let mut leader = Vec::new();
    // Two addresses spread over two nodes: one of them a follower, and
    // (when the leader is one of the two) the leader. A site is used for
    // one failover only.
    let mut attempts = 0;
    while follower.len() < trials || leader.len() < trials {
        attempts += 1;
        if attempts > 4 * trials + 4 {
            return Err("the leader never owned an address".into());
        }
        let want_leader = leader.len() < trials;
        if let Some(t) = once(binary, want_leader)? {
            if want_leader {
                leader.push(t);
            } else {
                follower.push(t);
            }
        }
    }
    Ok(vec![
        ("l2 follower owner, link down".to_string(), follower),
        ("l2 leader owner, link down".to_string(), leader),
    ])
}

/// One failover on a fresh site, of an address the leader owns when
/// `leader` (a follower otherwise); `None` when no address fits.
fn once(binary: &str, leader: bool) -> Result<Option<Duration>, String> {
    let site = L2Site::new(1);
    let nodes = site.start_cluster_with(binary, LEASE_MS, &[L2_VIP, L2_VIP2], &[])?;
    let limit = Duration::from_secs(30);
    let owners = [
        (L2_VIP, site.owner_of(L2_VIP, limit, None)?),
        (L2_VIP2, site.owner_of(L2_VIP2, limit, None)?),
    ];
    let leader_lb = (0..3)
        .find(|lb| site.api(*lb, "GET", "/api/v1/node", None).1["role"] == "leader")
        .ok_or("no leader")?;
    let Some((vip, owner)) = owners
        .into_iter()
        .find(|(_, o)| (*o == leader_lb) == leader)
    else {
        return Ok(None);
    };
    let time = failover(&site, vip, owner).map_err(|e| format!("{e}\n{}", nodes[owner].log()))?;
    Ok(Some(time))
}

/// Takes `owner`'s link down: the time until the client gets an answer on
/// `vip` again.
fn failover(site: &L2Site, vip: Ipv4Addr, owner: usize) -> Result<Duration, String> {
    let vip = SocketAddr::from((vip, 80));
    get(&site.client, vip).map_err(|e| format!("before the failover: {e}"))?;
    let down = Instant::now();
    site.lbs[owner].ip(&["link", "set", "front", "down"]);
    let deadline = down + Duration::from_secs(60);
    loop {
        if get(&site.client, vip).is_ok() {
            return Ok(down.elapsed());
        }
        if Instant::now() > deadline {
            return Err("no answer within 60 s of the owner's link going down".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
