//! The rise/fall state machine of one probed server, and the weight a
//! recovering server ramps up with (slow start). Pure: time is passed in.

/// What one probe found.
pub type Outcome = Result<std::time::Duration, super::probe::Failure>;

/// A server as one node's probes see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracker {
    pub up: bool,
    /// Results in a row that disagree with `up` (successes while down,
    /// failures while up).
    streak: u32,
    /// Unix milliseconds of the last change of state; `None` until the
    /// first one (a server starts up: a node that restarts must not pull
    /// healthy servers before it has probed them).
    pub since_ms: Option<u64>,
    pub checks: u64,
    /// Duration of the last successful probe.
    pub latency_us: Option<u64>,
    /// Why the last probe failed, while probes fail.
    pub error: Option<String>,
}

impl Default for Tracker {
    fn default() -> Tracker {
        Tracker {
            up: true,
            streak: 0,
            since_ms: None,
            checks: 0,
            latency_us: None,
            error: None,
        }
    }
}

impl Tracker {
    /// Records one probe's outcome: `rise` successes in a row bring a down
    /// server up, `fall` failures in a row take an up server down. Returns
    /// whether the state changed.
    pub fn record(&mut self, outcome: &Outcome, rise: u32, fall: u32, now_ms: u64) -> bool {
        self.checks += 1;
        let ok = match outcome {
            Ok(latency) => {
                self.latency_us = Some(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
                self.error = None;
                true
            }
            Err(failure) => {
                self.error = Some(failure.to_string());
                false
            }
        };
        if ok == self.up {
            self.streak = 0;
            return false;
        }
        self.streak += 1;
        let needed = if self.up { fall } else { rise };
        if self.streak < needed.max(1) {
            return false;
        }
        self.up = ok;
        self.streak = 0;
        self.since_ms = Some(now_ms);
        true
    }
}

/// The weight of a server that came back up at `up_since_ms`, ramping from
/// 1 to `configured` over `slow_start_ms` (IPVS schedulers send a new server
/// its whole share at once; a cold cache or JIT would take it badly).
pub fn ramped_weight(configured: u32, up_since_ms: u64, slow_start_ms: u32, now_ms: u64) -> u32 {
    let elapsed = now_ms.saturating_sub(up_since_ms);
    if configured == 0 || slow_start_ms == 0 || elapsed >= u64::from(slow_start_ms) {
        return configured;
    }
    let share = u64::from(configured) * elapsed / u64::from(slow_start_ms);
    u32::try_from(share)
        .unwrap_or(configured)
        .clamp(1, configured)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::probe::{Failure, Reason};
    use std::time::Duration;

    fn ok() -> Outcome {
        Ok(Duration::from_micros(250))
    }

    fn fail() -> Outcome {
        Err(Failure::new(Reason::Refused, "connection refused"))
    }

    #[test]
    fn falls_after_fall_failures_rises_after_rise_successes() {
        let mut t = Tracker::default();
        assert!(t.up);
        // Two failures, a success: the streak starts over.
        assert!(!t.record(&fail(), 2, 3, 1));
        assert!(!t.record(&fail(), 2, 3, 2));
        assert!(!t.record(&ok(), 2, 3, 3));
        assert!(!t.record(&fail(), 2, 3, 4));
        assert!(!t.record(&fail(), 2, 3, 5));
        assert!(t.record(&fail(), 2, 3, 6));
        assert!(!t.up);
        assert_eq!(t.since_ms, Some(6));
        assert_eq!(t.error.as_deref(), Some("refused: connection refused"));
        // More failures change nothing; rise successes bring it back.
        assert!(!t.record(&fail(), 2, 3, 7));
        assert!(!t.record(&ok(), 2, 3, 8));
        assert!(!t.record(&fail(), 2, 3, 9));
        assert!(!t.record(&ok(), 2, 3, 10));
        assert!(t.record(&ok(), 2, 3, 11));
        assert!(t.up);
        assert_eq!(t.since_ms, Some(11));
        assert_eq!(
            (t.checks, t.latency_us, t.error.as_deref()),
            (11, Some(250), None)
        );
    }

    #[test]
    fn rise_and_fall_of_one_act_at_once() {
        let mut t = Tracker::default();
        assert!(t.record(&fail(), 1, 1, 1));
        assert!(t.record(&ok(), 1, 1, 2));
    }

    #[test]
    fn slow_start_ramps_from_one_to_the_weight() {
        assert_eq!(ramped_weight(100, 1_000, 10_000, 1_000), 1);
        assert_eq!(ramped_weight(100, 1_000, 10_000, 6_000), 50);
        assert_eq!(ramped_weight(100, 1_000, 10_000, 10_999), 99);
        assert_eq!(ramped_weight(100, 1_000, 10_000, 11_000), 100);
        assert_eq!(ramped_weight(3, 0, 10_000, 1), 1);
        // No slow start, or a weight of 0 (drained): as configured.
        assert_eq!(ramped_weight(100, 1_000, 0, 1_000), 100);
        assert_eq!(ramped_weight(0, 1_000, 10_000, 2_000), 0);
    }

    /// The state machine under a paused tokio clock: probes every interval,
    /// a server that stops answering is down after `fall` intervals.
    #[tokio::test(start_paused = true)]
    async fn with_time_paused_down_within_interval_times_fall() {
        let start = tokio::time::Instant::now();
        let interval = Duration::from_secs(2);
        let mut t = Tracker::default();
        let mut ticker = tokio::time::interval(interval);
        let mut down_at = None;
        for _ in 0..10 {
            ticker.tick().await;
            let now = start.elapsed().as_millis() as u64;
            if t.record(&fail(), 2, 3, now) {
                down_at = Some(start.elapsed());
                break;
            }
        }
        // Ticks at 0, 2 and 4 s: the third failure.
        assert_eq!(down_at, Some(interval * 2));
    }
}
