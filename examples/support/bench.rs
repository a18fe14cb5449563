//! Shared by the benchmarks that run in the real-kernel VM: their common
//! arguments, the rule set they load, and fresh network namespaces to load
//! it into.
#![allow(dead_code)] // each benchmark uses its own subset

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The arguments these benchmarks share: the binary and the table sizes.
#[derive(clap::Args)]
pub struct Tables {
    /// The ipvs-manager binary.
    #[arg(long, default_value = "target/release/ipvs-manager")]
    pub binary: String,
    /// The table sizes, in services, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1000, 5000])]
    pub sizes: Vec<usize>,
}

/// `n` TCP services, each with 10 masquerading destinations, in
/// `ipvsadm -R` syntax.
pub fn rules(n: usize) -> String {
    let mut out = String::new();
    for i in 0..n {
        let vip = format!("10.1.{}.{}:80", i / 250, i % 250 + 1);
        out.push_str(&format!("-A -t {vip} -s wlc\n"));
        for k in 0..10 {
            let idx = i * 10 + k;
            out.push_str(&format!(
                "-a -t {vip} -r 10.{}.{}.{}:8080 -m -w {}\n",
                2 + idx / 65536,
                idx / 256 % 256,
                idx % 256,
                k + 1
            ));
        }
    }
    out
}

/// Runs a shell command; panics when it fails.
pub fn sh(script: &str) {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(script)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "failed: {script}");
}

pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A fresh namespace where masquerading destinations in 10/8 are routable
/// (the kernel keeps deleted destinations in a trash list that slows later
/// adds, so a flushed namespace is never reused); deleted on drop.
pub struct Netns(pub String);

impl Netns {
    pub fn new(name: &str) -> Netns {
        let _ = Command::new("ip")
            .args(["netns", "del", name])
            .stderr(Stdio::null())
            .status();
        sh(&format!(
            "ip netns add {name} && ip -n {name} link set lo up && \
             ip -n {name} link add d0 type dummy && \
             ip -n {name} addr add 10.255.255.254/8 dev d0 && ip -n {name} link set d0 up"
        ));
        Netns(name.to_string())
    }

    /// Runs `f` on a thread inside the namespace.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.0);
        std::thread::scope(|s| {
            s.spawn(|| {
                let file = std::fs::File::open(&path).expect("open netns");
                nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
                f()
            })
            .join()
            .expect("thread")
        })
    }

    /// Runs a command in the namespace with `input` on stdin; returns the
    /// wall time and stdout.
    pub fn time(&self, cmd: &[&str], input: &str) -> (Duration, Vec<u8>) {
        let start = Instant::now();
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(cmd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(input.as_bytes()).expect("write stdin");
        drop(stdin);
        let out = child.wait_with_output().expect("wait");
        let elapsed = start.elapsed();
        assert!(out.status.success(), "{cmd:?} failed");
        (elapsed, out.stdout)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}
