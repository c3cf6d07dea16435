//! The sans-I/O end-to-end encryption state machine.
//!
//! [`OlmMachine`] is synchronous and does no I/O: the caller feeds it the
//! encryption-relevant parts of each sync ([`SyncChanges`]) and the answers
//! to the requests it asked for ([`OlmMachine::mark_request_sent`]); it
//! hands back requests to send ([`OutgoingRequest`]), decrypted events, and
//! a batch of record changes to persist in one transaction
//! ([`OlmMachine::take_changes`], [`CryptoStore`]). The only clock is the
//! `now_ms` the caller passes.
//!
//! Who gets which room key and when is written down in
//! `spec-notes/key-distribution.md`; this module follows that note.
//!
//! # Flow
//!
//! ```text
//! sync ──► receive_sync_changes ──► SyncOutput (to-device, late decryptions, warnings)
//!                  │
//! outgoing_requests / share_room_key ──► OutgoingRequest ──► server
//!                                                               │
//! mark_request_sent(request_id, response) ◄─────────────────────┘
//! encrypt_room_event ──► m.room.encrypted content
//! decrypt_room_event ──► DecryptedRoomEvent | UnableToDecrypt
//! take_changes ──► Changes ──► CryptoStore::save (one transaction)
//! ```
//!
//! # Layout
//!
//! - [`identity`]: the device's account and keys/upload (device keys,
//!   one-time and fallback key top-ups).
//! - [`devices`]: device tracking with keys/query, self-signature checks,
//!   refusal of changed identity keys, local trust, and the one
//!   "is this device verified" decision.
//! - [`cross_signing`]: our master, self-signing and user-signing keys
//!   (bootstrap), verifying users and vouching for our own devices;
//!   [`identities`]: everyone's cross-signing keys from keys/query, checked
//!   and pinned on first use, and who is verified through them
//!   (`spec-notes/cross-signing.md`).
//! - `olm`: Olm sessions: claims, to-device encryption and decryption with
//!   the payload checks, wedged-session recovery.
//! - `rooms`: membership and encryption settings per room.
//! - `group`: outbound Megolm sessions, key sharing, rotation, withheld.
//! - `query_backoff`: servers whose keys/query fails are backed off, and
//!   sharing goes ahead with the devices known for their users.
//! - `inbound`: inbound Megolm sessions, room event decryption, replay
//!   protection, unable-to-decrypt causes.
//! - `key_requests`: asking our own other devices for missing keys, and
//!   answering them (only for devices we verified).
//! - `backup`: server-side key backup: enabling, uploading each session
//!   once, restoring with the recovery key as forwarded keys, which backup
//!   to trust (`spec-notes/key-backup.md`).
//! - [`history`]: history for newcomers (MSC4268): the `shared_history`
//!   flag, building, sending, and importing room key bundles.
//! - [`verification`]: interactive SAS verification by to-device
//!   messages or in a room, and the trust a success produces
//!   (`spec-notes/verification.md`).
//! - [`store`]: the persistence trait and an in-memory store.
//!
//! # Not done yet
//!
//! Key requests to other users' devices, secret storage and sharing of the
//! key backup's recovery key (and Myelin's authenticated backup), QR code
//! verification between our own devices,
//! secret sharing of the cross-signing keys (only the device that
//! bootstrapped holds them), history bundles sent only to cross-signed
//! devices as MSC4268 asks (they go to the invitee's non-blacklisted
//! devices; the MSC4147 `sender_device_keys` it requires go with every
//! Olm payload, but a bundle arriving without them is not refused).
//!
//! # Persist before send
//!
//! Every request the machine hands out is covered by the change set taken
//! after it: save that set before the request leaves. To-device requests
//! are also records of their own until the server answers, so one saved
//! but not sent before a crash is handed out again after the restart
//! ([`OlmMachine::outgoing_requests`]). A caller that could not save hands
//! the set back ([`OlmMachine::restore_changes`]) and the requests too
//! ([`OlmMachine::mark_request_unsent`]).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod backup;
mod backup_fetch;
mod backup_policy;
mod backup_restore;
pub mod cross_signing;
pub mod dehydration;
pub mod devices;
mod events;
mod group;
pub mod history;
pub mod identities;
pub mod identity;
mod inbound;
mod key_export;
mod key_requests;
mod olm;
mod query_backoff;
mod requests;
mod rooms;
mod secret_sharing;
pub mod secret_storage;
pub mod store;
mod sync;
#[cfg(test)]
mod tests;
pub mod verification;

use std::collections::{BTreeMap, BTreeSet};

use myelin_crypto::{PickleKey, olm::Account};
use ruma::{DeviceId, OwnedDeviceId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use self::{
    backup::ActiveBackup,
    cross_signing::CrossSigningState,
    devices::DeviceTracker,
    group::OutboundEntry,
    history::PendingBundle,
    identity::AccountMeta,
    inbound::{InboundEntry, SessionKeyId},
    olm::OlmSessions,
    requests::{InFlight, PENDING_RECORD_KIND, PendingToDevice},
    rooms::RoomState,
};
pub use self::{
    backup::{BACKUP_SECRET, BackupAlgorithm, BackupError, BackupRestore, backup_recovery_key},
    backup_fetch::MISSING_RETRY_MS,
    backup_restore::{OpenedBackup, RESTORE_BATCH, RestoreProgress, backup_rooms},
    cross_signing::CrossSigningError,
    devices::{Device, DeviceWarning, LocalTrust},
    events::{DecryptedRoomEvent, UnableToDecrypt, UtdCause, VerificationState},
    history::{BundleError, BundleImport, BundleShare, RoomKeyBundle},
    identities::UserIdentity,
    key_export::{KeyImport, NotAKeyList},
    olm::ToDeviceRejection,
    requests::{OutgoingRequest, Request},
    secret_sharing::ReceivedSecret,
    store::{Changes, CryptoStore, MemoryStore},
    sync::{Membership, RoomUpdate, SyncChanges, SyncOutput},
    verification::{
        CancelCode, Emoji, RoomVerificationMessage, Verification, VerificationError,
        VerificationPhase,
    },
};

/// Errors from feeding the machine a response or asking it to act.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MachineError {
    /// A response arrived for a request id the machine did not issue, or
    /// already heard back about.
    #[error("no request in flight with id `{0}`")]
    UnknownRequest(String),

    /// A response does not have the shape its endpoint defines.
    #[error("malformed response to `{request_id}`: {reason}")]
    MalformedResponse {
        /// The request the response answers.
        request_id: String,
        /// What was wrong.
        reason: String,
    },

    /// The room has no `m.room.encryption` state the machine knows of; the
    /// E2E-only policy refuses to send into it in plaintext or to invent
    /// encryption for it.
    #[error("room `{0}` is not encrypted")]
    RoomNotEncrypted(OwnedRoomId),

    /// The room's current Megolm session is missing, used up, or must rotate;
    /// call [`OlmMachine::share_room_key`] until it returns no request.
    #[error("no shared room key for `{0}`; share one first")]
    RoomKeyNotShared(OwnedRoomId),

    /// There is no Olm session with this device (no key could be claimed).
    #[error("no olm session with {user_id}'s device {device_id}")]
    NoOlmSession {
        /// The device's user.
        user_id: OwnedUserId,
        /// The device.
        device_id: OwnedDeviceId,
    },

    /// Users who were verified now show another master key, and the change
    /// was not acknowledged ([`OlmMachine::acknowledge_identity_change`]):
    /// room keys are not shared with, and nothing is encrypted for, a room
    /// they read (a verification violation; see [`identities`]).
    #[error("verified users changed identity: {}", join_ids(user_ids))]
    VerificationViolation {
        /// Every reader of the room in violation.
        user_ids: Vec<OwnedUserId>,
    },

    /// A keys/query or keys/claim this step depends on is in flight (issued
    /// by another call); answer it, then call again.
    #[error("waiting for a keys/query or keys/claim answer")]
    AwaitingResponse,

    /// The Olm layer failed to encrypt.
    #[error(transparent)]
    Olm(#[from] myelin_crypto::olm::OlmError),

    /// A room key bundle could not be encrypted.
    #[error(transparent)]
    Attachment(#[from] myelin_crypto::attachment::AttachmentError),

    /// A cross-signing step could not be taken.
    #[error(transparent)]
    CrossSigning(#[from] CrossSigningError),

    /// An interactive verification step could not be taken.
    #[error(transparent)]
    Verification(#[from] VerificationError),
}

/// One device, by its user and device ids.
pub(crate) type DeviceKey = (OwnedUserId, OwnedDeviceId);

/// `user_ids` for a message: `@a:x, @b:y`.
fn join_ids(user_ids: &[OwnedUserId]) -> String {
    let ids: Vec<&str> = user_ids.iter().map(|id| id.as_str()).collect();
    ids.join(", ")
}

/// Errors from loading a machine from its store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The store holds no account record: this is not a machine's store.
    #[error("store holds no account")]
    MissingAccount,

    /// The store's account belongs to another user or device.
    #[error("store belongs to another device")]
    WrongDevice,

    /// A record did not decode or its pickle did not decrypt (wrong pickle
    /// key, or the store was altered).
    #[error("record `{0}` is corrupt or encrypted with another key")]
    Corrupt(String),
}

/// The end-to-end encryption state of one device. See the module docs.
///
/// `Debug` shows the user and device ids only.
pub struct OlmMachine {
    user_id: OwnedUserId,
    device_id: OwnedDeviceId,
    pickle_key: PickleKey,
    account: Account,
    meta: AccountMeta,
    devices: DeviceTracker,
    cross_signing: CrossSigningState,
    olm_sessions: OlmSessions,
    rooms: BTreeMap<OwnedRoomId, RoomState>,
    outbound: BTreeMap<OwnedRoomId, OutboundEntry>,
    inbound: BTreeMap<SessionKeyId, InboundEntry>,
    /// Withheld codes we can attribute to the session's device.
    withheld: BTreeMap<SessionKeyId, String>,
    /// Withheld codes from notices in the clear: hints only.
    withheld_hints: BTreeMap<SessionKeyId, String>,
    /// Sessions we asked our other devices for and have not got yet.
    key_requests: BTreeSet<SessionKeyId>,
    /// Secrets we asked our other devices for, and answers we owe them.
    secret_sharing: secret_sharing::SecretSharing,
    /// Room key bundles waiting for us to join, by (room id, sender).
    bundles: BTreeMap<history::BundleKey, PendingBundle>,
    /// Undecryptable events by event id: (room id, event).
    pending_utd: BTreeMap<String, (OwnedRoomId, Value)>,
    in_flight: BTreeMap<String, InFlight>,
    /// To-device requests in flight -> the record that keeps them until
    /// the server has them.
    pending_records: BTreeMap<String, String>,
    /// Devices whose Olm session looks wedged: (user, device) -> when we
    /// last started a fresh session for it.
    wedged: BTreeMap<DeviceKey, u64>,
    /// Servers whose keys/query failed, not asked again for a while.
    query_backoff: query_backoff::QueryBackoff,
    /// Devices a claim returned no key for, with when, so sharing does not
    /// claim for them again and again.
    claim_failures: BTreeMap<DeviceKey, u64>,
    queued: Vec<OutgoingRequest>,
    warnings: Vec<DeviceWarning>,
    utd_counts: BTreeMap<&'static str, u64>,
    /// Encrypted to-device events dropped, by [`ToDeviceRejection::name`].
    to_device_rejections: BTreeMap<&'static str, u64>,
    only_verified_globally: bool,
    /// Whether a reader in verification violation blocks sharing and
    /// encrypting (on by default: `spec-notes/cross-signing.md`).
    violations_block_sending: bool,
    /// The key backup this device uploads to.
    backup: Option<ActiveBackup>,
    /// A backup whose recovery key was handed out, not yet created.
    pending_backup: Option<backup::PendingBackup>,
    /// Session -> the backup version its current copy was uploaded to.
    backed_up: BTreeMap<SessionKeyId, String>,
    /// Whether the user's backups are authenticated (MSC4048): an
    /// unauthenticated one is then refused unless the user enables one.
    backup_pinned: bool,
    /// Old backup versions to delete from the server.
    retired_backups: BTreeSet<String>,
    /// Sessions of undecryptable events asked of the backup.
    backup_fetches: backup_fetch::BackupFetches,
    /// Interactive verifications in progress or finished (memory only).
    verifications: verification::Verifications,
    changes: Changes,
}

impl OlmMachine {
    /// A machine for a new device with a fresh Olm account. Its first
    /// [`OlmMachine::outgoing_requests`] uploads the device keys.
    pub fn new(user_id: &UserId, device_id: &DeviceId, pickle_key: PickleKey) -> Self {
        let mut machine = Self::empty(user_id, device_id, pickle_key, Account::new());
        machine.devices.track(user_id);
        machine.save_account();
        machine.save_user_devices(user_id);
        machine
    }

    /// Rebuilds a machine from every record of its store.
    ///
    /// # Errors
    ///
    /// [`LoadError`] if the account is missing, belongs to another device,
    /// or any record is corrupt.
    pub fn load(
        user_id: &UserId,
        device_id: &DeviceId,
        pickle_key: PickleKey,
        records: &BTreeMap<String, Vec<u8>>,
    ) -> Result<Self, LoadError> {
        let meta: AccountMeta = decode(records, identity::ACCOUNT_RECORD)?;
        if meta.user_id != user_id || meta.device_id != device_id {
            return Err(LoadError::WrongDevice);
        }
        let account = Account::from_pickle(&meta.pickle, &pickle_key)
            .map_err(|_| LoadError::Corrupt(identity::ACCOUNT_RECORD.to_owned()))?;
        let mut machine = Self::empty(user_id, device_id, pickle_key, account);
        machine.meta = meta;
        // Records that refine a session load after every session.
        let refines = |key: &str| {
            key.starts_with(group::SHARES_RECORD_KIND)
                || key.starts_with(inbound::REPLAY_RECORD_KIND)
        };
        let (later, first): (Vec<&String>, Vec<&String>) = records.keys().partition(|k| refines(k));
        for key in first.into_iter().chain(later) {
            match machine.load_record(records, key) {
                Err(LoadError::Corrupt(_))
                    if records
                        .get(key)
                        .is_some_and(|bytes| holds_invalid_id(bytes)) =>
                {
                    machine.drop_record_with_invalid_id(key);
                }
                result => result?,
            }
        }
        // Derived from what was loaded; no record changes.
        machine.devices.refresh_trust(&[], true);
        Ok(machine)
    }

    /// The user this device belongs to.
    pub fn user_id(&self) -> &UserId {
        &self.user_id
    }

    /// This device's id.
    pub fn device_id(&self) -> &DeviceId {
        &self.device_id
    }

    /// This device's public identity keys.
    pub fn identity_keys(&self) -> myelin_crypto::olm::IdentityKeys {
        self.account.identity_keys()
    }

    /// Takes the record changes made since the last call, for the caller to
    /// save in one transaction.
    ///
    /// Call it after every input and save the result before sending the
    /// requests that input produced: Olm sessions that encrypted are pickled
    /// here (once each, however many messages they carried), so a request
    /// sent before its changes are saved could be followed, after a crash,
    /// by a message that reuses a ratchet step.
    pub fn take_changes(&mut self) -> Changes {
        self.save_changed_olm_sessions();
        std::mem::take(&mut self.changes)
    }

    /// Takes the device warnings raised since the last call (also returned
    /// in [`SyncOutput::warnings`] when they arise during a sync).
    pub fn take_warnings(&mut self) -> Vec<DeviceWarning> {
        std::mem::take(&mut self.warnings)
    }

    /// Feeds the machine one sync's encryption-relevant parts.
    pub fn receive_sync_changes(&mut self, sync: SyncChanges) -> SyncOutput {
        self.meta.last_now_ms = self.meta.last_now_ms.max(sync.now_ms);
        self.receive_key_counts(&sync);
        let mut changed = sync.changed_devices.clone();
        if sync.is_initial {
            changed.extend(self.devices.tracked_users());
        }
        for user in &changed {
            self.devices.mark_changed(user);
            self.save_user_devices(user);
        }
        for user in &sync.left_devices {
            if *user != self.user_id {
                self.devices.untrack(user);
                self.save_user_devices(user);
            }
        }
        for update in &sync.rooms {
            self.receive_room_update(update);
        }
        let mut output = SyncOutput::default();
        self.take_backup_decryptions(&mut output);
        for event in &sync.to_device_events {
            self.receive_to_device(event, sync.now_ms, &mut output);
        }
        self.expire_verifications(sync.now_ms);
        output.warnings = self.take_warnings();
        output
    }

    /// The requests the machine needs sent now: key uploads, device list
    /// queries, claims for wedged sessions, and queued to-device messages.
    /// Room key sharing has its own entry point, [`OlmMachine::share_room_key`].
    pub fn outgoing_requests(&mut self) -> Vec<OutgoingRequest> {
        let mut requests = Vec::new();
        if let Some(body) = self.keys_upload_body() {
            requests.push(self.issue(InFlight::Upload, |_| Request::KeysUpload { body }));
        }
        let users = self.users_to_query_now();
        requests.extend(self.query_request(users));
        let mut claims: Vec<_> = self.wedged_devices_needing_claim();
        for device in self.secret_devices_needing_claim(self.now_hint()) {
            if !claims.contains(&device) {
                claims.push(device);
            }
        }
        requests.extend(self.claim_request(claims));
        requests.extend(self.own_device_signature_request());
        requests.extend(self.pending_backup_request());
        requests.extend(self.backup_upload_request());
        requests.extend(self.backup_fetch_requests());
        requests.extend(self.backup_delete_requests());
        requests.append(&mut self.queued);
        requests
    }

    /// The to-device requests queued by earlier steps (answers to
    /// requests, key requests, requests saved before a restart), without
    /// the rest of [`OlmMachine::outgoing_requests`]: a send sends them
    /// before its room key, so an `m.room_key` that could not leave earlier
    /// reaches its devices before the message it opens.
    pub fn take_queued_requests(&mut self) -> Vec<OutgoingRequest> {
        std::mem::take(&mut self.queued)
    }

    /// Reports the server's answer to a request the machine issued.
    ///
    /// # Errors
    ///
    /// [`MachineError::UnknownRequest`] for an id not in flight;
    /// [`MachineError::MalformedResponse`] for a response of the wrong shape
    /// (the request is then forgotten and will be issued again when needed).
    pub fn mark_request_sent(
        &mut self,
        request_id: &str,
        response: &Value,
    ) -> Result<(), MachineError> {
        let in_flight = self
            .in_flight
            .remove(request_id)
            .ok_or_else(|| MachineError::UnknownRequest(request_id.to_owned()))?;
        self.forget_pending_record(request_id);
        let malformed = |reason: &str| MachineError::MalformedResponse {
            request_id: request_id.to_owned(),
            reason: reason.to_owned(),
        };
        match in_flight {
            InFlight::Upload => self.receive_upload_response(response).map_err(malformed),
            InFlight::Query(users) => {
                self.devices.query_finished(&users);
                self.receive_query_response(&users, response)
                    .map_err(malformed)
            }
            InFlight::Claim(devices) => self
                .receive_claim_response(&devices, response)
                .map_err(malformed),
            InFlight::SigningKeysUpload(master) => {
                self.receive_signing_keys_upload(&master).map_err(malformed)
            }
            InFlight::Signatures(upload) => self.receive_signatures_upload(upload, response),
            InFlight::BackupCreate { pickle } => self
                .receive_backup_created(&pickle, response)
                .map_err(malformed),
            InFlight::BackupUpload { version, sessions } => {
                self.receive_backup_uploaded(&version, sessions);
                Ok(())
            }
            InFlight::BackupFetch {
                room_id,
                sessions,
                whole_room,
            } => self
                .receive_backup_keys(&room_id, &sessions, whole_room, response)
                .map_err(malformed),
            InFlight::BackupVersionDelete { version } => {
                self.forget_retired_backup(&version);
                Ok(())
            }
            InFlight::ToDevice | InFlight::RoomKeys { .. } => Ok(()),
        }
    }

    /// Reports that a request could not be sent or the server refused it.
    ///
    /// The machine forgets it; whatever it asked for is asked again when
    /// still needed: uploads and queries at the next
    /// [`OlmMachine::outgoing_requests`], claims and room keys at the next
    /// [`OlmMachine::share_room_key`] (the devices a failed `m.room_key`
    /// batch was for no longer count as holding the session).
    ///
    /// # Errors
    ///
    /// [`MachineError::UnknownRequest`] for an id not in flight.
    pub fn mark_request_failed(&mut self, request_id: &str) -> Result<(), MachineError> {
        let in_flight = self
            .in_flight
            .remove(request_id)
            .ok_or_else(|| MachineError::UnknownRequest(request_id.to_owned()))?;
        self.forget_pending_record(request_id);
        match in_flight {
            InFlight::Query(users) => {
                self.devices.query_finished(&users);
                let now_ms = self.meta.last_now_ms;
                self.query_backoff.failed(&users, now_ms);
            }
            InFlight::RoomKeys {
                room_id,
                session_id,
                devices,
            } => self.room_keys_not_sent(&room_id, &session_id, &devices),
            InFlight::BackupFetch {
                room_id, sessions, ..
            } => self.backup_fetch_failed(&room_id, &sessions),
            InFlight::Upload
            | InFlight::Claim(_)
            | InFlight::ToDevice
            | InFlight::SigningKeysUpload(_)
            | InFlight::Signatures(_)
            | InFlight::BackupCreate { .. }
            | InFlight::BackupUpload { .. }
            | InFlight::BackupVersionDelete { .. } => {}
        }
        Ok(())
    }

    /// Reports that a request was not sent at all: the caller could not
    /// save the machine's changes first (which must land before anything
    /// leaves). A to-device request is queued again, to go out at the next
    /// [`OlmMachine::outgoing_requests`] (its record is in the change set
    /// the caller puts back with [`OlmMachine::restore_changes`]); any
    /// other request is forgotten as by [`OlmMachine::mark_request_failed`].
    ///
    /// # Errors
    ///
    /// [`MachineError::UnknownRequest`] for a request not in flight.
    pub fn mark_request_unsent(&mut self, request: OutgoingRequest) -> Result<(), MachineError> {
        if self.pending_records.contains_key(&request.request_id) {
            self.queued.push(request);
            return Ok(());
        }
        self.mark_request_failed(&request.request_id)
    }

    /// Puts back a change set the caller took with
    /// [`OlmMachine::take_changes`] and could not save: the next
    /// `take_changes` returns it again, under any newer change to the same
    /// record.
    pub fn restore_changes(&mut self, earlier: Changes) {
        let newer = std::mem::replace(&mut self.changes, earlier);
        self.changes.records.extend(newer.records);
    }

    /// Registers a request as in flight and wraps it with a fresh id.
    /// To-device requests are also recorded in the change set, so that one
    /// built and saved but not sent before a crash goes out after it.
    fn issue(
        &mut self,
        in_flight: InFlight,
        build: impl FnOnce(&str) -> Request,
    ) -> OutgoingRequest {
        self.meta.next_request += 1;
        let serial = self.meta.next_request;
        let request_id = format!("myelin-{}-{serial}", self.device_id);
        self.save_account();
        let outgoing = OutgoingRequest {
            request: build(&request_id),
            request_id,
        };
        let room_keys = match &in_flight {
            InFlight::RoomKeys {
                room_id,
                session_id,
                devices,
            } => Some((room_id.clone(), session_id.clone(), devices.clone())),
            _ => None,
        };
        if matches!(in_flight, InFlight::ToDevice | InFlight::RoomKeys { .. }) {
            // Zero-padded: records load in the order they were issued, and
            // Olm messages to one device keep their order.
            let key = format!("{PENDING_RECORD_KIND}/{serial:020}");
            let pending = PendingToDevice {
                request: outgoing.clone(),
                room_keys,
            };
            self.put(key.clone(), &pending);
            self.pending_records
                .insert(outgoing.request_id.clone(), key);
        }
        self.in_flight
            .insert(outgoing.request_id.clone(), in_flight);
        outgoing
    }

    /// The server has (or refused) a to-device request: its record goes.
    fn forget_pending_record(&mut self, request_id: &str) {
        if let Some(key) = self.pending_records.remove(request_id) {
            self.changes.delete(key);
        }
    }

    /// A to-device request saved but not answered before the last stop:
    /// in flight again, and queued to be sent.
    fn load_pending(&mut self, key: &str, pending: PendingToDevice) {
        let in_flight = match pending.room_keys {
            Some((room_id, session_id, devices)) => InFlight::RoomKeys {
                room_id,
                session_id,
                devices,
            },
            None => InFlight::ToDevice,
        };
        let request_id = pending.request.request_id.clone();
        self.in_flight.insert(request_id.clone(), in_flight);
        self.pending_records.insert(request_id, key.to_owned());
        self.queued.push(pending.request);
    }

    fn empty(
        user_id: &UserId,
        device_id: &DeviceId,
        pickle_key: PickleKey,
        account: Account,
    ) -> Self {
        Self {
            user_id: user_id.to_owned(),
            device_id: device_id.to_owned(),
            meta: AccountMeta::new(user_id, device_id),
            pickle_key,
            account,
            devices: DeviceTracker::new(user_id),
            cross_signing: CrossSigningState::default(),
            olm_sessions: OlmSessions::default(),
            rooms: BTreeMap::new(),
            outbound: BTreeMap::new(),
            inbound: BTreeMap::new(),
            withheld: BTreeMap::new(),
            withheld_hints: BTreeMap::new(),
            key_requests: BTreeSet::new(),
            secret_sharing: secret_sharing::SecretSharing::default(),
            bundles: BTreeMap::new(),
            pending_utd: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            pending_records: BTreeMap::new(),
            wedged: BTreeMap::new(),
            claim_failures: BTreeMap::new(),
            query_backoff: query_backoff::QueryBackoff::default(),
            queued: Vec::new(),
            warnings: Vec::new(),
            utd_counts: BTreeMap::new(),
            to_device_rejections: BTreeMap::new(),
            only_verified_globally: false,
            violations_block_sending: true,
            backup: None,
            pending_backup: None,
            backed_up: BTreeMap::new(),
            backup_pinned: false,
            retired_backups: BTreeSet::new(),
            backup_fetches: backup_fetch::BackupFetches::default(),
            verifications: verification::Verifications::default(),
            changes: Changes::default(),
        }
    }

    fn load_record(
        &mut self,
        records: &BTreeMap<String, Vec<u8>>,
        key: &str,
    ) -> Result<(), LoadError> {
        let kind = key.split('/').next().unwrap_or_default();
        match kind {
            devices::RECORD_KIND => {
                let user: devices::UserDevices = decode(records, key)?;
                self.devices.insert_user(user);
            }
            olm::RECORD_KIND => {
                let record: olm::OlmSessionRecord = decode(records, key)?;
                self.olm_sessions
                    .insert_record(record, &self.pickle_key)
                    .map_err(|_| LoadError::Corrupt(key.to_owned()))?;
            }
            rooms::RECORD_KIND => {
                let mut room: RoomState = decode(records, key)?;
                // Saved before the bounds were enforced, perhaps.
                room.encryption = room.encryption.map(rooms::EncryptionSettings::clamped);
                self.rooms.insert(room.room_id.clone(), room);
            }
            group::RECORD_KIND => {
                let record: group::OutboundRecord = decode(records, key)?;
                let entry = OutboundEntry::from_record(record, &self.pickle_key)
                    .map_err(|_| LoadError::Corrupt(key.to_owned()))?;
                self.outbound.insert(entry.room_id.clone(), entry);
            }
            inbound::RECORD_KIND => {
                let record: inbound::InboundRecord = decode(records, key)?;
                let entry = InboundEntry::from_record(record, &self.pickle_key)
                    .map_err(|_| LoadError::Corrupt(key.to_owned()))?;
                self.inbound.insert(entry.key_id.clone(), entry);
            }
            group::SHARES_RECORD_KIND => {
                let record: group::SharesRecord = decode(records, key)?;
                if let Some(entry) = self.outbound.get_mut(record.room_id()) {
                    entry.add_shares(record);
                }
            }
            inbound::REPLAY_RECORD_KIND => {
                let record: inbound::ReplayRecord = decode(records, key)?;
                if let Some(entry) = self.inbound.get_mut(record.key_id()) {
                    entry.add_replay_record(record);
                }
            }
            inbound::WITHHELD_RECORD => {
                let (key_id, code): (SessionKeyId, String) = decode(records, key)?;
                self.withheld_hints.insert(key_id, code);
            }
            inbound::CONFIRMED_WITHHELD_RECORD => {
                let (key_id, code): (SessionKeyId, String) = decode(records, key)?;
                self.withheld.insert(key_id, code);
            }
            key_requests::RECORD => {
                let requests: Vec<SessionKeyId> = decode(records, key)?;
                self.key_requests = requests.into_iter().collect();
            }
            inbound::UTD_RECORD_KIND => {
                let (room_id, event): (OwnedRoomId, Value) = decode(records, key)?;
                let event_id = events::event_id(&event).unwrap_or_default().to_owned();
                self.pending_utd.insert(event_id, (room_id, event));
            }
            history::RECORD_KIND => match decode::<PendingBundle>(records, key) {
                Ok(bundle) => self.load_bundle(key, bundle),
                // Saved before ids were checked, with a room id that is
                // not one: a bundle anyone may send, and none we can use.
                Err(_) => self.changes.delete(key.to_owned()),
            },
            cross_signing::RECORD => {
                let record: cross_signing::CrossSigningRecord = decode(records, key)?;
                self.load_cross_signing(record)?;
            }
            backup::RECORD => {
                let record: backup::BackupRecord = decode(records, key)?;
                self.load_backup(record)
                    .map_err(|_| LoadError::Corrupt(key.to_owned()))?;
            }
            backup::PENDING_RECORD => {
                let pending: backup::PendingBackup = decode(records, key)?;
                self.load_pending_backup(pending);
            }
            backup::PIN_RECORD => {
                self.backup_pinned = decode(records, key)?;
            }
            backup::RETIRED_RECORD_KIND => {
                let version: String = decode(records, key)?;
                self.retired_backups.insert(version);
            }
            backup::UPLOADED_RECORD_KIND => {
                let record: backup::UploadedRecord = decode(records, key)?;
                self.load_backed_up(record);
            }
            PENDING_RECORD_KIND => {
                let pending: PendingToDevice = decode(records, key)?;
                self.load_pending(key, pending);
            }
            identity::SETTINGS_RECORD => {
                self.only_verified_globally = decode(records, key)?;
            }
            identities::VIOLATION_POLICY_RECORD => {
                self.violations_block_sending = decode(records, key)?;
            }
            _ => {}
        }
        Ok(())
    }

    /// A record saved before its ids were parsed, with one that never was
    /// an id: nothing sent or received under it could be used, and keeping
    /// it would fail every load. It goes, and its deletion is saved.
    fn drop_record_with_invalid_id(&mut self, key: &str) {
        tracing::warn!(
            record = key,
            "dropping a stored record whose id does not parse"
        );
        self.changes.delete(key.to_owned());
        // A session whose recipients are lost must not encrypt again: the
        // next share starts a new one.
        if let Some(room_id) = key
            .strip_prefix(group::SHARES_RECORD_KIND)
            .and_then(|rest| rest.strip_prefix('/'))
            .and_then(|room_id| <&RoomId>::try_from(room_id).ok())
            && self.outbound.remove(room_id).is_some()
        {
            self.changes
                .delete(format!("{}/{room_id}", group::RECORD_KIND));
        }
    }

    fn put<T: Serialize>(&mut self, key: String, value: &T) {
        // Serialising these plain structs (strings, maps, integers) cannot
        // fail; an empty record would then fail loudly at load.
        let bytes = serde_json::to_vec(value).unwrap_or_default();
        self.changes.put(key, bytes);
    }

    /// [`Self::put`] for a record around a pickle of `pickle_len` bytes:
    /// the buffer starts at its size rather than doubling up to it, which
    /// copies a kilobyte-sized pickle several times over.
    fn put_pickled<T: Serialize>(&mut self, key: String, value: &T, pickle_len: usize) {
        let mut bytes = Vec::with_capacity(pickle_len + 256);
        if serde_json::to_writer(&mut bytes, value).is_err() {
            bytes.clear(); // as in `put`: cannot happen, fails loudly at load
        }
        self.changes.put(key, bytes);
    }
}

impl std::fmt::Debug for OlmMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OlmMachine")
            .field("user_id", &self.user_id)
            .field("device_id", &self.device_id)
            .finish_non_exhaustive()
    }
}

/// Wipes every string in `value` (parsed JSON that held key material).
pub(super) fn zeroize_json(value: &mut Value) {
    use zeroize::Zeroize;
    match value {
        Value::String(text) => text.zeroize(),
        Value::Array(items) => items.iter_mut().for_each(zeroize_json),
        Value::Object(fields) => fields.values_mut().for_each(zeroize_json),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// Whether a record's JSON holds an id the machine parses (a room id, a
/// user id) that does not parse: where typed records name rooms and users,
/// in `room_id`, `user_id`, `inviter`, `sender`, `shared_by` fields,
/// `members` keys, the users of the devices a session reached, and the room
/// and devices of an undecryptable event or of an `m.room_key` batch. Such
/// a record was saved before its ids were checked.
fn holds_invalid_id(bytes: &[u8]) -> bool {
    fn is_room_id(value: &Value) -> bool {
        value
            .as_str()
            .is_some_and(|id| <&RoomId>::try_from(id).is_ok())
    }
    fn is_user_id(id: &str) -> bool {
        <&UserId>::try_from(id).is_ok()
    }
    /// `[[user, device], …]` or `[[[user, device], value], …]`.
    fn names_invalid_user(devices: &[Value]) -> bool {
        devices.iter().any(|entry| {
            let user = entry.pointer("/0/0").or_else(|| entry.pointer("/0"));
            user.and_then(Value::as_str)
                .is_some_and(|id| !is_user_id(id))
        })
    }
    fn walk(value: &Value) -> bool {
        match value {
            Value::Object(fields) => fields.iter().any(|(name, field)| {
                let invalid = match (name.as_str(), field) {
                    ("room_id", Value::String(_)) => !is_room_id(field),
                    ("user_id" | "inviter" | "sender" | "shared_by", Value::String(id)) => {
                        !is_user_id(id)
                    }
                    ("members", Value::Object(members)) => members.keys().any(|id| !is_user_id(id)),
                    ("shared_with" | "withheld_from", Value::Array(shares)) => {
                        names_invalid_user(shares)
                    }
                    ("room_keys", Value::Array(target)) => match target.as_slice() {
                        [room, _session, Value::Array(devices)] => {
                            !is_room_id(room) || names_invalid_user(devices)
                        }
                        _ => false,
                    },
                    _ => false,
                };
                invalid || walk(field)
            }),
            Value::Array(items) => items.iter().any(walk),
            _ => false,
        }
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Array(items)) => match items.as_slice() {
            // An undecryptable event's record: `[room id, event]`.
            [room @ Value::String(_), _] => !is_room_id(room),
            items => items.iter().any(walk),
        },
        Ok(value) => walk(&value),
        Err(_) => false,
    }
}

fn decode<T: DeserializeOwned>(
    records: &BTreeMap<String, Vec<u8>>,
    key: &str,
) -> Result<T, LoadError> {
    let bytes = records.get(key).ok_or(LoadError::MissingAccount)?;
    serde_json::from_slice(bytes).map_err(|_| LoadError::Corrupt(key.to_owned()))
}
