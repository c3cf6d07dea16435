//! Reading the key backup through the SDK against a Myelin server: keys
//! of undecryptable events fetched on demand (once each, a session the
//! backup lacks included), one room restored, a full restore reporting
//! its progress, old versions deleted, and a server that swaps the
//! authenticated backup for an unauthenticated one refused.

use std::time::Duration;

use myelin_sdk::{
    Client, Error, RoomSecurity, SyncSettings,
    machine::{BackupAlgorithm, BackupError, RestoreProgress, UtdCause, secret_storage::Unlock},
};
use myelin_tests::{Backend, backend_tests};
use reqwest::{Method, StatusCode};
use serde_json::{Map, Value, json};

use crate::{
    sdk_backup::{alice_and_bob, read_history, spec_backup_behind_its_back, stored_backup},
    sdk_e2ee::{second_device, shared_room, until_decrypted},
    sdk_support::{FaultyProxy, quick_sync},
};

backend_tests!(
    undecryptable_events_are_decrypted_with_keys_fetched_from_the_backup,
    one_room_is_restored_with_the_key_secret_storage_gave,
    a_full_restore_reports_its_progress,
    enabling_a_backup_again_deletes_the_old_version,
    a_server_swapping_in_an_unauthenticated_backup_is_refused
);

/// Incremental syncs that return at once.
fn no_wait() -> SyncSettings {
    SyncSettings {
        timeout: Duration::ZERO,
        ..quick_sync()
    }
}

/// Alice and Bob exchange a message each in `room`; Alice's backup gets
/// both sessions.
async fn backed_up_exchange(alice: &Client, bob: &Client, room_id: &myelin_sdk::ruma::RoomId) {
    alice.room(room_id).send_text("from alice").await.unwrap();
    until_decrypted(bob, "from alice").await;
    bob.room(room_id).send_text("from bob").await.unwrap();
    // The sync that brings Bob's key uploads both sessions after it.
    until_decrypted(alice, "from bob").await;
}

async fn undecryptable_events_are_decrypted_with_keys_fetched_from_the_backup(backend: Backend) {
    let (server, alice, bob, room) = alice_and_bob(backend).await;
    let room_id = room.room_id().to_owned();
    alice.enable_backup().await.unwrap();
    backed_up_exchange(&alice, &bob, &room_id).await;
    // A room whose key Alice's device gets but never syncs: not backed up.
    let elsewhere = shared_room(&bob, &alice, RoomSecurity::Encrypted).await;
    let elsewhere_id = elsewhere.room_id().to_owned();
    let lost = elsewhere.send_text("not backed up").await.unwrap();
    let ssss_key = alice.enable_secret_storage(None).await.unwrap();

    // Alice's laptop (behind a proxy that counts requests) takes the
    // backup key from secret storage, without restoring anything.
    let proxy = FaultyProxy::start(server.base_url.as_str()).await;
    let laptop = second_device(&proxy.url, &alice).await;
    laptop
        .unlock_secret_storage(Unlock::RecoveryKey(&ssss_key))
        .await
        .unwrap();
    assert!(laptop.backup_version().await.unwrap().is_some());

    // Its first sync sees three undecryptable events.
    let first = laptop.sync_once(&quick_sync()).await.unwrap();
    let mut causes: Vec<(String, UtdCause)> = first
        .undecryptable
        .iter()
        .map(|(room, utd)| (room.to_string(), utd.cause.clone()))
        .collect();
    causes.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(causes.len(), 3, "{causes:?}");
    assert!(causes.iter().all(|(_, c)| *c == UtdCause::MissingRoomKey));
    assert!(first.decrypted.is_empty());

    // The next one delivers the two backed-up ones decrypted.
    let second = laptop.sync_once(&no_wait()).await.unwrap();
    let mut bodies: Vec<&str> = second
        .decrypted
        .iter()
        .map(|d| d.content["body"].as_str().unwrap())
        .collect();
    bodies.sort_unstable();
    assert_eq!(bodies, ["from alice", "from bob"]);
    assert!(second.decrypted.iter().all(|d| d.room_id == room_id));

    // The third stays undecryptable, and its session is asked for once
    // (the backup said 404), however many syncs follow.
    for _ in 0..3 {
        let update = laptop.sync_once(&no_wait()).await.unwrap();
        assert!(update.decrypted.is_empty());
    }
    let kept = first
        .joined
        .iter()
        .filter(|r| r.room_id == elsewhere_id)
        .flat_map(|r| &r.timeline)
        .find(|e| e.event_id == lost)
        .unwrap()
        .clone();
    let utd = laptop
        .decrypt_event(&elsewhere_id, &kept)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(utd.cause, UtdCause::MissingRoomKey);
    laptop.sync_once(&no_wait()).await.unwrap();
    assert_eq!(proxy.count(&Method::GET, "/room_keys/keys/"), 3);
}

async fn one_room_is_restored_with_the_key_secret_storage_gave(backend: Backend) {
    let (server, alice, bob, room) = alice_and_bob(backend).await;
    let room_id = room.room_id().to_owned();
    alice.enable_backup().await.unwrap();
    backed_up_exchange(&alice, &bob, &room_id).await;
    let ssss_key = alice.enable_secret_storage(None).await.unwrap();

    let new = second_device(server.base_url.as_str(), &alice).await;
    let refused = new.restore_room_keys(&room_id).await.unwrap_err();
    assert!(
        matches!(refused, Error::Backup(BackupError::NoBackupKey)),
        "{refused:?}"
    );
    new.unlock_secret_storage(Unlock::RecoveryKey(&ssss_key))
        .await
        .unwrap();
    let restore = new.restore_room_keys(&room_id).await.unwrap();
    assert_eq!((restore.imported, restore.refused), (2, 0));
    let bodies: Vec<Option<String>> = read_history(&new, &room_id)
        .await
        .into_iter()
        .map(|read| read.ok().map(|(body, _)| body))
        .collect();
    assert_eq!(
        bodies,
        [Some("from alice".to_owned()), Some("from bob".to_owned())]
    );
}

async fn a_full_restore_reports_its_progress(backend: Backend) {
    let (server, alice, bob, room) = alice_and_bob(backend).await;
    let room_id = room.room_id().to_owned();
    let recovery_key = alice.enable_backup().await.unwrap();
    backed_up_exchange(&alice, &bob, &room_id).await;
    // 150 entries without the MAC (written by someone without the key):
    // refused, and enough for two batches.
    let (version, _) = stored_backup(&server, &alice).await;
    let forged: Map<String, Value> = (0..150)
        .map(|i| {
            let data = json!({"first_message_index": 0, "forwarded_count": 0, "is_verified": false,
                "session_data": {"ephemeral": "e", "ciphertext": "c", "mac": "m"}});
            (format!("forged{i}"), data)
        })
        .collect();
    let token = server
        .login(alice.user_id().unwrap().localpart(), None)
        .await
        .token;
    let url = server.v3(&format!(
        "/room_keys/keys?version={}",
        version["version"].as_str().unwrap()
    ));
    let body = json!({"rooms": {room_id.as_str(): {"sessions": forged}}});
    let (status, answer) = server
        .request(Method::PUT, url, Some(&token), Some(body))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");

    let new = second_device(server.base_url.as_str(), &alice).await;
    let mut seen: Vec<RestoreProgress> = Vec::new();
    let restore = new
        .restore_backup_with_progress(&recovery_key, |progress| seen.push(progress))
        .await
        .unwrap();
    assert_eq!(
        seen.iter().map(RestoreProgress::done).collect::<Vec<_>>(),
        [0, 100, 152]
    );
    assert!(seen.iter().all(|p| p.total == 152));
    assert!(seen.windows(2).all(|w| {
        w[0].imported <= w[1].imported
            && w[0].unchanged <= w[1].unchanged
            && w[0].refused <= w[1].refused
            && w[0].invalid <= w[1].invalid
    }));
    let last = seen.last().unwrap();
    assert_eq!(
        (last.imported, last.unchanged, last.refused, last.invalid),
        (
            restore.imported,
            restore.unchanged,
            restore.refused,
            restore.invalid
        )
    );
    assert_eq!((restore.imported, restore.refused), (2, 150));
}

async fn enabling_a_backup_again_deletes_the_old_version(backend: Backend) {
    let (server, alice, _bob, _room) = alice_and_bob(backend).await;
    alice.enable_backup().await.unwrap();
    let first = alice.backup_version().await.unwrap().unwrap();
    alice.enable_backup().await.unwrap();
    let second = alice.backup_version().await.unwrap().unwrap();
    assert_ne!(first, second);

    let token = server
        .login(alice.user_id().unwrap().localpart(), None)
        .await
        .token;
    let (status, answer) = server
        .request(
            Method::GET,
            server.v3(&format!("/room_keys/version/{first}")),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    let (current, _) = stored_backup(&server, &alice).await;
    assert_eq!(current["version"], second.as_str());
}

async fn a_server_swapping_in_an_unauthenticated_backup_is_refused(backend: Backend) {
    let (server, alice, _bob, _room) = alice_and_bob(backend).await;
    alice.enable_backup().await.unwrap();
    let ssss_key = alice.enable_secret_storage(None).await.unwrap();

    // The server makes a new current version of the spec's algorithm with
    // Alice's own signed auth_data (the signature does not cover the
    // algorithm): anyone could write keys into it.
    let (version, _) = stored_backup(&server, &alice).await;
    spec_backup_behind_its_back(&server, &alice, &version["auth_data"]).await;

    // Alice's device does not take it.
    let refused = alice.trust_current_backup().await.unwrap_err();
    assert!(
        matches!(refused, Error::Backup(BackupError::Downgrade)),
        "{refused:?}"
    );
    // Nor does a new device, which learns from secret storage that the
    // backup is authenticated, even with the right key.
    let new = second_device(server.base_url.as_str(), &alice).await;
    let unlocked = new
        .unlock_secret_storage(Unlock::RecoveryKey(&ssss_key))
        .await
        .unwrap();
    assert_eq!(new.backup_version().await.unwrap(), None);
    let backup_key = unlocked.backup_recovery_key.unwrap();
    let refused = new.restore_backup(&backup_key).await.unwrap_err();
    assert!(
        matches!(refused, Error::Backup(BackupError::Downgrade)),
        "{refused:?}"
    );

    // The user choosing the spec's algorithm is the only way past it.
    new.enable_backup_with(BackupAlgorithm::Spec).await.unwrap();
    assert!(new.backup_version().await.unwrap().is_some());
}
