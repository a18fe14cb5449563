//! The IPVS connection-sync daemons (SYNC_INTERFACE): master and backup.

use super::settings::{SettingError, Sync};
use crate::config::KernelMode;

/// Checks the host has what the daemons need.
pub fn check(_cfg: &Sync, _kernel: KernelMode) -> Result<(), SettingError> {
    Ok(())
}
