//! `ANNOUNCE=l2`: one owner per address on a flat network, chosen through
//! Raft and fenced by leases.

use super::settings::{SettingError, L2};
use super::Context;
use crate::config::KernelMode;
use std::future::Future;

/// Checks the host has what the mode needs.
pub fn check(_cfg: &L2, _kernel: KernelMode) -> Result<(), SettingError> {
    Ok(())
}

/// Announces until `stop`.
pub async fn run(ctx: Context, stop: impl Future<Output = ()>) {
    super::report_only(ctx.servable, ctx.status, stop).await
}
