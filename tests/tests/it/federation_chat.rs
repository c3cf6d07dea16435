//! Users of two servers in one end-to-end encrypted room, through the SDK,
//! with no change in any client: the invite and the join cross the servers
//! (`/v2/invite`, `make_join`/`send_join`), the messages go in transactions
//! both ways, Olm key shares as to-device EDUs, and a device added later is
//! announced with a device-list update and gets the keys. Each server holds
//! only ciphertext. Two Myelin servers here; a Myelin server and Synapse,
//! each side creating the room in turn, with
//! `tests/interop/federation-synapse.sh`.

use myelin_sdk::{Client, RoomEvent, RoomSecurity, ruma::OwnedRoomId};
use myelin_tests::{Backend, TestServer, backend_tests, random_suffix};

use crate::{
    sdk_e2ee::{second_device, shared_room, until_decrypted},
    sdk_support::{registered, sync_until},
};

backend_tests!(
    users_of_two_servers_chat_end_to_end_encrypted,
    a_device_added_on_another_server_gets_the_room_keys,
);

async fn users_of_two_servers_chat_end_to_end_encrypted(backend: Backend) {
    let servers = TestServer::start_federated(backend, 2).await;
    chat_across(&servers[0].base_url, &servers[1].base_url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a federating Synapse: run tests/interop/federation-synapse.sh"]
async fn myelin_and_synapse_users_chat_end_to_end_encrypted() {
    let synapse = std::env::var("MYELIN_SYNAPSE_URL").expect("MYELIN_SYNAPSE_URL is set");
    let myelin = TestServer::start_federated(Backend::Sqlite, 1).await;
    chat_across(&myelin[0].base_url, &synapse).await;
    chat_across(&synapse, &myelin[0].base_url).await;
}

/// Alice of the server at `creator` makes an encrypted room and invites
/// bob of the server at `joiner`; they write to each other.
async fn chat_across(creator: &str, joiner: &str) {
    let suffix = &random_suffix()[..8];
    let alice = registered(creator, &format!("alice{suffix}")).await;
    let bob = registered(joiner, &format!("bob{suffix}")).await;
    let room = shared_room(&alice, &bob, RoomSecurity::Encrypted).await;
    let room_id = room.room_id().to_owned();

    room.send_text("hello, other server").await.unwrap();
    let seen = until_decrypted(&bob, "hello, other server").await;
    assert_eq!(seen.sender, alice.user_id().unwrap().as_str());
    assert_eq!(seen.room_id, room_id.as_str());

    bob.room(&room_id).send_text("hello back").await.unwrap();
    let seen = until_decrypted(&alice, "hello back").await;
    assert_eq!(seen.sender, bob.user_id().unwrap().as_str());

    // Both servers hold the same two messages, as ciphertext only.
    for client in [&alice, &bob] {
        let messages = messages(client, &room_id).await;
        assert_eq!(messages.len(), 2, "{messages:?}");
        for event in &messages {
            assert_eq!(event.event_type, "m.room.encrypted");
            assert_eq!(event.content["algorithm"], "m.megolm.v1.aes-sha2");
            assert!(!event.content.to_string().contains("hello"));
        }
    }
}

async fn a_device_added_on_another_server_gets_the_room_keys(backend: Backend) {
    let servers = TestServer::start_federated(backend, 2).await;
    let (a, b) = (&servers[0], &servers[1]);
    let alice = registered(&a.base_url, "alice").await;
    let bob = registered(&b.base_url, "bob").await;
    let room = shared_room(&alice, &bob, RoomSecurity::Encrypted).await;
    let room_id = room.room_id().to_owned();
    room.send_text("before the laptop").await.unwrap();
    until_decrypted(&bob, "before the laptop").await;

    // Bob logs in on a laptop; B announces the device to A, and alice's
    // client learns of it from her sync before she sends again.
    let laptop = second_device(&b.base_url, &bob).await;
    sync_until(&laptop, |update| {
        update.joined.iter().any(|r| r.room_id == room_id)
    })
    .await;
    let bob_id = bob.user_id().unwrap();
    sync_until(&alice, |update| {
        update.device_lists.changed.contains(&bob_id)
    })
    .await;

    room.send_text("after the laptop").await.unwrap();
    until_decrypted(&laptop, "after the laptop").await;
    until_decrypted(&bob, "after the laptop").await;
}

/// The room's non-state events as `client`'s server serves them.
async fn messages(client: &Client, room_id: &OwnedRoomId) -> Vec<RoomEvent> {
    let history = client
        .room(room_id)
        .messages(None, 100)
        .await
        .unwrap()
        .events;
    history.into_iter().filter(|e| !e.is_state()).collect()
}
