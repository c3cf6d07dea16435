//! `GET /sync`: what changed for a user since a stream position.
//!
//! A sync token is a stream position; an incremental sync returns what
//! became visible in `(since, now]`, where `now` is read once, before any
//! query, so events committed meanwhile wait for the next sync and none is
//! ever returned twice or skipped. Memberships are read as of `since` and
//! `now` from their history for the same reason.

pub mod event_fields;
pub mod filter;
pub mod history;
mod lazy_members;
mod room_state;
mod timeline;
pub mod visibility;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    fmt,
    sync::Arc,
    time::Duration,
};

use ruma::{
    DeviceId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId, events::StateEventType,
};

use super::to_device::ToDevice;
use super::typing::Typing;
use super::{
    ServiceError,
    e2ee::{DeviceListUpdate, DeviceLists, keys::one_time_key_counts},
    notifier::Notifier,
    room_events::{RoomEvents, RoomState},
    rooms::pdu::Pdu,
    rooms::version::RoomVersion,
    stream::Kind,
};
use crate::storage::{
    AccountDataEntry, Membership, NotificationCounts, PresenceState, Receipt, Storage, StoredEvent,
    StreamPosition, ToDeviceMessage,
};
use filter::Filter;
use lazy_members::{LazyMembers, StreamKey};
use timeline::TimelineRange;
use visibility::Visibility;

/// Most presence changes one sync carries (the latest ones).
const MAX_PRESENCE_CHANGES: u32 = 500;

/// Longest a sync waits for push rule evaluation before reading counts.
const PUSH_EVALUATION_WAIT: Duration = Duration::from_secs(1);

/// Longest a sync may wait for news.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(120);

/// A position in the event stream, as clients see it: `s` and the number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct StreamToken(pub StreamPosition);

impl StreamToken {
    /// Parses a token this server issued.
    ///
    /// # Errors
    /// `InvalidParam` for anything else.
    pub fn parse(token: &str) -> Result<Self, ServiceError> {
        SyncToken::parse(token).map(|sync| Self(sync.position))
    }
}

/// A sync token: the stream position and the typing counter (`s12_3`),
/// and, when a sync carried only part of the device's to-device messages,
/// the position of the last one it carried (`s12_3_9`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncToken {
    /// Everything persisted up to here was delivered.
    pub position: StreamPosition,
    /// Typing changes up to here were delivered; `None` when the token
    /// predates the counter (a restart resets it), so typing is sent afresh.
    pub typing: Option<u64>,
    /// To-device messages were delivered only up to here (below `position`);
    /// `None` when they were delivered up to `position`.
    pub to_device: Option<StreamPosition>,
}

impl SyncToken {
    /// Parses a token this server issued.
    ///
    /// # Errors
    /// `InvalidParam` for anything else.
    pub fn parse(token: &str) -> Result<Self, ServiceError> {
        let invalid = || ServiceError::InvalidParam("unknown stream token".to_owned());
        let position_of = |text: &str| {
            text.parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .map(StreamPosition)
                .ok_or_else(invalid)
        };
        let body = token.strip_prefix('s').ok_or_else(invalid)?;
        let mut parts = body.split('_');
        let position = position_of(parts.next().unwrap_or_default())?;
        let typing = parts
            .next()
            .map(|typing| typing.parse::<u64>().map_err(|_| invalid()))
            .transpose()?;
        let to_device = parts.next().map(position_of).transpose()?;
        if parts.next().is_some() || to_device.is_some_and(|to_device| to_device >= position) {
            return Err(invalid());
        }
        Ok(Self {
            position,
            typing,
            to_device,
        })
    }

    /// The position up to which the token's holder has its to-device messages.
    pub fn to_device_position(&self) -> StreamPosition {
        self.to_device.unwrap_or(self.position)
    }
}

impl fmt::Display for SyncToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}_{}", self.position.0, self.typing.unwrap_or(0))?;
        match self.to_device {
            Some(to_device) => write!(f, "_{}", to_device.0),
            None => Ok(()),
        }
    }
}

impl fmt::Display for StreamToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}", self.0.0)
    }
}

/// A sync request.
#[derive(Debug, Clone, Default)]
pub struct SyncRequest {
    /// Where the last sync ended; `None` for an initial sync.
    pub since: Option<SyncToken>,
    /// How long to wait for news when there is none.
    pub timeout: Duration,
    /// Send the full state of every joined room.
    pub full_state: bool,
    /// What to include.
    pub filter: Filter,
    /// The filter as the client named it (its id or its inline JSON): with
    /// the device, the sync stream lazy-loading remembers members for.
    pub filter_key: String,
}

/// What every room of one sync shares.
struct SyncContext<'a> {
    user_id: &'a UserId,
    request: &'a SyncRequest,
    /// The client's token position, `None` for an initial sync.
    since: Option<StreamPosition>,
    /// The stream lazy-loaded members are remembered for.
    stream: StreamKey,
    /// The position this sync answers up to (its `next_batch`).
    now: StreamPosition,
}

/// A room's timeline in a sync.
#[derive(Debug, Clone)]
pub struct Timeline {
    /// Events, oldest first.
    pub events: Vec<Pdu>,
    /// Whether events the filter wants, older than these (and newer than
    /// `since`), were left out.
    pub limited: bool,
    /// Where to paginate backwards from.
    pub prev_batch: StreamToken,
}

/// A joined (or left) room in a sync.
#[derive(Debug, Clone)]
pub struct RoomUpdate {
    /// The room.
    pub room_id: OwnedRoomId,
    /// State between `since` and the timeline's start.
    pub state: Vec<Pdu>,
    /// New events.
    pub timeline: Timeline,
    /// The user's account data for the room that changed.
    pub account_data: Vec<AccountDataEntry>,
    /// Receipts that changed (others' private receipts left out).
    pub receipts: Vec<Receipt>,
    /// Who types now, when that changed.
    pub typing: Option<BTreeSet<OwnedUserId>>,
    /// Messages from others after the user's read receipt (MSC2654).
    pub unread_count: u64,
    /// Events that notified the user after their read receipt, by their
    /// push rules, and how many of them highlight.
    pub notifications: NotificationCounts,
    /// Member counts and heroes, for naming the room.
    pub summary: Option<RoomSummary>,
}

/// What clients need to name a room without its full member list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomSummary {
    /// Joined members.
    pub joined_member_count: u64,
    /// Invited members.
    pub invited_member_count: u64,
    /// Up to five other members, for rooms without a name or canonical
    /// alias (`None` for the others).
    pub heroes: Option<Vec<OwnedUserId>>,
}

impl RoomUpdate {
    /// An update with no events; its timeline pages back from `upto`.
    fn empty(room_id: &RoomId, upto: StreamPosition) -> Self {
        Self {
            room_id: room_id.to_owned(),
            state: Vec::new(),
            timeline: Timeline {
                events: Vec::new(),
                limited: false,
                prev_batch: StreamToken(upto),
            },
            account_data: Vec::new(),
            receipts: Vec::new(),
            typing: None,
            unread_count: 0,
            notifications: NotificationCounts::default(),
            summary: None,
        }
    }

    fn has_news(&self) -> bool {
        // A limited timeline with no events (`limit: 0`) still tells of
        // events the client skipped.
        !self.timeline.events.is_empty()
            || self.timeline.limited
            || !self.state.is_empty()
            || !self.account_data.is_empty()
            || !self.receipts.is_empty()
            || self.typing.is_some()
    }
}

/// An invite in a sync.
#[derive(Debug, Clone)]
pub struct InviteUpdate {
    /// The room.
    pub room_id: OwnedRoomId,
    /// The state that describes the room to the invitee, with the invite itself.
    pub invite_state: Vec<Pdu>,
    /// For an invite from another server to a room this server does not
    /// hold: the stripped state events that server sent with it.
    pub remote_state: Vec<serde_json::Value>,
}

/// A sync response.
#[derive(Debug, Clone)]
pub struct SyncResponse {
    /// The token for the next sync.
    pub next_batch: SyncToken,
    /// Global account data that changed.
    pub account_data: Vec<AccountDataEntry>,
    /// Presence that changed, of the user and those sharing a room with them.
    pub presence: Vec<(OwnedUserId, PresenceState)>,
    /// Joined rooms with news.
    pub joined: Vec<RoomUpdate>,
    /// Pending invites.
    pub invited: Vec<InviteUpdate>,
    /// Pending knocks, with the stripped state (and the knock itself).
    pub knocked: Vec<InviteUpdate>,
    /// Rooms the user left (or was removed from).
    pub left: Vec<RoomUpdate>,
    /// Transaction ids of the syncing device's own events.
    pub transaction_ids: HashMap<OwnedEventId, String>,
    /// Whose device lists changed (incremental syncs only).
    pub device_lists: DeviceListUpdate,
    /// The syncing device's unclaimed one-time keys by algorithm.
    pub one_time_key_counts: BTreeMap<String, u64>,
    /// The algorithms of the syncing device's unused fallback keys.
    pub unused_fallback_key_types: Vec<String>,
    /// To-device messages for the syncing device, oldest first.
    pub to_device: Vec<ToDeviceMessage>,
}

impl SyncResponse {
    fn is_empty(&self) -> bool {
        self.to_device.is_empty()
            && self.joined.is_empty()
            && self.invited.is_empty()
            && self.knocked.is_empty()
            && self.left.is_empty()
            && self.account_data.is_empty()
            && self.presence.is_empty()
            && self.device_lists.is_empty()
    }
}

/// The sync service.
#[derive(Debug)]
pub struct Sync {
    storage: Arc<dyn Storage>,
    events: Arc<RoomEvents>,
    notifier: Arc<Notifier>,
    typing: Arc<Typing>,
    device_lists: Arc<DeviceLists>,
    to_device: Arc<ToDevice>,
    filter_limits: FilterLimits,
    lazy_members: LazyMembers,
}

/// How large and how many sync filters an account may keep.
#[derive(Debug, Clone, Copy)]
pub struct FilterLimits {
    /// Largest filter, in bytes of JSON.
    pub max_bytes: usize,
    /// Most distinct filters per account.
    pub per_user: u64,
}

impl Sync {
    /// Builds the service.
    pub fn new(
        storage: Arc<dyn Storage>,
        events: Arc<RoomEvents>,
        notifier: Arc<Notifier>,
        typing: Arc<Typing>,
        device_lists: Arc<DeviceLists>,
        to_device: Arc<ToDevice>,
        filter_limits: FilterLimits,
    ) -> Self {
        Self {
            storage,
            events,
            notifier,
            typing,
            device_lists,
            to_device,
            filter_limits,
            lazy_members: LazyMembers::default(),
        }
    }

    /// Syncs, waiting up to `request.timeout` when there is nothing new.
    ///
    /// # Errors
    /// `InvalidParam` for a token from the future; storage failures.
    pub async fn sync(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        request: &SyncRequest,
    ) -> Result<SyncResponse, ServiceError> {
        if let Some(since) = request.since
            && since.position > self.events.current_position()
        {
            return Err(ServiceError::InvalidParam(
                "the since token is from the future".to_owned(),
            ));
        }
        let deadline = tokio::time::Instant::now() + request.timeout.min(MAX_TIMEOUT);
        loop {
            // Listen before looking, so a write in between still wakes us.
            let mut listener = self.notifier.listen_device(user_id, device_id);
            // Boxed: a parked long-poll then holds only this loop's few
            // locals, not room for every step of computing a response.
            let response = Box::pin(self.compute(user_id, device_id, request)).await?;
            let must_answer = request.since.is_none() || request.full_state || !response.is_empty();
            if must_answer {
                return Ok(response);
            }
            if tokio::time::timeout_at(deadline, listener.woken())
                .await
                .is_err()
            {
                return Ok(response);
            }
        }
    }

    /// The presence changes in `(since, now]` of the user and of the users
    /// joined to one of `joined` (the user's rooms).
    async fn presence_of_room_mates(
        &self,
        user_id: &UserId,
        since: Option<StreamPosition>,
        now: StreamPosition,
        joined: &BTreeSet<OwnedRoomId>,
    ) -> Result<Vec<(OwnedUserId, PresenceState)>, ServiceError> {
        let changes = self
            .storage
            .presence_changes(
                since.unwrap_or(StreamPosition(0)),
                now,
                MAX_PRESENCE_CHANGES,
            )
            .await?;
        if changes.is_empty() {
            return Ok(changes);
        }
        // The room mates, once, from the rooms' cached state (not one
        // membership query per changed user).
        let mut mates: HashSet<OwnedUserId> = HashSet::from([user_id.to_owned()]);
        for room_id in joined {
            mates.extend(self.events.joined_members(room_id).await?);
        }
        let shown = changes
            .into_iter()
            .filter(|(other, _)| mates.contains(other))
            .collect();
        Ok(shown)
    }

    async fn compute(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        request: &SyncRequest,
    ) -> Result<SyncResponse, ServiceError> {
        let now = self.events.current_position();
        let typing_now = self.typing.current();
        let since = request.since.map(|token| token.position);
        let room_filter = &request.filter.room;
        // Kinds with nothing new since the token need no query (most
        // incremental syncs wake for a room event and nothing else).
        let changed = |kind| since.is_none_or(|since| self.events.changed_since(kind, since));
        let memberships_now = self.storage.memberships_of(user_id, Some(now)).await?;
        let joined_now = joined_rooms(&memberships_now);
        let before: HashMap<OwnedRoomId, Membership> = match since {
            Some(_) if !changed(Kind::Membership) => memberships_now
                .iter()
                .map(|m| (m.room_id.clone(), m.clone()))
                .collect(),
            Some(since) => self
                .storage
                .memberships_of(user_id, Some(since))
                .await?
                .into_iter()
                .map(|m| (m.room_id.clone(), m))
                .collect(),
            None => HashMap::new(),
        };
        let active: HashSet<OwnedRoomId> = match since {
            // Nothing can have happened in an empty range (a long-poll's
            // first look, mostly).
            Some(since) if since == now => HashSet::new(),
            Some(since) => self
                .storage
                .rooms_with_events(since, now)
                .await?
                .into_iter()
                .collect(),
            None => HashSet::new(),
        };
        // Counts are read once push rules have been evaluated for every
        // event up to `now`, so they match the timeline (a moment at most:
        // past it, they may trail by the events still being evaluated).
        self.events.push_evaluated(PUSH_EVALUATION_WAIT).await;
        let mut account_data: Vec<AccountDataEntry> = if changed(Kind::AccountData) {
            self.storage
                .account_data_changes(user_id, since.unwrap_or(StreamPosition(0)), now)
                .await?
        } else {
            Vec::new()
        };
        let to_device = self
            .to_device
            .deliver(
                user_id,
                device_id,
                request.since.map(|token| token.to_device_position()),
                now,
            )
            .await?;
        let mut response = SyncResponse {
            next_batch: SyncToken {
                position: now,
                typing: Some(typing_now),
                to_device: to_device.delivered_upto,
            },
            to_device: to_device.messages,
            account_data: Vec::new(),
            presence: Vec::new(),
            joined: Vec::new(),
            invited: Vec::new(),
            knocked: Vec::new(),
            left: Vec::new(),
            transaction_ids: HashMap::new(),
            device_lists: DeviceListUpdate::default(),
            one_time_key_counts: BTreeMap::new(),
            unused_fallback_key_types: Vec::new(),
        };
        let context = SyncContext {
            user_id,
            request,
            since,
            stream: StreamKey::new(user_id, device_id, &request.filter_key),
            now,
        };
        // A client that starts over has forgotten the members it was sent.
        if since.is_none() {
            self.lazy_members.reset(&context.stream);
        }
        let mut visibility = Visibility::new(self.storage.as_ref(), user_id);
        let mut first_pages = match since {
            None => {
                self.first_timeline_pages(&memberships_now, request, now)
                    .await?
            }
            Some(_) => HashMap::new(),
        };
        for membership in memberships_now {
            let room_id = &membership.room_id;
            if !room_filter.allows_room(room_id) {
                continue;
            }
            let was = before.get(room_id).map(|m| m.membership.as_str());
            let changed = since.is_none_or(|since| membership.position > since);
            match membership.membership.as_str() {
                "join" => {
                    let newly_joined = was != Some("join");
                    let active = newly_joined || request.full_state || active.contains(room_id);
                    let mut update = if active {
                        let range = TimelineRange {
                            room_id,
                            version: self.events.room_version(room_id).await?,
                            after: if newly_joined { None } else { since },
                            upto: now,
                            joined_now: true,
                        };
                        let full_state = newly_joined || request.full_state;
                        self.room_update(
                            &context,
                            range,
                            full_state,
                            &mut visibility,
                            first_pages.remove(room_id),
                        )
                        .await?
                    } else {
                        RoomUpdate::empty(room_id, now)
                    };
                    let (mut room_data, rest): (Vec<_>, Vec<_>) = account_data
                        .into_iter()
                        .partition(|entry| entry.room_id.as_ref() == Some(room_id));
                    account_data = rest;
                    let room_data_filter = &room_filter.account_data;
                    if room_data_filter.allows_room(room_id) {
                        room_data_filter.retain_limited(&mut room_data, |filter, entry| {
                            filter.allows_event(&entry.data_type, user_id)
                        });
                        update.account_data = room_data;
                    }
                    self.add_ephemeral(&context, &mut update, newly_joined.then_some(&membership))
                        .await?;
                    if update.has_news() || request.full_state || newly_joined {
                        update.unread_count =
                            self.storage.count_unread(room_id, user_id, now).await?;
                        update.notifications = self
                            .storage
                            .notification_counts(room_id, user_id, now)
                            .await?;
                        update.summary = self.summary(room_id, user_id).await?;
                        response.joined.push(update);
                    }
                }
                "invite" if changed => {
                    let invite = self.invite_update(room_id, &membership).await?;
                    // Invites from ignored users are suppressed (Ignoring Users).
                    let from_ignored = match invite.invite_state.last() {
                        Some(pdu) => visibility.is_ignored(pdu.sender()).await?,
                        None => false,
                    };
                    if !from_ignored {
                        response.invited.push(invite);
                    }
                }
                "knock" if changed => {
                    response
                        .knocked
                        .push(self.invite_update(room_id, &membership).await?);
                }
                "leave" | "ban" if changed => {
                    let was_in = matches!(was, Some("join" | "invite" | "knock"));
                    if was_in || (since.is_none() && room_filter.include_leave) {
                        let update = match self.events.room_version(room_id).await {
                            Ok(version) => {
                                let range = TimelineRange {
                                    room_id,
                                    version,
                                    after: since,
                                    upto: membership.position,
                                    joined_now: false,
                                };
                                self.room_update(
                                    &context,
                                    range,
                                    since.is_none(),
                                    &mut visibility,
                                    None,
                                )
                                .await?
                            }
                            // A rejected invite to a room held elsewhere:
                            // nothing to show but that it is left.
                            Err(ServiceError::NotFound(_)) => {
                                RoomUpdate::empty(room_id, membership.position)
                            }
                            Err(error) => return Err(error),
                        };
                        response.left.push(update);
                    }
                }
                _ => {}
            }
        }
        response.account_data = account_data
            .into_iter()
            .filter(|entry| entry.room_id.is_none())
            .collect();
        request
            .filter
            .account_data
            .retain_limited(&mut response.account_data, |filter, entry| {
                filter.allows_event(&entry.data_type, user_id)
            });
        let own_events: Vec<OwnedEventId> = response
            .joined
            .iter()
            .chain(&response.left)
            .flat_map(|room| &room.timeline.events)
            .filter(|pdu| pdu.sender() == user_id)
            .map(|pdu| pdu.event_id().to_owned())
            .collect();
        if !own_events.is_empty() {
            response.transaction_ids = self
                .storage
                .transaction_ids(user_id, device_id, &own_events)
                .await?
                .into_iter()
                .collect();
        }
        // An initial sync lists no device changes: the client has tracked
        // nobody yet and queries the keys of the members it sees.
        if let Some(since) = since
            && (changed(Kind::DeviceList) || changed(Kind::Membership))
        {
            let joined_then = joined_rooms(before.values());
            response.device_lists = self
                .device_lists
                .changes_in_rooms(user_id, since, now, &joined_then, &joined_now)
                .await?;
        }
        if changed(Kind::Presence) {
            response.presence = self
                .presence_of_room_mates(user_id, since, now, &joined_now)
                .await?;
            request
                .filter
                .presence
                .retain_limited(&mut response.presence, |filter, (sender, _)| {
                    filter.allows_event("m.presence", sender)
                });
        }
        response.one_time_key_counts =
            one_time_key_counts(self.storage.as_ref(), user_id, device_id).await?;
        response.unused_fallback_key_types = self
            .storage
            .unused_fallback_key_types(user_id, device_id)
            .await?;
        Ok(response)
    }

    /// A joined room's receipts and typing since the token, as the
    /// filter's `room.ephemeral` allows them. `joined`, for a room the
    /// user has just joined, is their membership: receipts from before it
    /// are not theirs to see, nor is who typed before.
    async fn add_ephemeral(
        &self,
        context: &SyncContext<'_>,
        update: &mut RoomUpdate,
        joined: Option<&Membership>,
    ) -> Result<(), ServiceError> {
        let filter = &context.request.filter.room.ephemeral;
        let room_id = update.room_id.as_ref();
        if !filter.allows_room(room_id) {
            return Ok(());
        }
        let mut room_left = filter.given_limit().unwrap_or(usize::MAX);
        // Receipts from before the user's membership event are not theirs
        // to see: a newcomer learns nothing of who read what before they
        // came. (In a first sync the latest member event counts, so a
        // profile change hides what was read before it too.)
        let receipts_from = match joined {
            Some(membership) => membership.position,
            None => context.since.unwrap_or(StreamPosition(0)),
        };
        if room_left > 0
            && filter.allows_type("m.receipt")
            && self.events.changed_since(Kind::Receipt, receipts_from)
        {
            let user_id = context.user_id;
            update.receipts = self
                .storage
                .receipts_between(room_id, receipts_from, context.now)
                .await?
                .into_iter()
                .filter(|r| r.receipt_type == "m.read" || r.user_id == user_id.as_str())
                .filter(|r| {
                    <&UserId>::try_from(r.user_id.as_str())
                        .is_ok_and(|reader| filter.allows_sender(reader))
                })
                .collect();
            if !update.receipts.is_empty() {
                room_left -= 1;
            }
        }
        if room_left > 0 && filter.allows_type("m.typing") {
            let typing_since = context.request.since.and_then(|token| token.typing);
            update.typing = self
                .typing
                .typers_since(room_id, if joined.is_some() { None } else { typing_since });
        }
        Ok(())
    }

    /// For an initial sync: the first page `room_update` reads for each
    /// joined room (its newest events), all in one query instead of one per room.
    async fn first_timeline_pages(
        &self,
        memberships: &[Membership],
        request: &SyncRequest,
        now: StreamPosition,
    ) -> Result<HashMap<OwnedRoomId, Vec<StoredEvent>>, ServiceError> {
        let joined: Vec<OwnedRoomId> = memberships
            .iter()
            .filter(|m| m.membership == "join" && request.filter.room.allows_room(&m.room_id))
            .map(|m| m.room_id.clone())
            .collect();
        let mut pages: HashMap<OwnedRoomId, Vec<StoredEvent>> = HashMap::new();
        if joined.is_empty() {
            return Ok(pages);
        }
        let page_size = request.filter.room.timeline.limit() + 1;
        for event in self
            .storage
            .latest_room_events(&joined, now, page_size)
            .await?
        {
            pages.entry(event.room_id.clone()).or_default().push(event);
        }
        for page in pages.values_mut() {
            page.sort_unstable_by_key(|event| std::cmp::Reverse(event.position));
        }
        // A room with no events still has a (read, empty) first page.
        for room_id in joined {
            pages.entry(room_id).or_default();
        }
        Ok(pages)
    }

    /// The timeline `(after, upto]` of a room and the state before it:
    /// the full state when `full_state`, else what changed unseen.
    /// `first_page`, when given, is what the first read of the scan would
    /// return (`first_timeline_pages`).
    async fn room_update(
        &self,
        context: &SyncContext<'_>,
        range: TimelineRange<'_>,
        full_state: bool,
        visibility: &mut Visibility<'_>,
        first_page: Option<Vec<StoredEvent>>,
    ) -> Result<RoomUpdate, ServiceError> {
        let filter = &context.request.filter.room;
        let timeline = self
            .scan_timeline(&range, first_page, &filter.timeline, visibility)
            .await?;
        let state = self
            .state_before_timeline(context, &range, full_state, &timeline)
            .await?;
        if filter.state.omits_redundant_members() {
            let members = state
                .iter()
                .chain(&timeline.events)
                .filter(|pdu| pdu.kind().to_string() == "m.room.member")
                .filter_map(|pdu| {
                    let member = <&UserId>::try_from(pdu.state_key()?).ok()?;
                    Some((member, pdu.event_id()))
                });
            self.lazy_members
                .record(&context.stream, context.now, range.room_id, members);
        }
        Ok(RoomUpdate {
            state,
            timeline: Timeline {
                limited: timeline.limited,
                prev_batch: StreamToken(StreamPosition(timeline.start.0 - 1)),
                events: timeline.events,
            },
            ..RoomUpdate::empty(range.room_id, range.upto)
        })
    }

    /// Member counts and heroes from the room's current state. Heroes are
    /// "required if the room's `m.room.name` or `m.room.canonical_alias`
    /// state events are unset or empty", and left out otherwise, as
    /// Synapse does: up to five others who are joined or invited, else who
    /// left or were banned, by user id so they stay the same from sync to
    /// sync.
    async fn summary(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
    ) -> Result<Option<RoomSummary>, ServiceError> {
        self.events
            .read_state(room_id, |state| {
                let mut summary = RoomSummary::default();
                let mut present = Vec::new();
                let mut departed = Vec::new();
                for (member, membership) in state.members() {
                    let heroes = match membership {
                        "join" => {
                            summary.joined_member_count += 1;
                            &mut present
                        }
                        "invite" => {
                            summary.invited_member_count += 1;
                            &mut present
                        }
                        "leave" | "ban" => &mut departed,
                        _ => continue,
                    };
                    if member != user_id.as_str()
                        && heroes.len() < 5
                        && let Ok(hero) = OwnedUserId::try_from(member)
                    {
                        heroes.push(hero);
                    }
                }
                let is_named = has_nonempty(state, StateEventType::RoomName, "name")
                    || has_nonempty(state, StateEventType::RoomCanonicalAlias, "alias");
                if !is_named {
                    summary.heroes = Some(if present.is_empty() {
                        departed
                    } else {
                        present
                    });
                }
                summary
            })
            .await
    }

    /// The stripped state an invitee (or a knocker) sees: what names and
    /// describes the room, and the membership event itself.
    async fn invite_update(
        &self,
        room_id: &RoomId,
        membership: &Membership,
    ) -> Result<InviteUpdate, ServiceError> {
        let version = match self.events.room_version(room_id).await {
            Ok(version) => version,
            Err(ServiceError::NotFound(_)) => {
                return self.out_of_room_invite(room_id, membership).await;
            }
            Err(error) => return Err(error),
        };
        let invite = self.events.pdu(version, &membership.event_id).await?;
        let mut invite_state = Vec::new();
        if let Some(state) = self.events.current_state(room_id).await? {
            invite_state.extend(
                state
                    .describing_events(invite.sender())
                    .filter(|event| event.event_id() != invite.event_id())
                    .cloned(),
            );
        }
        invite_state.push(invite);
        Ok(InviteUpdate {
            room_id: room_id.to_owned(),
            remote_state: Vec::new(),
            invite_state,
        })
    }

    /// An invite from another server to a room this server does not hold:
    /// the stripped state it came with, and the invite.
    async fn out_of_room_invite(
        &self,
        room_id: &RoomId,
        membership: &Membership,
    ) -> Result<InviteUpdate, ServiceError> {
        let stored = self
            .storage
            .out_of_room_membership(&membership.event_id)
            .await?
            .ok_or_else(|| ServiceError::Internal("an invite is not stored".to_owned()))?;
        let version = super::room_events::parse_version(&stored.room_version)?;
        let invite = Pdu::from_storage(version, stored.event_id, stored.json)
            .map_err(|e| ServiceError::Internal(format!("a stored invite is invalid: {e}")))?;
        Ok(InviteUpdate {
            room_id: room_id.to_owned(),
            remote_state: serde_json::from_str(&stored.stripped_state).unwrap_or_default(),
            invite_state: vec![invite],
        })
    }
}

/// The rooms among `memberships` that the user is joined to.
fn joined_rooms<'a>(
    memberships: impl IntoIterator<Item = &'a Membership>,
) -> BTreeSet<OwnedRoomId> {
    memberships
        .into_iter()
        .filter(|membership| membership.membership == "join")
        .map(|membership| membership.room_id.clone())
        .collect()
}

/// Whether the room's `kind` state event has a non-empty string `field`.
fn has_nonempty(state: &RoomState, kind: StateEventType, field: &str) -> bool {
    state
        .get(&kind, "")
        .and_then(|pdu| serde_json::from_str::<serde_json::Value>(pdu.content().get()).ok())
        .is_some_and(|content| {
            content[field]
                .as_str()
                .is_some_and(|value| !value.is_empty())
        })
}

/// Rebuilds a stored event.
///
/// # Errors
/// `Internal` when the stored bytes no longer parse.
pub fn to_pdu(version: RoomVersion, stored: &StoredEvent) -> Result<Pdu, ServiceError> {
    Pdu::from_storage(version, stored.event_id.clone(), stored.json.clone()).map_err(|e| {
        ServiceError::Internal(format!("stored event {} is invalid: {e}", stored.event_id))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_with_and_without_a_to_device_part() {
        for text in ["s12_3", "s12_3_9", "s0_0"] {
            assert_eq!(SyncToken::parse(text).unwrap().to_string(), text);
        }
        let paged = SyncToken::parse("s12_3_9").unwrap();
        assert_eq!(paged.to_device_position(), StreamPosition(9));
        assert_eq!(
            SyncToken::parse("s12_3").unwrap().to_device_position(),
            StreamPosition(12)
        );
        assert_eq!(SyncToken::parse("s12").unwrap().typing, None);
    }

    #[test]
    fn malformed_tokens_are_refused() {
        // A to-device part at or past the position could acknowledge
        // messages the client was never sent.
        for text in [
            "s12_3_12",
            "s12_3_13",
            "s12_3_x",
            "s12_3_-1",
            "s12_3_4_5",
            "12_3",
            "s_3",
        ] {
            assert!(
                matches!(SyncToken::parse(text), Err(ServiceError::InvalidParam(_))),
                "{text} parsed"
            );
        }
    }
}
