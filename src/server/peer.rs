//! The routes peers use on RAFT_PORT (beside the Raft RPCs): this node's
//! report, kernel table and traffic summary, and the leader's side of
//! joins and removals.
//! A new node joins through either port: `RAFT_LEADER` may name a member's
//! API or its Raft address. The Raft port's `guard` has checked the
//! request's signature before these run.

use super::handlers::{changed, joined};
use super::{body, AppState};
use crate::api::{self, ApiError};
use crate::cluster::{
    membership, MEMBERS_PATH, NODE_KERNEL_PATH, NODE_PATH, NODE_PLAN_PATH, NODE_TRAFFIC_PATH,
};
use crate::node::{members, reports, traffic};
use actix_web::http::StatusCode;
use actix_web::web::{self, Data, Payload};
use actix_web::{HttpRequest, HttpResponse};

pub fn peer_routes(cfg: &mut web::ServiceConfig) {
    cfg.route(NODE_PATH, web::get().to(node))
        .route(NODE_KERNEL_PATH, web::get().to(kernel))
        .route(NODE_PLAN_PATH, web::post().to(plan))
        .route(NODE_TRAFFIC_PATH, web::get().to(traffic_summary))
        .route(
            &format!("{NODE_TRAFFIC_PATH}/{{id}}"),
            web::get().to(traffic_detail),
        )
        .route(membership::JOIN_PATH, web::post().to(join))
        .route(
            &format!("{MEMBERS_PATH}/{{name}}"),
            web::delete().to(remove),
        )
        .route(
            &format!("{MEMBERS_PATH}/{{name}}/rejoin"),
            web::post().to(forget),
        );
}

/// [`NODE_PATH`]: this node's report (`?programmed=N&timeout_ms=T`: a long
/// poll, for a writer's `?wait=`).
async fn node(req: HttpRequest, app: Data<AppState>) -> HttpResponse {
    let r = super::request::Request::new(&req, Vec::new(), &[]);
    let answered = async {
        let (programmed, timeout_ms) = (r.number("programmed")?, r.number("timeout_ms")?);
        Ok::<_, ApiError>(reports::report_when(&app.node, programmed, timeout_ms).await)
    };
    match answered.await {
        Ok(view) => body::json(StatusCode::OK, &view),
        Err(e) => body::error(&e),
    }
}

/// [`NODE_KERNEL_PATH`]: this node's kernel table, for the member relaying
/// it to its web UI.
async fn kernel(app: Data<AppState>, http: actix_web::HttpRequest) -> HttpResponse {
    // `?service=ID`: that service's part only (a bad id: the whole table,
    // as a member of an older version would answer).
    let only = form_urlencoded::parse(http.query_string().as_bytes())
        .find(|(k, _)| k == "service")
        .and_then(|(_, id)| crate::api::parse_service_id(&id).ok());
    match reports::kernel_table(&app.node, only.as_ref()).await {
        Ok(table) => body::json(StatusCode::OK, &table),
        Err(e) => body::error(&e),
    }
}

/// [`NODE_TRAFFIC_PATH`]: this node's traffic summary, for the members
/// that poll it.
async fn traffic_summary(app: Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(app.node.traffic.own_json())
}

/// `{NODE_TRAFFIC_PATH}/{id}`: one service in detail on this node, for the
/// member answering `GET /api/v1/traffic/{id}`.
async fn traffic_detail(id: web::Path<String>, app: Data<AppState>) -> HttpResponse {
    let detail = api::parse_service_id(&id).and_then(|key| traffic::local_detail(&app.node, &key));
    match detail {
        Ok(view) => body::json(StatusCode::OK, &view),
        Err(e) => body::error(&e),
    }
}

/// [`NODE_PLAN_PATH`]: this node's kernel plan for a dry run on another
/// member.
async fn plan(payload: Payload, app: Data<AppState>) -> HttpResponse {
    let planned = async {
        let bytes = body::read(payload, api::MAX_CONFIG_BODY_BYTES).await?;
        let request: api::json::PlanRequest = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::new(
                api::ErrorCode::MalformedJson,
                format!("not a plan request: {e}"),
            )
        })?;
        reports::kernel_plan(&app.node, &request)
            .await
            .map_err(|why| ApiError::unavailable(1, why))
    };
    match planned.await {
        Ok(changes) => body::json(StatusCode::OK, &changes),
        Err(e) => body::error(&e),
    }
}

async fn join(payload: Payload, app: Data<AppState>) -> HttpResponse {
    let joined = async {
        let bytes = body::read(payload, api::MAX_BODY_BYTES).await?;
        let join = api::validate::parse_join(&bytes)?;
        joined(&join, members::join(&app.node, &join).await?)
    };
    joined.await.unwrap_or_else(|e| body::error(&e))
}

/// A node about to rejoin with an empty store: removed first.
async fn forget(name: web::Path<String>, app: Data<AppState>) -> HttpResponse {
    let forgotten = async {
        match members::forget(&app.node, &name).await? {
            members::Changed::Done => Ok(body::json(
                StatusCode::OK,
                &serde_json::json!({"removed": &*name}),
            )),
            members::Changed::Relayed(answer) => Ok(body::relayed(answer)),
        }
    };
    forgotten
        .await
        .unwrap_or_else(|e: ApiError| body::error(&e))
}

async fn remove(name: web::Path<String>, app: Data<AppState>) -> HttpResponse {
    let removed = async { changed(members::remove(&app.node, &name).await?) };
    removed.await.unwrap_or_else(|e| body::error(&e))
}
