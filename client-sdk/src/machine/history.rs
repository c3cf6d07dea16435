//! History for newcomers: room key bundles as MSC4268 defines them.
//!
//! By default a new member gets no key from before they could read (the
//! `group` rules): forward secrecy towards newcomers. A room can opt in
//! ([`OlmMachine::set_share_history_on_invite`]); inviting then hands the
//! invitee a *room key bundle*: the room's inbound sessions whose creator
//! flagged them `shared_history`, exported from their first known index,
//! plus an `io.element.msc4268.history_not_shared` withheld entry for every
//! other session. The bundle is encrypted like an attachment
//! ([`myelin_crypto::attachment`]), uploaded as media, and its `file`
//! object (url, key, IV, hash) goes to each of the invitee's devices in an
//! Olm-encrypted `io.element.msc4268.room_key_bundle` to-device event.
//!
//! **Which sessions are shareable**: a session is flagged `shared_history`
//! by its creator when the room's history visibility was `shared` or
//! `world_readable` as it started (`group` rotates the session when the
//! visibility moves across that line). The flag travels in `m.room_key`
//! (`org.matrix.msc3061.shared_history`). A session from a joined-only or
//! invited-only period is never put in a bundle.
//!
//! **Receiving**: a bundle is accepted only over Olm; its details are kept
//! (not downloaded: an attacker could make us fetch junk) until we join a
//! room we were invited to *by the bundle's sender*, and for
//! [`BUNDLE_IMPORT_WINDOW_MS`] after that join
//! ([`OlmMachine::room_key_bundles_to_import`]). The sender's Olm device must
//! then be a known device of theirs. Imported sessions keep the
//! `shared_history` flag their bundle entry carries (never forced on), and
//! are marked forwarded
//! and "shared by" the sender ([`super::DecryptedRoomEvent::shared_by`]):
//! who sent each old message rests on the inviter's word. A session we
//! already hold from as far back is never replaced; one that the bundle
//! extends backwards is merged only if it is the same ratchet, keeping what
//! we knew of it. Events that waited for these keys decrypt at once.
//!
//! The threat trade-off is in `spec-notes/history-sharing.md`.

use std::collections::BTreeMap;

use myelin_crypto::{
    attachment::{self, AttachmentError, AttachmentKeys, EncryptedFile},
    megolm::{ExportedSessionKey, InboundGroupSession, MEGOLM_ALGORITHM},
};
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{
    DecryptedRoomEvent, InFlight, MachineError, Membership, OlmMachine, OutgoingRequest, Request,
    SyncOutput,
    inbound::{InboundEntry, SessionKeyId},
    olm::DecryptedOlm,
};

/// The to-device event type carrying a bundle's location and key
/// (MSC4268's unstable name for `m.room_key_bundle`).
pub(super) const ROOM_KEY_BUNDLE_EVENT: &str = "io.element.msc4268.room_key_bundle";
/// The `m.room_key` (and exported session) flag saying future members may
/// get the session (the unstable name for `shared_history`).
pub(super) const SHARED_HISTORY_FIELD: &str = "org.matrix.msc3061.shared_history";
/// The withheld code for sessions not flagged `shared_history` (unstable
/// name for `m.history_not_shared`).
pub(super) const HISTORY_NOT_SHARED: &str = "io.element.msc4268.history_not_shared";

pub(super) const RECORD_KIND: &str = "bundle";

/// A bundle is imported at most this long after we joined its room.
pub const BUNDLE_IMPORT_WINDOW_MS: u64 = 24 * 60 * 60 * 1000;
/// Bundles waiting for a join: anyone can send them, so few are kept.
const MAX_PENDING_BUNDLES: usize = 64;
/// A bundle whose download keeps failing is dropped after this many tries.
const MAX_BUNDLE_ATTEMPTS: u32 = 3;

/// A bundle announcement that arrived over Olm and waits to be imported.
#[derive(Clone, Serialize, Deserialize)]
pub(super) struct PendingBundle {
    room_id: OwnedRoomId,
    sender: OwnedUserId,
    /// The curve25519 key of the Olm session that delivered it.
    sender_key: String,
    /// The ed25519 key the Olm payload claimed for that device.
    claimed_ed25519: String,
    /// The `EncryptedFile` object (holds the bundle's key).
    pub(super) file: Value,
    received_ms: u64,
    #[serde(default)]
    attempts: u32,
}

/// A room key bundle ready to download: fetch `url` (the ciphertext) and
/// hand it to [`OlmMachine::import_room_key_bundle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomKeyBundle {
    /// The room whose history it holds.
    pub room_id: OwnedRoomId,
    /// Who shared it (the user who invited us).
    pub sender: OwnedUserId,
    /// The `mxc://` URI of the encrypted bundle.
    pub url: String,
}

/// What importing a bundle did.
#[derive(Debug, Default)]
pub struct BundleImport {
    /// Sessions stored (new, or an existing one extended backwards).
    pub imported: usize,
    /// Sessions skipped: we held them from as far back, they were for
    /// another room, malformed, or not the ratchet they claimed to be.
    pub skipped: usize,
    /// Withheld entries recorded (their events fail as expected).
    pub withheld: usize,
    /// Events kept undecryptable that the new keys decrypted.
    pub late_decryptions: Vec<DecryptedRoomEvent>,
}

/// Why a bundle was not imported.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// No bundle from this user for this room is waiting.
    #[error("no room key bundle from `{sender}` for `{room_id}` is waiting")]
    NotPending {
        /// The room.
        room_id: OwnedRoomId,
        /// The would-be sender.
        sender: OwnedUserId,
    },
    /// We did not join the room after an invite from the bundle's sender,
    /// or joined too long ago.
    #[error("not joined to the room on an invite from the bundle's sender (recently)")]
    NotInvitedBySender,
    /// The Olm device that delivered the bundle is not a known device of
    /// its sender (yet: a keys/query may be under way).
    #[error("the bundle's device is not a known device of its sender")]
    UnknownSenderDevice,
    /// The file object is invalid or the ciphertext does not match its hash.
    #[error(transparent)]
    File(#[from] AttachmentError),
    /// The decrypted bundle is not a room key bundle.
    #[error("the bundle is not a well-formed room key bundle")]
    Malformed,
}

/// The next step of [`OlmMachine::share_room_key_bundle`].
#[derive(Debug)]
pub enum BundleShare {
    /// Send these (a keys/query or keys/claim), then call again.
    Prepare(Vec<OutgoingRequest>),
    /// Send this to-device request (if any device can receive it); the
    /// bundle is then delivered.
    Deliver(Option<OutgoingRequest>),
}

/// A bundle's JSON: MSC4268's `room_keys` and `withheld`.
#[derive(Deserialize)]
struct BundleContents {
    #[serde(default)]
    room_keys: Vec<Value>,
    #[serde(default)]
    withheld: Vec<Value>,
}

impl OlmMachine {
    /// Opts `room_id` in (or out) of handing its history to users we
    /// invite. Off by default.
    pub fn set_share_history_on_invite(&mut self, room_id: &RoomId, enabled: bool) {
        self.room_mut(room_id).share_history_on_invite = enabled;
        self.save_room(room_id);
    }

    /// Whether `room_id` hands its history to users we invite.
    pub fn shares_history_on_invite(&self, room_id: &RoomId) -> bool {
        self.rooms
            .get(room_id)
            .is_some_and(|r| r.share_history_on_invite)
    }

    /// Builds and encrypts the room key bundle of `room_id`: upload the
    /// ciphertext, then pass its url and the keys to
    /// [`OlmMachine::share_room_key_bundle`].
    ///
    /// # Errors
    ///
    /// [`MachineError::RoomNotEncrypted`] for a room not known as
    /// encrypted; [`MachineError::Attachment`] if encryption fails.
    pub fn build_room_key_bundle(
        &self,
        room_id: &RoomId,
    ) -> Result<(Vec<u8>, AttachmentKeys), MachineError> {
        if !self.is_room_encrypted(room_id) {
            return Err(MachineError::RoomNotEncrypted(room_id.to_owned()));
        }
        let mut contents = self.bundle_contents(room_id);
        let plaintext = zeroize::Zeroizing::new(serde_json::to_vec(&contents).unwrap_or_default());
        super::zeroize_json(&mut contents);
        Ok(attachment::encrypt(&plaintext)?)
    }

    /// Sends the bundle uploaded as `file` to every device of `user_id`
    /// that may get room keys (not blacklisted; verified only, where the
    /// room or the device says so). Call until it returns
    /// [`BundleShare::Deliver`], sending what each call returns.
    ///
    /// # Errors
    ///
    /// [`MachineError::RoomNotEncrypted`]; [`MachineError::AwaitingResponse`]
    /// while a query or claim this needs is in flight;
    /// [`MachineError::VerificationViolation`] for a user once verified
    /// whose identity changed, unacknowledged; Olm failures.
    pub fn share_room_key_bundle(
        &mut self,
        room_id: &RoomId,
        user_id: &UserId,
        file: &EncryptedFile,
        now_ms: u64,
    ) -> Result<BundleShare, MachineError> {
        if !self.is_room_encrypted(room_id) {
            return Err(MachineError::RoomNotEncrypted(room_id.to_owned()));
        }
        let users = vec![user_id.to_owned()];
        if self.devices.track(user_id) {
            self.save_user_devices(user_id);
        }
        if self.devices.is_outdated(user_id) {
            return self.pending_or_new_query(users).map(BundleShare::Prepare);
        }
        self.check_verification_violations(&users)?;
        let recipients = self.recipients(room_id, &users);
        let missing = self.devices_to_claim(&recipients.devices, now_ms);
        if !missing.is_empty() {
            return self.pending_or_new_claim(missing).map(BundleShare::Prepare);
        }
        let content = json!({"room_id": room_id, "file": file.to_json()});
        let mut messages: BTreeMap<OwnedUserId, Map<String, Value>> = BTreeMap::new();
        let targets: Vec<_> = recipients
            .devices
            .into_iter()
            .filter(|d| self.has_olm_session(d))
            .collect();
        for device in &targets {
            let encrypted = self.encrypt_for_device(device, ROOM_KEY_BUNDLE_EVENT, &content)?;
            messages
                .entry(device.user_id.clone())
                .or_default()
                .insert(device.device_id.to_string(), encrypted);
        }
        if messages.is_empty() {
            return Ok(BundleShare::Deliver(None));
        }
        let body = json!({"messages": messages});
        let request = self.issue(InFlight::ToDevice, |txn_id| Request::ToDevice {
            event_type: "m.room.encrypted".to_owned(),
            txn_id: txn_id.to_owned(),
            body,
        });
        Ok(BundleShare::Deliver(Some(request)))
    }

    /// The bundles to download and import now: from the user who invited
    /// us to a room we joined less than [`BUNDLE_IMPORT_WINDOW_MS`] ago,
    /// delivered by a device we know is theirs.
    pub fn room_key_bundles_to_import(&self, now_ms: u64) -> Vec<RoomKeyBundle> {
        self.bundles
            .values()
            .filter(|b| self.may_import(b, now_ms) && self.is_from_sender_device(b))
            .filter_map(|b| {
                Some(RoomKeyBundle {
                    room_id: b.room_id.clone(),
                    sender: b.sender.clone(),
                    url: b.file.get("url")?.as_str()?.to_owned(),
                })
            })
            .collect()
    }

    /// Imports a downloaded bundle: checks the ciphertext against the hash
    /// the sender gave us, decrypts it, and stores its sessions of this
    /// room as shared by the sender (see the module docs). The bundle is
    /// used up, whatever the outcome, unless its sender's devices are still
    /// being fetched.
    ///
    /// # Errors
    ///
    /// [`BundleError`]: nothing waiting, not invited by the sender, an
    /// unknown sender device, a ciphertext that does not match its hash,
    /// or a plaintext that is not a bundle.
    pub fn import_room_key_bundle(
        &mut self,
        room_id: &RoomId,
        sender: &UserId,
        ciphertext: &[u8],
        now_ms: u64,
    ) -> Result<BundleImport, BundleError> {
        let key = (room_id.to_owned(), sender.to_owned());
        let bundle = self
            .bundles
            .get(&key)
            .cloned()
            .ok_or_else(|| BundleError::NotPending {
                room_id: room_id.to_owned(),
                sender: sender.to_owned(),
            })?;
        if !self.may_import(&bundle, now_ms) {
            return Err(BundleError::NotInvitedBySender);
        }
        if !self.is_from_sender_device(&bundle) {
            if !self.devices.is_outdated(sender) {
                self.drop_bundle(&key);
            }
            return Err(BundleError::UnknownSenderDevice);
        }
        self.drop_bundle(&key);
        let file = EncryptedFile::from_json(&bundle.file)?;
        let plaintext = zeroize::Zeroizing::new(attachment::decrypt(ciphertext, &file.keys)?);
        let mut contents: BundleContents =
            serde_json::from_slice(&plaintext).map_err(|_| BundleError::Malformed)?;

        let mut import = BundleImport::default();
        let mut output = SyncOutput::default();
        for room_key in &contents.room_keys {
            let stored = shared_session(room_id, room_key)
                .map(|entry| entry.shared_by(sender))
                .is_some_and(|entry| self.accept_inbound(entry, &mut output));
            if stored {
                import.imported += 1;
            } else {
                import.skipped += 1;
            }
        }
        for withheld in &contents.withheld {
            let code = withheld.get("code").and_then(Value::as_str);
            if let (Some(key_id), Some(code)) = (SessionKeyId::from_json(Some(withheld)), code)
                && key_id.room_id == room_id
            {
                self.record_withheld(key_id, code);
                import.withheld += 1;
            }
        }
        contents.room_keys.iter_mut().for_each(super::zeroize_json);
        import.late_decryptions = output.late_decryptions;
        Ok(import)
    }

    /// Reports that a bundle could not be downloaded. It is offered again
    /// until it has failed a few times.
    pub fn mark_room_key_bundle_failed(&mut self, room_id: &RoomId, sender: &UserId) {
        let key = (room_id.to_owned(), sender.to_owned());
        let Some(bundle) = self.bundles.get_mut(&key) else {
            return;
        };
        bundle.attempts += 1;
        if bundle.attempts >= MAX_BUNDLE_ATTEMPTS {
            self.drop_bundle(&key);
        } else {
            let bundle = bundle.clone();
            self.put(bundle_key(&key), &bundle);
        }
    }

    /// Keeps an Olm-delivered bundle announcement until we join its room;
    /// one without a valid room id is dropped.
    pub(super) fn receive_room_key_bundle(&mut self, olm: &DecryptedOlm, now_ms: u64) {
        let room_id = olm
            .content
            .get("room_id")
            .and_then(Value::as_str)
            .and_then(|id| OwnedRoomId::try_from(id).ok());
        let file = olm.content.get("file");
        let (Some(room_id), Some(file)) = (room_id, file) else {
            return;
        };
        if EncryptedFile::from_json(file).is_err() {
            return;
        }
        let key = (room_id.clone(), olm.sender.clone());
        let bundle = PendingBundle {
            room_id,
            sender: olm.sender.clone(),
            sender_key: olm.sender_key.clone(),
            claimed_ed25519: olm.claimed_ed25519.clone(),
            file: file.clone(),
            received_ms: now_ms,
            attempts: 0,
        };
        self.put(bundle_key(&key), &bundle);
        self.bundles.insert(key, bundle);
        while self.bundles.len() > MAX_PENDING_BUNDLES {
            let oldest = self
                .bundles
                .iter()
                .min_by_key(|(_, b)| b.received_ms)
                .map(|(key, _)| key.clone());
            if let Some(oldest) = oldest {
                self.drop_bundle(&oldest);
            }
        }
    }

    /// A bundle from the store, under `record_key`; one saved under the
    /// older `bundle/{room}/{sender}` key moves to its own.
    pub(super) fn load_bundle(&mut self, record_key: &str, bundle: PendingBundle) {
        let key = (bundle.room_id.clone(), bundle.sender.clone());
        let own_key = bundle_key(&key);
        if record_key != own_key {
            self.changes.delete(record_key.to_owned());
            self.put(own_key, &bundle);
        }
        self.bundles.insert(key, bundle);
    }

    /// Drops the bundles of a room we left.
    pub(super) fn forget_room_key_bundles(&mut self, room_id: &RoomId) {
        let keys: Vec<BundleKey> = self
            .bundles
            .keys()
            .filter(|(room, _)| room == room_id)
            .cloned()
            .collect();
        for key in keys {
            self.drop_bundle(&key);
        }
    }

    /// The bundle's room has us joined, on an invite from the bundle's
    /// sender, recently.
    fn may_import(&self, bundle: &PendingBundle, now_ms: u64) -> bool {
        self.rooms.get(&bundle.room_id).is_some_and(|room| {
            room.members.get(&self.user_id) == Some(&Membership::Join)
                && room.inviter.as_deref() == Some(&*bundle.sender)
                && room
                    .joined_ms
                    .is_some_and(|joined| now_ms.saturating_sub(joined) < BUNDLE_IMPORT_WINDOW_MS)
        })
    }

    /// The Olm session that delivered the bundle belongs to a device we
    /// know as the sender's, with the ed25519 key the payload claimed.
    fn is_from_sender_device(&self, bundle: &PendingBundle) -> bool {
        self.devices
            .device_by_curve(&bundle.sender_key)
            .is_some_and(|d| d.user_id == bundle.sender && d.ed25519 == bundle.claimed_ed25519)
    }

    fn drop_bundle(&mut self, key: &BundleKey) {
        if self.bundles.remove(key).is_some() {
            self.changes.delete(bundle_key(key));
        }
    }

    /// MSC4268's bundle for `room_id`: every session flagged
    /// `shared_history`, and a withheld entry for each of the others.
    pub(super) fn bundle_contents(&self, room_id: &RoomId) -> Value {
        let mut room_keys = Vec::new();
        let mut withheld = Vec::new();
        for entry in self
            .inbound
            .values()
            .filter(|e| e.key_id.room_id == room_id)
        {
            let key_id = &entry.key_id;
            if entry.is_history_shared() {
                room_keys.push(json!({
                    "algorithm": MEGOLM_ALGORITHM,
                    "room_id": room_id,
                    "sender_key": key_id.sender_key,
                    "session_id": key_id.session_id,
                    "session_key": entry.export().to_base64(),
                    "sender_claimed_keys": {"ed25519": entry.claimed_ed25519()},
                    SHARED_HISTORY_FIELD: true,
                }));
            } else {
                withheld.push(json!({
                    "algorithm": MEGOLM_ALGORITHM,
                    "room_id": room_id,
                    "sender_key": key_id.sender_key,
                    "session_id": key_id.session_id,
                    "code": HISTORY_NOT_SHARED,
                    "reason": "The sender did not agree to share this history.",
                }));
            }
        }
        json!({"room_keys": room_keys, "withheld": withheld})
    }
}

/// An inbound session from one `room_keys` entry of a bundle for
/// `room_id`; `None` if it is for another room or malformed.
fn shared_session(room_id: &RoomId, room_key: &Value) -> Option<InboundEntry> {
    let field = |name: &str| room_key.get(name).and_then(Value::as_str);
    let key_id = SessionKeyId::from_json(Some(room_key))?;
    if field("algorithm") != Some(MEGOLM_ALGORITHM) || key_id.room_id != room_id {
        return None;
    }
    let session_key = ExportedSessionKey::from_base64(field("session_key")?).ok()?;
    let claimed = room_key
        .pointer("/sender_claimed_keys/ed25519")
        .and_then(Value::as_str)?;
    let entry = InboundEntry::new(
        key_id,
        InboundGroupSession::import(&session_key),
        None,
        claimed.to_owned(),
    );
    // The flag is the session creator's word, passed on: a bundle cannot
    // make a session shareable that was not.
    let shared_history = room_key.get(SHARED_HISTORY_FIELD) == Some(&Value::Bool(true));
    Some(entry.with_shared_history(shared_history))
}

/// A pending bundle's room and sender.
pub(super) type BundleKey = (OwnedRoomId, OwnedUserId);

/// The record of a pending bundle: the room and sender as a JSON pair, so
/// that no two (room, sender) pairs share a key, whatever `/` their ids
/// carry (a room id's opaque part may hold one).
fn bundle_key(key: &BundleKey) -> String {
    // A pair of strings always serialises.
    let pair = serde_json::to_string(key).unwrap_or_default();
    format!("{RECORD_KIND}/{pair}")
}
