//! `ipvs-manager kernel …`: ipvsadm-compatible list, save and restore against
//! the kernel of the current network namespace.

use super::cluster::Output;
use crate::ipvs::memory::MemoryKernel;
use crate::ipvs::netlink::NetlinkKernel;
use crate::ipvs::text::{self, ListOptions};
use crate::ipvs::{Change, Kernel};
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use std::io::{Read, Write};

#[derive(Debug, Subcommand)]
pub enum KernelCommand {
    /// Print the table exactly as `ipvsadm -Ln` does.
    List(ListArgs),
    /// Print the table in `ipvsadm -Sn` syntax, keeping thresholds and tunnel
    /// options that ipvsadm's own save drops.
    Save,
    /// Read `ipvsadm -R` syntax on stdin and apply it as one batch. Every line
    /// is parsed and checked against the current table first: on any error
    /// nothing is applied.
    Restore(RestoreArgs),
}

/// The columns of an `ipvsadm -Ln` listing.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Counters: connections, packets and bytes (`ipvsadm --stats`).
    #[arg(long)]
    stats: bool,
    /// Rates per second (`ipvsadm --rate`).
    #[arg(long)]
    rate: bool,
    /// Upper and lower connection thresholds (`ipvsadm --thresholds`).
    #[arg(long)]
    thresholds: bool,
    /// Persistent connection counts (`ipvsadm --persistent-conn`).
    #[arg(long)]
    persistent_conn: bool,
    /// Tunnel type, port and checksum options (`ipvsadm --tun-info`).
    #[arg(long)]
    tun_info: bool,
    /// Exact numbers instead of K/M/G abbreviations (`ipvsadm --exact`).
    #[arg(long)]
    exact: bool,
    /// `text` (ipvsadm's layout) or `json` (every counter, for scripts).
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

impl ListArgs {
    pub fn options(&self) -> ListOptions {
        ListOptions {
            stats: self.stats,
            rate: self.rate,
            thresholds: self.thresholds,
            persistent_conn: self.persistent_conn,
            tun_info: self.tun_info,
            exact: self.exact,
        }
    }
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Parse and validate only; print what would be applied.
    #[arg(long)]
    dry_run: bool,
}

pub fn run(cmd: KernelCommand) -> anyhow::Result<()> {
    let mut kernel = NetlinkKernel::connect()?;
    let mut out = std::io::stdout().lock();
    match cmd {
        KernelCommand::List(args) => {
            let info = kernel.info()?;
            let services = kernel.services()?;
            if args.output == Output::Json {
                let table = serde_json::json!({"info": info, "services": services});
                writeln!(out, "{table}")?;
            } else {
                out.write_all(text::list(&info, &services, &args.options()).as_bytes())?;
            }
        }
        KernelCommand::Save => {
            out.write_all(text::save(&kernel.services()?).as_bytes())?;
        }
        KernelCommand::Restore(args) => {
            let mut input = String::new();
            std::io::stdin()
                .read_to_string(&mut input)
                .context("failed to read rules from stdin")?;
            let applied = restore(&mut kernel, &input, args.dry_run)?;
            if args.dry_run {
                for change in &applied {
                    writeln!(out, "{change}")?;
                }
            }
        }
    }
    Ok(())
}

/// Parses `input`, checks every change against a copy of the current table
/// (the in-memory kernel enforces the kernel's rules), then applies the batch.
/// Returns the changes (applied, or that would be applied with `dry_run`).
pub fn restore(kernel: &mut dyn Kernel, input: &str, dry_run: bool) -> anyhow::Result<Vec<Change>> {
    let lines = text::parse_restore(input)?;
    let mut check = MemoryKernel::from_entries(kernel.services()?);
    for (line, change) in &lines {
        if let Err(e) = check.apply(change) {
            bail!("line {line}: {}", crate::errors::chain(&e));
        }
    }
    let changes: Vec<Change> = lines.into_iter().map(|(_, c)| c).collect();
    if dry_run {
        return Ok(changes);
    }
    let failures: Vec<String> = kernel
        .apply_batch(&changes)
        .into_iter()
        .filter_map(Result::err)
        .map(|e| crate::errors::chain(&e))
        .collect();
    if !failures.is_empty() {
        bail!(
            "{} of {} changes failed:\n{}",
            failures.len(),
            changes.len(),
            failures.join("\n")
        );
    }
    Ok(changes)
}
