//! Rooms joined over federation: the state a resident server answered a
//! `send_join` with becomes this server's replica of the room, and
//! membership events of rooms this server does not hold (an invite from
//! another server, the leave that rejects it) reach the invitee's sync.
//!
//! The state before the join and its auth chain are stored as
//! *outliers*: found by id (state groups name them, later events cite
//! them), never in a timeline (no stream position). The join itself is
//! the room's first timeline event, written by the same
//! [`EventWriter`](super::event_writer::EventWriter) as every other, with
//! the state after it; from there, events from the room's servers follow
//! it through [`RoomEvents::append_remote`]. See spec-notes/federation.md.

use std::collections::HashSet;

use ruma::events::StateEventType;

use super::{RoomEvents, event_writer::PendingEvent, send_queue::interested_users};
use crate::{
    service::{
        ServiceError,
        rooms::{
            pdu::Pdu,
            state::{Head, RoomState, membership},
        },
        stream::Kind,
    },
    storage::{ImportedState, OutOfRoomMembership, Outlier},
};

/// A resident server's answer to a join, checked: every event is of the
/// room, signed, and allowed by its own auth events; the join is allowed
/// by `state`.
#[derive(Debug)]
pub struct JoinedState {
    /// The room state before the join.
    pub state: Vec<Pdu>,
    /// The auth chain of that state and of the join.
    pub auth_chain: Vec<Pdu>,
    /// The join event, signed by every server that must.
    pub join: Pdu,
}

impl RoomEvents {
    /// Creates this server's replica of a room a local user joined through
    /// another server: the state and auth chain as outliers, the state
    /// before the join as a state group, the room with its version, and
    /// the join as its first timeline event.
    ///
    /// # Errors
    /// `Forbidden` when this server holds the room already (a join of it is
    /// an event like any other), storage failures (nothing of the join is
    /// in the timeline then).
    pub async fn import_joined_room(&self, joined: JoinedState) -> Result<(), ServiceError> {
        let JoinedState {
            state,
            auth_chain,
            join,
        } = joined;
        let room_id = join.room_id().to_owned();
        let version = join.room_version();
        let slot = self.slot(&room_id);
        let mut guard = slot.state.lock().await;
        if self.storage.room(&room_id).await?.is_some() {
            return Err(ServiceError::Forbidden(
                "this server is in the room already".to_owned(),
            ));
        }
        let joiner = join.state_key().unwrap_or_default().to_owned();
        let mut seen = HashSet::new();
        let outliers: Vec<Outlier<'_>> = state
            .iter()
            .chain(&auth_chain)
            .filter(|pdu| seen.insert(pdu.event_id().to_owned()))
            .map(|pdu| Outlier {
                event_id: pdu.event_id(),
                depth: i64::from(pdu.depth()),
                json: pdu.canonical_json(),
            })
            .collect();
        let group_reservation = self.stream.reserve();
        let group_id = group_reservation.position().0;
        let reservation = self.stream.reserve();
        let position = reservation.position();
        let mut after = RoomState::with_head(
            version,
            state.iter().cloned(),
            Head {
                extremities: Vec::new(),
                depth: 0,
                state_group: group_id,
                // The join writes a snapshot, not a delta on this group.
                chain_length: i32::MAX,
            },
        );
        let group = after.snapshot();
        let members: Vec<(&ruma::UserId, String, &ruma::EventId)> = state
            .iter()
            .filter(|pdu| {
                pdu.state_map_key()
                    .is_some_and(|(kind, key)| kind == StateEventType::RoomMember && key != joiner)
            })
            .filter_map(|pdu| {
                let user = <&ruma::UserId>::try_from(pdu.state_key()?).ok()?;
                let membership = membership(pdu).filter(|m| {
                    matches!(m.as_str(), "join" | "invite" | "leave" | "ban" | "knock")
                })?;
                Some((user, membership, pdu.event_id()))
            })
            .collect();
        let memberships: Vec<(&ruma::UserId, &str, &ruma::EventId)> = members
            .iter()
            .map(|(user, membership, event_id)| (*user, membership.as_str(), *event_id))
            .collect();
        self.storage
            .store_imported_state(&ImportedState {
                room_id: &room_id,
                outliers: &outliers,
                state_group: group_id,
                group: &group,
                memberships: &memberships,
                position,
            })
            .await?;
        drop(outliers);

        let mut pending = PendingEvent::advance(&mut after, join, None, position)?;
        pending.creates_room_version = Some(version.id().to_string());
        let interested = interested_users(&after, &[&pending]);
        let outcome = self.write_one(pending).await;
        if outcome.is_ok() {
            *guard = Some(after);
        }
        // Released on every path: a position left reserved would hold back
        // every later one.
        drop(group_reservation);
        drop(reservation);
        if outcome.is_ok() {
            self.stream.published(position).await;
            self.notifier.wake(interested.iter().map(|user| &**user));
        }
        outcome
    }

    /// Records a local user's membership event in a room this server does
    /// not hold (an invite from another server, with the stripped state it
    /// came with; the leave that rejected it), so their sync shows it.
    ///
    /// # Errors
    /// `Forbidden` for an event that is not a membership of a local user,
    /// storage failures.
    pub async fn record_out_of_room_membership(
        &self,
        pdu: &Pdu,
        stripped_state: &str,
    ) -> Result<(), ServiceError> {
        let user_id = pdu
            .state_key()
            .and_then(|key| <&ruma::UserId>::try_from(key).ok())
            .filter(|user| user.server_name() == self.keys.server_name())
            .ok_or_else(|| ServiceError::Forbidden("not a local user's membership".to_owned()))?;
        let membership =
            membership(pdu).ok_or_else(|| ServiceError::Forbidden("no membership".to_owned()))?;
        let reservation = self.stream.reserve();
        let position = reservation.position();
        let stored = self
            .storage
            .store_out_of_room_membership(&OutOfRoomMembership {
                position,
                event_id: pdu.event_id(),
                room_id: pdu.room_id(),
                user_id,
                membership: &membership,
                room_version: pdu.room_version().id().as_ref(),
                json: pdu.canonical_json(),
                stripped_state,
            })
            .await;
        self.stream.mark(Kind::Membership, position);
        drop(reservation);
        stored?;
        self.stream.published(position).await;
        self.notifier.wake([user_id]);
        Ok(())
    }
}
