//! [`SecretBox`]: seals secret records under a key derived from the
//! caller's passphrase (myelin-crypto's [`at_rest`](myelin_crypto::at_rest)).

use myelin_crypto::{AtRestError, AtRestKey, KdfParams, Verifier};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{Changes, Store, StoreError, get_json};

/// Where a store keeps its key-derivation parameters and verifier.
const META_NAMESPACE: &str = "myelin.meta";
const KDF_KEY: &str = "at_rest_kdf";

/// The key-derivation record, stored in the clear.
#[derive(Serialize, Deserialize)]
struct KdfRecord {
    salt: [u8; 16],
    memory_kib: u32,
    iterations: u32,
    parallelism: u32,
    verifier: Vec<u8>,
}

/// Seals and opens secret records (access token, pickled crypto state) for
/// one store. Each sealed value is bound to its namespace and key, so a
/// value copied to another record does not open.
#[derive(Debug)]
pub struct SecretBox {
    key: AtRestKey,
}

impl SecretBox {
    /// Unlocks the store's secrets with `passphrase`, or on first use
    /// derives a fresh key and records its parameters and verifier.
    ///
    /// # Errors
    ///
    /// [`StoreError::WrongPassphrase`] if the passphrase does not match the
    /// one the store was created with (nothing is written);
    /// [`StoreError::Encoding`] if the stored parameters are damaged.
    pub async fn unlock(store: &dyn Store, passphrase: &[u8]) -> Result<Self, StoreError> {
        match get_json::<KdfRecord>(store, META_NAMESPACE, KDF_KEY).await? {
            Some(record) => {
                let params = KdfParams {
                    salt: record.salt,
                    memory_kib: record.memory_kib,
                    iterations: record.iterations,
                    parallelism: record.parallelism,
                };
                let verifier = Verifier::from_slice(&record.verifier).map_err(encoding)?;
                let key =
                    AtRestKey::unlock(passphrase, &params, &verifier).map_err(
                        |error| match error {
                            AtRestError::WrongPassphrase => StoreError::WrongPassphrase,
                            other => encoding(other),
                        },
                    )?;
                Ok(Self { key })
            }
            None => {
                let params = KdfParams::generate().map_err(encoding)?;
                let key = AtRestKey::derive(passphrase, &params).map_err(encoding)?;
                let record = KdfRecord {
                    salt: params.salt,
                    memory_kib: params.memory_kib,
                    iterations: params.iterations,
                    parallelism: params.parallelism,
                    verifier: key.verifier().0.to_vec(),
                };
                let mut changes = Changes::new();
                changes.put_json(META_NAMESPACE, KDF_KEY, &record)?;
                store.commit(changes).await?;
                Ok(Self { key })
            }
        }
    }

    /// Adds `namespace`/`key` = sealed `plaintext` to `changes`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] if no random nonce could be drawn.
    pub fn put(
        &self,
        changes: &mut Changes,
        namespace: &str,
        key: &str,
        plaintext: &[u8],
    ) -> Result<(), StoreError> {
        let sealed = self
            .key
            .seal(context(namespace, key).as_bytes(), plaintext)
            .map_err(|error| StoreError::Backend(error.to_string()))?;
        changes.put(namespace, key, sealed);
        Ok(())
    }

    /// Reads and opens the secret at `namespace`/`key`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Tampered`] if the record does not authenticate.
    pub async fn get(
        &self,
        store: &dyn Store,
        namespace: &str,
        key: &str,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        let Some(sealed) = store.get(namespace, key).await? else {
            return Ok(None);
        };
        self.open(namespace, key, &sealed).map(Some)
    }

    /// Opens `sealed`, read from `namespace`/`key` (by [`Store::list`]).
    ///
    /// # Errors
    ///
    /// [`StoreError::Tampered`] if the value does not authenticate for
    /// that record.
    pub fn open(
        &self,
        namespace: &str,
        key: &str,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        self.key
            .open(context(namespace, key).as_bytes(), sealed)
            .map_err(|error| StoreError::Tampered(format!("{namespace}/{key}: {error}")))
    }
}

/// The associated data binding a sealed value to its record. NUL cannot
/// appear in the namespaces the SDK uses, so the pair is unambiguous.
fn context(namespace: &str, key: &str) -> String {
    format!("{namespace}\0{key}")
}

fn encoding(error: AtRestError) -> StoreError {
    StoreError::Encoding(format!("{META_NAMESPACE}/{KDF_KEY}: {error}"))
}
