//! One handler per operation of [`api::ROUTES`]: read the request's parts
//! ([`Request`]), call the application layer ([`crate::node`]), render the
//! answer ([`body`]). [`handle`] maps each [`Operation`] to its handler, so
//! a route without one does not compile.

use super::body::{self, json, with_etag, Answer};
use super::events;
use super::request::Request;
use super::AppState;
use crate::api::{self, ApiError, Operation};
use crate::cluster::peer_auth;
use crate::metrics::Format;
use crate::node::writes::Written;
use crate::node::{self, members, reads, reports, traffic, watches, writes, Readiness};
use actix_web::http::{header, StatusCode};
use actix_web::HttpResponse;

pub type Reply = Result<HttpResponse, ApiError>;

/// Answers one admitted request whose body has been read.
pub async fn handle(op: Operation, r: &Request<'_>, app: &AppState) -> Reply {
    use Operation::*;
    let node = &app.node;
    let reads_state = matches!(
        op,
        ListServices | GetService | ListServers | GetServer | GetConfig
    );
    let writes_state = op.writes() && !matches!(op, JoinCluster | RemoveMember);
    // The desired state, read or written: not from a node that cannot
    // follow the log.
    if reads_state || writes_state {
        node.vouch()?;
    }
    let consistent = r.flag("consistent")?;
    if reads_state && consistent {
        reads::linearize(node).await?;
    } else if reads_state {
        node.fresh_enough()?;
    }
    match op {
        Health => Ok(json(StatusCode::OK, &serde_json::json!({"status": "ok"}))),
        Ready => ready(app),
        OpenApi => Ok(HttpResponse::Ok()
            .content_type("application/json")
            .body(api::openapi::DOCUMENT)),
        ListServices => list_services(r, app),
        GetService => get_service(r, app),
        CreateService => create_service(r, app).await,
        ReplaceService => replace_service(r, app).await,
        PatchService => patch_service(r, app).await,
        DeleteService => delete_service(r, app).await,
        ListServers => Ok(json(
            StatusCode::OK,
            &reads::list_servers(node, &r.service()?)?,
        )),
        GetServer => get_server(r, app),
        CreateServer => create_server(r, app).await,
        ReplaceServer => replace_server(r, app).await,
        PatchServer => patch_server(r, app).await,
        DeleteServer => delete_server(r, app).await,
        GetConfig => Ok(json(StatusCode::OK, &reads::config(node))),
        ReplaceConfig => replace_config(r, app).await,
        GetCluster => Ok(json(StatusCode::OK, &reports::cluster(node).await)),
        GetNode => get_node(r, app).await,
        GetNodeKernel => Ok(json(
            StatusCode::OK,
            &reports::kernel_table(node, kernel_part(r)?.as_ref()).await?,
        )),
        GetMemberKernel => member_kernel(r, app).await,
        GetTraffic => Ok(json(
            StatusCode::OK,
            &traffic::table(node, r.number("since")?),
        )),
        GetServiceTraffic => Ok(json(
            StatusCode::OK,
            &traffic::detail(node, &r.service()?).await?,
        )),
        Metrics => metrics(r, app).await,
        JoinCluster => join_cluster(r, app).await,
        RemoveMember => remove_member(r, app).await,
        Ui => ui(r, None),
        UiAsset => ui(r, Some(r.param("asset"))),
    }
}

/// `GET /metrics`, in the format the `Accept` header prefers.
async fn metrics(r: &Request<'_>, app: &AppState) -> Reply {
    let accept = r.http.headers().get_all(header::ACCEPT);
    // A value that is not text cannot name a format: skipped.
    let format = Format::negotiate(accept.filter_map(|v| v.to_str().ok()));
    Ok(HttpResponse::Ok()
        .content_type(format.content_type())
        // The answer depends on Accept: caches must not hand one format to
        // a client that asked for the other.
        .insert_header((header::VARY, "Accept"))
        .body(reports::metrics(&app.node, format).await))
}

/// `GET /readyz`.
fn ready(app: &AppState) -> Reply {
    match node::ready(&app.node) {
        Readiness::Ready => Ok(json(
            StatusCode::OK,
            &serde_json::json!({"status": "ready"}),
        )),
        Readiness::NotReady(problems) => Err(ApiError::not_ready(&problems)),
    }
}

/// `GET /api/v1/services`; with `?watch=true`, its changes as server-sent
/// events, after `?since=N` (or the `Last-Event-ID` a reconnecting
/// `EventSource` sends, which wins: it is newer) or, without either, after
/// the whole list as the first event.
fn list_services(r: &Request<'_>, app: &AppState) -> Reply {
    let since = r.number("since")?;
    if !r.flag("watch")? {
        if since.is_some() {
            return Err(ApiError::at(
                api::ErrorCode::InvalidQuery,
                "?since",
                "?since takes effect only with ?watch=true",
            ));
        }
        return Ok(json(StatusCode::OK, &reads::list_services(&app.node)));
    }
    let since = match r.header_number(LAST_EVENT_ID)? {
        Some(revision) => watches::Since {
            revision: Some(revision),
            field: LAST_EVENT_ID,
        },
        None => watches::Since {
            revision: since,
            field: "?since",
        },
    };
    let lease = watch_lease(r, app, Operation::ListServices)?;
    Ok(events::services(
        watches::watch_services(&app.node, since)?,
        lease,
    ))
}

/// The header a browser's `EventSource` sends when it reconnects: the `id`
/// of the last event it received.
const LAST_EVENT_ID: &str = "Last-Event-ID";

/// `GET /api/v1/services/{id}`.
fn get_service(r: &Request<'_>, app: &AppState) -> Reply {
    let (revision, view) = reads::get_service(&app.node, &r.service()?)?;
    Ok(body::json_with(with_etag(StatusCode::OK, revision), &view))
}

/// `POST /api/v1/services`.
async fn create_service(r: &Request<'_>, app: &AppState) -> Reply {
    let spec = api::validate::parse_service_create(r.body)?;
    let w = writes::create_service(&app.node, spec, &r.write_options()?).await?;
    Ok(service_answer(&w, StatusCode::CREATED, true)?.send(&w))
}

/// `PUT /api/v1/services/{id}`.
async fn replace_service(r: &Request<'_>, app: &AppState) -> Reply {
    let (key, if_match, opts) = (r.service()?, r.if_match()?, r.write_options()?);
    let w = writes::replace_service(&app.node, key, r.body, if_match, &opts).await?;
    Ok(service_answer(&w, StatusCode::OK, false)?.send(&w))
}

/// `PATCH /api/v1/services/{id}`.
async fn patch_service(r: &Request<'_>, app: &AppState) -> Reply {
    let (key, if_match, opts) = (r.service()?, r.if_match()?, r.write_options()?);
    let w = writes::patch_service(&app.node, key, r.body, if_match, &opts).await?;
    Ok(service_answer(&w, StatusCode::OK, false)?.send(&w))
}

/// `DELETE /api/v1/services/{id}`: 202 with the service while it drains,
/// 204 once it is gone.
async fn delete_service(r: &Request<'_>, app: &AppState) -> Reply {
    let (key, grace, if_match) = (r.service()?, r.grace()?, r.if_match()?);
    let opts = r.write_options()?;
    let w = writes::delete_service(&app.node, key, grace, if_match, &opts).await?;
    let answer = match &w.value {
        Some(draining) => Answer::service(StatusCode::ACCEPTED, draining, false)?,
        None => Answer::empty(StatusCode::NO_CONTENT),
    };
    Ok(answer.send(&w))
}

/// `GET /api/v1/services/{id}/servers/{server_id}`.
fn get_server(r: &Request<'_>, app: &AppState) -> Reply {
    let (revision, view) = reads::get_server(&app.node, &r.service()?, &r.server()?)?;
    Ok(body::json_with(with_etag(StatusCode::OK, revision), &view))
}

/// `POST /api/v1/services/{id}/servers`: 201 with `Location`.
async fn create_server(r: &Request<'_>, app: &AppState) -> Reply {
    let (key, if_match, opts) = (r.service()?, r.if_match()?, r.write_options()?);
    let w = writes::create_server(&app.node, key, r.body, if_match, &opts).await?;
    Ok(server_answer(&w, StatusCode::CREATED, true)?.send(&w))
}

/// `PUT /api/v1/services/{id}/servers/{server_id}`.
async fn replace_server(r: &Request<'_>, app: &AppState) -> Reply {
    let (key, server, if_match) = (r.service()?, r.server()?, r.if_match()?);
    let opts = r.write_options()?;
    let w = writes::replace_server(&app.node, key, server, r.body, if_match, &opts).await?;
    Ok(server_answer(&w, StatusCode::OK, false)?.send(&w))
}

/// `PATCH /api/v1/services/{id}/servers/{server_id}`.
async fn patch_server(r: &Request<'_>, app: &AppState) -> Reply {
    let (key, server, if_match) = (r.service()?, r.server()?, r.if_match()?);
    let opts = r.write_options()?;
    let w = writes::patch_server(&app.node, key, server, r.body, if_match, &opts).await?;
    Ok(server_answer(&w, StatusCode::OK, false)?.send(&w))
}

/// `DELETE /api/v1/services/{id}/servers/{server_id}`: 202 with the server
/// while it drains, 204 once it is gone.
async fn delete_server(r: &Request<'_>, app: &AppState) -> Reply {
    let (key, server) = (r.service()?, r.server()?);
    let (grace, if_match, opts) = (r.grace()?, r.if_match()?, r.write_options()?);
    let w = writes::delete_server(&app.node, key, server, grace, if_match, &opts).await?;
    let answer = match &w.value {
        Some(draining) => Answer::server(StatusCode::ACCEPTED, draining, false)?,
        None => Answer::empty(StatusCode::NO_CONTENT),
    };
    Ok(answer.send(&w))
}

/// `PUT /api/v1/config` (`?dry_run=true`: the plan only; `?grace=N`: how
/// long what it removes drains; `?undrain=true`: what it gives serves).
async fn replace_config(r: &Request<'_>, app: &AppState) -> Reply {
    let replacing = writes::Replacing {
        grace: r.grace()?,
        undrain: r.flag("undrain")?,
    };
    let w = writes::replace_config(&app.node, r.body, replacing, &r.write_options()?).await?;
    Ok(Answer::json(StatusCode::OK, &w.value)?.send(&w))
}

/// A service just written. A replay (see `Idempotency-Key`) shows it as it
/// is now; one whose service has gone since answers the first status alone.
fn service_answer(
    w: &Written<Option<std::sync::Arc<crate::model::ServiceConfig>>>,
    status: StatusCode,
    location: bool,
) -> Result<Answer, ApiError> {
    match &w.value {
        Some(cfg) => Answer::service(status, cfg, location),
        None => Ok(Answer::empty(status)),
    }
}

/// A server just written; as [`service_answer`] for a replay whose server
/// has gone since.
fn server_answer(
    w: &Written<writes::ServerWritten>,
    status: StatusCode,
    location: bool,
) -> Result<Answer, ApiError> {
    match Answer::server(status, &w.value, location) {
        Err(gone) if w.replayed && gone.code() == api::ErrorCode::NotFound => {
            Ok(Answer::empty(status))
        }
        answer => answer,
    }
}

/// The slot and the token check that keep a watch of `op` open (see
/// [`events::Lease`]).
fn watch_lease(r: &Request<'_>, app: &AppState, op: Operation) -> Result<events::Lease, ApiError> {
    let slot = app.limits.admit_watch()?;
    let shared = r.http.app_data::<actix_web::web::Data<AppState>>().cloned();
    let authorization = r
        .http
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .map(|v| v.as_bytes().to_vec());
    Ok(events::Lease {
        slot,
        allowed: Box::new(move || match &shared {
            Some(app) => app.policy().check(op.access(), authorization.as_deref()),
            None => Ok(()),
        }),
    })
}

/// `GET /api/v1/node` (`?programmed=N&timeout_ms=T`: a long poll;
/// `?watch=true`: the report as server-sent events, each time it changes).
async fn get_node(r: &Request<'_>, app: &AppState) -> Reply {
    let (programmed, timeout_ms) = (r.number("programmed")?, r.number("timeout_ms")?);
    if r.flag("watch")? {
        if programmed.is_some() || timeout_ms.is_some() {
            return Err(ApiError::at(
                api::ErrorCode::InvalidQuery,
                "?watch",
                "?watch=true is a stream of reports: it takes neither ?programmed nor ?timeout_ms",
            ));
        }
        let lease = watch_lease(r, app, Operation::GetNode)?;
        return Ok(events::node(watches::watch_node(&app.node), lease));
    }
    let report = reports::report_when(&app.node, programmed, timeout_ms).await;
    Ok(json(StatusCode::OK, &report))
}

/// `GET /api/v1/cluster/members/{node_id}/kernel`.
async fn member_kernel(r: &Request<'_>, app: &AppState) -> Reply {
    let only = kernel_part(r)?;
    match reports::member_kernel(&app.node, r.param("node_id"), only.as_ref()).await? {
        reports::MemberKernel::Mine(table) => Ok(json(StatusCode::OK, &table)),
        reports::MemberKernel::Relayed(answer) => Ok(body::relayed(answer)),
    }
}

/// The service `?service=ID` limits a kernel table to (400 naming it when
/// it is no service id).
fn kernel_part(r: &Request<'_>) -> Result<Option<crate::model::ServiceKey>, ApiError> {
    r.query("service")
        .map(|id| {
            api::parse_service_id(id)
                .map_err(|e| ApiError::at(api::ErrorCode::InvalidQuery, "?service", e.to_string()))
        })
        .transpose()
}

/// `POST /api/v1/cluster/join`.
async fn join_cluster(r: &Request<'_>, app: &AppState) -> Reply {
    // With a cluster secret, only a node that holds it may join (the node
    // itself, signing its request), whatever the token.
    peer_auth::verify_http(app.node.peers.auth(), r.http, r.body).map_err(|refusal| {
        ApiError::new(
            api::ErrorCode::Unauthorized,
            format!(
                "this cluster has a CLUSTER_SECRET and only a node holding it may join: {refusal}"
            ),
        )
    })?;
    let join = api::validate::parse_join(r.body)?;
    if r.flag("dry_run")? {
        return Ok(json(
            StatusCode::OK,
            &members::rehearse_join(&app.node, &join)?,
        ));
    }
    joined(&join, members::join(&app.node, &join).await?)
}

/// `DELETE /api/v1/cluster/members/{node_id}`.
async fn remove_member(r: &Request<'_>, app: &AppState) -> Reply {
    let name = r.param("node_id");
    if r.flag("dry_run")? {
        return Ok(json(
            StatusCode::OK,
            &members::rehearse_remove(&app.node, name)?,
        ));
    }
    changed(members::remove(&app.node, name).await?)
}

/// The answer to a join: the leader's own, or relayed from it.
pub(super) fn joined(
    join: &crate::cluster::membership::JoinRequest,
    done: members::Changed,
) -> Reply {
    match done {
        members::Changed::Done => Ok(json(
            StatusCode::OK,
            &serde_json::json!({"joined": join.id}),
        )),
        members::Changed::Relayed(answer) => Ok(body::relayed(answer)),
    }
}

/// The answer to a removal: 204 from the leader, or relayed from it.
pub(super) fn changed(done: members::Changed) -> Reply {
    match done {
        members::Changed::Done => Ok(HttpResponse::NoContent().finish()),
        members::Changed::Relayed(answer) => Ok(body::relayed(answer)),
    }
}

/// `GET /` and `GET /ui/{asset}`: an embedded file of the web UI.
fn ui(r: &Request<'_>, asset: Option<&str>) -> Reply {
    let served = api::ui::serve(asset, r.header("If-None-Match"))?;
    let mut reply = HttpResponse::build(
        StatusCode::from_u16(served.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
    );
    for (name, value) in api::ui::HEADERS {
        reply.insert_header((*name, *value));
    }
    reply.insert_header(("ETag", served.asset.etag()));
    reply.content_type(served.asset.content_type);
    Ok(reply.body(served.body()))
}
