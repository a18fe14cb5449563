//! The reconciler against real kernels: a 3-node cluster, one node per
//! load-balancer namespace of a [`Site`], started with the documented
//! variables plus `BIND_ADDR` and `API_OPEN`, programming each namespace's
//! IPVS table; real HTTP traffic through the director's NAT.

use crate::support::traffic::{get, http_exchange, Held};
use crate::support::{Backend, Netns, Site};
use libtest_mimic::Failed;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const VIP: &str = "10.80.0.1:80";
const SERVICE: &str = "/api/v1/services/tcp-10.80.0.1-80";
pub(crate) const HTTP_PORT: u16 = 2221;

/// One `ipvs-manager` node in a load balancer's namespace.
pub(crate) struct Node {
    index: usize,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Node {
    fn start(site: &Site, index: usize, dir: tempfile::TempDir) -> Node {
        let mut node = Node {
            index,
            dir,
            child: None,
        };
        node.spawn(site);
        node
    }

    fn spawn(&mut self, site: &Site) {
        let ns = &site.lbs[self.index];
        let log = std::fs::File::create(self.dir.path().join("log")).unwrap();
        let mut cmd = ns.cmd(env!("CARGO_BIN_EXE_ipvs-manager"));
        cmd.env("SERVER_PORT", HTTP_PORT.to_string())
            .env("RAFT_PORT", "1111")
            .envs(crate::support::topology::VM_RAFT_TIMING.iter().copied())
            .env("RAFT_NODE_ID", format!("node{}", self.index + 1))
            .env("RAFT_VOL_DIR", self.dir.path().join("data"))
            .env("BIND_ADDR", Site::management_addr(self.index).to_string())
            // No tokens on the test's management LAN: serve the API there.
            .env("API_OPEN", "true")
            // node3 resyncs rarely, so that drift stays for `diff` to see.
            .env("RESYNC_INTERVAL", if self.index == 2 { "600" } else { "2" })
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log);
        if self.index > 0 {
            cmd.env(
                "RAFT_LEADER",
                format!("{}:{HTTP_PORT}", Site::management_addr(0)),
            );
        }
        self.child = Some(cmd.spawn().unwrap());
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One HTTP/1.0 request from inside `ns` (so it reaches the management
/// LAN): status and body. A 503 (an election under the emulated VM's load)
/// is retried for a while, as its Retry-After asks: always when it is
/// `no_leader` (nothing was written), and for every method but POST
/// otherwise — the trials' PUT, PATCH and DELETE mean the same applied
/// twice, while a POST that did commit would answer 409 the second time.
pub(crate) fn http(
    ns: &Netns,
    lb: usize,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, answer) = http_once(ns, lb, method, path, body);
        let retry = answer["error"]["code"] == "no_leader" || (status == 503 && method != "POST");
        if !retry || Instant::now() > end {
            return (status, answer);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn http_once(
    ns: &Netns,
    lb: usize,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let body = body.map(Value::to_string).unwrap_or_default();
    match raw_http(ns, lb, method, path, &body) {
        Ok((status, text)) => (status, serde_json::from_str(&text).unwrap_or(Value::Null)),
        Err(_) => (0, Value::Null),
    }
}

/// One HTTP/1.0 exchange with lbN's API from inside `ns`: status and body.
fn raw_http(
    ns: &Netns,
    lb: usize,
    method: &str,
    path: &str,
    body: &str,
) -> std::io::Result<(u16, String)> {
    let addr = SocketAddr::from((Site::management_addr(lb), HTTP_PORT));
    http_exchange(ns, addr, method, path, body, Duration::from_secs(15))
}

/// A GET's body as text, from inside lbN's namespace.
pub(crate) fn get_text(ns: &Netns, lb: usize, path: &str) -> Result<String, Failed> {
    match raw_http(ns, lb, "GET", path, "")? {
        (200, body) => Ok(body),
        (status, _) => Err(format!("GET {path}: {status}").into()),
    }
}

pub(crate) fn wait_for(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> bool,
) -> Result<(), Failed> {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if check() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("timed out after {limit:?} waiting for {what}").into())
}

/// `ipvsadm -Sn` of a namespace, lines sorted (the kernel's order is a
/// hash order).
pub(crate) fn saved(ns: &Netns) -> Vec<String> {
    let mut lines: Vec<String> = ns.ipvsadm(&["-Sn"]).lines().map(String::from).collect();
    lines.sort();
    lines
}

/// Runs `ipvs-manager ARGS --server lbN` in lbN's namespace; its stdout,
/// or an error when it fails.
pub(crate) fn cli(site: &Site, lb: usize, args: &[&str]) -> Result<String, Failed> {
    let server = format!("{}:{HTTP_PORT}", Site::management_addr(lb));
    let out = site.lbs[lb]
        .cmd(env!("CARGO_BIN_EXE_ipvs-manager"))
        .args(args)
        .args(["--server", &server])
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "ipvs-manager {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(crate) fn node_status(site: &Site, lb: usize) -> Value {
    http(&site.lbs[lb], lb, "GET", "/api/v1/node", None).1
}

/// Starts node1 (bootstrapping) then node2 and node3 (joining), one per
/// load balancer of `site`, each ready.
pub(crate) fn start_cluster(site: &Site) -> Result<Vec<Node>, Failed> {
    let mut nodes = vec![Node::start(site, 0, tempfile::TempDir::new()?)];
    let ready = |lb: usize| http(&site.lbs[lb], lb, "GET", "/readyz", None).0 == 200;
    wait_for(Duration::from_secs(30), "node1 to bootstrap", || ready(0))?;
    for lb in 1..3 {
        nodes.push(Node::start(site, lb, tempfile::TempDir::new()?));
        wait_for(Duration::from_secs(30), "a node to join", || ready(lb))
            .map_err(|e| format!("{e:?}\n{}", nodes[lb].log()))?;
    }
    Ok(nodes)
}

pub fn three_nodes_program_their_kernels() -> Result<(), Failed> {
    let site = Site::new(3, 0);
    let backends: Vec<Backend> = (0..3)
        .map(|i| {
            let addr = SocketAddr::from((Site::backend_addr(i), 8080));
            Backend::start(&site.backends[i], &format!("backend{}", i + 1), addr)
        })
        .collect();
    let mut nodes = start_cluster(&site)?;

    // Created through node 1, programmed in all three kernels.
    let servers: Vec<Value> = (0..3)
        .map(|i| {
            json!({"address": Site::backend_addr(i).to_string(), "port": 8080,
                   "weight": i + 1, "forward": "masq"})
        })
        .collect();
    let service = json!({"protocol": "tcp", "address": "10.80.0.1", "port": 80,
                         "scheduler": "wrr", "servers": servers});
    let started = Instant::now();
    let (status, body) = http(
        &site.lbs[0],
        0,
        "POST",
        "/api/v1/services?wait=applied",
        Some(&service),
    );
    assert_eq!(status, 201, "{body}\n{}", nodes[0].log());
    eprintln!("programmed in 3 kernels in {:?}", started.elapsed());
    let expected: Vec<String> = {
        let mut lines = vec!["-A -t 10.80.0.1:80 -s wrr".to_string()];
        for i in 0..3 {
            lines.push(format!(
                "-a -t 10.80.0.1:80 -r {}:8080 -m -w {}",
                Site::backend_addr(i),
                i + 1
            ));
        }
        lines.sort();
        lines
    };
    for lb in &site.lbs {
        assert_eq!(saved(lb), expected, "{}", lb.name());
    }
    // The CLI: the desired state lists as ipvsadm lists a kernel holding
    // it; the node's kernel as ipvsadm lists it; no difference.
    let ipvsadm_list = site.lbs[0].ipvsadm(&["-Ln"]);
    let desired_list = cli(&site, 0, &["list"])?;
    let body = |l: &str| l.lines().skip(1).map(String::from).collect::<Vec<_>>();
    assert_eq!(body(&desired_list), body(&ipvsadm_list));
    assert_eq!(cli(&site, 0, &["list", "--kernel"])?, ipvsadm_list);
    assert_eq!(cli(&site, 0, &["diff"])?, "");

    // Traffic follows the weights.
    let vip: SocketAddr = VIP.parse()?;
    let mut counts = [0; 3];
    for _ in 0..60 {
        let name = get(&site.client, vip)?;
        let i = backends.iter().position(|b| b.name() == name).unwrap();
        counts[i] += 1;
    }
    assert_eq!(counts, [10, 20, 30]);
    // The director's kernel counters, in its /metrics (the kernel folds its
    // per-CPU counters into the totals every two seconds).
    let counted = |metrics: &str, i: usize| -> Option<u64> {
        let server = format!("server=\"{}-8080\"", Site::backend_addr(i));
        metrics
            .lines()
            .find(|l| l.starts_with("ipvs_server_connections_total{") && l.contains(&server))?
            .rsplit(' ')
            .next()?
            .parse()
            .ok()
    };
    let mut metrics = String::new();
    wait_for(Duration::from_secs(10), "the connection counters", || {
        metrics = get_text(&site.lbs[0], 0, "/metrics").unwrap_or_default();
        (0..3).map(|i| counted(&metrics, i)).collect::<Vec<_>>()
            == vec![Some(10), Some(20), Some(30)]
    })
    .map_err(|e| format!("{e:?}\n{metrics}"))?;
    // The traffic summaries: the director's sampler (every 10 s) reads the
    // connections the kernel keeps for the 60 requests (closed ones stay
    // as inactive entries for minutes), and its detail has a history.
    let service = "tcp-10.80.0.1-80";
    let mut answer = Value::Null;
    wait_for(Duration::from_secs(25), "the traffic summary", || {
        answer = get_text(&site.lbs[0], 0, "/api/v1/traffic")
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null);
        answer["services"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["service"] == service))
            .is_some_and(|row| {
                let node1 = &row["nodes"]["node1"];
                node1["programmed"] == true
                    && node1["servers_total"] == 3
                    && node1["active_conns"].as_u64().unwrap_or(0)
                        + node1["inactive_conns"].as_u64().unwrap_or(0)
                        > 0
            })
    })
    .map_err(|e| format!("{e:?}\n{answer:#}"))?;
    let detail: Value = serde_json::from_str(&get_text(
        &site.lbs[0],
        0,
        &format!("/api/v1/traffic/{service}"),
    )?)?;
    let node1 = &detail["nodes"]["node1"];
    let weights: Vec<u64> = node1["servers"]
        .as_array()
        .map(|s| s.iter().filter_map(|v| v["weight"].as_u64()).collect())
        .unwrap_or_default();
    assert_eq!(weights.iter().sum::<u64>(), 6, "{detail:#}");
    let seen = node1["history"]["inactive_conns"]
        .as_array()
        .zip(node1["history"]["active_conns"].as_array())
        .is_some_and(|(i, a)| i.iter().chain(a).any(|n| n.as_u64().unwrap_or(0) > 0));
    assert!(seen, "{detail:#}");

    // The desired state listed with this node's counters, as ipvsadm lists
    // the kernel (read twice each way: the kernel folds its per-CPU counters
    // every two seconds, and one fold may fall between two reads).
    let mut lists = (Vec::new(), Vec::new());
    wait_for(
        Duration::from_secs(10),
        "list --stats equal to ipvsadm's",
        || {
            let ipvsadm = body(&site.lbs[0].ipvsadm(&["-Ln", "--stats", "--exact"]));
            let ours = cli(&site, 0, &["list", "--stats", "--exact"]).unwrap_or_default();
            lists = (body(&ours), ipvsadm);
            lists.0 == lists.1
        },
    )
    .map_err(|e| format!("{e:?}\n{lists:#?}"))?;

    // Edits are made in place: an established connection survives them.
    let mut held = Held::open(&site.client, vip)?;
    let holder = backends
        .iter()
        .position(|b| b.name() == held.backend())
        .unwrap();
    let holder_id = format!("{}-8080", Site::backend_addr(holder));
    let patch = json!({"scheduler": "rr", "persistence": {"timeout": 300}});
    let (status, body) = http(
        &site.lbs[0],
        0,
        "PATCH",
        &format!("{SERVICE}?wait=applied"),
        Some(&patch),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = http(
        &site.lbs[1],
        1,
        "PATCH",
        &format!("{SERVICE}/servers/{holder_id}?wait=applied"),
        Some(&json!({"weight": 7})),
    );
    assert_eq!(status, 200, "{body}");
    for lb in &site.lbs {
        let rules = lb.ipvsadm(&["-Sn"]);
        assert!(rules.contains("-s rr -p 300"), "{rules}");
        let edited = format!("{}:8080 -m -w 7", Site::backend_addr(holder));
        assert!(rules.contains(&edited), "{rules}");
    }
    assert_eq!(
        held.exchange("after edits")?,
        format!("{} after edits", held.backend())
    );
    let local = held.local_addr();
    assert!(
        site.lbs[0]
            .ipvs_connections()
            .iter()
            .any(|c| c.source == local && c.state == "ESTABLISHED"),
        "the connection entry survives the edits"
    );
    // Persistence would pin the client to one backend from here on.
    let (status, body) = http(
        &site.lbs[0],
        0,
        "PATCH",
        &format!("{SERVICE}?wait=applied"),
        Some(&json!({"persistence": null})),
    );
    assert_eq!(
        status,
        200,
        "{body}\n{}",
        nodes
            .iter()
            .map(Node::log)
            .collect::<Vec<_>>()
            .join("\n----\n")
    );

    // Draining: weight 0 everywhere, no new connection to it, the held one
    // keeps working; deleted after the grace period.
    let (status, body) = http(
        &site.lbs[2],
        2,
        "DELETE",
        &format!("{SERVICE}/servers/{holder_id}?grace=4&wait=applied"),
        None,
    );
    assert_eq!(status, 202, "{body}");
    for lb in &site.lbs {
        let rules = lb.ipvsadm(&["-Sn"]);
        assert!(
            rules.contains(&format!("{}:8080 -m -w 0", Site::backend_addr(holder))),
            "{rules}"
        );
    }
    for _ in 0..12 {
        assert_ne!(
            get(&site.client, vip)?,
            held.backend(),
            "a draining server took a new connection"
        );
    }
    assert_eq!(
        held.exchange("draining")?,
        format!("{} draining", held.backend())
    );
    held.close()?;
    let gone = format!("{}:8080", Site::backend_addr(holder));
    for lb in &site.lbs {
        wait_for(Duration::from_secs(15), "the drained server to go", || {
            !lb.ipvsadm(&["-Sn"]).contains(&gone)
        })?;
    }
    // ... and, once the leader has committed the end of the drain, from the
    // desired state on every node (that commit also triggers a pass, which
    // must not meet the drift made below).
    for lb in 0..3 {
        wait_for(
            Duration::from_secs(10),
            "the drain's end to replicate",
            || {
                let path = format!("{SERVICE}/servers/{holder_id}");
                http(&site.lbs[lb], lb, "GET", &path, None).0 == 404
            },
        )?;
    }

    // Drift: a hand-deleted service comes back within a resync period; a
    // foreign service survives and is reported.
    let lb2 = &site.lbs[1];
    lb2.ipvsadm(&["-D", "-t", VIP]);
    lb2.ipvsadm(&["-A", "-t", "10.80.0.99:80", "-s", "rr"]);
    wait_for(Duration::from_secs(10), "the drift to be repaired", || {
        lb2.ipvsadm(&["-Sn"]).contains("-A -t 10.80.0.1:80")
    })?;
    assert!(lb2.ipvsadm(&["-Sn"]).contains("-A -t 10.80.0.99:80"));
    wait_for(
        Duration::from_secs(10),
        "the foreign service to be reported",
        || {
            let s = node_status(&site, 1);
            s["reconcile"]["foreign"] == json!(["tcp-10.80.0.99-80"])
                && s["reconcile"]["drift_repaired"].as_u64() >= Some(1)
        },
    )
    .map_err(|e| {
        format!(
            "{e:?}\nnode2: {}\n{}\n{}",
            node_status(&site, 1),
            lb2.ipvsadm(&["-Sn"]),
            nodes[1].log()
        )
    })?;
    lb2.ipvsadm(&["-C"]);
    wait_for(
        Duration::from_secs(10),
        "a flushed table to be rebuilt",
        || lb2.ipvsadm(&["-Sn"]).contains("-A -t 10.80.0.1:80"),
    )?;

    // `diff` shows drift the node has not repaired yet (node3 resyncs
    // rarely), as the edit the reconciler will make.
    let lb3 = &site.lbs[2];
    let b1 = format!("{}:8080", Site::backend_addr(0));
    lb3.ipvsadm(&["-e", "-t", VIP, "-r", &b1, "-m", "-w", "9"]);
    let out = lb3
        .cmd(env!("CARGO_BIN_EXE_ipvs-manager"))
        .args([
            "diff",
            "--server",
            &format!("{}:{HTTP_PORT}", Site::management_addr(2)),
        ])
        .output()?;
    assert_eq!(out.status.code(), Some(1));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        shown.trim(),
        format!("~ edit destination {b1} of service TCP {VIP}"),
        "{shown}"
    );
    lb3.ipvsadm(&["-e", "-t", VIP, "-r", &b1, "-m", "-w", "1"]);
    assert_eq!(cli(&site, 2, &["diff"])?, "");

    // A service that asks for its address gets it bound on every node's
    // ipvs0, and loses it when it goes.
    let bound = json!({"protocol": "tcp", "address": "10.80.0.2", "port": 443,
                       "bind_address": true});
    let (status, body) = http(
        &site.lbs[0],
        0,
        "POST",
        "/api/v1/services?wait=applied",
        Some(&bound),
    );
    assert_eq!(status, 201, "{body}");
    for lb in &site.lbs {
        let addrs = lb.ip(&["-4", "-o", "addr", "show", "dev", "ipvs0"]);
        assert!(addrs.contains("10.80.0.2/32"), "{}: {addrs}", lb.name());
    }
    let (status, body) = http(
        &site.lbs[1],
        1,
        "DELETE",
        "/api/v1/services/tcp-10.80.0.2-443?grace=0&wait=applied",
        None,
    );
    assert_eq!(status, 204, "{body}");
    for lb in &site.lbs {
        let addrs = lb.ip(&["-4", "-o", "addr", "show", "dev", "ipvs0"]);
        assert!(!addrs.contains("10.80.0.2"), "{}: {addrs}", lb.name());
    }

    // Restart into a matching kernel: no change at all, connections intact.
    let mut held = Held::open(&site.client, vip)?;
    let before = saved(&site.lbs[0]);
    nodes[0].kill();
    // Meanwhile the others elect a leader and keep their kernels.
    let (status, body) = http(
        &site.lbs[1],
        1,
        "POST",
        &format!("{SERVICE}/servers?wait=quorum"),
        Some(&json!({"address": Site::backend_addr(holder).to_string(), "port": 8080})),
    );
    assert_eq!(status, 201, "{body}");
    assert!(site.lbs[2].ipvsadm(&["-Sn"]).contains(&gone));
    // The old leader, restarted, catches up: exactly that one change.
    nodes[0].spawn(&site);
    wait_for(Duration::from_secs(30), "node1 to catch up", || {
        let s = node_status(&site, 0);
        s["reconcile"]["passes"].as_u64() >= Some(1)
            && s["reconcile"]["pending"] == 0
            && site.lbs[0].ipvsadm(&["-Sn"]).contains(&gone)
    })
    .map_err(|e| format!("{e:?}\n{}", nodes[0].log()))?;
    assert_eq!(node_status(&site, 0)["reconcile"]["changes"], 1);
    assert_eq!(
        held.exchange("after restart")?,
        format!("{} after restart", held.backend())
    );
    let mut after = saved(&site.lbs[0]);
    after.retain(|l| !l.contains(&gone));
    assert_eq!(
        after,
        before
            .into_iter()
            .filter(|l| !l.contains(&gone))
            .collect::<Vec<_>>()
    );

    // A restart with nothing new: zero changes.
    nodes[2].kill();
    nodes[2].spawn(&site);
    wait_for(Duration::from_secs(30), "node3 to restart", || {
        node_status(&site, 2)["reconcile"]["passes"].as_u64() >= Some(1)
    })
    .map_err(|e| format!("{e:?}\n{}", nodes[2].log()))?;
    assert_eq!(node_status(&site, 2)["reconcile"]["changes"], 0);
    held.close()?;
    Ok(())
}

/// With IPVS_KERNEL=on (the default) a node without CAP_NET_ADMIN refuses to
/// start, naming the capability and the way to run without the kernel, and
/// touches nothing.
pub fn node_refuses_without_cap_net_admin() -> Result<(), Failed> {
    let ns = Netns::new();
    let dir = tempfile::TempDir::new()?;
    let data = dir.path().join("data");
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )?;
    let out = ns
        .unprivileged(env!("CARGO_BIN_EXE_ipvs-manager"))
        .env("RAFT_VOL_DIR", &data)
        .output()?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("CAP_NET_ADMIN"), "{stderr}");
    assert!(stderr.contains("IPVS_KERNEL=off"), "{stderr}");
    assert!(!data.exists(), "nothing is created before the check");
    Ok(())
}
