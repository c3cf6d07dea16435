//! What this server answers, as a resident of a room, to servers whose
//! users join, leave or knock: a membership event template built on the
//! room's current state, and the state and auth chain before an accepted
//! membership event (spec-notes/federation.md).

use ruma::{
    CanonicalJsonObject, MilliSecondsSinceUnixEpoch, RoomId, UserId,
    events::{StateEventType, TimelineEventType},
};

use super::{LocalEvent, RemoteEventError, RoomEvents};
use crate::service::{
    ServiceError,
    rooms::{pdu::Pdu, version::RoomVersion},
};

impl RoomEvents {
    /// An `m.room.member` event for `user_id` (of another server) with
    /// `content`, on the room's current state, as `make_join`, `make_leave`
    /// and `make_knock` answer it: unsigned, with `prev_events`,
    /// `auth_events`, `depth` and `origin_server_ts` filled in. The
    /// authorization rules judge it against the current state first, so a
    /// banned user, or a joiner of an invite-only room without an invite,
    /// is refused here.
    ///
    /// # Errors
    /// `NotFound` for an unknown room, `Forbidden` when the rules refuse,
    /// `UnsupportedRoomVersion` for versions 1 and 2 (whose event ids the
    /// joining server would choose).
    pub async fn membership_template(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        content: CanonicalJsonObject,
    ) -> Result<(RoomVersion, CanonicalJsonObject), ServiceError> {
        let event = LocalEvent {
            sender: user_id.to_owned(),
            event_type: TimelineEventType::RoomMember,
            state_key: Some(user_id.to_string()),
            content,
            redacts: None,
            transaction: None,
        };
        let ts = MilliSecondsSinceUnixEpoch::now();
        let built = self
            .read_state(room_id, |state| {
                if state.version.has_origin_chosen_event_ids() {
                    return Err(ServiceError::UnsupportedRoomVersion(
                        state.version.to_string(),
                    ));
                }
                self.build(state, Some(room_id.to_owned()), &event, ts)
            })
            .await?
            .ok_or_else(|| ServiceError::NotFound("no such room".to_owned()))??;
        let mut template = built.as_object().clone();
        for field in ["signatures", "hashes", "unsigned"] {
            template.remove(field);
        }
        Ok((built.room_version(), template))
    }

    /// The room state before an accepted membership event, and the auth
    /// chain of that state and of the event: what `send_join` answers.
    /// The state is the state after the event with the target's slot as
    /// the event's own auth events hold it (the member event it replaced),
    /// or empty when it had none.
    ///
    /// # Errors
    /// `NotFound` when the event is not stored; storage failures.
    pub async fn state_before_membership(
        &self,
        event: &Pdu,
    ) -> Result<(Vec<Pdu>, Vec<Pdu>), ServiceError> {
        let version = event.room_version();
        let stored = self
            .storage
            .dag_event(event.event_id())
            .await?
            .ok_or_else(|| ServiceError::NotFound("no such event".to_owned()))?;
        let target = event.state_key().unwrap_or_default();
        let mut state = Vec::new();
        for entry in self.storage.state_group_entries(stored.state_group).await? {
            if entry.event_type == StateEventType::RoomMember.to_string()
                && entry.state_key == target
            {
                continue;
            }
            state.push(self.pdu(version, &entry.event_id).await?);
        }
        for id in event.auth_events() {
            let cited = self.pdu(version, id).await?;
            if *cited.kind() == TimelineEventType::RoomMember && cited.state_key() == Some(target) {
                state.push(cited);
            }
        }
        let starts = state
            .iter()
            .chain(std::iter::once(event))
            .flat_map(|pdu| pdu.auth_events().iter().cloned())
            .collect::<Vec<_>>();
        let auth_chain = self
            .auth_closure(version, starts.into_iter(), None)
            .await
            .map_err(|error| match error {
                RemoteEventError::Service(error) => error,
                other => ServiceError::Internal(other.to_string()),
            })?
            .into_values()
            .collect();
        Ok((state, auth_chain))
    }
}
