//! End-to-end encryption through the SDK against a Myelin server: users and
//! devices exchange Megolm messages both ways, the server only ever holds
//! `m.room.encrypted`, a member who leaves cannot read what follows, a
//! device restarted from its SQLite store keeps its sessions, and an
//! E2E-only room works encrypted. Also run against Synapse
//! (sdk_homeserver.rs), except the E2E-only room, a Myelin policy.

use std::{future::Future, sync::Arc, time::Duration};

use myelin_sdk::{
    Changes, Client, CreateRoom, LoopControl, MemoryStore, Room, RoomEvent, RoomSecurity,
    SqliteStore, Store, SyncHandler, SyncUpdate,
    machine::{DecryptedRoomEvent, LocalTrust, UtdCause, VerificationState},
    ruma::{OwnedEventId, OwnedUserId, RoomId},
};
use myelin_tests::{Backend, PASSWORD, TestServer, backend_tests, random_suffix};
use serde_json::Value;

use crate::sdk_support::{client_on, quick_sync, registered, registered_on, sync_until};

backend_tests!(
    only_verified_devices_get_keys_when_the_room_asks,
    an_event_is_delivered_when_its_key_arrives,
    a_crash_before_the_sync_is_saved_loses_no_olm_message,
    users_and_devices_exchange_encrypted_messages,
    a_member_who_left_cannot_decrypt_later_messages,
    a_restarted_device_keeps_its_sessions,
    an_e2e_only_room_works_encrypted
);

async fn users_and_devices_exchange_encrypted_messages(backend: Backend) {
    let server = TestServer::start(backend).await;
    users_and_devices_exchange_encrypted_messages_on(&server.base_url).await;
}

/// The scenario against the homeserver at `url` (open registration).
pub async fn users_and_devices_exchange_encrypted_messages_on(url: &str) {
    let suffix = &random_suffix()[..8];
    let alice = registered(url, &format!("alice{suffix}")).await;
    let alice_laptop = second_device(url, &alice).await;
    let bob = registered(url, &format!("bob{suffix}")).await;
    let room = shared_room(&alice, &bob, RoomSecurity::Encrypted).await;
    let room_id = room.room_id().to_owned();
    // The second device learns the room (and its members) from its sync.
    sync_until(&alice_laptop, |update| {
        update.joined.iter().any(|r| r.room_id == room_id)
    })
    .await;

    // Alice → Bob and Alice's other device.
    room.send_text("hello bob").await.unwrap();
    let seen = until_decrypted(&bob, "hello bob").await;
    assert_eq!(seen.sender, alice.user_id().unwrap().as_str());
    assert_eq!(
        seen.sender_device.as_deref(),
        Some(&*alice.session().unwrap().device_id)
    );
    assert_eq!(seen.room_id, room_id.as_str());
    assert_eq!(seen.event_type, "m.room.message");
    assert_ne!(seen.verification, VerificationState::UnknownDevice);
    let own = until_decrypted(&alice_laptop, "hello bob").await;
    assert_eq!(own.event_id, seen.event_id);

    // Bob → both of Alice's devices.
    bob.room(&room_id).send_text("hi alice").await.unwrap();
    let seen = until_decrypted(&alice, "hi alice").await;
    assert_eq!(seen.sender, bob.user_id().unwrap().as_str());
    until_decrypted(&alice_laptop, "hi alice").await;

    // The laptop answers; the first device and Bob read it.
    alice_laptop
        .room(&room_id)
        .send_text("from my laptop")
        .await
        .unwrap();
    let seen = until_decrypted(&bob, "from my laptop").await;
    assert_eq!(
        seen.sender_device.as_deref(),
        Some(&*alice_laptop.session().unwrap().device_id)
    );
    until_decrypted(&alice, "from my laptop").await;

    // The server holds ciphertext only: every message event in the room's
    // history is m.room.encrypted, and none carries a body.
    let history = room.messages(None, 100).await.unwrap().events;
    let messages: Vec<&RoomEvent> = history.iter().filter(|e| !e.is_state()).collect();
    assert_eq!(messages.len(), 3, "{:?}", types(&history));
    for event in messages {
        assert_eq!(event.event_type, "m.room.encrypted");
        assert_eq!(event.content["algorithm"], "m.megolm.v1.aes-sha2");
        assert!(event.content.get("body").is_none());
        assert!(!event.content.to_string().contains("hello bob"));
    }
}

async fn a_member_who_left_cannot_decrypt_later_messages(backend: Backend) {
    let server = TestServer::start(backend).await;
    a_member_who_left_cannot_decrypt_later_messages_on(&server.base_url).await;
}

/// The scenario against the homeserver at `url` (open registration).
pub async fn a_member_who_left_cannot_decrypt_later_messages_on(url: &str) {
    let suffix = &random_suffix()[..8];
    let alice = registered(url, &format!("alice{suffix}")).await;
    let bob = registered(url, &format!("bob{suffix}")).await;
    let room = shared_room(&alice, &bob, RoomSecurity::Encrypted).await;
    let room_id = room.room_id().to_owned();

    let before = room.send_text("while bob is here").await.unwrap();
    until_decrypted(&bob, "while bob is here").await;

    bob.room(&room_id).leave().await.unwrap();
    let bob_id = bob.user_id().unwrap();
    sync_until(&alice, |update| {
        has_membership(update, &room_id, &bob_id, "leave")
    })
    .await;
    let after = room.send_text("after bob left").await.unwrap();

    // The session rotated: the message after the leave uses a new one.
    let history = room.messages(None, 100).await.unwrap().events;
    let before = event(&history, &before);
    let after = event(&history, &after);
    assert_ne!(
        before.content["session_id"], after.content["session_id"],
        "the room key must rotate when a member leaves"
    );
    // Bob, handed the ciphertext, has no key for it; the earlier message
    // still decrypts (its key was rightly his).
    let refused = bob
        .decrypt_event(&room_id, &after)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(refused.cause, UtdCause::MissingRoomKey);
    let earlier = bob.decrypt_event(&room_id, &before).await.unwrap().unwrap();
    assert_eq!(earlier.content["body"], "while bob is here");
    // Nor did the key reach him later over to-device.
    let late = bob.sync_once(&quick_sync()).await.unwrap();
    assert!(
        late.decrypted
            .iter()
            .all(|e| e.event_id != after.event_id.as_str())
    );
}

async fn a_restarted_device_keeps_its_sessions(backend: Backend) {
    let server = TestServer::start(backend).await;
    a_restarted_device_keeps_its_sessions_on(&server.base_url).await;
}

/// The scenario against the homeserver at `url` (open registration).
pub async fn a_restarted_device_keeps_its_sessions_on(url: &str) {
    let suffix = &random_suffix()[..8];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bob.db");
    let alice = registered(url, &format!("alice{suffix}")).await;
    let bob_store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.unwrap());
    let bob = registered_on(url, &format!("bob{suffix}"), bob_store).await;
    let room = shared_room(&alice, &bob, RoomSecurity::Encrypted).await;
    let room_id = room.room_id().to_owned();
    let bob_device = bob.session().unwrap().device_id;

    room.send_text("before the restart").await.unwrap();
    let first = until_decrypted(&bob, "before the restart").await;
    // The machine's records are in the file, and sealed: none is readable
    // JSON, and Alice's identity key (in the device list) appears nowhere.
    let records = bob.store().list("crypto.machine").await.unwrap();
    assert!(
        records.len() > 3,
        "account, devices, sessions: {}",
        records.len()
    );
    for (key, value) in &records {
        assert!(
            serde_json::from_slice::<Value>(value).is_err(),
            "{key} is in clear"
        );
        assert!(!String::from_utf8_lossy(value).contains(&first.sender_key));
    }
    drop(bob);

    // The same device from its file: no login, same keys and sessions.
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.unwrap());
    let bob = client_on(url, store).await;
    assert_eq!(bob.session().unwrap().device_id, bob_device);
    // A message in the same Megolm session needs the stored inbound key.
    room.send_text("after the restart").await.unwrap();
    let second = until_decrypted(&bob, "after the restart").await;
    assert_eq!(second.sender_key, first.sender_key);
    assert!(second.message_index > first.message_index);
    // And Bob's own stored account and Olm sessions still reach Alice.
    bob.room(&room_id).send_text("bob is back").await.unwrap();
    until_decrypted(&alice, "bob is back").await;
}

/// With "only verified devices" on, Alice's client withholds the key from
/// Bob's unverified device, which says so (`m.unverified`); once Alice
/// verifies it, her next message reaches it.
async fn only_verified_devices_get_keys_when_the_room_asks(backend: Backend) {
    let server = TestServer::start(backend).await;
    let url = &server.base_url;
    let suffix = &random_suffix()[..8];
    let alice = registered(url, &format!("alice{suffix}")).await;
    let bob = registered(url, &format!("bob{suffix}")).await;
    let room = shared_room(&alice, &bob, RoomSecurity::Encrypted).await;
    let room_id = room.room_id().to_owned();
    alice.set_only_verified(&room_id, true).await.unwrap();

    let withheld = room.send_text("verified eyes only").await.unwrap();
    let cause = until_undecryptable(&bob, &withheld).await;
    assert_eq!(
        cause,
        UtdCause::Withheld {
            code: "m.unverified".to_owned()
        }
    );
    assert!(cause.is_expected());

    let bob_id = bob.user_id().unwrap();
    let bob_device = bob.session().unwrap().device_id;
    let devices = alice.devices(&bob_id).await.unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].device_id, bob_device.as_str());
    assert!(
        alice
            .set_device_trust(&bob_id, &bob_device, LocalTrust::Verified)
            .await
            .unwrap()
    );
    room.send_text("now you may read").await.unwrap();
    until_decrypted(&bob, "now you may read").await;
}

/// Bob holds an encrypted event before its key (fetched from history
/// before his next sync): it does not decrypt, is kept, and comes out
/// decrypted, once, in the update whose to-device events bring the key.
async fn an_event_is_delivered_when_its_key_arrives(backend: Backend) {
    let server = TestServer::start(backend).await;
    let url = &server.base_url;
    let suffix = &random_suffix()[..8];
    let alice = registered(url, &format!("alice{suffix}")).await;
    let bob = registered(url, &format!("bob{suffix}")).await;
    let room = shared_room(&alice, &bob, RoomSecurity::Encrypted).await;
    let room_id = room.room_id().to_owned();
    let sent = room.send_text("early bird").await.unwrap();

    let history = bob.room(&room_id).messages(None, 20).await.unwrap().events;
    let raw = event(&history, &sent);
    let waiting = bob
        .decrypt_event(&room_id, &raw)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(waiting.cause, UtdCause::MissingRoomKey);

    let updates = sync_until(&bob, |update| {
        update.decrypted.iter().any(|e| e.event_id == sent.as_str())
    })
    .await;
    let delivered: Vec<&DecryptedRoomEvent> = updates
        .iter()
        .flat_map(|update| &update.decrypted)
        .filter(|e| e.event_id == sent.as_str())
        .collect();
    assert_eq!(delivered.len(), 1, "delivered once");
    assert_eq!(delivered[0].content["body"], "early bird");
}

/// Bob's first message from Alice brings her room key in an Olm pre-key
/// message. Bob "crashes" while handling that sync, after his machine
/// consumed the pre-key message in memory but before anything was saved.
/// Restarted from the file, the same sync comes again and its room key
/// still decrypts: a crash does not lose an Olm message.
async fn a_crash_before_the_sync_is_saved_loses_no_olm_message(backend: Backend) {
    let server = TestServer::start(backend).await;
    let url = &server.base_url;
    let suffix = &random_suffix()[..8];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bob.db");
    let alice = registered(url, &format!("alice{suffix}")).await;
    let bob_store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.unwrap());
    let bob = registered_on(url, &format!("bob{suffix}"), bob_store).await;
    let room = shared_room(&alice, &bob, RoomSecurity::Encrypted).await;
    room.send_text("the first secret").await.unwrap();

    let (crashed, on_crash) = tokio::sync::oneshot::channel();
    let handler = CrashOn {
        body: "the first secret",
        signal: Some(crashed),
    };
    let sync = bob.sync(quick_sync(), handler);
    tokio::select! {
        ended = sync => panic!("the loop ended instead of crashing: {ended:?}"),
        signal = on_crash => signal.unwrap(),
    }
    drop(bob);

    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.unwrap());
    let bob = client_on(url, store).await;
    let seen = until_decrypted(&bob, "the first secret").await;
    assert_eq!(seen.sender, alice.user_id().unwrap().as_str());
}

/// A sync handler that "crashes" (signals, then never returns, so its
/// update is never saved) once a decrypted `body` arrives.
struct CrashOn {
    body: &'static str,
    signal: Option<tokio::sync::oneshot::Sender<()>>,
}

impl SyncHandler for CrashOn {
    fn handle(
        &mut self,
        update: &SyncUpdate,
        _: &mut Changes,
    ) -> impl Future<Output = LoopControl> + Send {
        let crash = update
            .decrypted
            .iter()
            .any(|event| event.content["body"] == self.body);
        let signal = if crash { self.signal.take() } else { None };
        async move {
            if let Some(signal) = signal {
                signal.send(()).ok();
                std::future::pending::<()>().await;
            }
            LoopControl::Continue
        }
    }
}

async fn an_e2e_only_room_works_encrypted(backend: Backend) {
    let server = TestServer::start(backend).await;
    an_e2e_only_room_works_encrypted_on(&server.base_url).await;
}

/// The scenario against the homeserver at `url` (open registration).
pub async fn an_e2e_only_room_works_encrypted_on(url: &str) {
    let suffix = &random_suffix()[..8];
    let alice = registered(url, &format!("alice{suffix}")).await;
    let bob = registered(url, &format!("bob{suffix}")).await;
    let room = shared_room(&alice, &bob, RoomSecurity::E2eOnly).await;
    assert!(room.info().unwrap().is_e2e_required);
    room.send_text("only ciphertext here").await.unwrap();
    until_decrypted(&bob, "only ciphertext here").await;
    bob.room(room.room_id()).send_text("agreed").await.unwrap();
    until_decrypted(&alice, "agreed").await;
}

/// Another device of `client`'s user, logged in with a fresh store.
pub async fn second_device(url: &str, client: &Client) -> Client {
    let device = client_on(url, Arc::new(MemoryStore::new())).await;
    let localpart = client.user_id().unwrap().localpart().to_owned();
    device
        .login_password(&localpart, PASSWORD, Some("laptop"))
        .await
        .unwrap();
    device
}

/// A room of `security` that `alice` created and `bob` joined, once both
/// clients' syncs have shown them the room and each other.
pub async fn shared_room(alice: &Client, bob: &Client, security: RoomSecurity) -> Room {
    let bob_id = bob.user_id().unwrap();
    let room = alice
        .create_room(CreateRoom {
            invite: vec![bob_id.clone()],
            security,
            ..CreateRoom::default()
        })
        .await
        .unwrap();
    let room_id = room.room_id().to_owned();
    sync_until(bob, |update| {
        update.invited.iter().any(|r| r.room_id == room_id)
    })
    .await;
    bob.join_room(room_id.as_str()).await.unwrap();
    sync_until(bob, |update| {
        update.joined.iter().any(|r| r.room_id == room_id)
    })
    .await;
    sync_until(alice, |update| {
        has_membership(update, &room_id, &bob_id, "join")
    })
    .await;
    room
}

pub fn has_membership(
    update: &SyncUpdate,
    room_id: &RoomId,
    user: &OwnedUserId,
    what: &str,
) -> bool {
    update
        .joined
        .iter()
        .filter(|room| room.room_id == room_id)
        .flat_map(|room| room.state_changes())
        .any(|event| {
            event.event_type == "m.room.member"
                && event.state_key.as_deref() == Some(user.as_str())
                && event.content["membership"] == what
        })
}

/// Syncs `client` until the event `event_id` comes out undecryptable;
/// returns why.
pub async fn until_undecryptable(client: &Client, event_id: &OwnedEventId) -> UtdCause {
    let updates = sync_until(client, |update| {
        update
            .undecryptable
            .iter()
            .any(|(_, utd)| utd.event_id == *event_id)
    })
    .await;
    updates
        .iter()
        .flat_map(|update| &update.undecryptable)
        .find(|(_, utd)| utd.event_id == *event_id)
        .map(|(_, utd)| utd.cause.clone())
        .expect("the loop stops only when found")
}

/// Syncs `client` until a decrypted message with `body` arrives.
pub async fn until_decrypted(client: &Client, body: &str) -> DecryptedRoomEvent {
    let mut found = None;
    let mut failures = Vec::new();
    let looped = client.sync(quick_sync(), |update: &SyncUpdate, _: &mut Changes| {
        failures.extend(
            update
                .undecryptable
                .iter()
                .map(|(_, utd)| utd.cause.clone()),
        );
        found = update
            .decrypted
            .iter()
            .find(|event| event.content["body"] == body)
            .cloned();
        if found.is_some() {
            LoopControl::Break
        } else {
            LoopControl::Continue
        }
    });
    tokio::time::timeout(Duration::from_secs(20), looped)
        .await
        .unwrap_or_else(|_| panic!("`{body}` did not decrypt within 20 s: {failures:?}"))
        .expect("sync");
    found.expect("the loop stops only when found")
}

pub(crate) fn event(history: &[RoomEvent], id: &OwnedEventId) -> RoomEvent {
    history
        .iter()
        .find(|event| &event.event_id == id)
        .cloned()
        .unwrap_or_else(|| panic!("{id} not in the history"))
}

fn types(history: &[RoomEvent]) -> Vec<(&str, &Value)> {
    history
        .iter()
        .map(|event| (event.event_type.as_str(), &event.content["body"]))
        .collect()
}
