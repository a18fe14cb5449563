//! Network namespaces as independent IPVS hosts: each has its own IPVS table,
//! so one VM holds as many "load balancers" as a test wants, and parallel
//! tests never see each other's services.

use std::ffi::OsStr;
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sched::{setns, CloneFlags};

/// A fresh network namespace (`ip netns add`) with `lo` up, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a uniquely named namespace; panics when `ip` fails.
    pub fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "ipvsm-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        checked_output(Command::new("ip").args(["netns", "add", &name]), None);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// A namespace like a load balancer's: a dummy interface `d0` holding
    /// 10.255.255.254/8 and 2001:db8:ffff::1/32, so that real servers in
    /// 10/8 and 2001:db8::/32 are routable (the kernel refuses masquerading
    /// destinations it cannot route to).
    pub fn load_balancer() -> Self {
        let ns = Netns::new();
        ns.ip(&["link", "add", "d0", "type", "dummy"]);
        ns.ip(&["addr", "add", "10.255.255.254/8", "dev", "d0"]);
        ns.ip(&[
            "-6",
            "addr",
            "add",
            "2001:db8:ffff::1/32",
            "dev",
            "d0",
            "nodad",
        ]);
        ns.ip(&["link", "set", "d0", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's bind mount, as `ip netns` keeps it.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// A command that runs `program` inside the namespace (`ip netns exec`).
    pub fn cmd(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// `program` in the namespace as nobody, with every capability dropped
    /// (for the refusals a missing CAP_NET_ADMIN must give).
    pub fn unprivileged(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = self.cmd("setpriv");
        cmd.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(program);
        cmd
    }

    /// Runs `f` on a new thread that has joined the namespace, so sockets
    /// (netlink included) opened inside `f` belong to it; so do threads and
    /// processes that `f` starts. A panic in `f` is resumed here.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = self.path();
        let ns =
            File::open(&path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
        std::thread::scope(|scope| {
            let worker = scope.spawn(move || {
                setns(&ns, CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("setns into {}: {e}", path.display()));
                drop(ns);
                f()
            });
            worker
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// `ip -n NAME ARGS...`; returns stdout, panics with stderr on failure.
    pub fn ip(&self, args: &[&str]) -> String {
        checked_output(Command::new("ip").args(["-n", &self.name]).args(args), None)
    }

    /// `ip -n NAME -batch -`: runs `commands`, one `ip` command a line
    /// without the leading `ip`, in one process (each exec costs ~50 ms in
    /// the VM); returns stdout, panics with stderr on failure.
    pub fn ip_batch(&self, commands: &str) -> String {
        checked_output(
            Command::new("ip").args(["-n", &self.name, "-batch", "-"]),
            Some(commands),
        )
    }

    /// The real ipvsadm, the tests' oracle, run in the namespace; returns
    /// stdout, panics with stderr on failure.
    pub fn ipvsadm(&self, args: &[&str]) -> String {
        self.run(|| checked_output(Command::new("ipvsadm").args(args), None))
    }

    /// Like [`Netns::ipvsadm`], feeding `stdin` (for `ipvsadm -R`).
    pub fn ipvsadm_input(&self, args: &[&str], stdin: &str) -> String {
        self.run(|| checked_output(Command::new("ipvsadm").args(args), Some(stdin)))
    }
}

impl Default for Netns {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        match Command::new("ip")
            .args(["netns", "del", &self.name])
            .output()
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "ip netns del {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim_end()
            ),
            Err(e) => eprintln!("ip netns del {}: {e}", self.name),
        }
    }
}

/// Runs `cmd` to completion; stdout on success, a panic that shows the
/// command, its status and its stderr otherwise.
fn checked_output(cmd: &mut Command, stdin: Option<&str>) -> String {
    let shown = format!("{cmd:?}");
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    let out = std::thread::scope(|scope| {
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A writer of its own: a large input must not wait on our reads.
            scope.spawn(move || {
                // A write error means the child exited early; its status says why.
                let _ = pipe.write_all(input.as_bytes());
            });
        }
        child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("waiting for {shown}: {e}"))
    });
    if !out.status.success() {
        panic!(
            "{shown} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}
