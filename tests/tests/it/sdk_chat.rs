//! Two SDK clients chat through a Myelin server: invite, join, messages
//! both ways, typing, receipts, redaction, history, and the room list.

use std::time::Duration;

use myelin_sdk::{CreateRoom, Error, Membership, RoomSecurity, ruma::OwnedUserId};
use myelin_tests::{Backend, TestServer, backend_tests};
use serde_json::json;

use crate::sdk_support::{has_message, registered, sync_until};

backend_tests!(
    two_clients_chat_through_a_room,
    encrypted_and_e2e_only_rooms
);

async fn two_clients_chat_through_a_room(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = registered(&server.base_url, "alice").await;
    let bob = registered(&server.base_url, "bob").await;
    let bob_id = bob.user_id().unwrap();
    let alice_id = alice.user_id().unwrap();

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
    let (_, event) = updates
        .iter()
        .flat_map(|u| u.timeline_events())
        .find(|(_, e)| e.body() == Some("hello bob"))
        .unwrap();
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
    let (_, event) = updates
        .iter()
        .flat_map(|u| u.timeline_events())
        .find(|(_, e)| e.event_id == reply)
        .unwrap();
    assert_eq!(event.content["org.example.extra"], 7);

    // Typing and read receipts reach the other side.
    bob.room(&room_id)
        .typing(true, Duration::from_secs(10))
        .await
        .unwrap();
    sync_until(&alice, |update| {
        update
            .joined
            .iter()
            .any(|r| r.typing().is_some_and(|users| users.contains(&bob_id)))
    })
    .await;
    alice.room(&room_id).read_receipt(&reply).await.unwrap();
    sync_until(&bob, |update| {
        update
            .joined
            .iter()
            .flat_map(|r| r.receipts())
            .any(|content| content[reply.as_str()]["m.read"][alice_id.as_str()].is_object())
    })
    .await;

    // Alice redacts her message; bob sees the redaction.
    let redaction = room.redact(&hello, Some("typo")).await.unwrap();
    let updates = sync_until(&bob, |update| {
        update
            .timeline_events()
            .any(|(_, e)| e.event_type == "m.room.redaction")
    })
    .await;
    let (_, event) = updates
        .iter()
        .flat_map(|u| u.timeline_events())
        .find(|(_, e)| e.event_type == "m.room.redaction")
        .unwrap();
    assert_eq!(event.event_id, redaction);
    assert_eq!(event.redacted_event_id(), Some(hello.clone()));

    // Bob pages back to the room's creation: every event once, newest first.
    let mut history = Vec::new();
    let mut from: Option<String> = None;
    loop {
        let page = bob
            .room(&room_id)
            .messages(from.as_deref(), 3)
            .await
            .unwrap();
        assert!(page.events.len() <= 3);
        history.extend(page.events);
        match page.end {
            Some(end) if from.as_deref() != Some(end.as_str()) => from = Some(end),
            _ => break,
        }
        assert!(history.len() < 100, "pagination does not end");
    }
    assert_eq!(history.last().unwrap().event_type, "m.room.create");
    let mut ids: Vec<_> = history.iter().map(|e| e.event_id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), history.len(), "an event came twice");
    let redacted = history
        .iter()
        .find(|e| e.event_id == hello)
        .expect("alice's message in history");
    assert_eq!(redacted.body(), None, "redacted content is gone");
    assert!(history.iter().any(|e| e.event_id == reply));

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
}

async fn encrypted_and_e2e_only_rooms(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = registered(&server.base_url, "alice").await;
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

    // Plaintext never leaves for an encrypted room.
    for room in [&encrypted, &e2e_only] {
        let refused = room.send_text("plaintext").await.unwrap_err();
        assert!(
            matches!(refused, Error::EncryptionRequired(ref id) if id == room.room_id()),
            "{refused}"
        );
    }
    assert!(alice.pending_events().await.unwrap().is_empty());
    plain.send_text("fine here").await.unwrap();
}
