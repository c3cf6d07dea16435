//! The feed of committed room events, from the write path to the services
//! that act on them after the fact (push rule evaluation), so their work is
//! not part of a send's latency.

use ruma::OwnedRoomId;
use tokio::sync::mpsc;
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
}

impl CommittedFeed {
    /// A feed and its reading end.
    pub fn new() -> (Self, mpsc::Receiver<CommittedEvents>) {
        let (sender, receiver) = mpsc::channel(CAPACITY);
        (Self { sender }, receiver)
    }

    /// Hands committed events on, without waiting.
    pub fn committed(&self, events: CommittedEvents) {
        if let Err(mpsc::error::TrySendError::Full(dropped)) = self.sender.try_send(events) {
            warn!(room_id = %dropped.room_id, events = dropped.events.len(),
                "push evaluation is behind: committed events were not evaluated");
        }
    }
}
