//! `ipvs-manager list --watch`: the desired state, then its changes as the
//! node applies them (`GET /api/v1/services?watch=true`), resumed after a
//! disconnect from the last revision seen (`&since=N`), and listed again
//! when the node no longer has what came after it (410
//! `revision_compacted`).

use super::cluster::{desired_entries, desired_from, Api, Output, DESIRED_INFO};
use crate::api::json::{ConfigView, ServiceView, WatchChanges, WatchProgress, WatchSync};
use crate::api::sse::{Event, Parser};
use crate::api::ErrorCode;
use crate::ipvs::text::{self, ListOptions};
use anyhow::Context;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

/// A watch sends a progress event every 10 s when idle; nothing for this
/// long means the connection is dead even if TCP has not noticed.
const SILENCE: Duration = Duration::from_secs(30);

/// The pause before reconnecting.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

/// How one connection of a watch ended.
pub enum Followed {
    /// The stream ended or broke after it was answered: reconnect.
    Cut(anyhow::Error),
    /// The node answered with an error instead of a stream.
    Refused {
        code: Option<ErrorCode>,
        error: anyhow::Error,
    },
    /// No connection.
    Unreachable(anyhow::Error),
    /// The caller's handler failed (stdout closed): stop.
    Failed(anyhow::Error),
}

/// Prints the watch of the services until interrupted (or a definite
/// refusal: a bad token, an unknown parameter).
pub fn list(api: &Api, output: Output, opts: &ListOptions) -> anyhow::Result<ExitCode> {
    let mut since: Option<u64> = None;
    let mut answered = false;
    loop {
        let path = match since {
            Some(n) => format!("/api/v1/services?watch=true&since={n}"),
            None => "/api/v1/services?watch=true".to_string(),
        };
        let ended = {
            let mut out = std::io::stdout().lock();
            let mut on_event = |event: Event| -> anyhow::Result<()> {
                answered = true;
                show(&mut out, output, opts, &event, &mut since)
            };
            api.follow(&path, &mut on_event)
        };
        match ended {
            Followed::Cut(why) => eprintln!(
                "the watch was interrupted ({}); resuming{}",
                crate::errors::chain(why.as_ref()),
                resume_point(since)
            ),
            Followed::Refused {
                code: Some(ErrorCode::RevisionCompacted),
                error,
            } => {
                eprintln!("{error}; listing again");
                since = None;
                continue;
            }
            Followed::Refused {
                code:
                    Some(
                        ErrorCode::NoLeader
                        | ErrorCode::Unavailable
                        | ErrorCode::Overloaded
                        | ErrorCode::NotReady
                        | ErrorCode::StoreUnavailable,
                    ),
                error,
            } if answered => eprintln!("{error}; retrying{}", resume_point(since)),
            Followed::Refused { error, .. } => return Err(error),
            Followed::Unreachable(error) if answered => eprintln!(
                "{}; retrying{}",
                crate::errors::chain(error.as_ref()),
                resume_point(since)
            ),
            Followed::Unreachable(error) | Followed::Failed(error) => return Err(error),
        }
        std::thread::sleep(RECONNECT_PAUSE);
    }
}

fn resume_point(since: Option<u64>) -> String {
    match since {
        Some(n) => format!(" after revision {n}"),
        None => String::new(),
    }
}

/// Prints one event and notes the revision to resume after.
fn show(
    out: &mut impl Write,
    output: Output,
    opts: &ListOptions,
    event: &Event,
    since: &mut Option<u64>,
) -> anyhow::Result<()> {
    let what = || format!("unexpected {} event: {}", event.kind, event.data);
    match event.kind.as_str() {
        "sync" => {
            let sync: WatchSync = serde_json::from_str(&event.data).with_context(what)?;
            match output {
                Output::Json => json_line(out, "sync", &event.data)?,
                Output::Text => {
                    writeln!(out, "# revision {}", sync.revision)?;
                    out.write_all(listing(sync.services, opts)?.as_bytes())?;
                }
            }
            *since = Some(sync.revision);
        }
        "change" => {
            let changes: WatchChanges = serde_json::from_str(&event.data).with_context(what)?;
            match output {
                Output::Json => json_line(out, "change", &event.data)?,
                Output::Text => {
                    for change in changes.changes {
                        match change.service {
                            Some(service) => {
                                writeln!(out, "# revision {}: {}", changes.revision, change.id)?;
                                out.write_all(rows(service, opts)?.as_bytes())?;
                            }
                            None => writeln!(
                                out,
                                "# revision {}: {} deleted",
                                changes.revision, change.id
                            )?,
                        }
                    }
                }
            }
            *since = Some(changes.revision);
        }
        "progress" => {
            let progress: WatchProgress = serde_json::from_str(&event.data).with_context(what)?;
            *since = Some(progress.revision);
        }
        "error" => {
            // The node's history no longer reaches back to `since` (this
            // client read too slowly): the stream ends; list again.
            let message = serde_json::from_str::<serde_json::Value>(&event.data)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| event.data.clone());
            eprintln!("{message}; listing again");
            *since = None;
        }
        _ => {}
    }
    out.flush()?;
    Ok(())
}

/// One line of JSON per event: `{"event": kind, ...its data}`.
fn json_line(out: &mut impl Write, kind: &str, data: &str) -> anyhow::Result<()> {
    let mut value: serde_json::Value = serde_json::from_str(data)?;
    if let Some(object) = value.as_object_mut() {
        object.insert("event".into(), kind.into());
    }
    writeln!(out, "{value}")?;
    Ok(())
}

/// The services in ipvsadm's layout, as `list` prints them (without the
/// node's counters: a watch follows the desired state).
fn listing(services: Vec<ServiceView>, opts: &ListOptions) -> anyhow::Result<String> {
    let body = serde_json::to_vec(&ConfigView { services })?;
    let desired = desired_from(&body)?;
    let entries = desired_entries(&desired, crate::model::clock::unix_ms());
    Ok(text::list(&DESIRED_INFO, &entries, opts))
}

/// One service's rows of [`listing`], without its header lines.
fn rows(service: ServiceView, opts: &ListOptions) -> anyhow::Result<String> {
    let all = listing(vec![service], opts)?;
    let header = text::list(&DESIRED_INFO, &[], opts);
    Ok(all.strip_prefix(&header).unwrap_or(&all).to_string())
}

impl Api {
    /// Follows the event stream at `path`, handing each event to `on` in
    /// order, until it ends or breaks.
    pub fn follow(&self, path: &str, on: &mut dyn FnMut(Event) -> anyhow::Result<()>) -> Followed {
        let url = format!("{}{path}", self.base());
        self.block_on(async {
            // The client's own timeout covers a whole answer; a watch has
            // no end, so only silence ends it.
            let req = self
                .request(reqwest::Method::GET, &url)
                .timeout(Duration::from_secs(365 * 24 * 3600))
                .header(reqwest::header::ACCEPT, crate::server::events::EVENT_STREAM);
            let mut r = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    return Followed::Unreachable(anyhow::anyhow!(
                        "cannot reach {}: {}",
                        self.base(),
                        crate::errors::chain(&e)
                    ))
                }
            };
            let status = r.status();
            if !status.is_success() {
                let body = r.bytes().await.unwrap_or_default();
                let value = serde_json::from_slice::<serde_json::Value>(&body).ok();
                let error = value.as_ref().map(|v| &v["error"]);
                let code = error.and_then(|e| serde_json::from_value(e["code"].clone()).ok());
                let message = error.and_then(|e| e["message"].as_str()).map_or_else(
                    || String::from_utf8_lossy(&body).into_owned(),
                    str::to_string,
                );
                return Followed::Refused {
                    code,
                    error: anyhow::anyhow!("{status}: {message}"),
                };
            }
            let mut parser = Parser::default();
            loop {
                let chunk = match tokio::time::timeout(SILENCE, r.chunk()).await {
                    Err(_) => {
                        return Followed::Cut(anyhow::anyhow!(
                            "nothing came for {} s",
                            SILENCE.as_secs()
                        ))
                    }
                    Ok(Err(e)) => return Followed::Cut(e.into()),
                    Ok(Ok(None)) => return Followed::Cut(anyhow::anyhow!("the node ended it")),
                    Ok(Ok(Some(chunk))) => chunk,
                };
                let events = match parser.feed(&chunk) {
                    Ok(events) => events,
                    Err(e) => return Followed::Cut(e.into()),
                };
                for event in events {
                    if let Err(e) = on(event) {
                        return Followed::Failed(e);
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::json::{WatchChange, WatchChanges};
    use crate::model::{Command, DesiredState};

    fn service(port: u16, revision: u64) -> ServiceView {
        let body = format!(
            r#"{{"protocol":"tcp","address":"192.0.2.10","port":{port},"scheduler":"rr",
                "servers":[{{"address":"198.51.100.11","port":8080,"weight":2}}]}}"#
        );
        let spec = crate::api::validate::parse_service_create(body.as_bytes()).expect("valid");
        let mut state = DesiredState::default();
        state.apply(&Command::CreateService(spec), revision);
        let cfg = state.services.values().next().expect("created");
        crate::api::view::service_view(cfg)
    }

    fn event(kind: &str, data: &impl serde::Serialize) -> Event {
        Event {
            kind: kind.into(),
            id: None,
            data: serde_json::to_string(data).expect("JSON"),
        }
    }

    #[test]
    fn text_shows_the_list_then_each_change_and_notes_where_to_resume() {
        let opts = ListOptions::default();
        let mut out = Vec::new();
        let mut since = None;
        let sync = WatchSync {
            revision: 5,
            services: vec![service(80, 4)],
        };
        show(
            &mut out,
            Output::Text,
            &opts,
            &event("sync", &sync),
            &mut since,
        )
        .unwrap();
        assert_eq!(since, Some(5));
        let changes = WatchChanges {
            revision: 7,
            changes: vec![
                WatchChange {
                    kind: "put".into(),
                    id: "tcp-192.0.2.10-81".into(),
                    service: Some(service(81, 7)),
                },
                WatchChange {
                    kind: "delete".into(),
                    id: "tcp-192.0.2.10-80".into(),
                    service: None,
                },
            ],
        };
        show(
            &mut out,
            Output::Text,
            &opts,
            &event("change", &changes),
            &mut since,
        )
        .unwrap();
        assert_eq!(since, Some(7));
        let progress = WatchProgress { revision: 9 };
        show(
            &mut out,
            Output::Text,
            &opts,
            &event("progress", &progress),
            &mut since,
        )
        .unwrap();
        assert_eq!(since, Some(9));
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
        assert_eq!(
            lines,
            [
                "# revision 5",
                "IP Virtual Server version 1.2.1 (size=4096)",
                "Prot LocalAddress:Port Scheduler Flags",
                "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn",
                "TCP  192.0.2.10:80 rr",
                "  -> 198.51.100.11:8080           Masq    2      0          0",
                "# revision 7: tcp-192.0.2.10-81",
                "TCP  192.0.2.10:81 rr",
                "  -> 198.51.100.11:8080           Masq    2      0          0",
                "# revision 7: tcp-192.0.2.10-80 deleted",
            ]
        );
        // A compacted history while connected: list again.
        let error = crate::api::ApiError::revision_compacted("?since", 9, 20).body();
        show(
            &mut Vec::new(),
            Output::Text,
            &opts,
            &event("error", &error),
            &mut since,
        )
        .unwrap();
        assert_eq!(since, None);
    }

    #[test]
    fn json_is_one_object_a_line_with_its_event() {
        let mut out = Vec::new();
        let mut since = None;
        let progress = WatchProgress { revision: 3 };
        let sync = WatchSync {
            revision: 3,
            services: vec![],
        };
        let opts = ListOptions::default();
        show(
            &mut out,
            Output::Json,
            &opts,
            &event("sync", &sync),
            &mut since,
        )
        .unwrap();
        show(
            &mut out,
            Output::Json,
            &opts,
            &event("progress", &progress),
            &mut since,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"event\":\"sync\",\"revision\":3,\"services\":[]}\n"
        );
    }
}
