//! Failover time of `ANNOUNCE=l2`, on the trial's topology
//! (tests/support/l2site.rs): the owner host's link goes down, and the time
//! until the router's neighbour entry names another node (its gratuitous
//! ARP arrived) and until the client's next connection is answered are
//! measured, over repeated trials, once with a follower owning the address
//! and once with the leader owning it. Runs inside the real-kernel VM, as
//! root.
//!
//! The including binary declares, at its crate root,
//! `#[path = "../tests/support/mod.rs"] mod support;` (the topology names
//! its helpers `crate::support::…`) and `#[path = "failover/l2.rs"] mod l2;`.

use crate::support::l2site::{L2Site, L2_VIP, L2_VIP2};
use crate::support::traffic::{get, get_within};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

/// The lease the measurements run with (the default).
pub const LEASE_MS: u32 = 1000;

/// How long the client waits for each connection attempt before trying
/// again: a client relying on TCP's own SYN retransmission (1 s, then 3 s)
/// would measure its retransmission timer, not the failover.
const ATTEMPT: Duration = Duration::from_millis(200);

/// `trials` failovers of each kind with `binary` as the node: the measure's
/// name and the times measured from the owner's link going down.
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
    let column = |times: &[Times], pick: fn(&Times) -> Duration| -> Vec<Duration> {
        times.iter().map(pick).collect()
    };
    Ok(vec![
        (
            "follower owner, link down: router learns".to_string(),
            column(&follower, |t| t.moved),
        ),
        (
            "follower owner, link down: client answered".to_string(),
            column(&follower, |t| t.answered),
        ),
        (
            "leader owner, link down: router learns".to_string(),
            column(&leader, |t| t.moved),
        ),
        (
            "leader owner, link down: client answered".to_string(),
            column(&leader, |t| t.answered),
        ),
    ])
}

/// One failover, from the owner's link going down.
struct Times {
    /// Until the router's neighbour entry for the address names another
    /// node's MAC (its gratuitous ARP arrived).
    moved: Duration,
    /// Until a new connection from the client is answered.
    answered: Duration,
}

/// One failover on a fresh site, of an address the leader owns when
/// `leader` (a follower otherwise); `None` when no address fits.
fn once(binary: &str, leader: bool) -> Result<Option<Times>, String> {
    let mut site = L2Site::new(1);
    // The product's Raft timing, not the trials' slower one.
    site.raft_timing.clear();
    let nodes = site.start_cluster_with(binary, LEASE_MS, &[L2_VIP, L2_VIP2], &[])?;
    let limit = Duration::from_secs(30);
    // The owners once placement has settled (the first node may take both
    // addresses before the others join, and hand one over after).
    let mut owners = [(L2_VIP, 0), (L2_VIP2, 0)];
    for attempt in 0.. {
        let now = [
            (L2_VIP, site.owner_of(L2_VIP, limit, None)?),
            (L2_VIP2, site.owner_of(L2_VIP2, limit, None)?),
        ];
        if now == owners {
            break;
        }
        if attempt == 10 {
            return Err(format!("the owners did not settle: {now:?}"));
        }
        owners = now;
        std::thread::sleep(Duration::from_secs(1));
    }
    let leader_lb = (0..3)
        .find(|lb| site.api(*lb, "GET", "/api/v1/node", None).1["role"] == "leader")
        .ok_or("no leader")?;
    let Some((vip, owner)) = owners
        .into_iter()
        .find(|(_, o)| (*o == leader_lb) == leader)
    else {
        return Ok(None);
    };
    let times = failover(&site, vip, owner).map_err(|e| format!("{e}\n{}", nodes[owner].log()))?;
    Ok(Some(times))
}

/// Takes `owner`'s link down and measures until the router learns another
/// owner of `vip` and until the client gets an answer on it again.
fn failover(site: &L2Site, vip: Ipv4Addr, owner: usize) -> Result<Times, String> {
    let old_mac = site.lb_mac(owner);
    let service = SocketAddr::from((vip, 80));
    // The router must know the owner first (the owner's gratuitous ARP, or
    // an answer to the router's own request when the client's request
    // goes through).
    let known = Instant::now() + Duration::from_secs(10);
    loop {
        get(&site.client, service).map_err(|e| format!("before the failover: {e}"))?;
        match site.router_neighbour_of(vip) {
            Some(mac) if mac == old_mac => break,
            found if Instant::now() > known => {
                return Err(format!(
                    "before the failover: the router has {found:?} for {vip}, not the owner's {old_mac}"
                ))
            }
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
    let down = Instant::now();
    site.lbs[owner].ip(&["link", "set", "front", "down"]);
    let deadline = down + Duration::from_secs(60);
    std::thread::scope(|scope| {
        let moved = scope.spawn(|| loop {
            if site
                .router_neighbour_of(vip)
                .is_some_and(|mac| mac != old_mac)
            {
                return Ok(down.elapsed());
            }
            if Instant::now() > deadline {
                return Err("the router learned no other owner within 60 s".to_string());
            }
            std::thread::sleep(Duration::from_millis(10));
        });
        let answered = loop {
            if get_within(&site.client, service, ATTEMPT).is_ok() {
                break down.elapsed();
            }
            if Instant::now() > deadline {
                return Err("no answer within 60 s of the owner's link going down".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let moved = moved
            .join()
            .map_err(|_| "the neighbour watcher panicked")??;
        Ok(Times { moved, answered })
    })
}
