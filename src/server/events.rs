//! Watches as server-sent events (the `text/event-stream` of the HTML
//! standard): one event per revision, `event:` naming its kind, `id:` its
//! revision (what a browser's `EventSource` sends back as `Last-Event-ID`
//! when it reconnects) and `data:` one line of JSON.

use crate::api::json::NodeView;
use crate::api::ApiError;
use crate::node::watches::ServiceEvent;
use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::HttpResponse;
use futures_util::{Stream, StreamExt};
use serde::Serialize;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::OwnedSemaphorePermit;

/// What keeps a watch open: its slot among the node's watches (freed when
/// the stream ends), and a check that the token it was opened with is
/// still allowed, made before each event — a reload of the token file may
/// have revoked it since, and a watch outlives any request.
pub struct Lease {
    pub slot: OwnedSemaphorePermit,
    pub allowed: Box<dyn Fn() -> Result<(), ApiError>>,
}

/// How often an idle watch sends a comment line: a client that went away
/// is noticed (and its slot freed) only when something is written, and
/// proxies close connections that stay silent.
const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// `events`, with a comment every [`KEEP_ALIVE`] of silence, while
/// `lease` allows them; then one `error` event saying why, and the end.
fn leased(
    events: impl Stream<Item = Bytes> + 'static,
    lease: Lease,
) -> impl Stream<Item = Bytes> + 'static {
    futures_util::stream::unfold(
        (Box::pin(events), Some(lease)),
        |(mut events, lease)| async move {
            let lease = lease?;
            let next = tokio::select! {
                next = events.next() => next?,
                _ = tokio::time::sleep(KEEP_ALIVE) => Bytes::from_static(b": keep-alive\n\n"),
            };
            match (lease.allowed)() {
                Ok(()) => Some((next, (events, Some(lease)))),
                Err(e) => Some((event("error", None, &e.body()), (events, None))),
            }
        },
    )
}

/// The content type of a watch.
pub const EVENT_STREAM: &str = "text/event-stream";

/// How long a browser waits before it reconnects, in ms (the stream's
/// `retry:` field).
const RETRY_MS: u64 = 1000;

/// One event's bytes. Compact JSON has no line breaks, so `data` is one
/// line.
pub fn event(kind: &str, id: Option<u64>, data: &impl Serialize) -> Bytes {
    let data = serde_json::to_string(data).unwrap_or_else(|e| {
        // Serialising the API's own views cannot fail; if it ever did the
        // client is told, rather than handed a half event.
        serde_json::json!({"error": {"code": "internal", "message": e.to_string()}}).to_string()
    });
    let mut out = format!("event: {kind}\n");
    if let Some(id) = id {
        out.push_str(&format!("id: {id}\n"));
    }
    out.push_str(&format!("data: {data}\n\n"));
    Bytes::from(out)
}

/// A watch of the services as an event stream.
pub fn services(events: impl Stream<Item = ServiceEvent> + 'static, lease: Lease) -> HttpResponse {
    let first = Bytes::from(format!("retry: {RETRY_MS}\n\n"));
    let body = futures_util::stream::once(async move { first }).chain(events.map(|e| match e {
        ServiceEvent::Sync(sync) => event("sync", Some(sync.revision), &sync),
        ServiceEvent::Changes(changes) => event("change", Some(changes.revision), &changes),
        ServiceEvent::Progress(progress) => event("progress", Some(progress.revision), &progress),
        ServiceEvent::Compacted(e) => event("error", None, &e.body()),
    }));
    stream(leased(body, lease))
}

/// A watch of a node's report as an event stream.
pub fn node(reports: impl Stream<Item = NodeView> + 'static, lease: Lease) -> HttpResponse {
    stream(leased(
        reports.map(|report| event("node", None, &report)),
        lease,
    ))
}

fn stream(body: impl Stream<Item = Bytes> + 'static) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(EVENT_STREAM)
        // Neither a cache nor a buffering proxy may hold events back.
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body.map(Ok::<_, Infallible>))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::json::WatchProgress;

    #[test]
    fn an_event_is_its_kind_id_and_one_line_of_json() {
        let bytes = event("progress", Some(7), &WatchProgress { revision: 7 });
        assert_eq!(
            &bytes[..],
            b"event: progress\nid: 7\ndata: {\"revision\":7}\n\n"
        );
        let bytes = event("node", None, &serde_json::json!({"a": "x\ny"}));
        assert_eq!(&bytes[..], b"event: node\ndata: {\"a\":\"x\\ny\"}\n\n");
    }
}
