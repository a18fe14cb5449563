//! Multi-process tests of the replicated control plane: real `ipvs-manager`
//! processes started as the README's three commands (plus
//! IPVS_KERNEL=memory: each node programs an in-memory table), on ports of
//! their own, talking over loopback.

#[path = "cluster/harness.rs"]
mod harness;

use harness::{Cluster, Join};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn web() -> Value {
    json!({"protocol": "tcp", "address": "192.0.2.10", "port": 80, "scheduler": "wrr",
           "servers": [{"address": "198.51.100.11", "port": 8080, "weight": 3}]})
}

fn status(r: reqwest::blocking::Response) -> u16 {
    r.status().as_u16()
}

/// Every kind of write, through the leader and through followers, reaches
/// every node.
#[test]
fn every_write_replicates_to_every_node() {
    let c = Cluster::start(3);
    let svc = "/api/v1/services/tcp-192.0.2.10-80";
    assert_eq!(
        status(c.send(0, "POST", "/api/v1/services", Some(&web()))),
        201
    );
    assert_eq!(
        status(c.send(
            1,
            "POST",
            &format!("{svc}/servers"),
            Some(&json!({"address": "198.51.100.12", "port": 8080}))
        )),
        201
    );
    assert_eq!(
        status(c.send(
            2,
            "PATCH",
            &format!("{svc}/servers/198.51.100.12-8080"),
            Some(&json!({"weight": 0}))
        )),
        200
    );
    assert_eq!(
        status(c.send(
            1,
            "PATCH",
            svc,
            Some(&json!({"scheduler": "rr", "persistence": {"timeout": 600}}))
        )),
        200
    );
    assert_eq!(
        status(c.send(
            2,
            "POST",
            "/api/v1/services",
            Some(&json!({"fwmark": 7, "family": "ipv6", "scheduler": "sh", "flags": ["sh-port"]}))
        )),
        201
    );
    assert_eq!(
        status(c.send(
            0,
            "POST",
            "/api/v1/services",
            Some(&json!({"protocol": "udp", "address": "192.0.2.53", "port": 53}))
        )),
        201
    );
    assert_eq!(
        status(c.send(
            1,
            "DELETE",
            "/api/v1/services/udp-192.0.2.53-53?grace=0",
            None
        )),
        204
    );
    assert_eq!(
        status(c.send(
            2,
            "DELETE",
            &format!("{svc}/servers/198.51.100.11-8080?grace=0"),
            None
        )),
        204
    );

    let config = c.converged(0);
    let services = config["services"].as_array().expect("services");
    assert_eq!(services.len(), 2, "{config}");
    let web = services
        .iter()
        .find(|s| s["id"] == "tcp-192.0.2.10-80")
        .expect("web service");
    assert_eq!(web["scheduler"], "rr");
    assert_eq!(web["persistence"]["timeout"], 600);
    assert_eq!(web["servers"].as_array().map(Vec::len), Some(1));
    assert_eq!(web["servers"][0]["weight"], 0);
    assert!(services.iter().any(|s| s["id"] == "fwmark-ipv6-7"));

    // Replacing the whole configuration is one entry, and a dry run commits
    // nothing.
    let next = json!({"services": [{"protocol": "sctp", "address": "192.0.2.20", "port": 3868}]});
    let before = c.cluster_view(0).expect("cluster")["commit_index"].clone();
    let plan: Value = c
        .send(1, "PUT", "/api/v1/config?dry_run=true", Some(&next))
        .json()
        .expect("plan");
    assert_eq!(plan["dry_run"], true, "{plan}");
    assert_eq!(
        plan["desired"]["added"],
        json!(["sctp-192.0.2.20-3868"]),
        "{plan}"
    );
    assert_eq!(c.cluster_view(0).expect("cluster")["commit_index"], before);
    // (?grace=0: what it leaves out goes at once rather than draining.)
    assert_eq!(
        status(c.send(2, "PUT", "/api/v1/config?grace=0", Some(&next))),
        200
    );
    let config = c.converged(1);
    assert_eq!(
        config["services"].as_array().map(Vec::len),
        Some(1),
        "{config}"
    );
}

/// Concurrency control: ETag and If-Match.
#[test]
fn if_match_guards_concurrent_edits() {
    let c = Cluster::start(1);
    let r = c.send(0, "POST", "/api/v1/services", Some(&web()));
    let etag = r.headers()["etag"].to_str().expect("etag").to_string();
    assert_eq!(
        r.headers()["location"],
        "/api/v1/services/tcp-192.0.2.10-80"
    );
    let svc = c.nodes[0].url("/api/v1/services/tcp-192.0.2.10-80");
    let put = |tag: &str| {
        c.http
            .patch(&svc)
            .header("If-Match", tag)
            .json(&json!({"scheduler": "lc"}))
            .send()
            .expect("patch")
            .status()
            .as_u16()
    };
    assert_eq!(put(&etag), 200);
    assert_eq!(put(&etag), 412, "the revision moved on");
}

/// Writes made at the same time through every node are coalesced into
/// fewer Raft entries, and each keeps its own answer: every write is kept,
/// and two versions of one service never share a revision (ETag).
#[test]
fn concurrent_writes_are_batched_and_each_kept() {
    let c = Cluster::start(3);
    const WRITERS: usize = 24;
    const ROUNDS: usize = 8;
    for w in 0..WRITERS {
        let body = json!({"protocol": "tcp", "address": format!("192.0.2.{}", w + 1), "port": 80,
                          "servers": [{"address": "198.51.100.1", "port": 8080}]});
        assert_eq!(
            status(c.send(w % 3, "POST", "/api/v1/services", Some(&body))),
            201
        );
    }
    let index = |c: &Cluster| {
        c.cluster_view(0).expect("cluster view")["commit_index"]
            .as_u64()
            .expect("commit_index")
    };
    let before = index(&c);
    // Each writer updates its own service's server; eight more write the
    // first service's server unconditionally, racing each other.
    let etags = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for w in 0..WRITERS + 8 {
            let (c, etags) = (&c, &etags);
            scope.spawn(move || {
                let svc = if w < WRITERS { w + 1 } else { 1 };
                for round in 0..ROUNDS {
                    let weight = if w < WRITERS { round + 1 } else { 100 + w };
                    let r = c.send(
                        (w + round) % 3,
                        "PUT",
                        &format!("/api/v1/services/tcp-192.0.2.{svc}-80/servers/198.51.100.1-8080"),
                        Some(&json!({"address": "198.51.100.1", "port": 8080, "weight": weight})),
                    );
                    assert_eq!(r.status(), 200, "writer {w} round {round}");
                    if svc == 1 {
                        let tag = r.headers()["etag"].to_str().expect("etag").to_string();
                        etags.lock().expect("lock").push((tag, weight));
                    }
                }
            });
        }
    });
    let writes = ((WRITERS + 8) * ROUNDS) as u64;
    let entries = index(&c) - before;
    assert!(
        entries < writes,
        "{writes} writes took {entries} entries: not batched"
    );
    // One revision, one version: equal ETags only for equal weights.
    let etags = etags.into_inner().expect("lock");
    for (i, (tag, weight)) in etags.iter().enumerate() {
        for (other, other_weight) in &etags[i + 1..] {
            assert!(
                tag != other || weight == other_weight,
                "ETag {tag} names weights {weight} and {other_weight}"
            );
        }
    }
    // Every writer's last write is what every node holds.
    let config = c.converged(0);
    let services = config["services"].as_array().expect("services");
    for w in 1..WRITERS {
        let svc = services
            .iter()
            .find(|s| s["address"] == format!("192.0.2.{}", w + 1))
            .expect("service");
        assert_eq!(
            svc["servers"][0]["weight"],
            ROUNDS as u64,
            "service {}",
            w + 1
        );
    }
}

/// Bad input gets a 4xx naming the field, and nothing reaches the log.
#[test]
fn bad_input_is_refused_without_writing() {
    let c = Cluster::start(1);
    assert_eq!(
        status(c.send(0, "POST", "/api/v1/services", Some(&web()))),
        201
    );
    let sorry = json!({"protocol": "tcp", "address": "192.0.2.20", "port": 80,
                       "health_check": {"kind": "tcp"},
                       "health_policy": {"all_down": "fallback",
                                         "fallback": {"address": "198.51.100.99", "port": 8080}}});
    assert_eq!(
        status(c.send(0, "POST", "/api/v1/services", Some(&sorry))),
        201
    );
    let commit = || c.cluster_view(0).expect("cluster")["commit_index"].clone();
    let before = commit();
    let svc = "/api/v1/services/tcp-192.0.2.10-80";
    let cases: Vec<(&str, String, Value, u16, &str)> = vec![
        (
            "POST",
            "/api/v1/services/tcp-192.0.2.20-80/servers".into(),
            json!({"address": "198.51.100.99", "port": 8080}),
            400,
            "address",
        ),
        (
            "POST",
            "/api/v1/services".into(),
            json!({"protocol": "tcp", "address": "192.0.2.1", "port": 0}),
            400,
            "port",
        ),
        (
            "POST",
            "/api/v1/services".into(),
            json!({"protocol": "tcp", "address": "192.0.2.1", "port": 70000}),
            400,
            "port",
        ),
        (
            "POST",
            "/api/v1/services".into(),
            json!({"protocol": "tcp", "address": "300.0.0.1", "port": 80}),
            400,
            "address",
        ),
        (
            "POST",
            "/api/v1/services".into(),
            json!({"fwmark": 0, "family": "ipv4"}),
            400,
            "fwmark",
        ),
        (
            "POST",
            "/api/v1/services".into(),
            json!({"protocol": "tcp", "address": "192.0.2.1", "port": 80, "scheduler": "nope"}),
            400,
            "scheduler",
        ),
        (
            "POST",
            "/api/v1/services".into(),
            json!({"protocol": "tcp", "address": "192.0.2.1", "port": 80, "scheduler": "rr", "flags": ["sh-port"]}),
            400,
            "flags[0]",
        ),
        (
            "POST",
            "/api/v1/services".into(),
            json!({"protocol": "tcp", "address": "2001:db8::1", "port": 80, "persistence": {"timeout": 60, "netmask": "255.255.255.0"}}),
            400,
            "persistence.netmask",
        ),
        (
            "POST",
            "/api/v1/services".into(),
            json!({"protocol": "tcp", "address": "192.0.2.1", "port": 80, "colour": "red"}),
            400,
            "colour",
        ),
        (
            "POST",
            format!("{svc}/servers"),
            json!({"address": "198.51.100.20", "port": 80, "weight": -1}),
            400,
            "weight",
        ),
        (
            "POST",
            format!("{svc}/servers"),
            json!({"address": "198.51.100.20", "port": 80, "upper_threshold": 5, "lower_threshold": 9}),
            400,
            "lower_threshold",
        ),
        (
            "POST",
            format!("{svc}/servers"),
            json!({"address": "198.51.100.20", "port": 80, "tunnel": {"type": "gue", "port": 6080}}),
            400,
            "tunnel",
        ),
        (
            "POST",
            format!("{svc}/servers"),
            json!({"address": "2001:db8::5", "port": 80}),
            400,
            "address",
        ),
        ("POST", "/api/v1/services".into(), web(), 409, ""),
        (
            "POST",
            format!("{svc}/servers"),
            json!({"address": "198.51.100.11", "port": 8080}),
            409,
            "",
        ),
        (
            "GET",
            "/api/v1/services/tcp-192.0.2.99-80".into(),
            Value::Null,
            404,
            "",
        ),
        (
            "DELETE",
            format!("{svc}/servers/198.51.100.99-80"),
            Value::Null,
            404,
            "",
        ),
    ];
    for (method, path, body, want, field) in cases {
        let body = (!body.is_null()).then_some(&body);
        let r = c.send(0, method, &path, body);
        let got = r.status().as_u16();
        let err: Value = r.json().unwrap_or(Value::Null);
        assert_eq!(got, want, "{method} {path} {body:?}: {err}");
        assert!(err["error"]["message"].is_string(), "{err}");
        if !field.is_empty() {
            assert_eq!(err["error"]["field"], field, "{method} {path}: {err}");
        }
    }
    // Malformed JSON and an oversized body.
    let url = c.nodes[0].url("/api/v1/services");
    let r = c
        .http
        .post(&url)
        .body("{\"protocol\": ")
        .send()
        .expect("post");
    assert_eq!(r.status().as_u16(), 400);
    let r = c
        .http
        .post(&url)
        .body(vec![b' '; 2 << 20])
        .send()
        .expect("post");
    assert_eq!(r.status().as_u16(), 413);
    assert_eq!(commit(), before, "refused requests wrote nothing");
}

/// kill -9 of every node loses no acknowledged write; a restarted node
/// resumes its cluster (RAFT_LEADER is ignored).
#[test]
fn restart_of_all_nodes_keeps_every_write() {
    let mut c = Cluster::start(3);
    for i in 0..10 {
        let body = json!({"protocol": "tcp", "address": format!("192.0.2.{}", i + 1), "port": 80});
        assert_eq!(
            status(c.send(i % 3, "POST", "/api/v1/services", Some(&body))),
            201
        );
    }
    let before = c.converged(0);
    for n in &mut c.nodes {
        n.kill();
    }
    for i in 0..3 {
        c.nodes[i].start();
    }
    for i in 0..3 {
        c.wait_ready(i);
    }
    assert_eq!(c.converged(2), before);
    assert!(c.nodes[1].log().contains("resumed"), "{}", c.nodes[1].log());
}

/// kill -9 of the leader under a stream of writes: a new leader is elected,
/// every acknowledged write survives, and the old leader catches up.
#[test]
fn leader_failure_under_writes() {
    let mut c = Cluster::start(3);
    let leader = c.leader().expect("a leader");
    let survivors: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, stop) = (acked.clone(), stop.clone());
        let urls: Vec<String> = survivors
            .iter()
            .map(|&i| c.nodes[i].url("/api/v1/services"))
            .collect();
        std::thread::spawn(move || {
            let http = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("client");
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) && n < 2000 {
                n += 1;
                let body = json!({"protocol": "udp", "address": format!("10.{}.{}.{}", n / 65536, n / 256 % 256, n % 256), "port": 53});
                let url = &urls[n as usize % urls.len()];
                if let Ok(r) = http.post(url).json(&body).send() {
                    if r.status().as_u16() == 201 {
                        acked.lock().expect("lock").push(n);
                    }
                }
            }
        })
    };
    c.wait(
        Duration::from_secs(20),
        "writes before the failover",
        || acked.lock().expect("lock").len() > 20,
    );
    c.nodes[leader].kill();
    let acked_at_kill = acked.lock().expect("lock").len();
    c.wait(Duration::from_secs(10), "a new leader", || {
        c.leader().is_some_and(|l| l != leader)
    });
    c.wait(Duration::from_secs(20), "writes after the failover", || {
        acked.lock().expect("lock").len() > acked_at_kill + 20
    });
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    let config = c.converged(survivors[0]);
    let present: std::collections::BTreeSet<String> = config["services"]
        .as_array()
        .expect("services")
        .iter()
        .map(|s| s["address"].as_str().expect("address").to_string())
        .collect();
    for n in acked.lock().expect("lock").iter() {
        let addr = format!("10.{}.{}.{}", n / 65536, n / 256 % 256, n % 256);
        assert!(present.contains(&addr), "acknowledged write {addr} lost");
    }
    c.nodes[leader].start();
    c.wait_ready(leader);
    c.wait(
        Duration::from_secs(20),
        "the old leader to catch up",
        || c.get(leader, "/api/v1/config").json::<Value>().ok() == Some(config.clone()),
    );
}

/// Joining through a follower, joining twice, removing a member.
#[test]
fn membership_changes() {
    let mut c = Cluster::new(3);
    c.nodes[2].join = Some(Join::Api(1));
    for i in 0..3 {
        c.nodes[i].start();
        c.wait_ready(i);
    }
    c.wait_voters(3);
    let node2 = &c.nodes[1];
    let again = json!({"id": node2.name, "raft_addr": format!("127.0.0.1:{}", node2.raft_port()),
                       "api_addr": format!("127.0.0.1:{}", node2.http_port())});
    let (joined, body) = c.send_retrying(2, "POST", "/api/v1/cluster/join", Some(&again));
    assert_eq!(joined, 200, "{body}");
    c.wait_voters(3);
    let (removed, body) = c.send_retrying(1, "DELETE", "/api/v1/cluster/members/node3", None);
    assert_eq!(removed, 204, "{body}");
    c.wait(Duration::from_secs(10), "node3 removed", || {
        c.cluster_view(0).is_some_and(|v| {
            v["members"]
                .as_array()
                .is_some_and(|m| m.len() == 2 && m.iter().all(|m| m["id"] != "node3"))
        })
    });
    assert_eq!(
        status(c.send(0, "DELETE", "/api/v1/cluster/members/nosuch", None)),
        404
    );
    assert_eq!(
        status(c.send(0, "POST", "/api/v1/services", Some(&web()))),
        201
    );
    c.nodes[2].kill();
    c.converged(0);
}

/// A node that joins after the log was compacted receives everything
/// through a snapshot.
#[test]
fn join_after_compaction_installs_a_snapshot() {
    let mut c = Cluster::new(2);
    for n in &mut c.nodes {
        n.env.push(("RAFT_SNAPSHOT_LOGS".into(), "20".into()));
    }
    c.nodes[0].start();
    c.wait_ready(0);
    for i in 0..60 {
        let body = json!({"protocol": "tcp", "address": format!("192.0.2.{}", i + 1), "port": 443});
        assert_eq!(
            status(c.send(0, "POST", "/api/v1/services", Some(&body))),
            201
        );
    }
    c.nodes[1].start();
    c.wait_ready(1);
    c.wait_voters(2);
    let config = c.converged(0);
    assert_eq!(config["services"].as_array().map(Vec::len), Some(60));
    assert!(
        c.nodes[1].log().contains("snapshot"),
        "the joiner should have installed a snapshot:\n{}",
        c.nodes[1].log()
    );
}

/// Without a quorum there is no leader: writes get 503 with Retry-After,
/// and reads keep being served from the last applied state.
#[test]
fn no_quorum_gives_503_with_retry_after() {
    let mut c = Cluster::start(3);
    assert_eq!(
        status(c.send(0, "POST", "/api/v1/services", Some(&web()))),
        201
    );
    c.converged(0);
    let leader = c.leader().expect("leader");
    let survivor = (0..3).find(|&i| i != leader).expect("survivor");
    for i in 0..3 {
        if i != survivor {
            c.nodes[i].kill();
        }
    }
    let body = json!({"protocol": "udp", "address": "192.0.2.53", "port": 53});
    let r = c.send(survivor, "POST", "/api/v1/services", Some(&body));
    assert_eq!(r.status().as_u16(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let err: Value = r.json().expect("error body");
    assert!(err["error"]["message"].is_string(), "{err}");
    let r = c.get(survivor, "/api/v1/services");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.json::<Value>().expect("list").as_array().map(Vec::len),
        Some(1)
    );
    c.wait(
        Duration::from_secs(10),
        "the survivor to report not ready",
        || c.get(survivor, "/readyz").status().as_u16() == 503,
    );
}

/// A removed server drains (shown with its deadline) and is deleted by the
/// leader when its grace period ends; a removed service too.
#[test]
fn removals_drain_then_delete() {
    let c = Cluster::start(3);
    let svc = "/api/v1/services/tcp-192.0.2.10-80";
    assert_eq!(
        status(c.send(0, "POST", "/api/v1/services", Some(&web()))),
        201
    );
    let server = format!("{svc}/servers/198.51.100.11-8080");
    let r = c.send(1, "DELETE", &format!("{server}?grace=2"), None);
    assert_eq!(r.status().as_u16(), 202);
    let body: Value = r.json().unwrap();
    assert_eq!(body["draining"]["grace"], 2, "{body}");
    // Still there, draining, on every node.
    for i in 0..3 {
        c.wait(Duration::from_secs(5), "the drain to replicate", || {
            let got: Value = c.get(i, &server).json().unwrap_or_default();
            got["draining"]["grace"] == 2
        });
    }
    // A bad grace names the parameter and changes nothing.
    let r = c.send(0, "DELETE", &format!("{svc}?grace=soon"), None);
    assert_eq!(r.status().as_u16(), 400);
    let err: Value = r.json().unwrap();
    assert_eq!(err["error"]["field"], "?grace", "{err}");
    // Gone after the grace period, everywhere.
    for i in 0..3 {
        c.wait(Duration::from_secs(10), "the drained server to go", || {
            c.get(i, &server).status().as_u16() == 404
        });
    }
    // The whole service, with the service's own drain_grace.
    assert_eq!(
        status(c.send(0, "PATCH", svc, Some(&json!({"drain_grace": 1})))),
        200
    );
    let r = c.send(2, "DELETE", svc, None);
    assert_eq!(r.status().as_u16(), 202);
    let body: Value = r.json().unwrap();
    assert_eq!(body["draining"]["grace"], 1, "{body}");
    for i in 0..3 {
        c.wait(Duration::from_secs(10), "the drained service to go", || {
            c.get(i, svc).status().as_u16() == 404
        });
    }
}

/// `?wait=applied` answers once every node has programmed the write; each
/// node reports its reconciler in `/api/v1/node` and in the cluster view.
#[test]
fn writes_can_wait_for_every_kernel() {
    let c = Cluster::start(3);
    let r = c.send(1, "POST", "/api/v1/services?wait=applied", Some(&web()));
    assert_eq!(r.status().as_u16(), 201);
    let revision: u64 = r.json::<Value>().unwrap()["revision"].as_u64().unwrap();
    // No polling: every node has it programmed already.
    for i in 0..3 {
        let node: Value = c.get(i, "/api/v1/node").json().unwrap();
        let programmed = node["reconcile"]["programmed_index"].as_u64().unwrap();
        assert!(programmed >= revision, "node {i}: {node}");
        assert_eq!(node["reconcile"]["kernel"], "memory", "{node}");
        assert!(
            node["reconcile"]["changes"].as_u64().unwrap() >= 2,
            "{node}"
        );
        assert_eq!(node["reconcile"]["pending"], 0, "{node}");
    }
    let view = c.cluster_view(0).unwrap();
    let members = view["members"].as_array().unwrap();
    assert_eq!(members.len(), 3);
    for m in members {
        assert_eq!(m["reachable"], true, "{m}");
        assert_eq!(m["node"]["id"], m["id"], "{m}");
        assert!(m["node"]["reconcile"]["programmed_index"].as_u64().unwrap() >= revision);
    }
    let r = c.send(
        0,
        "PATCH",
        "/api/v1/services/tcp-192.0.2.10-80?wait=quorum",
        Some(&json!({"scheduler": "rr"})),
    );
    assert_eq!(r.status().as_u16(), 200);
    let r = c.send(
        0,
        "DELETE",
        "/api/v1/services/tcp-192.0.2.10-80?wait=sometime",
        None,
    );
    assert_eq!(r.status().as_u16(), 400);

    // A node that is down makes ?wait=applied time out, naming it; the
    // write itself is committed.
    let mut c = c;
    c.nodes[2].kill();
    let r = c.send(
        0,
        "POST",
        "/api/v1/services?wait=applied",
        Some(&json!({"protocol": "udp", "address": "192.0.2.53", "port": 53})),
    );
    assert_eq!(r.status().as_u16(), 504);
    let err: Value = r.json().unwrap();
    assert_eq!(err["error"]["code"], "not_programmed", "{err}");
    assert!(
        err["error"]["message"].as_str().unwrap().contains("node3"),
        "{err}"
    );
    assert_eq!(
        c.get(0, "/api/v1/services/udp-192.0.2.53-53")
            .status()
            .as_u16(),
        200
    );
}

/// Any node relays any member's kernel table (the web UI reads every
/// node's counters through the node that served it): the same table the
/// member serves itself; a name that is no member is a 404, a member that
/// is down a 503 naming it.
#[test]
fn any_node_relays_a_members_kernel_table() {
    let mut c = Cluster::start(3);
    let r = c.send(0, "POST", "/api/v1/services?wait=applied", Some(&web()));
    assert_eq!(r.status().as_u16(), 201);
    for from in 0..3 {
        for to in 0..3 {
            let name = &c.nodes[to].name;
            let r = c.get(from, &format!("/api/v1/cluster/members/{name}/kernel"));
            assert_eq!(r.status().as_u16(), 200, "{from} -> {name}");
            let relayed: Value = r.json().unwrap();
            let own: Value = c.get(to, "/api/v1/node/kernel").json().unwrap();
            assert_eq!(relayed, own, "{from} -> {name}");
            let dests = &relayed["services"][0]["destinations"];
            assert_eq!(dests[0]["dest"]["weight"], 3, "{relayed}");
            assert!(dests[0]["stats"]["conns"].is_u64(), "{relayed}");
        }
    }
    // `?service=ID`: that service's part only, relayed or not.
    let other = json!({"protocol": "udp", "address": "192.0.2.53", "port": 53,
                       "servers": [{"address": "198.51.100.12", "port": 53}]});
    let r = c.send(0, "POST", "/api/v1/services?wait=applied", Some(&other));
    assert_eq!(r.status().as_u16(), 201);
    for path in [
        "/api/v1/node/kernel".to_string(),
        format!("/api/v1/cluster/members/{}/kernel", c.nodes[2].name),
    ] {
        let whole: Value = c.get(1, &path).json().unwrap();
        assert_eq!(
            whole["services"].as_array().map(Vec::len),
            Some(2),
            "{whole}"
        );
        let part: Value = c
            .get(1, &format!("{path}?service=udp-192.0.2.53-53"))
            .json()
            .unwrap();
        let services = part["services"].as_array().unwrap();
        assert_eq!(services.len(), 1, "{part}");
        assert_eq!(services[0]["service"]["key"]["Inet"]["port"], 53, "{part}");
        let targets: Vec<&String> = part["target"].as_object().unwrap().keys().collect();
        assert_eq!(targets, ["udp-192.0.2.53-53"], "{part}");
        let bad = c.get(1, &format!("{path}?service=nonsense"));
        assert_eq!(bad.status().as_u16(), 400, "{path}");
        assert_eq!(bad.json::<Value>().unwrap()["error"]["field"], "?service");
    }
    let r = c.get(1, "/api/v1/cluster/members/node9/kernel");
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(r.json::<Value>().unwrap()["error"]["code"], "not_found");
    c.nodes[2].kill();
    let r = c.get(0, "/api/v1/cluster/members/node3/kernel");
    assert_eq!(r.status().as_u16(), 503);
    let err: Value = r.json().unwrap();
    assert!(
        err["error"]["message"].as_str().unwrap().contains("node3"),
        "{err}"
    );
}

/// The value of the first series of `name` whose labels contain every one
/// of `labels` (`key="value"`), in a Prometheus text exposition.
fn series(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// `GET /metrics` after known writes: the kernel as programmed (here each
/// node's in-memory table), the reconciler, Raft and the API.
#[test]
fn metrics_follow_the_writes() {
    let c = Cluster::start(3);
    let r = c.send(0, "POST", "/api/v1/services?wait=applied", Some(&web()));
    assert_eq!(r.status().as_u16(), 201);
    let server = r#"server="198.51.100.11-8080""#;
    let mut leaders = 0.0;
    for i in 0..3 {
        let r = c.get(i, "/metrics");
        assert_eq!(r.status().as_u16(), 200);
        let text = r.text().unwrap();
        assert_eq!(
            series(
                &text,
                "ipvs_server_weight",
                &[server, r#"service="tcp-192.0.2.10-80""#]
            ),
            Some(3.0),
            "node {i}:\n{text}"
        );
        assert_eq!(
            series(&text, "ipvs_service_connections_total", &[r#"port="80""#]),
            Some(0.0)
        );
        let added = series(
            &text,
            "ipvs_manager_reconcile_changes_total",
            &[r#"kind="add_server""#, r#"result="ok""#],
        );
        assert_eq!(added, Some(1.0), "node {i}");
        assert_eq!(
            series(&text, "ipvs_manager_raft_term", &[]).map(|t| t >= 1.0),
            Some(true)
        );
        leaders += series(&text, "ipvs_manager_raft_is_leader", &[]).unwrap();
    }
    assert_eq!(leaders, 1.0);
    let text = c.get(0, "/metrics").text().unwrap();
    let created = series(
        &text,
        "ipvs_manager_api_requests_total",
        &[r#"operation="createService""#, r#"status="201""#],
    );
    assert_eq!(created, Some(1.0), "{text}");
    // A weight change shows as programmed.
    let r = c.send(
        1,
        "PATCH",
        "/api/v1/services/tcp-192.0.2.10-80/servers/198.51.100.11-8080?wait=applied",
        Some(&json!({"weight": 7})),
    );
    assert_eq!(r.status().as_u16(), 200);
    let text = c.get(2, "/metrics").text().unwrap();
    assert_eq!(series(&text, "ipvs_server_weight", &[server]), Some(7.0));
}

/// Runs `ipvs-manager ARGS` with `env`; its stdout, asserting success.
fn cli(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ipvs-manager"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run ipvs-manager");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// `ipvs-manager list` and `save` read the desired state through any node's
/// API (`--server` after the subcommand, or IPVS_MANAGER_SERVER).
#[test]
fn cli_lists_and_saves_the_desired_state() {
    let c = Cluster::start(1);
    let r = c.send(0, "POST", "/api/v1/services?wait=applied", Some(&web()));
    assert_eq!(r.status().as_u16(), 201);
    let server = c.nodes[0].url("");
    let run = |args: &[&str]| cli(args, &[("IPVS_MANAGER_SERVER", &server)]);
    assert_eq!(
        run(&["save"]),
        "-A -t 192.0.2.10:80 -s wrr\n-a -t 192.0.2.10:80 -r 198.51.100.11:8080 -m -w 3\n"
    );
    let list = run(&["list", "--server", &server]);
    assert!(list.contains("TCP  192.0.2.10:80 wrr"), "{list}");
    assert!(list.contains("  -> 198.51.100.11:8080"), "{list}");
    // A node that cannot be reached: one line, non-zero exit.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ipvs-manager"))
        .args(["save", "--server", "127.0.0.1:9"])
        .output()
        .expect("run ipvs-manager");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("ipvs-manager: cannot reach http://127.0.0.1:9"),
        "{stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}

/// `ipvs-manager cluster status|remove|join` through a node's API.
#[test]
fn cli_manages_the_members() {
    let c = Cluster::start(3);
    let server = c.nodes[1].url("");
    let run = |args: &[&str]| cli(&[args, &["--server", &server]].concat(), &[]);
    c.wait(Duration::from_secs(10), "every member reachable", || {
        let status = run(&["cluster", "status"]);
        status.lines().filter(|l| l.contains(" up ")).count() == 3
    });
    let status = run(&["cluster", "status"]);
    assert!(status.starts_with("leader node"), "{status}");
    assert!(status.contains("memory"), "{status}");
    let json: Value =
        serde_json::from_str(&run(&["cluster", "status", "--output", "json"])).unwrap();
    assert_eq!(json["members"].as_array().map(Vec::len), Some(3), "{json}");

    assert_eq!(run(&["cluster", "remove", "node3"]).trim(), "node3 removed");
    c.wait(Duration::from_secs(10), "node3 to leave", || {
        c.cluster_view(0)
            .is_some_and(|v| v["members"].as_array().map(Vec::len) == Some(2))
    });
    let raft = c.nodes[2].raft_port();
    let api = c.nodes[2].http_port();
    let joined = run(&[
        "cluster",
        "join",
        "node3",
        "--raft-addr",
        &format!("127.0.0.1:{raft}"),
        "--api-addr",
        &format!("127.0.0.1:{api}"),
    ]);
    assert_eq!(joined.trim(), "node3 is a member");
    c.wait(Duration::from_secs(10), "node3 back as a voter", || {
        c.cluster_view(0).is_some_and(|v| {
            v["members"]
                .as_array()
                .is_some_and(|m| m.iter().filter(|m| m["voter"] == true).count() == 3)
        })
    });
}

/// Runs `ipvs-manager ARGS`, which must fail; its stderr.
fn cli_fails(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ipvs-manager"))
        .args(args)
        .output()
        .expect("run ipvs-manager");
    assert!(!out.status.success(), "{args:?} succeeded");
    String::from_utf8(out.stderr).expect("utf-8")
}

/// Runs `ipvs-manager ARGS` with `stdin`; its stdout, asserting success.
fn cli_with_input(args: &[&str], stdin: &str) -> Result<String, String> {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ipvs-manager"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run ipvs-manager");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.as_bytes()).expect("write stdin");
    drop(input);
    let out = child.wait_with_output().expect("wait");
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).expect("utf-8"))
    } else {
        Err(String::from_utf8(out.stderr).expect("utf-8"))
    }
}

/// The ipvsadm editing commands, `drain` and `restore` change the desired
/// state through a follower, as ipvsadm would change a kernel.
#[test]
fn cli_edits_drains_and_restores() {
    let c = Cluster::start(2);
    c.wait_voters(2);
    let follower = (c.leader().expect("a leader") + 1) % 2;
    let server = c.nodes[follower].url("");
    let run = |args: &[&str]| cli(&[args, &["--server", &server]].concat(), &[]);
    let vip = "10.0.0.1:80";

    assert_eq!(
        run(&["-A", "-t", vip, "-s", "rr"]),
        "added service TCP 10.0.0.1:80\n"
    );
    run(&["-a", "-t", vip, "-r", "10.1.0.1:8080", "-m", "-w", "2"]);
    // Clustered options, as ipvsadm takes them; direct routing keeps the
    // service's port, as in ipvsadm.
    run(&["-at", vip, "-r", "10.1.0.2", "-g"]);
    assert_eq!(
        run(&["-e", "-t", vip, "-r", "10.1.0.1:8080", "-m", "-w", "5"]),
        "edited destination 10.1.0.1:8080 of service TCP 10.0.0.1:80\n"
    );
    run(&["-E", "-t", vip, "-s", "wlc", "-p", "300"]);
    let saved = run(&["save"]);
    assert_eq!(
        saved,
        "-A -t 10.0.0.1:80 -s wlc -p 300\n\
         -a -t 10.0.0.1:80 -r 10.1.0.1:8080 -m -w 5\n\
         -a -t 10.0.0.1:80 -r 10.1.0.2:80 -g -w 1\n"
    );
    // Errors: one line naming what and why, nothing changed.
    let err = cli_fails(&[
        "-a",
        "-t",
        vip,
        "-r",
        "10.1.0.1:8080",
        "-m",
        "--server",
        &server,
    ]);
    assert!(
        err.contains("409 Conflict: service tcp-10.0.0.1-80 already has server"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    let err = cli_fails(&["-Z", "--server", &server]);
    assert!(err.contains("zero"), "{err}");

    // drain: weight 0 for the grace period, marked in the listing.
    let drained = run(&["drain", "-t", vip, "-r", "10.1.0.2:80", "--grace", "1h"]);
    assert!(
        drained.starts_with("draining 10.1.0.2:80 of TCP 10.0.0.1:80: weight 0 until"),
        "{drained}"
    );
    let list = run(&["list"]);
    let line = list
        .lines()
        .find(|l| l.contains("10.1.0.2:80"))
        .unwrap_or_default()
        .to_string();
    assert!(line.starts_with("  -> 10.1.0.2:80"), "{list}");
    assert!(line.contains("Route   0 "), "{list}");
    assert!(line.ends_with("s left)"), "{list}");
    assert!(line.contains("(draining, 3"), "{list}");

    // Restoring what save prints changes nothing, the drain included.
    let saved = run(&["save"]);
    let plan = cli_with_input(&["restore", "--dry-run", "--server", &server], &saved);
    assert_eq!(
        plan.as_deref(),
        Ok(
            "0 services would change, 1 unchanged (dry run: nothing committed)\n\
            node1: kernel unchanged\nnode2: kernel unchanged\n"
        )
    );
    // A merge adds only the lines given and leaves the drain running.
    let merge = "-A -u 10.0.0.2:53 -s rr\n-a -u 10.0.0.2:53 -r 10.1.0.3:53 -m\n";
    let plan = cli_with_input(&["restore", "--merge", "--server", &server], merge);
    assert_eq!(
        plan.as_deref(),
        Ok("+ UDP 10.0.0.2:53\n1 service changed, 1 unchanged\n")
    );
    assert!(run(&["list"]).contains("(draining,"));
    let config: Value = serde_json::from_str(&run(&["save", "--output", "json"])).unwrap();
    assert_eq!(config["services"].as_array().map(Vec::len), Some(2));

    // A bad line: its number and the reason, and nothing committed.
    let before = run(&["save"]);
    let err = cli_with_input(
        &["restore", "--server", &server],
        "-A -t 10.0.0.3:80\n-a -t 10.0.0.9:80 -r 10.1.0.1\n",
    )
    .unwrap_err();
    assert_eq!(
        err,
        "ipvs-manager: line 2: add destination 10.1.0.1:80 to service TCP 10.0.0.9:80: \
         no such service\n"
    );
    assert_eq!(run(&["save"]), before);

    // A plain restore replaces everything (--now: what it removes goes at
    // once instead of draining; tests/backup.rs has the drains).
    let plan = cli_with_input(
        &["restore", "--now", "--server", &server],
        "-A -u 10.0.0.2:53 -s rr\n-a -u 10.0.0.2:53 -r 10.1.0.3:53 -m -w 4\n",
    )
    .unwrap();
    assert_eq!(
        plan,
        "~ UDP 10.0.0.2:53: ~10.1.0.3:53\n- TCP 10.0.0.1:80\n2 services changed, 0 unchanged\n\
         1 service and 1 real server removed at once\n"
    );
    let json: Value = serde_json::from_str(&run(&["list", "--output", "json"])).unwrap();
    assert_eq!(json["services"][0]["servers"][0]["weight"], 4, "{json}");

    run(&["-d", "-u", "10.0.0.2:53", "-r", "10.1.0.3:53"]);
    run(&["-D", "-u", "10.0.0.2:53"]);
    assert_eq!(run(&["save"]), "");
    run(&["-A", "-f", "7"]);
    run(&["-C", "--yes", "--now"]);
    assert_eq!(run(&["save"]), "");

    // The kernel of the node is programmed to match.
    let diff = || -> Option<Value> {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ipvs-manager"))
            .args(["diff", "--output", "json", "--server", &server])
            .output()
            .expect("run ipvs-manager");
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        (v["in_sync"] == true && out.status.success()).then_some(v)
    };
    c.wait(Duration::from_secs(10), "the kernel in sync", || {
        diff().is_some()
    });
    let diff = diff().expect("in sync");
    assert_eq!(diff["changes"], serde_json::json!([]));

    let bash = cli(&["completions", "bash"], &[]);
    assert!(bash.contains("restore") && bash.contains("drain"), "{bash}");
}

/// A TCP listener that accepts and drops connections until `stop`ped.
struct Backend {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl Backend {
    fn start(port: u16) -> Backend {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => drop(conn),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Backend { port, stop }
    }

    fn stop(self) -> u16 {
        self.stop.store(true, Ordering::Relaxed);
        // The listener closes when the accept loop ends.
        std::thread::sleep(Duration::from_millis(50));
        self.port
    }
}

/// Weights in node `i`'s kernel, by server id, for the service `svc`.
fn kernel_weights(c: &Cluster, i: usize, svc: &str) -> Vec<(String, u64)> {
    let table: Value = c.get(i, "/api/v1/node/kernel").json().expect("kernel JSON");
    let mut out = Vec::new();
    for entry in table["services"].as_array().into_iter().flatten() {
        let key = &entry["service"]["key"];
        let port = key["Inet"]["port"].as_u64();
        if Some(svc) != port.map(|p| format!("tcp-127.0.0.1-{p}")).as_deref() {
            continue;
        }
        for d in entry["destinations"].as_array().into_iter().flatten() {
            let dest = &d["dest"];
            out.push((
                format!("{}-{}", dest["addr"].as_str().unwrap_or(""), dest["port"]),
                dest["weight"].as_u64().unwrap_or(u64::MAX),
            ));
        }
    }
    out.sort();
    out
}

/// Health checks are node-local: each node probes, takes a dead server
/// out of its own kernel and brings it back, and shows what it sees; the
/// Raft log does not move; drains and the all-down policy win.
#[test]
fn health_checks_steer_each_kernel() {
    let c = Cluster::start(2);
    c.wait_voters(2);
    let alive = Backend::start(0);
    let dying = Backend::start(0);
    let svc = "tcp-127.0.0.1-9";
    let body = json!({
        "protocol": "tcp", "address": "127.0.0.1", "port": 9, "scheduler": "wrr",
        "health_check": {"kind": "tcp", "interval": 0.2, "timeout": 0.1, "rise": 2, "fall": 2},
        "servers": [
            {"address": "127.0.0.1", "port": alive.port, "weight": 3},
            {"address": "127.0.0.1", "port": dying.port, "weight": 5}
        ]
    });
    let r = c.send(0, "POST", "/api/v1/services?wait=applied", Some(&body));
    assert_eq!(r.status().as_u16(), 201);
    let (a, d) = (
        format!("127.0.0.1-{}", alive.port),
        format!("127.0.0.1-{}", dying.port),
    );
    let both_up = sorted(vec![(a.clone(), 3), (d.clone(), 5)]);
    let applied =
        |i: usize| c.get(i, "/api/v1/node").json::<Value>().unwrap()["last_applied"].clone();
    let index = applied(0);
    for i in 0..2 {
        c.wait(Duration::from_secs(10), "both servers probed up", || {
            let node: Value = c.get(i, "/api/v1/node").json().unwrap();
            let servers = node["health"]["servers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            servers.len() == 2
                && servers
                    .iter()
                    .all(|s| s["state"] == "up" && s["checks"].as_u64() > Some(0))
        });
        assert_eq!(kernel_weights(&c, i, svc), both_up);
    }

    // The dying server stops answering: weight 0 in every kernel within
    // interval × fall (plus a pass), and the log does not move.
    dying.stop();
    for i in 0..2 {
        c.wait(
            Duration::from_secs(5),
            "the dead server at weight 0",
            || kernel_weights(&c, i, svc) == sorted(vec![(a.clone(), 3), (d.clone(), 0)]),
        );
    }
    assert_eq!(applied(0), index, "health never writes to the log");
    // The CLI marks the server and sees no drift in the lowered weight.
    let server0 = c.nodes[0].url("");
    let list = cli(&["list", "--server", &server0], &[]);
    let dead = format!("127.0.0.1:{}", dying_port(&d));
    assert!(
        list.lines()
            .any(|l| l.starts_with(&format!("  -> {dead}")) && l.contains("(down: refused")),
        "{list}"
    );
    let diff = std::process::Command::new(env!("CARGO_BIN_EXE_ipvs-manager"))
        .args(["diff", "--server", &server0])
        .output()
        .expect("run ipvs-manager");
    assert!(
        diff.status.success(),
        "{}",
        String::from_utf8_lossy(&diff.stdout)
    );
    let node: Value = c.get(1, "/api/v1/node").json().unwrap();
    let probe = node["health"]["servers"]
        .as_array()
        .and_then(|s| s.iter().find(|p| p["server"] == d.as_str()).cloned())
        .expect("the dead server's probe");
    assert_eq!(probe["state"], "down", "{probe}");
    assert_eq!(probe["weight"], 0, "{probe}");
    assert!(
        probe["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("refused")),
        "{probe}"
    );
    // Every node's view, per server, in the service (after a peer poll).
    c.wait(
        Duration::from_secs(10),
        "both nodes' views in the service",
        || {
            let view: Value = c.get(0, &format!("/api/v1/services/{svc}")).json().unwrap();
            let server = view["servers"]
                .as_array()
                .and_then(|s| s.iter().find(|s| s["id"] == d.as_str()).cloned());
            server.is_some_and(|s| {
                s["health"]["node1"]["state"] == "down" && s["health"]["node2"]["state"] == "down"
            })
        },
    );
    let metrics = c.get(0, "/metrics").text().unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("ipvs_manager_health_up{")
                && l.contains(&d)
                && l.ends_with(" 0")),
        "{metrics}"
    );
    assert!(
        metrics.contains("ipvs_manager_health_check_failures_total{reason=\"refused\"}"),
        "{metrics}"
    );

    // Back after rise successes.
    let back = Backend::start(dying_port(&d));
    for i in 0..2 {
        c.wait(
            Duration::from_secs(5),
            "the server back at its weight",
            || kernel_weights(&c, i, svc) == both_up,
        );
    }

    // A drained server that is healthy stays at 0.
    let r = c.send(
        0,
        "DELETE",
        &format!("/api/v1/services/{svc}/servers/{d}?grace=600"),
        None,
    );
    assert_eq!(r.status().as_u16(), 202);
    // Stays: both nodes probe it healthy a few more times meanwhile.
    let probes = |i: usize| -> u64 {
        let node: Value = c.get(i, "/api/v1/node").json().unwrap_or_default();
        node["health"]["servers"]
            .as_array()
            .and_then(|s| s.iter().find(|p| p["server"] == d.as_str()))
            .and_then(|p| p["checks"].as_u64())
            .unwrap_or(0)
    };
    let before = [probes(0), probes(1)];
    c.wait(
        Duration::from_secs(10),
        "more probes of the drained server",
        || (0..2).all(|i| probes(i) >= before[i] + 2),
    );
    for i in 0..2 {
        c.wait(Duration::from_secs(5), "the drained server at 0", || {
            kernel_weights(&c, i, svc) == sorted(vec![(a.clone(), 3), (d.clone(), 0)])
        });
    }

    // All down: fail open (configured weights stay), reported; with a
    // fallback policy, the fallback server takes the traffic.
    alive.stop();
    back.stop();
    c.wait(
        Duration::from_secs(5),
        "the service reported all down",
        || {
            let node: Value = c.get(0, "/api/v1/node").json().unwrap();
            node["health"]["all_down"] == json!([svc])
        },
    );
    assert_eq!(
        kernel_weights(&c, 0, svc),
        sorted(vec![(a.clone(), 3), (d.clone(), 0)])
    );
    let policy = json!({"health_policy": {"all_down": "fallback", "fallback": {"address": "127.0.0.2", "port": 8080}}});
    let r = c.send(
        1,
        "PATCH",
        &format!("/api/v1/services/{svc}?wait=applied"),
        Some(&policy),
    );
    assert_eq!(r.status().as_u16(), 200, "{:?}", r.text());
    for i in 0..2 {
        c.wait(Duration::from_secs(5), "the fallback server in", || {
            kernel_weights(&c, i, svc)
                == sorted(vec![
                    (a.clone(), 0),
                    (d.clone(), 0),
                    ("127.0.0.2-8080".to_string(), 1),
                ])
        });
    }
}

fn sorted(mut v: Vec<(String, u64)>) -> Vec<(String, u64)> {
    v.sort();
    v
}

fn dying_port(id: &str) -> u16 {
    id.rsplit('-')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port")
}

/// A second process under a member's name is refused, naming the member
/// and how to replace a host; the membership does not change.
#[test]
fn a_second_node_of_a_members_name_is_refused() {
    let c = Cluster::start(3);
    let members = |c: &Cluster| -> Vec<String> {
        c.cluster_view(0).expect("cluster view")["members"]
            .as_array()
            .expect("members")
            .iter()
            .map(|m| {
                format!(
                    "{} {} {} {}",
                    m["id"], m["raft_addr"], m["api_addr"], m["voter"]
                )
            })
            .collect()
    };
    let before = members(&c);
    let impostor = json!({"id": "node3", "raft_addr": "127.0.0.1:1", "api_addr": "127.0.0.1:2"});
    let r = c.send(1, "POST", "/api/v1/cluster/join", Some(&impostor));
    assert_eq!(r.status().as_u16(), 409);
    let body = r.text().unwrap_or_default();
    assert!(
        body.contains("already a member") && body.contains("cluster remove node3"),
        "{body}"
    );
    assert_eq!(members(&c), before);
}

/// A removed node learns it was removed, stops taking part (exit 0, no
/// campaigning), and started again joins anew without an election.
#[test]
fn a_removed_node_stops_and_joins_again_without_an_election() {
    let mut c = Cluster::start(3);
    let term = |c: &Cluster| c.cluster_view(0).and_then(|v| v["term"].as_u64());
    let before = term(&c).expect("a term");
    let (removed, body) = c.send_retrying(0, "DELETE", "/api/v1/cluster/members/node3", None);
    assert_eq!(removed, 204, "{body}");
    let exit = c.nodes[2].exit_within(Duration::from_secs(15));
    assert_eq!(
        exit.and_then(|s| s.code()),
        Some(0),
        "the removed node exits cleanly\n{}",
        c.nodes[2].log()
    );
    assert!(
        c.nodes[2]
            .log()
            .contains("this node was removed from the cluster"),
        "{}",
        c.nodes[2].log()
    );
    c.wait_voters(2);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(term(&c), Some(before), "no election");

    c.nodes[2].start();
    c.wait_ready(2);
    c.wait_voters(3);
    assert!(
        c.nodes[2].log().contains("joins again as a new member"),
        "{}",
        c.nodes[2].log()
    );
    assert_eq!(term(&c), Some(before), "adding it back forced no election");
    assert!(c.nodes[2].dir.read_dir().expect("dir").any(|e| e
        .expect("entry")
        .file_name()
        .to_string_lossy()
        .starts_with("damaged-")));
    c.converged(0);
}

/// One connection of a watch of the services (`GET
/// /api/v1/services?watch=true`), read as it comes.
struct Watch {
    response: reqwest::blocking::Response,
    parser: ipvs_manager::api::sse::Parser,
    queued: std::collections::VecDeque<ipvs_manager::api::sse::Event>,
}

impl Watch {
    /// Opens a watch on node `i` after `since` (none: a sync first), sent
    /// again while the node answers 503 (an election).
    fn open(c: &Cluster, i: usize, since: Option<u64>) -> Watch {
        let path = match since {
            Some(n) => format!("/api/v1/services?watch=true&since={n}"),
            None => "/api/v1/services?watch=true".to_string(),
        };
        Watch::open_path(c, i, &path)
    }

    /// Opens the event stream at `path` on node `i`.
    fn open_path(c: &Cluster, i: usize, path: &str) -> Watch {
        // No end of its own: each connection is read for well under this.
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .expect("client");
        let start = std::time::Instant::now();
        loop {
            let response = http.get(c.nodes[i].url(path)).send().expect("watch");
            let status = response.status().as_u16();
            if status == 200 {
                assert_eq!(
                    response.headers()["content-type"],
                    "text/event-stream",
                    "a watch is an event stream"
                );
                return Watch {
                    response,
                    parser: Default::default(),
                    queued: Default::default(),
                };
            }
            let body = response.text().unwrap_or_default();
            assert!(
                status == 503 && start.elapsed() < Duration::from_secs(20),
                "watch on {}: {status} {body}",
                c.nodes[i].name
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The next event; `None` when the connection ended.
    fn next(&mut self) -> Option<ipvs_manager::api::sse::Event> {
        use std::io::Read;
        let mut buf = [0u8; 16384];
        loop {
            if let Some(event) = self.queued.pop_front() {
                return Some(event);
            }
            match self.response.read(&mut buf) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self
                    .queued
                    .extend(self.parser.feed(&buf[..n]).expect("event stream")),
            }
        }
    }
}

/// What a watcher saw: the services by id, built from the events, the last
/// revision, and every (revision, service id) of every change.
#[derive(Default)]
struct Seen {
    services: std::collections::BTreeMap<String, Value>,
    last: u64,
    changes: Vec<(u64, String)>,
}

impl Seen {
    /// Takes one event in; false for one that ends the connection's use
    /// (an error). Checks the order: each revision once, increasing.
    fn take(&mut self, event: &ipvs_manager::api::sse::Event) -> bool {
        let data: Value = serde_json::from_str(&event.data).expect("event data is JSON");
        let revision = data["revision"].as_u64();
        match event.kind.as_str() {
            "sync" => {
                self.services = data["services"]
                    .as_array()
                    .expect("services")
                    .iter()
                    .map(|s| (s["id"].as_str().expect("id").to_string(), s.clone()))
                    .collect();
            }
            "change" => {
                let revision = revision.expect("revision");
                assert!(
                    revision > self.last,
                    "revision {revision} after {}: out of order or twice",
                    self.last
                );
                for change in data["changes"].as_array().expect("changes") {
                    let id = change["id"].as_str().expect("id").to_string();
                    match change["type"].as_str() {
                        Some("put") => {
                            let service = change["service"].clone();
                            assert_eq!(service["revision"], revision, "the ETag is the revision");
                            self.services.insert(id.clone(), service);
                        }
                        Some("delete") => {
                            assert!(
                                self.services.remove(&id).is_some(),
                                "{id} deleted at {revision} was not there"
                            );
                        }
                        other => panic!("change type {other:?}"),
                    }
                    self.changes.push((revision, id));
                }
            }
            "progress" => assert!(revision.expect("revision") >= self.last),
            "error" => {
                eprintln!("watch error: {}", event.data);
                return false;
            }
            other => panic!("event {other}"),
        }
        if let Some(id) = &event.id {
            assert_eq!(
                Some(id.parse::<u64>().expect("id")),
                revision,
                "id = revision"
            );
        }
        self.last = self.last.max(revision.unwrap_or(0));
        true
    }

    /// Reads `n` change events (or until the connection ends: false).
    fn read(&mut self, watch: &mut Watch, n: usize) -> bool {
        let mut read = 0;
        while read < n {
            let Some(event) = watch.next() else {
                return false;
            };
            assert!(self.take(&event), "the watch failed: {}", event.data);
            read += usize::from(event.kind == "change");
        }
        true
    }
}

/// A watch of the services loses nothing and repeats nothing across a
/// reconnect to another node and across the leader's death, while writes
/// go on: the events, applied in order to the first listing, give the final
/// configuration, and every acknowledged write's revision is among them.
/// Bad query input is refused by name; a revision older than a restarted
/// node's history is 410 with the oldest it has.
#[test]
fn watch_loses_nothing_across_a_reconnect_and_a_leader_change() {
    let mut c = Cluster::start(3);
    let leader = c.leader().expect("a leader");
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    // Writes go through the followers (forwarded to the leader), so that
    // the leader can die under them; each acknowledged one is noted with
    // the revision it answered (its ETag).
    let acked: Arc<Mutex<Vec<(u64, String)>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, stop) = (acked.clone(), stop.clone());
        let bases: Vec<String> = followers.iter().map(|&i| c.nodes[i].url("")).collect();
        std::thread::spawn(move || {
            let http = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("client");
            let id = |n: u32| format!("udp-10.0.{}.{}-53", n / 256 % 256, n % 256);
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) && n < 3000 {
                n += 1;
                let base = &bases[n as usize % bases.len()];
                // Create n; change n - 1's scheduler; delete n - 29 (the
                // services live a while: a lost change would show).
                let sent = match n % 3 {
                    0 => http.post(format!("{base}/api/v1/services")).json(&json!({
                        "protocol": "udp", "address": format!("10.0.{}.{}", n / 256 % 256, n % 256),
                        "port": 53, "servers": [{"address": "198.51.100.1", "port": 53}]})),
                    1 => http
                        .patch(format!("{base}/api/v1/services/{}", id(n - 1)))
                        .json(&json!({"scheduler": "rr"})),
                    // At once: a drain would end later, by itself.
                    _ if n > 29 => {
                        http.delete(format!("{base}/api/v1/services/{}?grace=0", id(n - 29)))
                    }
                    _ => continue,
                };
                let Ok(r) = sent.send() else { continue };
                if let Some(etag) = r.headers().get("etag") {
                    let revision = etag.to_str().unwrap().trim_matches('"').parse().unwrap();
                    let path = r.url().path().to_string();
                    let written = match n % 3 {
                        0 => id(n),
                        _ => path.rsplit('/').next().unwrap().to_string(),
                    };
                    acked.lock().unwrap().push((revision, written));
                }
            }
        })
    };
    let writes = |c: &Cluster, more: usize| {
        let at = acked.lock().unwrap().len();
        c.wait(Duration::from_secs(30), "more writes", || {
            acked.lock().unwrap().len() >= at + more
        });
    };

    // On the leader, from the first listing; then a disconnect, and the
    // rest of the writes from another node after the last revision seen.
    let mut seen = Seen::default();
    let mut watch = Watch::open(&c, leader, None);
    let sync = watch.next().expect("the first event");
    assert_eq!(sync.kind, "sync");
    assert!(seen.take(&sync));
    assert!(seen.read(&mut watch, 20));
    drop(watch);
    writes(&c, 10);
    let mut watch = Watch::open(&c, followers[0], Some(seen.last));
    assert!(seen.read(&mut watch, 20));
    drop(watch);

    // Back on the leader, which dies while the watch reads from it; the
    // watch resumes on the other follower once it answers.
    let mut watch = Watch::open(&c, leader, Some(seen.last));
    assert!(seen.read(&mut watch, 5));
    c.nodes[leader].kill();
    while let Some(event) = watch.next() {
        assert!(seen.take(&event));
    }
    let mut watch = Watch::open(&c, followers[1], Some(seen.last));
    c.wait(Duration::from_secs(10), "a new leader", || {
        c.leader().is_some_and(|l| l != leader)
    });
    writes(&c, 30);
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");

    // Everything acknowledged is in the final state; the watch reaches it.
    let last_acked = acked.lock().unwrap().iter().map(|(r, _)| *r).max().unwrap();
    let config = c.config(followers[1]);
    let final_revision = config["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["revision"].as_u64().unwrap())
        .max()
        .unwrap_or(0)
        .max(last_acked);
    let want: std::collections::BTreeMap<String, Value> = config["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["id"].as_str().unwrap().to_string(), s.clone()))
        .collect();
    // Nothing is written any more: the events reach the final state (a
    // lost one never would; a progress event comes every 10 s).
    let start = std::time::Instant::now();
    while seen.last < final_revision
        || (seen.services != want && start.elapsed() < Duration::from_secs(30))
    {
        let event = watch.next().expect("the watch goes on");
        assert!(seen.take(&event));
    }
    assert_eq!(seen.services, want, "the events give the final state");
    eprintln!(
        "watched {} changes in {} revisions up to {}; {} writes acknowledged; {} services at the end",
        seen.changes.len(),
        seen.changes.iter().map(|(r, _)| r).collect::<std::collections::BTreeSet<_>>().len(),
        seen.last,
        acked.lock().unwrap().len(),
        want.len()
    );
    let changes: std::collections::BTreeSet<(u64, String)> = seen.changes.iter().cloned().collect();
    for write in acked.lock().unwrap().iter() {
        if write.0 > sync_revision(&sync) {
            assert!(
                changes.contains(write),
                "acknowledged write {write:?} not watched"
            );
        }
    }
    drop(watch);

    // Bad input, refused by name.
    let f = followers[0];
    for (path, field) in [
        ("/api/v1/services?watch=maybe", "?watch"),
        ("/api/v1/services?watch=true&since=ten", "?since"),
        ("/api/v1/services?since=10", "?since"),
        ("/api/v1/services?watch=true&since=-1", "?since"),
        ("/api/v1/node?watch=maybe", "?watch"),
        ("/api/v1/node?watch=true&programmed=3", "?watch"),
    ] {
        let r = c.get(f, path);
        assert_eq!(r.status().as_u16(), 400, "{path}");
        let body: Value = r.json().unwrap();
        assert_eq!(body["error"]["field"], field, "{path}: {body}");
    }
    // A restarted node's history starts at what it loaded.
    c.nodes[leader].start();
    c.wait_ready(leader);
    c.nodes[f].terminate(Duration::from_secs(20));
    c.nodes[f].start();
    c.wait_ready(f);
    let r = c.get(f, "/api/v1/services?watch=true&since=1");
    assert_eq!(r.status().as_u16(), 410);
    let body: Value = r.json().unwrap();
    assert_eq!(body["error"]["code"], "revision_compacted");
    let oldest = body["error"]["oldest_revision"].as_u64().unwrap();
    assert!(oldest > 1, "{body}");
    // From there it streams (the first line is the browser's retry).
    let mut watch = Watch::open(&c, f, Some(oldest));
    c.send_retrying(
        f,
        "POST",
        "/api/v1/services",
        Some(&json!({"protocol": "tcp", "address": "192.0.2.77", "port": 80})),
    );
    let mut after = Seen {
        last: oldest,
        ..Default::default()
    };
    assert!(after.read(&mut watch, 1));
    assert!(after
        .changes
        .iter()
        .any(|(_, id)| id == "tcp-192.0.2.77-80"));
}

fn sync_revision(sync: &ipvs_manager::api::sse::Event) -> u64 {
    serde_json::from_str::<Value>(&sync.data).expect("sync data")["revision"]
        .as_u64()
        .expect("sync revision")
}

/// `ipvs-manager list --watch` prints the list, then each change, and
/// after its node restarts resumes after the last revision it printed (no
/// second list, nothing twice). The node's report streams too.
#[test]
fn cli_list_watch_follows_and_resumes_after_a_restart() {
    use std::io::BufRead;
    let mut c = Cluster::start(1);
    let (status, _) = c.send_retrying(0, "POST", "/api/v1/services", Some(&web()));
    assert_eq!(status, 201);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ipvs-manager"))
        .args(["list", "--watch", "--output", "json", "--server"])
        .arg(c.nodes[0].url(""))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run ipvs-manager");
    let (tx, lines) = std::sync::mpsc::channel::<Value>();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            let value = serde_json::from_str(&line).expect("one JSON object a line");
            if tx.send(value).is_err() {
                return;
            }
        }
    });
    let next = || {
        lines
            .recv_timeout(Duration::from_secs(30))
            .expect("a line from list --watch")
    };
    let sync = next();
    assert_eq!(sync["event"], "sync", "{sync}");
    assert_eq!(sync["services"][0]["id"], "tcp-192.0.2.10-80", "{sync}");
    let create = |c: &Cluster, address: &str| {
        let body = json!({"protocol": "tcp", "address": address, "port": 80});
        let (status, text) = c.send_retrying(0, "POST", "/api/v1/services", Some(&body));
        assert_eq!(status, 201, "{text}");
        serde_json::from_str::<Value>(&text).expect("service")["revision"]
            .as_u64()
            .expect("revision")
    };
    let first = create(&c, "192.0.2.11");
    let change = next();
    assert_eq!(change["event"], "change", "{change}");
    assert_eq!(change["revision"], first);
    assert_eq!(change["changes"][0]["id"], "tcp-192.0.2.11-80");

    c.nodes[0].terminate(Duration::from_secs(20));
    c.nodes[0].start();
    c.wait_ready(0);
    let second = create(&c, "192.0.2.12");
    let change = next();
    assert_eq!(
        change["event"], "change",
        "resumed, not listed again: {change}"
    );
    assert_eq!(change["revision"], second);
    assert_eq!(change["changes"][0]["id"], "tcp-192.0.2.12-80");
    child.kill().expect("kill");
    let out = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("resuming after revision {first}")),
        "{stderr}"
    );
    assert!(lines.try_recv().is_err(), "nothing more, nothing twice");

    // The node's report, at once.
    let mut watch = Watch::open_path(&c, 0, "/api/v1/node?watch=true");
    let report = watch.next().expect("a report");
    assert_eq!(report.kind, "node");
    let report: Value = serde_json::from_str(&report.data).expect("JSON");
    assert_eq!(report["id"], "node1");
    assert_eq!(report["role"], "leader");
}
