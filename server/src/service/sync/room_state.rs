//! A room's `state` in a sync: "updates to the state, between the time
//! indicated by the since parameter, and the start of the timeline" (all of
//! it when the client gets the room afresh), plus the state events the
//! timeline leaves out after its start (hidden from the user or filtered
//! out), so that applying `state` and then the timeline ends at the room's
//! state. With lazy-loading, members only for the timeline's senders and
//! the user, each sent once per sync stream ([`super::lazy_members`]).
//! See spec-notes/sync.md, "Gaps" and "Lazy-loaded members".

use std::collections::{BTreeSet, HashMap, HashSet};

use ruma::{OwnedEventId, UserId};

use super::{
    Sync, SyncContext,
    timeline::{ScannedTimeline, Slot, TimelineRange, slot_of},
};
use crate::{
    service::{ServiceError, rooms::pdu::Pdu},
    storage::StreamPosition,
};

const MEMBER: &str = "m.room.member";

impl Sync {
    /// The state section for `timeline`, read from `range`; `fresh` when
    /// the client has nothing of the room (initial sync, newly joined,
    /// `full_state`).
    pub(super) async fn state_before_timeline(
        &self,
        context: &SyncContext<'_>,
        range: &TimelineRange<'_>,
        fresh: bool,
        timeline: &ScannedTimeline,
    ) -> Result<Vec<Pdu>, ServiceError> {
        let filter = &context.request.filter.room.state;
        let contained: HashSet<Slot> = timeline.events.iter().filter_map(slot_of).collect();
        let changed_before_start = timeline.state_changed_unseen_before_start();
        let inside: BTreeSet<&Slot> = timeline
            .slots_left_out_inside()
            .filter(|slot| !contained.contains(*slot))
            .collect();
        let wanted_members: BTreeSet<&UserId> = if filter.lazy_load_members {
            timeline
                .events
                .iter()
                .map(Pdu::sender)
                .chain([context.user_id])
                .collect()
        } else {
            BTreeSet::new()
        };
        if !fresh && !changed_before_start && inside.is_empty() && wanted_members.is_empty() {
            return Ok(Vec::new());
        }
        let room_id = range.room_id;
        let start_group = match timeline.group_before_start {
            Some(group) => Some(group),
            None => {
                self.storage
                    .state_group_before(room_id, timeline.start)
                    .await?
            }
        };
        // The value to send per slot.
        let mut send: HashMap<Slot, OwnedEventId> = HashMap::new();
        // What the client had before this sync, where it differs from the
        // state at the timeline's start (only when state changed unseen).
        let mut had: Option<HashMap<Slot, OwnedEventId>> = None;
        if fresh || changed_before_start {
            if !fresh && let Some(after) = range.after {
                let group = self
                    .storage
                    .state_group_before(room_id, StreamPosition(after.0 + 1))
                    .await?;
                had = Some(self.state_map(group).await?);
            }
            let empty = HashMap::new();
            let before = had.as_ref().unwrap_or(&empty);
            for (slot, event_id) in self.state_map(start_group).await? {
                if before.get(&slot) != Some(&event_id) {
                    send.insert(slot, event_id);
                }
            }
        }
        // A slot the timeline leaves out after its start ends at its value
        // at `upto`; sent when the client had another.
        let mut ends: HashMap<&Slot, Option<OwnedEventId>> = HashMap::new();
        if !inside.is_empty() {
            let end_group = self
                .storage
                .state_group_before(room_id, StreamPosition(range.upto.0 + 1))
                .await?;
            for slot in inside {
                let end = self.state_entry(end_group, slot).await?;
                let before = if fresh {
                    None
                } else if let Some(had) = &had {
                    had.get(slot).cloned()
                } else {
                    self.state_entry(start_group, slot).await?
                };
                match &end {
                    Some(end) if before.as_ref() != Some(end) => {
                        send.insert(slot.clone(), end.clone());
                    }
                    _ => {
                        send.remove(slot);
                    }
                }
                ends.insert(slot, end);
            }
        }
        if filter.lazy_load_members {
            send.retain(|(kind, key), _| {
                kind != MEMBER || wanted_members.iter().any(|m| m.as_str() == key)
            });
            for member in wanted_members {
                let slot = (MEMBER.to_owned(), member.as_str().to_owned());
                let value = match (send.get(&slot), ends.get(&slot)) {
                    (Some(value), _) => Some(value.clone()),
                    (None, Some(end)) => end.clone(),
                    (None, None) => self.state_entry(start_group, &slot).await?,
                };
                let Some(value) = value else { continue };
                let has_it = !fresh
                    && filter.omits_redundant_members()
                    && context.since.is_some_and(|since| {
                        self.lazy_members
                            .has(&context.stream, since, room_id, member, &value)
                    });
                if has_it {
                    send.remove(&slot);
                } else {
                    send.insert(slot, value);
                }
            }
        }
        let mut send: Vec<(Slot, OwnedEventId)> = send
            .into_iter()
            .filter(|((kind, _), _)| filter.allows_type(kind))
            .collect();
        send.sort();
        let mut state = Vec::with_capacity(send.len());
        for (_, event_id) in send {
            state.push(self.events.pdu(range.version, &event_id).await?);
        }
        Ok(state)
    }

    /// A state group as a map; empty for no group (no events yet).
    async fn state_map(
        &self,
        group: Option<i64>,
    ) -> Result<HashMap<Slot, OwnedEventId>, ServiceError> {
        let Some(group) = group else {
            return Ok(HashMap::new());
        };
        Ok(self
            .storage
            .state_group_entries(group)
            .await?
            .into_iter()
            .map(|entry| ((entry.event_type, entry.state_key), entry.event_id))
            .collect())
    }

    /// One slot of a state group.
    async fn state_entry(
        &self,
        group: Option<i64>,
        (kind, key): &Slot,
    ) -> Result<Option<OwnedEventId>, ServiceError> {
        match group {
            Some(group) => Ok(self.storage.state_group_entry(group, kind, key).await?),
            None => Ok(None),
        }
    }
}
