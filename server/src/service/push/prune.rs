//! Pruning of stored push actions (spec-notes/push.md, "Pruning"): a row
//! the user has read past is dropped once it is older than the retention
//! period, and each user keeps at most their newest rows. One task, woken
//! on an interval, deletes in bounded batches so no transaction grows with
//! the table.

use std::{sync::Arc, time::Duration};

use tracing::{debug, warn};

use crate::storage::{Millis, Storage, StorageError};

/// Rows deleted per statement.
const BATCH: u32 = 1000;

/// When and what to prune.
#[derive(Debug, Clone, Copy)]
pub struct PrunePolicy {
    /// Between two passes (the first runs at start).
    pub interval: Duration,
    /// How long a read row is kept after its evaluation, for
    /// `GET /notifications`.
    pub read_retention: Duration,
    /// Most rows a user keeps, read or not (the newest).
    pub keep_per_user: u32,
}

impl Default for PrunePolicy {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(60 * 60),
            read_retention: Duration::from_secs(30 * 24 * 60 * 60),
            keep_per_user: 5000,
        }
    }
}

/// Prunes on `policy.interval` for as long as the runtime runs.
pub(super) async fn run(storage: Arc<dyn Storage>, policy: PrunePolicy) {
    let mut ticks = tokio::time::interval(policy.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match prune(storage.as_ref(), policy, Millis::now()).await {
            Ok(0) => {}
            Ok(pruned) => debug!(pruned, "push actions pruned"),
            Err(error) => warn!(%error, "push actions could not be pruned"),
        }
    }
}

/// One pass at `now`: batches until nothing is left to prune.
async fn prune(
    storage: &dyn Storage,
    policy: PrunePolicy,
    now: Millis,
) -> Result<u64, StorageError> {
    let retention = i64::try_from(policy.read_retention.as_millis()).unwrap_or(i64::MAX);
    let read_before = now.0.saturating_sub(retention);
    let mut total = 0;
    loop {
        let pruned = storage
            .prune_push_actions(read_before, policy.keep_per_user, BATCH)
            .await?;
        total += pruned;
        if pruned < u64::from(BATCH) {
            return Ok(total);
        }
        // Let requests waiting for the database in between.
        tokio::task::yield_now().await;
    }
}
