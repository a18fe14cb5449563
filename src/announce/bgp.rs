//! `ANNOUNCE=bgp`: host routes for the addresses this node can serve, in a
//! kernel table that BIRD 2 exports to the routers.

use super::settings::{Bgp, SettingError};
use super::Context;
use crate::config::KernelMode;
use std::future::Future;

/// Checks the host has what the mode needs.
pub fn check(_cfg: &Bgp, _kernel: KernelMode) -> Result<(), SettingError> {
    Ok(())
}

/// Announces until `stop`.
pub async fn run(ctx: Context, stop: impl Future<Output = ()>) {
    super::report_only(ctx.servable, ctx.status, stop).await
}
