//! The parts of a request and response that are not bodies, as pure
//! functions: `ETag` and `If-Match` (a service's revision), the boolean
//! query flags (`?dry_run`, `?consistent`), `?grace` seconds and `Location`
//! paths.

use super::error::{ApiError, ErrorCode};
use super::ids;
use crate::model::{DestKey, ServiceKey};

/// The `ETag` of a service (and of its servers) at `revision`: a strong
/// validator, quoted as HTTP wants.
pub fn etag(revision: u64) -> String {
    format!("\"{revision}\"")
}

/// The revision an `If-Match` header requires: `None` without a header or
/// with `*` (any current version; a missing resource is a 404 anyway).
/// Accepts `"42"` as sent in `ETag`, and a bare `42` for hand-typed
/// requests. A weak validator never matches under If-Match's strong
/// comparison (RFC 9110), so `W/"42"` is a 412; a list of several tags
/// is not supported (a write checks one revision) and is a 400.
pub fn parse_if_match(header: Option<&str>) -> Result<Option<u64>, ApiError> {
    let Some(raw) = header else {
        return Ok(None);
    };
    let value = raw.trim();
    if value == "*" {
        return Ok(None);
    }
    if value.starts_with("W/") {
        return Err(ApiError::at(
            ErrorCode::RevisionMismatch,
            "If-Match",
            format!("a weak ETag ({value}) never matches If-Match; send the ETag as received"),
        ));
    }
    let bad = || {
        ApiError::at(
            ErrorCode::InvalidHeader,
            "If-Match",
            format!("If-Match must be one ETag as sent in the ETag header, such as \"42\", got {value:?}"),
        )
    };
    if value.contains(',') {
        return Err(bad());
    }
    let digits = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    digits.parse().map(Some).map_err(|_| bad())
}

/// A boolean query parameter (`?dry_run=true`): absent is false; `true`,
/// `false`, `1`, `0` and an empty value (`?dry_run`, meaning true) are
/// accepted, anything else is a 400 naming the parameter.
pub fn query_flag(name: &str, value: Option<&str>) -> Result<bool, ApiError> {
    match value {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") | Some("") => Ok(true),
        Some(other) => Err(ApiError::at(
            ErrorCode::InvalidQuery,
            format!("?{name}"),
            format!("{name} must be true or false, got {other:?}"),
        )),
    }
}

/// A whole number of seconds from `0` to `max` in a query parameter
/// (`?grace=30`); absent is `None`; anything else is a 400 naming it.
pub fn query_seconds(name: &str, value: Option<&str>, max: u32) -> Result<Option<u32>, ApiError> {
    let Some(raw) = value else {
        return Ok(None);
    };
    let raw_trimmed = raw.strip_suffix('s').unwrap_or(raw);
    match raw_trimmed.parse::<u32>() {
        Ok(n) if n <= max && !raw_trimmed.starts_with('+') => Ok(Some(n)),
        _ => Err(ApiError::at(
            ErrorCode::InvalidQuery,
            format!("?{name}"),
            format!("{name} must be whole seconds from 0 to {max}, got {raw:?}"),
        )),
    }
}

/// The path of a service, for `Location`.
pub fn service_location(key: &ServiceKey) -> String {
    format!("/api/v1/services/{}", ids::service_id(key))
}

/// The path of a real server, for `Location`.
pub fn server_location(service: &ServiceKey, server: &DestKey) -> String {
    format!(
        "/api/v1/services/{}/servers/{}",
        ids::service_id(service),
        ids::server_id(server)
    )
}
