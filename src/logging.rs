//! The process's log: tracing to stderr (the journal, under systemd), with
//! the level from RUST_LOG (default `info`, openraft's internals at `warn`),
//! and repeats of openraft's messages held back.
//!
//! openraft logs some failures once per attempt: with a member down, every
//! leadership confirmation logs an ERROR per unreachable member, thousands
//! a minute under reads. Each of openraft's messages (its call site) is
//! shown the first time and then at most once per [`REPEAT_WINDOW`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tracing::callsite::Identifier;
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// How often the same openraft message is shown at most.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(60);

/// The filter when RUST_LOG is not set.
pub const DEFAULT_FILTER: &str = "info,openraft=warn";

/// When each message was last shown.
struct Shown<K> {
    last: Mutex<HashMap<K, Instant>>,
}

impl<K: std::hash::Hash + Eq> Shown<K> {
    fn new() -> Shown<K> {
        Shown {
            last: Mutex::new(HashMap::new()),
        }
    }

    /// Whether message `key` is shown at `now` (and, if so, notes it).
    fn admit(&self, key: K, now: Instant) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match last.get(&key) {
            Some(at) if now.duration_since(*at) < REPEAT_WINDOW => false,
            _ => {
                last.insert(key, now);
                true
            }
        }
    }
}

/// Drops repeats of openraft's messages within [`REPEAT_WINDOW`].
struct Repeats(Shown<Identifier>);

impl<S: Subscriber> Layer<S> for Repeats {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        let meta = event.metadata();
        if !meta.target().starts_with("openraft") {
            return true;
        }
        self.0.admit(meta.callsite(), Instant::now())
    }
}

/// Installs the log for the binary.
pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    tracing_subscriber::registry()
        .with(filter)
        .with(Repeats(Shown::new()))
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                // Colour codes only for a terminal, not for files and the journal.
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeat_is_shown_again_only_after_the_window() {
        let shown = Shown::new();
        let t0 = Instant::now();
        assert!(shown.admit("a", t0));
        assert!(!shown.admit("a", t0 + Duration::from_secs(1)));
        assert!(!shown.admit("a", t0 + REPEAT_WINDOW - Duration::from_millis(1)));
        assert!(shown.admit("b", t0 + Duration::from_secs(1)));
        assert!(shown.admit("a", t0 + REPEAT_WINDOW));
    }
}
