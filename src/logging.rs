//! The process's log: tracing to stderr (the journal, under systemd) as
//! plain text, colours only on a terminal, or JSON lines for log shippers
//! (`LOG_FORMAT=json`); the level from `LOG_LEVEL` (default `info`, with
//! openraft's internals at `warn`) or a whole `RUST_LOG` filter; repeats
//! of openraft's messages held back; and node names instead of their
//! numeric Raft ids.
//!
//! openraft logs some failures once per attempt: with a member down, every
//! leadership confirmation logs an ERROR per unreachable member, thousands
//! a minute under reads. Each of openraft's messages (its call site) is
//! shown the first time and then at most once per [`REPEAT_WINDOW`].
//!
//! openraft knows members by their 64-bit ids (a hash of `RAFT_NODE_ID`)
//! and prints them (`T3-N14577794042753658644`); every line is written
//! with each id of a known member replaced by its name
//! ([`name_node`]), in both formats.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};
use tracing::callsite::Identifier;
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// How often the same openraft message is shown at most.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(60);

/// The environment variables the log reads (every role reads them, before
/// the command line is parsed).
pub const VARIABLES: [&str; 3] = ["LOG_FORMAT", "LOG_LEVEL", "RUST_LOG"];

/// The level when neither `LOG_LEVEL` nor `RUST_LOG` is set.
pub const DEFAULT_LEVEL: &str = "info";

/// The filter for `LOG_LEVEL=level`: openraft's internals one level
/// quieter than `warn` unless the level asks for more detail.
fn filter_for(level: &str) -> Result<EnvFilter, String> {
    let level = level.trim().to_ascii_lowercase();
    let openraft = match level.as_str() {
        "error" | "warn" | "info" => "warn",
        "debug" | "trace" => level.as_str(),
        other => {
            return Err(format!(
                "LOG_LEVEL {other:?}: expected error, warn, info, debug or trace (or set RUST_LOG \
                 to a whole filter, e.g. info,openraft=debug)"
            ))
        }
    };
    EnvFilter::try_new(format!("{level},openraft={openraft}")).map_err(|e| e.to_string())
}

/// How lines are written (`LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One line of text per event (colours only on a terminal).
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

impl Format {
    fn parse(value: &str) -> Result<Format, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "" | "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            other => Err(format!("LOG_FORMAT {other:?}: expected text or json")),
        }
    }
}

/// The names of the members whose Raft ids appear in log lines.
static NAMES: RwLock<Vec<(String, String)>> = RwLock::new(Vec::new());

/// Lets the log show `name` wherever openraft prints `id`.
pub fn name_node(id: u64, name: &str) {
    let id = id.to_string();
    let mut names = NAMES.write().unwrap_or_else(|e| e.into_inner());
    if !names.iter().any(|(known, _)| *known == id) {
        names.push((id, name.to_string()));
    }
}

/// `line` with every known member id replaced by its name. Ids are the
/// long digit runs (a 64-bit hash has 15 digits or more), so timestamps,
/// ports and indexes are left alone. In a JSON line an id that is a value
/// of its own (`"id":145…`, a number) becomes a string (`"id":"node1"`).
fn with_names(line: &str, json: bool) -> std::borrow::Cow<'_, str> {
    let names = NAMES.read().unwrap_or_else(|e| e.into_inner());
    if names.is_empty()
        || !line
            .as_bytes()
            .windows(15)
            .any(|w| w.iter().all(u8::is_ascii_digit))
    {
        return std::borrow::Cow::Borrowed(line);
    }
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(start) = rest.find(|c: char| c.is_ascii_digit()) {
        out.push_str(&rest[..start]);
        let digits = &rest[start..];
        let end = digits
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(digits.len());
        let run = &digits[..end];
        match names.iter().find(|(id, _)| id == run) {
            Some((_, name)) if json && out.ends_with(':') => {
                out.push('"');
                out.push_str(name);
                out.push('"');
            }
            Some((_, name)) => out.push_str(name),
            None => out.push_str(run),
        }
        rest = &digits[end..];
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

/// Writes each formatted event to stderr once it is whole, with member ids
/// replaced by names (`json`: the lines are JSON).
struct NamedLines {
    json: bool,
}

/// One event's line as it is formatted.
struct Line {
    text: Vec<u8>,
    json: bool,
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for NamedLines {
    type Writer = Line;
    fn make_writer(&'a self) -> Line {
        Line {
            text: Vec::with_capacity(256),
            json: self.json,
        }
    }
}

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.text);
        // Nowhere to report a failure to write the log.
        let _ = std::io::stderr().write_all(with_names(&text, self.json).as_bytes());
    }
}

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

/// Installs the log for the binary from `LOG_FORMAT`, `LOG_LEVEL` and
/// `RUST_LOG` (which, when set, is the whole filter); a bad value is an
/// error that names the variable.
pub fn init() -> Result<(), String> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let format = Format::parse(&var("LOG_FORMAT").unwrap_or_default())?;
    let filter = match (var("RUST_LOG"), var("LOG_LEVEL")) {
        (Some(filter), _) => {
            EnvFilter::try_new(&filter).map_err(|e| format!("RUST_LOG {filter:?}: {e}"))?
        }
        (None, level) => filter_for(level.as_deref().unwrap_or(DEFAULT_LEVEL))?,
    };
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(Repeats(Shown::new()));
    match format {
        Format::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(NamedLines { json: false })
                    // Colour codes only for a terminal, not for files and
                    // the journal.
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
            )
            .init(),
        Format::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false)
                    .with_writer(NamedLines { json: true }),
            )
            .init(),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_ids_become_names_and_other_numbers_stay() {
        name_node(14577794042753658644, "node1");
        let line = "2026-12-07T00:57:57.694500Z  INFO vote T1-N14577794042753658644:committed \
                    id=14577794042753658644 index=123456 port=2221 other=14577794042753658645";
        assert_eq!(
            with_names(line, false),
            "2026-12-07T00:57:57.694500Z  INFO vote T1-Nnode1:committed \
             id=node1 index=123456 port=2221 other=14577794042753658645"
        );
        assert!(matches!(
            with_names("no ids here 12", false),
            std::borrow::Cow::Borrowed(_)
        ));
        let json = r#"{"id":14577794042753658644,"vote":"T1-N14577794042753658644"}"#;
        assert_eq!(
            with_names(json, true),
            r#"{"id":"node1","vote":"T1-Nnode1"}"#
        );
    }

    #[test]
    fn settings_are_checked_by_name() {
        assert_eq!(Format::parse("JSON"), Ok(Format::Json));
        assert_eq!(Format::parse(""), Ok(Format::Text));
        assert!(Format::parse("xml")
            .unwrap_err()
            .starts_with("LOG_FORMAT \"xml\""));
        assert!(filter_for("debug").is_ok());
        assert!(filter_for("verbose")
            .unwrap_err()
            .starts_with("LOG_LEVEL \"verbose\""));
    }

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
