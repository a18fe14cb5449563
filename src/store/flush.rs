//! The one thread that makes writes durable.
//!
//! sled 0.34's `flush_async` can deadlock when called concurrently, and the
//! blocking `flush` must not run on an async worker thread. So every flush
//! goes through a dedicated thread: it takes every request queued so far,
//! calls `Db::flush` once, then answers them all in arrival order. A flush
//! persists every write made before it started, so a request is answered
//! only after a flush that began after the request was queued — hence after
//! the writes its caller made before queuing it. Concurrent appends share
//! one flush (group commit), and completions keep the order of the writes.

use super::StoreError;
use crate::raft::TypeConfig;
use openraft::storage::LogFlushed;
use std::io;
use std::sync::mpsc;
use std::thread::JoinHandle;
use tokio::sync::oneshot;

enum Request {
    /// Appended log entries: tell openraft they are persisted.
    Log(LogFlushed<TypeConfig>),
    /// Anything else (vote, truncation, snapshot): wake the caller.
    Wait(oneshot::Sender<Result<(), io::Error>>),
}

/// Handle to the flush thread; the thread ends, and is joined, when the last
/// handle is dropped (it holds a reference to the database, whose directory
/// lock is released only then).
pub(crate) struct Flusher {
    tx: Option<mpsc::Sender<Request>>,
    thread: Option<JoinHandle<()>>,
}

impl Flusher {
    pub(crate) fn start(db: sled::Db) -> Result<Flusher, StoreError> {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("store-flush".into())
            .spawn(move || run(&db, &rx))
            .map_err(StoreError::SpawnFlusher)?;
        Ok(Flusher {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Reports `callback` to openraft once everything written so far is on disk.
    pub(crate) fn log_flushed(&self, callback: LogFlushed<TypeConfig>) -> Result<(), StoreError> {
        self.send(Request::Log(callback))
    }

    /// Returns once everything written so far is on disk.
    pub(crate) async fn flush(&self, what: &str) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(Request::Wait(tx))?;
        let result = rx.await.unwrap_or_else(|_| Err(gone()));
        result.map_err(|source| StoreError::Flush {
            what: what.into(),
            source,
        })
    }

    fn send(&self, request: Request) -> Result<(), StoreError> {
        self.tx
            .as_ref()
            .and_then(|tx| tx.send(request).ok())
            .ok_or_else(|| StoreError::Flush {
                what: "writes".into(),
                source: gone(),
            })
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        // Closing the channel ends the thread after it answers what is queued.
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the store's flush thread panicked");
            }
        }
    }
}

fn gone() -> io::Error {
    io::Error::other("the store's flush thread has stopped")
}

fn run(db: &sled::Db, rx: &mpsc::Receiver<Request>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        let result = db.flush();
        for request in batch {
            let result = match &result {
                Ok(_) => Ok(()),
                Err(e) => Err(io_error(e)),
            };
            match request {
                Request::Log(callback) => callback.log_io_completed(result),
                Request::Wait(tx) => {
                    // The waiter may have given up; nothing to tell then.
                    let _ = tx.send(result);
                }
            }
        }
    }
}

fn io_error(e: &sled::Error) -> io::Error {
    match e {
        sled::Error::Io(e) => io::Error::new(e.kind(), e.to_string()),
        other => io::Error::other(other.to_string()),
    }
}
