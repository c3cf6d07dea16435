//! The feed of committed room events, from the write path to the services
//! that act on them after the fact (push rule evaluation), so their work is
//! not part of a send's latency.
//!
//! Events enter the feed before their stream positions are released, so
//! whoever reads a published position can wait for the feed's reader to
//! have handled everything up to it ([`CommittedFeed::caught_up`]).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use ruma::OwnedRoomId;
use tokio::sync::{mpsc, watch};
use tracing::warn;

use super::rooms::pdu::Pdu;
use crate::storage::StreamPosition;

/// Chains the feed holds while its reader is busy; past that, chains are
/// dropped (with a warning) rather than slowing sends down.
const CAPACITY: usize = 4096;

/// Events of one room committed together, in order.
#[derive(Debug)]
pub struct CommittedEvents {
    /// Their room.
    pub room_id: OwnedRoomId,
    /// The events, each with its stream position.
    pub events: Vec<(StreamPosition, Pdu)>,
}

/// The writing end of the feed.
#[derive(Debug, Clone)]
pub struct CommittedFeed {
    sender: mpsc::Sender<CommittedEvents>,
    progress: Arc<Progress>,
}

/// The reading end of the feed.
#[derive(Debug)]
pub struct CommittedReader {
    receiver: mpsc::Receiver<CommittedEvents>,
    progress: Arc<Progress>,
}

/// How many chains went into the feed, and how many its reader finished.
#[derive(Debug)]
struct Progress {
    queued: AtomicU64,
    handled: watch::Sender<u64>,
}

impl CommittedFeed {
    /// A feed and its reading end.
    pub fn new() -> (Self, CommittedReader) {
        let (sender, receiver) = mpsc::channel(CAPACITY);
        let progress = Arc::new(Progress {
            queued: AtomicU64::new(0),
            handled: watch::channel(0).0,
        });
        let reader = CommittedReader {
            receiver,
            progress: progress.clone(),
        };
        (Self { sender, progress }, reader)
    }

    /// Hands committed events on, without waiting. Call it before their
    /// positions are released.
    pub fn committed(&self, events: CommittedEvents) {
        match self.sender.try_send(events) {
            Ok(()) => {
                self.progress.queued.fetch_add(1, Ordering::SeqCst);
            }
            Err(mpsc::error::TrySendError::Full(dropped)) => {
                warn!(room_id = %dropped.room_id, events = dropped.events.len(),
                    "push evaluation is behind: committed events were not evaluated");
            }
            // No reader (a test without one): nothing waits for it.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Waits, at most `limit`, until the reader has handled every chain
    /// queued so far: every event at or below a position published before
    /// this call. Returns whether it got there in time.
    pub async fn caught_up(&self, limit: Duration) -> bool {
        let queued = self.progress.queued.load(Ordering::SeqCst);
        let mut handled = self.progress.handled.subscribe();
        let done = handled.wait_for(|handled| *handled >= queued);
        matches!(tokio::time::timeout(limit, done).await, Ok(Ok(_)))
    }
}

impl CommittedReader {
    /// The next chain, `None` once every writer is gone. Call
    /// [`CommittedReader::handled`] when done with it.
    pub async fn next(&mut self) -> Option<CommittedEvents> {
        self.receiver.recv().await
    }

    /// Marks the last chain [`CommittedReader::next`] returned as handled.
    pub fn handled(&self) {
        self.progress.handled.send_modify(|handled| *handled += 1);
    }
}
