//! Tests against a real IPVS kernel.
//!
//! The host kernel has no IPVS, so on the host `main` boots the test VM
//! (tests/vm/run.sh, see tests/vm/README.md) and runs this binary again in
//! it; inside the VM it runs the trials with libtest-mimic. Arguments pass
//! through: `cargo test --test kernel -- smoke` filters as usual.
//!
//! Adding a trial: write `pub fn name() -> Result<(), Failed>` in a module
//! under tests/kernel/ (a panic fails it too), and list it in [`trials`].
//! Give each trial its own [`support::Netns`]: trials run in parallel, and a
//! namespace is a whole IPVS table of its own.

// Trials are tests: a failed unwrap is a failed trial with its message.
#![allow(clippy::unwrap_used)]

mod support;

#[path = "kernel/bgp.rs"]
mod bgp;
#[path = "kernel/capture.rs"]
mod capture;
#[path = "kernel/connections.rs"]
mod connections;
#[path = "kernel/health.rs"]
mod health;
#[path = "kernel/l2.rs"]
mod l2;
#[path = "kernel/limits.rs"]
mod limits;
#[path = "kernel/netlink.rs"]
mod netlink;
#[path = "kernel/oracle.rs"]
mod oracle;
#[path = "kernel/reconcile.rs"]
mod reconcile;
#[path = "kernel/requests.rs"]
mod requests;
#[path = "kernel/service.rs"]
mod service;
#[path = "kernel/smoke.rs"]
mod smoke;
#[path = "kernel/traffic.rs"]
mod traffic;
#[path = "kernel/vip.rs"]
mod vip;

use std::process::ExitCode;

use libtest_mimic::{Arguments, Trial};

/// `trials![lock: module::function, ...]`: one trial per function, named by
/// its path, run while holding `lock()`.
macro_rules! trials {
    ($lock:ident: $($module:ident :: $function:ident),* $(,)?) => {
        vec![$(Trial::test(
            concat!(stringify!($module), "::", stringify!($function)),
            || {
                let _guard = $lock();
                $module::$function()
            },
        )),*]
    };
}

/// Sync daemons have hung this kernel when started or stopped while other
/// namespaces were busy, and when a second one was started in the same VM
/// run: the one trial that starts a daemon runs alone; the others share.
/// The trials that run a three-node cluster run alone too: two clusters at
/// once overload the emulated CPUs, and their timings are what they test.
static TABLE_LOCK: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    TABLE_LOCK.read().unwrap_or_else(|e| e.into_inner())
}

fn alone() -> std::sync::RwLockWriteGuard<'static, ()> {
    TABLE_LOCK.write().unwrap_or_else(|e| e.into_inner())
}

fn trials() -> Vec<Trial> {
    let mut trials = trials![
        alone:
        netlink::sync_daemon,
        reconcile::three_nodes_program_their_kernels,
        health::dead_backends_leave_every_kernel,
        bgp::routes_follow_what_each_node_can_serve,
        l2::owner_moves_fenced_and_announced,
        // Three nodes each starting a master and a backup daemon: in one VM
        // run with netlink::sync_daemon and the trial above it ran without
        // a hang (`--skip l2::established` leaves it out).
        l2::established_connection_survives_the_move,
        l2::a_host_still_answering_keeps_the_address_untaken,
    ];
    trials.extend(trials![
        shared:
        smoke::ipvsadm_adds_a_service,
        smoke::namespaces_have_independent_tables,
        netlink::info_and_timeouts,
        netlink::every_kind_of_service_round_trips,
        netlink::edit_delete_zero_flush,
        netlink::errors_are_typed_and_per_change,
        netlink::memory_kernel_matches_real_kernel,
        netlink::large_batch_is_pipelined,
        netlink::missing_capability_is_reported,
        oracle::restore_matches_ipvsadm,
        oracle::save_round_trips_through_ipvsadm,
        oracle::list_matches_ipvsadm,
        oracle::bad_restore_changes_nothing,
        requests::ipvsadm_requests_match_our_codec,
        capture::replies_match_committed_captures,
        vip::sync_creates_binds_and_prunes,
        vip::existing_interface_is_reused,
        vip::refusals_are_reported,
        vip::works_from_spawn_blocking,
        traffic::nat_follows_weights_and_quiesces,
        traffic::director_moves,
        connections::lnc_matches_ipvsadm,
        limits::what_ipvsadm_and_the_kernel_accept,
        reconcile::node_refuses_without_cap_net_admin,
        service::unit_starts_signals_and_stops,
    ]);
    trials
}

fn main() -> ExitCode {
    let args = Arguments::from_args();
    // Listing needs no kernel: answer on the host, without booting the VM.
    if !support::in_vm() && !args.list {
        return support::rerun_in_vm();
    }
    libtest_mimic::run(&args, trials()).exit_code()
}
