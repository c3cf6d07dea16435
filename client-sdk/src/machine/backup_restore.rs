//! Reading a key backup: the whole of it with a recovery key (in batches,
//! so a caller can report progress), one room or some sessions with the
//! private key this device holds (`spec-notes/key-backup.md`).
//!
//! [`OlmMachine::open_backup`] checks a recovery key against a backup
//! version before anything is downloaded, and refuses an unauthenticated
//! version once the user's backups are authenticated
//! ([`BackupError::Downgrade`]). Each entry is then handled on its own: one
//! without a valid MAC (authenticated backup) is refused and never
//! decrypted; one that does not decrypt, is malformed, or is not the
//! session it is filed under is skipped without touching the others.
//! Restored sessions of the spec's algorithm are stored like forwarded
//! keys; those of an authenticated backup keep the sender its writer
//! vouched for.

use myelin_crypto::{
    backup::{BackupDecryptionKey, EncryptedEntry},
    backup_mac::{BackupMacKey, UNAUTHENTICATED_FIELD},
};
use ruma::{OwnedUserId, RoomId};
use serde_json::{Map, Value};

use super::{
    OlmMachine, SyncOutput,
    backup::{
        BackupError, BackupRestore, SENDER_DEVICE_KEYS_FIELD, parse_version, session_from_backup,
    },
    olm::check_sender_device_keys,
};

/// Sessions imported between two progress reports of a full restore.
pub const RESTORE_BATCH: usize = 100;

/// A backup version opened for reading: its private key checked against
/// the version's public key. Made by [`OlmMachine::open_backup`] (or from
/// the key this device holds), taken by [`OlmMachine::finish_restore`].
///
/// `Debug` shows the version only.
pub struct OpenedBackup {
    version: String,
    key: BackupDecryptionKey,
    /// Set for an authenticated (MSC4048) backup: entries must carry it.
    mac_key: Option<BackupMacKey>,
}

impl OpenedBackup {
    fn new(version: String, key: BackupDecryptionKey, authenticated: bool) -> Self {
        let mac_key = authenticated.then(|| BackupMacKey::derive(&key));
        Self {
            version,
            key,
            mac_key,
        }
    }

    /// The backup version.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Whether its entries carry the MSC4048 MAC.
    pub fn is_authenticated(&self) -> bool {
        self.mac_key.is_some()
    }
}

impl std::fmt::Debug for OpenedBackup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedBackup")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// How far a restore has come: enough for a progress bar
/// ([`RestoreProgress::done`] of [`RestoreProgress::total`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestoreProgress {
    /// Entries in the backup.
    pub total: usize,
    /// Sessions stored (new, or an existing one extended backwards).
    pub imported: usize,
    /// Sessions that added nothing to what this device holds.
    pub unchanged: usize,
    /// Entries refused for a missing or wrong MAC (authenticated backup).
    pub refused: usize,
    /// Entries that did not decrypt or were not the session they claim.
    pub invalid: usize,
}

impl RestoreProgress {
    /// Entries handled so far, whatever became of them.
    pub fn done(&self) -> usize {
        self.imported + self.unchanged + self.refused + self.invalid
    }
}

impl BackupRestore {
    /// The counts so far, out of `total` entries.
    pub fn progress(&self, total: usize) -> RestoreProgress {
        RestoreProgress {
            total,
            imported: self.imported,
            unchanged: self.unchanged,
            refused: self.refused,
            invalid: self.invalid,
        }
    }
}

impl OlmMachine {
    /// Checks that `recovery_key` opens the backup `version` (the answer of
    /// `GET /room_keys/version`), before downloading its keys.
    ///
    /// # Errors
    ///
    /// As [`OlmMachine::open_backup`], but for the downgrade check.
    pub fn check_recovery_key(recovery_key: &str, version: &Value) -> Result<(), BackupError> {
        open_version(recovery_key, version).map(drop)
    }

    /// Opens the backup `version` (the answer of `GET /room_keys/version`)
    /// with `recovery_key`, for [`OlmMachine::restore_backup_sessions`].
    ///
    /// # Errors
    ///
    /// [`BackupError::InvalidRecoveryKey`], [`BackupError::WrongRecoveryKey`],
    /// [`BackupError::UnsupportedAlgorithm`] or [`BackupError::Malformed`];
    /// [`BackupError::Downgrade`] for a spec-algorithm backup once the
    /// user's backups are authenticated.
    pub fn open_backup(
        &self,
        recovery_key: &str,
        version: &Value,
    ) -> Result<OpenedBackup, BackupError> {
        let opened = open_version(recovery_key, version)?;
        self.refuse_downgrade(opened.is_authenticated())?;
        Ok(opened)
    }

    /// Restores a backup on this device: `version` is the answer of
    /// `GET /room_keys/version`, `keys` that of
    /// `GET /room_keys/keys?version=…`. The backup is used for uploads from
    /// now on.
    ///
    /// # Errors
    ///
    /// As [`OlmMachine::open_backup`]; [`BackupError::Malformed`] when
    /// `keys` has no `rooms` (bad entries are only counted).
    pub fn restore_backup(
        &mut self,
        recovery_key: &str,
        version: &Value,
        keys: &Value,
    ) -> Result<BackupRestore, BackupError> {
        let backup = self.open_backup(recovery_key, version)?;
        let rooms = backup_rooms(keys)?;
        let mut restore = BackupRestore {
            version: backup.version.clone(),
            ..BackupRestore::default()
        };
        for (room_id, sessions) in rooms {
            self.restore_backup_sessions(&backup, room_id, sessions, &mut restore);
        }
        self.finish_restore(backup);
        Ok(restore)
    }

    /// Imports some entries of `room_id` (session id → `KeyBackupData`)
    /// from an opened backup, adding to `restore`'s counts and late
    /// decryptions.
    pub fn restore_backup_sessions<'a>(
        &mut self,
        backup: &OpenedBackup,
        room_id: &str,
        sessions: impl IntoIterator<Item = (&'a String, &'a Value)>,
        restore: &mut BackupRestore,
    ) {
        // An entry filed under a room id that is not one is invalid.
        let room_id = <&RoomId>::try_from(room_id).ok();
        let mut output = SyncOutput::default();
        for (session_id, data) in sessions {
            if let Some(mac_key) = &backup.mac_key
                && !has_valid_mac(mac_key, &self.user_id, data)
            {
                restore.refused += 1;
                continue;
            }
            let entry = room_id.and_then(|room_id| {
                let mut session = decrypted_session(&backup.key, data)?;
                let (sender, device_keys) = backup
                    .is_authenticated()
                    .then(|| self.vouched_sender(&session))
                    .flatten()
                    .unzip();
                let entry = session_from_backup(room_id, session_id, &session, sender)
                    .map(|entry| entry.with_sender_device_keys(device_keys.flatten()));
                super::zeroize_json(&mut session);
                entry
            });
            let Some(entry) = entry else {
                restore.invalid += 1;
                continue;
            };
            let key_id = entry.key_id.clone();
            let is_new = !self.inbound.contains_key(&key_id);
            if self.accept_inbound(entry, &mut output) {
                restore.imported += 1;
                if is_new {
                    self.mark_backed_up(key_id, &backup.version);
                }
            } else {
                restore.unchanged += 1;
            }
        }
        restore
            .late_decryptions
            .append(&mut output.late_decryptions);
    }

    /// Ends a restore: this device uses the backup from now on (it holds
    /// its private key, so it reads and writes it).
    pub fn finish_restore(&mut self, backup: OpenedBackup) {
        let authenticated = backup.is_authenticated();
        self.activate_backup(
            backup.version,
            backup.key.encryption_key(),
            Some(backup.key),
            authenticated,
        );
    }

    /// The backup this device uses, opened with the private key it holds.
    ///
    /// # Errors
    ///
    /// [`BackupError::NoBackupKey`] when it uses none, or only uploads to
    /// it.
    pub fn held_backup(&self) -> Result<OpenedBackup, BackupError> {
        let backup = self.backup.as_ref().ok_or(BackupError::NoBackupKey)?;
        let key = backup
            .private_key
            .as_ref()
            .ok_or(BackupError::NoBackupKey)?;
        Ok(OpenedBackup::new(
            backup.version.clone(),
            BackupDecryptionKey::from_bytes(&key.to_bytes()),
            backup.authenticated,
        ))
    }

    /// Imports one room's keys from the backup this device holds the key
    /// of: `answer` is that of `GET /room_keys/keys/{roomId}?version=…`.
    ///
    /// # Errors
    ///
    /// [`BackupError::NoBackupKey`]; [`BackupError::Malformed`] when the
    /// answer has no `sessions`.
    pub fn restore_room_keys(
        &mut self,
        room_id: &RoomId,
        answer: &Value,
    ) -> Result<BackupRestore, BackupError> {
        let backup = self.held_backup()?;
        let sessions = answer
            .get("sessions")
            .and_then(Value::as_object)
            .ok_or(BackupError::Malformed("no `sessions` object"))?;
        let mut restore = BackupRestore {
            version: backup.version.clone(),
            ..BackupRestore::default()
        };
        self.restore_backup_sessions(&backup, room_id.as_str(), sessions, &mut restore);
        Ok(restore)
    }

    /// The sender an authenticated backup entry vouches for, unless the
    /// writer marked the key unauthenticated: the user whose device has
    /// the entry's `sender_key` and the ed25519 key it claims. A device no
    /// longer listed is known by the signed device keys the entry carries
    /// ([`SENDER_DEVICE_KEYS_FIELD`]), returned with it for the session's
    /// attribution, which checks that the owner's self-signing key signed
    /// them.
    fn vouched_sender(&self, session: &Value) -> Option<(OwnedUserId, Option<Map<String, Value>>)> {
        if session.get(UNAUTHENTICATED_FIELD).is_some() {
            return None;
        }
        let sender_key = session.get("sender_key").and_then(Value::as_str)?;
        let claimed = session
            .pointer("/sender_claimed_keys/ed25519")
            .and_then(Value::as_str)?;
        if let Some(device) = self.devices.device_by_curve(sender_key) {
            return (device.ed25519 == claimed).then(|| (device.user_id.clone(), None));
        }
        let keys = session.get(SENDER_DEVICE_KEYS_FIELD)?;
        let owner = keys
            .get("user_id")
            .and_then(Value::as_str)
            .and_then(|id| OwnedUserId::try_from(id).ok())?;
        let (_, checked) =
            check_sender_device_keys(&owner, sender_key, claimed, None, keys).ok()?;
        Some((owner, Some(checked)))
    }
}

/// The rooms of a `GET /room_keys/keys` answer: room id → its entries
/// (a room whose `sessions` is not an object has none).
///
/// # Errors
///
/// [`BackupError::Malformed`] when there is no `rooms` object.
pub fn backup_rooms(
    keys: &Value,
) -> Result<impl Iterator<Item = (&str, &Map<String, Value>)>, BackupError> {
    let rooms = keys
        .get("rooms")
        .and_then(Value::as_object)
        .ok_or(BackupError::Malformed("no `rooms` object"))?;
    Ok(rooms.iter().filter_map(|(room_id, room)| {
        let sessions = room.get("sessions").and_then(Value::as_object)?;
        Some((room_id.as_str(), sessions))
    }))
}

/// Checks a backup version against a recovery key.
fn open_version(recovery_key: &str, version: &Value) -> Result<OpenedBackup, BackupError> {
    let parsed = parse_version(version)?;
    let key = BackupDecryptionKey::from_recovery_key(recovery_key)
        .map_err(BackupError::InvalidRecoveryKey)?;
    if key.encryption_key() != parsed.public_key {
        return Err(BackupError::WrongRecoveryKey);
    }
    Ok(OpenedBackup::new(parsed.id, key, parsed.authenticated))
}

/// Whether a backup entry's `session_data` carries `user_id`'s valid MAC.
fn has_valid_mac(mac_key: &BackupMacKey, user_id: &ruma::UserId, data: &Value) -> bool {
    data.get("session_data")
        .and_then(Value::as_object)
        .is_some_and(|session_data| mac_key.verify(user_id.as_str(), session_data))
}

/// The decrypted room key JSON of one backup entry; `None` if it does
/// not decrypt.
fn decrypted_session(key: &BackupDecryptionKey, data: &Value) -> Option<Value> {
    let encrypted = EncryptedEntry::from_json(data.get("session_data")?).ok()?;
    let plaintext = key.decrypt(&encrypted).ok()?;
    serde_json::from_slice(&plaintext).ok()
}
