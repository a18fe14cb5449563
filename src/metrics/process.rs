//! The process's own metrics, `process_*`, as the Prometheus client
//! libraries define them on Linux (client_golang's process collector): CPU
//! time, memory, file descriptors and start time, read from `/proc/self` at
//! scrape time.

use procfs::process::{LimitValue, Process};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One reading of `/proc/self`. A figure that could not be read is `None`
/// and left out of the scrape rather than reported as 0.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: Option<f64>,
    pub resident_memory_bytes: Option<u64>,
    pub virtual_memory_bytes: Option<u64>,
    pub start_time_seconds: Option<f64>,
    pub open_fds: Option<u64>,
    /// The soft limit on open files (what the process may open).
    pub max_fds: Option<f64>,
}

impl ProcessStats {
    /// Reads this process's figures.
    pub fn read() -> ProcessStats {
        let me = match Process::myself() {
            Ok(me) => me,
            Err(e) => {
                tracing::debug!(error = %e, "process metrics: cannot open /proc/self");
                return ProcessStats::default();
            }
        };
        let ticks = procfs::ticks_per_second() as f64;
        let stat = me
            .stat()
            .inspect_err(|e| tracing::debug!(error = %e, "process metrics: /proc/self/stat"))
            .ok();
        let limits = me
            .limits()
            .inspect_err(|e| tracing::debug!(error = %e, "process metrics: /proc/self/limits"))
            .ok();
        ProcessStats {
            cpu_seconds: stat.as_ref().map(|s| (s.utime + s.stime) as f64 / ticks),
            resident_memory_bytes: stat
                .as_ref()
                .map(|s| s.rss.saturating_mul(procfs::page_size())),
            virtual_memory_bytes: stat.as_ref().map(|s| s.vsize),
            start_time_seconds: stat.as_ref().and_then(|s| {
                start_time(
                    Duration::from_secs_f64(s.starttime as f64 / ticks),
                    SystemTime::now(),
                    boot_clock(),
                )
            }),
            open_fds: me.fd_count().ok().map(|n| n as u64),
            max_fds: limits.map(|l| match l.max_open_files.soft_limit {
                LimitValue::Value(n) => n as f64,
                LimitValue::Unlimited => f64::INFINITY,
            }),
        }
    }

    /// Registers the figures that were read.
    pub fn register(&self, r: &mut Registry) {
        if let Some(v) = self.cpu_seconds {
            r.register(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                ConstCounter::new(v),
            );
        }
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                self.resident_memory_bytes.map(|v| v as f64),
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                self.virtual_memory_bytes.map(|v| v as f64),
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                self.start_time_seconds,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                self.open_fds.map(|v| v as f64),
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                self.max_fds,
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(v) = value {
                r.register(name, help, ConstGauge::new(v));
            }
        }
    }
}

/// The time since boot on the clock `/proc/self/stat`'s start time counts
/// on. The client libraries add that start time to the boot time in
/// `/proc/stat`, but a unit with `ProcSubset=pid` hides that file; the boot
/// time is now less this clock, which is how the kernel computes it too.
fn boot_clock() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// Unix time in seconds of a process started `started` after boot, when
/// `now` is `since_boot` after boot; `None` if that is before 1970 or after
/// now (clocks that make no sense).
fn start_time(started: Duration, now: SystemTime, since_boot: Duration) -> Option<f64> {
    let age = since_boot.checked_sub(started)?;
    let start = now.checked_sub(age)?;
    Some(start.duration_since(UNIX_EPOCH).ok()?.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_now_less_the_process_age() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        // Booted 1000 s ago; the process started 100 s after boot.
        let got = start_time(
            Duration::from_secs(100),
            now,
            Duration::from_millis(1_000_000),
        );
        assert_eq!(got, Some(1_700_000_000.0 - 900.0));
        // A start after "now" (clocks disagree): nothing, not a wrap.
        assert_eq!(
            start_time(Duration::from_secs(10), now, Duration::from_secs(5)),
            None
        );
    }

    /// This very process, read from /proc: every figure is there and sane.
    #[test]
    fn reads_this_process() {
        let s = ProcessStats::read();
        let unix_now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        let start = s.start_time_seconds.expect("start time");
        // Started within the last day and not in the future (1 s slack:
        // the kernel counts in clock ticks).
        assert!(
            start <= unix_now + 1.0 && start > unix_now - 86_400.0,
            "{s:?}"
        );
        assert!(s.cpu_seconds.expect("cpu") >= 0.0);
        assert!(s.resident_memory_bytes.expect("rss") > 0);
        assert!(s.virtual_memory_bytes.expect("vsize") >= s.resident_memory_bytes.unwrap_or(0));
        let open = s.open_fds.expect("open fds");
        assert!(open >= 3, "{s:?}");
        assert!(s.max_fds.expect("max fds") >= open as f64, "{s:?}");
    }
}
