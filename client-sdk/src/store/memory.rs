//! [`MemoryStore`]: a [`Store`] in a map, for tests and throwaway clients.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard},
};

use super::{Changes, Store, StoreError, StoreFuture};

type Records = BTreeMap<String, BTreeMap<String, Vec<u8>>>;

/// A [`Store`] that keeps everything in memory. Clones share the same
/// records, so a test can build a second client on the "same disk".
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    records: Arc<Mutex<Records>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, Records>, StoreError> {
        // A panic while holding the lock can only come from a bug in this
        // file's short critical sections; report it rather than propagate.
        self.records
            .lock()
            .map_err(|_| StoreError::Backend("memory store lock poisoned".to_owned()))
    }
}

impl Store for MemoryStore {
    fn get<'a>(&'a self, namespace: &'a str, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        let value = self
            .lock()
            .map(|records| records.get(namespace).and_then(|ns| ns.get(key)).cloned());
        Box::pin(async move { value })
    }

    fn list<'a>(&'a self, namespace: &'a str) -> StoreFuture<'a, Vec<(String, Vec<u8>)>> {
        let listed = self.lock().map(|records| {
            records
                .get(namespace)
                .map(|ns| ns.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default()
        });
        Box::pin(async move { listed })
    }

    fn commit(&self, changes: Changes) -> StoreFuture<'_, ()> {
        let applied = self.lock().map(|mut records| {
            for (namespace, key, value) in changes.iter() {
                match value {
                    Some(value) => {
                        records
                            .entry(namespace.to_owned())
                            .or_default()
                            .insert(key.to_owned(), value.to_vec());
                    }
                    None => {
                        if let Some(ns) = records.get_mut(namespace) {
                            ns.remove(key);
                        }
                    }
                }
            }
        });
        Box::pin(async move { applied })
    }
}
