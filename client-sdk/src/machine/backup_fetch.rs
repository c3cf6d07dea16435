//! Fetching the keys of undecryptable events from the key backup, on
//! demand (`spec-notes/key-backup.md`).
//!
//! When this device holds the private key of the backup it uses, every
//! event kept for want of its key names a session the backup may hold.
//! [`OlmMachine::outgoing_requests`] asks for those sessions
//! (`GET /room_keys/keys/{roomId}/{sessionId}`, or the whole room's
//! `GET /room_keys/keys/{roomId}` when several of its sessions are
//! missing); the answer is imported as a restore would import it, and the
//! events it decrypts come out in the next sync's
//! [`SyncOutput::late_decryptions`].
//!
//! A session is asked for once: at most one request names it at a time,
//! and after an answer (found or not) or a failure it is not asked for
//! again for a while, so a session the backup lacks costs one request per
//! [`MISSING_RETRY_MS`], however many syncs pass.

use std::collections::{BTreeMap, BTreeSet};

use ruma::OwnedRoomId;
use serde_json::{Map, Value};

use super::{
    DecryptedRoomEvent, OlmMachine, OutgoingRequest, Request, SyncOutput, backup::BackupRestore,
    requests::InFlight,
};

/// How long a session the backup answered for (found, or a 404) is not
/// asked for again.
pub const MISSING_RETRY_MS: u64 = 60 * 60 * 1000;
/// How long a session whose fetch failed (network, 5xx) is not asked for
/// again.
const FAILED_RETRY_MS: u64 = 5 * 60 * 1000;
/// At most this many fetches in flight.
const MAX_FETCHES: usize = 8;
/// A room missing at least this many sessions is fetched whole.
const ROOM_FETCH_SESSIONS: usize = 3;

/// Sessions asked of the backup, and what the answers decrypted.
#[derive(Default)]
pub(super) struct BackupFetches {
    /// (room, session id) -> when it may be asked for again. Only sessions
    /// of kept undecryptable events (themselves bounded) are entered, and
    /// entries go once their time has passed.
    not_before: BTreeMap<(OwnedRoomId, String), u64>,
    /// Events the fetched keys decrypted, for the next sync.
    late: Vec<DecryptedRoomEvent>,
}

impl OlmMachine {
    /// Requests for the sessions of kept undecryptable events, when this
    /// device holds the key of the backup it uses.
    pub(super) fn backup_fetch_requests(&mut self) -> Vec<OutgoingRequest> {
        let Ok(backup) = self.held_backup() else {
            return Vec::new();
        };
        let now = self.now_hint();
        let fetches = &mut self.backup_fetches;
        fetches.not_before.retain(|_, not_before| *not_before > now);
        let mut in_flight = 0;
        let mut asked = BTreeSet::new();
        for request in self.in_flight.values() {
            if let InFlight::BackupFetch {
                room_id, sessions, ..
            } = request
            {
                in_flight += 1;
                asked.extend(sessions.iter().map(|s| (room_id.clone(), s.clone())));
            }
        }
        let mut wanted: BTreeMap<OwnedRoomId, Vec<String>> = BTreeMap::new();
        for (room_id, event) in self.pending_utd.values() {
            let Some(session_id) = event.pointer("/content/session_id").and_then(Value::as_str)
            else {
                continue;
            };
            let key = (room_id.clone(), session_id.to_owned());
            if asked.contains(&key) || fetches.not_before.contains_key(&key) {
                continue;
            }
            asked.insert(key);
            wanted
                .entry(room_id.clone())
                .or_default()
                .push(session_id.to_owned());
        }
        let mut budget = MAX_FETCHES.saturating_sub(in_flight);
        let mut requests = Vec::new();
        let version = backup.version().to_owned();
        for (room_id, sessions) in wanted {
            if sessions.len() >= ROOM_FETCH_SESSIONS && budget > 0 {
                requests.push(self.backup_fetch_request(&version, room_id, sessions, true));
                budget -= 1;
                continue;
            }
            for session_id in sessions {
                if budget == 0 {
                    return requests;
                }
                let room_id = room_id.clone();
                requests.push(self.backup_fetch_request(
                    &version,
                    room_id,
                    vec![session_id],
                    false,
                ));
                budget -= 1;
            }
        }
        requests
    }

    fn backup_fetch_request(
        &mut self,
        version: &str,
        room_id: OwnedRoomId,
        sessions: Vec<String>,
        whole_room: bool,
    ) -> OutgoingRequest {
        let session_id = (!whole_room).then(|| sessions.first().cloned()).flatten();
        let request = Request::BackupKeysFetch {
            version: version.to_owned(),
            room_id: room_id.clone(),
            session_id,
        };
        self.issue(
            InFlight::BackupFetch {
                room_id,
                sessions,
                whole_room,
            },
            |_| request,
        )
    }

    /// The backup answered a fetch: its entries are imported, and what they
    /// decrypt waits for the next sync.
    pub(super) fn receive_backup_keys(
        &mut self,
        room_id: &OwnedRoomId,
        sessions: &[String],
        whole_room: bool,
        response: &Value,
    ) -> Result<(), &'static str> {
        self.remember_asked(room_id, sessions, MISSING_RETRY_MS);
        // The backup changed (or went) while the request was out.
        let Ok(backup) = self.held_backup() else {
            return Ok(());
        };
        let entries: Map<String, Value> = if whole_room {
            response
                .get("sessions")
                .and_then(Value::as_object)
                .ok_or("no `sessions` object")?
                .clone()
        } else {
            let session_id = sessions.first().ok_or("no session asked for")?;
            Map::from_iter([(session_id.clone(), response.clone())])
        };
        let mut restore = BackupRestore::default();
        self.restore_backup_sessions(&backup, room_id.as_str(), &entries, &mut restore);
        self.backup_fetches
            .late
            .append(&mut restore.late_decryptions);
        Ok(())
    }

    /// The backup has none of these sessions (a 404).
    pub(super) fn backup_keys_missing(&mut self, room_id: &OwnedRoomId, sessions: &[String]) {
        self.remember_asked(room_id, sessions, MISSING_RETRY_MS);
    }

    /// A fetch failed (network, 5xx): asked again a little later.
    pub(super) fn backup_fetch_failed(&mut self, room_id: &OwnedRoomId, sessions: &[String]) {
        self.remember_asked(room_id, sessions, FAILED_RETRY_MS);
    }

    /// Hands what fetched keys decrypted to a sync's output.
    pub(super) fn take_backup_decryptions(&mut self, output: &mut SyncOutput) {
        output
            .late_decryptions
            .append(&mut self.backup_fetches.late);
    }

    fn remember_asked(&mut self, room_id: &OwnedRoomId, sessions: &[String], for_ms: u64) {
        let not_before = self.now_hint().saturating_add(for_ms);
        for session_id in sessions {
            self.backup_fetches
                .not_before
                .insert((room_id.clone(), session_id.clone()), not_before);
        }
    }
}
