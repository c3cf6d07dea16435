//! Key backup beyond upload and restore: keys fetched on demand for
//! undecryptable events, the `shared_history` flag carried through the
//! backup, old versions deleted, and the refusal of an unauthenticated
//! backup once the user's are authenticated (a server swapping versions).

use myelin_crypto::backup::{BackupDecryptionKey, EncryptedEntry};
use serde_json::Value;

use super::{
    ALICE, BOB, ROOM,
    backup::{
        backed_up_message, backing_up, backing_up_authenticated, enable_with, new_device_with_utd,
    },
    encrypted_room,
    server::{Client, FakeServer, body},
};
use crate::machine::{BackupAlgorithm, BackupError, MISSING_RETRY_MS, Request, UtdCause};

/// `device` takes the backup key (as from secret storage) without
/// downloading the backup.
fn use_backup_key(server: &FakeServer, device: &mut Client, recovery_key: &str) {
    let (version, _) = server.backup("1");
    let backup = device.machine.open_backup(recovery_key, &version).unwrap();
    device.machine.finish_restore(backup);
    device.save();
}

#[test]
fn an_undecryptable_event_is_decrypted_with_a_key_fetched_from_the_backup() {
    let (mut server, mut alice, mut bob, _, recovery_key) = backing_up();
    let old = backed_up_message(&mut server, &mut alice, &mut bob, "fetched on demand");
    let mut new = new_device_with_utd(&mut server, &old);
    use_backup_key(&server, &mut new, &recovery_key);

    // The fetch goes out with the next requests; what it decrypts comes
    // out of the next sync.
    new.send_outgoing(&mut server);
    assert_eq!(server.backup_fetches, 1);
    let output = new.sync(&mut server, vec![]);
    let late: Vec<&str> = output.late_decryptions.iter().map(body).collect();
    assert_eq!(late, ["fetched on demand"]);
    assert_eq!(new.machine.pending_utd_count(), 0);
    assert!(new.sync(&mut server, vec![]).late_decryptions.is_empty());
}

#[test]
fn a_session_the_backup_lacks_is_asked_for_once_in_a_while() {
    let (mut server, mut alice, mut bob, _, recovery_key) = backing_up();
    let old = backed_up_message(&mut server, &mut alice, &mut bob, "in the backup");
    let mut new = new_device_with_utd(&mut server, &old);
    server.backup_keys.clear(); // the backup lost it
    use_backup_key(&server, &mut new, &recovery_key);

    let fetch = new
        .machine
        .outgoing_requests()
        .into_iter()
        .find(|r| matches!(r.request, Request::BackupKeysFetch { .. }))
        .unwrap();
    // Not asked again while the first request is out.
    assert!(
        !new.machine
            .outgoing_requests()
            .iter()
            .any(|r| matches!(r.request, Request::BackupKeysFetch { .. }))
    );
    assert!(!new.machine.mark_backup_gone(&fetch.request_id).unwrap());
    for _ in 0..3 {
        new.sync(&mut server, vec![]);
    }
    assert_eq!(server.backup_fetches, 0, "a 404 is remembered");
    assert_eq!(
        new.decrypt(ROOM, &old).unwrap_err().cause,
        UtdCause::MissingRoomKey
    );

    // After a while it is asked once more.
    new.now_ms += MISSING_RETRY_MS + 1;
    new.sync(&mut server, vec![]);
    new.sync(&mut server, vec![]);
    assert_eq!(server.backup_fetches, 1);
}

#[test]
fn several_missing_sessions_of_a_room_are_fetched_with_one_request() {
    let (mut server, mut alice, mut bob, mut bob2, recovery_key) = backing_up();
    let events = [
        backed_up_message(&mut server, &mut alice, &mut bob, "one"),
        backed_up_message(&mut server, &mut alice, &mut bob2, "two"),
    ];
    let third = alice.send(&mut server, ROOM, "three");
    alice.send_outgoing(&mut server);
    let mut new = new_device_with_utd(&mut server, &events[0]);
    for event in [&events[1], &third] {
        assert!(new.decrypt(ROOM, event).is_err());
    }
    use_backup_key(&server, &mut new, &recovery_key);
    let fetches: Vec<Request> = new
        .machine
        .outgoing_requests()
        .into_iter()
        .map(|r| r.request)
        .filter(|r| matches!(r, Request::BackupKeysFetch { .. }))
        .collect();
    assert!(
        matches!(
            &fetches[..],
            [Request::BackupKeysFetch {
                session_id: None,
                ..
            }]
        ),
        "{fetches:?}"
    );
}

#[test]
fn the_shared_history_flag_goes_into_the_backup_and_comes_back() {
    let (mut server, mut alice, mut bob, _, recovery_key) = backing_up();
    let old = backed_up_message(&mut server, &mut alice, &mut bob, "shared history");

    // The entry's plaintext carries the flag (the room's history is shared).
    let key = BackupDecryptionKey::from_recovery_key(&recovery_key).unwrap();
    let entry = server.backup_keys["1"][ROOM].values().next().unwrap();
    let encrypted = EncryptedEntry::from_json(&entry["session_data"]).unwrap();
    let plaintext: Value = serde_json::from_slice(&key.decrypt(&encrypted).unwrap()).unwrap();
    assert_eq!(plaintext["org.matrix.msc3061.shared_history"], true);

    let mut new = new_device_with_utd(&mut server, &old);
    let (version, keys) = server.backup("1");
    new.machine
        .restore_backup(&recovery_key, &version, &keys)
        .unwrap();
    new.save();
    new.reload();
    assert!(new.machine.inbound.values().all(|s| s.is_history_shared()));
    assert_eq!(new.machine.inbound.len(), 1);
}

#[test]
fn a_replaced_backup_version_is_deleted_after_the_new_one_exists() {
    let (mut server, mut alice, _, _, _) = backing_up();
    let (create, _) = alice
        .machine
        .enable_backup_with(BackupAlgorithm::Spec)
        .unwrap();
    alice.save();
    assert!(server.deleted_backup_versions.is_empty());
    alice.answer(&mut server, &create);
    alice.save();
    assert_eq!(alice.machine.backup_version(), Some("2"));
    // A restart before the deletion went out does not forget it.
    alice.reload();
    alice.send_outgoing(&mut server);
    assert_eq!(server.deleted_backup_versions, ["1"]);
    alice.reload();
    alice.send_outgoing(&mut server);
    assert_eq!(server.deleted_backup_versions, ["1"], "deleted once");
}

#[test]
fn a_server_swapping_the_authenticated_backup_for_a_spec_one_is_refused() {
    let (mut server, mut alice, mut bob, _, recovery_key) = backing_up_authenticated();
    backed_up_message(&mut server, &mut alice, &mut bob, "authenticated");

    // The server makes version 2: Alice's own signed auth_data, the
    // spec's algorithm (the signature does not cover it).
    let mut swapped = server.backup_versions[0].clone();
    swapped["algorithm"] = "m.megolm_backup.v1.curve25519-aes-sha2".into();
    swapped["version"] = "2".into();
    server.backup_versions.push(swapped.clone());
    assert!(matches!(
        alice.machine.trust_backup(&swapped),
        Err(BackupError::Downgrade)
    ));
    assert_eq!(alice.machine.backup_version(), Some("1"));

    // A new device told by secret storage that the backup is
    // authenticated refuses to restore from it, even with the right key.
    let mut new = Client::new(&mut server, ALICE, "ALICENEW");
    new.sync(&mut server, vec![encrypted_room(&[ALICE, BOB])]);
    new.machine.pin_authenticated_backup();
    assert!(matches!(
        new.machine.open_backup(&recovery_key, &swapped),
        Err(BackupError::Downgrade)
    ));
    new.save();
    new.reload();
    assert!(new.machine.requires_authenticated_backup());

    // The user choosing the spec's algorithm lifts the pin.
    enable_spec_backup(&mut server, &mut alice);
    assert!(!alice.machine.requires_authenticated_backup());
    alice.machine.trust_backup(&swapped).unwrap();
    assert_eq!(alice.machine.backup_version(), Some("2"));
}

/// Alice enables a spec-algorithm backup; the server creates version 3.
fn enable_spec_backup(server: &mut FakeServer, alice: &mut Client) {
    let (create, _) = alice
        .machine
        .enable_backup_with(BackupAlgorithm::Spec)
        .unwrap();
    alice.save();
    alice.answer(server, &create);
    alice.save();
}

#[test]
fn without_the_pin_a_spec_backup_is_trusted() {
    // The same swap before any authenticated backup: nothing to pin, the
    // signed version is taken (what the pin changes).
    let mut server = FakeServer::default();
    let (mut alice, _, _) = super::alice_and_bob(&mut server);
    enable_with(&mut server, &mut alice, BackupAlgorithm::Spec);
    assert!(!alice.machine.requires_authenticated_backup());
    let version = server.backup_versions[0].clone();
    alice.machine.trust_backup(&version).unwrap();
}
