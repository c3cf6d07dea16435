//! Group commit for room events: one writer task takes every chain of
//! events queued while the previous commit ran and writes them all in one
//! transaction, so a burst of sends costs one commit (one fsync on SQLite)
//! instead of one each.
//!
//! Each caller learns the outcome of its own chain only after the commit:
//! nothing is acknowledged that a crash could still lose. Callers queue at
//! most one chain per room at a time (they hold the room's lock until the
//! answer), so the queue is bounded by the number of rooms being written.
//! See spec-notes/write-path.md.

use std::sync::Arc;

use ruma::{OwnedEventId, OwnedUserId, events::TimelineEventType};
use tokio::sync::{mpsc, oneshot};
use tracing::error;

use super::Transaction;
use crate::{
    service::{
        ServiceError,
        rooms::{
            pdu::Pdu,
            state::{RoomState, join_rule, membership},
        },
    },
    storage::{ChainOutcome, NewEvent, NewStateGroup, NewTransaction, Storage, StreamPosition},
};

/// Chains written in one transaction at most; a bigger backlog waits for the next.
const MAX_CHAINS_PER_COMMIT: usize = 256;

/// An authorized event and everything that changes with it, owned so it
/// can travel to the writer task.
#[derive(Debug)]
pub struct PendingEvent {
    /// Its place in the stream (reserved by the caller).
    pub position: StreamPosition,
    /// The event.
    pub pdu: Pdu,
    /// Set for an `m.room.create` event: the version of the room it creates.
    pub creates_room_version: Option<String>,
    /// The state group holding the room state after it.
    pub state_group: i64,
    /// A state group to create with it (when it is a state event).
    pub new_state_group: Option<NewStateGroup>,
    /// For an `m.room.member` event: the target and the new membership.
    pub membership: Option<(OwnedUserId, String)>,
    /// For the room's `m.room.join_rules` event: its rule (empty when
    /// unreadable), which the user directory asks of every room.
    pub join_rule: Option<String>,
    /// The sender's client transaction, for idempotent retries.
    pub transaction: Option<Transaction>,
    /// For an applied redaction: the redacted event and its redacted JSON.
    pub redaction: Option<(OwnedEventId, String)>,
    /// The room's current state after it when a fork made that a
    /// resolution rather than the state after the event: its group's id
    /// and the snapshot to write.
    pub room_state: Option<(i64, NewStateGroup)>,
    event_type: String,
    extremities: Vec<OwnedEventId>,
}

impl PendingEvent {
    /// An event with no membership, transaction or redaction attached yet,
    /// leaving the room with `extremities`.
    fn new(
        position: StreamPosition,
        pdu: Pdu,
        state_group: i64,
        extremities: Vec<OwnedEventId>,
    ) -> Self {
        Self {
            position,
            event_type: pdu.kind().to_string(),
            extremities,
            pdu,
            creates_room_version: None,
            state_group,
            new_state_group: None,
            membership: None,
            join_rule: None,
            transaction: None,
            redaction: None,
            room_state: None,
        }
    }

    /// Moves `state` past an authorized event, and says what to write for
    /// it. `state` is the room's current state for an event that follows
    /// every extremity (every local one), else the state before the event.
    /// `redaction` is the redacted form of the event it redacts, applied
    /// with it.
    ///
    /// # Errors
    /// `Internal` when the redacted form does not parse (nothing changed then).
    pub fn advance(
        state: &mut RoomState,
        pdu: Pdu,
        redaction: Option<(OwnedEventId, String)>,
        position: StreamPosition,
    ) -> Result<Self, ServiceError> {
        // Everything that can fail comes before the first change to `state`.
        let redacted_slot = match &redaction {
            Some((target, json)) if state.event_by_id(target).is_some() => Some(
                Pdu::from_storage(state.version, target.clone(), json.clone()).map_err(|e| {
                    ServiceError::Internal(format!("redacted event is invalid: {e}"))
                })?,
            ),
            _ => None,
        };
        // A state event's group is numbered by its stream position, which
        // is unique.
        let change = state.advance(&pdu, redacted_slot, position.0);
        let extremities = state
            .extremities()
            .iter()
            .map(|pdu| pdu.event_id().to_owned())
            .collect();
        let mut pending = Self::new(position, pdu, change.state_group, extremities);
        pending.new_state_group = change.new_group;
        if *pending.pdu.kind() == TimelineEventType::RoomMember {
            let target = pending
                .pdu
                .state_key()
                .and_then(|key| ruma::UserId::parse(key).ok());
            pending.membership = target.zip(membership(&pending.pdu));
        }
        if *pending.pdu.kind() == TimelineEventType::RoomJoinRules
            && pending.pdu.state_key() == Some("")
        {
            pending.join_rule = Some(join_rule(&pending.pdu).unwrap_or_default());
        }
        pending.redaction = redaction;
        Ok(pending)
    }

    fn as_new_event(&self) -> NewEvent<'_> {
        NewEvent {
            position: self.position,
            event_id: self.pdu.event_id(),
            room_id: self.pdu.room_id(),
            creates_room_version: self.creates_room_version.as_deref(),
            event_type: &self.event_type,
            state_key: self.pdu.state_key(),
            sender: self.pdu.sender(),
            depth: i64::from(self.pdu.depth()),
            json: self.pdu.canonical_json(),
            state_group: self.state_group,
            new_state_group: self.new_state_group.as_ref(),
            forward_extremities: &self.extremities,
            membership: self
                .membership
                .as_ref()
                .map(|(user_id, membership)| (&**user_id, membership.as_str())),
            join_rule: self.join_rule.as_deref(),
            transaction: self.transaction.as_ref().map(|t| NewTransaction {
                user_id: self.pdu.sender(),
                device_id: &t.device_id,
                key: &t.key,
                txn_id: &t.txn_id,
            }),
            redaction: self
                .redaction
                .as_ref()
                .map(|(target, json)| (&**target, json.as_str())),
            room_state: self.room_state.as_ref().map(|(id, group)| (*id, group)),
        }
    }
}

struct Job {
    chain: Vec<PendingEvent>,
    answer: oneshot::Sender<Result<ChainOutcome, ServiceError>>,
}

/// The handle callers queue chains on; the task ends when it is dropped.
#[derive(Debug)]
pub struct EventWriter {
    jobs: mpsc::UnboundedSender<Job>,
}

impl EventWriter {
    /// Starts the writer task (on the current tokio runtime).
    pub fn start(storage: Arc<dyn Storage>) -> Self {
        let (jobs, queue) = mpsc::unbounded_channel();
        tokio::spawn(run(storage, queue));
        Self { jobs }
    }

    /// Writes one room's chain (events in order, each built on the one
    /// before) in the next commit and says, once it is committed, how many
    /// of its events were written.
    ///
    /// # Errors
    /// When the commit as a whole failed: then none of the chain was written.
    pub async fn write(&self, chain: Vec<PendingEvent>) -> Result<ChainOutcome, ServiceError> {
        let (answer, outcome) = oneshot::channel();
        let stopped = || ServiceError::Internal("the event writer stopped".to_owned());
        self.jobs
            .send(Job { chain, answer })
            .map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }
}

async fn run(storage: Arc<dyn Storage>, mut queue: mpsc::UnboundedReceiver<Job>) {
    let mut jobs = Vec::new();
    while queue.recv_many(&mut jobs, MAX_CHAINS_PER_COMMIT).await > 0 {
        let chains: Vec<Vec<NewEvent<'_>>> = jobs
            .iter()
            .map(|job| job.chain.iter().map(PendingEvent::as_new_event).collect())
            .collect();
        let written = storage.append_event_chains(&chains).await;
        drop(chains);
        match written {
            Ok(outcomes) => {
                for (job, outcome) in jobs.drain(..).zip(outcomes) {
                    // A caller that went away needs no answer.
                    let _ = job.answer.send(Ok(outcome));
                }
            }
            Err(failure) => {
                error!(error = %failure, chains = jobs.len(), "a group commit failed");
                for job in jobs.drain(..) {
                    let _ = job.answer.send(Err(ServiceError::Internal(format!(
                        "the commit failed: {failure}"
                    ))));
                }
            }
        }
    }
}
