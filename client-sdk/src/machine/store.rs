//! Persistence for the machine: a key-value store of opaque blobs.
//!
//! The machine keeps its whole state in memory and records every change in
//! a [`Changes`] set. The caller takes that set after each input
//! ([`crate::machine::OlmMachine::take_changes`]) and hands it to a
//! [`CryptoStore`], which must apply it in one transaction: either every
//! record of the set lands or none does. That is what keeps, say, a Megolm
//! ratchet that advanced and the event it encrypted from being saved apart.
//!
//! Records are keyed by strings with a kind prefix (`account`, `devices/…`,
//! `olm/…`, `outbound/…`, `inbound/…`, `room/…`, `utd/…`, `bundle/…`).
//! Values are JSON bytes. Secret material inside them (the Olm account, Olm
//! and Megolm sessions) is already an encrypted pickle under the machine's
//! [`myelin_crypto::PickleKey`]; the rest (public device keys, room
//! membership, undecrypted ciphertext, and the file keys of room key
//! bundles waiting for a join, which open only media the server may have
//! dropped) is data a store must still encrypt at rest.
//!
//! A machine loads everything at start ([`CryptoStore::load_all`]). That is
//! simple and fast for thousands of sessions; a store with millions of
//! records would want lazy loading, which this trait does not offer yet.

use std::{collections::BTreeMap, convert::Infallible};

/// One batch of record writes and deletions, to be applied atomically.
///
/// `Debug` shows each record's key and size, never its value: some hold
/// key material in the clear (a room key bundle's file key).
#[derive(Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Key -> new value (`Some`) or deletion (`None`). A later write to the
    /// same key in one batch replaces the earlier one.
    pub records: BTreeMap<String, Option<Vec<u8>>>,
}

impl Changes {
    /// Whether the batch holds nothing.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub(crate) fn put(&mut self, key: String, value: Vec<u8>) {
        self.records.insert(key, Some(value));
    }

    pub(crate) fn delete(&mut self, key: String) {
        self.records.insert(key, None);
    }
}

impl std::fmt::Debug for Changes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sizes: BTreeMap<&str, Option<String>> = self
            .records
            .iter()
            .map(|(key, value)| {
                let size = value.as_ref().map(|v| format!("{} bytes", v.len()));
                (key.as_str(), size)
            })
            .collect();
        f.debug_struct("Changes").field("records", &sizes).finish()
    }
}

/// Where a machine's records live.
///
/// Implementations: [`MemoryStore`] here; the SDK's SQLite store.
pub trait CryptoStore {
    /// The store's error.
    type Error: std::error::Error;

    /// Every record, to build a machine at start.
    ///
    /// # Errors
    ///
    /// The backend's failure.
    fn load_all(&self) -> Result<BTreeMap<String, Vec<u8>>, Self::Error>;

    /// Applies `changes` in one transaction.
    ///
    /// # Errors
    ///
    /// The backend's failure; then nothing of `changes` was applied.
    fn save(&mut self, changes: Changes) -> Result<(), Self::Error>;
}

/// A store in a `BTreeMap`, for tests and for clients that keep nothing.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    records: BTreeMap<String, Vec<u8>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many records the store holds.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the store holds no record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

impl CryptoStore for MemoryStore {
    type Error = Infallible;

    fn load_all(&self) -> Result<BTreeMap<String, Vec<u8>>, Infallible> {
        Ok(self.records.clone())
    }

    fn save(&mut self, changes: Changes) -> Result<(), Infallible> {
        for (key, value) in changes.records {
            match value {
                Some(value) => self.records.insert(key, value),
                None => self.records.remove(&key),
            };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Changes;

    #[test]
    fn debug_shows_record_keys_and_sizes_never_values() {
        let mut changes = Changes::default();
        changes.put("bundle/!room/@alice".to_owned(), b"file key".to_vec());
        changes.delete("utd/$event".to_owned());
        assert_eq!(
            format!("{changes:?}"),
            r#"Changes { records: {"bundle/!room/@alice": Some("8 bytes"), "utd/$event": None} }"#
        );
    }
}
