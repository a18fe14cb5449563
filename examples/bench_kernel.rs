//! Benchmark of the kernel layer against ipvsadm, run inside the real-kernel
//! rig (see README): restore N services × 10 destinations into an empty
//! table with `ipvs-manager kernel restore` and with `ipvsadm -R`, each into a
//! fresh network namespace (the kernel keeps deleted destinations in a trash
//! list that slows later adds, so a flushed namespace is never reused), then
//! dump the table with `ipvs-manager kernel save` and `ipvsadm -Sn`.
//!
//! Usage: bench_kernel [--binary PATH] [--sizes 1000,5000] [--dumps 3]

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Args {
    binary: String,
    sizes: Vec<usize>,
    dumps: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        binary: "target/release/ipvs-manager".into(),
        sizes: vec![1000, 5000],
        dumps: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--binary" => args.binary = value()?,
            "--sizes" => {
                args.sizes = value()?
                    .split(',')
                    .map(|s| s.parse().map_err(|_| format!("bad size {s:?}")))
                    .collect::<Result<_, _>>()?
            }
            "--dumps" => args.dumps = value()?.parse().map_err(|_| "bad --dumps")?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

/// `n` TCP services, each with 10 masquerading destinations.
fn rules(n: usize) -> String {
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

/// A fresh namespace where masquerading destinations in 10/8 are routable.
struct Netns(String);

impl Netns {
    fn new(name: &str) -> Netns {
        let _ = Command::new("ip")
            .args(["netns", "del", name])
            .stderr(Stdio::null())
            .status();
        let sh = |args: &str| {
            let ok = Command::new("sh")
                .arg("-c")
                .arg(args)
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(ok, "setup failed: {args}");
        };
        sh(&format!("ip netns add {name}"));
        sh(&format!(
            "ip -n {name} link set lo up && ip -n {name} link add d0 type dummy && \
             ip -n {name} addr add 10.255.255.254/8 dev d0 && ip -n {name} link set d0 up"
        ));
        Netns(name.to_string())
    }

    /// Runs a command in the namespace with `input` on stdin; returns the
    /// wall time and stdout.
    fn time(&self, cmd: &[&str], input: &str) -> (Duration, Vec<u8>) {
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

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench_kernel: {e}");
            std::process::exit(2);
        }
    };
    println!("| services × 10 dests | ipvsadm -R | kernel restore | ratio | ipvsadm -Sn | kernel save | ratio |");
    println!("|---|---|---|---|---|---|---|");
    for &n in &args.sizes {
        let input = rules(n);
        let theirs = Netns::new("bench-ipvsadm");
        let (t_ipvsadm, _) = theirs.time(&["ipvsadm", "-R"], &input);
        drop(theirs);
        let ours = Netns::new("bench-ours");
        let (t_ours, _) = ours.time(&[&args.binary, "kernel", "restore"], &input);
        // Both dumps read the same table, the one our restore built.
        let (_, saved) = ours.time(&["ipvsadm", "-Sn"], "");
        let lines = saved.iter().filter(|&&b| b == b'\n').count();
        assert_eq!(lines, n * 11, "restore built the whole table");
        let dump_ipvsadm = median(
            (0..args.dumps)
                .map(|_| ours.time(&["ipvsadm", "-Sn"], "").0)
                .collect(),
        );
        let dump_ours = median(
            (0..args.dumps)
                .map(|_| ours.time(&[&args.binary, "kernel", "save"], "").0)
                .collect(),
        );
        println!(
            "| {n} | {:.2} s | {:.2} s | {:.2} | {:.2} s | {:.2} s | {:.2} |",
            t_ipvsadm.as_secs_f64(),
            t_ours.as_secs_f64(),
            t_ours.as_secs_f64() / t_ipvsadm.as_secs_f64(),
            dump_ipvsadm.as_secs_f64(),
            dump_ours.as_secs_f64(),
            dump_ours.as_secs_f64() / dump_ipvsadm.as_secs_f64(),
        );
    }
}
