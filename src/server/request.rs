//! What a handler reads from a request besides its body: the route's path
//! segments, the query (percent-decoded: `?grace=%33%30` is 30), and
//! `If-Match`.

use crate::api::{self, http, ApiError};
use crate::model::{DestKey, ServiceKey};
use crate::node::writes::{RequestKey, WriteOptions};
use crate::node::Wait;

/// The header that makes a write safe to retry (see
/// [`crate::model::requests`]).
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";
use actix_web::HttpRequest;

/// One routed request.
pub struct Request<'a> {
    pub http: &'a HttpRequest,
    /// The values of the route's `{name}` segments.
    params: Vec<(&'static str, String)>,
    query: Vec<(String, String)>,
    pub body: &'a [u8],
}

impl<'a> Request<'a> {
    pub fn new(
        http: &'a HttpRequest,
        params: api::routes::PathParams<'_>,
        body: &'a [u8],
    ) -> Request<'a> {
        Request {
            http,
            params: params
                .into_iter()
                .map(|(k, v)| (k, v.to_string()))
                .collect(),
            query: form_urlencoded::parse(http.query_string().as_bytes())
                .into_owned()
                .collect(),
            body,
        }
    }

    /// A `{name}` segment of the path ("" when the route has none).
    pub fn param(&self, name: &str) -> &str {
        self.params
            .iter()
            .find(|(k, _)| *k == name)
            .map_or("", |(_, v)| v.as_str())
    }

    /// The first value of the query parameter `name`; `?flag` alone is "".
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The service `{id}` names.
    pub fn service(&self) -> Result<ServiceKey, ApiError> {
        api::parse_service_id(self.param("id"))
    }

    /// The real server `{server_id}` names.
    pub fn server(&self) -> Result<DestKey, ApiError> {
        api::parse_server_id(self.param("server_id"))
    }

    /// A boolean query flag (`?dry_run=true`, `?consistent`).
    pub fn flag(&self, name: &str) -> Result<bool, ApiError> {
        http::query_flag(name, self.query(name))
    }

    /// A whole number in the query (`?programmed=12`).
    pub fn number(&self, name: &str) -> Result<Option<u64>, ApiError> {
        self.query(name)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    ApiError::at(
                        api::ErrorCode::InvalidQuery,
                        format!("?{name}"),
                        format!("{name} must be a whole number, got {v:?}"),
                    )
                })
            })
            .transpose()
    }

    /// A header holding a whole number (`Last-Event-ID: 12`); absent or
    /// empty is `None`.
    pub fn header_number(&self, name: &str) -> Result<Option<u64>, ApiError> {
        let Some(value) = self.http.headers().get(name) else {
            return Ok(None);
        };
        let text = value.to_str().unwrap_or("?").trim();
        if text.is_empty() {
            return Ok(None);
        }
        text.parse::<u64>().map(Some).map_err(|_| {
            ApiError::at(
                api::ErrorCode::InvalidHeader,
                name,
                format!("{name} must be a whole number, got {text:?}"),
            )
        })
    }

    /// `?wait=applied|quorum`.
    pub fn wait(&self) -> Result<Option<Wait>, ApiError> {
        Wait::parse(self.query("wait"))
    }

    /// What every write takes: `?wait=`, `?dry_run=`, `Idempotency-Key`.
    pub fn write_options(&self) -> Result<WriteOptions, ApiError> {
        Ok(WriteOptions {
            wait: self.wait()?,
            dry_run: self.flag("dry_run")?,
            key: self.idempotency_key()?,
        })
    }

    /// The `Idempotency-Key` header, with the fingerprint of the request it
    /// came with: a digest of the method, the path, the query parameters
    /// that change what the write does (not `?wait` or `?dry_run`),
    /// `If-Match` and the body.
    fn idempotency_key(&self) -> Result<Option<RequestKey>, ApiError> {
        let Some(value) = self.http.headers().get(IDEMPOTENCY_KEY) else {
            return Ok(None);
        };
        let invalid = |why: String| {
            ApiError::at(
                api::ErrorCode::InvalidHeader,
                IDEMPOTENCY_KEY,
                format!("Idempotency-Key {why}"),
            )
        };
        let key = value
            .to_str()
            .map_err(|_| invalid("is not text".into()))?
            .trim();
        crate::model::requests::check_key(key).map_err(invalid)?;
        let mut query: Vec<&(String, String)> = self
            .query
            .iter()
            .filter(|(k, _)| k != "wait" && k != "dry_run")
            .collect();
        query.sort();
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for part in [self.http.method().as_str(), self.http.path()] {
            ctx.update(part.as_bytes());
            ctx.update(b"\n");
        }
        for (k, v) in query {
            ctx.update(format!("{k}={v}\n").as_bytes());
        }
        ctx.update(self.header("If-Match").unwrap_or("").as_bytes());
        ctx.update(b"\n");
        ctx.update(self.body);
        Ok(Some(RequestKey {
            key: key.to_string(),
            fingerprint: hex::encode(ctx.finish().as_ref()),
        }))
    }

    /// `?grace=` seconds of a removal.
    pub fn grace(&self) -> Result<Option<u32>, ApiError> {
        crate::node::writes::grace(self.query("grace"))
    }

    /// The revision `If-Match` requires.
    pub fn if_match(&self) -> Result<Option<u64>, ApiError> {
        let header = match self.http.headers().get("If-Match") {
            Some(v) => Some(v.to_str().map_err(|_| {
                ApiError::at(
                    api::ErrorCode::InvalidHeader,
                    "If-Match",
                    "not a valid header value",
                )
            })?),
            None => None,
        };
        http::parse_if_match(header)
    }

    /// A header's value, when it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.http.headers().get(name).and_then(|v| v.to_str().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn the_query_is_percent_decoded_and_a_bare_name_is_empty() {
        let http =
            TestRequest::with_uri("/api/v1/services/x?grace=%33%30&dry_run&wait=quorum&grace=9")
                .to_http_request();
        let r = Request::new(&http, vec![("id", "tcp-192.0.2.10-80")], &[]);
        assert_eq!(r.grace().unwrap(), Some(30), "the first of two values");
        assert!(r.flag("dry_run").unwrap());
        assert!(!r.flag("consistent").unwrap());
        assert_eq!(r.wait().unwrap(), Some(Wait::Quorum));
        assert_eq!(r.param("id"), "tcp-192.0.2.10-80");
        assert_eq!(r.param("server_id"), "");
        let http = TestRequest::with_uri("/?programmed=1%2B1").to_http_request();
        let r = Request::new(&http, Vec::new(), &[]);
        assert_eq!(
            r.number("programmed").unwrap_err().field(),
            Some("?programmed")
        );
    }
}
