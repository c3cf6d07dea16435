//! Server-side key backup through the SDK against a Myelin server: Alice
//! backs up her room keys, logs in on a brand-new device and reads her old
//! messages with the recovery key (not with another key); the server holds
//! only ciphertext; a backup replaced behind a device's back stops its
//! uploads.

use myelin_sdk::{
    Client, Error, Room, RoomSecurity,
    machine::{BackupAlgorithm, BackupError, LocalTrust, UtdCause},
    myelin_crypto::{backup::BackupDecryptionKey, key_export::KeyExportError},
    ruma::RoomId,
};
use myelin_tests::{Backend, TestServer, backend_tests, random_suffix};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    sdk_e2ee::{second_device, shared_room, until_decrypted},
    sdk_support::{Fault, FaultyProxy, quick_sync, registered, registered_on, sync_until},
};

backend_tests!(
    a_new_device_reads_old_messages_with_the_recovery_key_only,
    the_recovery_key_is_not_lost_when_the_backup_cannot_be_created_at_once,
    a_replaced_backup_stops_the_uploads,
    another_device_backs_up_once_it_verified_the_creator,
    a_key_export_file_carries_history_to_a_new_device
);

/// Alice's backup, read with a token of her own (the server's view).
pub(crate) async fn stored_backup(server: &TestServer, alice: &Client) -> (Value, Value) {
    let localpart = alice.user_id().unwrap().localpart().to_owned();
    let token = server.login(&localpart, None).await.token;
    let (status, version) = server
        .request(
            Method::GET,
            server.v3("/room_keys/version"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{version}");
    let url = server.v3(&format!(
        "/room_keys/keys?version={}",
        version["version"].as_str().unwrap()
    ));
    let (status, keys) = server.request(Method::GET, url, Some(&token), None).await;
    assert_eq!(status, StatusCode::OK, "{keys}");
    (version, keys)
}

/// A new current backup version of the spec's algorithm with `auth_data`,
/// made for Alice behind her device's back (by another client, or the
/// server); returns the server's answer.
pub(crate) async fn spec_backup_behind_its_back(
    server: &TestServer,
    alice: &Client,
    auth_data: &Value,
) -> Value {
    let localpart = alice.user_id().unwrap().localpart().to_owned();
    let token = server.login(&localpart, None).await.token;
    let body = json!({"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2",
                      "auth_data": auth_data});
    let (status, answer) = server
        .request(
            Method::POST,
            server.v3("/room_keys/version"),
            Some(&token),
            Some(body),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer
}

/// Every encrypted message in the room's history, decrypted by `client`:
/// body and whether the key was forwarded, or the failure.
pub(crate) async fn read_history(
    client: &Client,
    room_id: &RoomId,
) -> Vec<Result<(String, bool), UtdCause>> {
    let history = client
        .room(room_id)
        .messages(None, 100)
        .await
        .unwrap()
        .events;
    let mut read = Vec::new();
    for event in history
        .iter()
        .filter(|e| e.event_type == "m.room.encrypted")
    {
        let decryption = client.decrypt_event(room_id, event).await.unwrap();
        read.push(
            decryption
                .map(|d| (d.content["body"].as_str().unwrap().to_owned(), d.forwarded))
                .map_err(|utd| utd.cause),
        );
    }
    read.sort_by_key(|r| format!("{r:?}"));
    read
}

/// A server with Alice and Bob in an encrypted room.
pub(crate) async fn alice_and_bob(backend: Backend) -> (TestServer, Client, Client, Room) {
    let server = TestServer::start(backend).await;
    let url = server.base_url.as_str();
    let suffix = &random_suffix()[..8];
    let alice = registered(url, &format!("alice{suffix}")).await;
    let bob = registered(url, &format!("bob{suffix}")).await;
    let room = shared_room(&alice, &bob, RoomSecurity::Encrypted).await;
    (server, alice, bob, room)
}

async fn a_new_device_reads_old_messages_with_the_recovery_key_only(backend: Backend) {
    let (server, alice, bob, room) = alice_and_bob(backend).await;
    let url = server.base_url.as_str();
    let room_id = room.room_id().to_owned();

    let recovery_key = alice.enable_backup().await.unwrap();
    assert!(alice.backup_version().await.unwrap().is_some());
    room.send_text("from alice").await.unwrap();
    until_decrypted(&bob, "from alice").await;
    bob.room(&room_id).send_text("from bob").await.unwrap();
    // The sync that brings Bob's key uploads both sessions after it.
    until_decrypted(&alice, "from bob").await;

    let (version, keys) = stored_backup(&server, &alice).await;
    assert_eq!(version["count"], 2, "{version}");
    let sessions = keys["rooms"][room_id.as_str()]["sessions"]
        .as_object()
        .unwrap();
    assert_eq!(sessions.len(), 2);
    let stored = keys.to_string();
    for plaintext in [
        "session_key",
        "sender_claimed_keys",
        "m.megolm.v1.aes-sha2",
        "from bob",
    ] {
        assert!(!stored.contains(plaintext), "the server sees {plaintext}");
    }

    // A brand-new device of Alice's: the old messages do not decrypt.
    let new = second_device(url, &alice).await;
    sync_until(&new, |update| {
        update.joined.iter().any(|r| r.room_id == room_id)
    })
    .await;
    let before = read_history(&new, &room_id).await;
    assert_eq!(before, vec![Err(UtdCause::MissingRoomKey); 2]);

    // Another recovery key opens nothing.
    let wrong = BackupDecryptionKey::new().to_recovery_key();
    let refused = new.restore_backup(&wrong).await.unwrap_err();
    assert!(
        matches!(refused, Error::Backup(BackupError::WrongRecoveryKey)),
        "{refused:?}"
    );
    assert_eq!(new.backup_version().await.unwrap(), None);
    assert_eq!(read_history(&new, &room_id).await, before);

    // The right one restores both sessions. The backup is authenticated:
    // only Alice's devices could have written its entries, so the keys
    // count as their senders' (not forwarded), as they did there.
    let restore = new.restore_backup(&recovery_key).await.unwrap();
    assert_eq!(
        (restore.imported, restore.invalid, restore.refused),
        (2, 0, 0)
    );
    let mut late: Vec<&str> = restore
        .late_decryptions
        .iter()
        .map(|d| d.content["body"].as_str().unwrap())
        .collect();
    late.sort_unstable();
    assert_eq!(late, ["from alice", "from bob"]);
    assert_eq!(
        read_history(&new, &room_id).await,
        vec![
            Ok(("from alice".to_owned(), false)),
            Ok(("from bob".to_owned(), false))
        ]
    );
    assert_eq!(
        new.backup_version().await.unwrap(),
        version["version"].as_str().map(str::to_owned)
    );
}

async fn a_replaced_backup_stops_the_uploads(backend: Backend) {
    let (server, alice, bob, room) = alice_and_bob(backend).await;
    alice.enable_backup().await.unwrap();

    // Someone (another client of Alice's) makes a new backup version.
    let auth_data = json!({"public_key": "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo"});
    let answer = spec_backup_behind_its_back(&server, &alice, &auth_data).await;
    let localpart = alice.user_id().unwrap().localpart().to_owned();
    let token = server.login(&localpart, None).await.token;

    // Alice's next upload is refused as for a stale version: she stops.
    room.send_text("after the replacement").await.unwrap();
    until_decrypted(&bob, "after the replacement").await;
    sync_until(&alice, |_| true).await;
    assert_eq!(alice.backup_version().await.unwrap(), None);
    let (status, keys) = server
        .request(
            Method::GET,
            server.v3(&format!(
                "/room_keys/keys?version={}",
                answer["version"].as_str().unwrap()
            )),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{keys}");
    assert_eq!(
        keys["rooms"],
        json!({}),
        "nothing went into the new version"
    );
}

async fn another_device_backs_up_once_it_verified_the_creator(backend: Backend) {
    let (server, alice, _bob, room) = alice_and_bob(backend).await;
    let room_id = room.room_id().to_owned();
    // Of the spec's algorithm: a device without the backup key cannot
    // write to an authenticated one.
    alice
        .enable_backup_with(BackupAlgorithm::Spec)
        .await
        .unwrap();
    let laptop = second_device(server.base_url.as_str(), &alice).await;
    sync_until(&laptop, |update| {
        update.joined.iter().any(|r| r.room_id == room_id)
    })
    .await;

    let refused = laptop.trust_current_backup().await.unwrap_err();
    assert!(
        matches!(refused, Error::Backup(BackupError::Untrusted)),
        "{refused:?}"
    );
    let alice_id = alice.user_id().unwrap();
    let first_device = alice.session().unwrap().device_id;
    assert!(
        laptop
            .set_device_trust(&alice_id, &first_device, LocalTrust::Verified)
            .await
            .unwrap()
    );
    let version = laptop.trust_current_backup().await.unwrap();
    assert_eq!(alice.backup_version().await.unwrap(), Some(version));

    // The laptop's own session goes up after its next sync.
    laptop
        .room(&room_id)
        .send_text("from the laptop")
        .await
        .unwrap();
    sync_until(&laptop, |_| true).await;
    let (info, keys) = stored_backup(&server, &alice).await;
    assert_eq!(info["count"], 1, "{keys}");
}

/// The server fails the backup's creation: the recovery key is returned all
/// the same (it is already saved), the creation is asked again after the
/// next sync with the same key, and that key opens the backup.
async fn the_recovery_key_is_not_lost_when_the_backup_cannot_be_created_at_once(backend: Backend) {
    let server = TestServer::start(backend).await;
    let url = server.base_url.as_str();
    let proxy = FaultyProxy::start(url).await;
    let suffix = &random_suffix()[..8];
    let alice = registered_on(
        &proxy.url,
        &format!("alice{suffix}"),
        std::sync::Arc::new(myelin_sdk::MemoryStore::new()),
    )
    .await;
    let bob = registered(url, &format!("bob{suffix}")).await;
    let room = shared_room(&alice, &bob, RoomSecurity::Encrypted).await;
    let room_id = room.room_id().to_owned();
    room.send_text("before the backup").await.unwrap();

    let refused = r#"{"errcode":"M_UNKNOWN","error":"not now"}"#.to_owned();
    proxy.inject(
        Method::POST,
        "/room_keys/version",
        Fault::Answer(400, refused),
        1,
    );
    let recovery_key = alice.enable_backup().await.unwrap();
    assert_eq!(alice.backup_version().await.unwrap(), None);

    // The server is back: the next sync creates it, the one after uploads
    // the keys.
    let mut synced = alice.sync_stream(quick_sync());
    for _ in 0..6 {
        if proxy.count(&Method::PUT, "/room_keys/keys") > 0 {
            break;
        }
        synced.next().await.unwrap();
    }
    assert!(alice.backup_version().await.unwrap().is_some());
    assert_eq!(proxy.count(&Method::POST, "/room_keys/version"), 2);

    let new = second_device(url, &alice).await;
    sync_until(&new, |update| {
        update.joined.iter().any(|r| r.room_id == room_id)
    })
    .await;
    let restore = new.restore_backup(&recovery_key).await.unwrap();
    assert_eq!(restore.imported, 1);
}

async fn a_key_export_file_carries_history_to_a_new_device(backend: Backend) {
    let (server, alice, bob, room) = alice_and_bob(backend).await;
    let room_id = room.room_id().to_owned();
    room.send_text("from alice").await.unwrap();
    until_decrypted(&bob, "from alice").await;
    bob.room(&room_id).send_text("from bob").await.unwrap();
    until_decrypted(&alice, "from bob").await;
    let file = alice
        .export_room_keys("a long export passphrase")
        .await
        .unwrap();
    assert!(file.starts_with("-----BEGIN MEGOLM SESSION DATA-----"));

    let new = second_device(&server.base_url, &alice).await;
    sync_until(&new, |update| {
        update.joined.iter().any(|r| r.room_id == room_id)
    })
    .await;
    let before = read_history(&new, &room_id).await;
    assert_eq!(before, vec![Err(UtdCause::MissingRoomKey); 2]);

    let refused = new.import_room_keys(&file, "not the passphrase").await;
    assert!(
        matches!(
            refused,
            Err(Error::KeyExport(KeyExportError::WrongPassphrase))
        ),
        "{refused:?}"
    );
    assert_eq!(read_history(&new, &room_id).await, before);

    let import = new
        .import_room_keys(&file, "a long export passphrase")
        .await
        .unwrap();
    assert_eq!((import.total, import.imported, import.invalid), (2, 2, 0));
    assert_eq!(
        read_history(&new, &room_id).await,
        vec![
            Ok(("from alice".to_owned(), true)),
            Ok(("from bob".to_owned(), true))
        ]
    );
}
