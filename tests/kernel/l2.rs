//! `ANNOUNCE=l2` against real kernels: three nodes on one flat LAN with a
//! router in front of the client ([`L2Site`]). One node owns the service
//! address and answers ARP for it; when its link goes down, it drops the
//! address when its lease runs out and only then does another node take it
//! and send gratuitous ARP, which re-points the router; the client's
//! requests resume; the old owner coming back takes nothing back; and an
//! owner whose agent is killed (-9) loses the address through its kernel
//! lifetime before another node takes it. Throughout, a watcher checks that
//! no two nodes hold the address at once.

use crate::support::l2site::{L2Site, L2_VIP};
use crate::support::traffic::{get, http_exchange};
use libtest_mimic::Failed;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const HTTP_PORT: u16 = 2221;

struct Node {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Node {
    fn start(site: &L2Site, lb: usize) -> Node {
        let dir = tempfile::TempDir::new().unwrap();
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let mut cmd = site.lbs[lb].cmd(env!("CARGO_BIN_EXE_ipvs-manager"));
        cmd.env("SERVER_PORT", HTTP_PORT.to_string())
            .env("RAFT_PORT", "1111")
            .env("RAFT_NODE_ID", format!("node{}", lb + 1))
            .env("RAFT_VOL_DIR", dir.path().join("data"))
            .env("BIND_ADDR", L2Site::lb_addr(lb).to_string())
            .env("API_OPEN", "true")
            .env("ANNOUNCE", "l2")
            .env("ANNOUNCE_INTERFACE", "front")
            .env("L2_GARP_REFRESH", "2")
            // The emulated VM is some ten times slower than a host: a longer
            // lease (and with it a longer grant age) keeps leases steady.
            .env("L2_LEASE_MS", "3000")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log);
        if lb > 0 {
            cmd.env("RAFT_LEADER", format!("{}:{HTTP_PORT}", L2Site::lb_addr(0)));
        }
        Node {
            child: Some(cmd.spawn().unwrap()),
            dir,
        }
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn api(site: &L2Site, lb: usize, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let addr = SocketAddr::from((L2Site::lb_addr(lb), HTTP_PORT));
    let body = body.map(Value::to_string).unwrap_or_default();
    match http_exchange(&site.lbs[lb], addr, method, path, &body, Duration::from_secs(15)) {
        Ok((status, text)) => (status, serde_json::from_str(&text).unwrap_or(Value::Null)),
        Err(_) => (0, Value::Null),
    }
}

fn wait_for(limit: Duration, what: &str, mut check: impl FnMut() -> bool) -> Result<Duration, Failed> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return Ok(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("timed out after {limit:?} waiting for {what}").into())
}

/// The one load balancer holding the VIP, once exactly one does.
fn owner(site: &L2Site, limit: Duration, not: Option<usize>) -> Result<usize, Failed> {
    let mut found = None;
    wait_for(limit, "one node to hold the VIP", || {
        let h = site.holders();
        found = match h.as_slice() {
            [one] if Some(*one) != not => Some(*one),
            _ => None,
        };
        found.is_some()
    })?;
    Ok(found.unwrap())
}

pub fn owner_moves_fenced_and_announced() -> Result<(), Failed> {
    let site = L2Site::new(2);
    let mut nodes = vec![Node::start(&site, 0)];
    let ready = |lb: usize| api(&site, lb, "GET", "/readyz", None).0 == 200;
    wait_for(Duration::from_secs(60), "node1", || ready(0))
        .map_err(|e| format!("{e:?}\n{}", nodes[0].log()))?;
    for lb in 1..3 {
        nodes.push(Node::start(&site, lb));
        wait_for(Duration::from_secs(60), "a node to join", || ready(lb))
            .map_err(|e| format!("{e:?}\n{}", nodes[lb].log()))?;
    }
    let servers: Vec<Value> = (0..2)
        .map(|i| json!({"address": L2Site::backend_addr(i).to_string(), "port": 80, "forward": "dr"}))
        .collect();
    let service = json!({"protocol": "tcp", "address": L2_VIP.to_string(), "port": 80,
                         "scheduler": "rr", "bind_address": true, "servers": servers});
    let (status, body) = api(&site, 0, "POST", "/api/v1/services?wait=applied", Some(&service));
    assert_eq!(status, 201, "{body}");

    let first = owner(&site, Duration::from_secs(30), None)
        .map_err(|e| format!("{e:?}\n{}", nodes[0].log()))?;
    // Every node's report names the owner.
    let owner_name = format!("node{}", first + 1);
    for lb in 0..3 {
        wait_for(Duration::from_secs(10), "the owner in every report", || {
            let (_, node) = api(&site, lb, "GET", "/api/v1/node", None);
            node["announce"]["vips"][0]["owner"] == owner_name.as_str()
        })?;
    }
    let mut node = Value::Null;
    let _ = wait_for(Duration::from_secs(10), "the owner to report its lease", || {
        node = api(&site, first, "GET", "/api/v1/node", None).1;
        node["announce"]["state"] == "announcing"
    });
    assert_eq!(node["announce"]["mode"], "l2", "{node}");
    assert_eq!(node["announce"]["state"], "announcing", "{node}");
    assert_eq!(node["announce"]["vips"][0]["announced"], true, "{node}");
    assert_eq!(node["announce"]["l2"]["lease_held"], true, "{node}");
    let arp_ok = node["announce"]["sysctls"]
        .as_array()
        .is_some_and(|s| s.len() == 4 && s.iter().all(|v| v["ok"] == true));
    assert!(arp_ok, "{node}");

    let vip = SocketAddr::from((L2_VIP, 80));
    let name = get(&site.client, vip)?;
    assert!(name.starts_with("backend"), "{name}");
    assert_eq!(site.router_neighbour(), Some(site.lb_mac(first)));

    // The watcher: never two holders at once.
    let stop = Arc::new(AtomicBool::new(false));
    let most = Arc::new(AtomicUsize::new(0));
    let watcher = {
        let (stop, most) = (stop.clone(), most.clone());
        let site = &site;
        move || {
            while !stop.load(Ordering::SeqCst) {
                let n = site.holders().len();
                most.fetch_max(n, Ordering::SeqCst);
            }
        }
    };
    // The client: a request every 100 ms, the times of the answers.
    let answered: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let client = {
        let (stop, answered) = (stop.clone(), answered.clone());
        let site = &site;
        move || {
            while !stop.load(Ordering::SeqCst) {
                if get(&site.client, vip).is_ok() {
                    answered.lock().unwrap().push(Instant::now());
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    std::thread::scope(|scope| -> Result<(), Failed> {
        scope.spawn(watcher);
        scope.spawn(client);
        let result = (|| -> Result<(), Failed> {
            std::thread::sleep(Duration::from_secs(1));
            // The owner's link goes down.
            let down = Instant::now();
            site.lbs[first].ip(&["link", "set", "front", "down"]);
            let second = owner(&site, Duration::from_secs(30), Some(first))
                .map_err(|e| format!("{e:?}\n{}", nodes[first].log()))?;
            let moved = down.elapsed();
            wait_for(Duration::from_secs(10), "the router to learn the new owner", || {
                site.router_neighbour() == Some(site.lb_mac(second))
            })?;
            wait_for(Duration::from_secs(20), "the client's requests to resume", || {
                answered.lock().unwrap().last().is_some_and(|t| *t > down + moved)
            })?;
            let resumed = answered
                .lock()
                .unwrap()
                .iter()
                .find(|t| **t > down)
                .map(|t| t.duration_since(down));
            eprintln!("l2: address moved {moved:?} after link down, client answered after {resumed:?}");
            assert!(resumed.is_some_and(|r| r < Duration::from_secs(15)));

            // The old owner comes back: it takes nothing back.
            site.lbs[first].ip(&["link", "set", "front", "up"]);
            std::thread::sleep(Duration::from_secs(4));
            assert_eq!(site.holders(), vec![second], "the returning node took the address back");

            // kill -9 of the owner's agent, its host alive: the kernel drops
            // the address when its lifetime runs out, before another node
            // takes it (the watcher checks), and another node does.
            let killed = Instant::now();
            nodes[second].kill9();
            wait_for(Duration::from_secs(10), "the kernel to drop the killed agent's address", || {
                !site.holders().contains(&second)
            })?;
            let dropped = killed.elapsed();
            let third = owner(&site, Duration::from_secs(30), Some(second))?;
            eprintln!(
                "l2: kill -9: address gone from the killed node after {dropped:?}, \
                 node{} owns it after {:?}",
                third + 1,
                killed.elapsed()
            );
            wait_for(Duration::from_secs(20), "requests after the kill", || {
                answered.lock().unwrap().last().is_some_and(|t| *t > killed + dropped)
            })?;
            Ok(())
        })();
        stop.store(true, Ordering::SeqCst);
        result
    })?;
    assert_eq!(most.load(Ordering::SeqCst), 1, "two nodes held the address at once");
    Ok(())
}
