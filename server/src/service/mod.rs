//! The domain: what the server does, independent of HTTP and SQL.
//!
//! Handlers in [`crate::http`] call these services; services call
//! [`crate::storage::Storage`]. Services never see axum or sqlx types.

pub mod account_data;
pub mod accounts;
pub mod address_policy;
pub mod committed;
pub mod dehydrated_devices;
pub mod devices;
pub mod e2ee;
pub mod federation;
mod inbox_marks;
pub mod key_backup;
pub mod media;
pub mod notifier;
pub mod password;
pub mod presence;
pub mod profile;
pub mod public_rooms;
pub mod push;
pub mod push_rules;
pub mod pushers;
pub mod rate_limit;
pub mod room_events;
pub mod room_ops;
mod room_slots;
pub mod rooms;
pub mod server_keys;
pub mod stream;
pub mod sync;
pub mod to_device;
pub mod tokens;
pub mod typing;
pub mod uia;

use std::time::Duration;

use crate::storage::StorageError;

pub use uia::UiaChallenge;

/// Why a service refused or failed a request.
///
/// Each variant maps to exactly one Matrix error code in `http::error`.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The caller may not do this.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The access token is unknown, revoked or belongs to a deleted device.
    #[error("unknown access token")]
    UnknownToken,
    /// The access token has expired; its refresh token can replace it.
    #[error("expired access token")]
    ExpiredToken,
    /// The thing asked for does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The requested user id is taken.
    #[error("user id already taken")]
    UserInUse,
    /// The requested user id is not allowed.
    #[error("invalid username: {0}")]
    InvalidUsername(String),
    /// The password does not meet the policy.
    #[error("weak password: {0}")]
    WeakPassword(String),
    /// A required parameter is missing.
    #[error("missing parameter: {0}")]
    MissingParam(String),
    /// A parameter has a value the server does not accept.
    #[error("invalid parameter: {0}")]
    InvalidParam(String),
    /// A JSON value inside the request does not have the shape the spec
    /// defines (a wrong type, a missing object).
    #[error("malformed JSON: {0}")]
    BadJson(String),
    /// A signature on a key does not verify, or the key is not signed by
    /// the key that must sign it.
    #[error("invalid signature: {0}")]
    InvalidSignature(String),
    /// Guests may not do this.
    #[error("guest access is not allowed")]
    GuestAccessForbidden,
    /// The account has been deactivated.
    #[error("the account is deactivated")]
    UserDeactivated,
    /// Too many requests; try again after the given time.
    #[error("rate limited")]
    LimitExceeded {
        /// How long to wait.
        retry_after: Duration,
    },
    /// User-interactive authentication must continue.
    #[error("user-interactive authentication required")]
    AuthRequired(Box<UiaChallenge>),
    /// The room version is unknown or not implemented.
    #[error("unsupported room version {0}")]
    UnsupportedRoomVersion(String),
    /// The room alias asked for at room creation is taken.
    #[error("room alias in use")]
    RoomInUse,
    /// The alias to create exists already.
    #[error("alias already exists")]
    AliasInUse,
    /// A canonical alias names an alias that does not point at the room.
    #[error("bad alias: {0}")]
    BadAlias(String),
    /// The event is larger than the spec allows.
    #[error("event too large")]
    EventTooLarge,
    /// An upload is larger than the configured limit.
    #[error("upload over the {limit}-byte limit")]
    MediaTooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
    /// The media id has its content already.
    #[error("media already uploaded")]
    CannotOverwriteMedia,
    /// The media id exists but its content has not been uploaded yet.
    #[error("media not yet uploaded")]
    NotYetUploaded,
    /// A key backup write named a version that is not the user's latest.
    #[error("backup version is not the current one")]
    WrongRoomKeysVersion {
        /// The user's latest version.
        current_version: String,
    },
    /// The room is E2E-only and the event would leak plaintext or weaken
    /// its policy (`spec-notes/e2e-only-rooms.md`).
    #[error("end-to-end encryption required: {0}")]
    E2eRequired(String),
    /// Every recipient device of a to-device send has as many messages
    /// waiting as the server keeps for it (or for the sender in it);
    /// nothing of the send was stored.
    #[error("to-device inboxes full: {}", .0.len())]
    ToDeviceInboxFull(Vec<to_device::RefusedDevice>),
    /// A request is larger than a configured or spec limit allows.
    #[error("too large: {0}")]
    TooLarge(String),
    /// Another server's room is of a version the requesting server does
    /// not support (`make_join`'s `ver`, an invite's version).
    #[error("incompatible room version {0}")]
    IncompatibleRoomVersion(String),
    /// Another server this request depends on failed or answered with
    /// something that does not hold (a join through it).
    #[error("bad gateway: {0}")]
    BadGateway(String),
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A fault inside the server (its detail is logged, never sent).
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServiceError {
    /// The one answer to a user who is not in a room, whether the room
    /// exists or not and whatever they asked: outsiders learn nothing from
    /// the difference (spec-notes/threat-model.md).
    pub fn not_in_room() -> Self {
        Self::Forbidden("you are not in this room".to_owned())
    }
}
