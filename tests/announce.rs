//! The announcement as a node reports it, without a real network: with
//! `ANNOUNCE=none` every node still says which service addresses it can
//! serve and why not, and a bad announcement setting refuses start-up by
//! name, changing nothing. (The modes themselves run against real kernels,
//! routers and BIRD in tests/kernel/.)

#[path = "cluster/harness.rs"]
mod harness;

use harness::Cluster;
use serde_json::{json, Value};
use std::time::Duration;

/// The `announce` part of node `i`'s report.
fn announce(c: &Cluster, i: usize) -> Value {
    let node: Value = c.get(i, "/api/v1/node").json().expect("node report");
    node["announce"].clone()
}

/// The view of `address` in node `i`'s report, if it has one.
fn vip(c: &Cluster, i: usize, address: &str) -> Option<Value> {
    announce(c, i)["vips"]
        .as_array()?
        .iter()
        .find(|v| v["address"] == address)
        .cloned()
}

#[test]
fn every_node_says_which_addresses_it_can_serve() {
    let c = Cluster::start(2);
    let a = announce(&c, 0);
    assert_eq!(a["mode"], "none");
    assert_eq!(a["state"], "off");
    assert_eq!(a["vips"], json!([]));

    // A bound address whose server is not probed: servable everywhere.
    let (status, body) = c.send_retrying(
        0,
        "POST",
        "/api/v1/services",
        Some(&json!({
            "protocol": "tcp", "address": "192.0.2.50", "port": 80,
            "bind_address": true,
            "servers": [{"address": "198.51.100.1", "port": 80}],
        })),
    );
    assert_eq!(status, 201, "{body}");
    // Another on an address that is not bound: not a VIP.
    let (status, body) = c.send_retrying(
        0,
        "POST",
        "/api/v1/services",
        Some(&json!({"protocol": "tcp", "address": "192.0.2.51", "port": 80})),
    );
    assert_eq!(status, 201, "{body}");
    for i in 0..2 {
        c.wait(Duration::from_secs(20), "the address servable", || {
            vip(&c, i, "192.0.2.50").is_some_and(|v| v["can_serve"] == true)
        });
        let v = vip(&c, i, "192.0.2.50").unwrap();
        assert_eq!(v["services"], json!(["tcp-192.0.2.50-80"]), "{v}");
        assert_eq!(v["announced"], false, "{v}");
        assert!(
            v["why_not"].as_str().unwrap().starts_with("ANNOUNCE=none"),
            "{v}"
        );
        assert!(vip(&c, i, "192.0.2.51").is_none(), "not bound: not a VIP");
    }

    // Its only server probed and down (nothing listens on port 9 of
    // 127.0.0.1), and the policy withdraws the address then: no node can
    // serve it, and each says why.
    let (status, body) = c.send_retrying(
        0,
        "PATCH",
        "/api/v1/services/tcp-192.0.2.50-80",
        Some(
            &json!({"health_check": {"kind": "tcp", "interval": 0.2, "timeout": 0.1,
                      "rise": 1, "fall": 1, "address": "127.0.0.1", "port": 9},
                     "health_policy": {"all_down": "withdraw"}}),
        ),
    );
    assert_eq!(status, 200, "{body}");
    for i in 0..2 {
        c.wait(Duration::from_secs(20), "the address unservable", || {
            vip(&c, i, "192.0.2.50").is_some_and(|v| v["can_serve"] == false)
        });
        let v = vip(&c, i, "192.0.2.50").unwrap();
        assert_eq!(
            v["why_not"], "every server of tcp-192.0.2.50-80 is down on this node",
            "{v}"
        );
    }
    // The same in /metrics.
    let metrics = c.get(0, "/metrics").text().unwrap();
    assert!(
        metrics.contains("ipvs_manager_vip_can_serve{address=\"192.0.2.50\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ipvs_manager_announce_state{mode=\"none\",state=\"off\"} 1"),
        "{metrics}"
    );
}

#[test]
fn bad_announcement_settings_refuse_start_by_name() {
    for (settings, says) in [
        (
            &[("ANNOUNCE", "anycast")][..],
            "invalid value 'anycast' for '--announce <ANNOUNCE>'",
        ),
        (
            &[("ANNOUNCE", "bgp"), ("BGP_PEERS", "65000@192.0.2.1")][..],
            "BGP_LOCAL_AS: ANNOUNCE=bgp needs this node's AS number",
        ),
        (
            &[
                ("ANNOUNCE", "bgp"),
                ("BGP_LOCAL_AS", "65001"),
                ("BGP_PEERS", "192.0.2.1"),
            ][..],
            "BGP_PEERS: peer 1 (\"192.0.2.1\") has no AS",
        ),
        (
            &[("ANNOUNCE", "l2")][..],
            "ANNOUNCE_INTERFACE: ANNOUNCE=l2 needs the interface",
        ),
        (
            &[("SYNC_INTERFACE", "eth1"), ("SYNC_GROUP", "192.0.2.1")][..],
            "SYNC_GROUP: 192.0.2.1 is not a multicast address",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().join("data");
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ipvs-manager"));
        cmd.env_remove("RUST_LOG")
            .env("IPVS_KERNEL", "memory")
            .env("SERVER_PORT", "0")
            .env("RAFT_PORT", "0")
            .env("RAFT_VOL_DIR", &vol);
        for (k, v) in settings {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run ipvs-manager");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{settings:?}: {stderr}");
        assert!(stderr.contains(says), "{settings:?}: {stderr}");
        // Refused before anything was touched.
        assert!(!vol.exists(), "{settings:?}: RAFT_VOL_DIR was created");
    }
}
