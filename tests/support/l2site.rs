//! The flat network of `ANNOUNCE=l2`, shared by the kernel trial
//! (tests/kernel/l2.rs) and the failover benchmark:
//!
//! ```text
//!   front LAN 10.81.0.0/24 (one bridge)                client LAN 10.82.0.0/24
//!   [lb1] .1  [lb2] .2  [lb3] .3  --+-- .254 [router] .1 --+-- .10 [client]
//!   [backend1] .11 [backend2] .12 --+
//! ```
//!
//! The service address [`L2_VIP`] is on the front LAN: the router finds its
//! owner by ARP. The backends take direct-routed packets (the address on
//! their `lo`, ARP for it off) and answer the client through the router, so
//! any load balancer can direct any connection.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::support::topology::{Lan, VM_RAFT_TIMING};
use crate::support::traffic::http_exchange;
use crate::support::{Backend, Netns};

/// The service address, on the front LAN.
pub const L2_VIP: Ipv4Addr = Ipv4Addr::new(10, 81, 0, 100);
/// A second one (placement spreads the two over two nodes).
pub const L2_VIP2: Ipv4Addr = Ipv4Addr::new(10, 81, 0, 101);
pub const ROUTER_FRONT: Ipv4Addr = Ipv4Addr::new(10, 81, 0, 254);
pub const L2_CLIENT: Ipv4Addr = Ipv4Addr::new(10, 82, 0, 10);

/// The API port of every node.
pub const L2_HTTP_PORT: u16 = 2221;

/// One `ipvs-manager` node with `ANNOUNCE=l2` in a load balancer's
/// namespace; killed (-9) on drop.
pub struct L2Node {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl L2Node {
    /// Starts `binary` as lbN's node (lb1 bootstraps, the others join it),
    /// with an L2_LEASE_MS of `lease_ms`.
    pub fn start(binary: &str, site: &L2Site, lb: usize, lease_ms: u32) -> L2Node {
        L2Node::start_with(binary, site, lb, lease_ms, &[])
    }

    /// [`Self::start`] with more variables (`SYNC_INTERFACE`...).
    pub fn start_with(
        binary: &str,
        site: &L2Site,
        lb: usize,
        lease_ms: u32,
        extra: &[(&str, &str)],
    ) -> L2Node {
        let dir = tempfile::TempDir::new().expect("a temporary directory");
        let log = std::fs::File::create(dir.path().join("log")).expect("the node's log");
        let mut cmd = site.lbs[lb].cmd(binary);
        cmd.env("SERVER_PORT", L2_HTTP_PORT.to_string())
            .env("RAFT_PORT", "1111")
            .envs(site.raft_timing.iter().copied())
            .env("RAFT_NODE_ID", format!("node{}", lb + 1))
            .env("RAFT_VOL_DIR", dir.path().join("data"))
            .env("BIND_ADDR", L2Site::lb_addr(lb).to_string())
            .env("API_OPEN", "true")
            .env("ANNOUNCE", "l2")
            .env("ANNOUNCE_INTERFACE", "front")
            .env("L2_GARP_REFRESH", "2")
            .env("L2_LEASE_MS", lease_ms.to_string())
            .env("RUST_LOG", "info")
            .envs(extra.iter().copied())
            .stdout(Stdio::null())
            .stderr(log);
        if lb > 0 {
            cmd.env(
                "RAFT_LEADER",
                format!("{}:{L2_HTTP_PORT}", L2Site::lb_addr(0)),
            );
        }
        L2Node {
            child: Some(cmd.spawn().expect("the node starts")),
            dir,
        }
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }
}

impl Drop for L2Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Polls `check` every 50 ms for up to `limit`: how long it took.
pub fn wait_until(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> bool,
) -> Result<Duration, String> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return Ok(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("timed out after {limit:?} waiting for {what}"))
}

/// The namespaces and LANs; dropping it removes them.
pub struct L2Site {
    pub lbs: [Netns; 3],
    pub router: Netns,
    pub client: Netns,
    pub backends: Vec<(Netns, Backend)>,
    pub front: Lan,
    pub clients: Lan,
    /// Raft settings every node starts with ([`VM_RAFT_TIMING`]).
    pub raft_timing: Vec<(&'static str, &'static str)>,
}

impl L2Site {
    /// lbN's address on the front LAN: 10.81.0.N (index from 0).
    pub fn lb_addr(lb: usize) -> Ipv4Addr {
        Ipv4Addr::new(
            10,
            81,
            0,
            u8::try_from(lb + 1).expect("three load balancers"),
        )
    }

    pub fn backend_addr(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 81, 0, u8::try_from(i + 11).expect("a few backends"))
    }

    pub fn new(backends: usize) -> L2Site {
        let front = Lan::new();
        let clients = Lan::new();
        let lbs = [Netns::new(), Netns::new(), Netns::new()];
        let router = Netns::new();
        let client = Netns::new();
        for (i, lb) in lbs.iter().enumerate() {
            front.attach(lb, "front", &format!("{}/24", Self::lb_addr(i)));
        }
        front.attach(&router, "lan", &format!("{ROUTER_FRONT}/24"));
        clients.attach(&router, "cl", "10.82.0.1/24");
        router.enable_forwarding();
        clients.attach(&client, "eth0", &format!("{L2_CLIENT}/24"));
        client.ip(&["route", "add", "default", "via", "10.82.0.1"]);
        let backends = (0..backends)
            .map(|i| {
                let ns = Netns::new();
                front.attach(&ns, "eth0", &format!("{}/24", Self::backend_addr(i)));
                for scope in ["all", "eth0"] {
                    ns.sysctl(&format!("net.ipv4.conf.{scope}.arp_ignore"), "1");
                    ns.sysctl(&format!("net.ipv4.conf.{scope}.arp_announce"), "2");
                }
                ns.ip_batch(&format!(
                    "addr add {L2_VIP}/32 dev lo\naddr add {L2_VIP2}/32 dev lo\n\
                     route add default via {ROUTER_FRONT}\n"
                ));
                let backend = Backend::start(
                    &ns,
                    &format!("backend{}", i + 1),
                    SocketAddr::from(([0, 0, 0, 0], 80)),
                );
                (ns, backend)
            })
            .collect();
        L2Site {
            lbs,
            router,
            client,
            backends,
            front,
            clients,
            raft_timing: VM_RAFT_TIMING.to_vec(),
        }
    }

    /// One HTTP/1.0 exchange with lbN's API: status and JSON body (0 and
    /// null when it does not answer).
    pub fn api(
        &self,
        lb: usize,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let addr = SocketAddr::from((Self::lb_addr(lb), L2_HTTP_PORT));
        let body = body.map(serde_json::Value::to_string).unwrap_or_default();
        match http_exchange(
            &self.lbs[lb],
            addr,
            method,
            path,
            &body,
            Duration::from_secs(15),
        ) {
            Ok((status, text)) => (
                status,
                serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
            ),
            Err(_) => (0, serde_json::Value::Null),
        }
    }

    /// Starts the three nodes, each ready, and creates the direct-routed
    /// service on [`L2_VIP`] over every backend.
    pub fn start_cluster(&self, binary: &str, lease_ms: u32) -> Result<Vec<L2Node>, String> {
        self.start_cluster_with(binary, lease_ms, &[L2_VIP], &[])
    }

    /// The same with a service on each of `vips`, created in order, and
    /// more variables for every node.
    pub fn start_cluster_with(
        &self,
        binary: &str,
        lease_ms: u32,
        vips: &[Ipv4Addr],
        extra: &[(&str, &str)],
    ) -> Result<Vec<L2Node>, String> {
        let mut nodes: Vec<L2Node> = Vec::new();
        for lb in 0..3 {
            nodes.push(L2Node::start_with(binary, self, lb, lease_ms, extra));
            wait_until(Duration::from_secs(60), "a node to be ready", || {
                self.api(lb, "GET", "/readyz", None).0 == 200
            })
            .map_err(|e| {
                let logs: Vec<String> = nodes.iter().map(L2Node::log).collect();
                format!("{e}\n{}", logs.join("\n----\n"))
            })?;
        }
        let servers: Vec<serde_json::Value> = (0..self.backends.len())
            .map(|i| {
                serde_json::json!({"address": Self::backend_addr(i).to_string(), "port": 80,
                                   "forward": "dr"})
            })
            .collect();
        for vip in vips {
            let service = serde_json::json!({"protocol": "tcp", "address": vip.to_string(),
                "port": 80, "scheduler": "rr", "bind_address": true, "servers": servers});
            // An election under way (the emulated VM has many) answers
            // no_leader with nothing written: tried again for a while.
            let mut answer = (0, serde_json::Value::Null);
            let _ = wait_until(
                Duration::from_secs(30),
                "a leader to take the write",
                || {
                    answer = self.api(0, "POST", "/api/v1/services?wait=applied", Some(&service));
                    answer.1["error"]["code"] != "no_leader"
                },
            );
            let (status, body) = answer;
            if status != 201 {
                return Err(format!("creating the service on {vip}: {status} {body}"));
            }
        }
        Ok(nodes)
    }

    /// The one load balancer holding the VIP once exactly one (other than
    /// `not`) does, within `limit`.
    pub fn owner(&self, limit: Duration, not: Option<usize>) -> Result<usize, String> {
        self.owner_of(L2_VIP, limit, not)
    }

    /// [`Self::owner`] of `vip`.
    pub fn owner_of(
        &self,
        vip: Ipv4Addr,
        limit: Duration,
        not: Option<usize>,
    ) -> Result<usize, String> {
        let mut found = None;
        wait_until(limit, "one node to hold the VIP", || {
            found = match self.holders_of(vip).as_slice() {
                [one] if Some(*one) != not => Some(*one),
                _ => None,
            };
            found.is_some()
        })?;
        found.ok_or_else(|| "no owner".to_string())
    }

    /// The MAC of lbN's front interface.
    pub fn lb_mac(&self, lb: usize) -> String {
        let out = self.lbs[lb].ip(&["-o", "link", "show", "front"]);
        out.split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .unwrap_or_default()
            .to_string()
    }

    /// The MAC the router's neighbour table has for the VIP, if any.
    pub fn router_neighbour(&self) -> Option<String> {
        self.router_neighbour_of(L2_VIP)
    }

    /// The MAC the router's neighbour table has for `vip`, if any.
    pub fn router_neighbour_of(&self, vip: Ipv4Addr) -> Option<String> {
        let out = self
            .router
            .ip(&["neigh", "show", &vip.to_string(), "dev", "lan"]);
        out.split_whitespace()
            .skip_while(|w| *w != "lladdr")
            .nth(1)
            .map(String::from)
    }

    /// The load balancers holding [`L2_VIP`] on their front interface now.
    pub fn holders(&self) -> Vec<usize> {
        self.holders_of(L2_VIP)
    }

    /// The load balancers holding `vip` on their front interface now.
    /// Read in-process (getifaddrs inside each namespace): polled in a loop,
    /// an `ip` process a namespace would eat an emulated CPU.
    pub fn holders_of(&self, vip: Ipv4Addr) -> Vec<usize> {
        (0..3)
            .filter(|lb| {
                self.lbs[*lb].run(|| {
                    nix::ifaddrs::getifaddrs().is_ok_and(|mut all| {
                        all.any(|i| {
                            i.interface_name == "front"
                                && i.address
                                    .as_ref()
                                    .and_then(|a| a.as_sockaddr_in())
                                    .is_some_and(|a| a.ip() == vip)
                        })
                    })
                })
            })
            .collect()
    }
}
