//! What the clients were told: every request that got a 2xx and what it
//! returned, and the counts the run reports.

use std::collections::{BTreeMap, BTreeSet};

/// The kinds of request the load mixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// `PUT /rooms/{id}/send/m.room.message/{txn}`.
    Send,
    /// `PUT /sendToDevice/{type}/{txn}`.
    ToDevice,
    /// `POST /keys/upload` (device keys and one-time keys).
    KeyUpload,
    /// `POST /keys/claim`.
    KeyClaim,
    /// `PUT /room_keys/keys/{room}/{session}`.
    Backup,
    /// `POST /_matrix/media/v3/upload`.
    Media,
    /// `POST /register`.
    Register,
}

impl Kind {
    /// Every kind, in report order.
    pub const ALL: [Kind; 7] = [
        Kind::Send,
        Kind::ToDevice,
        Kind::KeyUpload,
        Kind::KeyClaim,
        Kind::Backup,
        Kind::Media,
        Kind::Register,
    ];

    /// The name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Send => "room sends",
            Kind::ToDevice => "to-device",
            Kind::KeyUpload => "key uploads",
            Kind::KeyClaim => "key claims",
            Kind::Backup => "backup keys",
            Kind::Media => "media uploads",
            Kind::Register => "registrations",
        }
    }
}

/// An acknowledged room event.
#[derive(Debug, Clone)]
pub struct AckedEvent {
    /// The room it was sent to.
    pub room_id: String,
    /// The event id the server answered with.
    pub event_id: String,
}

/// An acknowledged media upload and the bytes sent.
#[derive(Debug, Clone)]
pub struct AckedMedia {
    /// `mxc://server/id`.
    pub content_uri: String,
    /// What was uploaded.
    pub bytes: Vec<u8>,
}

/// An acknowledged registration. No `Debug`: it holds a token.
#[derive(Clone)]
pub struct AckedAccount {
    /// The new user id.
    pub user_id: String,
    /// Its access token (never printed).
    pub token: String,
}

/// Everything acknowledged so far, and the counts.
#[derive(Default)]
pub struct Ledger {
    /// Room events by their marker (the sender's transaction id).
    pub events: BTreeMap<String, AckedEvent>,
    /// To-device markers.
    pub to_device: BTreeSet<String>,
    /// One-time key ids acknowledged as uploaded, by owning client index.
    pub uploaded_keys: BTreeMap<usize, BTreeSet<String>>,
    /// One-time key ids uploaded by requests whose answer was lost.
    pub maybe_uploaded_keys: BTreeMap<usize, BTreeSet<String>>,
    /// Clients whose device keys were acknowledged.
    pub device_keys: BTreeSet<usize>,
    /// Claimed one-time keys: (owner index, key id) to how often handed out.
    pub claimed: BTreeMap<(usize, String), u64>,
    /// Claims whose answer was lost (each may have used up one key).
    pub unknown_claims: BTreeMap<usize, u64>,
    /// Backed-up sessions by client index: (room id, session id).
    pub backup: BTreeMap<usize, BTreeSet<(String, String)>>,
    /// Media uploads.
    pub media: Vec<AckedMedia>,
    /// Registrations.
    pub accounts: Vec<AckedAccount>,
    /// Acknowledged requests per kind.
    pub acked: BTreeMap<Kind, u64>,
    /// Requests whose outcome was unknown at some point (in flight at a
    /// kill, or answered 5xx): retried with the same transaction id, or
    /// left as they are where a retry is a new request.
    pub unknown: BTreeMap<Kind, u64>,
    /// Problems found: each is a loss, a duplicate or a gap.
    pub findings: Findings,
}

/// What the checks found. Sets: each cycle checks the whole history
/// again, and a problem found again is the same problem.
#[derive(Debug, Default)]
pub struct Findings {
    /// Acknowledged things missing.
    pub lost: BTreeSet<String>,
    /// Things delivered or stored more than once.
    pub duplicated: BTreeSet<String>,
    /// Resumed sync tokens that skipped or repeated events.
    pub gaps: BTreeSet<String>,
}

impl Findings {
    /// Whether nothing was found.
    pub fn is_clean(&self) -> bool {
        self.lost.is_empty() && self.duplicated.is_empty() && self.gaps.is_empty()
    }
}

impl Ledger {
    /// Counts an acknowledged request.
    pub fn ack(&mut self, kind: Kind) {
        *self.acked.entry(kind).or_default() += 1;
    }

    /// Counts a request whose outcome became unknown.
    pub fn unknown(&mut self, kind: Kind) {
        *self.unknown.entry(kind).or_default() += 1;
    }

    /// Records an acknowledged send; a second answer for the same
    /// transaction with another event id is a duplicate.
    pub fn ack_event(&mut self, marker: &str, event: AckedEvent) {
        self.ack(Kind::Send);
        if let Some(earlier) = self.events.get(marker) {
            if earlier.event_id != event.event_id {
                self.findings.duplicated.insert(format!(
                    "transaction {marker} answered {} and later {}",
                    earlier.event_id, event.event_id
                ));
            }
            return;
        }
        self.events.insert(marker.to_owned(), event);
    }

    /// Records a claimed key; a key handed out twice is a duplicate.
    pub fn ack_claim(&mut self, owner: usize, key_id: Option<String>) {
        self.ack(Kind::KeyClaim);
        if let Some(key_id) = key_id {
            let times = self.claimed.entry((owner, key_id.clone())).or_default();
            *times += 1;
            if *times == 2 {
                self.findings.duplicated.insert(format!(
                    "one-time key {key_id} of client {owner} was claimed twice"
                ));
            }
        }
    }
}
