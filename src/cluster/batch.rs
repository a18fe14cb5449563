//! Coalesces the writes that arrive together: on the leader into one Raft
//! entry ([`Batcher`]), on a follower into one forwarding request to the
//! leader ([`Forwarder`]).
//!
//! openraft 0.9 appends each proposal on its own and waits for that append
//! to be flushed before it takes the next, so a leader proposing write by
//! write spends its time in flushes and thread hand-offs, and its rate is
//! bounded by the flush latency. Each queue here lets at most
//! [`MAX_IN_FLIGHT`] batches out at a time; the writes that arrive meanwhile
//! wait and then go together: as one [`Command::Batch`] (one append, one
//! flush, one replication round and one apply for all of them), or as one
//! request on the leader's Raft port. A lone write goes at once, as itself.
//!
//! A batch names each service at most once, so that a revision (the
//! entry's index) still names one version of a service: a second write to
//! a service waits for the next batch, which also keeps writes to one
//! service in arrival order. A `ReplaceAll` travels alone, and nothing
//! queued after it overtakes it.

use super::peer_auth::Peers;
use super::WRITE_PATH;
use crate::metrics::stages::{Stage, WriteStages};
use crate::model::{Command, CommandResult, ServiceKey};
use crate::raft::NodeInfo;
use crate::raft::{client_write, Raft, WriteOutcome, WriteResult};
use openraft::error::{Fatal, RaftError};
use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Batches sent and not yet answered at a time, per queue. Two keep the
/// Raft core busy (one appends while the other replicates) without
/// splitting a burst into many small batches.
const MAX_IN_FLIGHT: usize = 2;

/// Most writes in one batch: bounds the apply that holds the state machine.
pub const MAX_BATCH: usize = 128;

/// Most bytes of JSON in one batch, unless a single write is larger (a
/// write's body is at most 1 MiB, a whole configuration 16 MiB): a batch is
/// never bigger than the largest write alone, so an entry, and a request
/// carrying it to a peer, stays within what the Raft port accepts.
const MAX_BATCH_BYTES: usize = 1 << 20;

/// A write waiting to be proposed, and where its outcome goes.
struct Pending {
    cmd: Command,
    reply: oneshot::Sender<WriteResult>,
    queued: Instant,
}

/// Proposes writes on this node's Raft, batched. Cloning shares the queue.
#[derive(Clone)]
pub struct Batcher {
    queue: mpsc::UnboundedSender<Pending>,
}

impl Batcher {
    /// Starts the batching task; it ends when every handle is dropped.
    /// Each write's wait in the queue and each batch's proposal go to
    /// `stages`.
    pub fn start(raft: Raft, stages: WriteStages) -> Batcher {
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(
            rx,
            |queue: &mut VecDeque<Pending>| next_batch(queue, |p| &p.cmd),
            move |batch: Vec<Pending>| {
                let raft = raft.clone();
                let stages = stages.clone();
                for pending in &batch {
                    stages.observe(Stage::Queued, pending.queued.elapsed());
                }
                async move {
                    let started = Instant::now();
                    propose(&raft, batch).await;
                    stages.observe(Stage::Proposed, started.elapsed());
                }
            },
        ));
        Batcher { queue }
    }

    /// Proposes `cmd` and returns what the state machine did with it, or
    /// why Raft refused it (on a follower: `ForwardToLeader`).
    pub async fn propose(&self, cmd: Command) -> WriteResult {
        let (reply, outcome) = oneshot::channel();
        let pending = Pending {
            cmd,
            reply,
            queued: Instant::now(),
        };
        if self.queue.send(pending).is_err() {
            return Err(RaftError::Fatal(Fatal::Stopped));
        }
        outcome
            .await
            .unwrap_or(Err(RaftError::Fatal(Fatal::Stopped)))
    }
}

/// What became of a write forwarded to the leader.
#[derive(Debug, Clone)]
pub enum Forwarded {
    /// The leader answered (it may have refused: not the leader any more).
    Answered(WriteResult),
    /// The connection was refused: nothing was delivered (the leader is
    /// probably down and an election under way).
    Refused,
    /// Sent, but no answer came: the write may have committed.
    Lost(String),
}

/// A write waiting to be forwarded, its leader, and where the answer goes.
struct Forward {
    leader: NodeInfo,
    cmd: Command,
    reply: oneshot::Sender<Forwarded>,
}

/// Forwards writes to the leader's Raft port, batched. Cloning shares the
/// queue.
#[derive(Clone)]
pub struct Forwarder {
    queue: mpsc::UnboundedSender<Forward>,
}

impl Forwarder {
    /// Starts the forwarding task; it ends when every handle is dropped.
    /// `timeout` bounds each request to the leader; each request's time
    /// goes to `stages`.
    pub fn start(peers: Peers, timeout: Duration, stages: WriteStages) -> Forwarder {
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(rx, next_forward, move |batch| {
            let peers = peers.clone();
            let stages = stages.clone();
            async move {
                let started = Instant::now();
                forward(&peers, timeout, batch).await;
                stages.observe(Stage::Forwarded, started.elapsed());
            }
        }));
        Forwarder { queue }
    }

    /// Sends `cmd` to `leader` and returns its answer.
    pub async fn forward(&self, leader: &NodeInfo, cmd: Command) -> Forwarded {
        let (reply, answer) = oneshot::channel();
        let forward = Forward {
            leader: leader.clone(),
            cmd,
            reply,
        };
        if self.queue.send(forward).is_err() {
            return Forwarded::Refused;
        }
        answer.await.unwrap_or(Forwarded::Refused)
    }
}

/// The loop both queues share: wait for a write, wait for a free slot,
/// take a batch of everything queued by then, send it.
async fn run<T, F>(
    mut rx: mpsc::UnboundedReceiver<T>,
    take: fn(&mut VecDeque<T>) -> Vec<T>,
    send: impl Fn(Vec<T>) -> F,
) where
    F: Future<Output = ()> + Send + 'static,
{
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut queue = VecDeque::new();
    loop {
        if queue.is_empty() {
            match rx.recv().await {
                Some(item) => queue.push_back(item),
                None => return,
            }
        }
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        // Everything that arrived while the earlier batches were out.
        while let Ok(item) = rx.try_recv() {
            queue.push_back(item);
        }
        let sent = send(take(&mut queue));
        tokio::spawn(async move {
            sent.await;
            drop(permit);
        });
    }
}

/// Takes the next batch off the front of `queue`: in order, skipping
/// (and keeping, in order) writes to a service already in the batch, up to
/// [`MAX_BATCH`] writes and [`MAX_BATCH_BYTES`]; a `ReplaceAll` only alone,
/// and nothing past it.
fn next_batch<T>(queue: &mut VecDeque<T>, cmd: impl Fn(&T) -> &Command) -> Vec<T> {
    let mut batch = Vec::new();
    let mut bytes = 0;
    let mut named: HashSet<ServiceKey> = HashSet::new();
    let mut held = VecDeque::new();
    while let Some(item) = queue.pop_front() {
        let size = json_len(cmd(&item));
        if !fits(batch.len(), bytes, size) {
            held.push_back(item);
            break;
        }
        if cmd(&item).replaces_all() {
            if batch.is_empty() {
                batch.push(item);
            } else {
                held.push_back(item);
            }
            break;
        }
        let services = cmd(&item).services();
        if services.iter().any(|s| named.contains(s)) {
            held.push_back(item);
            continue;
        }
        named.extend(services);
        bytes += size;
        batch.push(item);
    }
    held.append(queue);
    *queue = held;
    batch
}

/// Takes the next forwarding batch: the writes for the leader the first
/// one goes to, in order (the leader's batcher orders writes to one
/// service), up to [`MAX_BATCH`] writes and [`MAX_BATCH_BYTES`].
fn next_forward(queue: &mut VecDeque<Forward>) -> Vec<Forward> {
    let Some(first) = queue.front() else {
        return Vec::new();
    };
    let leader = first.leader.raft_addr.clone();
    let (mut batch, mut bytes, mut rest) = (Vec::new(), 0, VecDeque::new());
    let mut full = false;
    for item in queue.drain(..) {
        if full || item.leader.raft_addr != leader {
            rest.push_back(item);
            continue;
        }
        let size = json_len(&item.cmd);
        if fits(batch.len(), bytes, size) {
            bytes += size;
            batch.push(item);
        } else {
            full = true;
            rest.push_back(item);
        }
    }
    *queue = rest;
    batch
}

/// Whether a write of `size` bytes joins a batch of `len` writes and
/// `bytes` bytes (the first always does).
fn fits(len: usize, bytes: usize, size: usize) -> bool {
    len == 0 || (len < MAX_BATCH && bytes + size <= MAX_BATCH_BYTES)
}

/// The size of `cmd` as JSON, as it is sent and stored.
fn json_len(cmd: &Command) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Plain data with string keys: serialising it cannot fail.
    let _ = serde_json::to_writer(&mut count, cmd);
    count.0
}

/// Proposes `batch` as one entry and answers each write with its own
/// result.
async fn propose(raft: &Raft, mut batch: Vec<Pending>) {
    if batch.len() == 1 {
        if let Some(Pending { cmd, reply, .. }) = batch.pop() {
            // The caller may have given up waiting; nothing to tell then.
            let _ = reply.send(client_write(raft, cmd).await);
        }
        return;
    }
    let (cmds, replies): (Vec<Command>, Vec<_>) =
        batch.into_iter().map(|p| (p.cmd, p.reply)).unzip();
    match client_write(raft, Command::Batch(cmds)).await {
        Ok(WriteOutcome {
            index,
            result: CommandResult::Batch(results),
        }) if results.len() == replies.len() => {
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(Ok(WriteOutcome { index, result }));
            }
        }
        Ok(other) => {
            // The state machine answers a batch with one result per write;
            // anything else is a bug, reported to every writer.
            tracing::error!(
                index = other.index,
                "a batch was answered with {:?}",
                other.result
            );
            for reply in replies {
                let _ = reply.send(Err(RaftError::Fatal(Fatal::Panicked)));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

/// Sends `batch` (one leader's) in one request and answers each write.
async fn forward(peers: &Peers, timeout: Duration, batch: Vec<Forward>) {
    let Some(leader) = batch.first().map(|f| f.leader.raft_addr.clone()) else {
        return;
    };
    let (cmds, replies): (Vec<Command>, Vec<_>) =
        batch.into_iter().map(|f| (f.cmd, f.reply)).unzip();
    let answers = match send_writes(peers, &leader, timeout, &cmds).await {
        Ok(results) if results.len() == replies.len() => {
            results.into_iter().map(Forwarded::Answered).collect()
        }
        Ok(results) => vec![
            Forwarded::Lost(format!(
                "the leader answered {} writes with {} results",
                replies.len(),
                results.len()
            ));
            replies.len()
        ],
        Err(answer) => vec![answer; replies.len()],
    };
    for (reply, answer) in replies.into_iter().zip(answers) {
        let _ = reply.send(answer);
    }
}

async fn send_writes(
    peers: &Peers,
    leader: &str,
    timeout: Duration,
    cmds: &[Command],
) -> Result<Vec<WriteResult>, Forwarded> {
    let lost = |e: reqwest::Error| Forwarded::Lost(crate::errors::chain(&e));
    let request = peers
        .post_json(&format!("http://{leader}{WRITE_PATH}"), &cmds)
        .map_err(|e| Forwarded::Lost(e.to_string()))?;
    let response = match request.timeout(timeout).send().await {
        Err(e) if e.is_connect() => return Err(Forwarded::Refused),
        sent => sent.and_then(|r| r.error_for_status()).map_err(lost)?,
    };
    response.json().await.map_err(lost)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Destination, Protocol, ServiceSpec, VirtualService};

    fn key(port: u16) -> ServiceKey {
        ServiceKey::Inet {
            protocol: Protocol::Tcp,
            addr: "192.0.2.1".parse().expect("address"),
            port,
        }
    }

    fn update(port: u16, weight: u32) -> Command {
        let mut server = Destination::new("198.51.100.1".parse().expect("address"), 8080);
        server.weight = weight;
        Command::UpdateServer {
            service: key(port),
            server,
            if_revision: None,
            health_check: None,
        }
    }

    fn replace_all() -> Command {
        Command::ReplaceAll(vec![ServiceSpec {
            service: VirtualService::new(key(9)),
            servers: Vec::new(),
            options: Default::default(),
            server_checks: Default::default(),
        }])
    }

    fn take(queue: &mut VecDeque<Command>) -> Vec<Command> {
        next_batch(queue, |c| c)
    }

    #[test]
    fn a_batch_names_each_service_once_and_keeps_per_service_order() {
        let mut queue: VecDeque<Command> = [
            update(1, 1),
            update(2, 1),
            update(1, 2),
            update(3, 1),
            update(1, 3),
        ]
        .into();
        assert_eq!(take(&mut queue), [update(1, 1), update(2, 1), update(3, 1)]);
        assert_eq!(take(&mut queue), [update(1, 2)]);
        assert_eq!(take(&mut queue), [update(1, 3)]);
        assert!(queue.is_empty());
    }

    #[test]
    fn replace_all_travels_alone_and_is_not_overtaken() {
        let mut queue: VecDeque<Command> =
            [update(1, 1), replace_all(), update(2, 1), update(3, 1)].into();
        assert_eq!(take(&mut queue), [update(1, 1)]);
        assert_eq!(take(&mut queue), [replace_all()]);
        assert_eq!(take(&mut queue), [update(2, 1), update(3, 1)]);
    }

    #[test]
    fn a_batch_holds_at_most_max_batch_writes() {
        let mut queue: VecDeque<Command> = (0..MAX_BATCH + 5)
            .map(|n| update(n as u16 + 1, 1))
            .collect();
        let first = take(&mut queue);
        assert_eq!(first.len(), MAX_BATCH);
        assert_eq!(queue.len(), 5);
    }

    #[test]
    fn a_batch_holds_at_most_a_mebibyte_unless_one_write_is_bigger() {
        let big = |port: u16, servers: usize| {
            Command::CreateService(ServiceSpec {
                service: VirtualService::new(key(port)),
                servers: (0..servers)
                    .map(|n| Destination::new(std::net::Ipv4Addr::from(n as u32).into(), 80))
                    .collect(),
                options: Default::default(),
                server_checks: Default::default(),
            })
        };
        // Over half a MiB each: two do not fit together.
        let half = big(1, 6000);
        assert!((MAX_BATCH_BYTES / 2..MAX_BATCH_BYTES).contains(&json_len(&half)));
        let huge = big(3, 20_000);
        assert!(json_len(&huge) > MAX_BATCH_BYTES);
        let mut queue: VecDeque<Command> =
            [half.clone(), big(2, 6000), huge.clone(), update(4, 1)].into();
        assert_eq!(take(&mut queue), [half]);
        assert_eq!(take(&mut queue), [big(2, 6000)]);
        assert_eq!(take(&mut queue), [huge]);
        assert_eq!(take(&mut queue), [update(4, 1)]);
    }

    #[test]
    fn a_forwarding_batch_goes_to_one_leader_in_order() {
        let to = |addr: &str, port: u16| Forward {
            leader: NodeInfo {
                name: addr.into(),
                raft_addr: addr.into(),
                api_addr: addr.into(),
            },
            cmd: update(port, 1),
            reply: oneshot::channel().0,
        };
        let mut queue: VecDeque<Forward> = [to("a", 1), to("b", 2), to("a", 3), to("b", 4)].into();
        let ports = |batch: Vec<Forward>| -> Vec<ServiceKey> {
            batch.iter().flat_map(|f| f.cmd.services()).collect()
        };
        assert_eq!(ports(next_forward(&mut queue)), [key(1), key(3)]);
        assert_eq!(ports(next_forward(&mut queue)), [key(2), key(4)]);
        assert!(next_forward(&mut queue).is_empty());
    }
}
