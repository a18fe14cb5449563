//! The node's log as an operator reads it: plain text without colour codes
//! when it goes to a file or the journal, one JSON object per line with
//! `LOG_FORMAT=json`, members named by `RAFT_NODE_ID` rather than by the
//! 64-bit ids openraft prints, and a bad setting refused by name.

#[path = "cluster/harness.rs"]
mod harness;

use harness::Cluster;
use serde_json::Value;
use std::time::Duration;

/// Whether `line` has a run of 15 digits or more: a raw Raft id.
fn has_raw_id(line: &str) -> bool {
    line.as_bytes()
        .split(|b| !b.is_ascii_digit())
        .any(|run| run.len() >= 15)
}

#[test]
fn logs_are_plain_or_json_and_name_the_members() {
    let mut c = Cluster::new(3);
    c.nodes[1].env.push(("LOG_FORMAT".into(), "json".into()));
    c.start_all();
    // What is logged from now on is logged by members that know each other:
    // an election, after the leader dies, has openraft name every member.
    let marks: Vec<usize> = c.nodes.iter().map(|n| n.log().len()).collect();
    let leader = c.leader().expect("a leader");
    c.nodes[leader].kill();
    c.wait(Duration::from_secs(20), "a new leader", || {
        c.leader().is_some_and(|l| l != leader)
    });
    let survivors: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    for &i in &survivors {
        let log = c.nodes[i].log();
        let new = &log[marks[i]..];
        assert!(!log.contains('\x1b'), "colour codes in a file:\n{log}");
        for line in new.lines() {
            assert!(
                !has_raw_id(line),
                "{}: a raw Raft id: {line}",
                c.nodes[i].name
            );
        }
        // openraft's election messages name the members.
        let named = new
            .lines()
            .any(|l| l.contains("T2-Nnode") || l.contains("T3-Nnode") || l.contains("-Nnode"));
        assert!(named, "{}: no member named in\n{new}", c.nodes[i].name);
    }
    // node2 logs JSON lines, each a whole object.
    let json_log = c.nodes[1].log();
    let mut listening = None;
    for line in json_log.lines() {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(
            v["timestamp"].is_string() && v["level"].is_string(),
            "{line}"
        );
        assert!(v["target"].is_string(), "{line}");
        if v["message"] == "listening" {
            listening = Some(v);
        }
    }
    let listening = listening.expect("the start-up line");
    assert_eq!(listening["node"], "node2");
    assert_eq!(listening["id"], "node2", "the id is named");
    // The others log text.
    let text = c.nodes[0].log();
    assert!(
        text.lines()
            .any(|l| l.contains(" INFO ") && l.contains("listening node=node1 id=node1")),
        "{text}"
    );
}

#[test]
fn a_bad_log_setting_stops_the_start_naming_it() {
    for (name, value, says) in [
        (
            "LOG_FORMAT",
            "xml",
            "LOG_FORMAT \"xml\": expected text or json",
        ),
        (
            "LOG_LEVEL",
            "verbose",
            "LOG_LEVEL \"verbose\": expected error, warn, info, debug or trace",
        ),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ipvs-manager"))
            .env(name, value)
            .env_remove("RUST_LOG")
            .env("IPVS_KERNEL", "off")
            .env("RAFT_VOL_DIR", "/nonexistent/never-created")
            .output()
            .expect("run ipvs-manager");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.starts_with(&format!("ipvs-manager: {says}")),
            "{stderr}"
        );
    }
}
