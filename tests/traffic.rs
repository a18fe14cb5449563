//! `GET /api/v1/traffic` on a real three-node cluster
//! (`IPVS_KERNEL=memory`): every node's table lists every service with
//! every member, `?since=` answers only the changes (small when idle), and
//! the detail of one service names every member and 404s for a service
//! that does not exist.

#[path = "cluster/harness.rs"]
mod harness;

use harness::Cluster;
use serde_json::{json, Value};
use std::time::Duration;

fn service(last: u8) -> Value {
    json!({"protocol": "tcp", "address": format!("192.0.2.{last}"), "port": 80,
           "servers": [{"address": "198.51.100.11", "port": 8080},
                       {"address": "198.51.100.12", "port": 8080, "weight": 0}]})
}

/// The table node `i` answers (with `query`, e.g. `?since=3`), and its size.
fn traffic(c: &Cluster, i: usize, query: &str) -> (Value, usize) {
    let r = c.get(i, &format!("/api/v1/traffic{query}"));
    assert_eq!(r.status().as_u16(), 200);
    let bytes = r.bytes().expect("a body");
    (serde_json::from_slice(&bytes).expect("JSON"), bytes.len())
}

/// Whether `t` has a row for each of `ids` with every member of `names`
/// reporting it programmed.
fn complete(t: &Value, ids: &[&str], names: &[String]) -> bool {
    let rows = t["services"].as_array().expect("a list of services");
    rows.len() == ids.len()
        && ids.iter().all(|id| {
            rows.iter().any(|r| {
                r["service"] == *id
                    && names.iter().all(|n| {
                        r["nodes"][n]["programmed"] == true
                            && r["nodes"][n].get("reported").is_none()
                    })
            })
        })
}

#[test]
fn every_node_serves_the_clusters_traffic_table() {
    let c = Cluster::start(3);
    for last in [10, 11, 12] {
        let r = c.send(
            0,
            "POST",
            "/api/v1/services?wait=quorum",
            Some(&service(last)),
        );
        assert_eq!(r.status().as_u16(), 201);
    }
    let ids = [
        "tcp-192.0.2.10-80",
        "tcp-192.0.2.11-80",
        "tcp-192.0.2.12-80",
    ];
    let names: Vec<String> = c.nodes.iter().map(|n| n.name.clone()).collect();
    // Two rounds of 10 s at most: the members sample, then poll each other.
    for i in 0..3 {
        c.wait(Duration::from_secs(40), "a complete traffic table", || {
            complete(&traffic(&c, i, "").0, &ids, &names)
        });
    }
    let (t, full_size) = traffic(&c, 1, "");
    assert_eq!(t["sampled_every_ms"], 10_000);
    assert_eq!(t["full"], true);
    assert_eq!(t["unreachable"], json!([]));
    let mut nodes: Vec<String> = serde_json::from_value(t["nodes"].clone()).unwrap();
    nodes.sort();
    assert_eq!(nodes, names);
    for row in t["services"].as_array().unwrap() {
        for name in &names {
            // The second server has weight 0: in the kernel, not up.
            let n = &row["nodes"][name];
            assert_eq!(
                (&n["servers_up"], &n["servers_total"]),
                (&json!(1), &json!(2))
            );
        }
        assert_eq!(row["total"]["servers_up"], 3);
        assert_eq!(row["total"]["programmed"], 3);
        assert_eq!(row["cps"], json!([]), "the memory kernel has no traffic");
    }

    // Idle: the changes after the last answer are none, in a few hundred
    // bytes (a round may pass meanwhile: then ask again).
    let mut idle = None;
    for _ in 0..5 {
        let sample = traffic(&c, 1, "").0["sample"].as_u64().unwrap();
        let (t, size) = traffic(&c, 1, &format!("?since={sample}"));
        assert_eq!(t["full"], false, "{t}");
        assert_eq!(t["removed"], json!([]));
        assert_eq!(t["services"], json!([]), "nothing changed while idle: {t}");
        if t["sample"] == sample {
            idle = Some(size);
            break;
        }
    }
    let idle = idle.expect("an answer within one round");
    assert!(
        idle < 300,
        "{idle} bytes idle (the whole table: {full_size})"
    );

    // A removal and a new server show as exactly those changes.
    let sample = traffic(&c, 2, "").0["sample"].as_u64().unwrap();
    let r = c.send(
        0,
        "DELETE",
        "/api/v1/services/tcp-192.0.2.12-80?grace=0&wait=quorum",
        None,
    );
    assert!(matches!(r.status().as_u16(), 202 | 204), "{r:?}");
    let r = c.send(
        0,
        "PATCH",
        "/api/v1/services/tcp-192.0.2.11-80/servers/198.51.100.12-8080?wait=quorum",
        Some(&json!({"weight": 5})),
    );
    assert_eq!(r.status().as_u16(), 200);
    c.wait(Duration::from_secs(40), "the changes in the table", || {
        let t = traffic(&c, 2, &format!("?since={sample}")).0;
        let changed: Vec<&str> = t["services"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["service"].as_str())
            .collect();
        t["removed"] == json!(["tcp-192.0.2.12-80"])
            && changed == ["tcp-192.0.2.11-80"]
            && names
                .iter()
                .all(|n| t["services"][0]["nodes"][n]["servers_up"] == 2)
    });
    // An answer this node never gave: the whole table.
    let t = traffic(&c, 2, "?since=999999").0;
    assert_eq!(t["full"], true);
    assert_eq!(t["services"].as_array().unwrap().len(), 2);

    // One service in detail, from every member.
    let r = c.get(0, "/api/v1/traffic/tcp-192.0.2.11-80");
    assert_eq!(r.status().as_u16(), 200);
    let d: Value = r.json().unwrap();
    assert_eq!(d["service"], "tcp-192.0.2.11-80");
    for name in &names {
        let n = &d["nodes"][name];
        assert_eq!(
            (&n["reported"], &n["programmed"]),
            (&json!(true), &json!(true)),
            "{d}"
        );
        let servers: Vec<(&str, &Value, &str)> = n["servers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["server"].as_str().unwrap(),
                    &s["weight"],
                    s["health"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            servers,
            vec![
                ("198.51.100.11-8080", &json!(1), "unchecked"),
                ("198.51.100.12-8080", &json!(5), "unchecked"),
            ],
            "{name}"
        );
        let h = &n["history"];
        let len = h["at_ms"].as_array().unwrap().len();
        assert!((1..=90).contains(&len), "{h}");
        assert_eq!(h["cps"].as_array().unwrap().len(), len);
    }

    // Unknown services and bad parameters.
    let r = c.get(1, "/api/v1/traffic/tcp-192.0.2.99-80");
    assert_eq!(r.status().as_u16(), 404);
    let e: Value = r.json().unwrap();
    assert_eq!(e["error"]["code"], "not_found");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tcp-192.0.2.99-80"),
        "{e}"
    );
    for (query, field) in [("?since=abc", "?since"), ("?sinse=3", "?sinse")] {
        let r = c.get(1, &format!("/api/v1/traffic{query}"));
        assert_eq!(r.status().as_u16(), 400, "{query}");
        let e: Value = r.json().unwrap();
        assert_eq!(e["error"]["field"], field, "{e}");
    }
}
