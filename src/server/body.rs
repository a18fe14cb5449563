//! Request bodies: read whole, within a size limit and a time limit, and
//! the answers the handlers build (JSON, errors, ETag and Location).

use crate::api::error::check_body_size;
use crate::api::{self, auth, http, view, ApiError};
use crate::model::ServiceConfig;
use crate::node::writes::ServerWritten;
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

/// A service as the answer to a write, with its `ETag` (and `Location`
/// when it was created).
pub fn service(status: StatusCode, cfg: &ServiceConfig, location: bool) -> HttpResponse {
    let mut r = with_etag(status, cfg.revision);
    if location {
        r.insert_header(("Location", http::service_location(&cfg.service.key)));
    }
    json_with(r, &view::service_view(cfg))
}

/// A server just written as the body of `r`.
pub fn server(r: HttpResponseBuilder, written: &ServerWritten) -> HttpResponse {
    let (cfg, server) = (&written.service, &written.server);
    match view::server_of(cfg, server) {
        Some(view) => json_with(r, &view),
        None => error(&ApiError::no_such_server(&cfg.service.key, server)),
    }
}

/// A peer's answer passed back to the client.
pub fn relayed(answer: Relayed) -> HttpResponse {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
    HttpResponse::build(status)
        .content_type("application/json")
        .body(answer.body)
}
