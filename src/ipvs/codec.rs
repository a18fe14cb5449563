//! IPVS generic netlink codec (placeholder).
#[derive(Debug, thiserror::Error)]
#[error("decode error")]
pub struct DecodeError;
