//! The ipvsadm text format, as ipvsadm 1.31 reads and writes it: commands
//! (`ipvsadm -R` input, or one command line) parsed into [`Change`]s, and
//! tables of [`ServiceEntry`]s printed as `ipvsadm -Ln` and `ipvsadm -Sn` do,
//! byte for byte. Pure code: no I/O, no name resolution (always `-n`).
//!
//! - [`parse_restore`] / [`parse_command`]: one parser, for restore input and
//!   for argv words (`parse`, with popt's word splitting in `popt`);
//!   [`parse_invocation`] reads every other ipvsadm command too (`-L`, `-S`,
//!   `-R`, `-h`…), for a command line.
//! - [`list_connections`]: `ipvsadm -Lnc` from the kernel's connection table
//!   (`conn`).
//! - [`list`] / [`save`]: the printers (`print`), sorting as ipvsadm does
//!   (`order`).
//!
//! `parse_restore(&save(table))` rebuilds `table`'s configuration: [`save`]
//! keeps what ipvsadm's own save drops (thresholds, for one).
//!
//! [`Change`]: crate::ipvs::Change
//! [`ServiceEntry`]: crate::model::ServiceEntry

mod conn;
mod order;
mod parse;
mod popt;
mod print;
#[cfg(test)]
mod tests;

pub use conn::list_connections;
pub use parse::{parse_command, parse_invocation, parse_restore, Invocation, ListRequest};
pub use print::{list, list_with_notes, rule_name, save, ListOptions, Note};

/// What is wrong with one command: names the option and the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CommandError {
    pub message: String,
}

/// A line of restore input that is not a valid command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    pub message: String,
}
