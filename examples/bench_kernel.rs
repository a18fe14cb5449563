//! Benchmark of the kernel layer against ipvsadm, run inside the real-kernel
//! rig (see README): restore N services × 10 destinations into an empty
//! table with `ipvs-manager kernel restore` and with `ipvsadm -R`, each into a
//! fresh network namespace (the kernel keeps deleted destinations in a trash
//! list that slows later adds, so a flushed namespace is never reused), then
//! dump the table with `ipvs-manager kernel save` and `ipvsadm -Sn`.
//!
//! Usage: bench_kernel [--binary PATH] [--sizes 1000,5000] [--dumps 3]

#[path = "support/bench.rs"]
mod bench;

use bench::{median, rules, Netns};

/// Loads and saves N services × 10 destinations with ipvsadm and with
/// `ipvs-manager kernel`, in fresh namespaces.
#[derive(clap::Parser)]
struct Args {
    #[command(flatten)]
    table: bench::Tables,
    /// Saves timed per size (the median is printed).
    #[arg(long, default_value_t = 3)]
    dumps: usize,
}

fn main() {
    let args = <Args as clap::Parser>::parse();
    println!("| services × 10 dests | ipvsadm -R | kernel restore | ratio | ipvsadm -Sn | kernel save | ratio |");
    println!("|---|---|---|---|---|---|---|");
    for &n in &args.table.sizes {
        let input = rules(n);
        let theirs = Netns::new("bench-ipvsadm");
        let (t_ipvsadm, _) = theirs.time(&["ipvsadm", "-R"], &input);
        drop(theirs);
        let ours = Netns::new("bench-ours");
        let (t_ours, _) = ours.time(&[&args.table.binary, "kernel", "restore"], &input);
        // Both dumps read the same table, the one our restore built.
        let (_, saved) = ours.time(&["ipvsadm", "-Sn"], "");
        let lines = saved.iter().filter(|&&b| b == b'\n').count();
        assert_eq!(lines, n * 11, "restore built the whole table");
        let dump_ipvsadm = median(
            (0..args.dumps)
                .map(|_| ours.time(&["ipvsadm", "-Sn"], "").0)
                .collect(),
        );
        let dump_ours = median(
            (0..args.dumps)
                .map(|_| ours.time(&[&args.table.binary, "kernel", "save"], "").0)
                .collect(),
        );
        println!(
            "| {n} | {:.2} s | {:.2} s | {:.2} | {:.2} s | {:.2} s | {:.2} |",
            t_ipvsadm.as_secs_f64(),
            t_ours.as_secs_f64(),
            t_ours.as_secs_f64() / t_ipvsadm.as_secs_f64(),
            dump_ipvsadm.as_secs_f64(),
            dump_ours.as_secs_f64(),
            dump_ours.as_secs_f64() / dump_ipvsadm.as_secs_f64(),
        );
    }
}
