//! The client's secret storage: keeping this device's cross-signing keys
//! and backup key in account data under a recovery key or passphrase, and
//! reading them back on a new device. The contents and the cryptography are
//! [`crate::machine::secret_storage`]; this module moves them to and from
//! the server. See `spec-notes/recovery.md`.

use reqwest::Method;
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

use myelin_crypto::backup_mac::MAC_SECRET;

use crate::{
    Client, Error, ErrorKind,
    error::Result,
    http::Request,
    machine::{
        BACKUP_SECRET, MachineError, OlmMachine, backup_recovery_key,
        cross_signing::SECRET_NAMES,
        dehydration::DEHYDRATION_SECRET,
        secret_storage::{
            DEFAULT_KEY_EVENT, SecretStorageError, SecretStorageKey, Unlock, key_event_type,
        },
    },
};

/// What unlocking secret storage gave this device.
#[derive(Debug)]
pub struct SecretStorageUnlock {
    /// Whether the cross-signing keys were imported: this device is then
    /// signed by them, and can verify users and our other devices.
    pub cross_signing: bool,
    /// The key backup's recovery key, when secret storage holds the backup
    /// key. The device keeps the key (sealed in its store) when it opens the
    /// server's current backup: it uploads its keys there and fetches the
    /// keys of undecryptable events from it. Pass it to
    /// [`Client::restore_backup`] to import every key at once.
    pub backup_recovery_key: Option<Zeroizing<String>>,
}

/// What rotating the secret storage key gave.
#[derive(Debug)]
pub struct SecretStorageRotation {
    /// The new key's recovery key, to show the user once.
    pub recovery_key: Zeroizing<String>,
    /// Whether every secret is now under the new key alone; `false` when a
    /// write failed after the switch and the old key still opens some.
    pub old_key_retired: bool,
}

impl Client {
    /// Sets up secret storage ([spec]) with a new default key, random or
    /// from `passphrase`, and stores in it the secrets this device holds:
    /// the cross-signing private keys (after
    /// [`Client::bootstrap_cross_signing`]) and the backup key (after
    /// [`Client::enable_backup`]). Returns the recovery key, to show the
    /// user once; with a passphrase, either opens it.
    ///
    /// # Errors
    ///
    /// [`Error::SecretStorage`] if the system's random generator failed;
    /// network and store errors (a key whose secrets were not all written
    /// is not made the default).
    ///
    /// [spec]: https://spec.matrix.org/v1.16/client-server-api/#secret-storage
    pub async fn enable_secret_storage(
        &self,
        passphrase: Option<&str>,
    ) -> Result<Zeroizing<String>> {
        let secrets = {
            let mut slot = self.machine().await?;
            let machine = slot.as_mut().ok_or(Error::NotLoggedIn)?;
            let mut secrets: Vec<(&str, Zeroizing<String>)> = machine
                .cross_signing_secrets()
                .map(Vec::from)
                .unwrap_or_default();
            secrets.extend(
                machine
                    .backup_secret()
                    .map(|secret| (BACKUP_SECRET, secret)),
            );
            // Its presence tells a new device the backup must be
            // authenticated (MSC4048), which pins it there.
            secrets.extend(
                machine
                    .backup_mac_secret()
                    .map(|secret| (MAC_SECRET, secret)),
            );
            secrets
        };
        self.store_under_new_key(&secrets, passphrase).await
    }

    /// Makes a new secret storage key (random, or from `passphrase`),
    /// writes `secrets` encrypted under it alone, and then makes it the
    /// default, so a key whose secrets were not all written never is.
    /// Returns its recovery key.
    async fn store_under_new_key(
        &self,
        secrets: &[(&str, Zeroizing<String>)],
        passphrase: Option<&str>,
    ) -> Result<Zeroizing<String>> {
        let created = SecretStorageKey::create(passphrase)?;
        let key_id = created.key.key_id();
        self.put_account_data(&key_event_type(key_id), &created.description)
            .await?;
        for (name, secret) in secrets {
            let content = created.key.encrypt_secret(name, secret)?;
            self.put_account_data(name, &content).await?;
        }
        self.put_account_data(DEFAULT_KEY_EVENT, &json!({ "key": key_id }))
            .await?;
        Ok(created.recovery_key)
    }

    /// Opens the default secret storage key with what the user typed, and
    /// takes the secrets this device can use: the cross-signing keys
    /// (checked against our published identity, then this device is signed
    /// with them) and the backup key.
    ///
    /// # Errors
    ///
    /// [`Error::SecretStorage`] with
    /// [`SecretStorageError::RecoveryKey`] for a mistyped recovery key,
    /// [`SecretStorageError::WrongKey`] for another key or passphrase, or
    /// another variant for stored data this SDK cannot read; a Matrix error
    /// with [`ErrorKind::NotFound`] when there is no secret storage; network
    /// and store errors. Nothing is imported then.
    pub async fn unlock_secret_storage(&self, unlock: Unlock<'_>) -> Result<SecretStorageUnlock> {
        let key = self.open_secret_storage(unlock).await?;

        let mut cross_signing = Vec::new();
        for name in SECRET_NAMES {
            if let Some(content) = self.account_data(name).await? {
                cross_signing.push(key.decrypt_secret(name, &content)?);
            }
        }
        let backup_recovery_key = match self.account_data(BACKUP_SECRET).await? {
            Some(content) => Some(backup_recovery_key(
                &key.decrypt_secret(BACKUP_SECRET, &content)?,
            )?),
            None => None,
        };
        // The MAC key only says the user's backup is authenticated: its
        // entry must decrypt under our key (the server cannot write one),
        // and then an unauthenticated backup is refused from now on.
        if let Some(content) = self.account_data(MAC_SECRET).await? {
            key.decrypt_secret(MAC_SECRET, &content)?;
            self.with_machine(OlmMachine::pin_authenticated_backup)
                .await?;
        }
        if let Some(recovery_key) = &backup_recovery_key
            && let Err(error) = self.use_backup_key(recovery_key).await
        {
            tracing::warn!(%error, "the backup key from secret storage does not open the current backup");
        }

        let imported = if let [master, self_signing, user_signing] = cross_signing.as_slice() {
            let user_id = self.user_id()?;
            let mut slot = self.machine().await?;
            let machine = slot.as_mut().ok_or(Error::NotLoggedIn)?;
            // Our identity as the server publishes it now, to check the
            // keys against.
            machine.refresh_user_keys(&user_id);
            let requests = machine.outgoing_requests();
            self.send_machine_requests(machine, requests).await?;
            machine
                .import_cross_signing_keys(master, self_signing, user_signing)
                .map_err(MachineError::from)?;
            let requests = machine.outgoing_requests();
            self.send_machine_requests(machine, requests).await?;
            true
        } else {
            false
        };
        Ok(SecretStorageUnlock {
            cross_signing: imported,
            backup_recovery_key,
        })
    }

    /// Replaces the default secret storage key: opens it with `current`,
    /// makes a new one (random, or from `passphrase`), and moves every
    /// secret the old key held to the new key. The secrets are the
    /// cross-signing keys, the backup key and the dehydrated device's key,
    /// whichever are stored.
    ///
    /// In three steps, so that an interrupted rotation never locks the
    /// user out: each secret is first written under both keys, then the new
    /// key becomes the default, then each secret is written under the new
    /// key alone. An error before the switch leaves the old key the default
    /// and opening everything; after it, the new key is the one, and
    /// [`SecretStorageRotation::old_key_retired`] says whether the old key
    /// still opens some secrets (rotate again to retire it).
    ///
    /// # Errors
    ///
    /// As [`Client::unlock_secret_storage`] for `current` (nothing is
    /// changed then); network errors before the switch.
    pub async fn rotate_secret_storage_key(
        &self,
        current: Unlock<'_>,
        passphrase: Option<&str>,
    ) -> Result<SecretStorageRotation> {
        let old = self.open_secret_storage(current).await?;
        let mut secrets = Vec::new();
        for name in stored_secret_names() {
            if let Some(content) = self.account_data(name).await? {
                secrets.push((name, old.decrypt_secret(name, &content)?, content));
            }
        }
        let created = SecretStorageKey::create(passphrase)?;
        let key_id = created.key.key_id();
        self.put_account_data(&key_event_type(key_id), &created.description)
            .await?;
        for (name, secret, old_content) in &secrets {
            let mut both = created.key.encrypt_secret(name, secret)?;
            if let (Some(old_entries), Some(entries)) = (
                old_content.get("encrypted").and_then(Value::as_object),
                both.get_mut("encrypted").and_then(Value::as_object_mut),
            ) {
                for (id, entry) in old_entries {
                    entries.entry(id.clone()).or_insert_with(|| entry.clone());
                }
            }
            self.put_account_data(name, &both).await?;
        }
        self.put_account_data(DEFAULT_KEY_EVENT, &json!({ "key": key_id }))
            .await?;
        let mut old_key_retired = true;
        for (name, secret, _) in &secrets {
            let content = created.key.encrypt_secret(name, secret)?;
            if let Err(error) = self.put_account_data(name, &content).await {
                tracing::warn!(%error, name, "the old secret storage key still opens a secret");
                old_key_retired = false;
            }
        }
        Ok(SecretStorageRotation {
            recovery_key: created.recovery_key,
            old_key_retired,
        })
    }

    /// Removes secret storage from the account: the default key is unset,
    /// every secret this SDK stores (cross-signing keys, backup key and
    /// MAC key, dehydrated device key) is cleared, and so is the default
    /// key's description. Account data cannot be deleted, so each is
    /// written with empty content, which matrix-js-sdk and
    /// matrix-rust-sdk read as absent. The default key goes first: an
    /// interrupted removal leaves no key that other devices would use.
    ///
    /// The secrets stay on the devices that hold them; the recovery key
    /// and passphrase open nothing afterwards.
    /// [`Client::enable_secret_storage`] sets it up afresh.
    ///
    /// # Errors
    ///
    /// Network and store errors (call again to finish).
    pub async fn disable_secret_storage(&self) -> Result<()> {
        let default_key = self.account_data(DEFAULT_KEY_EVENT).await?;
        let empty = json!({});
        self.put_account_data(DEFAULT_KEY_EVENT, &empty).await?;
        for name in stored_secret_names() {
            if self.account_data(name).await?.is_some() {
                self.put_account_data(name, &empty).await?;
            }
        }
        if let Some(key_id) = default_key
            .as_ref()
            .and_then(|content| content.get("key"))
            .and_then(Value::as_str)
        {
            self.put_account_data(&key_event_type(key_id), &empty)
                .await?;
        }
        Ok(())
    }

    /// Asks our other devices for the secrets this device lacks: the
    /// cross-signing private keys and the key backup's key. Only our own
    /// devices that verified this one answer (verify it first, by SAS with
    /// one of them); the answers arrive in later syncs as
    /// [`SyncUpdate::secrets`](crate::SyncUpdate::secrets): the
    /// cross-signing keys imported (this device then counts as verified),
    /// the backup key as a recovery key for [`Client::restore_backup`].
    /// Returns how many secrets were asked for (0 when it holds them all).
    ///
    /// # Errors
    /// [`Error::NotLoggedIn`]; network and store errors.
    pub async fn request_secrets(&self) -> Result<usize> {
        let mut slot = self.machine().await?;
        let machine = slot.as_mut().ok_or(Error::NotLoggedIn)?;
        let asked = machine.request_secrets();
        let requests = machine.outgoing_requests();
        self.send_machine_requests(machine, requests).await?;
        Ok(asked)
    }

    /// The account's default secret storage key, opened with `unlock`.
    ///
    /// # Errors
    ///
    /// [`SecretStorageError::NotSetUp`] when the account has none;
    /// [`SecretStorageError::WrongKey`] and others for what `unlock` gives.
    pub(crate) async fn open_secret_storage(&self, unlock: Unlock<'_>) -> Result<SecretStorageKey> {
        let default_key = self
            .account_data(DEFAULT_KEY_EVENT)
            .await?
            .ok_or(SecretStorageError::NotSetUp)?;
        let key_id = default_key
            .get("key")
            .and_then(Value::as_str)
            .ok_or(SecretStorageError::Malformed)?;
        let description = self
            .account_data(&key_event_type(key_id))
            .await?
            .ok_or(SecretStorageError::Malformed)?;
        Ok(SecretStorageKey::open(key_id, &description, unlock)?)
    }

    /// `GET /user/{userId}/account_data/{type}`, `None` when not set or
    /// cleared (empty content: account data cannot be deleted, so clients
    /// write `{}` to remove an entry).
    pub(crate) async fn account_data(&self, event_type: &str) -> Result<Option<Value>> {
        let user_id = self.user_id()?;
        let request = Request::v3(
            Method::GET,
            &["user", user_id.as_str(), "account_data", event_type],
        );
        match self.inner.http.send::<Value>(&request).await {
            Ok(content) if content.as_object().is_some_and(Map::is_empty) => Ok(None),
            Ok(content) => Ok(Some(content)),
            Err(error) if error.kind() == Some(&ErrorKind::NotFound) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// `PUT /user/{userId}/account_data/{type}`.
    pub(crate) async fn put_account_data(&self, event_type: &str, content: &Value) -> Result<()> {
        let user_id = self.user_id()?;
        let request = Request::v3(
            Method::PUT,
            &["user", user_id.as_str(), "account_data", event_type],
        )
        .json(content.clone());
        let _: Value = self.inner.http.send(&request).await?;
        Ok(())
    }
}

/// Every secret this SDK keeps in secret storage.
fn stored_secret_names() -> impl Iterator<Item = &'static str> {
    SECRET_NAMES
        .into_iter()
        .chain([BACKUP_SECRET, MAC_SECRET, DEHYDRATION_SECRET])
}
