//! Two SDK clients chat through a Myelin server: invite, join, messages
//! both ways, typing, receipts, redaction, history, and the room list.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use myelin_sdk::{
    Changes, CreateRoom, Error, LoopControl, Membership, MemoryStore, RoomSecurity, SqliteStore,
    Store, SyncUpdate, ruma::OwnedUserId,
};
use myelin_tests::{Backend, PASSWORD, TestServer, backend_tests, random_suffix};
use serde_json::json;

use crate::sdk_support::{
    client_on, find_event, has_message, history_to_creation, plain_room, quick_sync, registered,
    registered_on, sync_until, typing_and_receipt_cross,
};

backend_tests!(
    two_clients_chat_through_a_room,
    encrypted_and_e2e_only_rooms,
    a_room_created_while_syncing_stays_encrypted,
    the_handler_sees_encryption_switched_on
);

async fn two_clients_chat_through_a_room(backend: Backend) {
    let server = TestServer::start(backend).await;
    two_clients_chat(&server.base_url).await;
}

async fn encrypted_and_e2e_only_rooms(backend: Backend) {
    let server = TestServer::start(backend).await;
    encrypted_rooms(&server.base_url).await;
}

/// Two clients chat through the homeserver at `homeserver`, which must
/// allow open registration. Also run against Synapse (sdk_homeserver.rs).
pub async fn two_clients_chat(homeserver: &str) {
    let suffix = &random_suffix()[..8];
    let dir = tempfile::tempdir().unwrap();
    let bob_path = dir.path().join("bob.db");
    let alice = registered(homeserver, &format!("alice{suffix}")).await;
    let bob_store: Arc<dyn Store> = Arc::new(SqliteStore::open(&bob_path).await.unwrap());
    let bob = registered_on(homeserver, &format!("bob{suffix}"), bob_store).await;
    let bob_id = bob.user_id().unwrap();
    let alice_id = alice.user_id().unwrap();
    assert_eq!(alice.whoami().await.unwrap().user_id, alice_id);

    let room = alice
        .create_room(CreateRoom {
            name: Some("Lobby".to_owned()),
            topic: Some("Small talk".to_owned()),
            invite: vec![bob_id.clone()],
            security: RoomSecurity::Plain,
            ..CreateRoom::default()
        })
        .await
        .unwrap();
    let room_id = room.room_id().to_owned();

    // Bob's loop delivers the invite, and his room list shows it.
    let updates = sync_until(&bob, |update| {
        update.invited.iter().any(|r| r.room_id == room_id)
    })
    .await;
    let invite = updates
        .iter()
        .flat_map(|u| &u.invited)
        .find(|r| r.room_id == room_id)
        .unwrap();
    assert!(
        invite
            .invite_state
            .iter()
            .any(|e| e.event_type == "m.room.member"
                && e.state_key == bob_id.as_str()
                && e.content["membership"] == "invite")
    );
    let bob_view = bob.room(&room_id);
    assert_eq!(bob_view.info().unwrap().membership, Membership::Invite);
    bob_view.join().await.unwrap();

    // Alice's first sync shows the room with both members joined (once bob's join arrives).
    sync_until(&alice, |update| {
        update.joined.iter().any(|r| {
            r.room_id == room_id
                && r.state_changes().any(|e| {
                    e.state_key.as_deref() == Some(bob_id.as_str())
                        && e.content["membership"] == "join"
                })
        })
    })
    .await;
    let info = room.info().unwrap();
    assert_eq!(info.name.as_deref(), Some("Lobby"));
    assert_eq!(info.topic.as_deref(), Some("Small talk"));
    assert_eq!(info.membership, Membership::Join);
    assert!(!info.is_encrypted());
    let mut joined = info.joined_members();
    joined.sort();
    let mut expected: Vec<OwnedUserId> = vec![alice_id.clone(), bob_id.clone()];
    expected.sort();
    assert_eq!(joined, expected);

    // Messages both ways, each delivered to the other's loop with the id the sender got.
    let hello = room.send_text("hello bob").await.unwrap();
    let updates = sync_until(&bob, |update| has_message(update, "hello bob")).await;
    let event = find_event(&updates, |e| e.body() == Some("hello bob"));
    assert_eq!(event.event_id, hello);
    assert_eq!(event.sender, alice_id);
    assert_eq!(
        event.transaction_id(),
        None,
        "bob must not see alice's transaction id"
    );
    assert_eq!(
        bob.room(&room_id).info().unwrap().membership,
        Membership::Join
    );

    let reply = bob
        .room(&room_id)
        .send(
            "m.room.message",
            json!({"msgtype": "m.text", "body": "hi alice", "org.example.extra": 7}),
        )
        .await
        .unwrap();
    let updates = sync_until(&alice, |update| has_message(update, "hi alice")).await;
    let event = find_event(&updates, |e| e.event_id == reply);
    assert_eq!(event.content["org.example.extra"], 7);

    // Typing and read receipts reach the other side.
    typing_and_receipt_cross(&bob, &alice, &room_id, &reply).await;

    // Alice redacts her message; bob sees the redaction.
    let redaction = room.redact(&hello, Some("typo")).await.unwrap();
    let updates = sync_until(&bob, |update| {
        update
            .timeline_events()
            .any(|(_, e)| e.event_type == "m.room.redaction")
    })
    .await;
    let event = find_event(&updates, |e| e.event_type == "m.room.redaction");
    assert_eq!(event.event_id, redaction);
    assert_eq!(event.redacted_event_id(), Some(hello.clone()));

    // Bob pages back to the room's creation: every event once, newest first.
    let history = history_to_creation(&bob.room(&room_id), 3).await;
    let redacted = history
        .iter()
        .find(|e| e.event_id == hello)
        .expect("alice's message in history");
    assert_eq!(redacted.body(), None, "redacted content is gone");
    assert!(history.iter().any(|e| e.event_id == reply));

    // To-device: alice writes to bob's device; bob's loop delivers it.
    let bob_device = bob.session().unwrap().device_id;
    let mut messages = BTreeMap::new();
    messages.insert(
        bob_id.clone(),
        BTreeMap::from([(bob_device.to_string(), json!({"hello": "device"}))]),
    );
    alice
        .send_to_device("org.myelin.test", &messages)
        .await
        .unwrap();
    let updates = sync_until(&bob, |update| !update.to_device.is_empty()).await;
    let to_device = &updates.last().unwrap().to_device[0];
    assert_eq!(
        (to_device.sender.as_str(), to_device.event_type.as_str()),
        (alice_id.as_str(), "org.myelin.test")
    );
    assert_eq!(to_device.content["hello"], "device");

    // Bob restarts from his SQLite file: no login, no initial sync, the
    // next message exactly once.
    drop(bob);
    let bob = client_on(
        homeserver,
        Arc::new(SqliteStore::open(&bob_path).await.unwrap()),
    )
    .await;
    assert_eq!(bob.whoami().await.unwrap().user_id, bob_id);
    room.send_text("after the restart").await.unwrap();
    let updates = sync_until(&bob, |update| has_message(update, "after the restart")).await;
    assert!(updates.iter().all(|u| !u.is_initial));
    let bodies: Vec<_> = updates
        .iter()
        .flat_map(|u| u.timeline_events())
        .filter_map(|(_, e)| e.body())
        .collect();
    assert_eq!(bodies, ["after the restart"]);

    // Bob leaves; his next sync moves the room to `leave`.
    bob.room(&room_id).leave().await.unwrap();
    sync_until(&bob, |update| {
        update.left.iter().any(|r| r.room_id == room_id)
    })
    .await;
    assert_eq!(
        bob.room(&room_id).info().unwrap().membership,
        Membership::Leave
    );
    alice.logout().await.unwrap();
    bob.logout().await.unwrap();
}

/// Encrypted and E2E-only rooms through the homeserver at `homeserver`:
/// the state reads back into the room list, and plaintext is refused.
pub async fn encrypted_rooms(homeserver: &str) {
    let suffix = &random_suffix()[..8];
    let alice = registered(homeserver, &format!("carol{suffix}")).await;
    let encrypted = alice
        .create_room(CreateRoom {
            security: RoomSecurity::Encrypted,
            ..CreateRoom::default()
        })
        .await
        .unwrap();
    let e2e_only = alice
        .create_room(CreateRoom {
            security: RoomSecurity::E2eOnly,
            ..CreateRoom::default()
        })
        .await
        .unwrap();
    let plain = alice
        .create_room(CreateRoom {
            security: RoomSecurity::Plain,
            ..CreateRoom::default()
        })
        .await
        .unwrap();
    // Before any sync: the creator's client knows the room is encrypted,
    // and another device of the same user asks the server.
    let refused = encrypted.send_text("too early").await.unwrap_err();
    assert!(matches!(refused, Error::EncryptionRequired(_)), "{refused}");
    let other_device = client_on(homeserver, Arc::new(MemoryStore::new())).await;
    let localpart = alice.user_id().unwrap().localpart().to_owned();
    other_device
        .login_password(&localpart, PASSWORD, None)
        .await
        .unwrap();
    assert!(other_device.rooms().is_empty());
    let refused = other_device
        .room(e2e_only.room_id())
        .send_text("unsynced")
        .await
        .unwrap_err();
    assert!(matches!(refused, Error::EncryptionRequired(_)), "{refused}");
    assert!(
        !other_device
            .room(plain.room_id())
            .is_encrypted()
            .await
            .unwrap()
    );
    assert!(other_device.pending_events().await.unwrap().is_empty());

    let updates = sync_until(&alice, |update| update.joined.len() >= 3).await;

    let info = encrypted.info().unwrap();
    assert_eq!(
        info.encryption.as_ref().unwrap()["algorithm"],
        "m.megolm.v1.aes-sha2"
    );
    assert!(!info.is_e2e_required);
    let info = e2e_only.info().unwrap();
    assert!(info.is_encrypted());
    assert!(info.is_e2e_required);
    assert!(!plain.info().unwrap().is_encrypted());
    assert_eq!(alice.rooms().len(), 3);

    // The policy event went out as the wire format says.
    let policy = updates
        .iter()
        .flat_map(|update| &update.joined)
        .filter(|room| room.room_id == e2e_only.room_id())
        .flat_map(|room| room.state_changes())
        .find(|event| event.event_type == "org.myelin.room.policy")
        .expect("policy event in the room state");
    assert_eq!(policy.state_key.as_deref(), Some(""));
    assert_eq!(policy.content, json!({"e2e_required": true}));

    // Plaintext never leaves for an encrypted room: once synced, the SDK
    // encrypts (sdk_e2ee.rs has the full exchanges).
    for room in [&encrypted, &e2e_only] {
        let sent = room.send_text("plaintext").await.unwrap();
        let history = room.messages(None, 50).await.unwrap().events;
        let event = history.iter().find(|e| e.event_id == sent).unwrap();
        assert_eq!(event.event_type, "m.room.encrypted");
        assert!(!event.content.to_string().contains("plaintext"));
    }
    assert!(alice.pending_events().await.unwrap().is_empty());
    plain.send_text("fine here").await.unwrap();
}

/// A sync that lands while `create_room` is in flight can carry only the
/// room's first events (not yet `m.room.encryption`); the room list must
/// still know the room is encrypted the moment `create_room` returns, and a
/// message sent then never goes out as plaintext.
async fn a_room_created_while_syncing_stays_encrypted(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = registered(&server.base_url, "alice").await;
    let syncing = tokio::spawn({
        let alice = alice.clone();
        async move {
            alice
                .sync(quick_sync(), |_: &SyncUpdate, _: &mut Changes| {
                    LoopControl::Continue
                })
                .await
        }
    });
    for round in 0..12 {
        let room = alice
            .create_room(CreateRoom {
                security: RoomSecurity::E2eOnly,
                ..CreateRoom::default()
            })
            .await
            .unwrap();
        let info = room.info().expect("a created room is listed at once");
        assert!(
            info.is_encrypted() && info.is_e2e_required,
            "round {round}: the room list lost the room's encryption: {info:?}"
        );
        // Encrypted, or refused until a sync brings the room's members.
        match room.send_text(&format!("secret {round}")).await {
            Ok(_) | Err(Error::EncryptionRequired(_)) => {}
            Err(error) => panic!("round {round}: {error}"),
        }
    }
    syncing.abort();
    let stored = server
        .count_rows("SELECT COUNT(*) FROM events WHERE json LIKE '%secret %'")
        .await;
    assert_eq!(stored, 0, "a message reached the server in plaintext");
}

/// A sync handler that reacts to an update by sending must find the
/// room's new encryption already in force: the room list is updated before
/// the handler runs, not after the update is saved.
async fn the_handler_sees_encryption_switched_on(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = registered(&server.base_url, "alice").await;
    let bob = registered(&server.base_url, "bob").await;
    let room = plain_room(&alice, vec![bob.user_id().unwrap()]).await;
    let room_id = room.room_id().to_owned();
    bob.join_room(room_id.as_str()).await.unwrap();
    sync_until(&bob, |update| {
        update.joined.iter().any(|r| r.room_id == room_id)
    })
    .await;
    assert!(!bob.room(&room_id).is_encrypted().await.unwrap());

    room.send_state(
        "m.room.encryption",
        "",
        json!({ "algorithm": "m.megolm.v1.aes-sha2" }),
    )
    .await
    .unwrap();
    let seen_in_handler = Mutex::new(None);
    sync_until(&bob, |update| {
        let switched_on = update
            .timeline_events()
            .any(|(_, event)| event.event_type == "m.room.encryption");
        if switched_on {
            let info = bob.room(&room_id).info().expect("listed");
            *seen_in_handler.lock().unwrap() = Some(info.is_encrypted());
        }
        switched_on
    })
    .await;
    assert_eq!(*seen_in_handler.lock().unwrap(), Some(true));
}
