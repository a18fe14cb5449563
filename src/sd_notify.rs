//! Tells the service manager (systemd, `Type=notify`) how the node is doing:
//! `READY=1` once it serves and has reconciled its kernel, `WATCHDOG=1`
//! while it is alive, `STOPPING=1` when it shuts down, and a `STATUS=` line
//! for `systemctl status`. Without `NOTIFY_SOCKET` (started by hand, by the
//! tests) every call is a no-op.
//!
//! The protocol is one datagram of `KEY=VALUE` lines to the unix socket
//! `NOTIFY_SOCKET` names (sd_notify(3)). These few lines rather than a crate:
//! they also reach the abstract-namespace sockets (`@name`) that container
//! managers hand out, which the small crates do not.

use std::ffi::OsStr;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Where notifications go, and the watchdog the manager asked for.
#[derive(Debug, Default)]
pub struct Notifier {
    target: Option<SocketAddr>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// From this process's environment (`NOTIFY_SOCKET`, `WATCHDOG_USEC`,
    /// `WATCHDOG_PID`). An address we cannot use is logged and ignored: the
    /// node runs either way, and the manager's start timeout reports it.
    pub fn from_env() -> Notifier {
        let socket = std::env::var_os("NOTIFY_SOCKET");
        let usec = std::env::var("WATCHDOG_USEC").ok();
        let pid = std::env::var("WATCHDOG_PID").ok();
        Notifier::new(
            socket.as_deref(),
            usec.as_deref(),
            pid.as_deref(),
            std::process::id(),
        )
    }

    /// `socket`: NOTIFY_SOCKET; `watchdog_usec` and `watchdog_pid`: the
    /// watchdog variables, which apply only when the pid is ours (or absent).
    pub fn new(
        socket: Option<&OsStr>,
        watchdog_usec: Option<&str>,
        watchdog_pid: Option<&str>,
        own_pid: u32,
    ) -> Notifier {
        let target = socket
            .filter(|s| !s.is_empty())
            .and_then(|s| match address(s) {
                Ok(addr) => Some(addr),
                Err(e) => {
                    tracing::warn!(socket = ?s, error = %e, "cannot use NOTIFY_SOCKET; not notifying the service manager");
                    None
                }
            });
        let ours = watchdog_pid.is_none_or(|p| p.trim().parse() == Ok(own_pid));
        let watchdog = watchdog_usec
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|&u| u > 0 && ours && target.is_some())
            .map(Duration::from_micros);
        Notifier { target, watchdog }
    }

    /// Whether a service manager listens.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// How often to send `WATCHDOG=1`: half the manager's timeout, as
    /// sd_watchdog_enabled(3) advises. `None` when no watchdog is set.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|w| w / 2)
    }

    /// Start-up is complete: the node serves and has reconciled.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}\n", one_line(status)));
    }

    /// The node is alive (the caller checked that it works).
    pub fn watchdog(&self) {
        self.send("WATCHDOG=1\n");
    }

    /// Shutdown has begun.
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=shutting down\n");
    }

    /// A line for `systemctl status`.
    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={}\n", one_line(status)));
    }

    fn send(&self, message: &str) {
        let Some(target) = &self.target else {
            return;
        };
        let sent = UnixDatagram::unbound().and_then(|s| s.send_to_addr(message.as_bytes(), target));
        if let Err(e) = sent {
            tracing::warn!(error = %e, message = message.trim_end(), "could not notify the service manager");
        }
    }
}

/// `/path` or `@abstract-name`.
fn address(socket: &OsStr) -> std::io::Result<SocketAddr> {
    let bytes = socket.as_bytes();
    match bytes.first() {
        Some(b'/') => SocketAddr::from_pathname(socket),
        Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..]),
        _ => Err(std::io::Error::other(
            "only a path or an @abstract name is supported",
        )),
    }
}

/// A STATUS value must not break the line protocol.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(socket: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn messages_reach_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::new(Some(path.as_os_str()), Some("10000000"), None, 42);
        assert!(n.enabled());
        assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(5)));
        n.ready("leader\nof 3");
        assert_eq!(received(&listener), "READY=1\nSTATUS=leader of 3\n");
        n.watchdog();
        assert_eq!(received(&listener), "WATCHDOG=1\n");
        n.stopping();
        assert_eq!(received(&listener), "STOPPING=1\nSTATUS=shutting down\n");
    }

    #[test]
    fn messages_reach_an_abstract_socket() {
        let name = format!("ipvs-manager-test-{}", std::process::id());
        let listener =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        let n = Notifier::new(Some(OsStr::new(&format!("@{name}"))), None, None, 1);
        n.status("joining");
        assert_eq!(received(&listener), "STATUS=joining\n");
        assert_eq!(n.watchdog_interval(), None);
    }

    #[test]
    fn watchdog_applies_only_to_its_pid_and_with_a_socket() {
        let s = Some(OsStr::new("/nonexistent/notify"));
        let w = |pid| Notifier::new(s, Some("4000000"), pid, 7).watchdog_interval();
        assert_eq!(w(Some("7")), Some(Duration::from_secs(2)));
        assert_eq!(w(Some("8")), None);
        assert_eq!(w(None), Some(Duration::from_secs(2)));
        assert_eq!(
            Notifier::new(None, Some("4000000"), None, 7).watchdog_interval(),
            None
        );
        assert_eq!(
            Notifier::new(s, Some("0"), None, 7).watchdog_interval(),
            None
        );
    }

    #[test]
    fn without_a_socket_nothing_is_sent_and_nothing_fails() {
        let n = Notifier::new(None, None, None, 1);
        assert!(!n.enabled());
        n.ready("x");
        let bad = Notifier::new(Some(OsStr::new("vsock:2:1")), None, None, 1);
        assert!(!bad.enabled());
        // A socket nobody listens on: logged, not an error.
        let gone = Notifier::new(Some(OsStr::new("/nonexistent/notify")), None, None, 1);
        gone.stopping();
    }
}
