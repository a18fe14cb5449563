//! Error reporting shared by every layer: each layer has its own error
//! types (thiserror), with the cause as `source`, never pasted into the
//! message; logs and API answers print the whole chain with [`chain`].

/// Formats an error with its whole chain of causes on one line:
/// "failed to add service TCP 10.0.0.1:80: service already exists (EEXIST)".
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out
}
