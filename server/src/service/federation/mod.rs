//! The Server-Server API's transport and identity: who a request comes
//! from, where a server is, and which keys it signs with
//! (spec-notes/federation.md).
//!
//! - [`auth`]: the `X-Matrix` request signature, made and checked;
//! - [`keys`]: other servers' keys, fetched, verified, cached, looked up by
//!   the time they must be valid at; the notary's answers;
//! - [`discovery`]: server name → address, `Host` header and TLS name
//!   (well-known delegation, SRV records);
//! - [`transport`]: one HTTPS exchange to a checked address;
//! - [`client`]: [`FederationClient`], signed `get`/`post`/`put`;
//! - [`pdu_check`]: a received PDU's format, signatures and content hash;
//! - [`inbound`]: transactions received (PDUs and EDUs) and the reads of
//!   a room's DAG other servers make;
//! - [`membership`]: joins, leaves, knocks and invites across servers;
//! - [`user_keys`], [`profile`]: remote users' keys and profiles for local
//!   clients;
//! - [`sender`]: local PDUs and EDUs out to other servers, in transactions.

pub mod auth;
pub mod client;
pub mod discovery;
pub mod inbound;
pub mod keys;
pub mod membership;
pub mod pdu_check;
pub mod profile;
pub mod sender;
pub mod transport;
pub mod user_keys;

use std::sync::Arc;

use ruma::{OwnedServerName, ServerName};

pub use auth::{AuthError, SignedRequest, XMatrix};
pub use client::FederationClient;
pub use keys::{KeyFetcher, KeyLookupError, RemoteKeys};

use crate::storage::Millis;

/// The wall clock in Matrix milliseconds; tests pass their own.
pub type Clock = Arc<dyn Fn() -> Millis + Send + Sync>;

/// The real clock.
pub fn system_clock() -> Clock {
    Arc::new(Millis::now)
}

/// Why a request to another server failed.
#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    /// The destination is not one this server may connect to (it resolves
    /// to loopback or private addresses the configuration does not allow).
    #[error("refused: {0}")]
    Refused(String),
    /// DNS, connection, TLS or HTTP failed, or the time ran out.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The remote server answered with an error status; its Matrix error
    /// code and message, when it sent some.
    #[error("remote error {status}: {}", errcode.as_deref().unwrap_or("(no errcode)"))]
    Remote {
        /// The HTTP status.
        status: u16,
        /// `errcode`.
        errcode: Option<String>,
        /// `error`.
        error: Option<String>,
    },
    /// The answer is not what the endpoint returns.
    #[error("invalid answer: {0}")]
    InvalidResponse(String),
    /// The request could not be built (a bad path or body).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

/// Percent-encodes everything but unreserved characters, for a query
/// value or a path segment (user, room and event ids).
pub(crate) fn percent_encode(value: &str) -> String {
    use std::fmt::Write;
    value.bytes().fold(String::new(), |mut encoded, byte| {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            let _ = write!(encoded, "%{byte:02X}");
        }
        encoded
    })
}

/// Federation as the HTTP layer sees it: authenticating requests, and the
/// keys and client behind that.
pub struct Federation {
    server_name: OwnedServerName,
    keys: Arc<RemoteKeys>,
    client: Arc<FederationClient>,
    clock: Clock,
    /// Whether this server talks to others at all (`[federation] enabled`).
    enabled: bool,
}

impl std::fmt::Debug for Federation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Federation")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl Federation {
    /// Ties the parts together; with `enabled` false, nothing is sent to
    /// other servers on clients' behalf.
    pub fn new(
        server_name: OwnedServerName,
        keys: Arc<RemoteKeys>,
        client: Arc<FederationClient>,
        clock: Clock,
        enabled: bool,
    ) -> Self {
        Self {
            server_name,
            keys,
            client,
            clock,
            enabled,
        }
    }

    /// The remote key service.
    pub fn keys(&self) -> &Arc<RemoteKeys> {
        &self.keys
    }

    /// The outbound client.
    pub fn client(&self) -> &Arc<FederationClient> {
        &self.client
    }

    /// This server's name.
    pub fn server_name(&self) -> &ServerName {
        &self.server_name
    }

    /// Whether this server talks to others (`[federation] enabled`).
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// The server that signed `request`, given its `Authorization` header
    /// values: the first `X-Matrix` one that verifies against its origin's
    /// key valid now.
    ///
    /// # Errors
    /// [`AuthError`] of the first `X-Matrix` header (or `Missing`).
    pub async fn authenticate<'a>(
        &self,
        authorizations: impl IntoIterator<Item = &'a str>,
        request: &SignedRequest<'_>,
    ) -> Result<OwnedServerName, AuthError> {
        let mut first_error = None;
        for header in authorizations {
            let outcome = self.verify(header, request).await;
            match outcome {
                Ok(origin) => return Ok(origin),
                Err(AuthError::Missing) => {}
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        Err(first_error.unwrap_or(AuthError::Missing))
    }

    async fn verify(
        &self,
        header: &str,
        request: &SignedRequest<'_>,
    ) -> Result<OwnedServerName, AuthError> {
        let x_matrix = XMatrix::parse(header)?;
        x_matrix.check_destination(&self.server_name)?;
        let public_key = self
            .keys
            .verify_key(&x_matrix.origin, &x_matrix.key_id, (self.clock)())
            .await
            .map_err(|error| match error {
                KeyLookupError::NotFound { server, key_id } => AuthError::UnknownKey {
                    origin: server,
                    key_id,
                },
                KeyLookupError::Storage(error) => AuthError::Storage(error.to_string()),
            })?;
        x_matrix.verify(&public_key.encode(), &self.server_name, request)?;
        Ok(x_matrix.origin)
    }
}
