//! Filling a room's sync timeline: the newest events the user may see and
//! the filter lets through, and what the timeline leaves out that the state
//! section must make up for.

use ruma::RoomId;

use super::{Sync, filter::EventFilter, to_pdu, visibility::Visibility};
use crate::{
    service::{ServiceError, rooms::pdu::Pdu, rooms::version::RoomVersion},
    storage::{StoredEvent, StreamPosition},
};

/// Events read per query while filling a timeline.
const TIMELINE_SCAN_BATCH: usize = 50;
/// Most events one room's timeline scans past hidden or filtered ones;
/// beyond it the timeline is `limited` and the client paginates.
const MAX_TIMELINE_SCAN: usize = 1000;

/// A state slot: `(type, state key)`.
pub(super) type Slot = (String, String);

/// The range of a room's events a timeline is taken from.
#[derive(Debug)]
pub(super) struct TimelineRange<'a> {
    pub room_id: &'a RoomId,
    pub version: RoomVersion,
    /// The client has the room up to here; `None` when it gets the room
    /// afresh.
    pub after: Option<StreamPosition>,
    /// The newest position to include.
    pub upto: StreamPosition,
    /// Whether the user is joined now (for history visibility).
    pub joined_now: bool,
}

/// A timeline and what it leaves out.
#[derive(Debug)]
pub(super) struct ScannedTimeline {
    /// Events, oldest first.
    pub events: Vec<Pdu>,
    /// The position of the first event (one past `upto` when empty).
    pub start: StreamPosition,
    /// Whether an event the user may see and the filter lets through,
    /// older than the timeline, is missing from it: cut by the limit, or
    /// past the scan's bound.
    pub limited: bool,
    /// State events in the range that the timeline leaves out (hidden or
    /// filtered), with their positions.
    pub left_out_state: Vec<(StreamPosition, Slot)>,
    /// Whether events before the timeline were not read (the scan stopped
    /// early), so state changes may hide among them.
    pub stopped_early: bool,
    /// The state group of the newest event read that precedes the
    /// timeline, when the scan read one: the state at the timeline's start.
    pub group_before_start: Option<i64>,
}

impl ScannedTimeline {
    /// Whether state may have changed between `after` and the timeline's
    /// start without the client being told.
    pub fn state_changed_unseen_before_start(&self) -> bool {
        self.stopped_early
            || self
                .left_out_state
                .iter()
                .any(|(position, _)| *position < self.start)
    }

    /// The slots of state events the timeline leaves out between its first
    /// event and `upto`.
    pub fn slots_left_out_inside(&self) -> impl Iterator<Item = &Slot> {
        self.left_out_state
            .iter()
            .filter(|(position, _)| *position > self.start)
            .map(|(_, slot)| slot)
    }
}

impl Sync {
    /// Reads `(after, upto]` newest-first (the first read's answer is
    /// `first_page` when already read) into a timeline of at most the
    /// filter's limit. The limit counts the events the user may see and the
    /// filter lets through ("the maximum number of events to return"), so
    /// the scan reads past hidden and filtered ones, up to a bound; once
    /// full, it reads on only until it finds one more it would have kept,
    /// which makes the timeline `limited`.
    pub(super) async fn scan_timeline(
        &self,
        range: &TimelineRange<'_>,
        first_page: Option<Vec<StoredEvent>>,
        filter: &EventFilter,
        visibility: &mut Visibility<'_>,
    ) -> Result<ScannedTimeline, ServiceError> {
        let limit = filter.limit() as usize;
        let from = range.after.unwrap_or(StreamPosition(0));
        // The first read is just enough for the common case where all pass.
        let mut batch = limit + 1;
        let mut kept: Vec<(StreamPosition, Pdu)> = Vec::new();
        let mut scan = ScannedTimeline {
            events: Vec::new(),
            start: range.upto,
            limited: false,
            left_out_state: Vec::new(),
            stopped_early: false,
            group_before_start: None,
        };
        let mut cursor = range.upto;
        let mut scanned = 0;
        let mut first_page = first_page;
        'scan: loop {
            let page = match first_page.take() {
                Some(page) => page,
                None => {
                    self.storage
                        .room_events(range.room_id, from, cursor, batch as u32, true)
                        .await?
                }
            };
            let exhausted = page.len() < batch;
            batch = batch.max(TIMELINE_SCAN_BATCH);
            for stored in &page {
                cursor = StreamPosition(stored.position.0 - 1);
                scanned += 1;
                let pdu = to_pdu(range.version, stored)?;
                let shown = filter.allows_event(&pdu.kind().to_string(), pdu.sender())
                    && visibility.can_see(stored, &pdu, range.joined_now).await?;
                if shown && kept.len() == limit {
                    scan.limited = true;
                    scan.stopped_early = true;
                    scan.group_before_start.get_or_insert(stored.state_group);
                    break 'scan;
                }
                if shown {
                    kept.push((stored.position, pdu));
                    // Whatever is read next is older than this event.
                    scan.group_before_start = None;
                    continue;
                }
                if let Some(slot) = slot_of(&pdu) {
                    scan.left_out_state.push((stored.position, slot));
                }
                scan.group_before_start.get_or_insert(stored.state_group);
            }
            if exhausted {
                break;
            }
            if scanned >= MAX_TIMELINE_SCAN {
                scan.limited = true;
                scan.stopped_early = true;
                break;
            }
        }
        kept.reverse();
        scan.start = kept
            .first()
            .map_or(StreamPosition(range.upto.0 + 1), |(position, _)| *position);
        scan.events = kept.into_iter().map(|(_, pdu)| pdu).collect();
        Ok(scan)
    }
}

/// The slot a state event fills.
pub(super) fn slot_of(pdu: &Pdu) -> Option<Slot> {
    pdu.state_key()
        .map(|key| (pdu.kind().to_string(), key.to_owned()))
}
