//! Re-running a test binary inside the real-kernel VM (tests/vm/run.sh).
//!
//! The host kernel has no IPVS, so a test binary that needs one calls
//! [`rerun_in_vm`] from its `main` when [`in_vm`] is false: the VM boots
//! Debian's kernel, shares this machine's root filesystem read-only and runs
//! the same executable, with the same arguments, in the same directory.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// Set to `1` by tests/vm/run.sh for the command it runs in the VM.
pub const IN_VM_ENV: &str = "IPVS_MANAGER_IN_VM";

/// Set, inside the VM, to [`results_dir`]: the place to write files the host
/// must see (captured kernel bytes, benchmark output).
pub const RESULTS_ENV: &str = "IPVS_VM_RESULTS";

/// Extra host directories (`:`-separated) that the VM may write to.
pub const EXTRA_RW_ENV: &str = "IPVS_VM_RW";

/// Overrides run.sh's timeout (seconds) for the whole VM run.
pub const TIMEOUT_ENV: &str = "IPVS_VM_TIMEOUT";

/// Whether this process runs inside the test VM.
pub fn in_vm() -> bool {
    std::env::var_os(IN_VM_ENV).is_some_and(|v| v == "1")
}

/// The repository root, where tests/vm/ lives.
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A host directory the VM can write to: cargo's scratch directory for
/// integration tests (target/tmp), shared writable by [`rerun_in_vm`].
/// Everything else the guest sees is read-only, or a tmpfs the host never sees.
pub fn results_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
}

/// Runs this test executable again, with the same arguments, inside the VM
/// and returns its exit status. Output streams through as it comes.
pub fn rerun_in_vm() -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("cannot find the test executable to run in the VM: {e}");
            return ExitCode::FAILURE;
        }
    };
    let results = results_dir();
    if let Err(e) = std::fs::create_dir_all(&results) {
        eprintln!("cannot create {}: {e}", results.display());
        return ExitCode::FAILURE;
    }
    let run_sh = repo_root().join("tests/vm/run.sh");

    let mut cmd = Command::new("bash");
    cmd.arg(&run_sh).arg("--rw").arg(&results);
    if let Some(extra) = std::env::var_os(EXTRA_RW_ENV) {
        for dir in std::env::split_paths(&extra).filter(|d| !d.as_os_str().is_empty()) {
            cmd.arg("--rw").arg(dir);
        }
    }
    if let Some(secs) = std::env::var_os(TIMEOUT_ENV) {
        cmd.arg("--timeout").arg(secs);
    }
    cmd.arg("--")
        .arg(&exe)
        .args(std::env::args_os().skip(1).collect::<Vec<OsString>>())
        .env(RESULTS_ENV, &results);

    eprintln!(
        "{}: no IPVS in this kernel; re-running in the test VM ({})",
        exe.file_name()
            .map_or("test".into(), |n| n.to_string_lossy()),
        run_sh.display()
    );
    match cmd.status() {
        Ok(status) => match status.code() {
            Some(0) => ExitCode::SUCCESS,
            Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
            None => {
                eprintln!("{} was killed: {status}", run_sh.display());
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("cannot run {}: {e}", run_sh.display());
            ExitCode::FAILURE
        }
    }
}
