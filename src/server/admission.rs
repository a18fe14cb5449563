//! Admission: how much of the API a node answers at once. A request over a
//! limit is answered 503 `overloaded` at once, before its body is read: a
//! flood costs a refusal each, never memory or a queue.

use crate::api::{self, ApiError, Operation};
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The node's request limits (`API_MAX_REQUESTS`, and large bodies).
pub struct Limits {
    requests: Arc<Semaphore>,
    /// Requests with bodies above [`api::MAX_BODY_BYTES`] (a whole
    /// configuration, up to 16 MiB each).
    large: Arc<Semaphore>,
    /// Open watches: each holds its slot for as long as it streams, apart
    /// from the requests' (a browser tab keeps one open for hours).
    watches: Arc<Semaphore>,
}

/// Large bodies read at once: with the default 256 requests of 1 MiB, a
/// node buffers at most about 300 MiB of bodies.
const MAX_LARGE_BODIES: usize = 2;

impl Limits {
    pub fn new(max_requests: usize) -> Limits {
        Limits {
            requests: Arc::new(Semaphore::new(max_requests)),
            large: Arc::new(Semaphore::new(MAX_LARGE_BODIES)),
            watches: Arc::new(Semaphore::new(max_requests)),
        }
    }

    /// Permits for one request of `route`, held until it is answered, or
    /// the 503 to answer.
    pub fn admit(&self, route: &api::Route) -> Result<Vec<OwnedSemaphorePermit>, ApiError> {
        // The liveness probe always answers: a busy node is alive.
        if route.operation == Operation::Health {
            return Ok(Vec::new());
        }
        let mut permits = vec![self
            .requests
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::overloaded("requests", 1))?];
        if route.max_body > api::MAX_BODY_BYTES {
            permits.push(
                self.large
                    .clone()
                    .try_acquire_owned()
                    .map_err(|_| ApiError::overloaded("large bodies", 2))?,
            );
        }
        Ok(permits)
    }

    /// A slot for one watch, held until its stream ends, or the 503 to
    /// answer: a node streams to at most API_MAX_REQUESTS watchers.
    pub fn admit_watch(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.watches
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::overloaded("watches", 1))
    }
}
