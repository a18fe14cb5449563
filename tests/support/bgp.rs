//! A routed site for `ANNOUNCE=bgp`, shared by the real-kernel trial
//! (tests/kernel/bgp.rs) and the failover benchmark
//! (examples/failover/bgp.rs): a router running its own BIRD 2 with ECMP
//! and BFD, a client behind it, three load balancers each running an
//! ipvs-manager node with its managed BIRD, and HTTP backends served by
//! direct routing.
//!
//! ```text
//!   [client] .10 ---- client LAN 10.79.0.0/24 ---- .254 [router] AS 65000
//!                                                      .254
//!                                                        |
//!       server LAN 10.78.0.0/24 (BGP, BFD, DR) ----------+
//!        |            |            |            |
//!   .1 [lb1]     .2 [lb2]     .3 [lb3]     .11.. [backendN]
//!        AS 65001, each a node        VIPs local, default via .254
//!        |            |            |
//!   management LAN 10.77.0.0/24 (Raft, API), lbN at .N
//! ```
//!
//! Direct routing, because ECMP sends a flow's packets through whichever
//! load balancer the router hashes it to, and that can change mid-flow: the
//! backends answer the client straight through the router, so no load
//! balancer needs to see (or to have seen) the replies, and with `mh` and
//! sloppy TCP any of them sends a flow's packets to the same backend.
//!
//! Uses only its siblings (`super::Netns`, `super::topology`,
//! `super::traffic`), so the benchmark can include the same files.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::topology::{Lan, VM_RAFT_TIMING};
use super::traffic::{http_exchange, Backend};
use super::Netns;

/// The service address the trial announces.
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 80, 0, 1);
pub const ROUTER_AS: u32 = 65000;
pub const LB_AS: u32 = 65001;
/// The router on the server LAN (the nodes' BGP peer, the backends'
/// gateway) and on the client LAN.
pub const ROUTER_SERVER_SIDE: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 254);
pub const ROUTER_CLIENT_SIDE: Ipv4Addr = Ipv4Addr::new(10, 79, 0, 254);
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 79, 0, 10);
pub const HTTP_PORT: u16 = 2221;
/// BFD as both sides run it: generous for an emulated CPU (detection in
/// interval × multiplier = 1 s).
pub const BFD_INTERVAL_MS: u32 = 200;
pub const BFD_MULTIPLIER: u32 = 5;

/// The BFD timing of this site: [`BFD_INTERVAL_MS`] × [`BFD_MULTIPLIER`],
/// or `TEST_BGP_BFD=INTERVALxMULTIPLIER` (for the failover benchmark, to
/// measure another timing, such as the product's default `100x3`).
pub fn bfd() -> (u32, u32) {
    std::env::var("TEST_BGP_BFD")
        .ok()
        .and_then(|v| {
            let (i, m) = v.split_once('x')?;
            Some((i.parse().ok()?, m.parse().ok()?))
        })
        .unwrap_or((BFD_INTERVAL_MS, BFD_MULTIPLIER))
}

/// lbN on the management LAN: 10.77.0.N.
pub fn management_addr(lb: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, lb as u8 + 1)
}

/// lbN on the server LAN: 10.78.0.N.
pub fn server_lan_addr(lb: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 78, 0, lb as u8 + 1)
}

/// backendN+1 on the server LAN: 10.78.0.(N + 11).
pub fn backend_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 78, 0, i as u8 + 11)
}

/// The router's BIRD: one session per load balancer, BFD on each, every
/// learnt route into the kernel with ECMP (`merge paths`).
pub fn router_config() -> String {
    let (interval, multiplier) = bfd();
    let mut c = format!(
        "router id {ROUTER_SERVER_SIDE};\n\
         log stderr all;\n\
         protocol device {{}}\n\
         protocol kernel {{\n  ipv4 {{ import none; export all; }};\n  merge paths on;\n}}\n\
         protocol bfd {{\n  interface \"*\" {{ interval {interval} ms; multiplier {multiplier}; }};\n}}\n"
    );
    for lb in 0..3 {
        c += &format!(
            "protocol bgp lb{n} {{\n  local {ROUTER_SERVER_SIDE} as {ROUTER_AS};\n  \
             neighbor {addr} as {LB_AS};\n  bfd on;\n  ipv4 {{ import all; export none; }};\n}}\n",
            n = lb + 1,
            addr = server_lan_addr(lb),
        );
    }
    c
}

/// The site: namespaces, LANs, the router's BIRD (stopped on drop).
pub struct BgpSite {
    pub router: Netns,
    pub client: Netns,
    pub lbs: [Netns; 3],
    pub backends: Vec<Netns>,
    pub management: Lan,
    pub servers: Lan,
    pub clients: Lan,
    router_bird: Option<Child>,
    /// The router's BIRD files.
    pub dir: tempfile::TempDir,
    /// Raft settings every node starts with ([`VM_RAFT_TIMING`]).
    pub raft_timing: Vec<(&'static str, &'static str)>,
}

impl Drop for BgpSite {
    fn drop(&mut self) {
        if let Some(mut bird) = self.router_bird.take() {
            let _ = bird.kill();
            let _ = bird.wait();
        }
    }
}

impl BgpSite {
    /// Builds the site with `backends` backends and starts the router's
    /// BIRD (`bird` is its binary).
    pub fn new(backends: usize, bird: &str) -> Self {
        let [management, servers, clients] = [Lan::new(), Lan::new(), Lan::new()];
        let router = Netns::new();
        let client = Netns::new();
        let lbs = [Netns::new(), Netns::new(), Netns::new()];
        let backend_ns: Vec<Netns> = (0..backends).map(|_| Netns::new()).collect();

        let mut server_ends: Vec<(&Netns, &str)> = vec![(&router, "servers")];
        server_ends.extend(lbs.iter().map(|lb| (lb, "servers")));
        server_ends.extend(backend_ns.iter().map(|b| (b, "eth0")));
        servers.plug(&server_ends);
        clients.plug(&[(&router, "clients"), (&client, "eth0")]);
        management.plug(&lbs.iter().map(|lb| (lb, "mgmt")).collect::<Vec<_>>());

        router.ip_batch(&format!(
            "addr add {ROUTER_SERVER_SIDE}/24 dev servers\nlink set servers up\n\
             addr add {ROUTER_CLIENT_SIDE}/24 dev clients\nlink set clients up\n"
        ));
        router.enable_forwarding();
        // ECMP by the flow's ports too, so one client's connections spread
        // over the load balancers.
        router.sysctl("net.ipv4.fib_multipath_hash_policy", "1");
        client.ip_batch(&format!(
            "addr add {CLIENT}/24 dev eth0\nlink set eth0 up\n\
             route add default via {ROUTER_CLIENT_SIDE}\n"
        ));
        for (i, lb) in lbs.iter().enumerate() {
            lb.ip_batch(&format!(
                "addr add {}/24 dev mgmt\nlink set mgmt up\n\
                 addr add {}/24 dev servers\nlink set servers up\n\
                 route add default via {ROUTER_SERVER_SIDE}\n",
                management_addr(i),
                server_lan_addr(i)
            ));
        }
        for (i, b) in backend_ns.iter().enumerate() {
            // The VIPs are local (direct routing delivers packets still
            // addressed to them) but never answered for in ARP.
            b.ip_batch(&format!(
                "addr add {}/24 dev eth0\nlink set eth0 up\n\
                 route add local 10.80.0.0/24 dev lo\n\
                 route add default via {ROUTER_SERVER_SIDE}\n",
                backend_addr(i)
            ));
            b.sysctl("net.ipv4.conf.all.arp_ignore", "1");
            b.sysctl("net.ipv4.conf.all.arp_announce", "2");
        }

        let dir = tempfile::TempDir::new().expect("a directory for the router's BIRD");
        let conf = dir.path().join("router.conf");
        std::fs::write(&conf, router_config()).expect("writing the router's BIRD config");
        let log = std::fs::File::create(dir.path().join("router.log")).expect("router log");
        let router_bird = router
            .cmd(bird)
            .arg("-f")
            .arg("-c")
            .arg(&conf)
            .arg("-s")
            .arg(dir.path().join("router.ctl"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the router's BIRD {bird:?}: {e}"));
        BgpSite {
            router,
            client,
            lbs,
            backends: backend_ns,
            management,
            servers,
            clients,
            router_bird: Some(router_bird),
            dir,
            raft_timing: VM_RAFT_TIMING.to_vec(),
        }
    }

    /// HTTP backends on every backend namespace, port 80 on every address
    /// (their own for health checks, the VIP for direct-routed traffic).
    pub fn start_backends(&self) -> Vec<Backend> {
        self.backends
            .iter()
            .enumerate()
            .map(|(i, ns)| {
                Backend::start(
                    ns,
                    &format!("backend{}", i + 1),
                    SocketAddr::from(([0, 0, 0, 0], 80)),
                )
            })
            .collect()
    }

    /// The next hops of the router's FIB route to `vip`, sorted.
    pub fn next_hops(&self, vip: Ipv4Addr) -> Vec<Ipv4Addr> {
        let shown = self
            .router
            .ip(&["-4", "route", "show", &format!("{vip}/32")]);
        let words: Vec<&str> = shown.split_whitespace().collect();
        let mut hops: Vec<Ipv4Addr> = words
            .windows(2)
            .filter(|w| w[0] == "via")
            .filter_map(|w| w[1].parse().ok())
            .collect();
        hops.sort();
        hops
    }

    /// Waits until the router's FIB has exactly `want` next hops for the
    /// VIP; the time it took.
    pub fn wait_next_hops(&self, want: &[Ipv4Addr], limit: Duration) -> Result<Duration, String> {
        let start = Instant::now();
        let mut want = want.to_vec();
        want.sort();
        loop {
            let now = self.next_hops(VIP);
            if now == want {
                return Ok(start.elapsed());
            }
            if start.elapsed() > limit {
                return Err(format!(
                    "the router's next hops for {VIP} are {now:?}, not {want:?}, after {limit:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The router BIRD's log.
    pub fn router_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("router.log")).unwrap_or_default()
    }
}

/// An ipvs-manager node with ANNOUNCE=bgp in a load balancer's namespace.
pub struct BgpNode {
    pub index: usize,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

impl BgpNode {
    /// Starts node `index` (node1 bootstraps, the others join it).
    pub fn start(site: &BgpSite, index: usize, binary: &str, bird: &str) -> BgpNode {
        let mut node = BgpNode {
            index,
            dir: tempfile::TempDir::new().expect("a node directory"),
            child: None,
        };
        node.spawn(site, binary, bird);
        node
    }

    /// Starts the process (again: a restart keeps the data directory, so
    /// the node resumes its place in the cluster).
    pub fn spawn(&mut self, site: &BgpSite, binary: &str, bird: &str) {
        let index = self.index;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("log"))
            .expect("node log");
        let mut cmd = site.lbs[index].cmd(binary);
        cmd.env("SERVER_PORT", HTTP_PORT.to_string())
            .env("RAFT_PORT", "1111")
            .envs(site.raft_timing.iter().copied())
            .env("RAFT_NODE_ID", format!("node{}", index + 1))
            .env("RAFT_VOL_DIR", self.dir.path().join("data"))
            .env("BIND_ADDR", management_addr(index).to_string())
            .env("API_OPEN", "true")
            .env("RESYNC_INTERVAL", "2")
            .env("ANNOUNCE", "bgp")
            .env("BGP_LOCAL_AS", LB_AS.to_string())
            .env("BGP_PEERS", format!("{ROUTER_AS}@{ROUTER_SERVER_SIDE}"))
            .env("BGP_ROUTER_ID", server_lan_addr(index).to_string())
            .env("BGP_BFD_INTERVAL_MS", bfd().0.to_string())
            .env("BGP_BFD_MULTIPLIER", bfd().1.to_string())
            .env("BIRD_BINARY", bird)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if index > 0 {
            cmd.env("RAFT_LEADER", format!("{}:{HTTP_PORT}", management_addr(0)));
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary}: {e}"));
        self.child = Some(child);
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends SIGTERM (the node withdraws, then exits).
    pub fn terminate(&self) -> Result<(), String> {
        let pid = self.pid().ok_or("the node is not running")?;
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .map_err(|e| format!("kill: {e}"))?;
        status
            .success()
            .then_some(())
            .ok_or_else(|| format!("kill -TERM {pid}: {status}"))
    }

    /// Whether the process has exited (reaping it when it has).
    pub fn exited(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(Some(_))) | None => {
                self.child = None;
                true
            }
            _ => false,
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// The managed BIRD's files (RAFT_VOL_DIR/bird).
    pub fn bird_dir(&self) -> PathBuf {
        self.dir.path().join("data").join("bird")
    }
}

impl Drop for BgpNode {
    fn drop(&mut self) {
        self.kill();
        // A node killed before it stopped its BIRD leaves it running:
        // tell it to go, as a restarted node would.
        let socket = self.bird_dir().join("bird.ctl");
        if socket.exists() {
            let _ = Command::new("birdc")
                .arg("-s")
                .arg(&socket)
                .arg("down")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// One HTTP/1.0 request to lbN's API from inside its namespace: status and
/// JSON body; a 503 or no answer is retried for up to 20 s.
pub fn api(
    site: &BgpSite,
    lb: usize,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> (u16, serde_json::Value) {
    let addr = SocketAddr::from((management_addr(lb), HTTP_PORT));
    let body = body.map(ToString::to_string).unwrap_or_default();
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = http_exchange(
            &site.lbs[lb],
            addr,
            method,
            path,
            &body,
            Duration::from_secs(20),
        );
        let (status, value) = match answer {
            Ok((status, text)) => (status, serde_json::from_str(&text).unwrap_or_default()),
            Err(_) => (0, serde_json::Value::Null),
        };
        let retry = status == 0
            || (status == 503 && method != "POST")
            || value["error"]["code"] == "no_leader";
        if !retry || Instant::now() > end {
            return (status, value);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Starts the three nodes, each ready (node1 first: it bootstraps).
pub fn start_cluster(site: &BgpSite, binary: &str, bird: &str) -> Result<Vec<BgpNode>, String> {
    let mut nodes = Vec::new();
    for lb in 0..3 {
        nodes.push(BgpNode::start(site, lb, binary, bird));
        // Generous: under emulation on a shared machine, elections can
        // take a while to settle.
        let end = Instant::now() + Duration::from_secs(180);
        while api(site, lb, "GET", "/readyz", None).0 != 200 {
            if Instant::now() > end {
                let logs: Vec<String> = nodes
                    .iter()
                    .map(|n| format!("--- node{}\n{}", n.index + 1, n.log()))
                    .collect();
                return Err(format!(
                    "node{} not ready after 180 s:\n{}",
                    lb + 1,
                    logs.join("\n")
                ));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    Ok(nodes)
}

/// The service the site announces: the VIP's port 80 by direct routing to
/// every backend, scheduled by `mh` on the client's address and port (every
/// node picks the same backend for a flow), its address bound on each node,
/// health-checked over HTTP (patiently: an emulated CPU shared with other
/// work answers late).
///
/// When a node finds every server down it withdraws the address
/// (`all_down: withdraw`), so the others take its traffic.
///
/// `mh-fallback` too: a node lowers a server it finds down to weight 0 in
/// its own kernel, and `mh` keeps such a server in its table (so that the
/// others' flows do not move) and, without the flag, answers a new flow
/// hashed to it with ICMP port unreachable — a refused connection.
pub fn service(backends: usize) -> serde_json::Value {
    let servers: Vec<serde_json::Value> = (0..backends)
        .map(|i| serde_json::json!({"address": backend_addr(i).to_string(), "port": 80, "forward": "dr"}))
        .collect();
    serde_json::json!({
        "protocol": "tcp", "address": VIP.to_string(), "port": 80,
        "scheduler": "mh", "flags": ["mh-fallback", "mh-port"], "bind_address": true,
        "health_check": {"kind": "http", "path": "/health", "body": "backend",
                         "interval": 2.0, "timeout": 1.5, "rise": 2, "fall": 2},
        "health_policy": {"all_down": "withdraw"},
        "servers": servers,
    })
}

/// Creates [`service`] through node1 and waits until the router has a next
/// hop through every load balancer.
pub fn announce_service(
    site: &BgpSite,
    backends: usize,
    limit: Duration,
) -> Result<Duration, String> {
    // A write can time out between nodes under emulation (503, outcome
    // unknown): look before trying again, since it may have committed.
    let path = format!("/api/v1/services/tcp-{VIP}-80?consistent=true");
    let end = Instant::now() + Duration::from_secs(180);
    loop {
        let (status, body) = api(
            site,
            0,
            "POST",
            "/api/v1/services?wait=applied",
            Some(&service(backends)),
        );
        if status == 201 || status == 409 {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
        if api(site, 0, "GET", &path, None).0 == 200 {
            break;
        }
        if Instant::now() > end {
            return Err(format!("POST service: {status} {body}"));
        }
    }
    site.wait_next_hops(&(0..3).map(server_lan_addr).collect::<Vec<_>>(), limit)
}

/// The load balancer `lbs` whose IPVS table holds the connection from
/// `source`.
pub fn holder(site: &BgpSite, source: SocketAddr) -> Option<usize> {
    (0..3).find(|&lb| {
        site.lbs[lb]
            .ipvs_connections()
            .iter()
            .any(|c| c.source == source)
    })
}

/// `addr` as a next hop, for [`BgpSite::wait_next_hops`].
pub fn hop(lb: usize) -> Ipv4Addr {
    server_lan_addr(lb)
}
