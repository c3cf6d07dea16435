//! Server-side key backup: the spec's `m.megolm_backup.v1.curve25519-aes-sha2`
//! and, by default, its authenticated form (MSC4048), whose entries carry a
//! MAC keyed by the backup's private key ([`BackupAlgorithm`],
//! `spec-notes/key-backup.md`).
//!
//! [`OlmMachine::enable_backup`] makes a new backup key, asks the server
//! for a backup version whose `auth_data` holds the public key (signed by
//! this device), and hands back the recovery key for the user to write
//! down; the private key is kept sealed under the pickle key. From then on
//! every inbound Megolm session is uploaded once to that version, encrypted
//! to the public key, in batches from [`OlmMachine::outgoing_requests`]. A
//! session is uploaded again only when it improves (reaches further back or
//! gains a better provenance), and everything again for a new version.
//!
//! [`OlmMachine::restore_backup`] takes what a new device downloaded (the
//! version and its keys) and the recovery key. A recovery key whose public
//! key is not the version's is refused as a whole
//! ([`BackupError::WrongRecoveryKey`]); otherwise each entry is decrypted on
//! its own, and one that does not decrypt, is malformed, or is not the
//! session it is filed under is skipped without touching the others. The
//! spec's algorithm authenticates nothing (anyone with the public key, the
//! server included, can write an entry), so its restored sessions are
//! stored exactly like forwarded keys: not attributed to their sender's Olm
//! session (`forwarded`), merged into a session we hold only if it is the
//! same ratchet, and never replacing a better copy. An authenticated
//! backup's restore refuses entries without a valid MAC and keeps the rest
//! as their senders'.
//!
//! A device uploads to a backup whose private key it holds (it created or
//! restored it), or, with [`OlmMachine::trust_backup`], to one whose
//! `auth_data` is signed by this device or by one of our own devices the
//! user verified: never to a public key the server alone vouches for, which
//! would hand it every room key (`spec-notes/key-backup.md`).
//!
//! Reading a backup is [`super::backup_restore`]; fetching the keys of
//! undecryptable events from it, [`super::backup_fetch`]; which versions
//! are accepted (the authenticated-backup pin) and deleting replaced ones,
//! [`super::backup_policy`].

use std::collections::BTreeMap;

use myelin_crypto::{
    PickleError,
    backup::{BACKUP_ALGORITHM, BackupDecryptionKey, BackupEncryptionKey},
    backup_mac::{AUTHENTICATED_BACKUP_ALGORITHM, BackupMacKey, UNAUTHENTICATED_FIELD},
    megolm::{ExportedSessionKey, InboundGroupSession, MEGOLM_ALGORITHM},
    olm::Ed25519PublicKey,
    verify_json_signature,
};
use ruma::{OwnedUserId, RoomId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

use super::{
    DecryptedRoomEvent, MachineError, OlmMachine, OutgoingRequest, Request,
    history::SHARED_HISTORY_FIELD,
    inbound::{InboundEntry, SessionKeyId, inbound_key},
    requests::InFlight,
};

/// The record of the backup we upload to.
pub(super) const RECORD: &str = "backup";
/// The record of a backup being created: its key, sealed, until the
/// server has made the version.
pub(super) const PENDING_RECORD: &str = "backup_pending";
/// One record per session uploaded: which version holds it.
pub(super) const UPLOADED_RECORD_KIND: &str = "backed_up";
/// Sessions per upload request.
pub(super) const UPLOAD_BATCH: usize = 100;

/// The secret storage name of the backup's private key.
pub const BACKUP_SECRET: &str = "m.megolm_backup.v1";

/// The recovery key of the backup whose private key secret storage held
/// under [`BACKUP_SECRET`], for [`OlmMachine::restore_backup`].
///
/// # Errors
///
/// [`BackupError::Malformed`] if `secret` is not 32 bytes of base64.
pub fn backup_recovery_key(secret: &str) -> Result<Zeroizing<String>, BackupError> {
    BackupDecryptionKey::from_base64(secret)
        .map(|key| key.to_recovery_key())
        .ok_or(BackupError::Malformed("backup secret is not a private key"))
}

/// Why a backup could not be enabled or restored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The recovery key is not one (typo, wrong length, bad parity).
    #[error("not a valid recovery key: {0}")]
    InvalidRecoveryKey(#[source] myelin_crypto::backup::BackupError),
    /// The recovery key is valid but is not the key of this backup.
    #[error("the recovery key does not open this backup")]
    WrongRecoveryKey,
    /// The backup uses an algorithm this SDK does not implement.
    #[error("unsupported backup algorithm `{0}`")]
    UnsupportedAlgorithm(String),
    /// The backup version or its keys do not have the spec's shape.
    #[error("malformed backup: {0}")]
    Malformed(&'static str),
    /// The backup's `auth_data` is not signed by this device nor by one of
    /// our own devices the user verified.
    #[error("the backup is not signed by a trusted device of ours")]
    Untrusted,
    /// The new backup key could not be sealed or its `auth_data` signed.
    #[error("the backup key could not be stored or signed")]
    KeyStorage,
    /// The backup is of the spec's algorithm while the user's backups are
    /// authenticated (MSC4048): a server swapping versions could otherwise
    /// write keys into it. Only the user choosing the spec's algorithm
    /// ([`BackupAlgorithm::Spec`] at enable time) lifts this.
    #[error("the backup is not authenticated, and the user's backups are")]
    Downgrade,
    /// This device does not hold the private key of the backup it uses
    /// (none is active, or it only uploads to it).
    #[error("this device holds no backup key to read the backup with")]
    NoBackupKey,
}

/// What restoring a backup did.
#[derive(Debug, Default)]
pub struct BackupRestore {
    /// The backup version restored from (uploads now go there).
    pub version: String,
    /// Sessions stored (new, or an existing one extended backwards).
    pub imported: usize,
    /// Sessions that added nothing to what we hold, or that are not the
    /// ratchet we hold under their id (a forged copy of a known session).
    pub unchanged: usize,
    /// Entries that did not decrypt, did not hold a room key, or held
    /// another session than the one they are filed under.
    pub invalid: usize,
    /// Entries of an authenticated backup without a valid MAC: written by
    /// someone who does not hold the backup key (the server, say), so never
    /// decrypted.
    pub refused: usize,
    /// Events kept undecryptable that the restored keys decrypted.
    pub late_decryptions: Vec<DecryptedRoomEvent>,
}

/// The algorithm of a new backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupAlgorithm {
    /// `org.matrix.msc4048.curve25519-aes-sha2`: every entry carries a MAC
    /// keyed by the backup's private key, so keys nobody holding it wrote
    /// (the server's, say) are refused, and restored keys keep the trust
    /// their sender's device had. Only devices holding the private key
    /// upload; clients that do not implement MSC4048 cannot read it.
    Authenticated,
    /// The spec's `m.megolm_backup.v1.curve25519-aes-sha2`, which every
    /// client reads: anyone with the public key can add entries, so
    /// restored keys count as forwarded ones.
    Spec,
}

impl BackupAlgorithm {
    /// The name in a backup version's `algorithm`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Authenticated => AUTHENTICATED_BACKUP_ALGORITHM,
            Self::Spec => BACKUP_ALGORITHM,
        }
    }
}

/// The backup this device uploads to.
pub(super) struct ActiveBackup {
    pub(super) version: String,
    public_key: BackupEncryptionKey,
    /// Held when this device created or restored the backup.
    pub(super) private_key: Option<BackupDecryptionKey>,
    /// Whether its entries carry the MSC4048 MAC.
    pub(super) authenticated: bool,
}

#[derive(Serialize, Deserialize)]
pub(super) struct BackupRecord {
    version: String,
    public_key: String,
    /// The private key, sealed under the pickle key.
    pickle: Option<String>,
    #[serde(default)]
    authenticated: bool,
}

/// A backup whose recovery key was handed out and whose version the
/// server has not confirmed yet.
#[derive(Clone, Serialize, Deserialize)]
pub(super) struct PendingBackup {
    /// The private key, sealed under the pickle key.
    pickle: String,
    /// The `POST /room_keys/version` body (signed `auth_data`).
    body: Value,
    /// The version the new one replaces, deleted once the new one exists.
    #[serde(default)]
    replaces: Option<String>,
}

/// The record of an old backup version to delete from the server.
pub(super) const RETIRED_RECORD_KIND: &str = "backup_retired";
/// The record saying the user's backups are authenticated (MSC4048).
pub(super) const PIN_RECORD: &str = "backup_pin";

#[derive(Serialize, Deserialize)]
pub(super) struct UploadedRecord {
    key_id: SessionKeyId,
    version: String,
}

impl OlmMachine {
    /// Starts a new backup: returns the request creating the backup version
    /// (`POST /room_keys/version`) and the recovery key to show the user.
    /// The backup is used once [`OlmMachine::mark_request_sent`] reports the
    /// server's answer.
    ///
    /// The key is in the change set taken next (sealed under the pickle
    /// key): save it before sending the request, and show the recovery key
    /// then. From that point the key is not lost: a creation that fails, or
    /// is not answered before a restart, is asked for again by
    /// [`OlmMachine::outgoing_requests`] with the same key, until the server
    /// confirms it or [`OlmMachine::cancel_backup_creation`] gives up on it
    /// (for a caller that could not save the key, and so never showed it).
    ///
    /// The backup is authenticated ([`BackupAlgorithm::Authenticated`]);
    /// [`OlmMachine::enable_backup_with`] chooses.
    ///
    /// # Errors
    ///
    /// [`BackupError::KeyStorage`] if the key could not be sealed or signed.
    pub fn enable_backup(&mut self) -> Result<(OutgoingRequest, Zeroizing<String>), BackupError> {
        self.enable_backup_with(BackupAlgorithm::Authenticated)
    }

    /// [`OlmMachine::enable_backup`] with the algorithm given. The backup
    /// this device used, if any, is deleted from the server once the new
    /// one exists.
    ///
    /// Choosing [`BackupAlgorithm::Spec`] is the user's explicit consent to
    /// an unauthenticated backup: it lifts the pin that otherwise refuses
    /// one once the user had an authenticated backup
    /// ([`BackupError::Downgrade`]).
    ///
    /// # Errors
    ///
    /// [`BackupError::KeyStorage`] if the key could not be sealed or signed.
    pub fn enable_backup_with(
        &mut self,
        algorithm: BackupAlgorithm,
    ) -> Result<(OutgoingRequest, Zeroizing<String>), BackupError> {
        let replaces = self.backup_version().map(str::to_owned);
        self.enable_backup_replacing(algorithm, replaces)
    }

    /// [`OlmMachine::enable_backup_with`], naming the version the new one
    /// replaces (the server's current one, which another device may have
    /// made): it is deleted from the server once the new one exists.
    ///
    /// # Errors
    ///
    /// [`BackupError::KeyStorage`] if the key could not be sealed or signed.
    pub fn enable_backup_replacing(
        &mut self,
        algorithm: BackupAlgorithm,
        replaces: Option<String>,
    ) -> Result<(OutgoingRequest, Zeroizing<String>), BackupError> {
        let key = BackupDecryptionKey::new();
        let mut auth_data = key.encryption_key().auth_data();
        self.account
            .sign_json(
                self.user_id.as_str(),
                self.device_id.as_str(),
                &mut auth_data,
            )
            .map_err(|_| BackupError::KeyStorage)?;
        let pickle = key
            .pickle(&self.pickle_key)
            .map_err(|_| BackupError::KeyStorage)?;
        let body = json!({"algorithm": algorithm.name(), "auth_data": auth_data});
        let pending = PendingBackup {
            pickle,
            body,
            replaces,
        };
        if algorithm == BackupAlgorithm::Spec {
            self.set_backup_pin(false);
        }
        self.put(PENDING_RECORD.to_owned(), &pending);
        self.pending_backup = Some(pending.clone());
        Ok((self.backup_create_request(pending), key.to_recovery_key()))
    }

    /// Gives up on the backup [`OlmMachine::enable_backup`] started and the
    /// server has not confirmed: its creation is not asked for again, and
    /// an answer to one in flight is ignored.
    pub fn cancel_backup_creation(&mut self) {
        if self.pending_backup.take().is_some() {
            self.changes.delete(PENDING_RECORD.to_owned());
        }
    }

    /// The creation of the pending backup, unless one is in flight.
    pub(super) fn pending_backup_request(&mut self) -> Option<OutgoingRequest> {
        let creating = self
            .in_flight
            .values()
            .any(|r| matches!(r, InFlight::BackupCreate { .. }));
        if creating {
            return None;
        }
        let pending = self.pending_backup.clone()?;
        Some(self.backup_create_request(pending))
    }

    fn backup_create_request(&mut self, pending: PendingBackup) -> OutgoingRequest {
        let PendingBackup { pickle, body, .. } = pending;
        self.issue(InFlight::BackupCreate { pickle }, |_| {
            Request::BackupVersionCreate { body }
        })
    }

    pub(super) fn load_pending_backup(&mut self, pending: PendingBackup) {
        self.pending_backup = Some(pending);
    }

    /// Uploads to the server's current backup `version` (the answer of
    /// `GET /room_keys/version`) without its recovery key, because its
    /// `auth_data` is signed by this device or by one of our own devices the
    /// user verified (a backup another of our devices enabled). Keeps the
    /// private key if this device already holds it.
    ///
    /// # Errors
    ///
    /// [`BackupError::Untrusted`] otherwise (the server alone could have
    /// made it); [`BackupError::UnsupportedAlgorithm`] or
    /// [`BackupError::Malformed`].
    pub fn trust_backup(&mut self, version: &Value) -> Result<(), BackupError> {
        let parsed = parse_version(version)?;
        if !self.signed_by_trusted_own_device(parsed.auth_data) {
            return Err(BackupError::Untrusted);
        }
        self.refuse_downgrade(parsed.authenticated)?;
        let private_key = self
            .backup
            .take()
            .filter(|b| b.version == parsed.id && b.public_key == parsed.public_key)
            .and_then(|b| b.private_key);
        self.activate_backup(
            parsed.id,
            parsed.public_key,
            private_key,
            parsed.authenticated,
        );
        Ok(())
    }

    /// The private key of the backup this device uploads to, if it holds
    /// it, as secret storage keeps it under [`BACKUP_SECRET`]: unpadded
    /// base64. A device that reads it back restores with
    /// [`backup_recovery_key`]'s recovery key.
    pub fn backup_secret(&self) -> Option<Zeroizing<String>> {
        let key = self.backup.as_ref()?.private_key.as_ref()?;
        Some(key.to_base64())
    }

    /// The backup version this device uploads to, if any.
    pub fn backup_version(&self) -> Option<&str> {
        self.backup.as_ref().map(|b| b.version.as_str())
    }

    /// Reports that the server answered a backup request with
    /// `M_WRONG_ROOM_KEYS_VERSION` or a 404. For an upload, the version is
    /// gone or no longer the current one: the backup is disabled until one
    /// is enabled or restored, and this returns `true`. For a fetch of
    /// keys, the backup does not have them: they are not asked for again
    /// for a while. For the deletion of an old version, it is gone already.
    ///
    /// # Errors
    ///
    /// [`MachineError::UnknownRequest`] for an id not in flight.
    pub fn mark_backup_gone(&mut self, request_id: &str) -> Result<bool, MachineError> {
        let in_flight = self
            .in_flight
            .remove(request_id)
            .ok_or_else(|| MachineError::UnknownRequest(request_id.to_owned()))?;
        let version = match in_flight {
            InFlight::BackupUpload { version, .. } => version,
            InFlight::BackupFetch {
                room_id, sessions, ..
            } => {
                self.backup_keys_missing(&room_id, &sessions);
                return Ok(false);
            }
            InFlight::BackupVersionDelete { version } => {
                self.forget_retired_backup(&version);
                return Ok(false);
            }
            _ => return Ok(false),
        };
        if self.backup_version() != Some(version.as_str()) {
            return Ok(false);
        }
        self.backup = None;
        self.changes.delete(RECORD.to_owned());
        Ok(true)
    }

    /// The next batch of sessions to upload, if a backup is active and no
    /// upload is in flight.
    pub(super) fn backup_upload_request(&mut self) -> Option<OutgoingRequest> {
        let uploading = self
            .in_flight
            .values()
            .any(|f| matches!(f, InFlight::BackupUpload { .. }));
        let backup = self.backup.as_ref().filter(|_| !uploading)?;
        let version = backup.version.clone();
        let public_key = backup.public_key;
        // An authenticated backup takes only entries MACed with a key
        // derived from its private key: without it, this device cannot
        // write there.
        let mac_key = match (backup.authenticated, &backup.private_key) {
            // Pinned after this backup was chosen (secret storage said
            // the user's backups are authenticated): not written to.
            (false, _) if self.backup_pinned => return None,
            (false, _) => None,
            (true, Some(private_key)) => Some(BackupMacKey::derive(private_key)),
            (true, None) => return None,
        };
        let batch: Vec<SessionKeyId> = self
            .inbound
            .keys()
            .filter(|k| self.backed_up.get(*k) != Some(&version))
            .take(UPLOAD_BATCH)
            .cloned()
            .collect();
        // This device's signed keys, made once for the batch's own sessions.
        let own = mac_key
            .is_some()
            .then(|| (self.own_curve(), self.sender_device_keys()));
        let mut rooms: BTreeMap<&str, Map<String, Value>> = BTreeMap::new();
        let mut sessions = Vec::new();
        for key_id in &batch {
            let Some(entry) = self.inbound.get(key_id) else {
                continue;
            };
            // Only a low-order public key fails, and ours is generated.
            let plaintext = if let Some((own_curve, own_keys)) = &own {
                authenticated_backup_plaintext(entry, own_curve, own_keys)
            } else {
                backup_plaintext(exported_session(entry))
            };
            let Ok(encrypted) = public_key.encrypt(&plaintext) else {
                continue;
            };
            let mut session_data = encrypted.to_json();
            if let Some(mac_key) = &mac_key {
                mac_key.sign(self.user_id.as_str(), &mut session_data);
            }
            let data = json!({
                "first_message_index": entry.first_known_index(),
                "forwarded_count": u32::from(entry.is_forwarded()),
                "is_verified": false,
                "session_data": session_data,
            });
            rooms
                .entry(key_id.room_id.as_str())
                .or_default()
                .insert(key_id.session_id.clone(), data);
            sessions.push(key_id.clone());
        }
        if sessions.is_empty() {
            return None;
        }
        let rooms: Map<String, Value> = rooms
            .into_iter()
            .map(|(room, sessions)| (room.to_owned(), json!({"sessions": sessions})))
            .collect();
        let body = json!({"rooms": rooms});
        let in_flight = InFlight::BackupUpload {
            version: version.clone(),
            sessions,
        };
        Some(self.issue(in_flight, |_| Request::BackupKeysUpload { version, body }))
    }

    /// The server created our backup version.
    pub(super) fn receive_backup_created(
        &mut self,
        pickle: &str,
        response: &Value,
    ) -> Result<(), &'static str> {
        let version = response
            .get("version")
            .and_then(Value::as_str)
            .ok_or("no `version`")?;
        if self.pending_backup.as_ref().map(|p| p.pickle.as_str()) != Some(pickle) {
            return Ok(()); // cancelled, or replaced by a newer backup
        }
        let pending_algorithm = self
            .pending_backup
            .as_ref()
            .and_then(|p| p.body.get("algorithm"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let pending_algorithm = pending_algorithm.as_deref();
        let replaces = self
            .pending_backup
            .as_ref()
            .and_then(|p| p.replaces.clone());
        self.cancel_backup_creation();
        if let Some(old) = replaces.filter(|old| old != version) {
            self.retire_backup(old);
        }
        let key = BackupDecryptionKey::from_pickle(pickle, &self.pickle_key)
            .map_err(|_| "backup key pickle did not open")?;
        let authenticated = pending_algorithm == Some(AUTHENTICATED_BACKUP_ALGORITHM);
        self.activate_backup(
            version.to_owned(),
            key.encryption_key(),
            Some(key),
            authenticated,
        );
        Ok(())
    }

    /// The server stored an upload.
    pub(super) fn receive_backup_uploaded(&mut self, version: &str, sessions: Vec<SessionKeyId>) {
        if self.backup_version() != Some(version) {
            return;
        }
        for key_id in sessions {
            self.mark_backed_up(key_id, version);
        }
    }

    /// A session changed (improved): its backed-up copy is stale.
    pub(super) fn forget_backed_up(&mut self, key_id: &SessionKeyId) {
        if self.backed_up.remove(key_id).is_some() {
            self.changes
                .delete(format!("{UPLOADED_RECORD_KIND}/{}", inbound_key(key_id)));
        }
    }

    pub(super) fn load_backup(&mut self, record: BackupRecord) -> Result<(), PickleError> {
        let private_key = record
            .pickle
            .map(|pickle| BackupDecryptionKey::from_pickle(&pickle, &self.pickle_key))
            .transpose()?;
        let public_key =
            BackupEncryptionKey::from_base64(&record.public_key).map_err(|_| PickleError)?;
        self.backup = Some(ActiveBackup {
            version: record.version,
            public_key,
            private_key,
            authenticated: record.authenticated,
        });
        Ok(())
    }

    pub(super) fn load_backed_up(&mut self, record: UploadedRecord) {
        self.backed_up.insert(record.key_id, record.version);
    }

    pub(super) fn activate_backup(
        &mut self,
        version: String,
        public_key: BackupEncryptionKey,
        private_key: Option<BackupDecryptionKey>,
        authenticated: bool,
    ) {
        let pickle = match private_key.as_ref().map(|k| k.pickle(&self.pickle_key)) {
            Some(Ok(pickle)) => Some(pickle),
            // Without its record the backup is simply not used after a
            // restart (the random number generator failed).
            Some(Err(_)) => return,
            None => None,
        };
        let record = BackupRecord {
            version: version.clone(),
            public_key: public_key.to_base64(),
            pickle,
            authenticated,
        };
        self.put(RECORD.to_owned(), &record);
        if authenticated {
            self.set_backup_pin(true);
        }
        self.backup = Some(ActiveBackup {
            version,
            public_key,
            private_key,
            authenticated,
        });
    }

    /// Whether `auth_data` is signed by this device or by one of our own
    /// devices the user verified.
    fn signed_by_trusted_own_device(&self, auth_data: &Map<String, Value>) -> bool {
        let Some(signatures) = auth_data
            .get("signatures")
            .and_then(|s| s.get(self.user_id.as_str()))
            .and_then(Value::as_object)
        else {
            return false;
        };
        signatures.keys().any(|key_id| {
            let Some(device_id) = key_id.strip_prefix("ed25519:") else {
                return false;
            };
            let key = if device_id == self.device_id {
                Some(self.account.identity_keys().ed25519)
            } else {
                self.devices
                    .device(&self.user_id, device_id.into())
                    .filter(|d| self.devices.is_verified(d))
                    .and_then(|d| Ed25519PublicKey::from_base64(&d.ed25519).ok())
            };
            key.is_some_and(|key| {
                verify_json_signature(&key, self.user_id.as_str(), key_id, auth_data).is_ok()
            })
        })
    }

    pub(super) fn mark_backed_up(&mut self, key_id: SessionKeyId, version: &str) {
        let record = UploadedRecord {
            key_id: key_id.clone(),
            version: version.to_owned(),
        };
        self.put(
            format!("{UPLOADED_RECORD_KIND}/{}", inbound_key(&key_id)),
            &record,
        );
        self.backed_up.insert(key_id, version.to_owned());
    }
}

/// What a backup version says of itself.
pub(super) struct ParsedVersion<'a> {
    pub(super) id: String,
    pub(super) public_key: BackupEncryptionKey,
    auth_data: &'a Map<String, Value>,
    /// `org.matrix.msc4048.curve25519-aes-sha2`: entries carry a MAC.
    pub(super) authenticated: bool,
}

/// A backup version of one of the two algorithms this SDK reads.
pub(super) fn parse_version(version: &Value) -> Result<ParsedVersion<'_>, BackupError> {
    let algorithm = version
        .get("algorithm")
        .and_then(Value::as_str)
        .ok_or(BackupError::Malformed("no `algorithm`"))?;
    let authenticated = match algorithm {
        AUTHENTICATED_BACKUP_ALGORITHM => true,
        BACKUP_ALGORITHM => false,
        other => return Err(BackupError::UnsupportedAlgorithm(other.to_owned())),
    };
    let id = version
        .get("version")
        .and_then(Value::as_str)
        .ok_or(BackupError::Malformed("no `version`"))?;
    let auth_data = version
        .get("auth_data")
        .and_then(Value::as_object)
        .ok_or(BackupError::Malformed("no `auth_data` object"))?;
    let public_key = BackupEncryptionKey::from_auth_data(auth_data)
        .map_err(|_| BackupError::Malformed("no curve25519 `public_key` in `auth_data`"))?;
    Ok(ParsedVersion {
        id: id.to_owned(),
        public_key,
        auth_data,
        authenticated,
    })
}

/// What an authenticated backup holds for `entry`. A key this device
/// cannot vouch for (a forwarded one) says so; one it can carries its
/// creator's signed device keys when they are known
/// ([`SENDER_DEVICE_KEYS_FIELD`]: `own_keys` for this device's own sessions,
/// whose sender key is `own_curve`), so that a device restoring it after the
/// creator's device is gone can still tell whose it is.
fn authenticated_backup_plaintext(
    entry: &InboundEntry,
    own_curve: &str,
    own_keys: &Value,
) -> Zeroizing<Vec<u8>> {
    let mut session = exported_session(entry);
    if entry.is_forwarded() {
        session.insert(
            UNAUTHENTICATED_FIELD.to_owned(),
            "m.forwarded_room_key".into(),
        );
    } else if entry.key_id.sender_key == own_curve {
        session.insert(SENDER_DEVICE_KEYS_FIELD.to_owned(), own_keys.clone());
    } else if let Some(keys) = entry.sender_device_keys() {
        session.insert(
            SENDER_DEVICE_KEYS_FIELD.to_owned(),
            Value::Object(keys.clone()),
        );
    }
    backup_plaintext(session)
}

/// The plaintext of a backup entry: the session as the spec's
/// `BackedUpSessionData`.
fn backup_plaintext(session: Map<String, Value>) -> Zeroizing<Vec<u8>> {
    let mut data = Value::Object(session);
    // Serialising a `Value` of strings cannot fail.
    let plaintext = Zeroizing::new(serde_json::to_vec(&data).unwrap_or_default());
    super::zeroize_json(&mut data);
    plaintext
}

/// A session as backups and key exports hold it (`session_key` exported
/// from its first known index); exports add its room and session ids.
pub(super) fn exported_session(entry: &InboundEntry) -> Map<String, Value> {
    let mut session = Map::new();
    session.insert("algorithm".to_owned(), MEGOLM_ALGORITHM.into());
    session.insert(
        "sender_key".to_owned(),
        entry.key_id.sender_key.as_str().into(),
    );
    session.insert(
        "sender_claimed_keys".to_owned(),
        json!({"ed25519": entry.claimed_ed25519()}),
    );
    session.insert("forwarding_curve25519_key_chain".to_owned(), json!([]));
    session.insert("session_key".to_owned(), entry.export().to_base64().into());
    if entry.is_history_shared() {
        session.insert(SHARED_HISTORY_FIELD.to_owned(), true.into());
    }
    session
}

/// The field of an authenticated backup entry holding the signed device
/// keys of the session's creator (as MSC4147's `sender_device_keys`), so
/// that the session can be attributed once that device is gone from its
/// owner's list (`spec-notes/key-backup.md`).
pub(super) const SENDER_DEVICE_KEYS_FIELD: &str = "org.myelin.sender_device_keys";

/// The session a decrypted backup entry or an export entry holds; `None`
/// if it is not a Megolm room key of `session_id`. It is a forwarded key
/// unless `sender` names the user an authenticated backup vouches for.
pub(super) fn session_from_backup(
    room_id: &RoomId,
    session_id: &str,
    session: &Value,
    sender: Option<OwnedUserId>,
) -> Option<InboundEntry> {
    let field = |name: &str| session.get(name).and_then(Value::as_str);
    if field("algorithm") != Some(MEGOLM_ALGORITHM) {
        return None;
    }
    let session_key = ExportedSessionKey::from_base64(field("session_key")?).ok()?;
    let claimed = session
        .pointer("/sender_claimed_keys/ed25519")
        .and_then(Value::as_str)?;
    // MSC3061's flag, as the creator set it (the key export and backup
    // formats of matrix-rust-sdk carry it under the same name).
    let shared_history = session.get(SHARED_HISTORY_FIELD) == Some(&Value::Bool(true));
    let session = InboundGroupSession::import(&session_key);
    if session.session_id() != session_id {
        return None; // filed under another session's id
    }
    let key_id = SessionKeyId::new(room_id, field("sender_key")?, session_id)?;
    Some(
        InboundEntry::new(key_id, session, sender, claimed.to_owned())
            .with_shared_history(shared_history),
    )
}
