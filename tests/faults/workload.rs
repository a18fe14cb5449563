//! The clients: threads that read and write registers and create services
//! through any node, recording when each operation was called, when it
//! returned and what it answered — the history the checks run on.
//!
//! An answer is definite when it says what happened: 2xx, 412 and other
//! refusals, the 503s the API gives only before anything was proposed
//! (`store_unavailable`, `overloaded`, `no_leader`, `no_quorum`,
//! `unavailable`), a refused connection. Anything else (`outcome_unknown`,
//! a timeout, a connection cut) is unknown: the write may or may not have
//! happened, and the checks allow both. So the checks also hold the API to
//! its word that those 503s wrote nothing.

use super::checker::Op;
use super::disk::Rng;
use super::register::{Input, Output};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One register: a service with one real server, whose weight is the value.
#[derive(Debug, Clone)]
pub struct RegisterId {
    pub index: u8,
}

impl RegisterId {
    pub fn service(&self) -> String {
        format!("tcp-10.99.0.{}-80", self.index)
    }
    pub fn server_path(&self) -> String {
        format!(
            "/api/v1/services/{}/servers/198.51.100.{}-80",
            self.service(),
            self.index
        )
    }
    pub fn server_body(&self, weight: u64) -> Value {
        json!({"address": format!("198.51.100.{}", self.index), "port": 80, "weight": weight})
    }
    pub fn create_body(&self) -> Value {
        json!({"protocol": "tcp", "address": format!("10.99.0.{}", self.index), "port": 80,
               "scheduler": "wrr", "servers": [self.server_body(1)]})
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Acked,
    Refused,
    Unknown,
}

/// What the clients did.
#[derive(Debug, Default)]
pub struct History {
    /// Per register: its operations.
    pub registers: Vec<Vec<Op<Input, Output>>>,
    /// Created service addresses and their outcomes.
    pub creates: BTreeMap<String, Outcome>,
    /// Writes (register writes and creates) acknowledged.
    pub acked_writes: u64,
    pub unknown: u64,
}

/// The nodes' API base URLs (`http://127.0.0.1:PORT`), shared with the
/// scenario, which may change them.
pub type Targets = Arc<Mutex<Vec<String>>>;

/// Clients running until [`Clients::stop`].
pub struct Clients {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<History>>,
    pub epoch: Instant,
}

/// Nanoseconds since `epoch`.
pub fn now(epoch: Instant) -> u64 {
    epoch.elapsed().as_nanos() as u64
}

fn etag(r: &reqwest::blocking::Response) -> Option<u64> {
    r.headers()
        .get("etag")?
        .to_str()
        .ok()?
        .trim_matches('"')
        .parse()
        .ok()
}

/// The outcome an HTTP answer says, for a write.
fn outcome(r: &Result<reqwest::blocking::Response, reqwest::Error>) -> Outcome {
    match r {
        Ok(resp) if resp.status().is_success() => Outcome::Acked,
        Ok(resp) if resp.status().is_client_error() => Outcome::Refused,
        Ok(_) => Outcome::Unknown,
        Err(e) if e.is_connect() => Outcome::Refused,
        Err(_) => Outcome::Unknown,
    }
}

/// A 503 that says nothing was done.
fn refused_before_proposing(body: &str) -> bool {
    [
        "\"store_unavailable\"",
        "\"overloaded\"",
        "\"no_leader\"",
        "\"no_quorum\"",
        "\"unavailable\"",
    ]
    .iter()
    .any(|code| body.contains(code))
}

impl Clients {
    /// Starts `n` clients on `registers`, each with its own seeded random
    /// source; `initial` are the registers' revisions after setup.
    pub fn start(
        n: usize,
        targets: Targets,
        registers: Vec<RegisterId>,
        initial: Vec<u64>,
        seed: u64,
    ) -> Clients {
        let stop = Arc::new(AtomicBool::new(false));
        let epoch = Instant::now();
        let values: Arc<Vec<AtomicU64>> =
            Arc::new(registers.iter().map(|_| AtomicU64::new(2)).collect());
        let creates = Arc::new(AtomicU64::new(0));
        let threads = (0..n)
            .map(|client| {
                let (stop, targets, registers, initial, values, creates) = (
                    stop.clone(),
                    targets.clone(),
                    registers.clone(),
                    initial.clone(),
                    values.clone(),
                    creates.clone(),
                );
                std::thread::spawn(move || {
                    let mut rng = Rng::new(seed ^ (client as u64 + 1).wrapping_mul(0x9e37_79b9));
                    let http = reqwest::blocking::Client::builder()
                        .timeout(Duration::from_secs(5))
                        .connect_timeout(Duration::from_secs(1))
                        .build()
                        .expect("client");
                    let mut history = History {
                        registers: vec![Vec::new(); registers.len()],
                        ..Default::default()
                    };
                    let mut seen: Vec<u64> = initial.clone();
                    while !stop.load(Ordering::Relaxed) {
                        let node = {
                            let t = targets.lock().expect("targets");
                            t[rng.below(t.len() as u64) as usize].clone()
                        };
                        let pick = rng.below(100);
                        if pick < 15 {
                            let k = creates.fetch_add(1, Ordering::Relaxed) + 1;
                            let addr =
                                format!("10.{}.{}.{}", 100 + k / 65536, k / 256 % 256, k % 256);
                            let body = json!({"protocol": "udp", "address": addr, "port": 53});
                            let r = http
                                .post(format!("{node}/api/v1/services"))
                                .json(&body)
                                .send();
                            let mut o = outcome(&r);
                            if o == Outcome::Unknown {
                                if let Ok(resp) = r {
                                    if refused_before_proposing(&resp.text().unwrap_or_default()) {
                                        o = Outcome::Refused;
                                    }
                                }
                            }
                            match o {
                                Outcome::Acked => history.acked_writes += 1,
                                Outcome::Unknown => history.unknown += 1,
                                Outcome::Refused => {}
                            }
                            history.creates.insert(addr, o);
                            continue;
                        }
                        let ri = rng.below(registers.len() as u64) as usize;
                        let reg = &registers[ri];
                        let url = format!("{node}{}", reg.server_path());
                        let call = now(epoch);
                        let (input, sent) = if pick < 55 {
                            let r = http.get(format!("{url}?consistent=true")).send();
                            (Input::Read, r)
                        } else {
                            let value = values[ri].fetch_add(1, Ordering::Relaxed);
                            let mut req = http.put(&url).json(&reg.server_body(value));
                            let input = if pick < 80 {
                                Input::Write(value)
                            } else {
                                req = req.header("If-Match", format!("\"{}\"", seen[ri]));
                                Input::Cas {
                                    if_rev: seen[ri],
                                    value,
                                }
                            };
                            (input, req.send())
                        };
                        let ret = now(epoch);
                        let is_read = matches!(input, Input::Read);
                        let output = match sent {
                            Ok(resp) if resp.status().as_u16() == 200 => {
                                let rev = etag(&resp);
                                let weight =
                                    resp.json::<Value>().ok().and_then(|v| v["weight"].as_u64());
                                match (is_read, rev, weight) {
                                    (true, Some(r), Some(w)) => Output::Value(w, r),
                                    (false, Some(r), _) => Output::Written(r),
                                    _ => Output::Unknown,
                                }
                            }
                            Ok(resp) if resp.status().as_u16() == 412 => Output::Mismatch,
                            Ok(resp) if resp.status().is_client_error() => {
                                panic!(
                                    "register {} refused {input:?}: {} {}",
                                    reg.index,
                                    resp.status(),
                                    resp.text().unwrap_or_default()
                                )
                            }
                            Ok(resp) => {
                                let body = resp.text().unwrap_or_default();
                                if refused_before_proposing(&body) {
                                    continue; // nothing happened
                                }
                                Output::Unknown
                            }
                            Err(e) if e.is_connect() => continue, // never sent
                            Err(_) => Output::Unknown,
                        };
                        if is_read && output == Output::Unknown {
                            continue; // a read that did not answer changed nothing
                        }
                        match &output {
                            Output::Value(_, r) | Output::Written(r) => seen[ri] = *r,
                            Output::Unknown => history.unknown += 1,
                            Output::Mismatch => {}
                        }
                        if matches!(output, Output::Written(_)) {
                            history.acked_writes += 1;
                        }
                        let ret = (output != Output::Unknown).then_some(ret);
                        history.registers[ri].push(Op {
                            input,
                            output,
                            call,
                            ret,
                        });
                    }
                    history
                })
            })
            .collect();
        Clients {
            stop,
            threads,
            epoch,
        }
    }

    /// Stops the clients and merges what they did.
    pub fn stop(self) -> History {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = History::default();
        for t in self.threads {
            let h = t.join().expect("a client thread");
            if all.registers.is_empty() {
                all.registers = vec![Vec::new(); h.registers.len()];
            }
            for (i, ops) in h.registers.into_iter().enumerate() {
                all.registers[i].extend(ops);
            }
            all.creates.extend(h.creates);
            all.acked_writes += h.acked_writes;
            all.unknown += h.unknown;
        }
        all
    }
}
