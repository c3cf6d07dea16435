//! The client's server-side key backup: enabling it, restoring it on a new
//! device, and noticing when it is gone. The machine decides everything
//! ([`crate::machine::OlmMachine::enable_backup`] and friends); this module
//! sends its requests and commits what changed. See
//! `spec-notes/key-backup.md`.

use reqwest::Method;
use serde_json::Value;
use zeroize::Zeroizing;

use crate::{
    Client, Error, ErrorKind,
    encryption::http_request,
    error::Result,
    http::Request,
    machine::{BackupAlgorithm, BackupRestore, OlmMachine, OutgoingRequest},
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
    /// [spec]: https://spec.matrix.org/v1.16/client-server-api/#server-side-key-backups
    pub async fn enable_backup(&self) -> Result<Zeroizing<String>> {
        self.enable_backup_with(BackupAlgorithm::Authenticated)
            .await
    }

    /// [`Client::enable_backup`] with the algorithm given.
    ///
    /// # Errors
    ///
    /// As [`Client::enable_backup`].
    pub async fn enable_backup_with(
        &self,
        algorithm: BackupAlgorithm,
    ) -> Result<Zeroizing<String>> {
        let mut slot = self.machine().await?;
        let machine = slot.as_mut().ok_or(Error::NotLoggedIn)?;
        let (outgoing, recovery_key) = machine.enable_backup_with(algorithm)?;
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
    /// if the key is not this backup's, or
    /// [`BackupError::InvalidRecoveryKey`](crate::machine::BackupError::InvalidRecoveryKey)
    /// for a mistyped one; a Matrix error with
    /// [`ErrorKind::NotFound`] when there is no backup; network and store
    /// errors. Nothing is imported then.
    pub async fn restore_backup(&self, recovery_key: &str) -> Result<BackupRestore> {
        let version = self.current_backup().await?;
        // Checked before downloading every key with it.
        OlmMachine::check_recovery_key(recovery_key, &version)?;
        let version_id = version
            .get("version")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let keys: Value = self
            .inner
            .http
            .send(&Request::v3(Method::GET, &["room_keys", "keys"]).query("version", version_id))
            .await?;
        let mut slot = self.machine().await?;
        let machine = slot.as_mut().ok_or(Error::NotLoggedIn)?;
        // Device lists due for a query are brought up to date first: an
        // authenticated backup's key is its sender's only if the sender's
        // device is known when it is restored.
        let requests = machine.outgoing_requests();
        self.send_machine_requests(machine, requests).await?;
        let restore = machine.restore_backup(recovery_key, &version, &keys)?;
        tracing::info!(
            version = %restore.version, imported = restore.imported,
            unchanged = restore.unchanged, invalid = restore.invalid, refused = restore.refused,
            "restored key backup"
        );
        let requests = machine.outgoing_requests();
        self.send_machine_requests(machine, requests).await?;
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
    /// its version is gone or replaced disables the backup; anything else is
    /// asked again when still needed.
    pub(crate) fn report_failure(
        machine: &mut OlmMachine,
        outgoing: &OutgoingRequest,
        error: &Error,
    ) {
        let backup_gone = matches!(
            outgoing.request,
            crate::machine::Request::BackupKeysUpload { .. }
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
