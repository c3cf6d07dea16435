//! Reading history: `/messages` pagination and single events, with the same
//! visibility rules as sync.

use std::collections::{HashMap, HashSet};

use ruma::{DeviceId, EventId, OwnedEventId, OwnedUserId, RoomId, UserId, events::StateEventType};

use super::{StreamToken, Sync, filter::EventFilter, to_pdu, visibility::Visibility};
use crate::{
    service::{ServiceError, rooms::pdu::Pdu},
    storage::{StoredEvent, StreamPosition},
};

/// Most events one `/messages` page returns.
pub const MAX_PAGE: u32 = 1000;
/// Events read per query after the first while filling a page.
const PAGE_SCAN_BATCH: usize = 50;
/// Most events one page reads past hidden or filtered ones; beyond it the
/// page ends early, with an `end` to continue from.
const MAX_PAGE_SCAN: usize = 2000;

/// A page of history.
#[derive(Debug, Clone)]
pub struct Page {
    /// The events, in the direction asked for.
    pub events: Vec<Pdu>,
    /// Where the page starts.
    pub start: StreamToken,
    /// Where the next page starts; `None` when there are no more events.
    pub end: Option<StreamToken>,
    /// With `lazy_load_members`: each sender's membership as of their
    /// first event in the page.
    pub state: Vec<Pdu>,
}

/// An event with the history around it, as `/context` returns it.
#[derive(Debug, Clone)]
pub struct Context {
    /// The event asked for.
    pub event: Pdu,
    /// Visible events before it, newest first.
    pub before: Vec<Pdu>,
    /// Visible events after it, oldest first.
    pub after: Vec<Pdu>,
    /// Where to paginate backwards from.
    pub start: StreamToken,
    /// Where to paginate forwards from.
    pub end: StreamToken,
    /// The room state after the last event returned; with
    /// `lazy_load_members`, only the returned events' senders' memberships.
    pub state: Vec<Pdu>,
}

/// Which way to paginate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Older events first.
    Backward,
    /// Newer events first.
    Forward,
}

impl Sync {
    /// A page of a room's history from `from` (a sync or pagination token).
    ///
    /// # Errors
    /// `Forbidden` when the user never was in the room (or forgot it) and
    /// its history is not world-readable, and for an unknown room.
    #[allow(clippy::too_many_arguments)]
    pub async fn messages(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        from: Option<StreamToken>,
        to: Option<StreamToken>,
        direction: Direction,
        limit: u32,
        filter: &EventFilter,
    ) -> Result<Page, ServiceError> {
        let joined_now = self.may_read(user_id, room_id).await?;
        let version = self.events.room_version(room_id).await?;
        let now = self.events.current_position();
        let limit = limit.clamp(1, MAX_PAGE) as usize;
        // The range still to read, `(after, upto]`, shrinking from the `from` side.
        let (from, mut after, mut upto) = match direction {
            Direction::Backward => {
                let from = from.map_or(now, |t| t.0.min(now));
                (from, to.map_or(StreamPosition(0), |t| t.0), from)
            }
            Direction::Forward => {
                let from = from.map_or(StreamPosition(0), |t| t.0);
                (from, from, to.map_or(now, |t| t.0.min(now)))
            }
        };
        // `limit` is "the maximum number of events to return", so read past
        // hidden and filtered events (up to a bound) to fill the page; when
        // the range runs out, there is no `end`: nothing further is visible.
        let mut visibility = Visibility::new(self.storage.as_ref(), user_id);
        let mut events = Vec::with_capacity(limit);
        let mut sender_groups: HashMap<OwnedUserId, i64> = HashMap::new();
        let mut batch = limit + 1;
        let mut scanned = 0;
        let mut more = false;
        'scan: loop {
            let stored = self
                .storage
                .room_events(
                    room_id,
                    after,
                    upto,
                    batch as u32,
                    direction == Direction::Backward,
                )
                .await?;
            let exhausted = stored.len() < batch;
            batch = batch.max(PAGE_SCAN_BATCH);
            for event in &stored {
                if events.len() == limit || scanned == MAX_PAGE_SCAN {
                    more = true;
                    break 'scan;
                }
                scanned += 1;
                match direction {
                    Direction::Backward => upto = StreamPosition(event.position.0 - 1),
                    Direction::Forward => after = event.position,
                }
                let pdu = to_pdu(version, event)?;
                if visibility.can_see(event, &pdu, joined_now).await?
                    && filter.allows_event(&pdu.kind().to_string(), pdu.sender())
                {
                    if filter.lazy_load_members && !sender_groups.contains_key(pdu.sender()) {
                        sender_groups.insert(pdu.sender().to_owned(), event.state_group);
                    }
                    events.push(pdu);
                }
            }
            if exhausted {
                break;
            }
        }
        let end = more.then_some(match direction {
            Direction::Backward => StreamToken(upto),
            Direction::Forward => StreamToken(after),
        });
        let mut state = Vec::new();
        for (sender, group) in sender_groups {
            if let Some(event_id) = self
                .storage
                .state_group_entry(group, "m.room.member", sender.as_str())
                .await?
            {
                state.push(self.events.pdu(version, &event_id).await?);
            }
        }
        Ok(Page {
            events,
            start: StreamToken(from),
            end,
            state,
        })
    }

    /// An event and up to `limit` visible events around it, half before
    /// and half after, filtered like a `/messages` page.
    ///
    /// # Errors
    /// As [`Sync::event`].
    pub async fn context(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        event_id: &EventId,
        limit: u32,
        filter: &EventFilter,
    ) -> Result<Context, ServiceError> {
        // One who may not read the room is told so (403), as for /messages;
        // an event they cannot see in a room they can read is not found.
        let joined_now = self.may_read(user_id, room_id).await?;
        let (stored, event) = self
            .visible_event(user_id, room_id, event_id, joined_now)
            .await?;
        // Forward pages end at the position read now, so `end` continues
        // exactly where events_after stop.
        let now = self.events.current_position();
        let limit = limit.min(MAX_PAGE);
        let (before_limit, after_limit) = (limit / 2, limit - limit / 2);
        let just_before = StreamToken(StreamPosition(stored.position.0 - 1));
        let (before, start) = if before_limit == 0 {
            (Vec::new(), just_before)
        } else {
            let page = self
                .messages(
                    user_id,
                    room_id,
                    Some(just_before),
                    None,
                    Direction::Backward,
                    before_limit,
                    filter,
                )
                .await?;
            // Nothing further back is visible: paginating from the start of
            // the stream returns nothing, as it should.
            (
                page.events,
                page.end.unwrap_or(StreamToken(StreamPosition(0))),
            )
        };
        let (after, end) = if after_limit == 0 {
            (Vec::new(), StreamToken(stored.position))
        } else {
            let page = self
                .messages(
                    user_id,
                    room_id,
                    Some(StreamToken(stored.position)),
                    Some(StreamToken(now)),
                    Direction::Forward,
                    after_limit,
                    filter,
                )
                .await?;
            (page.events, page.end.unwrap_or(StreamToken(now)))
        };
        let last_group = match after.last() {
            Some(last) => {
                self.storage
                    .event(last.event_id())
                    .await?
                    .ok_or_else(|| {
                        ServiceError::Internal("a returned event is not stored".to_owned())
                    })?
                    .state_group
            }
            None => stored.state_group,
        };
        let senders: HashSet<&UserId> = before
            .iter()
            .chain([&event])
            .chain(&after)
            .map(Pdu::sender)
            .collect();
        let version = self.events.room_version(room_id).await?;
        let mut state = Vec::new();
        for entry in self.storage.state_group_entries(last_group).await? {
            let needed = !filter.lazy_load_members
                || entry.event_type != "m.room.member"
                || senders.iter().any(|s| s.as_str() == entry.state_key);
            if needed {
                state.push(self.events.pdu(version, &entry.event_id).await?);
            }
        }
        Ok(Context {
            event,
            before,
            after,
            start,
            end,
            state,
        })
    }

    /// One event of a room, if the user may see it.
    ///
    /// # Errors
    /// `NotFound` when it does not exist in this room or is hidden from the user.
    pub async fn event(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> Result<Pdu, ServiceError> {
        let not_found = || ServiceError::NotFound("no such event".to_owned());
        let joined_now = self
            .may_read(user_id, room_id)
            .await
            .map_err(|_| not_found())?;
        Ok(self
            .visible_event(user_id, room_id, event_id, joined_now)
            .await?
            .1)
    }

    /// An event as stored and parsed, if the user (who may read the room,
    /// `joined_now` when joined) may see it.
    async fn visible_event(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        event_id: &EventId,
        joined_now: bool,
    ) -> Result<(StoredEvent, Pdu), ServiceError> {
        let not_found = || ServiceError::NotFound("no such event".to_owned());
        let stored = self
            .storage
            .event(event_id)
            .await?
            .filter(|e| e.room_id == room_id)
            .ok_or_else(not_found)?;
        let pdu = to_pdu(self.events.room_version(room_id).await?, &stored)?;
        let mut visibility = Visibility::new(self.storage.as_ref(), user_id);
        if visibility.can_see(&stored, &pdu, joined_now).await? {
            Ok((stored, pdu))
        } else {
            Err(not_found())
        }
    }

    /// The transaction ids `device_id` sent any of these events with: the
    /// ClientEvent format shows a transaction id to the sending device only,
    /// on every endpoint that returns the event.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn own_transaction_ids(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        events: &[Pdu],
    ) -> Result<HashMap<OwnedEventId, String>, ServiceError> {
        let own: Vec<OwnedEventId> = events
            .iter()
            .filter(|pdu| pdu.sender() == user_id)
            .map(|pdu| pdu.event_id().to_owned())
            .collect();
        if own.is_empty() {
            return Ok(HashMap::new());
        }
        Ok(self
            .storage
            .transaction_ids(user_id, device_id, &own)
            .await?
            .into_iter()
            .collect())
    }

    /// Whether the user is joined now; refuses users who never were in the
    /// room (or forgot it) unless its history is world-readable, and
    /// unknown rooms alike.
    async fn may_read(&self, user_id: &UserId, room_id: &RoomId) -> Result<bool, ServiceError> {
        let (membership, member, world_readable) = self
            .events
            .read_state(room_id, |state| {
                let membership = state.membership_of(user_id.as_str()).map(ToOwned::to_owned);
                let member = state
                    .get(&StateEventType::RoomMember, user_id.as_str())
                    .cloned();
                (membership, member, state.is_world_readable())
            })
            .await?
            // An unknown room is one nobody was ever in: answer as for any
            // room the user is not in, which reveals nothing.
            .ok_or_else(ServiceError::not_in_room)?;
        let membership = membership.as_deref();
        let joined_now = membership == Some("join");
        if world_readable {
            return Ok(joined_now);
        }
        let forgotten = || async {
            // Forgotten rooms drop out of the user's memberships until they
            // join again.
            Ok::<_, ServiceError>(
                !self
                    .storage
                    .memberships_of(user_id, None)
                    .await?
                    .iter()
                    .any(|m| m.room_id == room_id),
            )
        };
        // "After this API is called, however, a user will no longer be able
        // to retrieve history for this room" (spec, `/forget`).
        if membership.is_none()
            || matches!(membership, Some("leave" | "ban")) && forgotten().await?
        {
            return Err(ServiceError::not_in_room());
        }
        // Someone who left without ever having been joined or invited
        // (banned first) has no history to read; what a past stay lets them
        // read, the visibility rules decide event by event.
        if matches!(membership, Some("leave" | "ban"))
            && let Some(member) = member
            && self
                .events
                .last_departure(&member, &["join", "invite"])
                .await?
                .is_none()
        {
            return Err(ServiceError::not_in_room());
        }
        Ok(joined_now)
    }
}

impl Sync {
    /// Stores a sync filter for the user and returns its id.
    ///
    /// # Errors
    /// `BadJson`-like `InvalidParam` when it is not a filter.
    pub async fn create_filter(
        &self,
        user_id: &UserId,
        json: &str,
    ) -> Result<String, ServiceError> {
        let limits = self.filter_limits;
        if json.len() > limits.max_bytes {
            return Err(ServiceError::TooLarge(format!(
                "a filter is limited to {} bytes",
                limits.max_bytes
            )));
        }
        serde_json::from_str::<super::filter::Filter>(json)
            .map_err(|e| ServiceError::InvalidParam(format!("invalid filter: {e}")))?;
        // Clients upload the same filter at every start: answer its id
        // instead of keeping another copy. Two racing uploads may pass the
        // cap by one each; it bounds growth, not an exact count.
        if let Some(id) = self.storage.filter_id_for(user_id, json).await? {
            return Ok(id.to_string());
        }
        if self.storage.filter_count(user_id).await? >= limits.per_user {
            return Err(ServiceError::Forbidden(format!(
                "an account may keep at most {} sync filters",
                limits.per_user
            )));
        }
        // Two clients of one user may race for the next id; the loser retries.
        let mut attempts = 3;
        loop {
            match self.storage.create_filter(user_id, json).await {
                Ok(id) => return Ok(id.to_string()),
                Err(crate::storage::StorageError::Conflict(_)) if attempts > 1 => attempts -= 1,
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// A stored sync filter, verbatim.
    ///
    /// # Errors
    /// `NotFound` for an unknown id.
    pub async fn filter_json(
        &self,
        user_id: &UserId,
        filter_id: &str,
    ) -> Result<String, ServiceError> {
        let not_found = || ServiceError::NotFound("no such filter".to_owned());
        let id: i64 = filter_id.parse().map_err(|_| not_found())?;
        self.storage
            .filter(user_id, id)
            .await?
            .ok_or_else(not_found)
    }
}
