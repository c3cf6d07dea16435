//! One suite every [`Store`] must pass, run on each implementation.

use super::{Changes, MemoryStore, SecretBox, SqliteStore, Store, StoreError};

async fn puts_gets_lists_and_deletes(store: &dyn Store) {
    assert_eq!(store.get("ns", "a").await.unwrap(), None);
    let mut changes = Changes::new();
    changes.put("ns", "b", b"2".to_vec());
    changes.put("ns", "a", b"1".to_vec());
    changes.put("other", "a", b"x".to_vec());
    store.commit(changes).await.unwrap();
    assert_eq!(store.get("ns", "a").await.unwrap(), Some(b"1".to_vec()));
    assert_eq!(
        store.list("ns").await.unwrap(),
        vec![
            ("a".to_owned(), b"1".to_vec()),
            ("b".to_owned(), b"2".to_vec())
        ]
    );

    let mut changes = Changes::new();
    changes.put("ns", "a", b"3".to_vec());
    changes.delete("ns", "b");
    changes.delete("ns", "never-there");
    store.commit(changes).await.unwrap();
    assert_eq!(
        store.list("ns").await.unwrap(),
        vec![("a".to_owned(), b"3".to_vec())]
    );
    assert_eq!(store.get("other", "a").await.unwrap(), Some(b"x".to_vec()));
}

async fn later_writes_in_a_batch_win(store: &dyn Store) {
    let mut changes = Changes::new();
    changes.put("ns", "k", b"first".to_vec());
    changes.delete("ns", "k");
    changes.put("ns", "k", b"last".to_vec());
    store.commit(changes).await.unwrap();
    assert_eq!(store.get("ns", "k").await.unwrap(), Some(b"last".to_vec()));
}

async fn secrets_are_sealed_and_need_the_passphrase(store: &dyn Store) {
    let secrets = SecretBox::unlock(store, b"right").await.unwrap();
    let mut changes = Changes::new();
    secrets
        .put(&mut changes, "session", "access_token", b"syt_abc")
        .unwrap();
    store.commit(changes).await.unwrap();

    let raw = store.get("session", "access_token").await.unwrap().unwrap();
    assert!(
        !raw.windows(7).any(|w| w == b"syt_abc"),
        "stored in the clear"
    );
    let reopened = SecretBox::unlock(store, b"right").await.unwrap();
    let token = reopened
        .get(store, "session", "access_token")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(token.as_slice(), b"syt_abc");

    let before = store.list("myelin.meta").await.unwrap();
    assert!(matches!(
        SecretBox::unlock(store, b"wrong").await,
        Err(StoreError::WrongPassphrase)
    ));
    assert_eq!(
        store.list("myelin.meta").await.unwrap(),
        before,
        "wrong passphrase wrote"
    );

    // A sealed value copied under another name does not open.
    let mut changes = Changes::new();
    changes.put("session", "copied", raw);
    store.commit(changes).await.unwrap();
    assert!(matches!(
        reopened.get(store, "session", "copied").await,
        Err(StoreError::Tampered(_))
    ));
}

async fn run_all(store: &dyn Store) {
    puts_gets_lists_and_deletes(store).await;
    later_writes_in_a_batch_win(store).await;
    secrets_are_sealed_and_need_the_passphrase(store).await;
}

#[tokio::test]
async fn memory_store() {
    run_all(&MemoryStore::new()).await;
}

#[tokio::test]
async fn sqlite_store_in_memory() {
    run_all(&SqliteStore::in_memory().await.unwrap()).await;
}

#[tokio::test]
async fn sqlite_store_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    {
        let store = SqliteStore::open(&path).await.unwrap();
        run_all(&store).await;
    }
    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(store.get("ns", "a").await.unwrap(), Some(b"3".to_vec()));
    let secrets = SecretBox::unlock(&store, b"right").await.unwrap();
    let token = secrets
        .get(&store, "session", "access_token")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(token.as_slice(), b"syt_abc");
}
