//! The node's essential tasks (reconciler, health monitor, drain janitor,
//! listeners, ...), watched: one that ends before the node stops — it
//! panicked, or returned on an error it could not get past — ends the node,
//! so that the service manager restarts it, instead of a process that looks
//! alive, ready and fed to the watchdog while it no longer does its job.

use futures_util::future::select_all;
use std::future::Future;
use tokio::task::JoinHandle;

/// Tasks that must run as long as the node does.
#[derive(Default)]
pub struct Essential {
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

/// An essential task that ended while the node was not stopping.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the {task} stopped: {why}")]
pub struct Died {
    pub task: &'static str,
    pub why: String,
}

impl Essential {
    /// Spawns `task`, named `name` in what [`Essential::died`] reports.
    pub fn spawn(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.push((name, tokio::spawn(task)));
    }

    /// Resolves when the first task ends (none: never). The node is not
    /// stopping yet when this is awaited, so any end is a death.
    pub async fn died(&mut self) -> Died {
        if self.tasks.is_empty() {
            return std::future::pending().await;
        }
        let handles = self.tasks.iter_mut().map(|(_, h)| h);
        let (result, index, _) = select_all(handles).await;
        let (task, _) = self.tasks.remove(index);
        let why = match result {
            Ok(()) => "it ended on its own".to_string(),
            Err(e) if e.is_panic() => {
                let payload = e.into_panic();
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic without a message".into());
                format!("it panicked: {message}")
            }
            Err(e) => e.to_string(),
        };
        Died { task, why }
    }

    /// Waits for every task to end (after the stop was signalled).
    pub async fn join(self) {
        for (_, handle) in self.tasks {
            let _ = handle.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Ownership;
    use crate::ipvs::{Change, Info, Kernel, KernelError, Timeouts};
    use crate::model::{ServiceEntry, ServiceKey};
    use crate::reconcile::{Engine, Outputs, Owned, Settings};
    use std::time::Duration;

    /// A kernel whose every read panics, as a bug deep in a pass would.
    struct Panicking;

    impl Kernel for Panicking {
        fn info(&mut self) -> Result<Info, KernelError> {
            panic!("the test kernel panics")
        }
        fn services(&mut self) -> Result<Vec<ServiceEntry>, KernelError> {
            panic!("the test kernel panics")
        }
        fn service(&mut self, _: &ServiceKey) -> Result<Option<ServiceEntry>, KernelError> {
            panic!("the test kernel panics")
        }
        fn apply_batch(&mut self, _: &[Change]) -> Vec<Result<(), KernelError>> {
            panic!("the test kernel panics")
        }
        fn timeouts(&mut self) -> Result<Timeouts, KernelError> {
            panic!("the test kernel panics")
        }
    }

    #[tokio::test]
    async fn a_reconciler_whose_kernel_panics_is_a_death() {
        let dir = tempfile::TempDir::new().expect("tempdir");
        let (_log, sm) = crate::store::open(dir.path(), "node1").expect("store");
        let (status, _) = tokio::sync::watch::channel(Default::default());
        let (table, _reader) = crate::reconcile::table::channel();
        let health = crate::health::Health::new(None);
        let engine = Engine::new(
            Panicking,
            Owned::in_memory(Default::default()),
            Ownership::Managed,
        );
        let mut tasks = Essential::default();
        tasks.spawn("janitor", std::future::pending());
        tasks.spawn(
            "reconciler",
            crate::reconcile::run(
                engine,
                sm.watch(),
                health.subscribe(),
                Settings {
                    kernel: "memory".into(),
                    ownership: Ownership::Managed,
                    resync: Duration::from_secs(3600),
                },
                Outputs {
                    status,
                    table,
                    metrics: std::sync::Arc::new(crate::metrics::Metrics::default()),
                },
                std::future::pending(),
            ),
        );
        let died = tokio::time::timeout(Duration::from_secs(10), tasks.died())
            .await
            .expect("the death is seen");
        assert_eq!(died.task, "reconciler");
        assert!(
            died.to_string().starts_with("the reconciler stopped"),
            "{died}"
        );
    }

    #[tokio::test]
    async fn a_panic_is_named() {
        let mut tasks = Essential::default();
        tasks.spawn("health monitor", async {
            panic!("probe table out of step")
        });
        let died = tasks.died().await;
        assert_eq!(
            died,
            Died {
                task: "health monitor",
                why: "it panicked: probe table out of step".into()
            }
        );
    }
}
