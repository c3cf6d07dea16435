//! The SDK's errors: Matrix errors a caller can match on, network and
//! store failures, and server answers that do not make sense.
//!
//! A server can answer anything; nothing here panics on it. A body that is
//! not the JSON an endpoint promises becomes [`Error::UnexpectedResponse`].

use std::time::Duration;

use crate::store::StoreError;

/// Everything a [`Client`](crate::Client) call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The homeserver answered with a Matrix error (`errcode`, `error`).
    #[error("{0}")]
    Matrix(#[from] MatrixError),
    /// The request did not get an answer: connection refused or reset,
    /// timeout, TLS failure.
    #[error("network error: {0}")]
    Network(#[source] reqwest::Error),
    /// The server answered something that is not what the endpoint promises
    /// (not JSON, missing fields, an error status without a Matrix error).
    #[error("unexpected answer from the homeserver (HTTP {status}): {reason}")]
    UnexpectedResponse {
        /// The HTTP status of the answer.
        status: u16,
        /// What did not fit (never the body itself, which may hold secrets).
        reason: String,
    },
    /// Reading or writing the local store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// Server discovery (`/.well-known/matrix/client`) failed.
    #[error("server discovery failed: {0}")]
    Discovery(String),
    /// A URL or identifier given to the SDK is not valid.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The call needs a logged-in session and there is none.
    #[error("not logged in")]
    NotLoggedIn,
    /// `login` or `register` was called on a client that already has a session.
    #[error("already logged in as {0}")]
    AlreadyLoggedIn(ruma::OwnedUserId),
    /// A plaintext event was to be sent to an encrypted room. Encryption
    /// belongs to the crypto layer, which sends `m.room.encrypted`; the SDK
    /// never lets plaintext into an encrypted room.
    #[error("room {0} is encrypted; refusing to send plaintext")]
    EncryptionRequired(ruma::OwnedRoomId),
    /// The crypto machine could not share a room key or encrypt (no Olm
    /// session with a device, a key request unanswered). Nothing was sent.
    #[error("encryption: {0}")]
    Crypto(#[from] crate::machine::MachineError),
    /// A key backup could not be enabled or restored (a wrong recovery key,
    /// say).
    #[error("key backup: {0}")]
    Backup(#[from] crate::machine::BackupError),
    /// Secret storage could not be set up or unlocked: a wrong or mistyped
    /// recovery key or passphrase, or stored data this SDK cannot read.
    #[error("secret storage: {0}")]
    SecretStorage(#[from] crate::machine::secret_storage::SecretStorageError),
    /// A dehydrated device could not be made or opened (a malformed
    /// dehydration key, data of another algorithm, a wrong key).
    #[error("dehydrated device: {0}")]
    Dehydration(#[from] crate::machine::dehydration::DeviceDehydrationError),
    /// A room key export file could not be written or read: a wrong
    /// passphrase, an altered or damaged file.
    #[error("room key export: {0}")]
    KeyExport(#[source] myelin_crypto::key_export::KeyExportError),
    /// An attachment could not be encrypted, or its `file` object or
    /// downloaded ciphertext did not check out (nothing was decrypted).
    #[error("attachment: {0}")]
    Attachment(#[source] myelin_crypto::attachment::AttachmentError),
    /// Writing a downloaded file to the caller's writer failed.
    #[error("writing the download failed: {0}")]
    Write(#[source] std::io::Error),
    /// The server's user-interactive authentication offers no flow this SDK
    /// can complete with what the caller gave (for example a token flow
    /// without a registration token).
    #[error("no supported authentication flow among {flows:?}")]
    UnsupportedAuthFlows {
        /// The flows the server offered, as lists of stage types.
        flows: Vec<Vec<String>>,
    },
}

impl Error {
    /// The Matrix error, if this is one.
    pub fn as_matrix(&self) -> Option<&MatrixError> {
        match self {
            Self::Matrix(error) => Some(error),
            _ => None,
        }
    }

    /// The Matrix error kind, if this is a Matrix error.
    pub fn kind(&self) -> Option<&ErrorKind> {
        self.as_matrix().map(|error| &error.kind)
    }

    /// Whether trying the same request again later may succeed: network
    /// failures, 5xx answers and rate limiting.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Network(_) => true,
            Self::Matrix(error) => {
                error.kind == ErrorKind::LimitExceeded || error.status == 429 || error.status >= 500
            }
            Self::UnexpectedResponse { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }

    /// How long the server asked us to wait before retrying, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        self.as_matrix().and_then(|error| error.retry_after)
    }
}

/// A Matrix error answer: [the spec's standard error response].
///
/// [the spec's standard error response]: https://spec.matrix.org/v1.16/client-server-api/#standard-error-response
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} (HTTP {status}): {message}")]
pub struct MatrixError {
    /// The HTTP status.
    pub status: u16,
    /// The `errcode`.
    pub kind: ErrorKind,
    /// The `error` text, meant for humans.
    pub message: String,
    /// `retry_after_ms` (on `M_LIMIT_EXCEEDED`), or the `Retry-After` header.
    pub retry_after: Option<Duration>,
    /// `soft_logout` (on `M_UNKNOWN_TOKEN`): the device may log in again
    /// and keep its keys.
    pub is_soft_logout: bool,
}

/// A Matrix `errcode`. The common codes have variants; the rest keep their
/// text in [`ErrorKind::Other`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// `M_FORBIDDEN`.
    Forbidden,
    /// `M_UNKNOWN_TOKEN`.
    UnknownToken,
    /// `M_MISSING_TOKEN`.
    MissingToken,
    /// `M_BAD_JSON`.
    BadJson,
    /// `M_NOT_JSON`.
    NotJson,
    /// `M_NOT_FOUND`.
    NotFound,
    /// `M_LIMIT_EXCEEDED`.
    LimitExceeded,
    /// `M_UNRECOGNIZED`.
    Unrecognized,
    /// `M_UNKNOWN`.
    Unknown,
    /// `M_USER_IN_USE`.
    UserInUse,
    /// `M_INVALID_USERNAME`.
    InvalidUsername,
    /// `M_ROOM_IN_USE`.
    RoomInUse,
    /// `M_INVALID_PARAM`.
    InvalidParam,
    /// `M_MISSING_PARAM`.
    MissingParam,
    /// `M_TOO_LARGE`.
    TooLarge,
    /// `M_WEAK_PASSWORD`.
    WeakPassword,
    /// `M_UNSUPPORTED_ROOM_VERSION`.
    UnsupportedRoomVersion,
    /// `M_USER_DEACTIVATED`.
    UserDeactivated,
    /// `M_GUEST_ACCESS_FORBIDDEN`.
    GuestAccessForbidden,
    /// Any other code, as sent.
    Other(String),
}

impl ErrorKind {
    /// Parses an `errcode`.
    pub fn from_errcode(errcode: &str) -> Self {
        match errcode {
            "M_FORBIDDEN" => Self::Forbidden,
            "M_UNKNOWN_TOKEN" => Self::UnknownToken,
            "M_MISSING_TOKEN" => Self::MissingToken,
            "M_BAD_JSON" => Self::BadJson,
            "M_NOT_JSON" => Self::NotJson,
            "M_NOT_FOUND" => Self::NotFound,
            "M_LIMIT_EXCEEDED" => Self::LimitExceeded,
            "M_UNRECOGNIZED" => Self::Unrecognized,
            "M_UNKNOWN" => Self::Unknown,
            "M_USER_IN_USE" => Self::UserInUse,
            "M_INVALID_USERNAME" => Self::InvalidUsername,
            "M_ROOM_IN_USE" => Self::RoomInUse,
            "M_INVALID_PARAM" => Self::InvalidParam,
            "M_MISSING_PARAM" => Self::MissingParam,
            "M_TOO_LARGE" => Self::TooLarge,
            "M_WEAK_PASSWORD" => Self::WeakPassword,
            "M_UNSUPPORTED_ROOM_VERSION" => Self::UnsupportedRoomVersion,
            "M_USER_DEACTIVATED" => Self::UserDeactivated,
            "M_GUEST_ACCESS_FORBIDDEN" => Self::GuestAccessForbidden,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The `errcode` string.
    pub fn errcode(&self) -> &str {
        match self {
            Self::Forbidden => "M_FORBIDDEN",
            Self::UnknownToken => "M_UNKNOWN_TOKEN",
            Self::MissingToken => "M_MISSING_TOKEN",
            Self::BadJson => "M_BAD_JSON",
            Self::NotJson => "M_NOT_JSON",
            Self::NotFound => "M_NOT_FOUND",
            Self::LimitExceeded => "M_LIMIT_EXCEEDED",
            Self::Unrecognized => "M_UNRECOGNIZED",
            Self::Unknown => "M_UNKNOWN",
            Self::UserInUse => "M_USER_IN_USE",
            Self::InvalidUsername => "M_INVALID_USERNAME",
            Self::RoomInUse => "M_ROOM_IN_USE",
            Self::InvalidParam => "M_INVALID_PARAM",
            Self::MissingParam => "M_MISSING_PARAM",
            Self::TooLarge => "M_TOO_LARGE",
            Self::WeakPassword => "M_WEAK_PASSWORD",
            Self::UnsupportedRoomVersion => "M_UNSUPPORTED_ROOM_VERSION",
            Self::UserDeactivated => "M_USER_DEACTIVATED",
            Self::GuestAccessForbidden => "M_GUEST_ACCESS_FORBIDDEN",
            Self::Other(code) => code,
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.errcode())
    }
}

/// The shortcut for SDK results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::ErrorKind;

    #[test]
    fn errcodes_round_trip() {
        for code in [
            "M_FORBIDDEN",
            "M_UNKNOWN_TOKEN",
            "M_LIMIT_EXCEEDED",
            "M_USER_IN_USE",
            "M_UNSUPPORTED_ROOM_VERSION",
            "ORG_EXAMPLE_CUSTOM",
        ] {
            assert_eq!(ErrorKind::from_errcode(code).errcode(), code);
        }
        assert_eq!(
            ErrorKind::from_errcode("ORG_EXAMPLE_CUSTOM"),
            ErrorKind::Other("ORG_EXAMPLE_CUSTOM".to_owned())
        );
    }
}
