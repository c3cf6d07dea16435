//! The client's end-to-end encryption: the sans-I/O [`OlmMachine`] kept in
//! the client's [`Store`], fed by every sync, and asked to share keys and
//! encrypt before each send into an encrypted room.
//!
//! # Persistence
//!
//! The machine's records live in [`MACHINE_NAMESPACE`], each value sealed
//! by the store's [`SecretBox`] (so even the public metadata is encrypted
//! at rest); the Olm and Megolm pickles inside are additionally encrypted
//! under a random [`PickleKey`], itself sealed in [`PICKLE_KEY_NAMESPACE`].
//! [`SealedCryptoStore`] implements the machine's [`CryptoStore`] by
//! staging those sealed writes into a [`Changes`] batch, which the client
//! commits together with what caused them: a sync's machine changes go in
//! the same transaction as its `next_batch`, so after a crash either the
//! to-device events were consumed and the token moved, or neither (an Olm
//! message is never lost nor decrypted twice).
//!
//! # Locking
//!
//! One async mutex guards the machine. A sync holds it from feeding the
//! machine until its commit, so no other step can save a newer state of a
//! record before the sync saves an older one. The sync handler runs inside
//! that window: a [`SyncHandler`](crate::SyncHandler) must not await a send
//! into an encrypted room (queue it and send after the handler returns).

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{SystemTime, UNIX_EPOCH},
};

use myelin_crypto::{PickleKey, attachment::EncryptedFile, pickle::PICKLE_KEY_LENGTH};
use rand::RngCore;
use reqwest::Method;
use ruma::{DeviceId, RoomId, UserId};
use serde_json::Value;
use tokio::sync::MutexGuard;

use crate::{
    Client, SyncUpdate,
    error::{Error, Result},
    events::RoomEvent,
    http::Request,
    machine::{
        self, BundleShare, CryptoStore, DecryptedRoomEvent, Device, LocalTrust, MachineError,
        Membership, OlmMachine, OutgoingRequest, RoomUpdate, SyncChanges, UnableToDecrypt,
    },
    store::{Changes, SecretBox, Store, StoreError},
    verification::route_room_verification_event,
};

/// The machine's records, each sealed.
pub(crate) const MACHINE_NAMESPACE: &str = "crypto.machine";
/// The machine's pickle key, sealed.
pub(crate) const PICKLE_KEY_NAMESPACE: &str = "crypto.pickle_key";
const PICKLE_KEY_RECORD: &str = "key";

/// How many rounds of key queries and claims one send may need before its
/// room key is shared (query, claim, share: three in the usual case).
const MAX_SHARE_ROUNDS: usize = 8;

/// The machine's [`CryptoStore`] over the SDK store: records opened at
/// load, writes sealed into a batch for the client to commit.
pub(crate) struct SealedCryptoStore<'a> {
    secrets: &'a SecretBox,
    loaded: BTreeMap<String, Vec<u8>>,
    staged: Changes,
}

impl<'a> SealedCryptoStore<'a> {
    /// Opens every machine record of `store`.
    async fn open(store: &dyn Store, secrets: &'a SecretBox) -> Result<Self, StoreError> {
        let mut loaded = BTreeMap::new();
        for (key, sealed) in store.list(MACHINE_NAMESPACE).await? {
            let plain = secrets.open(MACHINE_NAMESPACE, &key, &sealed)?;
            loaded.insert(key, plain.to_vec());
        }
        Ok(Self {
            secrets,
            loaded,
            staged: Changes::new(),
        })
    }

    /// A store with nothing loaded, only for staging writes.
    fn staging(secrets: &'a SecretBox) -> Self {
        Self {
            secrets,
            loaded: BTreeMap::new(),
            staged: Changes::new(),
        }
    }

    fn into_changes(self) -> Changes {
        self.staged
    }
}

impl CryptoStore for SealedCryptoStore<'_> {
    type Error = StoreError;

    fn load_all(&self) -> Result<BTreeMap<String, Vec<u8>>, StoreError> {
        Ok(self.loaded.clone())
    }

    fn save(&mut self, changes: machine::Changes) -> Result<(), StoreError> {
        for (key, value) in changes.records {
            match value {
                Some(value) => {
                    self.secrets
                        .put(&mut self.staged, MACHINE_NAMESPACE, &key, &value)?;
                    self.loaded.insert(key, value);
                }
                None => {
                    self.staged.delete(MACHINE_NAMESPACE, &key);
                    self.loaded.remove(&key);
                }
            }
        }
        Ok(())
    }
}

/// The machine's pending changes, sealed into a batch.
fn sealed_changes(secrets: &SecretBox, machine: &mut OlmMachine) -> Result<Changes, StoreError> {
    let mut store = SealedCryptoStore::staging(secrets);
    store.save(machine.take_changes())?;
    Ok(store.into_changes())
}

/// `changes` sealed into a batch, leaving them to the caller.
fn seal(secrets: &SecretBox, changes: &machine::Changes) -> Result<Changes, StoreError> {
    let mut sealed = Changes::new();
    for (key, value) in &changes.records {
        match value {
            Some(value) => secrets.put(&mut sealed, MACHINE_NAMESPACE, key, value)?,
            None => sealed.delete(MACHINE_NAMESPACE, key),
        }
    }
    Ok(sealed)
}

/// The machine behind the client's lock (`None` until first needed).
pub(crate) type MachineSlot = tokio::sync::Mutex<Option<OlmMachine>>;

/// What decryption made of one encrypted event.
pub type Decryption = std::result::Result<DecryptedRoomEvent, UnableToDecrypt>;

impl Client {
    /// Locks the machine, loading it from the store or creating it (and
    /// committing the new account) on first use.
    pub(crate) async fn machine(&self) -> Result<MutexGuard<'_, Option<OlmMachine>>> {
        let mut slot = self.inner.machine.lock().await;
        if slot.is_none() {
            *slot = Some(self.load_or_create_machine().await?);
        }
        Ok(slot)
    }

    async fn load_or_create_machine(&self) -> Result<OlmMachine> {
        let session = self.session().ok_or(Error::NotLoggedIn)?;
        let (user_id, device_id) = (&session.user_id, &session.device_id);
        let store = self.inner.store.as_ref();
        let secrets = &self.inner.secrets;
        let mut changes = Changes::new();
        let pickle_key = match secrets
            .get(store, PICKLE_KEY_NAMESPACE, PICKLE_KEY_RECORD)
            .await?
        {
            Some(bytes) => {
                let bytes: [u8; PICKLE_KEY_LENGTH] = bytes.as_slice().try_into().map_err(|_| {
                    StoreError::Encoding("the crypto pickle key has the wrong length".into())
                })?;
                PickleKey::from_bytes(bytes)
            }
            None => {
                let mut bytes = zeroize::Zeroizing::new([0u8; PICKLE_KEY_LENGTH]);
                rand::thread_rng().fill_bytes(bytes.as_mut());
                secrets.put(
                    &mut changes,
                    PICKLE_KEY_NAMESPACE,
                    PICKLE_KEY_RECORD,
                    bytes.as_ref(),
                )?;
                PickleKey::from_bytes(*bytes)
            }
        };
        let crypto_store = SealedCryptoStore::open(store, secrets).await?;
        let records = crypto_store.load_all()?;
        let mut machine = if records.is_empty() {
            OlmMachine::new(user_id, device_id, pickle_key)
        } else {
            OlmMachine::load(user_id, device_id, pickle_key, &records)
                .map_err(|error| StoreError::Encoding(format!("crypto machine: {error}")))?
        };
        changes.extend(sealed_changes(secrets, &mut machine)?);
        if !changes.is_empty() {
            store.commit(changes).await?;
        }
        Ok(machine)
    }

    /// Uploads the device keys of a fresh login (and anything else the
    /// machine asks for).
    pub(crate) async fn start_encryption(&self) -> Result<()> {
        let mut slot = self.machine().await?;
        self.run_outgoing_requests(&mut slot).await
    }

    /// Sends what the machine asks for now and commits its changes.
    async fn run_outgoing_requests(&self, slot: &mut Option<OlmMachine>) -> Result<()> {
        let Some(machine) = slot.as_mut() else {
            return Err(Error::NotLoggedIn);
        };
        let requests = machine.outgoing_requests();
        self.send_machine_requests(machine, requests).await
    }

    /// Commits the machine's changes (the Olm ratchet steps the requests
    /// carry, the requests themselves), then sends each request, reports
    /// its answer to the machine, and commits again.
    ///
    /// Nothing is sent if the first commit fails: a message whose ratchet
    /// step is not saved could be followed, after a crash, by another one
    /// under the same message key. The requests then stay with the machine
    /// (to-device ones are queued again), and so do its changes.
    pub(crate) async fn send_machine_requests(
        &self,
        machine: &mut OlmMachine,
        requests: Vec<OutgoingRequest>,
    ) -> Result<()> {
        if let Err(error) = self.commit_machine(machine).await {
            for outgoing in requests {
                let request_id = outgoing.request_id.clone();
                if let Err(error) = machine.mark_request_unsent(outgoing) {
                    tracing::warn!(%request_id, %error, "crypto request not sent");
                }
            }
            return Err(error);
        }
        for outgoing in requests {
            let answer: Result<Value> =
                self.inner.http.send(&http_request(&outgoing.request)).await;
            match answer {
                Ok(answer) => {
                    if let Err(error) = machine.mark_request_sent(&outgoing.request_id, &answer) {
                        tracing::warn!(request_id = %outgoing.request_id, %error, "crypto answer refused");
                    }
                }
                Err(error) => {
                    tracing::warn!(request_id = %outgoing.request_id, %error, "crypto request failed");
                    Self::report_failure(machine, &outgoing, &error);
                }
            }
        }
        self.commit_machine(machine).await
    }

    /// Commits the machine's pending changes, if any. If that fails, the
    /// machine keeps them, to be committed by the next step.
    pub(crate) async fn commit_machine(&self, machine: &mut OlmMachine) -> Result<()> {
        let changes = machine.take_changes();
        if changes.is_empty() {
            return Ok(());
        }
        let committed = match seal(&self.inner.secrets, &changes) {
            Ok(sealed) => self.inner.store.commit(sealed).await,
            Err(error) => Err(error),
        };
        if let Err(error) = committed {
            machine.restore_changes(changes);
            return Err(error.into());
        }
        Ok(())
    }

    /// Feeds one sync to the machine and decrypts its encrypted timeline
    /// events into `update`. Returns the locked machine and its changes,
    /// to be committed with the sync position while the lock is held.
    pub(crate) async fn receive_sync_encryption(
        &self,
        update: &mut SyncUpdate,
    ) -> Result<(MutexGuard<'_, Option<OlmMachine>>, Changes)> {
        let mut slot = self.machine().await?;
        let machine = slot.as_mut().ok_or(Error::NotLoggedIn)?;
        let own_user_id = self.user_id()?;
        let mut output = machine.receive_sync_changes(sync_changes(update, &own_user_id));
        // Before the timeline, so history it holds decrypts at once.
        self.import_room_key_bundles(machine, &mut output.late_decryptions)
            .await;
        // An event kept from `decrypt_event` can also be in this timeline;
        // the app gets it once.
        let late: BTreeSet<String> = output
            .late_decryptions
            .iter()
            .map(|event| event.event_id.clone())
            .collect();
        update.decrypted.extend(output.late_decryptions);
        for room in &update.joined {
            for event in &room.timeline {
                if event.event_type != "m.room.encrypted" {
                    route_room_verification_event(
                        machine,
                        &room.room_id,
                        event,
                        &event.event_type,
                        &event.content,
                    );
                    continue;
                }
                if late.contains(event.event_id.as_str()) {
                    continue;
                }
                match decrypt(machine, &room.room_id, event) {
                    Ok(decrypted) => {
                        route_room_verification_event(
                            machine,
                            &room.room_id,
                            event,
                            &decrypted.event_type,
                            &decrypted.content,
                        );
                        update.decrypted.push(decrypted);
                    }
                    Err(utd) => update.undecryptable.push((room.room_id.clone(), utd)),
                }
            }
        }
        for warning in &output.warnings {
            tracing::warn!(?warning, "device warning");
        }
        update.device_warnings.extend(output.warnings);
        update.secrets.extend(output.secrets);
        let changes = sealed_changes(&self.inner.secrets, machine)?;
        Ok((slot, changes))
    }

    /// Downloads and imports the room key bundles the machine is ready for
    /// (history shared by whoever invited us to a room we just joined);
    /// the events they decrypt join `late`. A failure is logged and the
    /// bundle tried again at a later sync, a few times.
    async fn import_room_key_bundles(
        &self,
        machine: &mut OlmMachine,
        late: &mut Vec<DecryptedRoomEvent>,
    ) {
        for bundle in machine.room_key_bundles_to_import(now_ms()) {
            let (room_id, sender) = (&bundle.room_id, &bundle.sender);
            let ciphertext = match self.download_media(&bundle.url).await {
                Ok(ciphertext) => ciphertext,
                Err(error) => {
                    tracing::warn!(%room_id, %sender, %error, "room key bundle download failed");
                    machine.mark_room_key_bundle_failed(room_id, sender);
                    continue;
                }
            };
            match machine.import_room_key_bundle(room_id, sender, &ciphertext, now_ms()) {
                Ok(import) => {
                    tracing::info!(
                        %room_id, %sender, imported = import.imported, skipped = import.skipped,
                        withheld = import.withheld, "imported shared room history"
                    );
                    late.extend(import.late_decryptions);
                }
                Err(error) => {
                    tracing::warn!(%room_id, %sender, %error, "room key bundle refused");
                }
            }
        }
    }

    /// Hands `user_id` the history of `room_id` (MSC4268): builds the room
    /// key bundle, uploads it encrypted, and sends its key over Olm to each
    /// of the user's devices that may get room keys.
    ///
    /// # Errors
    ///
    /// [`Error::Crypto`] if the room is not known as encrypted or the
    /// devices' keys could not be fetched; upload, Matrix, network and
    /// store errors.
    pub(crate) async fn share_room_history(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
    ) -> Result<()> {
        let (ciphertext, keys) = self
            .with_machine(|machine| machine.build_room_key_bundle(room_id))
            .await??;
        let url = self.upload_ciphertext(ciphertext).await?;
        let file = EncryptedFile { url, keys };
        let mut slot = self.machine().await?;
        let machine = slot.as_mut().ok_or(Error::NotLoggedIn)?;
        for _ in 0..MAX_SHARE_ROUNDS {
            let step = machine.share_room_key_bundle(room_id, user_id, &file, now_ms())?;
            match step {
                BundleShare::Prepare(requests) => {
                    self.send_machine_requests(machine, requests).await?;
                }
                BundleShare::Deliver(request) => {
                    return self
                        .send_machine_requests(machine, request.into_iter().collect())
                        .await;
                }
            }
        }
        Err(MachineError::AwaitingResponse.into())
    }

    /// Hands the room's shareable history to users invited from now on
    /// (`true`), or not (`false`, the default). See
    /// [`Room::set_share_history_on_invite`](crate::Room::set_share_history_on_invite).
    pub(crate) async fn set_share_history_on_invite(
        &self,
        room_id: &RoomId,
        enabled: bool,
    ) -> Result<()> {
        self.with_machine(|machine| {
            machine.set_share_history_on_invite(room_id, enabled);
        })
        .await
    }

    /// Whether the room hands its history to users we invite.
    pub(crate) async fn shares_history_on_invite(&self, room_id: &RoomId) -> Result<bool> {
        self.with_machine(|machine| machine.shares_history_on_invite(room_id))
            .await
    }

    /// After a sync is saved: sends key uploads, queries and queued
    /// to-device messages the machine asks for, then the messages of
    /// in-room verifications (after releasing the machine: sending into an
    /// encrypted room takes it).
    pub(crate) async fn after_sync_encryption(
        &self,
        mut slot: MutexGuard<'_, Option<OlmMachine>>,
    ) -> Result<()> {
        self.run_outgoing_requests(&mut slot).await?;
        let messages = slot
            .as_mut()
            .map(OlmMachine::take_room_verification_messages)
            .unwrap_or_default();
        drop(slot);
        self.send_room_verification_messages(messages).await
    }

    /// Forgets the in-memory machine after a failed sync commit, so the
    /// next use reloads the state the store actually holds.
    pub(crate) fn discard_machine(slot: &mut MutexGuard<'_, Option<OlmMachine>>) {
        **slot = None;
    }

    /// Decrypts an `m.room.encrypted` event fetched outside sync (from
    /// [`Room::messages`](crate::Room::messages), say). An event whose key
    /// has not arrived is kept and delivered in [`SyncUpdate::decrypted`]
    /// when it does.
    ///
    /// # Errors
    ///
    /// [`Error::NotLoggedIn`] and store errors; the decryption outcome is
    /// the `Ok` value.
    pub async fn decrypt_event(&self, room_id: &RoomId, event: &RoomEvent) -> Result<Decryption> {
        self.with_machine(|machine| decrypt(machine, room_id, event))
            .await
    }

    /// Runs `step` on the machine and commits what it changed.
    pub(crate) async fn with_machine<R>(
        &self,
        step: impl FnOnce(&mut OlmMachine) -> R,
    ) -> Result<R> {
        let mut slot = self.machine().await?;
        let machine = slot.as_mut().ok_or(Error::NotLoggedIn)?;
        let result = step(machine);
        self.commit_machine(machine).await?;
        Ok(result)
    }

    /// How many events failed to decrypt, by cause
    /// ([`UtdCause::name`](crate::machine::UtdCause::name)), each counted
    /// once; and, as `shared_with_stale_device_lists`, how many room keys
    /// went out while a reader's device list could not be refreshed (their
    /// server's keys/query failing), which devices they added meanwhile
    /// will report as missing keys.
    ///
    /// # Errors
    ///
    /// [`Error::NotLoggedIn`] and store errors.
    pub async fn utd_counts(&self) -> Result<BTreeMap<&'static str, u64>> {
        self.with_machine(|machine| machine.utd_counts().clone())
            .await
    }

    /// How many to-device events the crypto machine dropped, by
    /// [`ToDeviceRejection::name`](crate::machine::ToDeviceRejection::name)
    /// (sender device keys that do not check out, payloads addressed to
    /// someone else, replays…). Events whose sender is not a user id are
    /// dropped when the sync is parsed, before the machine sees them.
    ///
    /// # Errors
    ///
    /// [`Error::NotLoggedIn`] and store errors.
    pub async fn rejected_to_device_counts(&self) -> Result<BTreeMap<&'static str, u64>> {
        self.with_machine(|machine| machine.rejected_to_device_counts().clone())
            .await
    }

    /// The devices of `user_id` this device has fetched and checked (their
    /// keys' self-signatures), with the local trust decision for each.
    ///
    /// # Errors
    ///
    /// [`Error::NotLoggedIn`] and store errors.
    pub async fn devices(&self, user_id: &UserId) -> Result<Vec<Device>> {
        self.with_machine(|machine| machine.devices(user_id)).await
    }

    /// Records a local trust decision for a device (besides cross-signing:
    /// [`Client::verify_user`], and SAS: [`Client::request_verification`]).
    /// Excluding a device
    /// that holds a room's current key rotates that key at the next send.
    /// Returns whether the device is known.
    ///
    /// # Errors
    ///
    /// [`Error::NotLoggedIn`] and store errors.
    pub async fn set_device_trust(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        trust: LocalTrust,
    ) -> Result<bool> {
        self.with_machine(|machine| machine.set_device_trust(user_id, device_id, trust))
            .await
    }

    /// Shares `room_id`'s keys only with verified devices (`true`) or with
    /// every device not blacklisted (`false`, the default). Left-out
    /// devices get `m.room_key.withheld` with code `m.unverified`, so their
    /// failures say why.
    ///
    /// # Errors
    ///
    /// [`Error::NotLoggedIn`] and store errors.
    pub async fn set_only_verified(&self, room_id: &RoomId, only_verified: bool) -> Result<()> {
        self.with_machine(|machine| machine.set_only_verified(room_id, only_verified))
            .await
    }

    /// Shares the room key with every device that may read `room_id` (the
    /// key queries, claims and to-device messages that takes), then
    /// encrypts the event into `m.room.encrypted` content.
    ///
    /// The advanced Megolm ratchet is committed before the ciphertext is
    /// returned, so a crash can never make the device reuse a message index.
    ///
    /// # Errors
    ///
    /// [`Error::EncryptionRequired`] if the machine has not seen the room's
    /// `m.room.encryption` and members yet (sync first);
    /// [`Error::Crypto`] if the key could not be shared.
    pub(crate) async fn encrypt_room_event(
        &self,
        room_id: &RoomId,
        event_type: &str,
        content: &Value,
    ) -> Result<Value> {
        let mut slot = self.machine().await?;
        let machine = slot.as_mut().ok_or(Error::NotLoggedIn)?;
        if !machine.is_room_encrypted(room_id) {
            return Err(Error::EncryptionRequired(room_id.to_owned()));
        }
        let queued = machine.take_queued_requests();
        if !queued.is_empty() {
            self.send_machine_requests(machine, queued).await?;
        }
        for _ in 0..MAX_SHARE_ROUNDS {
            let requests = machine.share_room_key(room_id, now_ms())?;
            if requests.is_empty() {
                break;
            }
            self.send_machine_requests(machine, requests).await?;
        }
        let encrypted = machine.encrypt_room_event(room_id, event_type, content, now_ms())?;
        self.commit_machine(machine).await?;
        Ok(encrypted)
    }
}

fn decrypt(machine: &mut OlmMachine, room_id: &RoomId, event: &RoomEvent) -> Decryption {
    // A RoomEvent always serialises (strings, ids and JSON values).
    let json = serde_json::to_value(event).unwrap_or(Value::Null);
    machine.decrypt_room_event(room_id, &json)
}

/// The HTTP request for one of the machine's requests.
pub(crate) fn http_request(request: &machine::Request) -> Request {
    match request {
        machine::Request::KeysUpload { body } => {
            Request::v3(Method::POST, &["keys", "upload"]).json(body.clone())
        }
        machine::Request::KeysQuery { body } => {
            Request::v3(Method::POST, &["keys", "query"]).json(body.clone())
        }
        machine::Request::KeysClaim { body } => {
            Request::v3(Method::POST, &["keys", "claim"]).json(body.clone())
        }
        machine::Request::SigningKeysUpload { body } => {
            Request::v3(Method::POST, &["keys", "device_signing", "upload"]).json(body.clone())
        }
        machine::Request::SignaturesUpload { body } => {
            Request::v3(Method::POST, &["keys", "signatures", "upload"]).json(body.clone())
        }
        machine::Request::BackupVersionCreate { body } => {
            Request::v3(Method::POST, &["room_keys", "version"]).json(body.clone())
        }
        machine::Request::BackupKeysUpload { version, body } => {
            Request::v3(Method::PUT, &["room_keys", "keys"])
                .query("version", version.clone())
                .json(body.clone())
        }
        machine::Request::BackupKeysFetch {
            version,
            room_id,
            session_id,
        } => {
            let mut path = vec!["room_keys", "keys", room_id.as_str()];
            path.extend(session_id.as_deref());
            Request::v3(Method::GET, &path).query("version", version.clone())
        }
        machine::Request::BackupVersionDelete { version } => {
            Request::v3(Method::DELETE, &["room_keys", "version", version])
        }
        machine::Request::ToDevice {
            event_type,
            txn_id,
            body,
        } => Request::v3(Method::PUT, &["sendToDevice", event_type, txn_id]).json(body.clone()),
    }
}

/// The encryption-relevant parts of a sync, for the machine.
fn sync_changes(update: &SyncUpdate, own_user_id: &UserId) -> SyncChanges {
    let mut rooms = Vec::new();
    rooms.extend(update.invited.iter().filter_map(|invited| {
        let invite = invited.invite_state.iter().find(|event| {
            event.event_type == "m.room.member"
                && event.state_key == own_user_id.as_str()
                && event.content.get("membership").and_then(Value::as_str) == Some("invite")
        })?;
        Some(RoomUpdate {
            members: vec![(own_user_id.to_owned(), Membership::Invite)],
            inviter: Some(invite.sender.clone()),
            ..RoomUpdate::new(invited.room_id.clone())
        })
    }));
    for joined in &update.joined {
        rooms.push(room_update(
            &joined.room_id,
            own_user_id,
            joined.state_changes(),
        ));
    }
    for left in &update.left {
        let events = left.state.iter().chain(left.timeline.iter());
        rooms.push(room_update(
            &left.room_id,
            own_user_id,
            events.filter(|e| e.is_state()),
        ));
    }
    SyncChanges {
        to_device_events: update
            .to_device
            .iter()
            .filter_map(|event| serde_json::to_value(event).ok())
            .collect(),
        changed_devices: update.device_lists.changed.clone(),
        is_initial: update.is_initial,
        left_devices: update.device_lists.left.clone(),
        one_time_key_counts: update.one_time_keys_count.clone(),
        unused_fallback_key_types: update.unused_fallback_key_types.clone(),
        rooms,
        now_ms: now_ms(),
    }
}

fn room_update<'a>(
    room_id: &RoomId,
    own_user_id: &UserId,
    state: impl Iterator<Item = &'a RoomEvent>,
) -> RoomUpdate {
    let mut update = RoomUpdate::new(room_id.to_owned());
    for event in state {
        let Some(state_key) = &event.state_key else {
            continue;
        };
        match event.event_type.as_str() {
            "m.room.encryption" if state_key.is_empty() => {
                update.encryption = Some(event.content.clone());
            }
            "m.room.history_visibility" if state_key.is_empty() => {
                update.history_visibility = event
                    .content
                    .get("history_visibility")
                    .and_then(Value::as_str)
                    .map(ToOwned::to_owned);
            }
            "m.room.member" => {
                // A member event must be keyed by a user id; the server's
                // word otherwise names nobody the machine could share with.
                let Ok(member) = UserId::parse(state_key.as_str()) else {
                    continue;
                };
                let membership = event
                    .content
                    .get("membership")
                    .and_then(Value::as_str)
                    .unwrap_or("leave");
                if member == own_user_id && membership == "invite" {
                    update.inviter = Some(event.sender.clone());
                }
                update
                    .members
                    .push((member, Membership::from_event(membership)));
            }
            _ => {}
        }
    }
    update
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

#[cfg(test)]
mod tests {
    use ruma::{room_id, user_id};
    use serde_json::json;

    use super::{Membership, RoomEvent, room_update};

    #[test]
    fn member_events_whose_state_key_is_not_a_user_id_name_nobody() {
        let member = |event_id: &str, state_key: &str, membership: &str| {
            RoomEvent::from_json(json!({
                "event_id": event_id, "sender": "@alice:example.org",
                "type": "m.room.member", "state_key": state_key,
                "content": {"membership": membership},
            }))
            .unwrap()
        };
        let events = [
            member("$1", "@bob:example.org", "join"),
            member("$2", "not a user", "join"),
            member("$3", "@me:example.org", "invite"),
        ];
        let update = room_update(
            room_id!("!room:example.org"),
            user_id!("@me:example.org"),
            events.iter(),
        );
        assert_eq!(
            update.members,
            vec![
                (user_id!("@bob:example.org").to_owned(), Membership::Join),
                (user_id!("@me:example.org").to_owned(), Membership::Invite),
            ]
        );
        assert_eq!(
            update.inviter.as_deref(),
            Some(user_id!("@alice:example.org"))
        );
    }
}
