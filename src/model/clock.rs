//! Wall-clock time as the replicated state uses it: drain deadlines are
//! milliseconds since the Unix epoch (the accepting node's clock, replicated
//! with the drain), and reports show times as RFC 3339.

use std::time::SystemTime;

/// Now, in milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Formats a time as RFC 3339 in UTC, to the second.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A time in milliseconds since the Unix epoch as RFC 3339.
pub fn rfc3339_ms(ms: u64) -> String {
    rfc3339(SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(ms))
}
