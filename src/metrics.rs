//! Prometheus metrics (`GET /metrics`, encoded by the prometheus-client
//! crate in the format the scraper asks for: [`Format`]): the kernel's
//! counters per virtual service and real server, the reconciler, Raft, the
//! API, the announcement of service addresses, the process (`process_*`)
//! and the build.
//!
//! Events (API requests, reconcile passes) are counted as they happen in
//! [`Metrics`]; values that belong to a moment (kernel counters, Raft
//! state, the reconcile status, the process) are read at scrape time into a
//! registry built for that scrape, so a removed service's series disappear
//! with it.
//!
//! How much of it is per real server is the node's choice
//! ([`MetricsDetail`], `METRICS_DETAIL`): at 5,000 services × 10 servers
//! the real servers' series are nine in ten of the exposition, and a node
//! with `service` leaves them out and keeps their sums per service.

mod announce;
mod format;
mod process;
pub mod stages;

pub use format::Format;
pub use process::ProcessStats;

use crate::api::json::ReconcileStatus;
use crate::model::ids::{server_id, service_id};
use crate::model::{ServiceEntry, ServiceKey};
use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    operation: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChangeLabels {
    kind: String,
    result: String,
}

/// A virtual service's labels; those a kind of service does not have are
/// empty, and left out (see the `EncodeLabelSet` impl).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct ServiceLabels {
    service: String,
    protocol: String,
    address: String,
    port: String,
    fwmark: String,
}

/// Writes only the labels that have a value: an inet service has no fwmark
/// and a fwmark service no address or port, and a label with an empty value
/// is one Prometheus treats as absent, which would only clutter the series
/// (and queries like `{fwmark=""}`).
impl EncodeLabelSet for ServiceLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        let labels = [
            ("service", &self.service),
            ("protocol", &self.protocol),
            ("address", &self.address),
            ("port", &self.port),
            ("fwmark", &self.fwmark),
        ];
        for (name, value) in labels {
            if !value.is_empty() {
                EncodeLabel::encode(&(name, value.as_str()), encoder.encode_label())?;
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerLabels {
    service: String,
    server: String,
    address: String,
    port: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    node: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.5 ms to about 16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// What one reconcile pass did, for the counters.
pub struct PassMetrics<'a> {
    pub elapsed: Duration,
    /// Each change's kind (`add_service`, `edit_server`, ...) and whether
    /// the kernel accepted it.
    pub changes: &'a [(&'static str, bool)],
    pub resync: bool,
}

/// How much `/metrics` shows of real servers (`METRICS_DETAIL`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum MetricsDetail {
    /// Per service and per real server.
    #[default]
    Server,
    /// Per service only: the real servers' series are left out, their
    /// sums per service kept.
    Service,
}

/// Counters of events since the process started, and how much detail a
/// scrape shows.
pub struct Metrics {
    detail: MetricsDetail,
    requests: Family<RequestLabels, Counter>,
    request_seconds: HistogramFamily<OperationLabels>,
    passes: Counter,
    pass_seconds: Histogram,
    changes: Family<ChangeLabels, Counter>,
    drift: Counter,
    /// Reads of the kernel table the traffic sampler could not have.
    traffic_read_failures: Counter,
    probes: Counter,
    probe_failures: Family<ReasonLabels, Counter>,
    probe_seconds: Histogram,
    /// Each stage of a write, recorded by the batcher and the store.
    stages: stages::WriteStages,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            detail: MetricsDetail::default(),
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(latency_histogram),
            passes: Counter::default(),
            pass_seconds: latency_histogram(),
            changes: Family::default(),
            drift: Counter::default(),
            traffic_read_failures: Counter::default(),
            probes: Counter::default(),
            probe_failures: Family::default(),
            // 50 µs to about 1.6 s.
            probe_seconds: Histogram::new(exponential_buckets(0.00005, 2.0, 16)),
            stages: stages::WriteStages::default(),
        }
    }
}

/// The state of the node at scrape time.
pub struct Scrape<'a> {
    pub raft: &'a crate::raft::typ::RaftMetrics,
    pub reconcile: &'a ReconcileStatus,
    /// The kernel table, when this node programs one and it could be read.
    pub kernel: Option<&'a [ServiceEntry]>,
    /// Every server this node probes, and the services whose probed
    /// servers are all down.
    pub health: &'a [(crate::health::Key, crate::health::ProbedServer)],
    pub all_down: &'a [ServiceKey],
    /// The data directory's disk, and its free space when known.
    pub store: &'a crate::store::DiskStatus,
    pub free_bytes: Option<u64>,
    /// Why the node is not ready, by check (empty: ready).
    pub problems: &'a [crate::readiness::Problem],
    /// This process's CPU, memory and file descriptors.
    pub process: &'a ProcessStats,
    /// This node's contact with a quorum.
    pub quorum: &'a crate::cluster::quorum::QuorumState,
    /// What it announces (ANNOUNCE).
    pub announce: &'a crate::api::json::AnnounceView,
}

impl Metrics {
    /// Metrics whose scrapes show `detail`.
    pub fn new(detail: MetricsDetail) -> Metrics {
        Metrics {
            detail,
            ..Metrics::default()
        }
    }

    /// The write stage histograms, for the batcher and the store to record.
    pub fn write_stages(&self) -> stages::WriteStages {
        self.stages.clone()
    }

    /// Counts one API request.
    pub fn request(&self, operation: &str, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                operation: operation.to_string(),
                status: status.to_string(),
            })
            .inc();
        self.request_seconds
            .get_or_create(&OperationLabels {
                operation: operation.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts one reconcile pass.
    pub fn pass(&self, pass: &PassMetrics<'_>) {
        self.passes.inc();
        self.pass_seconds.observe(pass.elapsed.as_secs_f64());
        for (kind, ok) in pass.changes {
            self.changes
                .get_or_create(&ChangeLabels {
                    kind: kind.to_string(),
                    result: if *ok { "ok" } else { "error" }.to_string(),
                })
                .inc();
            if pass.resync && *ok {
                self.drift.inc();
            }
        }
    }

    /// Counts one kernel table read the traffic sampler could not have.
    pub fn traffic_read_failed(&self) {
        self.traffic_read_failures.inc();
    }

    /// The exposition for one scrape, in `format`.
    pub fn render(&self, scrape: &Scrape<'_>, format: Format) -> String {
        let mut r = Registry::default();
        r.register(
            "ipvs_manager_api_requests",
            "API requests by operation and HTTP status",
            self.requests.clone(),
        );
        r.register(
            "ipvs_manager_api_request_duration_seconds",
            "API request latency by operation",
            self.request_seconds.clone(),
        );
        self.stages.register(&mut r);
        r.register(
            "ipvs_manager_reconcile_passes",
            "Reconcile passes run",
            self.passes.clone(),
        );
        r.register(
            "ipvs_manager_reconcile_duration_seconds",
            "Duration of reconcile passes",
            self.pass_seconds.clone(),
        );
        r.register(
            "ipvs_manager_reconcile_changes",
            "Kernel changes made by the reconciler, by kind and result",
            self.changes.clone(),
        );
        r.register(
            "ipvs_manager_drift_repaired",
            "Kernel changes made by periodic resyncs (drift repaired)",
            self.drift.clone(),
        );
        r.register(
            "ipvs_manager_traffic_read_failures",
            "Kernel table reads the traffic sampler could not have",
            self.traffic_read_failures.clone(),
        );
        r.register(
            "ipvs_manager_health_checks",
            "Health probes run by this node",
            self.probes.clone(),
        );
        r.register(
            "ipvs_manager_health_check_failures",
            "Failed health probes by reason (timeout, refused, network, answer, protocol, config)",
            self.probe_failures.clone(),
        );
        r.register(
            "ipvs_manager_health_check_duration_seconds",
            "Duration of successful health probes",
            self.probe_seconds.clone(),
        );
        health_gauges(&mut r, scrape.health, scrape.all_down, self.detail);
        reconcile_gauges(&mut r, scrape.reconcile);
        raft_gauges(&mut r, scrape.raft);
        store_gauges(&mut r, scrape);
        announce::announce_gauges(&mut r, scrape.announce);
        if let Some(kernel) = scrape.kernel {
            kernel_series(&mut r, kernel, self.detail);
        }
        scrape.process.register(&mut r);
        build_info(&mut r);
        format.encode(&r)
    }
}

impl crate::health::ProbeObserver for Metrics {
    /// Counts one health probe.
    fn probed(&self, outcome: &crate::health::Outcome) {
        self.probes.inc();
        match outcome {
            Ok(latency) => self.probe_seconds.observe(latency.as_secs_f64()),
            Err(failure) => {
                self.probe_failures
                    .get_or_create(&ReasonLabels {
                        reason: failure.reason.as_str().to_string(),
                    })
                    .inc();
            }
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    revision: &'static str,
}

/// `ipvs_manager_build_info{version,revision} 1`: which build a node runs
/// (an info metric: OpenMetrics' `info` type, a gauge named `…_info` in the
/// Prometheus format).
fn build_info(r: &mut Registry) {
    r.register(
        "ipvs_manager_build",
        "The version and git revision of this build (revision: unknown when built outside a git checkout)",
        Info::new(BuildLabels {
            version: env!("CARGO_PKG_VERSION"),
            // Set by build.rs.
            revision: env!("IPVS_MANAGER_REVISION"),
        }),
    );
}

fn gauge(r: &mut Registry, name: &str, help: &str, value: i64) {
    let g: Gauge = Gauge::default();
    g.set(value);
    r.register(name, help, g);
}

fn health_gauges(
    r: &mut Registry,
    health: &[(crate::health::Key, crate::health::ProbedServer)],
    all_down: &[ServiceKey],
    detail: MetricsDetail,
) {
    // The per-service counts come at both levels, so that a dashboard
    // built on them works whatever METRICS_DETAIL a node has.
    let probed = Family::<ServiceLabels, Gauge>::default();
    let probed_up = Family::<ServiceLabels, Gauge>::default();
    let up = Family::<ServerLabels, Gauge>::default();
    let since = Family::<ServerLabels, Gauge>::default();
    for ((service, server), state) in health {
        let labels = service_labels(service);
        probed.get_or_create(&labels).inc();
        probed_up
            .get_or_create(&labels)
            .inc_by(i64::from(state.tracker.up));
        if detail == MetricsDetail::Service {
            continue;
        }
        let labels = ServerLabels {
            service: labels.service,
            server: server_id(server),
            address: server.addr.to_string(),
            port: server.port.to_string(),
        };
        up.get_or_create(&labels).set(i64::from(state.tracker.up));
        if let Some(ms) = state.tracker.since_ms {
            since.get_or_create(&labels).set((ms / 1000) as i64);
        }
    }
    r.register(
        "ipvs_manager_health_servers",
        "Real servers of the service this node probes",
        probed,
    );
    r.register(
        "ipvs_manager_health_servers_up",
        "Real servers of the service this node finds healthy",
        probed_up,
    );
    if detail == MetricsDetail::Server {
        r.register(
            "ipvs_manager_health_up",
            "1 while this node finds the real server healthy, 0 while down",
            up,
        );
        r.register(
            "ipvs_manager_health_last_change_timestamp_seconds",
            "Unix time of the real server's last change of health on this node",
            since,
        );
    }
    let down = Family::<ServiceLabels, Gauge>::default();
    for key in all_down {
        down.get_or_create(&service_labels(key)).set(1);
    }
    r.register(
        "ipvs_manager_health_all_down",
        "1 for a service whose probed servers are all down on this node (fail-open or fallback)",
        down,
    );
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    check: String,
}

fn store_gauges(r: &mut Registry, scrape: &Scrape<'_>) {
    let s = scrape.store;
    gauge(
        r,
        "ipvs_manager_store_writable",
        "1 while the disk under RAFT_VOL_DIR takes writes; 0 while they fail (the node then acknowledges nothing)",
        i64::from(s.failing.is_none()),
    );
    gauge(
        r,
        "ipvs_manager_store_failing_since_timestamp_seconds",
        "Unix time writes began to fail (0 while they succeed)",
        s.failing.as_ref().map_or(0, |f| (f.since_ms / 1000) as i64),
    );
    let failures: Counter = Counter::default();
    failures.inc_by(s.write_failures);
    r.register(
        "ipvs_manager_store_write_failures",
        "Writes or flushes of the store that failed",
        failures,
    );
    let recoveries: Counter = Counter::default();
    recoveries.inc_by(s.recoveries);
    r.register(
        "ipvs_manager_store_recoveries",
        "Times the store was reopened after the disk took writes again",
        recoveries,
    );
    gauge(
        r,
        "ipvs_manager_store_damaged",
        "1 once a damaged record was found while running (the node stops)",
        i64::from(s.damaged.is_some()),
    );
    if let Some(free) = scrape.free_bytes {
        gauge(
            r,
            "ipvs_manager_store_free_bytes",
            "Free bytes on the file system of RAFT_VOL_DIR",
            i64::try_from(free).unwrap_or(i64::MAX),
        );
    }
    gauge(
        r,
        "ipvs_manager_ready",
        "1 while the node can serve correctly (what /readyz answers)",
        i64::from(scrape.problems.is_empty()),
    );
    gauge(
        r,
        "ipvs_manager_quorum",
        "1 while a quorum acknowledged the leader within the last 2 s, as this node knows",
        i64::from(scrape.quorum.ok),
    );
    if let Some(age) = scrape.quorum.age {
        let g = Gauge::<f64, AtomicU64>::default();
        g.set(age.as_secs_f64());
        r.register(
            "ipvs_manager_quorum_contact_age_seconds",
            "Seconds since a quorum last acknowledged the leader, as this node knows",
            g,
        );
    }
    let not_ready = Family::<CheckLabels, Gauge>::default();
    for check in crate::readiness::Check::ALL {
        let failing = scrape.problems.iter().any(|p| p.check == check);
        not_ready
            .get_or_create(&CheckLabels {
                check: check.name().to_string(),
            })
            .set(i64::from(failing));
    }
    r.register(
        "ipvs_manager_not_ready",
        "1 for each check that makes the node not ready now",
        not_ready,
    );
}

fn reconcile_gauges(r: &mut Registry, s: &ReconcileStatus) {
    let last_success = s
        .last_success
        .as_deref()
        .and_then(|t| humantime::parse_rfc3339(t).ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() as i64);
    gauge(
        r,
        "ipvs_manager_reconcile_last_success_timestamp_seconds",
        "Unix time of the last reconcile pass that left nothing failed",
        last_success,
    );
    gauge(
        r,
        "ipvs_manager_reconcile_programmed_index",
        "Highest Raft index whose whole desired state is in the kernel",
        s.programmed_index as i64,
    );
    gauge(
        r,
        "ipvs_manager_reconcile_pending_changes",
        "Failed kernel changes awaiting a retry",
        s.pending as i64,
    );
    gauge(
        r,
        "ipvs_manager_foreign_services",
        "Kernel services that are not ipvs-manager's (left alone)",
        s.foreign.len() as i64,
    );
}

fn raft_gauges(r: &mut Registry, m: &crate::raft::typ::RaftMetrics) {
    gauge(
        r,
        "ipvs_manager_raft_term",
        "Current Raft term",
        m.current_term as i64,
    );
    gauge(
        r,
        "ipvs_manager_raft_is_leader",
        "1 on the leader, 0 elsewhere",
        i64::from(m.state == openraft::ServerState::Leader),
    );
    let leader: Family<PeerLabels, Gauge> = Family::default();
    let membership = m.membership_config.membership();
    if let Some(node) = m.current_leader.and_then(|id| membership.get_node(&id)) {
        leader
            .get_or_create(&PeerLabels {
                node: node.name.clone(),
            })
            .set(1);
    }
    r.register(
        "ipvs_manager_raft_leader",
        "The leader this node knows (1)",
        leader,
    );
    let last_log = m.last_log_index.unwrap_or(0);
    gauge(
        r,
        "ipvs_manager_raft_last_log_index",
        "Index of the last entry in this node's log",
        last_log as i64,
    );
    gauge(
        r,
        "ipvs_manager_raft_applied_index",
        "Index of the last entry this node applied",
        m.last_applied.map_or(0, |l| l.index) as i64,
    );
    // On the leader: how many entries each member is behind.
    let lag: Family<PeerLabels, Gauge> = Family::default();
    for (id, matched) in m.replication.iter().flatten() {
        if let Some(node) = membership.get_node(id) {
            let matched = matched.map_or(0, |l| l.index);
            lag.get_or_create(&PeerLabels {
                node: node.name.clone(),
            })
            .set(last_log.saturating_sub(matched) as i64);
        }
    }
    r.register(
        "ipvs_manager_raft_replication_lag",
        "Entries a member is behind the leader's log (leader only)",
        lag,
    );
}

fn service_labels(key: &ServiceKey) -> ServiceLabels {
    let (protocol, address, port, fwmark) = match key {
        ServiceKey::Inet {
            protocol,
            addr,
            port,
        } => (
            protocol.to_string(),
            addr.to_string(),
            port.to_string(),
            String::new(),
        ),
        ServiceKey::Fwmark { family, mark } => (
            family.to_string(),
            String::new(),
            String::new(),
            mark.to_string(),
        ),
    };
    ServiceLabels {
        service: service_id(key),
        protocol,
        address,
        port,
        fwmark,
    }
}

fn kernel_series(r: &mut Registry, kernel: &[ServiceEntry], detail: MetricsDetail) {
    let svc = Family::<ServiceLabels, Counter>::default;
    let (conns, inpkts, outpkts, inbytes, outbytes) = (svc(), svc(), svc(), svc(), svc());
    // The real servers summed per service, at both levels (see
    // health_gauges).
    let svc_gauges = Family::<ServiceLabels, Gauge>::default;
    let (servers, weighted, s_active, s_inactive) =
        (svc_gauges(), svc_gauges(), svc_gauges(), svc_gauges());
    let srv = || Family::<ServerLabels, Counter>::default();
    let (d_conns, d_inpkts, d_outpkts, d_inbytes, d_outbytes) = (srv(), srv(), srv(), srv(), srv());
    let gauges = || Family::<ServerLabels, Gauge>::default();
    let (active, inactive, weight) = (gauges(), gauges(), gauges());
    for entry in kernel {
        let labels = service_labels(&entry.service.key);
        let s = &entry.stats;
        conns.get_or_create(&labels).inc_by(s.conns);
        inpkts.get_or_create(&labels).inc_by(s.inpkts);
        outpkts.get_or_create(&labels).inc_by(s.outpkts);
        inbytes.get_or_create(&labels).inc_by(s.inbytes);
        outbytes.get_or_create(&labels).inc_by(s.outbytes);
        let dests = &entry.destinations;
        let count = |f: fn(&crate::model::DestEntry) -> u32| {
            dests.iter().map(|d| i64::from(f(d))).sum::<i64>()
        };
        servers.get_or_create(&labels).set(dests.len() as i64);
        weighted
            .get_or_create(&labels)
            .set(count(|d| u32::from(d.dest.weight > 0)));
        s_active
            .get_or_create(&labels)
            .set(count(|d| d.active_conns));
        s_inactive
            .get_or_create(&labels)
            .set(count(|d| d.inactive_conns));
        if detail == MetricsDetail::Service {
            continue;
        }
        for d in dests {
            let labels = ServerLabels {
                service: labels.service.clone(),
                server: server_id(&d.dest.key()),
                address: d.dest.addr.to_string(),
                port: d.dest.port.to_string(),
            };
            let s = &d.stats;
            d_conns.get_or_create(&labels).inc_by(s.conns);
            d_inpkts.get_or_create(&labels).inc_by(s.inpkts);
            d_outpkts.get_or_create(&labels).inc_by(s.outpkts);
            d_inbytes.get_or_create(&labels).inc_by(s.inbytes);
            d_outbytes.get_or_create(&labels).inc_by(s.outbytes);
            active.get_or_create(&labels).set(i64::from(d.active_conns));
            inactive
                .get_or_create(&labels)
                .set(i64::from(d.inactive_conns));
            weight.get_or_create(&labels).set(i64::from(d.dest.weight));
        }
    }
    r.register(
        "ipvs_service_connections",
        "Connections scheduled to the virtual service (kernel counter)",
        conns,
    );
    r.register(
        "ipvs_service_packets_in",
        "Packets in (kernel counter)",
        inpkts,
    );
    r.register(
        "ipvs_service_packets_out",
        "Packets out (kernel counter)",
        outpkts,
    );
    r.register(
        "ipvs_service_bytes_in",
        "Bytes in (kernel counter)",
        inbytes,
    );
    r.register(
        "ipvs_service_bytes_out",
        "Bytes out (kernel counter)",
        outbytes,
    );
    r.register(
        "ipvs_service_servers",
        "Real servers of the virtual service in the kernel table",
        servers,
    );
    r.register(
        "ipvs_service_servers_weighted",
        "Real servers of the virtual service with a weight above 0 (taking new connections)",
        weighted,
    );
    r.register(
        "ipvs_service_active_connections",
        "Active connections to the virtual service's real servers",
        s_active,
    );
    r.register(
        "ipvs_service_inactive_connections",
        "Inactive connections to the virtual service's real servers",
        s_inactive,
    );
    if detail == MetricsDetail::Service {
        return;
    }
    r.register(
        "ipvs_server_connections",
        "Connections scheduled to the real server (kernel counter)",
        d_conns,
    );
    r.register(
        "ipvs_server_packets_in",
        "Packets in (kernel counter)",
        d_inpkts,
    );
    r.register(
        "ipvs_server_packets_out",
        "Packets out (kernel counter)",
        d_outpkts,
    );
    r.register(
        "ipvs_server_bytes_in",
        "Bytes in (kernel counter)",
        d_inbytes,
    );
    r.register(
        "ipvs_server_bytes_out",
        "Bytes out (kernel counter)",
        d_outbytes,
    );
    r.register(
        "ipvs_server_active_connections",
        "Active connections to the real server",
        active,
    );
    r.register(
        "ipvs_server_inactive_connections",
        "Inactive connections to the real server",
        inactive,
    );
    r.register(
        "ipvs_server_weight",
        "Weight as programmed in the kernel",
        weight,
    );
}

#[cfg(test)]
mod tests;
