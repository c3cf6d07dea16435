//! The local send queue: sends wait here for their room's lock, and
//! whoever takes the lock builds everything queued as one chain and hands
//! it to the [`EventWriter`](super::event_writer::EventWriter) as one write.

use std::sync::{Arc, Mutex};

use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, RoomId, events::TimelineEventType,
};
use tokio::sync::oneshot;

use super::{
    RoomEvents,
    event_writer::PendingEvent,
    local::{LocalEvent, check_e2e_policy, local_rule_error, unchanged_state},
    lock,
};
use crate::{
    service::{
        ServiceError,
        committed::CommittedEvents,
        rooms::{local_rules, state::RoomState},
        stream::{Kind, Reservation},
    },
    storage::{ChainOutcome, StorageError, StreamPosition},
};

/// A room's current state (loaded on first use) behind the lock that
/// orders its events, and the local sends waiting for that lock.
#[derive(Debug, Default)]
pub(super) struct RoomSlot {
    /// The room's current state, once loaded; its lock orders the room's events.
    pub(super) state: tokio::sync::Mutex<Option<RoomState>>,
    queue: Mutex<Vec<QueuedSend>>,
}

/// A send waiting for its room's lock.
#[derive(Debug)]
struct QueuedSend {
    event: LocalEvent,
    answer: oneshot::Sender<Result<OwnedEventId, ServiceError>>,
}

/// What became of one queued send while its chain was built.
enum Prepared {
    /// Built and authorized; waits in the chain.
    New(Box<PendingEvent>, Reservation),
    /// A retry of a transaction already in this chain, or a state event
    /// the chain already holds, at this index.
    InChain(usize),
    /// A state event identical to the committed current one: answered
    /// with that event, and nothing is written.
    Unchanged(OwnedEventId),
}

/// A chain entry: the events' ids (kept for the answers) and who waits for it.
struct Link {
    event_id: OwnedEventId,
    position: StreamPosition,
    senders: Vec<QueuedSend>,
}

impl RoomEvents {
    /// Adds a local event to an existing room and returns its id. A retried
    /// transaction returns the event the first attempt created.
    ///
    /// # Errors
    /// `NotFound` for an unknown room; `Forbidden` when the event fails the
    /// authorization rules or redacts what the sender may not.
    pub async fn send(
        self: &Arc<Self>,
        room_id: &RoomId,
        event: LocalEvent,
    ) -> Result<OwnedEventId, ServiceError> {
        // A retried transaction is not looked up first (a query on every
        // send for a rare case): if its first attempt was committed, the
        // retry fails on the transaction's uniqueness, or on the rules if the
        // room changed since, and is answered with the stored event then.
        let slot = self.slot(room_id);
        let (answer, sent) = oneshot::channel();
        lock(&slot.queue).push(QueuedSend { event, answer });
        // The work runs in a task of its own: the chain it builds may carry
        // other clients' events, which a client hanging up must not abandon.
        tokio::spawn(self.clone().send_queued(room_id.to_owned(), slot));
        sent.await
            .map_err(|_| ServiceError::Internal("the send was abandoned".to_owned()))?
    }

    /// Takes the room's lock and sends whatever is queued for the room as
    /// one chain. Every queued send has such a task, so nothing waits
    /// unseen; a task that finds the queue empty was beaten to it.
    async fn send_queued(self: Arc<Self>, room_id: OwnedRoomId, slot: Arc<RoomSlot>) {
        let mut guard = slot.state.lock().await;
        let mut queued = std::mem::take(&mut *lock(&slot.queue));
        // Each round settles at least one send, so the retries run out.
        while !queued.is_empty() {
            queued = self.send_chain(&room_id, &mut guard, queued).await;
        }
    }

    /// Builds the queued sends on the room's state, one after the other,
    /// and writes them in one commit. Answers every send, except those
    /// built on an event that failed to be written: those are returned, to
    /// be built again on the state as stored.
    async fn send_chain(
        &self,
        room_id: &RoomId,
        guard: &mut Option<RoomState>,
        queued: Vec<QueuedSend>,
    ) -> Vec<QueuedSend> {
        let state = match self.loaded(room_id, guard).await {
            Ok(state) => state,
            // Local users write only to rooms they are in; an unknown room is
            // one nobody is in, answered alike so it reveals nothing.
            Err(ServiceError::NotFound(_)) => {
                for send in queued {
                    let _ = send.answer.send(Err(ServiceError::not_in_room()));
                }
                return Vec::new();
            }
            Err(error) => {
                for send in queued {
                    let _ = send.answer.send(Err(error_for_each(&error)));
                }
                return Vec::new();
            }
        };
        let mut chain = Vec::new();
        let mut links: Vec<Link> = Vec::new();
        let mut reservations = Vec::new();
        for send in queued {
            match self.prepare(room_id, state, &send.event, &chain).await {
                Ok(Prepared::New(pending, reservation)) => {
                    links.push(Link {
                        event_id: pending.pdu.event_id().to_owned(),
                        position: pending.position,
                        senders: vec![send],
                    });
                    chain.push(*pending);
                    reservations.push(reservation);
                }
                Ok(Prepared::InChain(index)) => links[index].senders.push(send),
                Ok(Prepared::Unchanged(event_id)) => {
                    let _ = send.answer.send(Ok(event_id));
                }
                Err(error) => {
                    let answer = match self.previous_transaction(&send.event).await {
                        Ok(Some(existing)) => Ok(existing),
                        _ => Err(error),
                    };
                    let _ = send.answer.send(answer);
                }
            }
        }
        if chain.is_empty() {
            return Vec::new();
        }
        let interested = interested_users(state, &chain.iter().collect::<Vec<_>>());
        let last_membership = chain
            .iter()
            .filter(|pending| pending.membership.is_some())
            .map(|pending| pending.position)
            .max();
        // Kept for the feed (a `Pdu` is a shared pointer, so this is cheap).
        let pdus: Vec<_> = chain
            .iter()
            .map(|pending| (pending.position, pending.pdu.clone()))
            .collect();
        let written = self.writer.write(chain).await;
        if let Some(position) = last_membership {
            self.stream.mark(Kind::Membership, position);
        }
        // What was committed goes to the push evaluator before its positions
        // are released, so a sync that reads them can wait for their
        // evaluation (spec-notes/push.md).
        if let Ok(ChainOutcome { written, .. }) = &written
            && *written > 0
        {
            self.committed.committed(CommittedEvents {
                room_id: room_id.to_owned(),
                events: pdus.into_iter().take(*written).collect(),
            });
        }
        // Released on every path: a position left reserved would hold back
        // every later one.
        drop(reservations);
        let ChainOutcome { written, error } = match written {
            Ok(outcome) => outcome,
            Err(error) => {
                // The state moved past events that were not written.
                *guard = None;
                for send in links.into_iter().flat_map(|link| link.senders) {
                    let _ = send.answer.send(Err(error_for_each(&error)));
                }
                return Vec::new();
            }
        };
        let mut links = links.into_iter();
        let committed: Vec<Link> = links.by_ref().take(written).collect();
        let mut retry = Vec::new();
        if let Some(error) = error {
            *guard = None;
            if let Some(failed) = links.next() {
                let answer = self.answer_for_failed(&failed, error).await;
                let mut senders = failed.senders.into_iter();
                let first = senders.next();
                for send in senders {
                    let _ = send
                        .answer
                        .send(answer.as_ref().cloned().map_err(error_for_each));
                }
                if let Some(first) = first {
                    let _ = first.answer.send(answer);
                }
            }
            retry = links.flat_map(|link| link.senders).collect();
        }
        if let Some(last) = committed.last() {
            self.stream.published(last.position).await;
            self.notifier.wake(interested.iter().map(|user| &**user));
        }
        for link in committed {
            for send in link.senders {
                let _ = send.answer.send(Ok(link.event_id.clone()));
            }
        }
        retry
    }

    /// The answer to the sends of an event that failed to be written: the
    /// first attempt's event when it was a retry of a committed
    /// transaction, else the failure.
    async fn answer_for_failed(
        &self,
        failed: &Link,
        error: StorageError,
    ) -> Result<OwnedEventId, ServiceError> {
        if matches!(error, StorageError::Conflict("transaction id"))
            && let Some(send) = failed.senders.first()
            && let Some(existing) = self.previous_transaction(&send.event).await?
        {
            return Ok(existing);
        }
        Err(ServiceError::Storage(error))
    }

    /// Builds one queued send on `state` (which already holds the chain
    /// before it) and moves `state` past it.
    async fn prepare(
        &self,
        room_id: &RoomId,
        state: &mut RoomState,
        event: &LocalEvent,
        chain: &[PendingEvent],
    ) -> Result<Prepared, ServiceError> {
        if let Some(transaction) = &event.transaction {
            let same = |pending: &PendingEvent| {
                *pending.pdu.sender() == *event.sender
                    && pending.transaction.as_ref().is_some_and(|t| {
                        t.device_id == transaction.device_id && t.key == transaction.key
                    })
            };
            if let Some(index) = chain.iter().position(same) {
                return Ok(Prepared::InChain(index));
            }
            // A retry that passed the check in `send` while the first
            // attempt was being committed in an earlier chain fails on the
            // transaction's uniqueness; `send_chain` answers it then.
        }
        local_rules::check_shape(&event.event_type, event.state_key.as_deref())
            .map_err(local_rule_error)?;
        if !local_rules::may_act_in(
            state.membership_of(event.sender.as_str()),
            &event.sender,
            &event.event_type,
            event.state_key.as_deref(),
            &event.content,
        ) {
            return Err(ServiceError::not_in_room());
        }
        if let Some(current) = unchanged_state(state, event) {
            return Ok(
                match chain.iter().position(|p| p.pdu.event_id() == current) {
                    Some(index) => Prepared::InChain(index),
                    None => Prepared::Unchanged(current.to_owned()),
                },
            );
        }
        let pdu = self.build(
            state,
            Some(room_id.to_owned()),
            event,
            MilliSecondsSinceUnixEpoch::now(),
        )?;
        // Every rule is decided on the event about to be written, whichever
        // route asked for it.
        self.check_local_rules(state, &pdu).await?;
        check_e2e_policy(state, &pdu)?;
        let redaction = match pdu.redacts() {
            Some(target) if *pdu.kind() == TimelineEventType::RoomRedaction => {
                Some(self.redaction_of(state, &pdu, target).await?)
            }
            _ => None,
        };
        let reservation = self.stream.reserve();
        let mut pending = PendingEvent::advance(state, pdu, redaction, reservation.position())?;
        pending.transaction.clone_from(&event.transaction);
        Ok(Prepared::New(Box::new(pending), reservation))
    }

    async fn previous_transaction(
        &self,
        event: &LocalEvent,
    ) -> Result<Option<OwnedEventId>, ServiceError> {
        let Some(transaction) = &event.transaction else {
            return Ok(None);
        };
        Ok(self
            .storage
            .transaction_event(&event.sender, &transaction.device_id, &transaction.key)
            .await?)
    }
}

/// Who may see the chain's events: everyone in the room after them
/// (joined, invited, knocking), and whoever a membership change concerns
/// (a kicked user must learn of it).
pub(super) fn interested_users(
    state: &RoomState,
    chain: &[&PendingEvent],
) -> Vec<ruma::OwnedUserId> {
    let members = state
        .members_in(&["join", "invite", "knock"])
        .map(ToOwned::to_owned);
    let targets = chain.iter().filter_map(|pending| {
        pending
            .membership
            .as_ref()
            .map(|(target, _)| target.clone())
    });
    members.chain(targets).collect()
}

/// One failure told to every send of a batch (service errors are not `Clone`).
fn error_for_each(error: &ServiceError) -> ServiceError {
    match error {
        ServiceError::NotFound(message) => ServiceError::NotFound(message.clone()),
        other => ServiceError::Internal(other.to_string()),
    }
}
