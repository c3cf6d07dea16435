//! Restarting an SDK client from its SQLite store: the session comes back
//! without a login, the sync resumes where it was saved, and an
//! application that records what it handled in the sync's `Changes` sees
//! every event exactly once, even when the process dies mid-update.

use std::{
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use myelin_sdk::{
    Changes, Client, Error, LoopControl, SqliteStore, Store, StoreError, SyncHandler, SyncUpdate,
};
use myelin_tests::{Backend, TestServer, backend_tests};
use tokio::sync::oneshot;

use crate::sdk_support::{
    PASSPHRASE, client_on, plain_room, quick_sync, registered, registered_on, sync_until,
};

backend_tests!(
    sync_stream_saves_only_what_it_returned,
    restart_resumes_sync_without_loss_or_duplicates,
    passphrase_guards_the_saved_session
);

/// The application's own namespace in the store.
const APP: &str = "app";

/// An application that records every message body it handles, numbered,
/// in the sync's `Changes`. It breaks the loop when it sees `stop_at`, and
/// "crashes" (signals, then never returns, so the update is never saved)
/// when it sees `crash_at`.
struct Recorder {
    next: usize,
    stop_at: &'static str,
    crash_at: Option<(&'static str, oneshot::Sender<()>)>,
    /// Whether the first update it handled was an initial sync.
    first_was_initial: Arc<Mutex<Option<bool>>>,
}

impl Recorder {
    async fn resume(store: &dyn Store, stop_at: &'static str) -> Self {
        Self {
            next: store.list(APP).await.unwrap().len(),
            stop_at,
            crash_at: None,
            first_was_initial: Arc::default(),
        }
    }
}

impl SyncHandler for Recorder {
    fn handle(
        &mut self,
        update: &SyncUpdate,
        changes: &mut Changes,
    ) -> impl Future<Output = LoopControl> + Send {
        let mut control = LoopControl::Continue;
        let mut crash = None;
        self.first_was_initial
            .lock()
            .unwrap()
            .get_or_insert(update.is_initial);
        for (_, event) in update.timeline_events() {
            let Some(body) = event.body() else { continue };
            changes.put(APP, &format!("{:06}", self.next), body.as_bytes().to_vec());
            self.next += 1;
            if body == self.stop_at {
                control = LoopControl::Break;
            }
            if self.crash_at.as_ref().is_some_and(|(at, _)| *at == body) {
                crash = self.crash_at.take().map(|(_, signal)| signal);
            }
        }
        async move {
            if let Some(signal) = crash {
                signal.send(()).ok();
                std::future::pending::<()>().await;
            }
            control
        }
    }
}

async fn recorded(store: &dyn Store) -> Vec<String> {
    store
        .list(APP)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, body)| String::from_utf8(body).unwrap())
        .collect()
}

async fn send_all(client: &Client, room_id: &myelin_sdk::ruma::RoomId, bodies: &[&str]) {
    for body in bodies {
        client.room(room_id).send_text(body).await.unwrap();
    }
}

async fn restart_resumes_sync_without_loss_or_duplicates(backend: Backend) {
    let server = TestServer::start(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bob.db");
    let alice = registered(&server.base_url, "alice").await;
    let bob_store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.unwrap());
    let bob = registered_on(&server.base_url, "bob", bob_store.clone()).await;
    let bob_id = bob.user_id().unwrap();
    let room = plain_room(&alice, vec![bob_id.clone()]).await;
    let room_id = room.room_id().to_owned();
    bob.join_room(room_id.as_str()).await.unwrap();

    // Run 1: bob handles m1..m3 and stops cleanly.
    send_all(&alice, &room_id, &["m1", "m2", "m3"]).await;
    let recorder = Recorder::resume(bob_store.as_ref(), "m3").await;
    bob.sync(quick_sync(), recorder).await.unwrap();
    assert_eq!(recorded(bob_store.as_ref()).await, ["m1", "m2", "m3"]);
    let token_after_run_1 = bob.sync_token().await.unwrap().unwrap();

    // Run 2: m4, m5 arrive; bob "crashes" while handling them, before the
    // update is saved.
    send_all(&alice, &room_id, &["m4", "m5"]).await;
    let (crashed, on_crash) = oneshot::channel();
    let mut recorder = Recorder::resume(bob_store.as_ref(), "never").await;
    recorder.crash_at = Some(("m5", crashed));
    tokio::select! {
        ended = bob.sync(quick_sync(), recorder) => panic!("the loop ended instead of crashing: {ended:?}"),
        signal = on_crash => signal.unwrap(),
    }
    drop(bob);
    assert_eq!(
        recorded(bob_store.as_ref()).await,
        ["m1", "m2", "m3"],
        "the crashed update was saved"
    );
    assert_eq!(bob_store.list("sync").await.unwrap().len(), 1);
    drop(bob_store);

    // Run 3: a new process opens the same file: no login, the same sync
    // position, m4 and m5 delivered again (their first delivery was never
    // saved), then m6; nothing twice.
    send_all(&alice, &room_id, &["m6"]).await;
    let bob_store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.unwrap());
    let bob = client_on(&server.base_url, bob_store.clone()).await;
    assert_eq!(bob.session().unwrap().user_id, bob_id);
    assert_eq!(bob.whoami().await.unwrap().user_id, bob_id);
    assert_eq!(bob.sync_token().await.unwrap().unwrap(), token_after_run_1);
    assert!(
        bob.room(&room_id).info().is_some(),
        "room list restored from the store"
    );
    let recorder = Recorder::resume(bob_store.as_ref(), "m6").await;
    let first_was_initial = recorder.first_was_initial.clone();
    tokio::time::timeout(Duration::from_secs(20), bob.sync(quick_sync(), recorder))
        .await
        .expect("m6 did not arrive")
        .unwrap();
    assert_eq!(
        *first_was_initial.lock().unwrap(),
        Some(false),
        "the restarted client began with an initial sync"
    );
    assert_eq!(
        recorded(bob_store.as_ref()).await,
        ["m1", "m2", "m3", "m4", "m5", "m6"]
    );

    // And once more with nothing new: a restart delivers nothing old.
    send_all(&alice, &room_id, &["m7"]).await;
    let updates = sync_until(&bob, |update| {
        update
            .timeline_events()
            .any(|(_, e)| e.body() == Some("m7"))
    })
    .await;
    let bodies: Vec<_> = updates
        .iter()
        .flat_map(|u| u.timeline_events())
        .filter_map(|(_, e)| e.body())
        .collect();
    assert_eq!(bodies, ["m7"]);
}

async fn sync_stream_saves_only_what_it_returned(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = registered(&server.base_url, "alice").await;
    let room = plain_room(&alice, Vec::new()).await;
    let mut stream = alice.sync_stream(quick_sync());
    let first = stream.next().await.unwrap();
    assert!(first.is_initial);
    assert!(first.joined.iter().any(|r| r.room_id == room.room_id()));
    let token = alice.sync_token().await.unwrap();
    assert_eq!(token.as_deref(), Some(first.next_batch.as_str()));

    // A long-poll with nothing new, cancelled half-way, saves nothing.
    let cancelled = tokio::time::timeout(Duration::from_millis(200), stream.next()).await;
    assert!(
        cancelled.is_err(),
        "nothing was sent, yet the stream answered"
    );
    assert_eq!(alice.sync_token().await.unwrap(), token);

    // The next call picks up from the same place.
    room.send_text("after the cancel").await.unwrap();
    let next = stream.next().await.unwrap();
    assert!(!next.is_initial);
    let bodies: Vec<_> = next
        .timeline_events()
        .filter_map(|(_, e)| e.body())
        .collect();
    assert_eq!(bodies, ["after the cancel"]);
    assert_eq!(
        alice.sync_token().await.unwrap(),
        Some(next.next_batch.clone())
    );
}

async fn passphrase_guards_the_saved_session(backend: Backend) {
    let server = TestServer::start(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("carol.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.unwrap());
    let carol = registered_on(&server.base_url, "carol", store.clone()).await;
    let carol_id = carol.user_id().unwrap();
    drop(carol);
    let before = snapshot(store.as_ref()).await;

    // A wrong passphrase is a typed error and changes nothing.
    let wrong = myelin_sdk::Client::builder()
        .store(store.clone())
        .passphrase("not the passphrase")
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(wrong, Error::Store(StoreError::WrongPassphrase)),
        "{wrong}"
    );
    assert_eq!(snapshot(store.as_ref()).await, before);

    // The saved token is never offered to another homeserver.
    let elsewhere = myelin_sdk::Client::builder()
        .homeserver_url("http://127.0.0.1:9/")
        .store(store.clone())
        .passphrase(PASSPHRASE)
        .build()
        .await
        .unwrap_err();
    assert!(matches!(elsewhere, Error::InvalidInput(_)), "{elsewhere}");

    // The token is not in the file in the clear; the right passphrase
    // restores the session with no homeserver given.
    let sealed = store.get("session", "access_token").await.unwrap().unwrap();
    assert!(sealed.len() > 29);
    let carol = myelin_sdk::Client::builder()
        .store(store.clone())
        .passphrase(PASSPHRASE)
        .build()
        .await
        .unwrap();
    assert_eq!(carol.whoami().await.unwrap().user_id, carol_id);

    // Tampering with the sealed token is reported, not used.
    let mut tampered = sealed.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let mut changes = Changes::new();
    changes.put("session", "access_token", tampered);
    store.commit(changes).await.unwrap();
    let damaged = myelin_sdk::Client::builder()
        .store(store.clone())
        .passphrase(PASSPHRASE)
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(damaged, Error::Store(StoreError::Tampered(_))),
        "{damaged}"
    );

    // Logging out forgets the session in the store.
    let mut changes = Changes::new();
    changes.put("session", "access_token", sealed);
    store.commit(changes).await.unwrap();
    let carol = client_on(&server.base_url, store.clone()).await;
    carol.logout().await.unwrap();
    assert!(store.list("session").await.unwrap().is_empty());
    assert!(carol.session().is_none());
}

async fn snapshot(store: &dyn Store) -> Vec<(String, Vec<(String, Vec<u8>)>)> {
    let mut all = Vec::new();
    for namespace in ["myelin.meta", "session", "sync", "rooms", "outbox"] {
        all.push((namespace.to_owned(), store.list(namespace).await.unwrap()));
    }
    all
}
