//! `ANNOUNCE=bgp` against real kernels and real BIRDs: a router running
//! BIRD 2 with ECMP and BFD, three nodes each running its managed BIRD,
//! direct-routed HTTP backends, a client behind the router
//! ([`BgpSite`](crate::support::bgp::BgpSite)). The router's FIB is the
//! judge: a next hop per node that can serve, none for one that cannot,
//! withdrawn before a stopping node exits, gone within BFD time when a
//! node's link dies, back when the node restarts its BIRD after a crash;
//! flows the routers move keep working (`mh`, sloppy TCP).

use crate::support::bgp::{self, api, backend_addr, hop, start_cluster, BgpNode, BgpSite, VIP};
use crate::support::traffic::{get, Held};
use libtest_mimic::Failed;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIRD: &str = "/usr/sbin/bird";

fn logs(site: &BgpSite, nodes: &[BgpNode]) -> String {
    let mut out = format!("--- router BIRD\n{}", site.router_log());
    for n in nodes {
        out += &format!("\n--- node{}\n{}", n.index + 1, n.log());
    }
    out
}

/// One exchange on every held connection; on a failure, where each node's
/// IPVS table sends that connection, and the nodes' health changes.
fn exchange_all(
    site: &BgpSite,
    nodes: &[BgpNode],
    held: &mut [Held],
    when: &str,
) -> Result<(), Failed> {
    for (i, h) in held.iter_mut().enumerate() {
        let line = format!("{when} {i}");
        match h.exchange(&line) {
            Ok(answer) if answer == format!("{} {line}", h.backend()) => {}
            outcome => {
                let entries: Vec<String> = (0..3)
                    .map(|lb| {
                        let on: Vec<String> = site.lbs[lb]
                            .ipvs_connections()
                            .into_iter()
                            .filter(|c| c.source == h.local_addr())
                            .map(|c| format!("{} {}", c.state, c.destination))
                            .collect();
                        format!("lb{}: {on:?}", lb + 1)
                    })
                    .collect();
                let health: Vec<String> = nodes
                    .iter()
                    .flat_map(|n| {
                        n.log()
                            .lines()
                            .filter(|l| l.contains("real server is"))
                            .map(|l| format!("node{}: {l}", n.index + 1))
                            .collect::<Vec<_>>()
                    })
                    .collect();
                return Err(format!(
                    "held connection {i} to {}: {outcome:?}\n{}\n{}",
                    h.backend(),
                    entries.join("\n"),
                    health.join("\n")
                )
                .into());
            }
        }
    }
    Ok(())
}

fn announce_view(site: &BgpSite, lb: usize) -> Value {
    api(site, lb, "GET", "/api/v1/node", None).1["announce"].clone()
}

/// Waits until node `lb` finds every server it probes up.
fn every_server_up(site: &BgpSite, lb: usize, limit: Duration) -> Result<(), String> {
    let start = Instant::now();
    loop {
        let node = api(site, lb, "GET", "/api/v1/node", None).1;
        let servers = node["health"]["servers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if !servers.is_empty() && servers.iter().all(|p| p["state"] == "up") {
            return Ok(());
        }
        if start.elapsed() > limit {
            return Err(format!(
                "lb{} does not find every server up after {limit:?}: {:#}",
                lb + 1,
                node["health"]
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn routes_follow_what_each_node_can_serve() -> Result<(), Failed> {
    let started = Instant::now();
    let site = BgpSite::new(3, BIRD);
    let _backends = site.start_backends();
    let mut nodes = start_cluster(&site, env!("CARGO_BIN_EXE_ipvs-manager"), BIRD)?;
    let failed =
        |e: String, nodes: &[BgpNode]| -> Failed { format!("{e}\n{}", logs(&site, nodes)).into() };

    // Every node can serve: three next hops.
    let took =
        bgp::announce_service(&site, 3, Duration::from_secs(120)).map_err(|e| failed(e, &nodes))?;
    eprintln!("three next hops {took:?} after the service was applied");
    for lb in 0..3 {
        // The view settles within a tick of the route going out.
        let mut view = Value::Null;
        let settled = (0..50).any(|_| {
            view = announce_view(&site, lb);
            let ok = view["state"] == "announcing"
                && view["bgp"]["peers"][0]["state"] == "Established"
                && view["bgp"]["peers"][0]["exported"] == 1
                && view["bgp"]["peers"][0]["bfd"] == "Up";
            if !ok {
                std::thread::sleep(Duration::from_millis(200));
            }
            ok
        });
        assert!(settled, "node{}: {view:#}", lb + 1);
        assert_eq!(view["mode"], "bgp");
        assert_eq!(view["problem"], Value::Null, "{view:#}");
        assert_eq!(view["vips"][0]["address"], VIP.to_string());
        assert_eq!(view["vips"][0]["announced"], true);
        assert_eq!(view["bgp"]["table"], 221);
        assert_eq!(view["bgp"]["bfd_detect_ms"], 1000);
        let sysctls = view["sysctls"].as_array().cloned().unwrap_or_default();
        assert_eq!(sysctls.len(), 3, "{view:#}");
        assert!(sysctls.iter().all(|s| s["ok"] == true), "{view:#}");
        // The table: exactly the VIP's route.
        let table = site.lbs[lb].ip(&["-4", "route", "show", "table", "221"]);
        assert_eq!(table.lines().count(), 1, "{table}");
        assert!(table.starts_with(&format!("blackhole {VIP} ")), "{table}");
    }

    // The client reaches the service through every node.
    let vip = SocketAddr::from((VIP, 80));
    for _ in 0..30 {
        let answer = get(&site.client, vip)?;
        assert!(answer.starts_with("backend"), "{answer}");
    }
    let carrying = (0..3)
        .filter(|&lb| !site.lbs[lb].ipvs_connections().is_empty())
        .count();
    assert!(
        carrying >= 2,
        "30 connections went through {carrying} node(s) only"
    );

    // node1 loses its path to every backend: its checks fail, it
    // withdraws; the others still reach them and keep announcing.
    let prohibit = |verb: &str| {
        let lines: String = (0..3)
            .map(|i| format!("route {verb} prohibit {}/32\n", backend_addr(i)))
            .collect();
        site.lbs[0].ip_batch(&lines);
    };
    prohibit("add");
    // First node1's own word that it withdrew (its checks take interval ×
    // fall), then the router's: a session flapping on the emulated CPU can
    // show two next hops for a moment before that.
    let start = Instant::now();
    let view = loop {
        let view = announce_view(&site, 0);
        if view["vips"][0]["announced"] == false {
            break view;
        }
        if start.elapsed() > Duration::from_secs(30) {
            return Err(failed(
                format!("lb1 still announces after 30 s: {view:#}"),
                &nodes,
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    site.wait_next_hops(&[hop(1), hop(2)], Duration::from_secs(30))
        .map_err(|e| failed(e, &nodes))?;
    assert!(
        view["vips"][0]["why_not"]
            .as_str()
            .unwrap_or("")
            .contains("every server"),
        "{view:#}"
    );
    assert_eq!(view["state"], "idle", "{view:#}");
    assert_eq!(site.lbs[0].ip(&["-4", "route", "show", "table", "221"]), "");
    prohibit("del");
    site.wait_next_hops(&[hop(0), hop(1), hop(2)], Duration::from_secs(30))
        .map_err(|e| failed(e, &nodes))?;
    // node1 announces again once one server is up in its view; the held
    // connections below may move to it, and `mh` sends a flow to the same
    // server on every node only while their views agree: wait until it
    // finds every server up again.
    every_server_up(&site, 0, Duration::from_secs(30)).map_err(|e| failed(e, &nodes))?;

    // SIGTERM of the node holding a long-lived connection, with requests
    // running through the stop: its route leaves the router's FIB before
    // it exits, no request fails, the held connections (moved to the
    // other nodes by the router's rehash) keep working.
    let mut held: Vec<Held> = (0..6)
        .map(|_| Held::open(&site.client, vip))
        .collect::<Result<_, _>>()?;
    let victim = bgp::holder(&site, held[0].local_addr()).ok_or("no node holds connection 0")?;
    let others: Vec<usize> = (0..3).filter(|&lb| lb != victim).collect();
    let running = Arc::new(AtomicBool::new(true));
    let outcome = Arc::new(Mutex::new((0usize, Vec::<String>::new())));
    let client = std::thread::scope(|scope| -> Result<(Duration, Duration), Failed> {
        let loop_ = {
            let (running, outcome, client) = (running.clone(), outcome.clone(), &site.client);
            scope.spawn(move || {
                while running.load(Ordering::SeqCst) {
                    let result = get(client, vip);
                    let mut o = outcome.lock().unwrap();
                    match result {
                        Ok(_) => o.0 += 1,
                        Err(e) => o.1.push(e.to_string()),
                    }
                }
            })
        };
        std::thread::sleep(Duration::from_secs(1));
        nodes[victim].terminate()?;
        let sent = Instant::now();
        let others_hops: Vec<_> = others.iter().map(|&lb| hop(lb)).collect();
        let mut withdrawn = None;
        let exited = loop {
            if withdrawn.is_none() && site.next_hops(VIP) == others_hops {
                withdrawn = Some(sent.elapsed());
            }
            if nodes[victim].exited() {
                break sent.elapsed();
            }
            if sent.elapsed() > Duration::from_secs(60) {
                running.store(false, Ordering::SeqCst);
                return Err(failed(
                    "the node did not exit within 60 s of SIGTERM".into(),
                    &nodes,
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        std::thread::sleep(Duration::from_secs(1));
        running.store(false, Ordering::SeqCst);
        let _ = loop_.join();
        let withdrawn = withdrawn.ok_or_else(|| {
            failed(
                format!(
                    "the node exited after {exited:?} with its next hop still in the router's FIB"
                ),
                &nodes,
            )
        })?;
        Ok((withdrawn, exited))
    })?;
    let (withdrawn, exited) = client;
    eprintln!("SIGTERM: next hop gone after {withdrawn:?}, node exited after {exited:?}");
    assert!(withdrawn < exited);
    let (ok, errors) = outcome.lock().unwrap().clone();
    assert!(
        errors.is_empty(),
        "{} of {} requests failed: {errors:?}",
        errors.len(),
        ok + errors.len()
    );
    assert!(ok >= 5, "only {ok} requests ran through the stop");
    let log = nodes[victim].log();
    assert!(log.contains("BIRD withdrew every route"), "{log}");
    exchange_all(&site, &nodes, &mut held, "after the stop")?;

    // One of the others loses its link: BFD takes its next hop out well
    // before BGP's hold time would; the held connections move again.
    let (downed, last) = (others[0], others[1]);
    site.lbs[downed].ip(&["link", "set", "servers", "down"]);
    let took = site
        .wait_next_hops(&[hop(last)], Duration::from_secs(15))
        .map_err(|e| failed(e, &nodes))?;
    eprintln!("link down: next hop gone after {took:?} (BFD detection 1 s)");
    exchange_all(&site, &nodes, &mut held, "after the link went down")?;
    for h in held {
        h.close()?;
    }

    // The last node's BIRD dies: its session (and next hop) goes with it;
    // the node starts BIRD again and the route comes back.
    let conf = nodes[last].bird_dir().join("bird.conf");
    let pids = std::process::Command::new("pgrep")
        .arg("-f")
        .arg("--")
        .arg(format!("-c {}", conf.display()))
        .output()?;
    let pid = String::from_utf8_lossy(&pids.stdout)
        .split_whitespace()
        .next()
        .map(str::to_owned)
        .ok_or("no BIRD running for the last node")?;
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status()?;
    assert!(killed.success());
    site.wait_next_hops(&[], Duration::from_secs(15))
        .map_err(|e| failed(e, &nodes))?;
    let took = site
        .wait_next_hops(&[hop(last)], Duration::from_secs(90))
        .map_err(|e| failed(e, &nodes))?;
    eprintln!("BIRD killed: restarted and the route back after {took:?}");
    let log = nodes[last].log();
    assert!(log.contains("BIRD exited; restarting it"), "{log}");
    eprintln!("bgp trial took {:?}", started.elapsed());
    Ok(())
}
