//! The server's ed25519 signing key and the key document it publishes.
//!
//! On first start the server generates a key with id `ed25519:<random>` and
//! persists it; later starts load it. Every PDU and federation request the
//! server sends is signed with [`ServerKeys::current`]. Keys that have been
//! retired stay in storage with their expiry and are published under
//! `old_verify_keys`, so events they signed remain verifiable ([spec]).
//!
//! Rotation (expire the current key, insert a new one) is not exposed yet:
//! the storage supports it, nothing calls it.
//!
//! [spec]: https://spec.matrix.org/v1.16/server-server-api/#retrieving-server-keys

use std::{collections::BTreeMap, fmt, sync::Arc, time::Duration};

use myelin_crypto::{
    PublicKeyMap, PublicKeySet, SignatureError, SigningKey, sign_json, verify_json,
};
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, Int, OwnedServerName, OwnedServerSigningKeyId,
    ServerName, serde::Base64,
};
use tracing::info;

use super::ServiceError;
use crate::storage::{Millis, Storage, StorageError};

/// How long remote servers may cache the key document: `valid_until_ts` is
/// this far after the request. The spec caps what receivers honour at seven
/// days; a shorter period would only add key fetches while rotation is not
/// automatic, and a key compromise needs an operator anyway.
pub const KEY_VALIDITY: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// Length of the random part of a generated key id (`ed25519:<version>`).
const KEY_VERSION_LENGTH: usize = 8;

/// The server's signing keys: the current one, which signs, and the retired
/// ones, which are only published.
///
/// Its `Debug` shows key ids only.
pub struct ServerKeys {
    server_name: OwnedServerName,
    current: SigningKey,
    old: Vec<OldVerifyKey>,
}

/// A retired key as published in `old_verify_keys`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OldVerifyKey {
    key_id: OwnedServerSigningKeyId,
    public_key: Base64,
    expired: Millis,
}

impl ServerKeys {
    /// Loads the server's signing keys, generating and persisting the
    /// signing key on first start.
    ///
    /// Servers sharing one database that start together agree on one key:
    /// storage refuses a second current key, and the loser reloads.
    ///
    /// # Errors
    /// `Storage` when the keys cannot be read or written (including a stored
    /// seed that does not load); `Internal` when key generation fails.
    pub async fn load_or_generate(
        storage: Arc<dyn Storage>,
        server_name: OwnedServerName,
    ) -> Result<Self, ServiceError> {
        if let Some(keys) = Self::load(storage.as_ref(), &server_name).await? {
            return Ok(keys);
        }
        let key = generate_signing_key()?;
        match storage.insert_signing_key(&key, Millis::now()).await {
            Ok(()) => {
                info!(key_id = %key.key_id(), "generated the server signing key");
            }
            // Another server on this database generated one first.
            Err(StorageError::Conflict(_)) => {}
            Err(error) => return Err(error.into()),
        }
        Self::load(storage.as_ref(), &server_name)
            .await?
            .ok_or_else(|| ServiceError::Internal("the stored signing key vanished".to_owned()))
    }

    /// The key that signs what this server sends.
    pub fn current(&self) -> &SigningKey {
        &self.current
    }

    /// The name the keys belong to.
    pub fn server_name(&self) -> &ServerName {
        &self.server_name
    }

    /// The signed answer to `GET /_matrix/key/v2/server` at time `now`:
    /// `server_name`, `verify_keys` (the current key), `old_verify_keys`
    /// (retired keys with their `expired_ts`) and `valid_until_ts`
    /// ([`KEY_VALIDITY`] after `now`), signed with the current key.
    pub fn key_document(&self, now: Millis) -> CanonicalJsonObject {
        let validity = i64::try_from(KEY_VALIDITY.as_millis()).unwrap_or(i64::MAX);
        let verify_keys = [(
            self.current.key_id().to_string(),
            key_object(&self.current.public_key(), None),
        )];
        let old_verify_keys = self.old.iter().map(|old| {
            (
                old.key_id.to_string(),
                key_object(&old.public_key, Some(old.expired)),
            )
        });
        let mut document = CanonicalJsonObject::from([
            (
                "server_name".to_owned(),
                CanonicalJsonValue::String(self.server_name.to_string()),
            ),
            (
                "verify_keys".to_owned(),
                CanonicalJsonValue::Object(verify_keys.into_iter().collect()),
            ),
            (
                "old_verify_keys".to_owned(),
                CanonicalJsonValue::Object(old_verify_keys.collect()),
            ),
            (
                "valid_until_ts".to_owned(),
                CanonicalJsonValue::Integer(Int::new_saturating(now.0.saturating_add(validity))),
            ),
        ]);
        sign_json(&self.server_name, &self.current, &mut document)
            .expect("a document without `signatures` always signs");
        document
    }

    /// Reads the stored keys; `None` when there is no current key yet.
    async fn load(
        storage: &dyn Storage,
        server_name: &ServerName,
    ) -> Result<Option<Self>, ServiceError> {
        let mut current = None;
        let mut old = Vec::new();
        for stored in storage.signing_keys().await? {
            match (stored.expired, stored.signing_key) {
                (None, Some(key)) if current.is_none() => current = Some(key),
                (None, _) => {
                    return Err(ServiceError::Internal(format!(
                        "signing key {} is current but unusable or not the only current key",
                        stored.key_id
                    )));
                }
                (Some(expired), _) => old.push(OldVerifyKey {
                    key_id: stored.key_id,
                    public_key: stored.public_key,
                    expired,
                }),
            }
        }
        Ok(current.map(|current| Self {
            server_name: server_name.to_owned(),
            current,
            old,
        }))
    }
}

impl fmt::Debug for ServerKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerKeys")
            .field("server_name", &self.server_name)
            .field("current", &self.current.key_id().as_str())
            .field(
                "old",
                &self
                    .old
                    .iter()
                    .map(|old| old.key_id.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// Generates a signing key with a fresh random id `ed25519:<8 alphanumerics>`.
///
/// # Errors
/// `Internal` if the key cannot be created (the crypto library changed the
/// layout of what it generates).
pub fn generate_signing_key() -> Result<SigningKey, ServiceError> {
    use rand::{Rng, distributions::Alphanumeric};
    let version: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(KEY_VERSION_LENGTH)
        .map(char::from)
        .collect();
    SigningKey::generate(&version).map_err(|e| ServiceError::Internal(e.to_string()))
}

/// Why a server key document failed [`verify_key_document`].
#[derive(Debug, thiserror::Error)]
pub enum KeyDocumentError {
    /// A field is missing or has the wrong shape.
    #[error("malformed key document: {0}")]
    Malformed(&'static str),
    /// The signatures do not verify against the published keys.
    #[error(transparent)]
    Signature(#[from] SignatureError),
}

/// Checks that a key document (this server's or a remote one's) is signed by
/// its `server_name` with a key it publishes in `verify_keys`, as the spec
/// requires before any of its keys are trusted.
///
/// # Errors
/// [`KeyDocumentError::Malformed`] for a document without a `server_name`
/// string or a `verify_keys` object of `{ "key": <base64> }` entries;
/// [`KeyDocumentError::Signature`] when the server's signature is missing or
/// does not verify, or another entity signed it too.
pub fn verify_key_document(document: &CanonicalJsonObject) -> Result<(), KeyDocumentError> {
    let Some(CanonicalJsonValue::String(server_name)) = document.get("server_name") else {
        return Err(KeyDocumentError::Malformed("server_name"));
    };
    let Some(CanonicalJsonValue::Object(verify_keys)) = document.get("verify_keys") else {
        return Err(KeyDocumentError::Malformed("verify_keys"));
    };
    let mut keys = PublicKeySet::new();
    for (key_id, entry) in verify_keys {
        let CanonicalJsonValue::Object(entry) = entry else {
            return Err(KeyDocumentError::Malformed("verify_keys entry"));
        };
        let Some(CanonicalJsonValue::String(key)) = entry.get("key") else {
            return Err(KeyDocumentError::Malformed("verify_keys key"));
        };
        let key = Base64::parse(key).map_err(|_| KeyDocumentError::Malformed("verify_keys key"))?;
        keys.insert(key_id.clone(), key);
    }
    // `verify_json` checks the entities that did sign; an empty `signatures`
    // would pass it, so require the server's own signature explicitly.
    let signed_by_server = matches!(
        document.get("signatures"),
        Some(CanonicalJsonValue::Object(signatures)) if signatures.contains_key(server_name)
    );
    if !signed_by_server {
        return Err(SignatureError::MissingSignature {
            entity: server_name.clone(),
        }
        .into());
    }
    let public_keys = PublicKeyMap::from([(server_name.clone(), keys)]);
    verify_json(&public_keys, document)?;
    Ok(())
}

/// `{ "key": <base64> }`, with `expired_ts` for a retired key.
fn key_object(public_key: &Base64, expired: Option<Millis>) -> CanonicalJsonValue {
    let mut object = BTreeMap::from([(
        "key".to_owned(),
        CanonicalJsonValue::String(public_key.encode()),
    )]);
    if let Some(expired) = expired {
        object.insert(
            "expired_ts".to_owned(),
            CanonicalJsonValue::Integer(Int::new_saturating(expired.0)),
        );
    }
    CanonicalJsonValue::Object(object)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use myelin_crypto::{PublicKeyMap, PublicKeySet, verify_json};
    use ruma::{CanonicalJsonValue, server_name};

    use super::*;
    use crate::storage::{SqliteStorage, Storage};

    async fn sqlite() -> (Arc<dyn Storage>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let storage = SqliteStorage::open(&dir.path().join("myelin.db"))
            .await
            .unwrap();
        (Arc::new(storage), dir)
    }

    async fn load(storage: &Arc<dyn Storage>) -> ServerKeys {
        ServerKeys::load_or_generate(storage.clone(), server_name!("example.org").to_owned())
            .await
            .unwrap()
    }

    fn object(value: &CanonicalJsonValue) -> &CanonicalJsonObject {
        match value {
            CanonicalJsonValue::Object(object) => object,
            other => panic!("not an object: {other:?}"),
        }
    }

    #[tokio::test]
    async fn first_start_generates_and_later_starts_reload() {
        let (storage, _dir) = sqlite().await;
        let first = load(&storage).await;
        let key_id = first.current().key_id().to_owned();
        let version = key_id.key_name().as_str();
        assert!(key_id.as_str().starts_with("ed25519:"), "{key_id}");
        assert!(version.len() >= 6, "{key_id}");
        assert!(
            version.chars().all(|c| c.is_ascii_alphanumeric()),
            "{key_id}"
        );

        let second = load(&storage).await;
        assert_eq!(second.current().key_id(), key_id);
        assert_eq!(second.current().public_key(), first.current().public_key());
        assert_eq!(storage.signing_keys().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn servers_starting_together_agree_on_one_key() {
        let (storage, _dir) = sqlite().await;
        let (a, b) = tokio::join!(load(&storage), load(&storage));
        assert_eq!(a.current().key_id(), b.current().key_id());
        assert_eq!(a.current().public_key(), b.current().public_key());
        assert_eq!(storage.signing_keys().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn document_is_signed_by_the_published_key() {
        let (storage, _dir) = sqlite().await;
        let keys = load(&storage).await;
        let document = keys.key_document(Millis(1_000));
        let key_id = keys.current().key_id().as_str();

        assert_eq!(
            document["server_name"],
            CanonicalJsonValue::String("example.org".to_owned())
        );
        let week = i64::try_from(KEY_VALIDITY.as_millis()).unwrap();
        assert_eq!(week, 7 * 24 * 3600 * 1000);
        assert_eq!(
            document["valid_until_ts"],
            CanonicalJsonValue::Integer(Int::new(1_000 + week).unwrap())
        );
        assert_eq!(object(&document["old_verify_keys"]).len(), 0);
        let verify_keys = object(&document["verify_keys"]);
        assert_eq!(verify_keys.len(), 1);
        let CanonicalJsonValue::String(published) = &object(&verify_keys[key_id])["key"] else {
            panic!("no key string in {verify_keys:?}");
        };
        assert_eq!(*published, keys.current().public_key().encode());

        // Checked directly with myelin_crypto against the published key.
        let public_keys = PublicKeyMap::from([(
            "example.org".to_owned(),
            PublicKeySet::from([(key_id.to_owned(), Base64::parse(published).unwrap())]),
        )]);
        verify_json(&public_keys, &document).unwrap();
        verify_key_document(&document).unwrap();

        // Any change to the signed content breaks the signature.
        let mut tampered = document.clone();
        tampered.insert(
            "valid_until_ts".to_owned(),
            CanonicalJsonValue::Integer(Int::new(i64::from(u32::MAX)).unwrap()),
        );
        assert!(verify_json(&public_keys, &tampered).is_err());
        assert!(matches!(
            verify_key_document(&tampered),
            Err(KeyDocumentError::Signature(SignatureError::Invalid(_)))
        ));
    }

    #[tokio::test]
    async fn verify_key_document_refuses_unsigned_and_foreign_keys() {
        let (storage, _dir) = sqlite().await;
        let keys = load(&storage).await;
        let mut unsigned = keys.key_document(Millis(1_000));
        unsigned.insert(
            "signatures".to_owned(),
            CanonicalJsonValue::Object(CanonicalJsonObject::new()),
        );
        assert!(matches!(
            verify_key_document(&unsigned),
            Err(KeyDocumentError::Signature(
                SignatureError::MissingSignature { .. }
            ))
        ));

        // A document published under another server's name, or with another
        // key substituted, does not verify.
        let mut renamed = keys.key_document(Millis(1_000));
        renamed.insert(
            "server_name".to_owned(),
            CanonicalJsonValue::String("evil.example".to_owned()),
        );
        assert!(verify_key_document(&renamed).is_err());

        let other = generate_signing_key().unwrap();
        let mut swapped = keys.key_document(Millis(1_000));
        swapped.insert(
            "verify_keys".to_owned(),
            CanonicalJsonValue::Object(CanonicalJsonObject::from([(
                keys.current().key_id().to_string(),
                key_object(&other.public_key(), None),
            )])),
        );
        assert!(matches!(
            verify_key_document(&swapped),
            Err(KeyDocumentError::Signature(SignatureError::Invalid(_)))
        ));
        assert!(matches!(
            verify_key_document(&CanonicalJsonObject::new()),
            Err(KeyDocumentError::Malformed("server_name"))
        ));
    }

    #[tokio::test]
    async fn expired_keys_are_published_as_old_verify_keys() {
        let (storage, _dir) = sqlite().await;
        let first = load(&storage).await;
        let old_id = first.current().key_id().to_owned();
        let old_public = first.current().public_key();
        storage
            .expire_signing_key(&old_id, Millis(5_000))
            .await
            .unwrap();

        let second = load(&storage).await;
        assert_ne!(second.current().key_id(), old_id);
        let document = second.key_document(Millis(10_000));
        let old_verify_keys = object(&document["old_verify_keys"]);
        assert_eq!(old_verify_keys.len(), 1);
        let old = object(&old_verify_keys[old_id.as_str()]);
        assert_eq!(old["key"], CanonicalJsonValue::String(old_public.encode()));
        assert_eq!(
            old["expired_ts"],
            CanonicalJsonValue::Integer(Int::new(5_000).unwrap())
        );
        let verify_keys = object(&document["verify_keys"]);
        assert_eq!(
            verify_keys.keys().collect::<Vec<_>>(),
            [second.current().key_id().as_str()]
        );
        verify_key_document(&document).unwrap();
    }

    #[tokio::test]
    async fn debug_shows_no_seed() {
        let (storage, _dir) = sqlite().await;
        let keys = load(&storage).await;
        let seed = keys.current().to_seed_base64();
        let printed = format!("{keys:?}");
        assert!(
            printed.contains(keys.current().key_id().as_str()),
            "{printed}"
        );
        assert!(!printed.contains(seed.as_str()), "{printed}");
        for stored in storage.signing_keys().await.unwrap() {
            let printed = format!("{stored:?}");
            assert!(printed.contains("has_seed: true"), "{printed}");
            assert!(!printed.contains(seed.as_str()), "{printed}");
        }
    }
}
