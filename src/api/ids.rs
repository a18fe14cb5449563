//! Resource ids in request paths: [`crate::model::ids`] derives and parses
//! them (`tcp-192.0.2.10-80`, `198.51.100.11-8080`); here an id that names
//! nothing is a 404, as a URL naming no resource is.

use super::error::{ApiError, ErrorCode};
use crate::model::ids::{dest_key, service_key};
use crate::model::{DestKey, ServiceKey};

pub use crate::model::ids::{server_id, service_id};

/// The service an id names; a 404 error if it names none.
pub fn parse_service_id(id: &str) -> Result<ServiceKey, ApiError> {
    service_key(id).ok_or_else(|| {
        ApiError::new(
            ErrorCode::NotFound,
            format!(
                "no service has the id {id:?}: service ids look like tcp-192.0.2.10-80, \
                 udp-2001_db8__10-53 or fwmark-ipv4-5"
            ),
        )
    })
}

/// The real server an id names; a 404 error if it names none.
pub fn parse_server_id(id: &str) -> Result<DestKey, ApiError> {
    dest_key(id).ok_or_else(|| {
        ApiError::new(
            ErrorCode::NotFound,
            format!(
                "no server has the id {id:?}: server ids look like 198.51.100.11-8080 or \
                 2001_db8__11-8080"
            ),
        )
    })
}
