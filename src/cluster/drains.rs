//! The leader's duty of ending drains: once a draining server's (or
//! service's) grace period is over, the leader commits its removal, so that
//! the desired state, the API and every node agree that it is gone. The
//! reconcilers do not wait for this: each deletes the kernel entry at the
//! deadline on its own clock.

use super::{leader, Writer};
use crate::model::{Command, CommandResult, DesiredState};
use crate::raft::node_id;
use crate::store::StateWatch;
use std::future::Future;
use std::time::Duration;

/// How often the leader looks for drains that are over.
const CHECK_EVERY: Duration = Duration::from_millis(500);

/// The removals due at `now_ms`.
pub fn due(desired: &DesiredState, now_ms: u64) -> Vec<Command> {
    let mut due = Vec::new();
    for (key, cfg) in &desired.services {
        if let Some(drain) = cfg.draining {
            if drain.is_over(now_ms) {
                due.push(Command::FinishDrain {
                    service: *key,
                    server: None,
                    since_ms: drain.since_ms,
                });
                continue;
            }
        }
        for (server, drain) in &cfg.draining_servers {
            if drain.is_over(now_ms) {
                due.push(Command::FinishDrain {
                    service: *key,
                    server: Some(*server),
                    since_ms: drain.since_ms,
                });
            }
        }
    }
    due
}

/// While this node leads, commits the removals that are due, until
/// `shutdown` completes.
pub async fn run(
    writer: Writer,
    me: String,
    state: StateWatch,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let id = node_id(&me);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(CHECK_EVERY) => {}
            _ = &mut shutdown => return,
        }
        if !matches!(leader(writer.raft()), Some((leader, _)) if leader == id) {
            continue;
        }
        let desired = state.current().desired;
        for cmd in due(&desired, crate::model::clock::unix_ms()) {
            match writer.write(cmd.clone()).await {
                Ok(outcome) if matches!(outcome.result, CommandResult::Applied { .. }) => {
                    tracing::info!(?cmd, "drain over: removed");
                }
                // Cancelled or finished meanwhile: nothing to do.
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %crate::errors::chain(&e), "could not end a drain; retrying");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Destination, Drain, Protocol, ServiceConfig, ServiceKey, VirtualService};

    #[test]
    fn only_drains_that_are_over_are_due() {
        let key = |port| ServiceKey::Inet {
            protocol: Protocol::Tcp,
            addr: "192.0.2.1".parse().unwrap(),
            port,
        };
        let d = Destination::new("10.0.0.1".parse().unwrap(), 80);
        let mut web = ServiceConfig::new(VirtualService::new(key(80)), [d], 1);
        web.draining_servers.insert(
            d.key(),
            Drain {
                since_ms: 1_000,
                grace: 10,
            },
        );
        let mut gone = ServiceConfig::new(VirtualService::new(key(81)), [d], 1);
        gone.draining = Some(Drain {
            since_ms: 1_000,
            grace: 5,
        });
        gone.draining_servers.insert(
            d.key(),
            Drain {
                since_ms: 1_000,
                grace: 100,
            },
        );
        let state: DesiredState = [web, gone].into_iter().collect();
        assert_eq!(due(&state, 5_000), vec![]);
        assert_eq!(
            due(&state, 6_000),
            vec![Command::FinishDrain {
                service: key(81),
                server: None,
                since_ms: 1_000
            }]
        );
        assert_eq!(due(&state, 11_000).len(), 2);
    }
}
