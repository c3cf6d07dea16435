//! The client's server-side key backup: enabling it, restoring it on a new
//! device, and noticing when it is gone. The machine decides everything
//! ([`crate::machine::OlmMachine::enable_backup`] and friends); this module
//! sends its requests and commits what changed. See
//! `spec-notes/key-backup.md`.

use reqwest::Method;
use ruma::RoomId;
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::{
    Client, Error, ErrorKind,
    encryption::http_request,
    error::Result,
    http::Request,
    machine::{
        BackupAlgorithm, BackupRestore, OlmMachine, OutgoingRequest, RESTORE_BATCH,
        RestoreProgress, backup_rooms,
    },
};

/// The errcode for an upload to a backup version that is not the current
/// one.
const WRONG_VERSION: &str = "M_WRONG_ROOM_KEYS_VERSION";

impl Client {
    /// Starts backing up room keys to the server ([spec]): creates a new
    /// backup version whose public key is signed by this device, then
    /// uploads every room key this device holds, encrypted so that only the
    /// holder of the returned recovery key can read them. Keys received
    /// later are uploaded after each sync.
    ///
    /// Show the recovery key to the user once, to write down: it is the only
    /// way to read the backup (this device keeps its own copy sealed in the
    /// store, to keep uploading). Calling this again starts a new, empty
    /// backup version, which the server makes the current one.
    ///
    /// The key is saved (sealed) in the store before the server hears of
    /// it, and returned whatever happens after that: if the server does not
    /// create the version now (network, 5xx), it is asked again with the
    /// same key after the next syncs, so the key returned is always the
    /// backup's. [`Client::backup_version`] says once the backup is live.
    ///
    /// The backup is authenticated (MSC4048, [`BackupAlgorithm::Authenticated`]):
    /// keys the server writes into it are refused, and restored keys keep
    /// the trust their sender's device had. Clients without MSC4048 cannot
    /// read it; [`Client::enable_backup_with`] makes a backup of the spec's
    /// algorithm for them.
    ///
    /// # Errors
    ///
    /// Store errors while saving the key (no backup is created then, and
    /// the key is forgotten).
    ///
    /// The version the server held before (another device's, or this
    /// device's earlier one) is deleted once the new one exists.
    ///
    /// [spec]: https://spec.matrix.org/v1.16/client-server-api/#server-side-key-backups
    pub async fn enable_backup(&self) -> Result<Zeroizing<String>> {
        self.enable_backup_with(BackupAlgorithm::Authenticated)
            .await
    }

    /// [`Client::enable_backup`] with the algorithm given.
    /// [`BackupAlgorithm::Spec`] is the user's consent to a backup the
    /// server could write keys into: it lifts the refusal of
    /// unauthenticated backups that follows an authenticated one
    /// ([`BackupError::Downgrade`](crate::machine::BackupError::Downgrade)).
    ///
    /// # Errors
    ///
    /// As [`Client::enable_backup`].
    pub async fn enable_backup_with(
        &self,
        algorithm: BackupAlgorithm,
    ) -> Result<Zeroizing<String>> {
        // The version being replaced, to delete once the new one exists.
        // Not knowing it (a network error) only leaves it on the server.
        let replaced = match self.current_backup().await {
            Ok(version) => version
                .get("version")
                .and_then(Value::as_str)
                .map(str::to_owned),
            Err(error) => {
                tracing::debug!(%error, "no current key backup version to replace");
                None
            }
        };
        let mut slot = self.machine().await?;
        let machine = slot.as_mut().ok_or(Error::NotLoggedIn)?;
        let replaced = replaced.or_else(|| machine.backup_version().map(str::to_owned));
        let (outgoing, recovery_key) = machine.enable_backup_replacing(algorithm, replaced)?;
        if let Err(error) = self.commit_machine(machine).await {
            // Never shown, never to be used.
            let _ = machine.mark_request_failed(&outgoing.request_id);
            machine.cancel_backup_creation();
            return Err(error);
        }
        // From here the key is the user's: nothing below may lose it.
        let answer = self.inner.http.send(&http_request(&outgoing.request)).await;
        if let Err(error) = self.report_answer(machine, &outgoing, answer).await {
            tracing::warn!(%error, "creating the key backup failed; asked again after the next sync");
            return Ok(recovery_key);
        }
        let requests = machine.outgoing_requests();
        if let Err(error) = self.send_machine_requests(machine, requests).await {
            tracing::warn!(%error, "uploading to the key backup failed; retried after the next sync");
        }
        Ok(recovery_key)
    }

    /// Restores the server's current key backup with the recovery key the
    /// user wrote down: every room key in it is imported, and the events
    /// that waited for one of them are returned decrypted. This device then
    /// uploads its own keys to the same backup. Keys of a spec-algorithm
    /// backup count as forwarded (anyone with its public key could have
    /// written them); those of an authenticated backup keep the trust their
    /// sender's device had, and its entries without a valid MAC are refused
    /// ([`BackupRestore::refused`]).
    ///
    /// Entries that do not decrypt or are not the session they claim are
    /// skipped and counted ([`BackupRestore::invalid`]).
    ///
    /// # Errors
    ///
    /// [`Error::Backup`] with [`BackupError::WrongRecoveryKey`](crate::machine::BackupError::WrongRecoveryKey)
    /// if the key is not this backup's,
    /// [`BackupError::InvalidRecoveryKey`](crate::machine::BackupError::InvalidRecoveryKey)
    /// for a mistyped one, or
    /// [`BackupError::Downgrade`](crate::machine::BackupError::Downgrade)
    /// for a backup of the spec's algorithm where the user's backups are
    /// authenticated; a Matrix error with
    /// [`ErrorKind::NotFound`] when there is no backup; network and store
    /// errors. Nothing is imported then.
    pub async fn restore_backup(&self, recovery_key: &str) -> Result<BackupRestore> {
        self.restore_backup_with_progress(recovery_key, |_| {})
            .await
    }

    /// [`Client::restore_backup`], calling `progress` as it goes: once
    /// the keys are downloaded (nothing done yet, `total` known), then
    /// after each batch of at most [`RESTORE_BATCH`] entries, the last
    /// call with every entry done ([`RestoreProgress::done`] equal to
    /// [`RestoreProgress::total`]). Counts never go down. Each batch is
    /// committed before the next one starts, and the crypto machine is
    /// free between batches (a sync may run), so `progress` may draw or
    /// await nothing of the client.
    ///
    /// # Errors
    ///
    /// As [`Client::restore_backup`]; a store error in a batch stops the
    /// restore there (what the earlier batches imported stays).
    pub async fn restore_backup_with_progress(
        &self,
        recovery_key: &str,
        mut progress: impl FnMut(RestoreProgress),
    ) -> Result<BackupRestore> {
        let version = self.current_backup().await?;
        let backup = {
            let mut slot = self.machine().await?;
            let machine = slot.as_mut().ok_or(Error::NotLoggedIn)?;
            // Checked before downloading every key with it.
            let backup = machine.open_backup(recovery_key, &version)?;
            // Device lists due for a query are brought up to date first:
            // an authenticated backup's key is its sender's only if the
            // sender's device is known when it is restored.
            let requests = machine.outgoing_requests();
            self.send_machine_requests(machine, requests).await?;
            backup
        };
        let keys: Value = self
            .inner
            .http
            .send(
                &Request::v3(Method::GET, &["room_keys", "keys"])
                    .query("version", backup.version().to_owned()),
            )
            .await?;
        let rooms: Vec<(&str, &Map<String, Value>)> = backup_rooms(&keys)?.collect();
        let total = rooms.iter().map(|(_, sessions)| sessions.len()).sum();
        let mut restore = BackupRestore {
            version: backup.version().to_owned(),
            ..BackupRestore::default()
        };
        progress(restore.progress(total));
        for (room_id, sessions) in rooms {
            let entries: Vec<(&String, &Value)> = sessions.iter().collect();
            for batch in entries.chunks(RESTORE_BATCH) {
                let mut slot = self.machine().await?;
                let machine = slot.as_mut().ok_or(Error::NotLoggedIn)?;
                machine.restore_backup_sessions(
                    &backup,
                    room_id,
                    batch.iter().copied(),
                    &mut restore,
                );
                self.commit_machine(machine).await?;
                drop(slot);
                progress(restore.progress(total));
            }
        }
        let mut slot = self.machine().await?;
        let machine = slot.as_mut().ok_or(Error::NotLoggedIn)?;
        machine.finish_restore(backup);
        tracing::info!(
            version = %restore.version, imported = restore.imported,
            unchanged = restore.unchanged, invalid = restore.invalid, refused = restore.refused,
            "restored key backup"
        );
        let requests = machine.outgoing_requests();
        self.send_machine_requests(machine, requests).await?;
        Ok(restore)
    }

    /// Uses the server's current backup with `recovery_key` from now on,
    /// without downloading its keys: this device keeps the key (sealed),
    /// uploads to the backup and fetches from it the keys of undecryptable
    /// events.
    pub(crate) async fn use_backup_key(&self, recovery_key: &str) -> Result<()> {
        let version = self.current_backup().await?;
        let mut slot = self.machine().await?;
        let machine = slot.as_mut().ok_or(Error::NotLoggedIn)?;
        let backup = machine.open_backup(recovery_key, &version)?;
        machine.finish_restore(backup);
        let requests = machine.outgoing_requests();
        self.send_machine_requests(machine, requests).await
    }

    /// Imports one room's keys from the backup this device uses, with the
    /// key it holds (after [`Client::enable_backup`],
    /// [`Client::restore_backup`] or a backup key from secret storage):
    /// `GET /room_keys/keys/{roomId}`. The events that waited for them
    /// come back decrypted in [`BackupRestore::late_decryptions`].
    ///
    /// Undecryptable events need no call: after each sync, the keys of
    /// the events kept for want of one are fetched from the backup, and
    /// the events come back decrypted in the next sync's
    /// [`SyncUpdate::decrypted`](crate::SyncUpdate::decrypted).
    ///
    /// # Errors
    ///
    /// [`Error::Backup`] with
    /// [`BackupError::NoBackupKey`](crate::machine::BackupError::NoBackupKey)
    /// when this device holds no backup key; network, Matrix and store
    /// errors.
    pub async fn restore_room_keys(&self, room_id: &RoomId) -> Result<BackupRestore> {
        let version = {
            let mut slot = self.machine().await?;
            let machine = slot.as_mut().ok_or(Error::NotLoggedIn)?;
            machine.held_backup()?.version().to_owned()
        };
        let answer: Value = self
            .inner
            .http
            .send(
                &Request::v3(Method::GET, &["room_keys", "keys", room_id.as_str()])
                    .query("version", version),
            )
            .await?;
        let mut slot = self.machine().await?;
        let machine = slot.as_mut().ok_or(Error::NotLoggedIn)?;
        // As for a full restore: senders' devices known first.
        let requests = machine.outgoing_requests();
        self.send_machine_requests(machine, requests).await?;
        let restore = machine.restore_room_keys(room_id, &answer)?;
        self.commit_machine(machine).await?;
        Ok(restore)
    }

    /// Uploads this device's room keys to the server's current backup,
    /// which another of our devices enabled, without its recovery key. Only
    /// a backup signed by this device or by one of our own devices the user
    /// verified is used: the server cannot make us encrypt our keys to a
    /// key of its own. Returns the backup version.
    ///
    /// # Errors
    ///
    /// [`Error::Backup`] with [`BackupError::Untrusted`](crate::machine::BackupError::Untrusted)
    /// when no trusted device of ours signed it; a Matrix error with
    /// [`ErrorKind::NotFound`] when there is no backup; network and store
    /// errors.
    pub async fn trust_current_backup(&self) -> Result<String> {
        let version = self.current_backup().await?;
        let mut slot = self.machine().await?;
        let machine = slot.as_mut().ok_or(Error::NotLoggedIn)?;
        machine.trust_backup(&version)?;
        let id = machine.backup_version().unwrap_or_default().to_owned();
        let requests = machine.outgoing_requests();
        self.send_machine_requests(machine, requests).await?;
        Ok(id)
    }

    /// `GET /room_keys/version`: the server's current backup version.
    async fn current_backup(&self) -> Result<Value> {
        self.inner
            .http
            .send(&Request::v3(Method::GET, &["room_keys", "version"]))
            .await
    }

    /// The backup version this device uploads room keys to, if any. `None`
    /// after the server said the version is gone or replaced.
    ///
    /// # Errors
    ///
    /// [`Error::NotLoggedIn`] and store errors.
    pub async fn backup_version(&self) -> Result<Option<String>> {
        self.with_machine(|machine| machine.backup_version().map(str::to_owned))
            .await
    }

    /// Reports a failed machine request. A backup upload refused because
    /// its version is gone or replaced disables the backup; a backup that
    /// lacks the keys fetched, or the version deleted, is told so; anything
    /// else is asked again when still needed.
    pub(crate) fn report_failure(
        machine: &mut OlmMachine,
        outgoing: &OutgoingRequest,
        error: &Error,
    ) {
        let backup_gone = matches!(
            outgoing.request,
            crate::machine::Request::BackupKeysUpload { .. }
                | crate::machine::Request::BackupKeysFetch { .. }
                | crate::machine::Request::BackupVersionDelete { .. }
        ) && error.as_matrix().is_some_and(|e| {
            e.status == 404 || e.kind == ErrorKind::NotFound || e.kind.errcode() == WRONG_VERSION
        });
        let reported = if backup_gone {
            machine
                .mark_backup_gone(&outgoing.request_id)
                .map(|disabled| {
                    if disabled {
                        tracing::warn!("key backup version is gone or replaced; backup disabled");
                    }
                })
        } else {
            machine.mark_request_failed(&outgoing.request_id)
        };
        if let Err(error) = reported {
            tracing::warn!(request_id = %outgoing.request_id, %error, "crypto answer refused");
        }
    }
}
