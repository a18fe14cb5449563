//! Writes and what they answer, on real node processes (three, on
//! loopback, `IPVS_KERNEL=memory`): a query parameter no route takes is
//! refused; `?dry_run=true` commits nothing and plans every kernel; an
//! `Idempotency-Key` makes a retry answer the first outcome, across a
//! leader change and a restart of every node; a node that has lost its
//! quorum says so and refuses writes at once, and a write caught by the
//! loss is "outcome unknown", never "failed".

#[path = "cluster/harness.rs"]
mod harness;

use harness::Cluster;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const SVC: &str = "/api/v1/services/tcp-192.0.2.10-80";

fn web() -> Value {
    json!({"protocol": "tcp", "address": "192.0.2.10", "port": 80, "scheduler": "wrr",
           "servers": [{"address": "198.51.100.11", "port": 8080, "weight": 3}]})
}

/// `method path` on node `i` with `Idempotency-Key: key`.
fn keyed(
    c: &Cluster,
    i: usize,
    method: &str,
    path: &str,
    key: &str,
    body: Option<&Value>,
) -> reqwest::blocking::Response {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = c
        .http
        .request(method, c.nodes[i].url(path))
        .header("Idempotency-Key", key);
    if let Some(b) = body {
        req = req.json(b);
    }
    req.send().expect("request")
}

fn services(c: &Cluster, i: usize) -> Vec<Value> {
    c.get(i, "/api/v1/services?consistent=true")
        .json::<Vec<Value>>()
        .expect("services")
}

/// A dry run on node `i`: 200, no ETag or Location, `dry_run: true`.
fn dry(c: &Cluster, i: usize, method: &str, path: &str, body: Option<&Value>) -> Value {
    let r = c.send(i, method, path, body);
    assert_eq!(r.status().as_u16(), 200, "{method} {path}");
    assert!(r.headers().get("etag").is_none(), "{method} {path}");
    assert!(r.headers().get("location").is_none(), "{method} {path}");
    let v: Value = r.json().expect("dry run body");
    assert_eq!(v["dry_run"], true, "{v}");
    v
}

fn commit_index(c: &Cluster, i: usize) -> u64 {
    c.cluster_view(i).expect("cluster view")["commit_index"]
        .as_u64()
        .expect("commit index")
}

#[test]
fn unknown_query_parameters_are_refused_and_change_nothing() {
    let c = Cluster::start(1);
    for query in ["dry-run=true", "foo=bar", "dry_run=true&force=1"] {
        let r = c.send(
            0,
            "POST",
            &format!("/api/v1/services?{query}"),
            Some(&web()),
        );
        assert_eq!(r.status().as_u16(), 400, "?{query}");
        let err: Value = r.json().expect("error body");
        let unknown = query
            .split('&')
            .find(|q| !q.starts_with("dry_run"))
            .unwrap();
        let name = unknown.split('=').next().unwrap();
        assert_eq!(err["error"]["code"], "invalid_query", "{err}");
        assert_eq!(err["error"]["field"], format!("?{name}"), "{err}");
        assert!(
            err["error"]["message"]
                .as_str()
                .unwrap()
                .contains("takes ?dry_run and ?wait"),
            "{err}"
        );
    }
    let r = c.get(0, "/readyz?verbose=1");
    assert_eq!(r.status().as_u16(), 400);
    assert!(services(&c, 0).is_empty(), "nothing was created");
}

#[test]
fn a_dry_run_of_every_write_commits_nothing_and_plans_each_kernel() {
    let mut c = Cluster::start(3);
    assert_eq!(
        c.send(0, "POST", "/api/v1/services", Some(&web()))
            .status()
            .as_u16(),
        201
    );
    let before = c.converged(0);
    let index = commit_index(&c, 0);
    let kernels = |v: &Value| -> Vec<(String, Vec<String>)> {
        v["kernels"]
            .as_array()
            .expect("kernels")
            .iter()
            .map(|k| {
                assert!(k.get("error").is_none(), "{k}");
                let changes = k["changes"].as_array().expect("changes");
                let changes = changes
                    .iter()
                    .map(|c| {
                        format!(
                            "{} {}",
                            c["op"].as_str().unwrap(),
                            c["change"].as_str().unwrap()
                        )
                    })
                    .collect();
                (k["node"].as_str().unwrap().to_string(), changes)
            })
            .collect()
    };
    let on_every_node = |changes: &[&str]| -> Vec<(String, Vec<String>)> {
        ["node1", "node2", "node3"]
            .iter()
            .map(|n| {
                (
                    n.to_string(),
                    changes.iter().map(|c| c.to_string()).collect(),
                )
            })
            .collect()
    };

    // A creation, through a follower.
    let dns = json!({"protocol": "udp", "address": "192.0.2.53", "port": 53,
                     "servers": [{"address": "198.51.100.53", "port": 53}]});
    let v = dry(&c, 1, "POST", "/api/v1/services?dry_run=true", Some(&dns));
    assert_eq!(v["status"], 201);
    assert_eq!(v["result"]["id"], "udp-192.0.2.53-53");
    assert_eq!(v["result"]["revision"], 0, "nothing was committed");
    assert_eq!(v["desired"]["added"], json!(["udp-192.0.2.53-53"]));
    assert_eq!(
        kernels(&v),
        on_every_node(&[
            "+ add service UDP 192.0.2.53:53",
            "+ add destination 198.51.100.53:53 to service UDP 192.0.2.53:53",
        ])
    );
    // A removal that drains: weight 0 everywhere.
    let v = dry(
        &c,
        2,
        "DELETE",
        &format!("{SVC}/servers/198.51.100.11-8080?dry_run=true&grace=60"),
        None,
    );
    assert_eq!(v["status"], 202);
    assert!(v["result"]["draining"].is_object(), "{v}");
    assert_eq!(
        v["desired"]["changed"][0]["servers_removed"],
        json!(["198.51.100.11-8080"]),
        "a drain that starts is a removal"
    );
    assert_eq!(
        kernels(&v),
        on_every_node(&["~ edit destination 198.51.100.11:8080 of service TCP 192.0.2.10:80"])
    );
    // An edit in place.
    let v = dry(
        &c,
        0,
        "PATCH",
        &format!("{SVC}?dry_run=true"),
        Some(&json!({"scheduler": "rr"})),
    );
    assert_eq!(
        (v["status"].clone(), v["result"]["scheduler"].clone()),
        (json!(200), json!("rr"))
    );
    assert_eq!(
        kernels(&v),
        on_every_node(&["~ edit service TCP 192.0.2.10:80"])
    );
    // A deletion at once: no body, the service goes from every kernel.
    let v = dry(
        &c,
        0,
        "DELETE",
        &format!("{SVC}?grace=0&dry_run=true"),
        None,
    );
    assert_eq!(
        (v["status"].clone(), v["result"].clone()),
        (json!(204), Value::Null)
    );
    assert_eq!(v["desired"]["removed"], json!(["tcp-192.0.2.10-80"]));
    assert_eq!(
        kernels(&v),
        on_every_node(&["- delete service TCP 192.0.2.10:80"])
    );
    // The whole configuration.
    let v = dry(
        &c,
        1,
        "PUT",
        "/api/v1/config?dry_run=true",
        Some(&json!({"services": [dns]})),
    );
    assert_eq!(v["result"]["added"], json!(["udp-192.0.2.53-53"]));
    assert_eq!(v["result"]["removed"], json!(["tcp-192.0.2.10-80"]));
    assert_eq!(v["desired"], v["result"]);
    assert_eq!(kernels(&v)[0].1.len(), 3, "{v}");
    // A refusal is the write's own refusal.
    let r = c.send(0, "POST", "/api/v1/services?dry_run=true", Some(&web()));
    assert_eq!(r.status().as_u16(), 409);

    // Membership changes: what they would leave.
    let v = dry(
        &c,
        1,
        "DELETE",
        "/api/v1/cluster/members/node3?dry_run=true",
        None,
    );
    assert_eq!(v["status"], 204);
    assert_eq!(v["voters"], json!(["node1", "node2"]), "{v}");
    assert_eq!(v["quorum"], 2);
    let node4 = json!({"id": "node4", "raft_addr": "127.0.0.1:1", "api_addr": "127.0.0.1:2"});
    let v = dry(
        &c,
        2,
        "POST",
        "/api/v1/cluster/join?dry_run=true",
        Some(&node4),
    );
    assert_eq!(
        v["voters"],
        json!(["node1", "node2", "node3", "node4"]),
        "{v}"
    );
    assert_eq!(v["quorum"], 3);
    let impostor = json!({"id": "node3", "raft_addr": "127.0.0.1:1", "api_addr": "127.0.0.1:2"});
    let r = c.send(
        0,
        "POST",
        "/api/v1/cluster/join?dry_run=true",
        Some(&impostor),
    );
    assert_eq!(
        r.status().as_u16(),
        409,
        "a member's name at other addresses"
    );
    let r = c.send(
        0,
        "DELETE",
        "/api/v1/cluster/members/node9?dry_run=true",
        None,
    );
    assert_eq!(r.status().as_u16(), 404);
    let members = c.cluster_view(0).expect("cluster view")["members"].clone();
    assert_eq!(members.as_array().map(Vec::len), Some(3), "{members}");

    assert_eq!(commit_index(&c, 0), index, "nothing reached the log");
    assert_eq!(c.converged(0), before);
    // A member that does not answer is named, the others still plan.
    c.nodes[2].kill();
    let v = dry(
        &c,
        0,
        "PATCH",
        &format!("{SVC}?dry_run=true"),
        Some(&json!({"scheduler": "sh"})),
    );
    let node3 = &v["kernels"][2];
    assert_eq!(node3["node"], "node3");
    assert!(
        node3["error"].as_str().unwrap().contains("did not answer"),
        "{v}"
    );
    assert_eq!(v["kernels"][0]["changes"].as_array().unwrap().len(), 1);
}

#[test]
fn an_idempotency_key_makes_a_retry_answer_the_first_outcome() {
    let mut c = Cluster::start(3);
    let created = keyed(&c, 0, "POST", "/api/v1/services", "k-create", Some(&web()));
    assert_eq!(created.status().as_u16(), 201);
    assert!(created.headers().get("idempotent-replayed").is_none());
    let first: Value = created.json().unwrap();
    // The same request again, through another node: the first outcome.
    let again = keyed(&c, 1, "POST", "/api/v1/services", "k-create", Some(&web()));
    assert_eq!(again.status().as_u16(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(
        again.json::<Value>().unwrap()["revision"],
        first["revision"]
    );
    // Without the key it is a second create, refused.
    let plain = c.send(1, "POST", "/api/v1/services", Some(&web()));
    assert_eq!(plain.status().as_u16(), 409);
    // The same key on another request is refused, and changes nothing.
    let mut other = web();
    other["port"] = json!(81);
    let reused = keyed(&c, 2, "POST", "/api/v1/services", "k-create", Some(&other));
    assert_eq!(reused.status().as_u16(), 422);
    let err: Value = reused.json().unwrap();
    assert_eq!(err["error"]["code"], "idempotency_key_reused");
    assert_eq!(services(&c, 0).len(), 1);

    // A removal retried: its first outcome (204), not a 404.
    let server = json!({"address": "198.51.100.12", "port": 8080});
    let path = format!("{SVC}/servers");
    assert_eq!(
        keyed(&c, 0, "POST", &path, "k-add", Some(&server))
            .status()
            .as_u16(),
        201
    );
    let del = format!("{SVC}/servers/198.51.100.12-8080?grace=0");
    assert_eq!(
        keyed(&c, 0, "DELETE", &del, "k-del", None)
            .status()
            .as_u16(),
        204
    );
    let again = keyed(&c, 2, "DELETE", &del, "k-del", None);
    assert_eq!(again.status().as_u16(), 204);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    // An added server retried after its removal: replayed, not re-added.
    let readd = keyed(&c, 1, "POST", &path, "k-add", Some(&server));
    assert_eq!(readd.status().as_u16(), 201);
    assert_eq!(readd.headers()["idempotent-replayed"], "true");
    let servers = c
        .get(0, &format!("{path}?consistent=true"))
        .json::<Vec<Value>>()
        .unwrap();
    assert_eq!(servers.len(), 1, "{servers:?}");

    // A bad key is refused by name.
    let bad = keyed(&c, 0, "POST", "/api/v1/services", "a key", Some(&web()));
    assert_eq!(bad.status().as_u16(), 400);
    assert_eq!(
        bad.json::<Value>().unwrap()["error"]["field"],
        "Idempotency-Key"
    );

    // Remembered across a change of leader...
    let leader = c.leader().expect("a leader");
    c.nodes[leader].kill();
    let other = (0..3).find(|&i| i != leader).unwrap();
    c.wait(Duration::from_secs(20), "a new leader", || {
        c.leader().is_some_and(|l| l != leader)
    });
    let again = keyed(
        &c,
        other,
        "POST",
        "/api/v1/services",
        "k-create",
        Some(&web()),
    );
    assert_eq!(again.status().as_u16(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    // ...and a restart of every node.
    for i in 0..3 {
        if c.nodes[i].is_running() {
            c.nodes[i].kill();
        }
    }
    for i in 0..3 {
        c.nodes[i].start();
    }
    for i in 0..3 {
        c.wait_ready(i);
    }
    for i in 0..3 {
        let again = keyed(&c, i, "DELETE", &del, "k-del", None);
        assert_eq!(again.status().as_u16(), 204, "node {i}");
        assert_eq!(again.headers()["idempotent-replayed"], "true");
    }
}

#[test]
fn a_node_without_quorum_says_so_and_refuses_writes_at_once() {
    let mut c = Cluster::start(3);
    assert_eq!(
        c.send(0, "POST", "/api/v1/services", Some(&web()))
            .status()
            .as_u16(),
        201
    );
    c.converged(0);
    // The leader stays: openraft keeps it in office without a quorum.
    let leader = c.leader().expect("a leader");
    for i in (0..3).filter(|&i| i != leader) {
        c.nodes[i].kill();
    }
    // A write sent as the quorum goes cannot be said to have failed.
    let dns = json!({"protocol": "udp", "address": "192.0.2.53", "port": 53});
    let caught = keyed(&c, leader, "POST", "/api/v1/services", "k-dns", Some(&dns));
    let status = caught.status().as_u16();
    let err: Value = caught.json().unwrap();
    assert_eq!(status, 503, "{err}");
    // Sent before the node can know (it allows an election's time), it
    // waited for a quorum that did not come.
    assert_eq!(err["error"]["code"], "outcome_unknown", "{err}");
    let message = err["error"]["message"].as_str().unwrap();
    assert!(message.contains("may have been committed"), "{message}");
    assert!(message.contains("Idempotency-Key"), "{message}");
    // Once it knows: not ready, no leader named, writes refused at once.
    c.wait(
        Duration::from_secs(10),
        "the leader to report no quorum",
        || {
            let r = c.get(leader, "/readyz");
            r.status().as_u16() == 503
                && r.json::<Value>().is_ok_and(|v| {
                    v["error"]["details"]
                        .as_array()
                        .is_some_and(|d| d.iter().any(|p| p["field"] == "quorum"))
                })
        },
    );
    let view = c.cluster_view(leader).unwrap();
    assert_eq!(view["leader_id"], Value::Null, "{view}");
    let (code, status, _) = cli(&c, leader, &["cluster", "status"]);
    assert_eq!(code, Some(0));
    assert!(status.starts_with("leader (none), term "), "{status}");
    assert!(
        status.contains("NO QUORUM: no contact with a quorum for "),
        "{status}"
    );
    assert_eq!(view["quorum"]["ok"], false, "{view}");
    assert!(
        view["quorum"]["last_contact_ms"].as_u64().unwrap() >= 2000,
        "{view}"
    );
    let started = Instant::now();
    let r = c.send(
        leader,
        "POST",
        "/api/v1/services",
        Some(&json!({"protocol": "tcp", "address": "192.0.2.99", "port": 1})),
    );
    let took = started.elapsed();
    assert_eq!(r.status().as_u16(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let err: Value = r.json().unwrap();
    assert_eq!(err["error"]["code"], "no_quorum", "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nothing was written"),
        "{err}"
    );
    assert!(
        took < Duration::from_secs(1),
        "refused at once, took {took:?}"
    );
    let metrics = c.get(leader, "/metrics").text().unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("ipvs_manager_not_ready{check=\"quorum\"} 1")),
        "{metrics}"
    );
    // The quorum back: ready, and the retried write has one outcome.
    for i in (0..3).filter(|&i| i != leader) {
        c.nodes[i].start();
    }
    for i in 0..3 {
        c.wait_ready(i);
    }
    let retried = keyed(&c, leader, "POST", "/api/v1/services", "k-dns", Some(&dns));
    assert_eq!(retried.status().as_u16(), 201);
    let dns_services = services(&c, 0)
        .into_iter()
        .filter(|s| s["id"] == "udp-192.0.2.53-53")
        .count();
    assert_eq!(dns_services, 1);
    assert_eq!(c.cluster_view(leader).unwrap()["quorum"]["ok"], true);
}

/// The CLI against node `i`: its exit status, stdout and stderr.
fn cli(c: &Cluster, i: usize, args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ipvs-manager"))
        .args(args)
        .env("IPVS_MANAGER_SERVER", c.nodes[i].url(""))
        .output()
        .expect("run ipvs-manager");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The CLI sends every write with an Idempotency-Key and sends it again
/// while its outcome is unknown: it succeeds once the quorum is back, and
/// if it is not back in time it says "outcome unknown" (status 3) and how
/// to check — never "cannot" for a write that may have happened.
#[test]
fn the_cli_never_calls_a_write_that_may_have_happened_failed() {
    let mut c = Cluster::start(3);
    let leader = c.leader().expect("a leader");
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    for &i in &followers {
        c.nodes[i].kill();
    }
    let started = Instant::now();
    let (code, _, stderr) = cli(
        &c,
        leader,
        &[
            "-A",
            "-t",
            "192.0.2.77:80",
            "-s",
            "rr",
            "--write-timeout",
            "8s",
        ],
    );
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.starts_with(
            "ipvs-manager: outcome unknown: add service TCP 192.0.2.77:80 may or may not have \
             been done (it may still be); check with `ipvs-manager -Ln -t 192.0.2.77:80`"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("cannot"), "{stderr}");
    assert!(stderr.contains("Idempotency-Key"), "{stderr}");
    // The first answer took the 5 s commit timeout; it was sent again.
    assert!(
        started.elapsed() >= Duration::from_secs(6),
        "sent again until the limit"
    );
    assert!(
        stderr.contains("no_quorum") || stderr.contains("no contact with a quorum"),
        "{stderr}"
    );
    for &i in &followers {
        c.nodes[i].start();
    }
    for i in 0..3 {
        c.wait_ready(i);
    }
    let count = |c: &Cluster| {
        services(c, leader)
            .iter()
            .filter(|s| s["id"] == "tcp-192.0.2.77-80")
            .count()
    };
    assert!(count(&c) <= 1);

    // Quorum lost again, and back while the CLI is still trying: it gets
    // the write's one outcome.
    if count(&c) == 0 {
        assert_eq!(cli(&c, leader, &["-A", "-t", "192.0.2.77:80"]).0, Some(0));
    }
    let leader = c.leader().expect("a leader");
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    for &i in &followers {
        c.nodes[i].kill();
    }
    let server = c.nodes[leader].url("");
    let add = std::thread::spawn(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_ipvs-manager"))
            .args(["-a", "-t", "192.0.2.77:80", "-r", "10.1.0.9:80", "-m"])
            .args(["--server", &server, "--write-timeout", "60s"])
            .output()
            .expect("run ipvs-manager")
    });
    std::thread::sleep(Duration::from_secs(3));
    for &i in &followers {
        c.nodes[i].start();
    }
    let out = add.join().expect("the CLI ran");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    for i in 0..3 {
        c.wait_ready(i);
    }
    let servers = c
        .get(
            leader,
            "/api/v1/services/tcp-192.0.2.77-80/servers?consistent=true",
        )
        .json::<Vec<Value>>()
        .expect("servers");
    assert_eq!(servers.len(), 1, "{servers:?}");
}
