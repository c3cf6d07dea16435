//! The sync loop: initial then incremental long-polling
//! [`/sync`](https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3sync),
//! retries with backoff, and delivery that a restart neither repeats nor
//! loses.
//!
//! Each sync's `next_batch` is saved in the same store transaction as the
//! room list it updates and whatever the application's [`SyncHandler`]
//! put in its [`Changes`]. So after a crash the store is either before the
//! update (the next sync fetches it again, and the application's records
//! of it were not saved either) or after it (the next sync starts past
//! it): an application that records what it handled in those `Changes`
//! sees every event exactly once.
//!
//! Cancellation is dropping the future: nothing is saved for a sync that
//! had not reached its commit.

mod update;

use std::{collections::BTreeMap, future::Future, time::Duration};

use reqwest::Method;
use ruma::{OwnedRoomId, OwnedUserId};
use serde_json::Value;
use tokio::sync::MutexGuard;

use self::update::SyncResponse;
pub use self::update::{
    DeviceListChanges, InvitedRoomUpdate, JoinedRoomUpdate, LeftRoomUpdate, SyncUpdate,
};
use crate::{
    Client,
    error::Result,
    http::{Request, RetryPolicy},
    machine::OlmMachine,
    room::{Membership, ROOMS_NAMESPACE, RoomInfo},
    store::Changes,
};

/// Where the sync position lives in the store.
pub(crate) const SYNC_NAMESPACE: &str = "sync";
const NEXT_BATCH_KEY: &str = "next_batch";

/// How to sync.
#[derive(Debug, Clone)]
pub struct SyncSettings {
    /// How long the server may hold an incremental sync open waiting for
    /// news (default 30 s).
    pub timeout: Duration,
    /// A [filter](https://spec.matrix.org/v1.16/client-server-api/#filtering)
    /// sent inline, e.g. `{"room": {"timeline": {"limit": 50}}}`.
    pub filter: Option<Value>,
    /// How the loop retries after network errors, 5xx and 429 (default:
    /// forever, from 1 s doubling to 30 s, or the server's
    /// `retry_after_ms`).
    pub retry: RetryPolicy,
}

impl Default for SyncSettings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            filter: None,
            retry: RetryPolicy {
                max_attempts: None,
                initial_backoff: Duration::from_secs(1),
                max_backoff: Duration::from_secs(30),
            },
        }
    }
}

/// What a [`SyncHandler`] wants the loop to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopControl {
    /// Keep syncing.
    Continue,
    /// Save this update and return.
    Break,
}

/// Receives each sync's update before it is saved. Anything the handler
/// adds to `changes` is committed atomically with the sync position.
///
/// Implemented for closures `FnMut(&SyncUpdate, &mut Changes) -> LoopControl`;
/// implement it on a type for asynchronous handling.
pub trait SyncHandler: Send {
    /// Handles one update.
    fn handle(
        &mut self,
        update: &SyncUpdate,
        changes: &mut Changes,
    ) -> impl Future<Output = LoopControl> + Send;
}

impl<F> SyncHandler for F
where
    F: FnMut(&SyncUpdate, &mut Changes) -> LoopControl + Send,
{
    fn handle(
        &mut self,
        update: &SyncUpdate,
        changes: &mut Changes,
    ) -> impl Future<Output = LoopControl> + Send {
        std::future::ready(self(update, changes))
    }
}

/// Pull-style syncing: each [`SyncStream::next`] is one sync (retried
/// under the settings' policy), saved before it is returned.
#[derive(Debug)]
pub struct SyncStream {
    client: Client,
    settings: SyncSettings,
}

impl SyncStream {
    /// Waits for the next update.
    ///
    /// Dropping the future before it completes saves nothing; the update
    /// is fetched again by the next call. Once it returns, the update is
    /// saved: an application that must not lose one across a crash should
    /// use [`Client::sync`] and record what it handled in the `Changes`.
    ///
    /// # Errors
    ///
    /// A non-transient error (such as [`ErrorKind::UnknownToken`](crate::ErrorKind::UnknownToken)),
    /// or a transient one once the retry policy gives up.
    pub async fn next(&mut self) -> Result<SyncUpdate> {
        let _syncing = self.client.inner.sync_lock.lock().await;
        let mut update = self.client.fetch_with_retries(&self.settings).await?;
        let (machine, crypto) = self.client.receive_update(&mut update).await?;
        self.client
            .save_with_encryption(&update, Changes::new(), machine, crypto)
            .await?;
        Ok(update)
    }
}

impl Client {
    /// Syncs once (no retries) and saves the result.
    ///
    /// # Errors
    ///
    /// Network, Matrix and store errors.
    pub async fn sync_once(&self, settings: &SyncSettings) -> Result<SyncUpdate> {
        let _syncing = self.inner.sync_lock.lock().await;
        let mut update = self.fetch_sync(settings).await?;
        let (machine, crypto) = self.receive_update(&mut update).await?;
        self.save_with_encryption(&update, Changes::new(), machine, crypto)
            .await?;
        Ok(update)
    }

    /// Runs the sync loop, calling `handler` with each update, until the
    /// handler returns [`LoopControl::Break`], a non-transient error occurs,
    /// or the future is dropped. Transient errors (network, 5xx, 429) are
    /// retried under `settings.retry`, waiting `retry_after_ms` when the
    /// server gives one.
    ///
    /// Only one sync runs at a time per client; a second call waits.
    ///
    /// # Errors
    ///
    /// Non-transient errors (such as [`ErrorKind::UnknownToken`](crate::ErrorKind::UnknownToken)),
    /// transient ones once the policy gives up, and store errors.
    pub async fn sync(&self, settings: SyncSettings, mut handler: impl SyncHandler) -> Result<()> {
        let _syncing = self.inner.sync_lock.lock().await;
        loop {
            let mut update = self.fetch_with_retries(&settings).await?;
            let (machine, crypto) = self.receive_update(&mut update).await?;
            let mut changes = Changes::new();
            let control = handler.handle(&update, &mut changes).await;
            self.save_with_encryption(&update, changes, machine, crypto)
                .await?;
            if control == LoopControl::Break {
                return Ok(());
            }
        }
    }

    /// Fetches the next sync, retrying transient failures under
    /// `settings.retry`.
    async fn fetch_with_retries(&self, settings: &SyncSettings) -> Result<SyncUpdate> {
        let mut failures = 0;
        loop {
            match self.fetch_sync(settings).await {
                Err(error) if error.is_transient() => {
                    failures += 1;
                    if !settings.retry.allows_another(failures) {
                        return Err(error);
                    }
                    let delay = settings.retry.delay(failures, &error);
                    tracing::debug!(
                        failures,
                        delay_ms = delay.as_millis() as u64,
                        "sync failed; retrying"
                    );
                    tokio::time::sleep(delay).await;
                }
                other => return other,
            }
        }
    }

    /// A [`SyncStream`] over this client.
    pub fn sync_stream(&self, settings: SyncSettings) -> SyncStream {
        SyncStream {
            client: self.clone(),
            settings,
        }
    }

    /// The saved sync position, if the client has synced.
    ///
    /// # Errors
    ///
    /// Store errors.
    pub async fn sync_token(&self) -> Result<Option<String>> {
        let token = self.inner.store.get(SYNC_NAMESPACE, NEXT_BATCH_KEY).await?;
        Ok(token.and_then(|bytes| String::from_utf8(bytes).ok()))
    }

    async fn fetch_sync(&self, settings: &SyncSettings) -> Result<SyncUpdate> {
        self.user_id()?;
        let since = self.sync_token().await?;
        let mut request = Request::v3(Method::GET, &["sync"]);
        if let Some(since) = &since {
            request = request
                .query("since", since.as_str())
                .query("timeout", settings.timeout.as_millis().to_string());
        }
        if let Some(filter) = &settings.filter {
            request = request.query("filter", filter.to_string());
        }
        // The server may hold the request for `timeout`; give it room to answer.
        let request = request.timeout(settings.timeout + Duration::from_secs(30));
        let response: SyncResponse = self.inner.http.send(&request).await?;
        Ok(response.into_update(since.is_none()))
    }

    /// Saves `update` with the crypto machine's changes from consuming it
    /// (one transaction: its to-device events are consumed exactly when
    /// the token moves past them), then sends what the machine asks for.
    /// If the save fails the in-memory machine is dropped, to be reloaded
    /// from the state the store holds.
    async fn save_with_encryption(
        &self,
        update: &SyncUpdate,
        mut changes: Changes,
        mut machine: MutexGuard<'_, Option<OlmMachine>>,
        crypto: Changes,
    ) -> Result<()> {
        // The handler's writes win only over its own records; crypto
        // records live in namespaces of their own.
        changes.extend(crypto);
        if let Err(error) = self.save_update(update, changes).await {
            Self::discard_machine(&mut machine);
            return Err(error);
        }
        // Key uploads and queries are asked for again at the next sync if
        // this fails; the update itself is saved.
        if let Err(error) = self.after_sync_encryption(machine).await {
            tracing::warn!(%error, "sending the crypto machine's requests failed");
        }
        Ok(())
    }

    /// Takes in a fetched update before anyone sees it: raised room
    /// security goes live at once, then the crypto machine consumes it.
    /// Returns the locked machine and its changes, to be saved with the
    /// update.
    async fn receive_update(
        &self,
        update: &mut SyncUpdate,
    ) -> Result<(MutexGuard<'_, Option<OlmMachine>>, Changes)> {
        self.raise_room_security(update)?;
        self.receive_sync_encryption(update).await
    }

    /// Makes the encryption or E2E-only policy an update turns on visible
    /// to [`Room::is_encrypted`](crate::Room::is_encrypted) before the
    /// handler sees the update and before it is saved: a message sent in
    /// between must not go out in plaintext. Publishing this early is safe
    /// because security never drops again, whatever becomes of the update.
    /// Rooms not in the list yet are left alone: for them `is_encrypted`
    /// asks the server.
    fn raise_room_security(&self, update: &SyncUpdate) -> Result<()> {
        let own_user_id = self.user_id()?;
        let mut seen = BTreeMap::new();
        fold_rooms(&own_user_id, &mut seen, update);
        let mut live = self.inner.rooms.write().unwrap_or_else(|e| e.into_inner());
        for (room_id, info) in seen {
            if let Some(current) = live.get_mut(&room_id) {
                current.raise_security_to(&info);
            }
        }
        Ok(())
    }

    /// Saves `update`'s position, the rooms it changed and the handler's
    /// `changes` in one transaction, then publishes the rooms in memory.
    async fn save_update(&self, update: &SyncUpdate, mut changes: Changes) -> Result<()> {
        let own_user_id = self.user_id()?;
        let _room_list = self.inner.room_list_lock.lock().await;
        let mut rooms = self.rooms_snapshot();
        let touched = fold_rooms(&own_user_id, &mut rooms, update);
        for room_id in &touched {
            if let Some(info) = rooms.get(room_id) {
                changes.put_json(ROOMS_NAMESPACE, room_id.as_str(), info)?;
            }
        }
        changes.put(
            SYNC_NAMESPACE,
            NEXT_BATCH_KEY,
            update.next_batch.as_bytes().to_vec(),
        );
        self.inner.store.commit(changes).await?;
        for room_id in touched {
            if let Some(info) = rooms.remove(&room_id) {
                self.publish_room(info);
            }
        }
        Ok(())
    }
}

/// Folds the update's state into the room list; returns the rooms changed.
fn fold_rooms(
    own_user_id: &OwnedUserId,
    rooms: &mut BTreeMap<OwnedRoomId, RoomInfo>,
    update: &SyncUpdate,
) -> Vec<OwnedRoomId> {
    let mut touched = Vec::new();
    for joined in &update.joined {
        let info = rooms
            .entry(joined.room_id.clone())
            .or_insert_with(|| RoomInfo::new(joined.room_id.clone(), Membership::Join));
        info.membership = Membership::Join;
        for event in joined.state_changes() {
            if let Some(state_key) = &event.state_key {
                info.apply_state(own_user_id, &event.event_type, state_key, &event.content);
            }
        }
        if joined.prev_batch.is_some() {
            info.prev_batch.clone_from(&joined.prev_batch);
        }
        touched.push(joined.room_id.clone());
    }
    for invited in &update.invited {
        let info = rooms
            .entry(invited.room_id.clone())
            .or_insert_with(|| RoomInfo::new(invited.room_id.clone(), Membership::Invite));
        info.membership = Membership::Invite;
        for event in &invited.invite_state {
            info.apply_state(
                own_user_id,
                &event.event_type,
                &event.state_key,
                &event.content,
            );
        }
        touched.push(invited.room_id.clone());
    }
    for left in &update.left {
        let info = rooms
            .entry(left.room_id.clone())
            .or_insert_with(|| RoomInfo::new(left.room_id.clone(), Membership::Leave));
        info.membership = Membership::Leave;
        for event in left.state.iter().chain(left.timeline.iter()) {
            if let Some(state_key) = &event.state_key {
                info.apply_state(own_user_id, &event.event_type, state_key, &event.content);
            }
        }
        if info.membership == Membership::Join {
            // Only a ban or a leave belongs in this section.
            info.membership = Membership::Leave;
        }
        touched.push(left.room_id.clone());
    }
    touched
}
