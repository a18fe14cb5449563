//! ipvs-manager: a control-plane agent for Linux IPVS load balancers.
//!
//! Map of the crate:
//! - [`model`]: validated domain types (services, destinations, keys); no I/O.
//! - [`ipvs`]: the kernel layer — the IPVS generic-netlink codec, the
//!   [`ipvs::Kernel`] trait with its netlink and in-memory implementations,
//!   the ipvsadm text format (parse and print), and the virtual IPs bound on
//!   the node's dummy interface ([`ipvs::vip`]).
//! - [`cli`]: the command line (`ipvs-manager kernel list|save|restore`,
//!   and the commands that talk to a node's API).
//! - [`daemon`]: a cluster node — [`store`], [`raft`] and [`cluster`] (the
//!   replicated state, the Raft transport, membership, the cluster secret),
//!   [`node`] (the application layer: one function per API operation) under
//!   [`server`] (the HTTP adapter: routing, tokens, limits, one small
//!   handler per operation), [`api`] (validation, views, the JSON types,
//!   the route table), [`tls`], [`reconcile`] (kernel programming),
//!   [`health`] (node-local health checks, which lower weights in this
//!   node's kernel only), [`metrics`], [`sd_notify`] (systemd).
//! - [`errors`]: an error with its causes on one line, for every layer;
//!   [`files`]: small files written whole or not at all.
//!
//! Data flows one way: commands become [`ipvs::Change`]s, which only
//! [`ipvs`] turns into netlink messages.

pub mod announce;
pub mod api;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod errors;
pub mod files;
pub mod health;
pub mod ipvs;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod node;
pub mod raft;
pub mod readiness;
pub mod reconcile;
pub mod sd_notify;
pub mod server;
pub mod store;
pub mod tasks;
pub mod tls;
