//! The HTTP adapter on SERVER_PORT: one dispatcher driven by
//! [`api::ROUTES`] (the one list of routes), so the routing table, the
//! OpenAPI document and the handlers cannot drift apart. It does HTTP only:
//! route → token check → admission ([`Limits`], before the body is read) →
//! body → the operation's handler ([`handlers`]), which calls the
//! application layer ([`crate::node`]) and renders its answer.
//!
//! Nodes never call each other's API: what they ask one another (a node's
//! report, a join or removal forwarded to the leader) is served on the Raft
//! port by [`peer_routes`], so the API can be closed to everyone but clients
//! (tokens, loopback) without cutting the cluster apart.
//!
//! Map: [`admission`] (limits), [`body`] (bodies in, answers out),
//! [`events`] (watches as server-sent events), [`request`] (path segments,
//! query, `If-Match`), [`handlers`] (one per operation), [`peer`] (the
//! routes on the Raft port).

pub mod admission;
pub mod body;
pub mod events;
pub mod handlers;
pub mod peer;
pub mod request;

pub use admission::Limits;
pub use peer::peer_routes;

use crate::api::auth::Policy;
use crate::api::{self, ApiError};
use crate::node::Node;
use actix_web::http::header::AUTHORIZATION;
use actix_web::web::{Data, Payload};
use actix_web::{HttpRequest, HttpResponse};
use std::sync::Arc;
use std::time::Duration;

/// What the adapter holds: the node, and who may call what.
pub struct AppState {
    pub node: Arc<Node>,
    /// Who may call what; replaced when the token file is reloaded.
    pub auth: std::sync::RwLock<Arc<Policy>>,
    pub limits: Limits,
}

impl AppState {
    fn policy(&self) -> Arc<Policy> {
        self.auth
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// How long a request may take, a backstop above the longest wait a
/// handler makes (a 30 s long poll).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The single entry point: route, admit, read the body, handle; every
/// request is counted in the metrics.
pub async fn dispatch(req: HttpRequest, body: Payload, app: Data<AppState>) -> HttpResponse {
    let started = std::time::Instant::now();
    let mut operation = "unrouted";
    let reply = match api::match_route(req.method().as_str(), req.path()) {
        Ok((route, params)) => {
            operation = route.operation.id();
            let authorization = req.headers().get(AUTHORIZATION).map(|v| v.as_bytes());
            // Before the body is read: a caller without the right token
            // gets nothing, not even a parse of what it sent; then the
            // limits, so that only admitted requests hold a body.
            let query = form_urlencoded::parse(req.query_string().as_bytes());
            let admitted = app
                .policy()
                .check(route.operation.access(), authorization)
                .and_then(|()| api::routes::check_query(route, query.map(|(k, _)| k)))
                .and_then(|()| app.limits.admit(route));
            match admitted {
                Ok(_permits) => {
                    let answered = tokio::time::timeout(REQUEST_TIMEOUT, async {
                        let bytes = body::read(body, route.max_body).await?;
                        let request = request::Request::new(&req, params, &bytes);
                        handlers::handle(route.operation, &request, &app).await
                    });
                    answered.await.unwrap_or_else(|_| {
                        let why =
                            format!("the request took more than {} s", REQUEST_TIMEOUT.as_secs());
                        Err(if route.operation.writes() {
                            ApiError::outcome_unknown(why, "read what it changes to check")
                        } else {
                            ApiError::unavailable(1, why)
                        })
                    })
                }
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    };
    let response = reply.unwrap_or_else(|e| body::error(&e));
    app.node
        .metrics
        .request(operation, response.status().as_u16(), started.elapsed());
    response
}
