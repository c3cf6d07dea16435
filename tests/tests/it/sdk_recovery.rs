//! Recovery end to end against a Myelin server: Alice, with two devices,
//! chats with Bob in two encrypted rooms (one of her room keys rotates),
//! Bob verifies her, she keeps her secrets in secret storage and her room
//! keys in the key backup, and then loses every device. On a fresh device
//! the recovery key alone gives her back her identity (the device signs
//! itself) and every room key; Bob still sees her as verified and trusts
//! the new device, with no warning. Every earlier message decrypts, hers
//! from the devices she lost included, as verified.
//!
//! The steps on their own are in `sdk_secret_storage` (unlocking on a new
//! device) and `sdk_backup` (restoring a backup).

use std::sync::Arc;

use myelin_sdk::{
    Client, MemoryStore, RoomSecurity,
    machine::VerificationState,
    ruma::{OwnedUserId, RoomId},
};
use myelin_tests::{Backend, PASSWORD, TestServer, backend_tests, random_suffix};

use crate::{
    sdk_backup::{read_history, stored_backup},
    sdk_e2ee::{event, has_membership, second_device, shared_room, until_decrypted},
    sdk_secret_storage::unlocked_with,
    sdk_support::{client_on, registered, sync_until},
};

backend_tests!(after_losing_every_device_the_recovery_key_brings_back_identity_and_history);

/// Sends `body` from `from` and waits until `reader` decrypts it.
async fn say(from: &Client, room_id: &RoomId, body: &str, reader: &Client) {
    from.room(room_id).send_text(body).await.unwrap();
    until_decrypted(reader, body).await;
}

/// `user` joins the room `room_id` they were invited to; `inviter` waits
/// until it sees the join.
async fn joins(user: &Client, room_id: &RoomId, inviter: &Client) {
    sync_until(user, |update| {
        update.invited.iter().any(|r| r.room_id == room_id)
    })
    .await;
    user.join_room(room_id.as_str()).await.unwrap();
    let user_id = user.user_id().unwrap();
    sync_until(inviter, |update| {
        has_membership(update, room_id, &user_id, "join")
    })
    .await;
}

async fn after_losing_every_device_the_recovery_key_brings_back_identity_and_history(
    backend: Backend,
) {
    let server = TestServer::start(backend).await;
    let url = server.base_url.as_str();
    let suffix = &random_suffix()[..8];
    let phone = registered(url, &format!("alice{suffix}")).await;
    let bob = registered(url, &format!("bob{suffix}")).await;
    let carol = registered(url, &format!("carol{suffix}")).await;
    let alice_id: OwnedUserId = phone.user_id().unwrap();

    // Alice's identity, her laptop signed by it, and Bob's verification of
    // her.
    phone.bootstrap_cross_signing(PASSWORD).await.unwrap();
    bob.bootstrap_cross_signing(PASSWORD).await.unwrap();
    let laptop = second_device(url, &phone).await;
    let laptop_id = laptop.session().unwrap().device_id;
    phone.verify_own_device(&laptop_id).await.unwrap();
    bob.verify_user(&alice_id).await.unwrap();

    // Room one: Alice's phone and laptop and Bob each write.
    let one = shared_room(&phone, &bob, RoomSecurity::Encrypted).await;
    let one = one.room_id().to_owned();
    sync_until(&laptop, |update| {
        update.joined.iter().any(|r| r.room_id == one)
    })
    .await;
    say(&phone, &one, "one: phone", &bob).await;
    say(&bob, &one, "one: bob", &phone).await;
    say(&laptop, &one, "one: laptop", &bob).await;
    until_decrypted(&phone, "one: laptop").await;

    // Room two, Bob's, with Carol for a while: her leaving rotates Alice's
    // room key.
    let two = shared_room(&bob, &phone, RoomSecurity::Encrypted).await;
    let two = two.room_id().to_owned();
    bob.room(&two)
        .invite(&carol.user_id().unwrap())
        .await
        .unwrap();
    joins(&carol, &two, &phone).await;
    say(&bob, &two, "two: bob", &phone).await;
    let before = phone
        .room(&two)
        .send_text("two: phone, carol here")
        .await
        .unwrap();
    until_decrypted(&carol, "two: phone, carol here").await;
    carol.room(&two).leave().await.unwrap();
    let carol_id = carol.user_id().unwrap();
    sync_until(&phone, |update| {
        has_membership(update, &two, &carol_id, "leave")
    })
    .await;
    let after = phone
        .room(&two)
        .send_text("two: phone, carol gone")
        .await
        .unwrap();
    until_decrypted(&bob, "two: phone, carol gone").await;
    let history = phone.room(&two).messages(None, 100).await.unwrap().events;
    assert_ne!(
        event(&history, &before).content["session_id"],
        event(&history, &after).content["session_id"],
        "Alice's room key rotated"
    );

    // Backup and secret storage, from the phone, which holds every room key
    // by now: six sessions (three in room one, three in room two).
    phone.enable_backup().await.unwrap();
    let (version, _) = stored_backup(&server, &phone).await;
    assert_eq!(version["count"], 6, "{version}");
    let recovery_key = phone.enable_secret_storage(None).await.unwrap();

    // Every device of Alice's is gone.
    laptop.logout().await.unwrap();
    phone.logout().await.unwrap();

    let new = client_on(url, Arc::new(MemoryStore::new())).await;
    new.login_password(alice_id.localpart(), PASSWORD, Some("new phone"))
        .await
        .unwrap();
    let new_id = new.session().unwrap().device_id;
    sync_until(&new, |update| {
        [&one, &two]
            .iter()
            .all(|room| update.joined.iter().any(|r| &r.room_id == *room))
    })
    .await;
    assert!(!new.is_device_verified(&alice_id, &new_id).await.unwrap());

    let unlocked = unlocked_with(&new, &recovery_key).await;
    let restore = new
        .restore_backup(&unlocked.backup_recovery_key.unwrap())
        .await
        .unwrap();
    // Keys the device already fetched for undecryptable events once it
    // held the backup key count as unchanged.
    assert_eq!(
        (
            restore.imported + restore.unchanged,
            restore.refused,
            restore.invalid
        ),
        (6, 0, 0)
    );
    // Every message decrypts, Alice's own from her lost devices included:
    // the authenticated backup carried their signed device keys, which
    // her self-signing key vouches for. None counts as forwarded.
    let decrypted = |bodies: [&str; 3]| bodies.map(|b| Ok((b.to_owned(), false))).to_vec();
    assert_eq!(
        read_history(&new, &one).await,
        decrypted(["one: bob", "one: laptop", "one: phone"])
    );
    assert_eq!(
        read_history(&new, &two).await,
        decrypted([
            "two: bob",
            "two: phone, carol gone",
            "two: phone, carol here"
        ])
    );
    let history = new.room(&two).messages(None, 100).await.unwrap().events;
    let from_lost_phone = new
        .decrypt_event(&two, &event(&history, &after))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(from_lost_phone.verification, VerificationState::Verified);

    // Bob: the same verified identity, the new device trusted through it,
    // the old ones gone, and nothing to warn about. (His first sync brings
    // all of Alice's device changes at once; he queries her keys then.)
    let mut updates = sync_until(&bob, |update| {
        update.device_lists.changed.contains(&alice_id)
    })
    .await;
    new.room(&one).send_text("one: back again").await.unwrap();
    let mut bob_saw = None;
    updates.extend(
        sync_until(&bob, |update| {
            bob_saw = update
                .decrypted
                .iter()
                .find(|e| e.content["body"] == "one: back again")
                .cloned();
            bob_saw.is_some()
        })
        .await,
    );
    let message = bob_saw.unwrap();
    assert_eq!(message.sender_device.as_deref(), Some(&*new_id));
    assert_eq!(message.verification, VerificationState::Verified);
    let warnings: Vec<_> = updates.iter().flat_map(|u| &u.device_warnings).collect();
    assert!(warnings.is_empty(), "{warnings:?}");
    let identity = bob.user_identity(&alice_id).await.unwrap().unwrap();
    assert!(
        identity.is_verified && !identity.has_changed,
        "{identity:?}"
    );
    assert!(bob.is_device_verified(&alice_id, &new_id).await.unwrap());
    let devices: Vec<String> = bob
        .devices(&alice_id)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.device_id.to_string())
        .collect();
    assert_eq!(devices, [new_id.to_string()]);
}
