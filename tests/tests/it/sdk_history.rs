//! History for newcomers (MSC4268) through the SDK against a Myelin server:
//! with the room opted in, an invitee decrypts what was said before the
//! invite, marked as history shared by the inviter; by default they do
//! not, and the failure is the expected kind.

use myelin_sdk::{
    Client, CreateRoom, Room, RoomSecurity,
    machine::UtdCause,
    ruma::{OwnedEventId, OwnedRoomId},
};
use myelin_tests::{Backend, TestServer, backend_tests, random_suffix};

use crate::{
    sdk_e2ee::{has_membership, until_decrypted},
    sdk_support::{registered, sync_until},
};

backend_tests!(
    an_invitee_reads_the_history_shared_on_invite,
    by_default_an_invitee_cannot_read_what_came_before
);

/// Alice, alone in a new encrypted room (history visibility `shared`, the
/// private-chat default), says `before bob`, then invites Bob, handing him
/// the history if `share` is set; Bob sees the invite and joins.
async fn alice_invites_bob(
    url: &str,
    share: bool,
) -> (Client, Client, Room, OwnedRoomId, OwnedEventId) {
    let suffix = &random_suffix()[..8];
    let alice = registered(url, &format!("alice{suffix}")).await;
    let bob = registered(url, &format!("bob{suffix}")).await;
    let bob_id = bob.user_id().unwrap();
    let room = alice
        .create_room(CreateRoom {
            security: RoomSecurity::Encrypted,
            ..CreateRoom::default()
        })
        .await
        .unwrap();
    let room_id = room.room_id().to_owned();
    sync_until(&alice, |update| {
        update.joined.iter().any(|r| r.room_id == room_id)
    })
    .await;
    let before = room.send_text("before bob").await.unwrap();

    assert!(
        !room.shares_history_on_invite().await.unwrap(),
        "off by default"
    );
    room.set_share_history_on_invite(share).await.unwrap();
    room.invite(&bob_id).await.unwrap();
    sync_until(&bob, |update| {
        update.invited.iter().any(|r| r.room_id == room_id)
    })
    .await;
    bob.join_room(room_id.as_str()).await.unwrap();
    sync_until(&bob, |update| {
        update.joined.iter().any(|r| r.room_id == room_id)
    })
    .await;
    sync_until(&alice, |update| {
        has_membership(update, &room_id, &bob_id, "join")
    })
    .await;
    (alice, bob, room, room_id, before)
}

async fn an_invitee_reads_the_history_shared_on_invite(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (alice, bob, room, room_id, before) = alice_invites_bob(&server.base_url, true).await;
    let alice_id = alice.user_id().unwrap();

    let history = bob.room(&room_id).messages(None, 50).await.unwrap().events;
    let raw = history
        .iter()
        .find(|event| event.event_id == before)
        .expect("the message before the invite is in Bob's history");
    assert_eq!(raw.event_type, "m.room.encrypted");
    let decrypted = bob
        .decrypt_event(&room_id, raw)
        .await
        .unwrap()
        .expect("the shared history decrypts");
    assert_eq!(decrypted.content["body"], "before bob");
    assert_eq!(decrypted.sender, alice_id);
    // Marked: Bob has only Alice's word for who sent what before he came.
    assert!(decrypted.forwarded);
    assert_eq!(decrypted.shared_by.as_ref(), Some(&alice_id));

    // What Alice says now reaches Bob directly, from her own Olm session;
    // it is the same session, so the history now has her word too.
    room.send_text("welcome").await.unwrap();
    let welcome = until_decrypted(&bob, "welcome").await;
    assert!(!welcome.forwarded);
    assert_eq!(welcome.shared_by, None);
    let again = bob.decrypt_event(&room_id, raw).await.unwrap().unwrap();
    assert_eq!(again.content["body"], "before bob");
    assert_eq!(again.shared_by, None);
}

async fn by_default_an_invitee_cannot_read_what_came_before(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (_alice, bob, room, room_id, before) = alice_invites_bob(&server.base_url, false).await;
    room.send_text("after the join").await.unwrap();
    let after = until_decrypted(&bob, "after the join").await;
    assert_eq!(after.shared_by, None);

    let history = bob.room(&room_id).messages(None, 50).await.unwrap().events;
    let raw = history
        .iter()
        .find(|event| event.event_id == before)
        .expect("the server shows Bob the (encrypted) history");
    let utd = bob
        .decrypt_event(&room_id, raw)
        .await
        .unwrap()
        .expect_err("no key from before the invite");
    // Bob holds the session from his join on, not its earlier messages:
    // the protocol's intent, not a failure.
    assert_eq!(utd.cause, UtdCause::SentBeforeWeJoined);
    assert!(utd.cause.is_expected());
}
