//! How long each stage of a write takes on this node, for `/metrics`
//! (`ipvs_manager_write_stage_seconds{stage}`): where a write's latency,
//! and its tail, come from.
//!
//! On the leader a write waits in the batcher's queue (`queued`), then its
//! batch is one Raft proposal (`proposed`: append, flush, replication to a
//! quorum, commit and apply, as openraft answers it). Every node's store
//! records its group flushes (`flush`: sled's flush, `witness`: the
//! witness file written and synced after it) and every apply of committed
//! entries to the state machine (`apply`). A follower records the writes it
//! forwards to the leader (`forwarded`).
//!
//! Appends that carry entries are timed at both ends: the leader from
//! sending one to a follower to decoding its answer (`replicated`), the
//! follower from handing one to Raft to Raft's answer (`appended`, which
//! includes its flush). Their difference is the transport.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::time::Duration;

/// One stage of a write (see the module's documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Queued,
    Proposed,
    Forwarded,
    Flush,
    Witness,
    Apply,
    Replicated,
    Appended,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::Queued => "queued",
            Stage::Proposed => "proposed",
            Stage::Forwarded => "forwarded",
            Stage::Flush => "flush",
            Stage::Witness => "witness",
            Stage::Apply => "apply",
            Stage::Replicated => "replicated",
            Stage::Appended => "appended",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    stage: &'static str,
}

fn stage_histogram() -> Histogram {
    // 25 µs to about 1.6 s: a flush on a fast disk to a stalled commit.
    Histogram::new(exponential_buckets(0.000_025, 2.0, 17))
}

/// The stage histograms; clones share them.
#[derive(Clone, Debug)]
pub struct WriteStages {
    family: Family<StageLabels, Histogram, fn() -> Histogram>,
}

impl Default for WriteStages {
    fn default() -> WriteStages {
        WriteStages {
            family: Family::new_with_constructor(stage_histogram),
        }
    }
}

impl WriteStages {
    /// Records one pass through `stage`.
    pub fn observe(&self, stage: Stage, took: Duration) {
        self.family
            .get_or_create(&StageLabels {
                stage: stage.name(),
            })
            .observe(took.as_secs_f64());
    }

    /// Adds the family to a scrape's registry.
    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "ipvs_manager_write_stage_seconds",
            "Time in each stage of a write on this node: queued in the leader's batcher, \
             proposed (append, flush, replication, commit, apply), forwarded by a follower, \
             the store's group flush and witness, and the apply of committed entries",
            self.family.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_stage_is_its_own_series() {
        let stages = WriteStages::default();
        stages.observe(Stage::Flush, Duration::from_millis(3));
        stages.observe(Stage::Flush, Duration::from_millis(5));
        stages.observe(Stage::Apply, Duration::from_micros(40));
        let mut registry = Registry::default();
        stages.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("ipvs_manager_write_stage_seconds_count{stage=\"flush\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("ipvs_manager_write_stage_seconds_sum{stage=\"flush\"} 0.008"),
            "{text}"
        );
        assert!(
            text.contains("ipvs_manager_write_stage_seconds_count{stage=\"apply\"} 1"),
            "{text}"
        );
        assert!(!text.contains("stage=\"queued\""), "{text}");
    }
}
