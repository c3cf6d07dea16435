//! Requests the machine asks its caller to send, as plain JSON bodies.
//!
//! Each carries a request id. The caller sends it, then reports the
//! server's answer with [`crate::machine::OlmMachine::mark_request_sent`]
//! under the same id. To-device requests use the request id as their
//! transaction id, so a retried send is idempotent on the server.

use ruma::{OwnedRoomId, OwnedUserId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One request for the caller to send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutgoingRequest {
    /// Names the request when its response is reported back.
    pub request_id: String,
    /// What to send.
    pub request: Request,
}

/// The endpoint and body of an [`OutgoingRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Request {
    /// `POST /_matrix/client/v3/keys/upload` with this body.
    KeysUpload {
        /// The request body.
        body: Value,
    },
    /// `POST /_matrix/client/v3/keys/query` with this body.
    KeysQuery {
        /// The request body.
        body: Value,
    },
    /// `POST /_matrix/client/v3/keys/claim` with this body.
    KeysClaim {
        /// The request body.
        body: Value,
    },
    /// `POST /_matrix/client/v3/keys/device_signing/upload` with this body.
    /// The server may ask for user-interactive auth (a 401 with `flows`):
    /// send the body again with `auth` added.
    SigningKeysUpload {
        /// The request body (without `auth`).
        body: Value,
    },
    /// `POST /_matrix/client/v3/keys/signatures/upload` with this body.
    SignaturesUpload {
        /// The request body.
        body: Value,
    },
    /// `POST /_matrix/client/v3/room_keys/version` with this body: a new
    /// key backup version.
    BackupVersionCreate {
        /// The request body (`algorithm`, signed `auth_data`).
        body: Value,
    },
    /// `PUT /_matrix/client/v3/room_keys/keys?version={version}` with this
    /// body. `M_WRONG_ROOM_KEYS_VERSION` or a 404 means the backup is gone:
    /// report it with [`crate::machine::OlmMachine::mark_backup_gone`].
    BackupKeysUpload {
        /// The backup version.
        version: String,
        /// The request body (`{"rooms": {room: {"sessions": {id: data}}}}`).
        body: Value,
    },
    /// `GET /_matrix/client/v3/room_keys/keys/{room_id}/{session_id}?version={version}`,
    /// or `GET /_matrix/client/v3/room_keys/keys/{room_id}?version={version}`
    /// without a session: keys for undecryptable events. A 404 means the
    /// backup does not have them: report it with
    /// [`crate::machine::OlmMachine::mark_backup_gone`].
    BackupKeysFetch {
        /// The backup version.
        version: String,
        /// The room.
        room_id: OwnedRoomId,
        /// The session, or `None` for every session of the room.
        session_id: Option<String>,
    },
    /// `DELETE /_matrix/client/v3/room_keys/version/{version}`: an old
    /// backup version a new one replaced. A 404 means it is gone already:
    /// report it with [`crate::machine::OlmMachine::mark_backup_gone`].
    BackupVersionDelete {
        /// The version to delete.
        version: String,
    },
    /// `PUT /_matrix/client/v3/sendToDevice/{event_type}/{txn_id}` with
    /// this body (`{"messages": {user: {device: content}}}`).
    ToDevice {
        /// The to-device event type (`m.room.encrypted`, `m.room_key.withheld`).
        event_type: String,
        /// The transaction id (the request id).
        txn_id: String,
        /// The request body.
        body: Value,
    },
}

/// A to-device request kept in the store from the moment it is issued
/// until the server took it (or refused it): an Olm message whose ratchet
/// step is saved must also be sent, after a restart if need be.
#[derive(Serialize, Deserialize)]
pub(super) struct PendingToDevice {
    pub(super) request: OutgoingRequest,
    /// For an `m.room_key` batch: whom it carries which session to.
    #[serde(default)]
    pub(super) room_keys: Option<RoomKeysTarget>,
}

/// The room, the session and the (user, device) pairs of an `m.room_key`
/// batch.
pub(super) type RoomKeysTarget = (OwnedRoomId, String, Vec<super::DeviceKey>);

pub(super) const PENDING_RECORD_KIND: &str = "to_device";

/// What the machine remembers about a request it issued and has not heard
/// back about.
#[derive(Debug, Clone)]
pub(crate) enum InFlight {
    Upload,
    /// Users whose device lists this query fetches.
    Query(Vec<OwnedUserId>),
    /// (user, device) pairs whose keys this claim asks for.
    Claim(Vec<super::DeviceKey>),
    ToDevice,
    /// Our new cross-signing keys, named by their master key.
    SigningKeysUpload(String),
    /// Signatures by our cross-signing keys.
    Signatures(super::cross_signing::SignatureUpload),
    /// A new backup version, its private key sealed under the pickle key.
    BackupCreate {
        pickle: String,
    },
    /// These sessions, to this backup version.
    BackupUpload {
        version: String,
        sessions: Vec<super::inbound::SessionKeyId>,
    },
    /// Keys of these sessions of this room, from the backup.
    BackupFetch {
        room_id: OwnedRoomId,
        sessions: Vec<String>,
        /// Whether the request asks for the whole room.
        whole_room: bool,
    },
    /// The deletion of an old backup version.
    BackupVersionDelete {
        version: String,
    },
    /// `m.room_key` for these devices, of this room's session.
    RoomKeys {
        room_id: OwnedRoomId,
        session_id: String,
        devices: Vec<super::DeviceKey>,
    },
}
