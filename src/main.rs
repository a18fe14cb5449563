//! The `ipvs-manager` binary: parses the command line and reports errors with
//! their whole chain of causes.

/// mimalloc instead of glibc's malloc: a node allocates and frees small
/// buffers at a high rate (HTTP, JSON, sled), and under write load glibc's
/// malloc took a tenth of the CPU (measured with bench_cluster and perf).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::process::ExitCode;

fn main() -> ExitCode {
    if let Err(e) = ipvs_manager::logging::init() {
        eprintln!("ipvs-manager: {e}");
        return ExitCode::from(2);
    }
    // sled panics on some damaged files; the store turns those panics into
    // errors that name the file, so the default report ("thread 'main'
    // panicked at ...") would only look like a crash of ours.
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !ipvs_manager::store::panics_are_reported_as_errors() {
            report(info);
        }
    }));
    match ipvs_manager::cli::main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ipvs-manager: {e:#}");
            // A write that may have happened is no failure: a status of
            // its own, so that scripts check before they retry.
            if e.downcast_ref::<ipvs_manager::cli::cluster::OutcomeUnknown>()
                .is_some()
            {
                ExitCode::from(ipvs_manager::cli::cluster::EXIT_OUTCOME_UNKNOWN)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
