//! API errors: a machine code, the JSON path of the offending field and a
//! human message, the HTTP status each code maps to, and the JSON body
//! `{"error": {"code", "message", "field"?, "details"?}}` they are sent as.
//!
//! The status is a function of the code, so a handler cannot pair a code
//! with the wrong status, and the OpenAPI document lists exactly
//! [`ErrorCode::ALL`].

use crate::model::{CommandResult, DestKey, ServiceKey};
use serde::{Deserialize, Serialize};
use std::fmt;

use super::ids;

/// Largest request body accepted by every route but `PUT /api/v1/config`.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Largest `PUT /api/v1/config` body: a whole configuration (a restore of
/// 5,000 services with 10 servers each is about 5 MiB of JSON).
pub const MAX_CONFIG_BODY_BYTES: usize = 16 * 1024 * 1024;

/// At most this many problems are listed in `details`; the message says how
/// many more there were. A 16 MiB body can hold millions of mistakes, and
/// the first hundred are enough to fix the tool that produced them.
pub const MAX_DETAILS: usize = 100;

/// What went wrong, as a stable machine-readable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    // --- the body as JSON (400) ---
    /// Not JSON, trailing characters, empty body; the message has line and
    /// column.
    MalformedJson,
    /// The same key twice in one object (JSON allows it, but which one
    /// would win is a guess).
    DuplicateKey,
    /// A field this object does not have.
    UnknownField,
    /// A required field is absent (or null).
    MissingField,
    /// A value of the wrong JSON type (a string where a number belongs).
    InvalidType,
    /// A value outside its enumeration (protocol, family, forward, ...).
    InvalidValue,
    // --- the values (400) ---
    InvalidAddress,
    /// An address, netmask or server of the other address family.
    WrongFamily,
    InvalidPort,
    InvalidFwmark,
    /// Fields that exclude each other (`fwmark` with `address`).
    ConflictingFields,
    UnknownScheduler,
    UnknownFlag,
    /// A flag the scheduler or protocol does not take.
    FlagNotAllowed,
    InvalidTimeout,
    InvalidNetmask,
    UnknownPe,
    /// `pe` on a service without persistence.
    PeWithoutPersistence,
    InvalidWeight,
    /// A threshold out of range or the lower one above the upper one.
    InvalidThreshold,
    /// `tunnel` options on a server whose `forward` is not `tunnel`.
    TunnelNotAllowed,
    /// A GUE tunnel without its UDP port.
    TunnelPortRequired,
    /// A tunnel option the tunnel type does not take.
    TunnelOptionNotAllowed,
    /// The body names another resource than the URL (identity fields or
    /// `id` differ); identities are immutable.
    IdentityMismatch,
    /// A response-only field changed in a request (`servers` on a service
    /// PUT or PATCH).
    ReadOnly,
    /// The same service or server twice in one body.
    Duplicate,
    /// A malformed request header (`If-Match`).
    InvalidHeader,
    /// A malformed query parameter (`?dry_run=maybe`).
    InvalidQuery,
    // --- the request against the state (404, 405, 409, 412, 413, 415) ---
    NotFound,
    MethodNotAllowed,
    /// The service or server exists already.
    AlreadyExists,
    /// `If-Match` names a revision the resource no longer has.
    RevisionMismatch,
    /// A watch's `since` is older than the history this node keeps (410):
    /// list again, and watch from the listing's revision.
    /// `oldest_revision` is the oldest a watch can resume from.
    RevisionCompacted,
    BodyTooLarge,
    UnsupportedMediaType,
    /// The `Idempotency-Key` was used before with another request (422).
    IdempotencyKeyReused,
    // --- the node (500, 503) ---
    /// No leader is known (election under way, or no quorum).
    NoLeader,
    /// The leader could not be reached or the write did not complete in
    /// time; retrying is safe.
    Unavailable,
    /// A failure of this node (its storage), never of the request.
    Internal,
    /// The write may or may not have been committed (a quorum out of reach
    /// while it waited, the leader's answer lost): never "failed". Retried
    /// with the same `Idempotency-Key`, it answers the first outcome.
    OutcomeUnknown,
    /// The write was committed, but this node has not applied it in time
    /// (it is behind the leader): it will take effect; nothing is wrong
    /// with the request.
    NotApplied,
    /// This node knows it cannot reach a quorum (no contact for longer than
    /// an election takes): the write was not sent. Nothing was written.
    NoQuorum,
    /// `?wait=applied`: the write committed, but not every node (or not a
    /// quorum) programmed it into its kernel in time.
    NotProgrammed,
    // --- who asks (401, 403) ---
    /// No token, an unknown one, or a malformed `Authorization` header
    /// (sent with `WWW-Authenticate: Bearer`).
    Unauthorized,
    /// A read token on an operation that changes something.
    Forbidden,
    /// The node is answering as many requests as it takes
    /// (`API_MAX_REQUESTS`); retry after Retry-After.
    Overloaded,
    /// `/readyz`: the node cannot serve correctly; `details` names each
    /// reason (`field`: the check, e.g. `disk`).
    NotReady,
    /// This node cannot persist (its disk takes no writes) or its store is
    /// damaged: it takes no writes and serves no reads it cannot vouch
    /// for. Nothing was written; ask another node.
    StoreUnavailable,
}

impl ErrorCode {
    /// Every code, in declaration order (the OpenAPI document lists these).
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::MalformedJson,
        ErrorCode::DuplicateKey,
        ErrorCode::UnknownField,
        ErrorCode::MissingField,
        ErrorCode::InvalidType,
        ErrorCode::InvalidValue,
        ErrorCode::InvalidAddress,
        ErrorCode::WrongFamily,
        ErrorCode::InvalidPort,
        ErrorCode::InvalidFwmark,
        ErrorCode::ConflictingFields,
        ErrorCode::UnknownScheduler,
        ErrorCode::UnknownFlag,
        ErrorCode::FlagNotAllowed,
        ErrorCode::InvalidTimeout,
        ErrorCode::InvalidNetmask,
        ErrorCode::UnknownPe,
        ErrorCode::PeWithoutPersistence,
        ErrorCode::InvalidWeight,
        ErrorCode::InvalidThreshold,
        ErrorCode::TunnelNotAllowed,
        ErrorCode::TunnelPortRequired,
        ErrorCode::TunnelOptionNotAllowed,
        ErrorCode::IdentityMismatch,
        ErrorCode::ReadOnly,
        ErrorCode::Duplicate,
        ErrorCode::InvalidHeader,
        ErrorCode::InvalidQuery,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::AlreadyExists,
        ErrorCode::RevisionMismatch,
        ErrorCode::RevisionCompacted,
        ErrorCode::BodyTooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::IdempotencyKeyReused,
        ErrorCode::NoLeader,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
        ErrorCode::OutcomeUnknown,
        ErrorCode::NotApplied,
        ErrorCode::NoQuorum,
        ErrorCode::NotProgrammed,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::Overloaded,
        ErrorCode::NotReady,
        ErrorCode::StoreUnavailable,
    ];

    /// The HTTP status a response with this code carries.
    pub fn status(self) -> u16 {
        use ErrorCode::*;
        match self {
            Unauthorized => 401,
            Forbidden => 403,
            NotFound => 404,
            MethodNotAllowed => 405,
            AlreadyExists => 409,
            RevisionMismatch => 412,
            RevisionCompacted => 410,
            BodyTooLarge => 413,
            UnsupportedMediaType => 415,
            IdempotencyKeyReused => 422,
            Internal => 500,
            NoLeader | Unavailable | Overloaded | NotReady | StoreUnavailable | OutcomeUnknown
            | NotApplied | NoQuorum => 503,
            NotProgrammed => 504,
            MalformedJson
            | DuplicateKey
            | UnknownField
            | MissingField
            | InvalidType
            | InvalidValue
            | InvalidAddress
            | WrongFamily
            | InvalidPort
            | InvalidFwmark
            | ConflictingFields
            | UnknownScheduler
            | UnknownFlag
            | FlagNotAllowed
            | InvalidTimeout
            | InvalidNetmask
            | UnknownPe
            | PeWithoutPersistence
            | InvalidWeight
            | InvalidThreshold
            | TunnelNotAllowed
            | TunnelPortRequired
            | TunnelOptionNotAllowed
            | IdentityMismatch
            | ReadOnly
            | Duplicate
            | InvalidHeader
            | InvalidQuery => 400,
        }
    }

    /// The code as it appears in JSON (`"invalid_port"`).
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            MalformedJson => "malformed_json",
            DuplicateKey => "duplicate_key",
            UnknownField => "unknown_field",
            MissingField => "missing_field",
            InvalidType => "invalid_type",
            InvalidValue => "invalid_value",
            InvalidAddress => "invalid_address",
            WrongFamily => "wrong_family",
            InvalidPort => "invalid_port",
            InvalidFwmark => "invalid_fwmark",
            ConflictingFields => "conflicting_fields",
            UnknownScheduler => "unknown_scheduler",
            UnknownFlag => "unknown_flag",
            FlagNotAllowed => "flag_not_allowed",
            InvalidTimeout => "invalid_timeout",
            InvalidNetmask => "invalid_netmask",
            UnknownPe => "unknown_pe",
            PeWithoutPersistence => "pe_without_persistence",
            InvalidWeight => "invalid_weight",
            InvalidThreshold => "invalid_threshold",
            TunnelNotAllowed => "tunnel_not_allowed",
            TunnelPortRequired => "tunnel_port_required",
            TunnelOptionNotAllowed => "tunnel_option_not_allowed",
            IdentityMismatch => "identity_mismatch",
            ReadOnly => "read_only",
            Duplicate => "duplicate",
            InvalidHeader => "invalid_header",
            InvalidQuery => "invalid_query",
            Unauthorized => "unauthorized",
            Forbidden => "forbidden",
            Overloaded => "overloaded",
            NotFound => "not_found",
            MethodNotAllowed => "method_not_allowed",
            AlreadyExists => "already_exists",
            RevisionMismatch => "revision_mismatch",
            RevisionCompacted => "revision_compacted",
            BodyTooLarge => "body_too_large",
            UnsupportedMediaType => "unsupported_media_type",
            IdempotencyKeyReused => "idempotency_key_reused",
            OutcomeUnknown => "outcome_unknown",
            NotApplied => "not_applied",
            NoQuorum => "no_quorum",
            NoLeader => "no_leader",
            Unavailable => "unavailable",
            Internal => "internal",
            NotProgrammed => "not_programmed",
            NotReady => "not_ready",
            StoreUnavailable => "store_unavailable",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem: its code, the JSON path of the field it is about
/// (`servers[2].weight`; absent when it is about the whole request) and a
/// message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl FieldError {
    pub fn new(code: ErrorCode, field: Option<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            code,
            message: message.into(),
            field,
        }
    }
}

/// A refused request: the first problem (which decides the status) and,
/// for validation failures, every problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    first: FieldError,
    /// Every problem, the first included; empty when there is only one
    /// that is not about input validation.
    details: Vec<FieldError>,
    /// Problems found but not listed (beyond [`MAX_DETAILS`]).
    omitted: usize,
    retry_after: Option<u32>,
    /// `revision_compacted`: the oldest revision still available.
    oldest_revision: Option<u64>,
}

/// The JSON body of an error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorObject,
}

/// `error` in [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorObject {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Every problem found in the request (validation errors only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<FieldError>,
    /// `revision_compacted`: the oldest revision a watch can resume from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_revision: Option<u64>,
}

impl ApiError {
    /// An error about the request as a whole.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            first: FieldError::new(code, None, message),
            details: Vec::new(),
            omitted: 0,
            retry_after: None,
            oldest_revision: None,
        }
    }

    /// An error about one field.
    pub fn at(code: ErrorCode, field: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError {
            first: FieldError::new(code, Some(field.into()), message),
            details: Vec::new(),
            omitted: 0,
            retry_after: None,
            oldest_revision: None,
        }
    }

    /// The problems found validating a request; `None` when there are none.
    pub fn from_problems(mut problems: Vec<FieldError>) -> Option<ApiError> {
        let first = problems.first()?.clone();
        let omitted = problems.len().saturating_sub(MAX_DETAILS);
        problems.truncate(MAX_DETAILS);
        Some(ApiError {
            first,
            details: problems,
            omitted,
            retry_after: None,
            oldest_revision: None,
        })
    }

    /// 404 for a service that does not exist.
    pub fn no_such_service(key: &ServiceKey) -> ApiError {
        ApiError::new(
            ErrorCode::NotFound,
            format!("no service {} ({key})", ids::service_id(key)),
        )
    }

    /// 404 for a real server that does not exist.
    pub fn no_such_server(service: &ServiceKey, server: &DestKey) -> ApiError {
        ApiError::new(
            ErrorCode::NotFound,
            format!(
                "service {} has no server {} ({server})",
                ids::service_id(service),
                ids::server_id(server)
            ),
        )
    }

    /// 404 for a path that matches no route.
    pub fn no_route(path: &str) -> ApiError {
        ApiError::new(
            ErrorCode::NotFound,
            format!("no such resource: {path} (see /api/v1/openapi.json)"),
        )
    }

    /// 405, naming the methods the path does take (the HTTP layer also
    /// sends them as `Allow`).
    pub fn method_not_allowed(method: &str, allowed: &[&str]) -> ApiError {
        ApiError::new(
            ErrorCode::MethodNotAllowed,
            format!(
                "{method} is not allowed here; allowed: {}",
                allowed.join(", ")
            ),
        )
    }

    /// 413 for a body longer than `limit` bytes.
    pub fn body_too_large(limit: usize) -> ApiError {
        ApiError::new(
            ErrorCode::BodyTooLarge,
            format!("request body is larger than the limit of {limit} bytes"),
        )
    }

    /// 415 for a body that is not `application/json`.
    pub fn unsupported_media_type(got: &str) -> ApiError {
        ApiError::new(
            ErrorCode::UnsupportedMediaType,
            format!("request bodies are application/json, not {got:?}"),
        )
    }

    /// 503 when the node already answers as many requests as it takes: the
    /// request was not looked at, so retrying is always safe.
    pub fn overloaded(what: &str, retry_after_secs: u32) -> ApiError {
        ApiError {
            retry_after: Some(retry_after_secs),
            ..ApiError::new(
                ErrorCode::Overloaded,
                format!(
                    "this node is answering as many {what} as it takes; retry in \
                     {retry_after_secs} s (or ask another node)"
                ),
            )
        }
    }

    /// 503 while no leader is known; the client should retry after
    /// `retry_after_secs` (sent as `Retry-After`).
    pub fn no_leader(retry_after_secs: u32) -> ApiError {
        ApiError {
            retry_after: Some(retry_after_secs),
            ..ApiError::new(
                ErrorCode::NoLeader,
                format!(
                    "the cluster has no leader at the moment (election under way or no \
                     quorum); retry in {retry_after_secs} s"
                ),
            )
        }
    }

    /// 503 when the leader is known but the write could not be completed
    /// through it (unreachable, timed out); retrying is safe because every
    /// write is checked against the state it is applied to.
    pub fn unavailable(retry_after_secs: u32, why: impl fmt::Display) -> ApiError {
        ApiError {
            retry_after: Some(retry_after_secs),
            ..ApiError::new(
                ErrorCode::Unavailable,
                format!("{why}; retry in {retry_after_secs} s"),
            )
        }
    }

    /// 503 for a write whose fate is not known: it may have been committed
    /// (and may still be). Never "failed": `how_to_check` says how to find
    /// out; a retry with the same `Idempotency-Key` answers the first
    /// outcome.
    pub fn outcome_unknown(why: impl fmt::Display, how_to_check: &str) -> ApiError {
        ApiError {
            retry_after: Some(1),
            ..ApiError::new(
                ErrorCode::OutcomeUnknown,
                format!(
                    "outcome unknown: {why}; the write may have been committed, or may still be. \
                     Retry it with the same Idempotency-Key to get its outcome (a retry without \
                     one may apply it twice), or {how_to_check}"
                ),
            )
        }
    }

    /// 503 for a write the leader committed (its outcome known: `revision`)
    /// that this node has not applied in time.
    pub fn committed_elsewhere(index: u64, revision: u64) -> ApiError {
        ApiError {
            retry_after: Some(1),
            ..ApiError::new(
                ErrorCode::NotApplied,
                format!(
                    "the write was committed at log index {index} (revision {revision}) and takes \
                     effect, but this node has not applied it yet (it is behind the leader), so it \
                     cannot show the result: read it from another node, or retry with the same \
                     Idempotency-Key once this node catches up"
                ),
            )
        }
    }

    /// 503 when this node knows it cannot reach a quorum: nothing was sent.
    pub fn no_quorum(why: &str) -> ApiError {
        ApiError {
            retry_after: Some(2),
            ..ApiError::new(
                ErrorCode::NoQuorum,
                format!("{why}: nothing was written; retry once a quorum is back, or ask a node that has one"),
            )
        }
    }

    /// 422 for an `Idempotency-Key` sent before with another request.
    pub fn key_reused() -> ApiError {
        ApiError::at(
            ErrorCode::IdempotencyKeyReused,
            "Idempotency-Key",
            "this Idempotency-Key was used before with another request: nothing was done; \
             use a new key for each distinct write (a retry must repeat the request exactly)",
        )
    }

    /// 503 from `/readyz`: every reason the node cannot serve correctly,
    /// each under the name of its check.
    pub fn not_ready(problems: &[crate::readiness::Problem]) -> ApiError {
        let message = problems
            .iter()
            .map(|p| format!("{}: {}", p.check.name(), p.detail))
            .collect::<Vec<_>>()
            .join("; ");
        ApiError {
            first: FieldError::new(ErrorCode::NotReady, None, message),
            details: problems
                .iter()
                .map(|p| {
                    FieldError::new(ErrorCode::NotReady, Some(p.check.name().into()), &p.detail)
                })
                .collect(),
            omitted: 0,
            retry_after: Some(1),
            oldest_revision: None,
        }
    }

    /// 503 when this node cannot persist or its store is damaged: the
    /// request was not carried out; another node can serve it.
    pub fn store_unavailable(why: &str, applied_index: u64) -> ApiError {
        ApiError {
            retry_after: Some(5),
            ..ApiError::new(
                ErrorCode::StoreUnavailable,
                format!(
                    "{why}; it has applied the log up to index {applied_index} and cannot \
                     vouch for anything newer: nothing was done, ask another node"
                ),
            )
        }
    }

    /// 500: this node failed (its storage), not the request.
    pub fn internal(why: impl fmt::Display) -> ApiError {
        ApiError::new(ErrorCode::Internal, format!("internal error: {why}"))
    }

    /// The error for a state-machine refusal; `None` for
    /// [`CommandResult::Applied`].
    pub fn from_refusal(result: &CommandResult) -> Option<ApiError> {
        Some(match result {
            CommandResult::Applied { .. } => return None,
            CommandResult::NoSuchService(key) => ApiError::no_such_service(key),
            CommandResult::NoSuchServer(service, server) => {
                ApiError::no_such_server(service, server)
            }
            CommandResult::ServiceExists(key) => ApiError::new(
                ErrorCode::AlreadyExists,
                format!("service {} ({key}) already exists", ids::service_id(key)),
            ),
            CommandResult::ServerExists(service, server) => ApiError::new(
                ErrorCode::AlreadyExists,
                format!(
                    "service {} already has server {} ({server})",
                    ids::service_id(service),
                    ids::server_id(server)
                ),
            ),
            CommandResult::RevisionMismatch { current } => ApiError::new(
                ErrorCode::RevisionMismatch,
                format!(
                    "If-Match does not match: the service is now at revision {current} \
                     (ETag \"{current}\"); read it again and retry"
                ),
            ),
            CommandResult::NotDraining => ApiError::new(
                ErrorCode::AlreadyExists,
                "the drain to finish is no longer in progress",
            ),
            // The batcher answers each write with its own result.
            CommandResult::Batch(_) => ApiError::internal("a batch result reached a single write"),
            CommandResult::Replayed { first, .. } => return ApiError::from_refusal(first),
            CommandResult::KeyReused => ApiError::key_reused(),
        })
    }

    /// 410: a watch asked for changes after `since`, which this node's
    /// history no longer holds (`field`: where `since` came from).
    pub fn revision_compacted(field: &str, since: u64, oldest: u64) -> ApiError {
        ApiError {
            oldest_revision: Some(oldest),
            ..ApiError::at(
                ErrorCode::RevisionCompacted,
                field,
                format!(
                    "revision {since} is older than the oldest this node still has \
                     ({oldest}): list the services again and watch from the listing's revision"
                ),
            )
        }
    }

    /// The oldest revision a watch can resume from, on `revision_compacted`.
    pub fn oldest_revision(&self) -> Option<u64> {
        self.oldest_revision
    }

    /// Seconds for the `Retry-After` header, on 503s.
    pub fn retry_after(&self) -> Option<u32> {
        self.retry_after
    }

    pub fn status(&self) -> u16 {
        self.first.code.status()
    }

    pub fn code(&self) -> ErrorCode {
        self.first.code
    }

    pub fn message(&self) -> &str {
        &self.first.message
    }

    /// The JSON path of the field of the first problem.
    pub fn field(&self) -> Option<&str> {
        self.first.field.as_deref()
    }

    /// Every problem of a validation failure (empty otherwise).
    pub fn details(&self) -> &[FieldError] {
        &self.details
    }

    /// The response body.
    pub fn body(&self) -> ErrorBody {
        let mut message = self.first.message.clone();
        if self.details.len() > 1 || self.omitted > 0 {
            let total = self.details.len() + self.omitted;
            let more = total - 1;
            let plural = if more == 1 { "" } else { "s" };
            message.push_str(&format!(" (and {more} more problem{plural}"));
            if self.omitted > 0 {
                message.push_str(&format!(", {} of them not listed", self.omitted));
            }
            message.push(')');
        }
        ErrorBody {
            error: ErrorObject {
                code: self.first.code,
                message,
                field: self.first.field.clone(),
                details: self.details.clone(),
                oldest_revision: self.oldest_revision,
            },
        }
    }

    /// The response body as JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising a struct of strings cannot fail; the fallback keeps
        // this total anyway.
        serde_json::to_vec(&self.body())
            .unwrap_or_else(|_| br#"{"error":{"code":"internal","message":"error body"}}"#.to_vec())
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.first.field {
            Some(field) => write!(f, "{}: {} ({})", field, self.first.message, self.first.code),
            None => write!(f, "{} ({})", self.first.message, self.first.code),
        }
    }
}

impl std::error::Error for ApiError {}

/// The outcome of a committed command: its revision, or the refusal as an
/// error.
pub fn outcome(result: CommandResult) -> Result<u64, ApiError> {
    match result {
        CommandResult::Applied { revision } => Ok(revision),
        CommandResult::Replayed { first, .. } => outcome(*first),
        refused => Err(ApiError::from_refusal(&refused)
            .unwrap_or_else(|| ApiError::internal("unexpected command result"))),
    }
}

/// 413 unless `len` is within `limit`; for the HTTP layer to call before
/// reading a body whose length it knows.
pub fn check_body_size(len: usize, limit: usize) -> Result<(), ApiError> {
    if len > limit {
        Err(ApiError::body_too_large(limit))
    } else {
        Ok(())
    }
}
