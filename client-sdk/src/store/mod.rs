//! Persistence: a small namespaced key-value store with atomic batches.
//!
//! The [`Store`] trait is deliberately tiny so that every layer can share
//! it: the client keeps its session, sync token, room list and unsent
//! events here, and the crypto state machine keeps its pickled (and
//! [sealed](SecretBox)) accounts and sessions in namespaces of its own.
//! Everything a step of the client decides goes into one [`Changes`] batch
//! that [`Store::commit`] applies in one transaction: a sync's next token
//! is never saved without what that sync delivered, nor the other way round.
//!
//! Two implementations: [`SqliteStore`] (sqlx, one file) and
//! [`MemoryStore`] (tests, throwaway clients). Secrets are sealed under a
//! key derived from a caller-supplied passphrase by [`SecretBox`] before
//! they reach either.

mod memory;
mod secrets;
mod sqlite;

use std::{collections::BTreeMap, future::Future, pin::Pin};

pub use self::{memory::MemoryStore, secrets::SecretBox, sqlite::SqliteStore};

/// A boxed future returned by [`Store`] methods (the trait is used as `dyn`).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A namespaced key-value store whose writes are atomic batches.
///
/// Namespaces separate the users of one store (`"session"`, `"rooms"`, the
/// crypto machine's own); keys are unique within a namespace. Values are
/// opaque bytes. Implementations must apply a [`Changes`] batch entirely or
/// not at all, and must make it durable before `commit` returns.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// The value under `namespace`/`key`, if any.
    fn get<'a>(&'a self, namespace: &'a str, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>>;

    /// Every key and value in `namespace`, ordered by key.
    fn list<'a>(&'a self, namespace: &'a str) -> StoreFuture<'a, Vec<(String, Vec<u8>)>>;

    /// Applies every put and delete in `changes` in one transaction.
    fn commit(&self, changes: Changes) -> StoreFuture<'_, ()>;
}

/// A batch of writes for [`Store::commit`], applied together or not at all.
/// A later write to the same record replaces an earlier one in the batch.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    records: BTreeMap<(String, String), Option<Vec<u8>>>,
}

impl Changes {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `namespace`/`key` to `value`.
    pub fn put(&mut self, namespace: &str, key: &str, value: impl Into<Vec<u8>>) {
        self.records
            .insert((namespace.to_owned(), key.to_owned()), Some(value.into()));
    }

    /// Sets `namespace`/`key` to the JSON form of `value`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Encoding`] if `value` cannot be serialised.
    pub fn put_json<T: serde::Serialize>(
        &mut self,
        namespace: &str,
        key: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        let bytes =
            serde_json::to_vec(value).map_err(|error| StoreError::Encoding(error.to_string()))?;
        self.put(namespace, key, bytes);
        Ok(())
    }

    /// Removes `namespace`/`key` (nothing happens if it does not exist).
    pub fn delete(&mut self, namespace: &str, key: &str) {
        self.records
            .insert((namespace.to_owned(), key.to_owned()), None);
    }

    /// Adds every write of `other`, which win over this batch's.
    pub fn extend(&mut self, other: Changes) {
        self.records.extend(other.records);
    }

    /// Whether the batch writes nothing.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The writes, in `(namespace, key)` order; `None` is a delete.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, Option<&[u8]>)> {
        self.records
            .iter()
            .map(|((namespace, key), value)| (namespace.as_str(), key.as_str(), value.as_deref()))
    }
}

/// Reads a JSON record.
///
/// # Errors
///
/// [`StoreError::Encoding`] if the stored bytes are not a `T`, or the store's own error.
pub async fn get_json<T: serde::de::DeserializeOwned>(
    store: &dyn Store,
    namespace: &str,
    key: &str,
) -> Result<Option<T>, StoreError> {
    match store.get(namespace, key).await? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|error| StoreError::Encoding(format!("{namespace}/{key}: {error}"))),
    }
}

/// What can go wrong in a store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database failed (I/O, corruption, locked).
    #[error("database: {0}")]
    Backend(String),
    /// A stored record does not decode.
    #[error("stored record does not decode: {0}")]
    Encoding(String),
    /// The passphrase does not open this store's secrets. Nothing was
    /// changed.
    #[error("wrong passphrase for this store")]
    WrongPassphrase,
    /// A sealed secret failed authentication or is malformed: the store
    /// was altered outside the SDK.
    #[error("a sealed secret in the store is damaged or was tampered with: {0}")]
    Tampered(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        Self::Backend(error.to_string())
    }
}

#[cfg(test)]
mod conformance;
