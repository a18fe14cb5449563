//! The kernel table as the reconciler reads it, for the API and the
//! metrics: they never touch the kernel themselves. A reader asks for a
//! read ([`TableReader::read`]); the reconciler's loop reads the table
//! between passes (never during one, so a reader never sees a pass half
//! applied) and publishes it with the owned set it keeps in memory.
//! Requests that arrive before the loop gets to them share one read.
//!
//! A read is asked for, not served from the last pass: the counters move
//! with traffic, and a pass reads only the services it plans.

use crate::api::json::KernelTable;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// One read of the table: the request it answers, and the table or why
/// the kernel could not be read.
#[derive(Debug, Clone)]
pub struct Published {
    /// The highest request number this read answers.
    pub request: u64,
    pub table: Result<Arc<KernelTable>, String>,
}

/// Why no table could be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// The reconciler did not get to the read in time (a long pass, or it
    /// is not running: the node is still entering the cluster, or stopping).
    #[error("the reconciler did not read the kernel table within {0:?}")]
    NotRead(Duration),
    /// The kernel refused the read.
    #[error("could not read the kernel table: {0}")]
    Kernel(String),
}

/// The reconciler's end: the requests to serve and where to publish.
pub struct TablePublisher {
    requests: watch::Receiver<u64>,
    table: watch::Sender<Published>,
}

/// The API's end; clones share the channel.
#[derive(Clone)]
pub struct TableReader {
    requests: Arc<watch::Sender<u64>>,
    table: watch::Receiver<Published>,
}

/// A connected pair.
pub fn channel() -> (TablePublisher, TableReader) {
    let (requests_tx, requests_rx) = watch::channel(0);
    let (table_tx, table_rx) = watch::channel(Published {
        request: 0,
        table: Err("not read yet".into()),
    });
    (
        TablePublisher {
            requests: requests_rx,
            table: table_tx,
        },
        TableReader {
            requests: Arc::new(requests_tx),
            table: table_rx,
        },
    )
}

impl TableReader {
    /// The table read after this call, waiting at most `wait`.
    pub async fn read(&self, wait: Duration) -> Result<Arc<KernelTable>, TableError> {
        let mut wanted = 0;
        self.requests.send_modify(|n| {
            *n += 1;
            wanted = *n;
        });
        let mut rx = self.table.clone();
        let read = tokio::time::timeout(wait, rx.wait_for(|p| p.request >= wanted)).await;
        match read {
            Ok(Ok(published)) => published.table.clone().map_err(TableError::Kernel),
            _ => Err(TableError::NotRead(wait)),
        }
    }
}

impl TablePublisher {
    /// Waits for a request (cancel-safe, for the reconciler's select).
    pub async fn requested(&mut self) -> bool {
        self.requests.changed().await.is_ok()
    }

    /// The request a read started now answers; the ones made meanwhile ask
    /// for another.
    pub fn take_request(&mut self) -> u64 {
        *self.requests.borrow_and_update()
    }

    pub fn publish(&self, request: u64, table: Result<KernelTable, String>) {
        self.table.send_replace(Published {
            request,
            table: table.map(Arc::new),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_read_waits_for_a_table_read_after_it_asked() {
        let (mut publisher, reader) = channel();
        let table = KernelTable {
            info: crate::ipvs::Info {
                version: 0x010201,
                conn_tab_size: 4096,
            },
            services: Vec::new(),
            owned: Vec::new(),
            target: Default::default(),
        };
        // Published before the request: not an answer to it.
        publisher.publish(0, Ok(table.clone()));
        let asked = tokio::spawn({
            let reader = reader.clone();
            async move { reader.read(Duration::from_secs(5)).await }
        });
        assert!(publisher.requested().await);
        let request = publisher.take_request();
        assert_eq!(request, 1);
        publisher.publish(request, Ok(table.clone()));
        assert_eq!(*asked.await.unwrap().unwrap(), table);

        // Nobody serves the next request: the reader gives up.
        assert_eq!(
            reader.read(Duration::from_millis(10)).await,
            Err(TableError::NotRead(Duration::from_millis(10)))
        );
        assert_eq!(publisher.take_request(), 2);
        let asked = tokio::spawn(async move { reader.read(Duration::from_secs(5)).await });
        assert!(publisher.requested().await);
        let request = publisher.take_request();
        publisher.publish(request, Err("EPERM".into()));
        assert_eq!(
            asked.await.unwrap(),
            Err(TableError::Kernel("EPERM".into()))
        );
    }
}
