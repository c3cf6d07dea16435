//! MSC3814 dehydrated devices: a device kept on the server, encrypted with
//! a key in secret storage, that receives room keys while none of the
//! user's devices is online. [`Client::create_dehydrated_device`] makes
//! (or replaces) it; [`Client::rehydrate_device`] on a new device takes
//! the room keys it received and replaces it. The cryptography is
//! [`crate::machine::dehydration`]; this module moves it to and from the
//! server. See `spec-notes/dehydrated-devices.md`.

use reqwest::Method;
use ruma::OwnedDeviceId;
use serde_json::{Value, json};

use crate::{
    Client, Error,
    error::Result,
    http::Request,
    machine::{
        dehydration::{DEHYDRATION_SECRET, DehydrationKey, RehydratedDevice},
        secret_storage::{SecretStorageKey, Unlock},
    },
};

/// What [`Client::rehydrate_device`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rehydration {
    /// The dehydrated device whose messages were read.
    pub rehydrated: OwnedDeviceId,
    /// Room keys found in its messages.
    pub room_keys: usize,
    /// Of those, the keys this device did not hold yet.
    pub imported: usize,
    /// The dehydrated device that replaces it.
    pub replacement: OwnedDeviceId,
}

impl Client {
    /// Creates a fresh dehydrated device for the user, replacing the one
    /// the server holds, encrypted with the dehydration key from secret
    /// storage (a new random key is stored there first if there is none).
    /// Its keys are signed by our self-signing key when this device holds
    /// it, so those who verified us trust it.
    ///
    /// # Errors
    ///
    /// [`Error::SecretStorage`] with `NotSetUp` when the account has no
    /// secret storage, or a wrong `unlock`; [`Error::NotLoggedIn`];
    /// network errors.
    pub async fn create_dehydrated_device(&self, unlock: Unlock<'_>) -> Result<OwnedDeviceId> {
        let storage = self.open_secret_storage(unlock).await?;
        let key = self.dehydration_key(&storage).await?;
        self.put_dehydrated_device(&key).await
    }

    /// Takes the room keys other devices sent to the user's dehydrated
    /// device while no device of theirs was online: opens it with the
    /// dehydration key from secret storage, reads all its to-device
    /// messages, imports the room keys in them into this device (as
    /// forwarded keys: not vouched for by the sender's device), and
    /// replaces it with a fresh dehydrated device.
    ///
    /// # Errors
    ///
    /// [`Error::SecretStorage`] without secret storage or dehydration key,
    /// or a wrong `unlock`; [`Error::Dehydration`] when the device does not
    /// open with the key; an `M_NOT_FOUND` answer when the user has no
    /// dehydrated device; network and store errors.
    pub async fn rehydrate_device(&self, unlock: Unlock<'_>) -> Result<Rehydration> {
        let storage = self.open_secret_storage(unlock).await?;
        let secret = self
            .account_data(DEHYDRATION_SECRET)
            .await?
            .ok_or(crate::machine::secret_storage::SecretStorageError::NotStored)?;
        let key =
            DehydrationKey::from_secret(&storage.decrypt_secret(DEHYDRATION_SECRET, &secret)?)?;
        let stored: Value = self
            .inner
            .http
            .send(&Request::msc3814(Method::GET, &["dehydrated_device"]))
            .await?;
        let device_id = stored
            .get("device_id")
            .and_then(Value::as_str)
            .map(OwnedDeviceId::from)
            .ok_or_else(|| Error::InvalidInput("dehydrated device without device_id".to_owned()))?;
        let mut device = RehydratedDevice::open(
            &self.user_id()?,
            stored.get("device_data").unwrap_or(&Value::Null),
            &key,
        )?;
        self.read_dehydrated_events(&device_id, &mut device).await?;
        let room_keys = device.room_key_count();
        let import = {
            let mut slot = self.machine().await?;
            let machine = slot.as_mut().ok_or(Error::NotLoggedIn)?;
            let import = machine.import_rehydrated_room_keys(device);
            let requests = machine.outgoing_requests();
            self.send_machine_requests(machine, requests).await?;
            import
        };
        tracing::info!(
            room_keys,
            imported = import.imported,
            "rehydrated device read"
        );
        let replacement = self.put_dehydrated_device(&key).await?;
        Ok(Rehydration {
            rehydrated: device_id,
            room_keys,
            imported: import.imported,
            replacement,
        })
    }

    /// Pages through the dehydrated device's to-device messages until an
    /// empty page, each request acknowledging the pages before it.
    async fn read_dehydrated_events(
        &self,
        device_id: &OwnedDeviceId,
        device: &mut RehydratedDevice,
    ) -> Result<()> {
        let mut next_batch: Option<String> = None;
        loop {
            let body = next_batch
                .as_ref()
                .map_or_else(|| json!({}), |token| json!({ "next_batch": token }));
            let request = Request::msc3814(
                Method::POST,
                &["dehydrated_device", device_id.as_str(), "events"],
            )
            .json(body);
            let page: Value = self.inner.http.send(&request).await?;
            let events = page
                .get("events")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default();
            if events.is_empty() {
                return Ok(());
            }
            device.receive_events(events);
            next_batch = page
                .get("next_batch")
                .and_then(Value::as_str)
                .map(str::to_owned);
            if next_batch.is_none() {
                return Ok(());
            }
        }
    }

    /// The dehydration key from secret storage, made and stored first when
    /// there is none.
    async fn dehydration_key(&self, storage: &SecretStorageKey) -> Result<DehydrationKey> {
        if let Some(secret) = self.account_data(DEHYDRATION_SECRET).await? {
            let secret = storage.decrypt_secret(DEHYDRATION_SECRET, &secret)?;
            return Ok(DehydrationKey::from_secret(&secret)?);
        }
        let key = DehydrationKey::random();
        let content = storage.encrypt_secret(DEHYDRATION_SECRET, &key.to_secret())?;
        self.put_account_data(DEHYDRATION_SECRET, &content).await?;
        Ok(key)
    }

    /// Builds a fresh dehydrated device encrypted with `key` and uploads it.
    async fn put_dehydrated_device(&self, key: &DehydrationKey) -> Result<OwnedDeviceId> {
        let device = {
            let mut slot = self.machine().await?;
            let machine = slot.as_mut().ok_or(Error::NotLoggedIn)?;
            machine.new_dehydrated_device(key)?
        };
        let request = Request::msc3814(Method::PUT, &["dehydrated_device"]).json(device.body);
        let _: Value = self.inner.http.send(&request).await?;
        tracing::info!(device_id = %device.device_id, "dehydrated device stored");
        Ok(device.device_id)
    }
}
