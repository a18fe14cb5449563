//! Fault injection against a three-node cluster, the way Jepsen does it:
//! concurrent clients write and read through every node while a nemesis
//! flips bytes in a stopped node's files, cuts them short, or fills its
//! disk; then the history is checked. No acknowledged write may be lost, no
//! write refused as definite may appear, the registers' histories must be
//! linearizable (tests/faults/checker.rs, checked against stateright's
//! tester below), and the nodes must converge.
//!
//! A node whose store is found damaged must refuse to start (exit status
//! 65, naming the file) — never come back ready with less than it
//! acknowledged — and then rejoin when started with STORE_DAMAGE=rejoin.
//! A node whose disk fills must say so (`/readyz`, its API, `/metrics`),
//! log it once, stop acknowledging, and recover by itself once space
//! returns.
//!
//! Run more trials than the test command's with
//! `FAULT_TRIALS=5 cargo test --release --test faults -- --nocapture`;
//! `FAULT_SEED` repeats a run (every run prints its seed); `FAULT_REPORT=f`
//! appends each scenario's figures to `f` as JSON lines (README's table).

#[path = "cluster/harness.rs"]
mod harness;

#[path = "faults/checker.rs"]
mod checker;
#[path = "faults/disk.rs"]
mod disk;
#[path = "faults/register.rs"]
mod register;
#[path = "faults/workload.rs"]
mod workload;

use checker::{check, Op, Verdict};
use disk::{Rng, Tmpfs};
use harness::Cluster;
use register::{Input, Output, Register};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use workload::{Clients, Outcome, RegisterId, Targets};

/// One cluster at a time: the scenarios time failovers on two cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const REGISTERS: u8 = 3;
const CLIENTS: usize = 6;

fn trials() -> usize {
    std::env::var("FAULT_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

fn seed() -> u64 {
    let seed = std::env::var("FAULT_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("FAULT_SEED={seed}");
    seed
}

/// A cluster under load, and what happened to it.
struct Trial {
    name: &'static str,
    c: Cluster,
    registers: Vec<RegisterId>,
    clients: Option<Clients>,
    /// The registers' revisions after setup.
    initial: Vec<u64>,
    rng: Rng,
    disks: Vec<Tmpfs>,
    figures: Figures,
}

/// What a scenario reports (README's fault table).
#[derive(Debug, Default, serde::Serialize)]
struct Figures {
    scenario: &'static str,
    seed: u64,
    faults: u32,
    /// Restarts after a fault: came back on their own, refused (damage
    /// found), rejoined after a refusal.
    started_clean: u32,
    refused: u32,
    rejoined: u32,
    acknowledged_writes: u64,
    unknown_outcomes: u64,
    lost: u64,
    phantom: u64,
    register_ops: usize,
    linearizable: bool,
    /// Seconds from freeing the disk to the node ready again.
    recovery_s: Vec<f64>,
    /// Seconds from a restart to the node ready (rejoins included).
    rejoin_s: Vec<f64>,
}

impl Trial {
    /// Three nodes (each on a tmpfs of its own with `disks`), the
    /// registers created, the clients running.
    fn start(name: &'static str, disks: bool) -> Trial {
        let seed = seed();
        let mut c = Cluster::new(3);
        let mut mounted = Vec::new();
        if disks {
            for node in &c.nodes {
                mounted.push(Tmpfs::mount(&node.dir, 64));
            }
        }
        c.start_all();
        let registers: Vec<RegisterId> =
            (1..=REGISTERS).map(|index| RegisterId { index }).collect();
        let mut initial = Vec::new();
        for reg in &registers {
            let r = c.send(0, "POST", "/api/v1/services", Some(&reg.create_body()));
            assert_eq!(r.status().as_u16(), 201, "create register {}", reg.index);
            let rev = r
                .headers()
                .get("etag")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim_matches('"').parse().ok())
                .expect("an ETag");
            initial.push(rev);
        }
        let targets: Targets = Arc::new(Mutex::new(
            c.nodes
                .iter()
                .map(|n| format!("http://127.0.0.1:{}", n.http_port()))
                .collect(),
        ));
        let clients = Clients::start(CLIENTS, targets, registers.clone(), initial.clone(), seed);
        Trial {
            name,
            c,
            registers,
            clients: Some(clients),
            initial,
            rng: Rng::new(seed),
            disks: mounted,
            figures: Figures {
                scenario: name,
                seed,
                ..Default::default()
            },
        }
    }

    fn follower(&self) -> usize {
        let leader = self.c.leader().expect("a leader");
        (0..3).find(|&i| i != leader).expect("a follower")
    }

    /// Starts node `i` after a fault and waits until it serves again: on
    /// its own, or — when it refuses because its store is damaged (exit
    /// 65, the file named, no panic) — once restarted with
    /// STORE_DAMAGE=rejoin.
    fn restart_after_damage(&mut self, i: usize, what: &str) {
        let started = Instant::now();
        let before = self.c.nodes[i].log().len();
        self.c.nodes[i].env.retain(|(k, _)| k != "STORE_DAMAGE");
        self.c.nodes[i].start();
        let exited = loop {
            if let Some(status) = self.c.nodes[i].exit_within(Duration::from_millis(100)) {
                break Some(status);
            }
            if self.ready(i) {
                break None;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{what}: {} neither ready nor refusing after 30 s\n{}",
                self.c.nodes[i].name,
                self.c.nodes[i].log()
            );
        };
        let log = self.c.nodes[i].log()[before..].to_string();
        assert!(!log.contains("panicked"), "{what}: a panic\n{log}");
        match exited {
            None => {
                self.figures.started_clean += 1;
                eprintln!("{}: {what}: started as it was", self.name);
            }
            Some(status) => {
                assert_eq!(
                    status.code(),
                    Some(65),
                    "{what}: a damaged store refuses with exit status 65\n{log}"
                );
                assert!(
                    log.contains("is damaged") && log.contains("STORE_DAMAGE=rejoin"),
                    "{what}: the refusal names the damage and the way out\n{log}"
                );
                let line = log
                    .lines()
                    .find(|l| l.contains("is damaged"))
                    .unwrap_or_default();
                eprintln!("{}: {what}: refused: {}", self.name, line.trim());
                self.figures.refused += 1;
                self.c.nodes[i]
                    .env
                    .push(("STORE_DAMAGE".into(), "rejoin".into()));
                self.c.nodes[i].start();
                self.c.wait(
                    Duration::from_secs(60),
                    "the damaged node to rejoin",
                    || self.ready(i),
                );
                self.figures.rejoined += 1;
            }
        }
        self.figures.rejoin_s.push(started.elapsed().as_secs_f64());
    }

    fn ready(&self, i: usize) -> bool {
        self.c
            .http
            .get(self.c.nodes[i].url("/readyz"))
            .timeout(Duration::from_secs(2))
            .send()
            .is_ok_and(|r| r.status().is_success())
    }

    fn load(&self, d: Duration) {
        std::thread::sleep(d);
    }

    /// Stops the clients, waits for the cluster to settle and checks the
    /// history; writes the figures.
    fn finish(mut self) {
        let clients = self.clients.take().expect("clients");
        let epoch = clients.epoch;
        let history = clients.stop();
        for i in 0..3 {
            self.c
                .wait(Duration::from_secs(60), "every node ready", || {
                    self.ready(i)
                });
        }
        self.c.wait_voters(3);
        // Every node serves the same configuration, linearizably and not.
        let config = self.c.config(0);
        self.c
            .wait(Duration::from_secs(30), "the nodes to converge", || {
                (0..3).all(|i| {
                    self.c
                        .get(i, "/api/v1/config?consistent=true")
                        .json::<Value>()
                        .ok()
                        .as_ref()
                        == Some(&config)
                        && self
                            .c
                            .get(i, "/api/v1/config")
                            .json::<Value>()
                            .ok()
                            .as_ref()
                            == Some(&config)
                })
            });
        let present: BTreeSet<String> = config["services"]
            .as_array()
            .expect("services")
            .iter()
            .filter_map(|s| s["address"].as_str().map(str::to_string))
            .collect();
        let lost: Vec<&String> = history
            .creates
            .iter()
            .filter(|(a, o)| **o == Outcome::Acked && !present.contains(*a))
            .map(|(a, _)| a)
            .collect();
        let phantom: Vec<&String> = history
            .creates
            .iter()
            .filter(|(a, o)| **o == Outcome::Refused && present.contains(*a))
            .map(|(a, _)| a)
            .collect();
        self.figures.acknowledged_writes = history.acked_writes;
        self.figures.unknown_outcomes = history.unknown;
        self.figures.lost = lost.len() as u64;
        self.figures.phantom = phantom.len() as u64;

        // The registers, with a final read of each after the dust settled.
        let mut all_linearizable = true;
        let mut verdicts = Vec::new();
        for (k, reg) in self.registers.iter().enumerate() {
            let mut ops: Vec<Op<Input, Output>> = history.registers[k].clone();
            let after = workload::now(epoch);
            let r = self
                .c
                .get(0, &format!("{}?consistent=true", reg.server_path()));
            let rev = r
                .headers()
                .get("etag")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim_matches('"').parse::<u64>().ok())
                .expect("an ETag");
            let weight = r.json::<Value>().expect("server")["weight"]
                .as_u64()
                .expect("weight");
            ops.push(Op {
                input: Input::Read,
                output: Output::Value(weight, rev),
                call: after,
                ret: Some(after + 1),
            });
            self.figures.register_ops += ops.len();
            let model = Register {
                value: 1,
                rev: self.initial[k],
            };
            let verdict = check(&model, &ops, Duration::from_secs(120));
            all_linearizable &= verdict == Verdict::Linearizable;
            verdicts.push((reg.index, ops.len(), verdict));
        }
        self.figures.linearizable = all_linearizable;
        eprintln!("{}: {:?}", self.name, self.figures);
        if let Ok(path) = std::env::var("FAULT_REPORT") {
            use std::io::Write;
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
            {
                let _ = writeln!(f, "{}", json!(self.figures));
            }
        }
        assert!(lost.is_empty(), "acknowledged creates lost: {lost:?}");
        assert!(
            phantom.is_empty(),
            "creates refused as definite yet present: {phantom:?}"
        );
        assert!(
            all_linearizable,
            "register histories: {verdicts:?} (FAULT_SEED={})",
            self.figures.seed
        );
        assert!(
            history.acked_writes > 50,
            "the clients got little done: {:?}",
            self.figures
        );
    }
}

/// The name of `path` inside the node's directory, for messages.
fn short(dir: &Path, path: &Path) -> String {
    path.strip_prefix(dir).unwrap_or(path).display().to_string()
}

/// A bit flipped in each file of a stopped follower, one file at a time.
#[test]
fn byte_flips_in_a_stopped_followers_files() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut t = Trial::start("follower byte flips", false);
    t.load(Duration::from_secs(3));
    for _ in 0..trials() {
        let i = t.follower();
        t.c.nodes[i].kill();
        let dir = t.c.nodes[i].dir.clone();
        for file in disk::persisted_files(&dir) {
            if !file.exists() {
                continue;
            }
            let tail = t.rng.below(2) == 0;
            let at = disk::flip_byte(&file, &mut t.rng, tail);
            t.figures.faults += 1;
            let what = format!("a bit flipped at {at} of {}", short(&dir, &file));
            t.restart_after_damage(i, &what);
            t.load(Duration::from_millis(1500));
            t.c.nodes[i].kill();
        }
        t.c.nodes[i].start();
        t.c.wait(Duration::from_secs(30), "the follower back", || t.ready(i));
    }
    t.load(Duration::from_secs(2));
    t.finish();
}

/// The leader killed, a bit flipped in the recently written part of its
/// database, restarted at once — the way sled lost a leader's log tail.
#[test]
fn byte_flips_in_the_leaders_recent_writes() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut t = Trial::start("leader byte flips", false);
    t.load(Duration::from_secs(3));
    for round in 0..2 * trials() {
        let i = t.c.leader().expect("a leader");
        t.c.nodes[i].kill();
        let dir = t.c.nodes[i].dir.clone();
        let file = if round % 2 == 0 {
            dir.join("sled").join("db")
        } else {
            let files = disk::persisted_files(&dir);
            files[t.rng.below(files.len() as u64) as usize].clone()
        };
        let at = disk::flip_byte(&file, &mut t.rng, true);
        t.figures.faults += 1;
        let what = format!("the leader's {} flipped at {at}", short(&dir, &file));
        t.restart_after_damage(i, &what);
        t.load(Duration::from_secs(2));
    }
    t.finish();
}

/// A file of a stopped node cut short, a follower's and the leader's.
#[test]
fn truncated_files() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut t = Trial::start("truncated files", false);
    t.load(Duration::from_secs(3));
    for round in 0..2 * trials() {
        let i = if round % 2 == 0 {
            t.follower()
        } else {
            t.c.leader().expect("a leader")
        };
        t.c.nodes[i].kill();
        let dir = t.c.nodes[i].dir.clone();
        let files = disk::persisted_files(&dir);
        let file = files[t.rng.below(files.len() as u64) as usize].clone();
        let at = disk::truncate(&file, &mut t.rng);
        t.figures.faults += 1;
        let what = format!("{} cut to {at} bytes", short(&dir, &file));
        t.restart_after_damage(i, &what);
        t.load(Duration::from_secs(2));
    }
    t.finish();
}

/// A follower's disk and then the leader's fills during writes, and is
/// freed again.
#[test]
fn a_full_disk_during_writes() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut t = Trial::start("full disk", true);
    t.load(Duration::from_secs(3));
    for round in 0..2 * trials() {
        let i = if round % 2 == 0 {
            t.follower()
        } else {
            t.c.leader().expect("a leader")
        };
        let name = t.c.nodes[i].name.clone();
        let before = t.c.nodes[i].log().len();
        let filler = t.disks[i].fill();
        assert!(t.disks[i].free_bytes() < 1 << 20, "{name}'s disk is full");
        t.figures.faults += 1;
        // The node finds out at its next write, and says so.
        t.c.wait(Duration::from_secs(20), "the full disk reported", || {
            t.c.http
                .get(t.c.nodes[i].url("/readyz"))
                .send()
                .ok()
                .filter(|r| r.status().as_u16() == 503)
                .and_then(|r| r.text().ok())
                .is_some_and(|body| body.contains("No space left on device"))
        });
        let reads = t.c.get(i, "/api/v1/services");
        assert_eq!(
            reads.status().as_u16(),
            503,
            "{name} serves no reads it cannot vouch for"
        );
        assert!(reads
            .text()
            .unwrap_or_default()
            .contains("store_unavailable"));
        let metrics = t.c.get(i, "/metrics").text().unwrap_or_default();
        assert!(
            metrics.contains("ipvs_manager_store_writable 0"),
            "{metrics}"
        );
        let node =
            t.c.get(i, "/api/v1/node")
                .json::<Value>()
                .expect("node report");
        assert_eq!(node["store"]["writable"], json!(false), "{node}");
        // The CLI's cluster status, through another node, names it.
        let other = (0..3).find(|&j| j != i).expect("another node");
        let status = std::process::Command::new(env!("CARGO_BIN_EXE_ipvs-manager"))
            .args(["--server", &t.c.nodes[other].url(""), "cluster", "status"])
            .output()
            .expect("run the CLI");
        let text = String::from_utf8_lossy(&status.stdout);
        assert!(
            text.contains(&format!("{name}: not ready (disk)"))
                && text.contains("No space left on device"),
            "{text}"
        );
        // The others go on: a quorum of two.
        let acked = |t: &Trial| {
            let other = (0..3).find(|&j| j != i).expect("another node");
            t.c.get(other, "/api/v1/config?consistent=true")
                .status()
                .as_u16()
                == 200
        };
        t.c.wait(Duration::from_secs(20), "the others serving", || acked(&t));
        t.load(Duration::from_secs(3));
        let freed = Instant::now();
        std::fs::remove_file(&filler).expect("free the disk");
        t.c.wait(
            Duration::from_secs(30),
            "the node to recover by itself",
            || t.ready(i),
        );
        let recovery = freed.elapsed().as_secs_f64();
        t.figures.recovery_s.push(recovery);
        eprintln!(
            "{}: {name}'s disk freed; ready again after {recovery:.2} s",
            t.name
        );
        let log = t.c.nodes[i].log()[before..].to_string();
        let reported = log.matches("the disk does not take writes").count();
        assert_eq!(reported, 1, "the failure is logged once\n{log}");
        assert!(log.contains("the disk takes writes again"), "{log}");
        t.load(Duration::from_secs(2));
    }
    t.finish();
}

/// The checker agrees with stateright's linearizability tester on random
/// small histories of a register, linearizable ones and broken ones.
#[test]
fn the_checker_agrees_with_stateright() {
    use stateright::semantics::register::{Register as SrRegister, RegisterOp, RegisterRet};
    use stateright::semantics::{ConsistencyTester, LinearizabilityTester};

    struct Plain;
    impl checker::Model for Plain {
        type State = u8;
        type Input = Option<u8>; // Some(v): write v; None: read
        type Output = Option<u8>; // a read's value
        fn init(&self) -> u8 {
            0
        }
        fn step(&self, s: &u8, input: &Option<u8>, output: &Option<u8>) -> Vec<u8> {
            match (input, output) {
                (Some(v), _) => vec![*v],
                (None, Some(v)) if v == s => vec![*s],
                _ => vec![],
            }
        }
    }

    let mut rng = Rng::new(0x5eed);
    let (mut linearizable, mut broken) = (0, 0);
    for _ in 0..400 {
        // Three threads, a few operations each, on a real register whose
        // operations take effect at a random point inside their interval.
        let mut ops = Vec::new();
        let mut time = [0u64; 3];
        for _ in 0..7 {
            let thread = rng.below(3) as usize;
            let call = time[thread] + rng.below(5);
            let ret = call + 1 + rng.below(8);
            time[thread] = ret + 1;
            let input = if rng.below(2) == 0 {
                Some(1 + rng.below(3) as u8)
            } else {
                None
            };
            ops.push((thread, call, ret, input, call + rng.below(ret - call)));
        }
        let mut by_effect: Vec<usize> = (0..ops.len()).collect();
        by_effect.sort_by_key(|&k| (ops[k].4, k));
        let mut value = 0u8;
        let mut outputs = vec![None; ops.len()];
        for k in by_effect {
            match ops[k].3 {
                Some(v) => value = v,
                None => outputs[k] = Some(value),
            }
        }
        // Now and then a read that answers something else.
        if rng.below(3) == 0 {
            if let Some(k) = (0..ops.len()).find(|&k| ops[k].3.is_none()) {
                outputs[k] = Some((outputs[k].unwrap_or(0) + 1) % 4);
            }
        }
        let history: Vec<Op<Option<u8>, Option<u8>>> = ops
            .iter()
            .zip(&outputs)
            .map(|(o, out)| Op {
                input: o.3,
                output: *out,
                call: o.1 * 2,
                ret: Some(o.2 * 2 + 1),
            })
            .collect();
        let ours = check(&Plain, &history, Duration::from_secs(5)) == Verdict::Linearizable;

        let mut events: Vec<(u64, bool, usize)> = Vec::new();
        for (k, o) in ops.iter().enumerate() {
            events.push((o.1 * 2, true, k));
            events.push((o.2 * 2 + 1, false, k));
        }
        events.sort();
        let mut tester = LinearizabilityTester::new(SrRegister(0u8));
        for (_, is_call, k) in events {
            let thread = ops[k].0;
            if is_call {
                let op = match ops[k].3 {
                    Some(v) => RegisterOp::Write(v),
                    None => RegisterOp::Read,
                };
                tester.on_invoke(thread, op).expect("a valid history");
            } else {
                let ret = match outputs[k] {
                    Some(v) => RegisterRet::ReadOk(v),
                    None => RegisterRet::WriteOk,
                };
                tester.on_return(thread, ret).expect("a valid history");
            }
        }
        let theirs = tester.is_consistent();
        assert_eq!(ours, theirs, "the checkers disagree on {history:?}");
        if ours {
            linearizable += 1;
        } else {
            broken += 1;
        }
    }
    assert!(
        linearizable > 100 && broken > 30,
        "{linearizable} / {broken}"
    );
}

/// The register model: what a stale read, a lost write and a compare and
/// set against a moved revision look like to the checker.
#[test]
fn the_register_model_catches_what_it_must() {
    let model = Register { value: 1, rev: 10 };
    let op = |input, output, call, ret: Option<u64>| Op {
        input,
        output,
        call,
        ret,
    };
    // Write, then a read that still sees the old value: not linearizable.
    let stale = vec![
        op(Input::Write(5), Output::Written(11), 0, Some(1)),
        op(Input::Read, Output::Value(1, 10), 2, Some(3)),
    ];
    assert!(matches!(
        check(&model, &stale, Duration::from_secs(1)),
        Verdict::Violation { .. }
    ));
    // Overlapping, it may: linearizable.
    let concurrent = vec![
        op(Input::Write(5), Output::Written(11), 0, Some(4)),
        op(Input::Read, Output::Value(1, 10), 1, Some(3)),
    ];
    assert_eq!(
        check(&model, &concurrent, Duration::from_secs(1)),
        Verdict::Linearizable
    );
    // A write whose answer was lost may show up later, at a revision above.
    let lost = vec![
        op(Input::Write(5), Output::Unknown, 0, None),
        op(Input::Read, Output::Value(5, 14), 2, Some(3)),
        op(
            Input::Cas {
                if_rev: 14,
                value: 6,
            },
            Output::Written(15),
            4,
            Some(5),
        ),
        op(
            Input::Cas {
                if_rev: 14,
                value: 7,
            },
            Output::Mismatch,
            6,
            Some(7),
        ),
        op(Input::Read, Output::Value(6, 15), 8, Some(9)),
    ];
    assert_eq!(
        check(&model, &lost, Duration::from_secs(1)),
        Verdict::Linearizable
    );
    // ...but not below the revision it replaced, nor a value never written.
    let below = vec![
        op(Input::Write(5), Output::Unknown, 0, None),
        op(Input::Read, Output::Value(5, 9), 2, Some(3)),
    ];
    assert!(matches!(
        check(&model, &below, Duration::from_secs(1)),
        Verdict::Violation { .. }
    ));
    let invented = vec![op(Input::Read, Output::Value(8, 12), 0, Some(1))];
    assert!(matches!(
        check(&model, &invented, Duration::from_secs(1)),
        Verdict::Violation { .. }
    ));
    // A compare and set that succeeded against a revision already gone.
    let moved = vec![
        op(Input::Write(5), Output::Written(11), 0, Some(1)),
        op(
            Input::Cas {
                if_rev: 10,
                value: 6,
            },
            Output::Written(12),
            2,
            Some(3),
        ),
    ];
    assert!(matches!(
        check(&model, &moved, Duration::from_secs(1)),
        Verdict::Violation { .. }
    ));
}
