//! The dispatcher: follows the published stream, finds the servers each
//! committed local event concerns, gives a destination met for the first
//! time its cursor (just before that event), and wakes the senders.
//!
//! How far it has looked is persisted with the new cursors, so a
//! destination first met just before a crash still gets its cursor after
//! the restart; destinations it knew already have theirs.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::Arc,
};

use ruma::{OwnedRoomId, OwnedServerName, UserId};
use serde_json::Value;
use tracing::warn;

use super::Shared;
use crate::{
    service::rooms::server_acl::is_server_allowed,
    storage::{OutgoingEvent, StorageError, StreamPosition},
};

/// Events read in one page.
pub(super) const PAGE: u32 = 500;

/// The scan position is written at least this often (in stream
/// positions) when no new destination makes it written sooner: after a
/// restart, at most this much is looked through again.
const SCAN_WRITE_INTERVAL: i64 = 1000;

/// The servers events concern: those with members joined to the room as of
/// the event, and the server of a membership event's target (an invite,
/// kick or ban reaches the user's server even when nobody of it is
/// joined), less those the room's `m.room.server_acl` denies. Each room's
/// members and ACL are read again only after a membership or ACL event of
/// the room.
#[derive(Default)]
pub(super) struct Concerned {
    rooms: HashMap<OwnedRoomId, RoomServers>,
}

/// A room's servers with members, and its server ACL's content.
#[derive(Clone)]
struct RoomServers {
    servers: BTreeSet<OwnedServerName>,
    acl: Option<Value>,
}

impl Concerned {
    /// Notes a membership event of any server: its room's members changed.
    /// Returns whether `event` was sent from this server (and is to be sent).
    pub(super) fn see(&mut self, shared: &Shared, event: &OutgoingEvent) -> bool {
        if event.event_type == "m.room.member" || event.event_type == "m.room.server_acl" {
            self.rooms.remove(&event.room_id);
        }
        event.sender.server_name() == shared.server_name
    }

    /// The servers other than this one that a local `event` concerns.
    pub(super) async fn servers(
        &mut self,
        shared: &Shared,
        event: &OutgoingEvent,
    ) -> Result<BTreeSet<OwnedServerName>, StorageError> {
        let RoomServers { mut servers, acl } = match self.rooms.get(&event.room_id) {
            Some(room) => room.clone(),
            None => {
                let room = RoomServers {
                    servers: shared.room_servers(&event.room_id, event.position).await?,
                    acl: shared.server_acl(&event.room_id, event.position).await?,
                };
                self.rooms.insert(event.room_id.clone(), room.clone());
                room
            }
        };
        if event.event_type == "m.room.member"
            && let Some(target) = event
                .state_key
                .as_deref()
                .and_then(|key| UserId::parse(key).ok())
            && target.server_name() != shared.server_name
        {
            servers.insert(target.server_name().to_owned());
        }
        if let Some(acl) = &acl {
            servers.retain(|server| is_server_allowed(acl, server));
        }
        Ok(servers)
    }
}

/// Runs the dispatcher until the process ends.
pub(super) async fn run(shared: Arc<Shared>) {
    let (mut known, mut scanned) = loop {
        match start(&shared).await {
            Ok(started) => break started,
            Err(error) => {
                warn!(%error, "federation sender cannot start; trying again");
                tokio::time::sleep(shared.backoff.initial).await;
            }
        }
    };
    let mut written = scanned;
    loop {
        let upto = shared.stream.current();
        if upto <= scanned {
            shared.stream.published(StreamPosition(scanned.0 + 1)).await;
            continue;
        }
        match scan(&shared, &mut known, scanned, upto, written).await {
            Ok((end, is_written)) => {
                scanned = end;
                if is_written {
                    written = end;
                }
            }
            Err(error) => {
                warn!(%error, "federation sender cannot read new events; trying again");
                tokio::time::sleep(shared.backoff.initial).await;
            }
        }
    }
}

/// Starts a task for every destination with a cursor or EDUs, and returns
/// those with a cursor and the position to look from.
async fn start(
    shared: &Arc<Shared>,
) -> Result<(HashSet<OwnedServerName>, StreamPosition), StorageError> {
    // Recorded by `FederationSender::start` before any event could be
    // missed.
    let scanned = shared
        .storage
        .outbound_scan_position()
        .await?
        .unwrap_or_else(|| shared.stream.current());
    let mut known = HashSet::new();
    for (destination, cursor) in shared.storage.outbound_destinations().await? {
        shared.wake(&destination);
        if cursor.is_some() {
            known.insert(destination);
        }
    }
    Ok((known, scanned))
}

/// Looks through one page of `(scanned, upto]`: returns how far it got and
/// whether that was written.
async fn scan(
    shared: &Arc<Shared>,
    known: &mut HashSet<OwnedServerName>,
    scanned: StreamPosition,
    upto: StreamPosition,
    written: StreamPosition,
) -> Result<(StreamPosition, bool), StorageError> {
    let events = shared
        .storage
        .events_to_send(&shared.server_name, scanned, upto, PAGE)
        .await?;
    let end = page_end(&events, upto);
    let mut concerned = Concerned::default();
    let mut new = Vec::new();
    let mut woken = BTreeSet::new();
    for event in &events {
        if !concerned.see(shared, event) {
            continue;
        }
        for server in concerned.servers(shared, event).await? {
            if !known.contains(&server) && !new.iter().any(|(name, _)| *name == server) {
                new.push((server.clone(), StreamPosition(event.position.0 - 1)));
            }
            woken.insert(server);
        }
    }
    let is_written = !new.is_empty() || end.0 - written.0 >= SCAN_WRITE_INTERVAL;
    if is_written {
        shared.storage.record_outbound_scan(&new, end).await?;
        known.extend(new.into_iter().map(|(server, _)| server));
    }
    for server in &woken {
        shared.wake(server);
    }
    Ok((end, is_written))
}

/// How far a page read up to `upto` covers: all of it, unless the page is
/// full and more may follow its last event.
pub(super) fn page_end(events: &[OutgoingEvent], upto: StreamPosition) -> StreamPosition {
    match events.last() {
        Some(last) if events.len() >= PAGE as usize => last.position,
        _ => upto,
    }
}
