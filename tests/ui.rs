//! The web UI in a real browser: a three-node cluster of the built binary
//! (the harness of tests/cluster.rs, `IPVS_KERNEL=memory`), and
//! tests/ui/ui.test.mjs driving Debian's headless Chromium through
//! playwright-core against a follower's UI: forms, list, counters from
//! every node, edits, field errors, drain, delete, the cluster view.
//!
//! Never skipped: without Chromium, Node.js or playwright-core it fails,
//! naming tests/ui/setup.sh (which tests/run.sh runs first).
//!
//! Also here, since it needs the same Node.js packages: the OpenAPI
//! document checked by a maintained validator (tests/ui/openapi.mjs).
//! `UI_SCREENSHOTS=docs cargo test --test ui` also refreshes the
//! screenshots under docs/.

#[path = "cluster/harness.rs"]
mod harness;

use harness::Cluster;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const SETUP: &str =
    "run tests/ui/setup.sh (as root it installs Debian's chromium; it runs npm ci in tests/ui)";

/// What the browser test needs, or a failure that says how to get it.
fn check_prerequisites(repo: &Path) {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: the web UI test needs a real browser; {SETUP}"
    );
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.as_ref().is_ok_and(|o| o.status.success()),
        "node is missing (Node.js 20 or later runs the browser test): {node:?}"
    );
    assert!(
        repo.join("tests/ui/node_modules/playwright-core").is_dir(),
        "tests/ui/node_modules/playwright-core is missing: {SETUP}"
    );
}

/// The served OpenAPI document is valid OpenAPI 3.1 by the specification's
/// own schema (src/api/tests/openapi.rs holds it to the code).
#[test]
fn the_openapi_document_is_valid_openapi_3_1() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(
        repo.join("tests/ui/node_modules/@seriousme/openapi-schema-validator")
            .is_dir(),
        "the OpenAPI validator is missing: {SETUP}"
    );
    let out = Command::new("node")
        .arg("tests/ui/openapi.mjs")
        .arg("src/api/openapi.json")
        .current_dir(repo)
        .output()
        .expect("run node");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_web_ui_manages_a_cluster_in_a_browser() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    check_prerequisites(repo);
    let c = Cluster::start(3);
    let mut leader = None;
    c.wait(Duration::from_secs(20), "a leader", || {
        leader = c.leader();
        leader.is_some()
    });
    // The UI of a follower: its writes are forwarded to the leader, and the
    // counters of the other two nodes come through its relay.
    let ui = (0..3).find(|&i| Some(i) != leader).expect("a follower");
    let mut urls = vec![c.nodes[ui].url("")];
    urls.extend((0..3).filter(|&i| i != ui).map(|i| c.nodes[i].url("")));

    let failure_dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new("node")
        .arg("tests/ui/ui.test.mjs")
        .args(&urls)
        .current_dir(repo)
        .env("UI_FAILURE_DIR", failure_dir.path())
        .output()
        .expect("run node tests/ui/ui.test.mjs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    if !out.status.success() {
        // Keep the page's last picture where the message says it is.
        let kept = std::env::temp_dir().join("ipvs-ui-failure.png");
        let _ = std::fs::copy(failure_dir.path().join("ipvs-ui-failure.png"), &kept);
        let logs: String = c
            .nodes
            .iter()
            .map(|n| format!("--- {} ---\n{}", n.name, n.log()))
            .collect();
        panic!(
            "the browser test failed ({}); the page at the failure: {}\n{stdout}\n{stderr}\n{logs}",
            out.status,
            kept.display()
        );
    }
}

/// The page of a node without a quorum shows it: a banner with the age of
/// the last contact, and no leader in the summary.
#[test]
fn the_web_ui_says_when_its_node_has_no_quorum() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    check_prerequisites(repo);
    let mut c = Cluster::start(3);
    let leader = c.leader().expect("a leader");
    for i in (0..3).filter(|&i| i != leader) {
        c.nodes[i].kill();
    }
    let out = Command::new("node")
        .arg("tests/ui/quorum.test.mjs")
        .arg(c.nodes[leader].url(""))
        .current_dir(repo)
        .output()
        .expect("run node tests/ui/quorum.test.mjs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
}
