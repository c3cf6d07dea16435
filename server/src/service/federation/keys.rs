//! Other servers' signing keys: fetched from the origin
//! (`GET /_matrix/key/v2/server`), or from configured notaries when the
//! origin cannot be reached; verified; cached in memory and in storage; and
//! looked up by key id and the time the key must be valid at ([spec]).
//!
//! A current key (`verify_keys`) is trusted until the document's
//! `valid_until_ts`, which is capped at fetch time + 7 days as the spec
//! says; an old key (`old_verify_keys`) verifies what was signed before its
//! `expired_ts`. A lookup that finds no key valid at the wanted time
//! fetches the origin's document again, but at most once per
//! [`MIN_REFETCH_INTERVAL`] per server, so a peer naming unknown keys (or
//! other servers as its origin) cannot make this server hammer anyone.
//!
//! [spec]: https://spec.matrix.org/v1.16/server-server-api/#retrieving-server-keys

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use myelin_crypto::{sign_json, to_canonical_string};
use ruma::{CanonicalJsonObject, CanonicalJsonValue, OwnedServerName, ServerName, serde::Base64};
use tracing::{debug, warn};

use super::{Clock, FederationError};
use crate::{
    service::server_keys::{KeyDocumentError, ServerKeys, verify_key_document},
    storage::{Millis, RemoteKey, RemoteKeyDocument, Storage, StorageError},
};

/// The longest a fetched current key is trusted past the fetch, whatever
/// its document says (the spec's cap).
pub const MAX_KEY_VALIDITY: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// The shortest time between two fetches of one server's keys.
pub const MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(30);
/// Servers whose keys are kept in memory (storage keeps them all).
const MAX_CACHED_SERVERS: usize = 10_000;
/// Keys of one document kept; more is not a real server.
const MAX_KEYS_PER_DOCUMENT: usize = 64;

/// Where remote key documents come from: the federation client, or a fake
/// in tests.
#[async_trait]
pub trait KeyFetcher: Send + Sync {
    /// The document `server` publishes at `GET /_matrix/key/v2/server`, unverified.
    async fn server_keys(
        &self,
        server: &ServerName,
    ) -> Result<CanonicalJsonObject, FederationError>;

    /// The documents `notary` holds for `server`
    /// (`GET /_matrix/key/v2/query/{server}`), unverified.
    async fn notary_keys(
        &self,
        notary: &ServerName,
        server: &ServerName,
    ) -> Result<Vec<CanonicalJsonObject>, FederationError>;
}

/// Why no key could be found.
#[derive(Debug, thiserror::Error)]
pub enum KeyLookupError {
    /// The server has no such key valid at the time asked, as far as this
    /// server knows after asking (or after being refused a refetch by the
    /// rate limit).
    #[error("no key {key_id} of {server} valid at the time asked")]
    NotFound {
        /// The server.
        server: OwnedServerName,
        /// The key id.
        key_id: String,
    },
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A verified key document: its keys, ready to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedKeys {
    /// Current and old keys, current ones capped at fetch time + 7 days.
    pub keys: Vec<RemoteKey>,
    /// The document's own `valid_until_ts`.
    pub valid_until: Millis,
}

/// The remote key service.
pub struct RemoteKeys {
    storage: Arc<dyn Storage>,
    fetcher: Arc<dyn KeyFetcher>,
    own: Arc<ServerKeys>,
    notaries: Vec<OwnedServerName>,
    clock: Clock,
    cache: Mutex<HashMap<OwnedServerName, Arc<[RemoteKey]>>>,
    /// Per server: when its keys were last fetched, behind a lock that
    /// makes concurrent lookups wait for one fetch instead of each starting one.
    fetches: Mutex<HashMap<OwnedServerName, Arc<tokio::sync::Mutex<Option<Millis>>>>>,
}

impl std::fmt::Debug for RemoteKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteKeys")
            .field("notaries", &self.notaries)
            .finish_non_exhaustive()
    }
}

impl RemoteKeys {
    /// Builds the service; `own` answers for this server's own name
    /// without any fetch, `notaries` are asked when an origin cannot be.
    pub fn new(
        storage: Arc<dyn Storage>,
        fetcher: Arc<dyn KeyFetcher>,
        own: Arc<ServerKeys>,
        notaries: Vec<OwnedServerName>,
        clock: Clock,
    ) -> Self {
        Self {
            storage,
            fetcher,
            own,
            notaries,
            clock,
            cache: Mutex::new(HashMap::new()),
            fetches: Mutex::new(HashMap::new()),
        }
    }

    /// The public key `key_id` of `server` if it is valid at `at`: now for
    /// a request signature, the event's `origin_server_ts` for a PDU. Old
    /// keys count for times before their expiry. Fetches the server's keys
    /// again (rate-limited) when the cache has no such key valid at `at`.
    ///
    /// # Errors
    /// [`KeyLookupError::NotFound`] when there is none even after that.
    pub async fn verify_key(
        &self,
        server: &ServerName,
        key_id: &str,
        at: Millis,
    ) -> Result<Base64, KeyLookupError> {
        let not_found = || KeyLookupError::NotFound {
            server: server.to_owned(),
            key_id: key_id.to_owned(),
        };
        if server == self.own.server_name() {
            let document = self.own.key_document(at);
            let own = verify_document(&document, server, at).map_err(|_| not_found())?;
            return valid_key(&own.keys, key_id, at).ok_or_else(not_found);
        }
        if let Some(key) = valid_key(&self.cached(server).await?, key_id, at) {
            return Ok(key);
        }
        self.refresh(server).await?;
        valid_key(&self.cached(server).await?, key_id, at).ok_or_else(not_found)
    }

    /// The documents a notary query answers for `server`, each with this
    /// server's signature added: this server's own document, or the
    /// stored one of another server, fetched again (rate-limited) when it
    /// is missing or not valid until `minimum_valid_until`. A document that
    /// is still older after that is returned as it is, as the spec allows.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn notary_documents(
        &self,
        server: &ServerName,
        minimum_valid_until: Option<Millis>,
    ) -> Result<Vec<CanonicalJsonObject>, StorageError> {
        let now = (self.clock)();
        if server == self.own.server_name() {
            return Ok(vec![self.own.key_document(now)]);
        }
        let wanted = minimum_valid_until.unwrap_or(now);
        let mut stored = self.storage.remote_key_document(server).await?;
        if stored.as_ref().is_none_or(|doc| doc.valid_until < wanted) {
            self.refresh(server).await?;
            stored = self.storage.remote_key_document(server).await?;
        }
        let Some(stored) = stored else {
            return Ok(Vec::new());
        };
        let Ok(mut document) = myelin_crypto::parse_canonical_object(&stored.json) else {
            warn!(%server, "a stored key document no longer parses");
            return Ok(Vec::new());
        };
        // Only the origin's signature is vouched for; a notary's that came
        // with it is dropped rather than passed on unchecked.
        if let Some(CanonicalJsonValue::Object(signatures)) = document.get_mut("signatures") {
            signatures.retain(|signer, _| signer == server.as_str());
        }
        if sign_json(self.own.server_name(), self.own.current(), &mut document).is_err() {
            return Ok(Vec::new());
        }
        Ok(vec![document])
    }

    /// The keys of `server` held in memory, loaded from storage on a miss.
    async fn cached(&self, server: &ServerName) -> Result<Arc<[RemoteKey]>, StorageError> {
        if let Some(keys) = lock(&self.cache).get(server) {
            return Ok(keys.clone());
        }
        let keys: Arc<[RemoteKey]> = self.storage.remote_keys(server).await?.into();
        self.remember(server, keys.clone());
        Ok(keys)
    }

    fn remember(&self, server: &ServerName, keys: Arc<[RemoteKey]>) {
        let mut cache = lock(&self.cache);
        if cache.len() >= MAX_CACHED_SERVERS && !cache.contains_key(server) {
            // Storage holds everything; the cache refills with who is active.
            cache.clear();
        }
        cache.insert(server.to_owned(), keys);
    }

    /// Fetches and stores `server`'s keys, unless they were fetched (or
    /// tried) less than [`MIN_REFETCH_INTERVAL`] ago.
    async fn refresh(&self, server: &ServerName) -> Result<(), StorageError> {
        let gate = self.gate(server);
        let mut last_attempt = gate.lock().await;
        let now = (self.clock)();
        let interval = i64::try_from(MIN_REFETCH_INTERVAL.as_millis()).unwrap_or(i64::MAX);
        if last_attempt.is_some_and(|last| now.0.saturating_sub(last.0) < interval) {
            debug!(%server, "keys fetched moments ago; not fetching again");
            return Ok(());
        }
        *last_attempt = Some(now);
        let Some((document, verified)) = self.fetch(server, now).await else {
            return Ok(());
        };
        let document = RemoteKeyDocument {
            server_name: server.to_owned(),
            json: to_canonical_string(&document),
            valid_until: verified.valid_until,
            fetched: now,
        };
        self.storage
            .store_remote_keys(&document, &verified.keys)
            .await?;
        let keys: Arc<[RemoteKey]> = self.storage.remote_keys(server).await?.into();
        self.remember(server, keys);
        Ok(())
    }

    /// The origin's document, else the first notary's that verifies.
    async fn fetch(
        &self,
        server: &ServerName,
        now: Millis,
    ) -> Option<(CanonicalJsonObject, VerifiedKeys)> {
        match self.fetcher.server_keys(server).await {
            Ok(document) => match verify_document(&document, server, now) {
                Ok(verified) => return Some((document, verified)),
                Err(error) => warn!(%server, %error, "the server's key document does not verify"),
            },
            Err(error) => debug!(%server, %error, "cannot fetch the server's keys"),
        }
        for notary in &self.notaries {
            let documents = match self.fetcher.notary_keys(notary, server).await {
                Ok(documents) => documents,
                Err(error) => {
                    debug!(%server, %notary, %error, "cannot fetch keys from the notary");
                    continue;
                }
            };
            // The origin's own signature is what makes a document
            // trustworthy; the notary only relays it.
            let best = documents
                .into_iter()
                .filter_map(|document| {
                    let verified = verify_document(&document, server, now).ok()?;
                    Some((document, verified))
                })
                .max_by_key(|(_, verified)| verified.valid_until);
            if best.is_some() {
                return best;
            }
        }
        None
    }

    fn gate(&self, server: &ServerName) -> Arc<tokio::sync::Mutex<Option<Millis>>> {
        let mut fetches = lock(&self.fetches);
        if fetches.len() >= MAX_CACHED_SERVERS && !fetches.contains_key(server) {
            // Forget servers nobody is fetching now; their next fetch is
            // then not rate-limited, which only a flood of names can cause.
            fetches.retain(|_, gate| gate.try_lock().is_err());
        }
        fetches.entry(server.to_owned()).or_default().clone()
    }
}

/// Checks a key document claimed to be `server`'s: its name, its
/// self-signature, and the shape of its keys.
///
/// # Errors
/// [`KeyDocumentError`] naming what is wrong.
pub fn verify_document(
    document: &CanonicalJsonObject,
    server: &ServerName,
    now: Millis,
) -> Result<VerifiedKeys, KeyDocumentError> {
    match document.get("server_name") {
        Some(CanonicalJsonValue::String(name)) if name == server.as_str() => {}
        _ => {
            return Err(KeyDocumentError::Malformed(
                "server_name is not the server asked",
            ));
        }
    }
    verify_key_document(document)?;
    let Some(CanonicalJsonValue::Integer(valid_until)) = document.get("valid_until_ts") else {
        return Err(KeyDocumentError::Malformed("valid_until_ts"));
    };
    let valid_until = Millis(i64::from(*valid_until));
    let cap = Millis(
        now.0
            .saturating_add(i64::try_from(MAX_KEY_VALIDITY.as_millis()).unwrap_or(i64::MAX)),
    );
    let mut keys = Vec::new();
    for (field, is_expired) in [("verify_keys", false), ("old_verify_keys", true)] {
        let entries = match document.get(field) {
            Some(CanonicalJsonValue::Object(entries)) => entries,
            None if is_expired => continue,
            _ => return Err(KeyDocumentError::Malformed("verify_keys")),
        };
        for (key_id, entry) in entries {
            if !key_id.starts_with("ed25519:") {
                // Only ed25519 exists; other algorithms are skipped, not fatal.
                continue;
            }
            if key_id.len() > 255 || key_id.contains('\0') {
                return Err(KeyDocumentError::Malformed("key id"));
            }
            let CanonicalJsonValue::Object(entry) = entry else {
                return Err(KeyDocumentError::Malformed("key entry"));
            };
            let Some(CanonicalJsonValue::String(public_key)) = entry.get("key") else {
                return Err(KeyDocumentError::Malformed("key"));
            };
            let public_key =
                Base64::parse(public_key).map_err(|_| KeyDocumentError::Malformed("key"))?;
            let key_valid_until = if is_expired {
                let Some(CanonicalJsonValue::Integer(expired)) = entry.get("expired_ts") else {
                    return Err(KeyDocumentError::Malformed("expired_ts"));
                };
                Millis(i64::from(*expired))
            } else {
                valid_until.min(cap)
            };
            keys.push(RemoteKey {
                key_id: key_id.clone(),
                public_key,
                valid_until: key_valid_until,
                is_expired,
            });
        }
    }
    if keys.len() > MAX_KEYS_PER_DOCUMENT {
        return Err(KeyDocumentError::Malformed("too many keys"));
    }
    Ok(VerifiedKeys { keys, valid_until })
}

/// `key_id` among `keys` if it is valid at `at`.
fn valid_key(keys: &[RemoteKey], key_id: &str, at: Millis) -> Option<Base64> {
    keys.iter()
        .find(|key| key.key_id == key_id && at <= key.valid_until)
        .map(|key| key.public_key.clone())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing panics while holding these locks; a poisoned one still holds
    // a consistent map.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
