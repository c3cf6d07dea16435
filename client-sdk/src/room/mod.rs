//! Rooms: the room list, creating and joining, and a [`Room`] handle to
//! send, redact, paginate, type and mark as read.

mod attachment;
mod info;
pub(crate) mod outbox;

use std::time::Duration;

use reqwest::Method;
use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde::Deserialize;
use serde_json::{Value, json};

pub use self::{
    info::{MEGOLM_ALGORITHM, Member, Membership, POLICY_EVENT_TYPE, RoomInfo},
    outbox::{PendingEvent, PendingKind},
};
use crate::{
    Client,
    error::Result,
    events::{RoomEvent, parse_each},
    http::Request,
};

/// Where room summaries live in the store (key: the room id).
pub(crate) const ROOMS_NAMESPACE: &str = "rooms";

/// How a new room protects its messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RoomSecurity {
    /// No encryption: the server can read every message.
    Plain,
    /// `m.room.encryption` with Megolm from the first event.
    #[default]
    Encrypted,
    /// Encrypted, plus Myelin's E2E-only policy (`org.myelin.room.policy`,
    /// `{"e2e_required": true}`): a Myelin server refuses any plaintext
    /// message event in the room.
    E2eOnly,
}

/// What to create; see [`Client::create_room`].
#[derive(Debug, Clone, Default)]
pub struct CreateRoom {
    /// `m.room.name`.
    pub name: Option<String>,
    /// `m.room.topic`.
    pub topic: Option<String>,
    /// Users to invite at once.
    pub invite: Vec<OwnedUserId>,
    /// Mark the invites as a direct chat.
    pub is_direct: bool,
    /// Publish in the room directory and let anyone join (`public_chat`);
    /// otherwise invite-only (`private_chat`).
    pub is_public: bool,
    /// Encryption and policy.
    pub security: RoomSecurity,
}

/// A page of history from [`Room::messages`].
#[derive(Debug, Clone, PartialEq)]
pub struct Messages {
    /// Events, newest first (walking backwards).
    pub events: Vec<RoomEvent>,
    /// The token for the next (older) page; `None` at the start of the room.
    pub end: Option<String>,
    /// State events needed to show `events` (member events, when lazy
    /// loading).
    pub state: Vec<RoomEvent>,
}

#[derive(Deserialize)]
struct RoomIdResponse {
    room_id: OwnedRoomId,
}

#[derive(Deserialize)]
struct EventIdResponse {
    event_id: OwnedEventId,
}

#[derive(Deserialize)]
struct MessagesResponse {
    #[serde(default)]
    chunk: Vec<Value>,
    #[serde(default)]
    end: Option<String>,
    #[serde(default)]
    state: Vec<Value>,
}

impl Client {
    /// Every room the client knows, as of the last saved sync.
    pub fn rooms(&self) -> Vec<RoomInfo> {
        self.rooms_snapshot().into_values().collect()
    }

    pub(crate) fn rooms_snapshot(&self) -> std::collections::BTreeMap<OwnedRoomId, RoomInfo> {
        self.inner
            .rooms
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A handle on `room_id` (whether or not a sync has shown it yet).
    pub fn room(&self, room_id: &RoomId) -> Room {
        Room {
            client: self.clone(),
            room_id: room_id.to_owned(),
        }
    }

    /// Creates a room ([`/createRoom`](https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3createroom)).
    /// Encryption and the E2E-only policy go in `initial_state`, so no
    /// message can precede them. The room shows in [`Client::rooms`] at
    /// once, with what we asked for; the next sync fills in the rest.
    ///
    /// # Errors
    ///
    /// Matrix errors (for example `M_FORBIDDEN` when the server refuses).
    pub async fn create_room(&self, options: CreateRoom) -> Result<Room> {
        let mut initial_state = Vec::new();
        if options.security != RoomSecurity::Plain {
            initial_state.push(json!({
                "type": "m.room.encryption", "state_key": "",
                "content": { "algorithm": MEGOLM_ALGORITHM },
            }));
        }
        if options.security == RoomSecurity::E2eOnly {
            initial_state.push(json!({
                "type": POLICY_EVENT_TYPE, "state_key": "",
                "content": { "e2e_required": true },
            }));
        }
        let mut body = json!({
            "preset": if options.is_public { "public_chat" } else { "private_chat" },
            "visibility": if options.is_public { "public" } else { "private" },
            "invite": options.invite,
            "is_direct": options.is_direct,
            "initial_state": initial_state,
        });
        let (name, topic) = (options.name, options.topic);
        if let Some(name) = &name {
            body["name"] = json!(name);
        }
        if let Some(topic) = &topic {
            body["topic"] = json!(topic);
        }
        let response: RoomIdResponse = self
            .inner
            .http
            .send(&Request::v3(Method::POST, &["createRoom"]).json(body))
            .await?;
        // Known at once, so that the room's encryption holds before the
        // next sync confirms it.
        let mut info = RoomInfo::new(response.room_id.clone(), Membership::Join);
        info.name = name;
        info.topic = topic;
        if options.security != RoomSecurity::Plain {
            info.encryption = Some(json!({ "algorithm": MEGOLM_ALGORITHM }));
        }
        info.is_e2e_required = options.security == RoomSecurity::E2eOnly;
        if let Ok(own_user_id) = self.user_id() {
            let member = Member {
                membership: Membership::Join,
                display_name: None,
            };
            info.members.insert(own_user_id, member);
        }
        self.remember_room(info).await?;
        Ok(self.room(&response.room_id))
    }

    /// Saves and publishes `info`; if a sync already brought the room, only
    /// raises that copy's security to what `info` knows (a sync that saw
    /// only the room's first events does not know it is encrypted yet).
    async fn remember_room(&self, info: RoomInfo) -> Result<()> {
        let _room_list = self.inner.room_list_lock.lock().await;
        let info = match self.rooms_snapshot().remove(&info.room_id) {
            Some(mut known) => {
                known.raise_security_to(&info);
                known
            }
            None => info,
        };
        let mut changes = crate::store::Changes::new();
        changes.put_json(ROOMS_NAMESPACE, info.room_id.as_str(), &info)?;
        self.inner.store.commit(changes).await?;
        self.publish_room(info);
        Ok(())
    }

    /// Makes `info` the live copy of its room, keeping any security the
    /// live copy gained meanwhile (see [`Client::raise_room_security`]).
    pub(crate) fn publish_room(&self, mut info: RoomInfo) {
        let mut live = self.inner.rooms.write().unwrap_or_else(|e| e.into_inner());
        if let Some(current) = live.get(&info.room_id) {
            info.raise_security_to(current);
        }
        live.insert(info.room_id.clone(), info);
    }

    /// Joins a room by id or alias (`#room:server`).
    ///
    /// # Errors
    ///
    /// Matrix errors (`M_FORBIDDEN` without an invite, `M_NOT_FOUND`).
    pub async fn join_room(&self, room_id_or_alias: &str) -> Result<Room> {
        let response: RoomIdResponse = self
            .inner
            .http
            .send(&Request::v3(Method::POST, &["join", room_id_or_alias]).json(json!({})))
            .await?;
        Ok(self.room(&response.room_id))
    }
}

/// A room, for sending and reading. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Room {
    client: Client,
    room_id: OwnedRoomId,
}

impl Room {
    /// The room's id.
    pub fn room_id(&self) -> &RoomId {
        &self.room_id
    }

    /// What the last saved sync said about the room.
    pub fn info(&self) -> Option<RoomInfo> {
        self.client
            .inner
            .rooms
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&self.room_id)
            .cloned()
    }

    /// Sends an `m.text` message; see [`Room::send`].
    ///
    /// # Errors
    ///
    /// As [`Room::send`].
    pub async fn send_text(&self, body: &str) -> Result<OwnedEventId> {
        self.send(
            "m.room.message",
            json!({ "msgtype": "m.text", "body": body }),
        )
        .await
    }

    /// Sends a message event. Its transaction id is saved in the store
    /// before the first attempt; retries (here, or by
    /// [`Client::resend_pending`] after a restart) reuse it, so the server
    /// stores the event once however often the request is repeated.
    ///
    /// In an encrypted room the event is encrypted first: the room key is
    /// shared with every device that may read it (key queries, claims and
    /// to-device messages as needed), and the event goes out as
    /// `m.room.encrypted`. Plaintext never does.
    ///
    /// # Errors
    ///
    /// [`crate::Error::EncryptionRequired`] for an encrypted room whose
    /// encryption state and members no sync has delivered yet (sync
    /// first); [`crate::Error::Crypto`] if the key could not be shared;
    /// Matrix, network and store errors. After a transient failure the
    /// event stays pending.
    pub async fn send(&self, event_type: &str, content: Value) -> Result<OwnedEventId> {
        let (event_type, content) =
            if event_type != "m.room.encrypted" && self.is_encrypted().await? {
                let encrypted = self
                    .client
                    .encrypt_room_event(&self.room_id, event_type, &content)
                    .await?;
                ("m.room.encrypted", encrypted)
            } else {
                (event_type, content)
            };
        self.client
            .send_pending(PendingEvent::new(
                self.room_id.clone(),
                PendingKind::Message {
                    event_type: event_type.to_owned(),
                    content,
                },
            ))
            .await
    }

    /// Whether the room is encrypted: from the room list, or, for a room
    /// no sync has shown yet, from the server's `m.room.encryption` state
    /// (so plaintext cannot slip into a room joined a moment ago).
    ///
    /// # Errors
    ///
    /// Matrix and network errors of the state lookup, other than
    /// `M_NOT_FOUND` (which means "not encrypted").
    pub async fn is_encrypted(&self) -> Result<bool> {
        if let Some(info) = self.info() {
            return Ok(info.is_encrypted());
        }
        let request = Request::v3(
            Method::GET,
            &[
                "rooms",
                self.room_id.as_str(),
                "state",
                "m.room.encryption",
                "",
            ],
        );
        match self.client.inner.http.send::<Value>(&request).await {
            Ok(content) => Ok(content.get("algorithm").and_then(Value::as_str).is_some()),
            Err(error) if error.kind() == Some(&crate::ErrorKind::NotFound) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Sets a state event (idempotent: no transaction id needed).
    ///
    /// # Errors
    ///
    /// Matrix errors (`M_FORBIDDEN` without the power level).
    pub async fn send_state(
        &self,
        event_type: &str,
        state_key: &str,
        content: Value,
    ) -> Result<OwnedEventId> {
        let request = Request::v3(
            Method::PUT,
            &[
                "rooms",
                self.room_id.as_str(),
                "state",
                event_type,
                state_key,
            ],
        )
        .json(content);
        let response: EventIdResponse = self
            .client
            .inner
            .http
            .send_with_retries(&request, &self.client.inner.request_retry)
            .await?;
        Ok(response.event_id)
    }

    /// Redacts an event, with a transaction id kept like [`Room::send`]'s.
    ///
    /// # Errors
    ///
    /// Matrix errors (`M_FORBIDDEN` for someone else's event without the
    /// power level), network and store errors.
    pub async fn redact(
        &self,
        event_id: &OwnedEventId,
        reason: Option<&str>,
    ) -> Result<OwnedEventId> {
        self.client
            .send_pending(PendingEvent::new(
                self.room_id.clone(),
                PendingKind::Redaction {
                    event_id: event_id.clone(),
                    reason: reason.map(str::to_owned),
                },
            ))
            .await
    }

    /// Fetches a page of older events
    /// ([`/messages`](https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3roomsroomidmessages),
    /// `dir=b`), from `from`, or by default from the newest event. To
    /// fill the gap before a limited sync timeline, pass that room's
    /// [`RoomInfo::prev_batch`].
    ///
    /// # Errors
    ///
    /// Matrix errors (`M_FORBIDDEN` when history is not visible to us).
    pub async fn messages(&self, from: Option<&str>, limit: u32) -> Result<Messages> {
        let mut request = Request::v3(Method::GET, &["rooms", self.room_id.as_str(), "messages"])
            .query("dir", "b")
            .query("limit", limit.to_string());
        if let Some(from) = from {
            request = request.query("from", from.to_owned());
        }
        let response: MessagesResponse = self
            .client
            .inner
            .http
            .send_with_retries(&request, &self.client.inner.request_retry)
            .await?;
        Ok(Messages {
            events: parse_each(response.chunk, "messages"),
            end: response.end,
            state: parse_each(response.state, "messages state"),
        })
    }

    /// Says we are (or stopped) typing, for at most `timeout`.
    ///
    /// # Errors
    ///
    /// Matrix and network errors; [`crate::Error::NotLoggedIn`].
    pub async fn typing(&self, is_typing: bool, timeout: Duration) -> Result<()> {
        let user_id = self.client.user_id()?;
        let mut body = json!({ "typing": is_typing });
        if is_typing {
            body["timeout"] = json!(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
        }
        self.put_or_post(Method::PUT, &["typing", user_id.as_str()], body)
            .await
    }

    /// Sends a public read receipt (`m.read`) for `event_id`.
    ///
    /// # Errors
    ///
    /// Matrix and network errors.
    pub async fn read_receipt(&self, event_id: &OwnedEventId) -> Result<()> {
        self.put_or_post(
            Method::POST,
            &["receipt", "m.read", event_id.as_str()],
            json!({}),
        )
        .await
    }

    /// Invites a user.
    ///
    /// In an encrypted room that [shares history on
    /// invite](Room::set_share_history_on_invite), the user is first handed
    /// the room's shareable history (MSC4268), so that the invite never
    /// arrives without it.
    ///
    /// # Errors
    ///
    /// Matrix errors (`M_FORBIDDEN` without the power level or for a banned
    /// user); when sharing history, as [`Room::share_history_with`].
    pub async fn invite(&self, user_id: &UserId) -> Result<()> {
        if self.client.shares_history_on_invite(&self.room_id).await? && self.is_encrypted().await?
        {
            self.share_history_with(user_id).await?;
        }
        self.put_or_post(Method::POST, &["invite"], json!({ "user_id": user_id }))
            .await
    }

    /// Opts this room in (`true`) or out (`false`, the default) of handing
    /// its history to the users we invite (MSC4268): the keys of every
    /// Megolm session whose creator marked it shareable (sent while the
    /// history visibility was `shared` or `world_readable`), in an
    /// encrypted bundle only the invitee's devices can open. Messages from
    /// joined-only or invited-only periods are never included. The setting
    /// is local to this device. See `spec-notes/history-sharing.md` for
    /// what this gives up.
    ///
    /// # Errors
    ///
    /// [`crate::Error::NotLoggedIn`] and store errors.
    pub async fn set_share_history_on_invite(&self, enabled: bool) -> Result<()> {
        self.client
            .set_share_history_on_invite(&self.room_id, enabled)
            .await
    }

    /// Whether this room hands its history to the users we invite.
    ///
    /// # Errors
    ///
    /// [`crate::Error::NotLoggedIn`] and store errors.
    pub async fn shares_history_on_invite(&self) -> Result<bool> {
        self.client.shares_history_on_invite(&self.room_id).await
    }

    /// Hands `user_id` this room's shareable history now, whatever the
    /// room's setting: a room key bundle uploaded encrypted, its key sent
    /// over Olm to each of the user's devices. Their client imports it when
    /// they join on our invite; decrypted events then carry
    /// [`DecryptedRoomEvent::shared_by`](crate::machine::DecryptedRoomEvent::shared_by).
    ///
    /// # Errors
    ///
    /// [`crate::Error::Crypto`] for a room not known as encrypted (sync
    /// first) or devices whose keys could not be fetched; upload, Matrix,
    /// network and store errors.
    pub async fn share_history_with(&self, user_id: &UserId) -> Result<()> {
        self.client.share_room_history(&self.room_id, user_id).await
    }

    /// Joins this room (accepting an invite).
    ///
    /// # Errors
    ///
    /// Matrix errors (`M_FORBIDDEN` without an invite to a private room).
    pub async fn join(&self) -> Result<()> {
        self.client.join_room(self.room_id.as_str()).await.map(drop)
    }

    /// Leaves the room (or rejects an invite).
    ///
    /// # Errors
    ///
    /// Matrix and network errors.
    pub async fn leave(&self) -> Result<()> {
        self.put_or_post(Method::POST, &["leave"], json!({})).await
    }

    /// `METHOD /rooms/{roomId}/<segments>` with `body`, answer ignored.
    async fn put_or_post(&self, method: Method, segments: &[&str], body: Value) -> Result<()> {
        let mut path = vec!["rooms", self.room_id.as_str()];
        path.extend_from_slice(segments);
        let _: Value = self
            .client
            .inner
            .http
            .send_with_retries(
                &Request::v3(method, &path).json(body),
                &self.client.inner.request_retry,
            )
            .await?;
        Ok(())
    }
}
