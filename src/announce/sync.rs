//! The IPVS connection-sync daemons (SYNC_INTERFACE): master and backup.
