//! The REST API as pure code: JSON shapes, validation of requests into model
//! types, errors and their HTTP statuses, resource ids, views of the desired
//! state, the route table and the OpenAPI document. No HTTP framework here:
//! the server wires these functions to routes and does the I/O.
//!
//! Map:
//! - [`routes`]: [`ROUTES`], every (method, path) with its [`Operation`] and
//!   body limit.
//! - [`validate`]: body bytes → model types (`parse_service_create`,
//!   `parse_service_replace`, `parse_service_patch`, the same for servers,
//!   `parse_config`, `parse_join`), or an [`ApiError`] listing every problem.
//! - [`view`]: model → response JSON (`service_view`, `config_view`, …)
//!   and the dry-run plan of a configuration replacement.
//! - [`error`]: [`ApiError`], its codes and statuses, the refusals of the
//!   state machine as errors ([`error::outcome`]).
//! - [`auth`]: API tokens, the access each operation needs, the check of a
//!   request's bearer token.
//! - [`ids`]: `tcp-192.0.2.10-80` and `198.51.100.11-8080`, both ways.
//! - [`http`]: ETag/If-Match, query flags, Location.
//! - [`json`]: the response types; [`body`]: JSON reading and merge patch.
//! - [`openapi`]: the OpenAPI 3.1 document served at /api/v1/openapi.json.
//! - [`sse`]: reading the server-sent events of a watch (the CLI, tests).
//! - [`ui`]: the web UI's embedded files (`ui/`) and how `/` and `/ui/…` are
//!   answered (content types, ETags, the Content-Security-Policy).
//!
//! A write request goes: [`routes`] picks the operation → [`ids`] parse the
//! path → [`http::parse_if_match`] → [`validate`] turns the body into a
//! [`crate::model::Command`]'s payload → the Raft write → [`error::outcome`]
//! maps the state machine's answer → [`view`] renders the result.

pub mod auth;
pub mod body;
pub mod error;
pub mod http;
pub mod ids;
pub mod json;
pub mod openapi;
pub mod routes;
pub mod sse;
pub mod ui;
pub mod validate;
pub mod view;

pub use error::{
    outcome, ApiError, ErrorBody, ErrorCode, FieldError, MAX_BODY_BYTES, MAX_CONFIG_BODY_BYTES,
};
pub use ids::{parse_server_id, parse_service_id, server_id, service_id};
pub use routes::{match_route, Method, Operation, Route, ROUTES};

#[cfg(test)]
mod tests;
