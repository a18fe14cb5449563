//! Request bodies: read whole, within a size limit and a time limit, and
//! the answers the handlers build (JSON, errors, ETag and Location).

use crate::api::error::check_body_size;
use crate::api::json::DryRun;
use crate::api::{self, auth, http, view, ApiError};
use crate::model::ServiceConfig;
use crate::node::writes::{ServerWritten, Written};
use crate::node::Relayed;
use actix_web::http::header::WWW_AUTHENTICATE;
use actix_web::http::StatusCode;
use actix_web::web::{Bytes, Payload};
use actix_web::{HttpResponse, HttpResponseBuilder};
use serde::Serialize;
use std::time::Duration;

/// How long a client has to send its body once admitted: a slow sender
/// holds one of the node's limits for no longer.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// The body, at most `limit` bytes (413 above).
pub async fn read(body: Payload, limit: usize) -> Result<Bytes, ApiError> {
    // Routes without a body still drain a small one, so a stray body is
    // refused rather than left on the connection.
    let limit = limit.max(1024);
    let Ok(read) = tokio::time::timeout(BODY_TIMEOUT, body.to_bytes_limited(limit)).await else {
        return Err(ApiError::new(
            api::ErrorCode::MalformedJson,
            format!(
                "the body did not arrive within {} s",
                BODY_TIMEOUT.as_secs()
            ),
        ));
    };
    match read {
        Ok(Ok(bytes)) => {
            check_body_size(bytes.len(), limit)?;
            Ok(bytes)
        }
        Ok(Err(e)) => Err(ApiError::new(
            api::ErrorCode::MalformedJson,
            format!("could not read the body: {e}"),
        )),
        Err(_) => Err(ApiError::body_too_large(limit)),
    }
}

/// An error as the API answers it: its status, `Retry-After` when it has
/// one, the bearer challenge on a 401, the JSON error body.
pub fn error(e: &ApiError) -> HttpResponse {
    let mut r = HttpResponse::build(
        StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
    );
    if let Some(secs) = e.retry_after() {
        r.insert_header(("Retry-After", secs.to_string()));
    }
    if e.code() == api::ErrorCode::Unauthorized {
        r.insert_header((WWW_AUTHENTICATE, auth::CHALLENGE));
    }
    r.content_type("application/json").body(e.to_json())
}

/// `value` as the JSON body of `r`.
pub fn json_with(mut r: HttpResponseBuilder, value: &impl Serialize) -> HttpResponse {
    match serde_json::to_vec(value) {
        Ok(body) => r.content_type("application/json").body(body),
        Err(e) => error(&ApiError::internal(e)),
    }
}

/// `value` as a JSON answer with `status`.
pub fn json(status: StatusCode, value: &impl Serialize) -> HttpResponse {
    json_with(HttpResponse::build(status), value)
}

/// A builder with the `ETag` of a service at `revision`.
pub fn with_etag(status: StatusCode, revision: u64) -> HttpResponseBuilder {
    let mut r = HttpResponse::build(status);
    r.insert_header(("ETag", http::etag(revision)));
    r
}

/// The answer to a write, before it is sent: its status, `ETag`,
/// `Location` and JSON body.
pub struct Answer {
    status: StatusCode,
    etag: Option<u64>,
    location: Option<String>,
    body: Option<Vec<u8>>,
}

impl Answer {
    /// An answer without a body (204).
    pub fn empty(status: StatusCode) -> Answer {
        Answer {
            status,
            etag: None,
            location: None,
            body: None,
        }
    }

    /// `value` as the JSON body.
    pub fn json(status: StatusCode, value: &impl Serialize) -> Result<Answer, ApiError> {
        Ok(Answer {
            body: Some(serde_json::to_vec(value).map_err(ApiError::internal)?),
            ..Answer::empty(status)
        })
    }

    /// A service as the answer to a write, with its `ETag` (and `Location`
    /// when it was created).
    pub fn service(
        status: StatusCode,
        cfg: &ServiceConfig,
        location: bool,
    ) -> Result<Answer, ApiError> {
        Ok(Answer {
            etag: Some(cfg.revision),
            location: location.then(|| http::service_location(&cfg.service.key)),
            ..Answer::json(status, &view::service_view(cfg))?
        })
    }

    /// A server just written, with its service's `ETag` (and `Location`
    /// when it was created).
    pub fn server(
        status: StatusCode,
        written: &ServerWritten,
        location: bool,
    ) -> Result<Answer, ApiError> {
        let (cfg, server) = (&written.service, &written.server);
        let view = view::server_of(cfg, server)
            .ok_or_else(|| ApiError::no_such_server(&cfg.service.key, server))?;
        Ok(Answer {
            etag: Some(written.revision),
            location: location.then(|| http::server_location(&cfg.service.key, server)),
            ..Answer::json(status, &view)?
        })
    }

    /// The response: as it is; marked `Idempotent-Replayed: true` when it
    /// repeats the first outcome of a write made before under the same
    /// `Idempotency-Key`; or, for a dry run, the rehearsal (200, with the
    /// status and body the write would answer), without `ETag` or
    /// `Location`, since nothing was written.
    pub fn send<T>(self, written: &Written<T>) -> HttpResponse {
        if let Some(rehearsal) = &written.rehearsal {
            let result = match &self.body {
                Some(bytes) => match serde_json::from_slice(bytes) {
                    Ok(value) => value,
                    Err(e) => return error(&ApiError::internal(e)),
                },
                None => serde_json::Value::Null,
            };
            let dry_run = DryRun {
                dry_run: true,
                status: self.status.as_u16(),
                result,
                desired: rehearsal.desired.clone(),
                kernels: rehearsal.kernels.clone(),
            };
            return json(StatusCode::OK, &dry_run);
        }
        let mut r = HttpResponse::build(self.status);
        if let Some(revision) = self.etag {
            r.insert_header(("ETag", http::etag(revision)));
        }
        if let Some(location) = self.location {
            r.insert_header(("Location", location));
        }
        if written.replayed {
            r.insert_header((REPLAYED_HEADER, "true"));
        }
        match self.body {
            Some(body) => r.content_type("application/json").body(body),
            None => r.finish(),
        }
    }
}

/// Marks the answer to a write that repeats a write made before under the
/// same `Idempotency-Key`: its first outcome, not a second application.
pub const REPLAYED_HEADER: &str = "Idempotent-Replayed";

/// A peer's answer passed back to the client.
pub fn relayed(answer: Relayed) -> HttpResponse {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
    HttpResponse::build(status)
        .content_type("application/json")
        .body(answer.body)
}
