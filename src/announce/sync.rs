//! The IPVS connection-sync daemons (SYNC_INTERFACE): master and backup.
//!
//! Every node runs both: the master multicasts the connections of this
//! node's IPVS table on SYNC_INTERFACE, the backup takes the other nodes'
//! into it. So when a service address moves (l2) or the routers' ECMP
//! hash moves a flow (bgp), the node that gets the packets already knows
//! the connection and sends them to the same real server.
//!
//! The kernel keeps the daemons until they are stopped (or the namespace
//! goes): a node restarting finds its own still running and keeps them.
//! They are left running at shutdown too, as the IPVS table is, so that
//! connections keep being synchronised while the agent is down.

use super::settings::{SettingError, Sync};
use crate::api::json::SyncView;
use crate::config::KernelMode;
use crate::ipvs::codec::{DaemonAttr, IP_VS_STATE_BACKUP, IP_VS_STATE_MASTER};
use std::net::IpAddr;

/// Checks the host has what the daemons need: the interface.
pub fn check(cfg: &Sync, kernel: KernelMode) -> Result<(), SettingError> {
    if kernel == KernelMode::On && !super::l2::link::exists(&cfg.interface) {
        return Err(SettingError {
            variable: "SYNC_INTERFACE",
            problem: format!(
                "no interface {} on this host: name the interface the nodes share for \
                 connection sync (see `ip link`), or leave SYNC_INTERFACE unset",
                cfg.interface
            ),
        });
    }
    Ok(())
}

/// The attributes that start the daemon in `state` as `cfg` says.
pub fn daemon_attrs(cfg: &Sync, state: u32) -> Vec<DaemonAttr> {
    let mut attrs = vec![
        DaemonAttr::State(state),
        DaemonAttr::McastIfn(cfg.interface.clone()),
        DaemonAttr::SyncId(u32::from(cfg.sync_id)),
        DaemonAttr::McastPort(cfg.port),
        DaemonAttr::McastTtl(cfg.ttl),
    ];
    attrs.push(match cfg.group {
        IpAddr::V4(g) => DaemonAttr::McastGroup(g.octets()),
        IpAddr::V6(g) => DaemonAttr::McastGroup6(g.octets()),
    });
    attrs
}

/// Whether a running daemon (as the kernel lists it) is the one `cfg`
/// wants in `state`.
fn matches(running: &[DaemonAttr], cfg: &Sync, state: u32) -> bool {
    let has = |a: &DaemonAttr| running.contains(a);
    has(&DaemonAttr::State(state))
        && has(&DaemonAttr::McastIfn(cfg.interface.clone()))
        && has(&DaemonAttr::SyncId(u32::from(cfg.sync_id)))
}

/// The view of the daemons `running` (the kernel's list) for `cfg`.
pub fn view(cfg: &Sync, running: &[Vec<DaemonAttr>], problem: Option<String>) -> SyncView {
    SyncView {
        interface: cfg.interface.clone(),
        sync_id: cfg.sync_id,
        group: cfg.group,
        port: cfg.port,
        ttl: cfg.ttl,
        master: running.iter().any(|d| matches(d, cfg, IP_VS_STATE_MASTER)),
        backup: running.iter().any(|d| matches(d, cfg, IP_VS_STATE_BACKUP)),
        problem,
    }
}

/// Starts whichever of the two daemons is not running as `cfg` wants (one
/// running with other settings is stopped first), and reads them back.
/// Blocking: netlink.
pub fn ensure(cfg: &Sync) -> SyncView {
    let mut kernel = match crate::ipvs::netlink::NetlinkKernel::connect() {
        Ok(k) => k,
        Err(e) => return view(cfg, &[], Some(format!("cannot reach IPVS: {e}"))),
    };
    let mut problems = Vec::new();
    let running = kernel.daemons().unwrap_or_default();
    for state in [IP_VS_STATE_MASTER, IP_VS_STATE_BACKUP] {
        let name = if state == IP_VS_STATE_MASTER {
            "master"
        } else {
            "backup"
        };
        if running.iter().any(|d| matches(d, cfg, state)) {
            continue;
        }
        if running
            .iter()
            .any(|d| d.contains(&DaemonAttr::State(state)))
        {
            if let Err(e) = kernel.stop_daemon(state) {
                problems.push(format!(
                    "cannot stop the {name} running with other settings: {e}"
                ));
                continue;
            }
        }
        if let Err(e) = kernel.start_daemon(daemon_attrs(cfg, state)) {
            problems.push(format!("cannot start the {name}: {e}"));
        }
    }
    match kernel.daemons() {
        Ok(now) => view(
            cfg,
            &now,
            (!problems.is_empty()).then(|| problems.join("; ")),
        ),
        Err(e) => {
            problems.push(format!("cannot list the daemons: {e}"));
            view(cfg, &[], Some(problems.join("; ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Sync {
        Sync {
            interface: "eth1".into(),
            sync_id: 7,
            group: "224.0.0.81".parse().unwrap(),
            port: 8848,
            ttl: 1,
        }
    }

    #[test]
    fn both_daemons_are_started_with_every_setting_and_read_back() {
        let master = daemon_attrs(&cfg(), IP_VS_STATE_MASTER);
        assert!(master.contains(&DaemonAttr::McastGroup([224, 0, 0, 81])));
        assert!(master.contains(&DaemonAttr::McastPort(8848)));
        assert!(master.contains(&DaemonAttr::SyncId(7)));
        let backup = daemon_attrs(&cfg(), IP_VS_STATE_BACKUP);
        let v = view(&cfg(), std::slice::from_ref(&master), None);
        assert!(v.master && !v.backup);
        let v = view(&cfg(), &[master, backup], None);
        assert!(v.master && v.backup);
        // Another sync id is not ours.
        let other = Sync {
            sync_id: 8,
            ..cfg()
        };
        let v = view(&other, &[daemon_attrs(&cfg(), IP_VS_STATE_MASTER)], None);
        assert!(!v.master);
    }
}
