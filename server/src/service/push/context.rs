//! What push rule conditions ask of a room, read once per committed chain
//! from the room's current state.

use ruma::{
    OwnedRoomId, OwnedUserId, ServerName, UInt,
    events::{
        StateEventType, TimelineEventType,
        room::power_levels::{RoomPowerLevels, RoomPowerLevelsEventContent, RoomPowerLevelsSource},
    },
    push::{PushConditionPowerLevelsCtx, PushConditionRoomCtx},
    state_res::events::RoomCreateEvent,
};
use serde::Deserialize;

use crate::service::{
    room_events::RoomState,
    rooms::e2e_policy::{self, POLICY_EVENT_TYPE},
    rooms::pdu::Pdu,
};

/// A room as the push rules of its local members see it.
#[derive(Debug, Clone)]
pub struct RoomPushContext {
    room_id: OwnedRoomId,
    member_count: UInt,
    /// Local joined members, each with their display name in the room.
    local_members: Vec<(OwnedUserId, String)>,
    power_levels: Option<PushConditionPowerLevelsCtx>,
    /// Whether the room is E2E-only: its events are pushed without content.
    pub is_e2e_only: bool,
}

impl RoomPushContext {
    /// Reads the context from the room's current state.
    pub fn of(room_id: OwnedRoomId, state: &RoomState, server_name: &ServerName) -> Self {
        let joined: Vec<_> = state.members_in(&["join"]).collect();
        let local_members = joined
            .iter()
            .filter(|user| user.server_name() == server_name)
            .map(|user| ((*user).to_owned(), display_name(state, user.as_str())))
            .collect();
        let policy = StateEventType::from(POLICY_EVENT_TYPE);
        Self {
            room_id,
            member_count: UInt::try_from(joined.len()).unwrap_or(UInt::MAX),
            local_members,
            power_levels: power_levels(state),
            is_e2e_only: state
                .get(&policy, "")
                .and_then(|pdu| serde_json::from_str(pdu.content().get()).ok())
                .is_some_and(|content| e2e_policy::is_required_policy_content(&content)),
        }
    }

    /// Who the event is evaluated for: the local joined members, and the
    /// invitee of an invite (for `.m.rule.invite_for_me`), each with their
    /// display name.
    pub fn recipients(&self, event: &Pdu, server_name: &ServerName) -> Vec<(OwnedUserId, String)> {
        let mut recipients = self.local_members.clone();
        if let Some(invitee) = local_invitee(event, server_name)
            && !recipients.iter().any(|(member, _)| *member == invitee.0)
        {
            recipients.push(invitee);
        }
        recipients
    }

    /// The rule context for one member.
    pub fn for_member(&self, user_id: OwnedUserId, display_name: String) -> PushConditionRoomCtx {
        let context = PushConditionRoomCtx::new(
            self.room_id.clone(),
            self.member_count,
            user_id,
            display_name,
        );
        match &self.power_levels {
            Some(levels) => context.with_power_levels(levels.clone()),
            None => context,
        }
    }
}

/// The local user an `m.room.member` invite is for, with the display name
/// it gives them.
fn local_invitee(event: &Pdu, server_name: &ServerName) -> Option<(OwnedUserId, String)> {
    #[derive(Deserialize)]
    struct Invite {
        membership: String,
        displayname: Option<String>,
    }
    if *event.kind() != TimelineEventType::RoomMember {
        return None;
    }
    let invitee = OwnedUserId::try_from(event.state_key()?).ok()?;
    let content: Invite = serde_json::from_str(event.content().get()).ok()?;
    (content.membership == "invite" && invitee.server_name() == server_name)
        .then(|| (invitee, content.displayname.unwrap_or_default()))
}

/// A member's display name in the room (empty without one, which matches nothing).
fn display_name(state: &RoomState, user_id: &str) -> String {
    #[derive(Deserialize)]
    struct Member {
        displayname: Option<String>,
    }
    state
        .get(&StateEventType::RoomMember, user_id)
        .and_then(|pdu| serde_json::from_str::<Member>(pdu.content().get()).ok())
        .and_then(|member| member.displayname)
        .unwrap_or_default()
}

/// The power levels `sender_notification_permission` reads (who may
/// notify the whole room), with the room version's creator privileges.
fn power_levels(state: &RoomState) -> Option<PushConditionPowerLevelsCtx> {
    let rules = &state.version.rules().authorization;
    let create = state.get(&StateEventType::RoomCreate, "")?;
    let creators = RoomCreateEvent::new(create.clone()).creators(rules).ok()?;
    let source = match state.get(&StateEventType::RoomPowerLevels, "") {
        Some(pdu) => RoomPowerLevelsSource::Original(
            serde_json::from_str::<RoomPowerLevelsEventContent>(pdu.content().get()).ok()?,
        ),
        None => RoomPowerLevelsSource::None,
    };
    Some(RoomPowerLevels::new(source, rules, creators).into())
}
