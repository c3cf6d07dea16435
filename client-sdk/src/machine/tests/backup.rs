//! Key backup: uploads once per session, restore on a new device, and a
//! server that serves a wrong, damaged or forged backup; the spec algorithm
//! and the authenticated one (MSC4048), which refuses what the server writes.

use myelin_crypto::{
    backup::{BackupDecryptionKey, BackupEncryptionKey, EncryptedEntry},
    verify_json_signature,
};
use ruma::serde::{Base64, base64::Standard};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::{
    ALICE, BOB, ROOM, alice_and_bob, encrypted_room,
    server::{Client, FakeServer, body},
};
use crate::machine::{BackupAlgorithm, BackupError, BackupRestore, LocalTrust, UtdCause};

/// Alice and Bob (two devices) in a room; Alice has enabled a backup
/// (version 1). Returns them and the recovery key.
pub(super) fn backing_up() -> (FakeServer, Client, Client, Client, Zeroizing<String>) {
    let mut server = FakeServer::default();
    let (mut alice, bob, bob2) = alice_and_bob(&mut server);
    let recovery_key = enable(&mut server, &mut alice);
    (server, alice, bob, bob2, recovery_key)
}

/// Alice enables a backup and the server creates version 1.
fn enable(server: &mut FakeServer, alice: &mut Client) -> Zeroizing<String> {
    enable_with(server, alice, BackupAlgorithm::Spec)
}

/// Alice enables a backup of `algorithm` and the server creates version 1.
pub(super) fn enable_with(
    server: &mut FakeServer,
    alice: &mut Client,
    algorithm: BackupAlgorithm,
) -> Zeroizing<String> {
    let (request, recovery_key) = alice.machine.enable_backup_with(algorithm).unwrap();
    alice.save();
    alice.answer(server, &request);
    alice.save();
    assert_eq!(alice.machine.backup_version(), Some("1"));
    recovery_key
}

/// The room's entries in backup version 1, for a test to tamper with.
fn stored_room(server: &mut FakeServer) -> &mut serde_json::Map<String, Value> {
    server
        .backup_keys
        .get_mut("1")
        .unwrap()
        .get_mut(ROOM)
        .unwrap()
}

fn backed_up_sessions(server: &FakeServer) -> Vec<String> {
    server.backup_keys["1"][ROOM].keys().cloned().collect()
}

/// Bob's phone sends `text`; Alice receives the key and backs it up.
pub(super) fn backed_up_message(
    server: &mut FakeServer,
    alice: &mut Client,
    bob: &mut Client,
    text: &str,
) -> Value {
    let event = bob.send(server, ROOM, text);
    alice.sync(server, vec![]);
    alice.send_outgoing(server);
    event
}

/// Restores backup version 1 as the server serves it now.
fn restore(server: &FakeServer, device: &mut Client, recovery_key: &str) -> BackupRestore {
    let (version, keys) = server.backup("1");
    let restore = device
        .machine
        .restore_backup(recovery_key, &version, &keys)
        .unwrap();
    device.save();
    restore
}

/// A brand-new device of Alice's in the room, holding `event` undecryptable.
pub(super) fn new_device_with_utd(server: &mut FakeServer, event: &Value) -> Client {
    let mut new = Client::new(server, ALICE, "ALICENEW");
    new.sync(server, vec![encrypted_room(&[ALICE, BOB])]);
    let utd = new.decrypt(ROOM, event).unwrap_err();
    assert_eq!(utd.cause, UtdCause::MissingRoomKey);
    new
}

#[test]
fn the_backup_version_is_signed_by_the_device_and_each_session_uploaded_once() {
    let (mut server, mut alice, mut bob, _, _) = backing_up();

    let info = &server.backup_versions[0];
    assert_eq!(info["algorithm"], "m.megolm_backup.v1.curve25519-aes-sha2");
    let ed25519 = alice.machine.identity_keys().ed25519;
    verify_json_signature(
        &ed25519,
        ALICE,
        "ed25519:ALICEDEV",
        info["auth_data"].as_object().unwrap(),
    )
    .unwrap();

    // Alice's own session and Bob's both go up, once.
    alice.send(&mut server, ROOM, "from alice");
    let from_bob = bob.send(&mut server, ROOM, "from bob");
    alice.sync(&mut server, vec![]);
    alice.decrypt(ROOM, &from_bob).unwrap();
    alice.send_outgoing(&mut server);
    assert_eq!(backed_up_sessions(&server).len(), 2);
    let uploads = server.backup_uploads;
    alice.send_outgoing(&mut server);
    alice.sync(&mut server, vec![]);
    assert_eq!(server.backup_uploads, uploads, "nothing new to upload");

    // The tracking survives a restart.
    alice.reload();
    alice.send_outgoing(&mut server);
    assert_eq!(server.backup_uploads, uploads);
    assert_eq!(alice.machine.backup_version(), Some("1"));
}

#[test]
fn the_server_sees_no_key_material() {
    let (mut server, mut alice, _, _, _) = backing_up();
    alice.send(&mut server, ROOM, "secret");
    alice.send_outgoing(&mut server);
    let stored = serde_json::to_string(&server.backup_keys).unwrap();
    for plaintext_field in ["session_key", "sender_claimed_keys", "m.megolm.v1.aes-sha2"] {
        assert!(!stored.contains(plaintext_field), "{plaintext_field}");
    }
    assert_eq!(backed_up_sessions(&server).len(), 1);
}

#[test]
fn a_gone_backup_is_disabled() {
    let (mut server, mut alice, _, _, _) = backing_up();
    alice.send(&mut server, ROOM, "hello");
    let requests = alice.machine.outgoing_requests();
    let upload = requests
        .iter()
        .find(|r| matches!(r.request, crate::machine::Request::BackupKeysUpload { .. }))
        .unwrap();
    assert!(alice.machine.mark_backup_gone(&upload.request_id).unwrap());
    alice.save();
    assert_eq!(alice.machine.backup_version(), None);
    alice.reload();
    assert_eq!(alice.machine.backup_version(), None);
    assert!(alice.machine.outgoing_requests().is_empty());
}

#[test]
fn a_new_device_restores_old_sessions_as_forwarded_keys() {
    let (mut server, mut alice, mut bob, _, recovery_key) = backing_up();
    let old = backed_up_message(&mut server, &mut alice, &mut bob, "before the new device");

    let mut new = new_device_with_utd(&mut server, &old);
    let restore = restore(&server, &mut new, &recovery_key);
    assert_eq!((restore.imported, restore.invalid), (1, 0));
    assert_eq!(restore.late_decryptions.len(), 1);
    let event = &restore.late_decryptions[0];
    assert_eq!(body(event), "before the new device");
    assert!(event.forwarded, "a backed-up key is not the sender's word");
    assert_eq!(new.machine.pending_utd_count(), 0);

    // The new device now uploads to the same backup, without sending the
    // restored sessions back.
    assert_eq!(new.machine.backup_version(), Some("1"));
    let uploads = server.backup_uploads;
    new.send_outgoing(&mut server);
    assert_eq!(server.backup_uploads, uploads);
    new.reload();
    let again = new.decrypt(ROOM, &old).unwrap();
    assert!(again.forwarded);
}

#[test]
fn a_wrong_or_mistyped_recovery_key_restores_nothing() {
    let (mut server, mut alice, mut bob, _, recovery_key) = backing_up();
    let old = backed_up_message(&mut server, &mut alice, &mut bob, "old");
    let mut new = new_device_with_utd(&mut server, &old);
    let (version, keys) = server.backup("1");

    let other = BackupDecryptionKey::new().to_recovery_key();
    let wrong = new.machine.restore_backup(&other, &version, &keys);
    assert!(matches!(wrong, Err(BackupError::WrongRecoveryKey)));

    let mut typo: Vec<char> = recovery_key.chars().collect();
    typo[5] = if typo[5] == 'a' { 'b' } else { 'a' };
    let typo: String = typo.into_iter().collect();
    let mistyped = new.machine.restore_backup(&typo, &version, &keys);
    assert!(matches!(mistyped, Err(BackupError::InvalidRecoveryKey(_))));

    assert_eq!(new.machine.pending_utd_count(), 1);
    assert_eq!(new.machine.backup_version(), None);
    assert!(new.decrypt(ROOM, &old).is_err());
}

fn base64_decode(text: &str) -> Vec<u8> {
    Base64::<Standard>::parse(text).unwrap().into_inner()
}

fn base64_encode(bytes: &[u8]) -> String {
    Base64::<Standard, _>::new(bytes).encode()
}

/// Encrypts `session` to the backup's public key, as anyone can.
fn forge(public_key: &BackupEncryptionKey, session: &Value) -> Value {
    let entry = public_key
        .encrypt(&serde_json::to_vec(session).unwrap())
        .unwrap();
    json!({"first_message_index": 0, "forwarded_count": 0, "is_verified": false,
           "session_data": entry.to_json()})
}

#[test]
fn damaged_and_forged_entries_are_skipped_without_breaking_the_others() {
    let (mut server, mut alice, mut bob, mut bob2, recovery_key) = backing_up();
    let from_phone = bob.send(&mut server, ROOM, "phone");
    let from_laptop = bob2.send(&mut server, ROOM, "laptop");
    alice.sync(&mut server, vec![]);
    alice.send_outgoing(&mut server);
    let sessions = backed_up_sessions(&server);
    assert_eq!(sessions.len(), 2);
    let phone_session = from_phone["content"]["session_id"].as_str().unwrap();
    let laptop_session = from_laptop["content"]["session_id"].as_str().unwrap();

    // The server damages the phone's entry, files a copy of the laptop's
    // entry under a made-up id, and adds garbage.
    let public_key = BackupEncryptionKey::from_auth_data(
        server.backup_versions[0]["auth_data"].as_object().unwrap(),
    )
    .unwrap();
    let room = stored_room(&mut server);
    let mut damaged = EncryptedEntry::from_json(&room[phone_session]["session_data"]).unwrap();
    let mut mac = base64_decode(&damaged.mac);
    mac[0] ^= 1;
    damaged.mac = base64_encode(&mac);
    room[phone_session]["session_data"] = Value::Object(damaged.to_json());
    let laptop_entry = room[laptop_session].clone();
    room.insert("made-up".to_owned(), laptop_entry);
    room.insert(
        "garbage".to_owned(),
        json!({"session_data": {"ephemeral": 1}}),
    );
    room.insert(
        "not-a-room-key".to_owned(),
        forge(
            &public_key,
            &json!({"algorithm": "m.olm.v1.curve25519-aes-sha2"}),
        ),
    );

    let mut new = new_device_with_utd(&mut server, &from_phone);
    assert!(new.decrypt(ROOM, &from_laptop).is_err());
    let restore = restore(&server, &mut new, &recovery_key);
    assert_eq!((restore.imported, restore.invalid), (1, 4));
    assert_eq!(restore.late_decryptions.len(), 1);
    assert_eq!(body(&restore.late_decryptions[0]), "laptop");
    assert_eq!(
        new.decrypt(ROOM, &from_phone).unwrap_err().cause,
        UtdCause::MissingRoomKey
    );
}

#[test]
fn a_forged_copy_of_a_known_session_does_not_replace_it() {
    let (mut server, mut alice, mut bob, _, recovery_key) = backing_up();
    let old = backed_up_message(&mut server, &mut alice, &mut bob, "old");

    // The new device gets Bob's session from him at a later index.
    let mut new = new_device_with_utd(&mut server, &old);
    bob.sync(&mut server, vec![]);
    let later = bob.send(&mut server, ROOM, "later");
    new.sync(&mut server, vec![]);
    let decrypted = new.decrypt(ROOM, &later).unwrap();
    assert!(!decrypted.forwarded);

    // The server swaps the backed-up copy for one with the same session id
    // and sender but another ratchet, from index 0.
    let session_id = old["content"]["session_id"].as_str().unwrap();
    let genuine_key = BackupDecryptionKey::from_recovery_key(&recovery_key).unwrap();
    let room = stored_room(&mut server);
    let entry = EncryptedEntry::from_json(&room[session_id]["session_data"]).unwrap();
    let mut session: Value = serde_json::from_slice(&genuine_key.decrypt(&entry).unwrap()).unwrap();
    let mut exported = base64_decode(session["session_key"].as_str().unwrap());
    exported[10] ^= 0xff; // inside the ratchet; the ed25519 key (the id) is kept
    session["session_key"] = json!(base64_encode(&exported));
    room.insert(
        session_id.to_owned(),
        forge(&genuine_key.encryption_key(), &session),
    );

    let restore = restore(&server, &mut new, &recovery_key);
    assert_eq!((restore.imported, restore.unchanged), (0, 1));
    assert!(restore.late_decryptions.is_empty());
    // Still Bob's own copy, still not reaching back.
    assert!(!new.decrypt(ROOM, &later).unwrap().forwarded);
    assert_eq!(
        new.decrypt(ROOM, &old).unwrap_err().cause,
        UtdCause::SentBeforeWeJoined
    );
}

#[test]
fn another_device_uploads_to_the_backup_only_once_it_verified_its_creator() {
    let (mut server, mut alice, _, _, _) = backing_up();
    let mut laptop = Client::new(&mut server, ALICE, "ALICELAPTOP");
    laptop.sync(&mut server, vec![encrypted_room(&[ALICE, BOB])]);
    let (version, _) = server.backup("1");

    // Unverified, the creator's signature is not enough.
    let refused = laptop.machine.trust_backup(&version);
    assert!(matches!(refused, Err(BackupError::Untrusted)));
    assert_eq!(laptop.machine.backup_version(), None);

    // A public key the server swapped in keeps the old signature, which
    // then no longer verifies.
    assert!(laptop.machine.set_device_trust(
        super::user_id(ALICE),
        super::device_id("ALICEDEV"),
        LocalTrust::Verified
    ));
    let mut swapped = version.clone();
    swapped["auth_data"]["public_key"] =
        json!(BackupDecryptionKey::new().encryption_key().to_base64());
    let refused = laptop.machine.trust_backup(&swapped);
    assert!(matches!(refused, Err(BackupError::Untrusted)));

    // Verified and intact: the laptop's own session goes into the backup,
    // and it survives a restart.
    laptop.machine.trust_backup(&version).unwrap();
    laptop.save();
    let sent = laptop.send(&mut server, ROOM, "from the laptop");
    laptop.send_outgoing(&mut server);
    let session_id = sent["content"]["session_id"].as_str().unwrap();
    assert!(backed_up_sessions(&server).iter().any(|s| s == session_id));
    laptop.reload();
    assert_eq!(laptop.machine.backup_version(), Some("1"));

    // Alice's first device, which signed it, trusts it too.
    alice.machine.trust_backup(&version).unwrap();
    assert_eq!(alice.machine.backup_version(), Some("1"));
}

#[test]
fn a_restored_key_from_a_verified_sender_does_not_show_as_verified() {
    let (mut server, mut alice, mut bob, _, recovery_key) = backing_up();
    let old = backed_up_message(&mut server, &mut alice, &mut bob, "from the backup");
    let mut new = new_device_with_utd(&mut server, &old);
    // The new device verified Bob's phone: what Bob's own Olm session
    // brings shows as verified, but not a key anyone with the backup's
    // public key (the server included) could have written.
    assert!(new.machine.set_device_trust(
        super::user_id(BOB),
        super::device_id("BOBPHONE"),
        LocalTrust::Verified
    ));
    let restore = restore(&server, &mut new, &recovery_key);
    let event = &restore.late_decryptions[0];
    assert_eq!(body(event), "from the backup");
    assert_eq!(
        event.verification,
        crate::machine::VerificationState::AuthenticityNotGuaranteed
    );
    new.reload();
    let again = new.decrypt(ROOM, &old).unwrap();
    assert_eq!(
        again.verification,
        crate::machine::VerificationState::AuthenticityNotGuaranteed
    );
}

#[test]
fn a_new_backup_key_survives_a_failed_creation_and_a_restart() {
    let mut server = FakeServer::default();
    let (mut alice, mut bob, _) = alice_and_bob(&mut server);
    let event = bob.send(&mut server, ROOM, "keep me");
    alice.sync(&mut server, vec![]);
    // The recovery key is handed out (and shown) with the request; the
    // request fails, then the process restarts.
    let (request, recovery_key) = alice.machine.enable_backup().unwrap();
    alice.save();
    alice
        .machine
        .mark_request_failed(&request.request_id)
        .unwrap();
    alice.save();
    alice.reload();
    // The same key's backup is created at the next chance, and the key the
    // user wrote down opens it.
    alice.send_outgoing(&mut server);
    assert_eq!(alice.machine.backup_version(), Some("1"));
    assert_eq!(server.backup_versions.len(), 1);
    let mut new = new_device_with_utd(&mut server, &event);
    let restore = restore(&server, &mut new, &recovery_key);
    assert_eq!(restore.imported, 1);
    assert_eq!(body(&restore.late_decryptions[0]), "keep me");
    // Created once: nothing pending any more.
    alice.reload();
    alice.send_outgoing(&mut server);
    assert_eq!(server.backup_versions.len(), 1);
}

#[test]
fn backup_secret_restores_on_a_new_device() {
    let (mut server, mut alice, mut bob, _bob2, recovery_key) = backing_up();
    let event = backed_up_message(&mut server, &mut alice, &mut bob, "kept in the backup");
    let secret = alice.machine.backup_secret().unwrap();
    // The secret is the key the user was shown.
    assert_eq!(
        crate::machine::backup_recovery_key(&secret)
            .unwrap()
            .as_str(),
        recovery_key.as_str()
    );

    let mut new = new_device_with_utd(&mut server, &event);
    assert!(new.machine.backup_secret().is_none());
    let restored = restore(
        &server,
        &mut new,
        &crate::machine::backup_recovery_key(&secret).unwrap(),
    );
    assert_eq!(restored.imported, 1);
    assert_eq!(
        body(&new.decrypt(ROOM, &event).unwrap()),
        "kept in the backup"
    );
    // Having restored it, the new device holds the key too.
    assert_eq!(
        new.machine.backup_secret().unwrap().as_str(),
        secret.as_str()
    );
    assert!(matches!(
        crate::machine::backup_recovery_key("AAAA"),
        Err(BackupError::Malformed(_))
    ));
}

/// [`backing_up`] with an authenticated backup.
pub(super) fn backing_up_authenticated() -> (FakeServer, Client, Client, Client, Zeroizing<String>)
{
    let mut server = FakeServer::default();
    let (mut alice, bob, bob2) = alice_and_bob(&mut server);
    let recovery_key = enable_with(&mut server, &mut alice, BackupAlgorithm::Authenticated);
    (server, alice, bob, bob2, recovery_key)
}

#[test]
fn an_authenticated_backup_restores_keys_as_their_senders_vouched() {
    let (mut server, mut alice, mut bob, _, recovery_key) = backing_up_authenticated();
    assert_eq!(
        server.backup_versions[0]["algorithm"],
        "org.matrix.msc4048.curve25519-aes-sha2"
    );
    let old = backed_up_message(&mut server, &mut alice, &mut bob, "vouched for");
    // Every entry carries Alice's MAC.
    let session_id = old["content"]["session_id"].as_str().unwrap();
    let stored = &stored_room(&mut server)[session_id]["session_data"];
    assert!(
        stored["signatures"][ALICE]["org.matrix.msc4048.hmac-sha-256:backup_mac_key"].is_string(),
        "{stored}"
    );

    let mut new = new_device_with_utd(&mut server, &old);
    assert!(new.machine.set_device_trust(
        super::user_id(BOB),
        super::device_id("BOBPHONE"),
        LocalTrust::Verified
    ));
    let restore = restore(&server, &mut new, &recovery_key);
    assert_eq!((restore.imported, restore.refused), (1, 0));
    let event = &restore.late_decryptions[0];
    assert_eq!(body(event), "vouched for");
    // Only Alice's devices could have written it, and one of them had it
    // from Bob's phone: it counts as Bob's, as it did there.
    assert!(!event.forwarded);
    assert_eq!(
        event.verification,
        crate::machine::VerificationState::Verified
    );
}

#[test]
fn keys_the_server_writes_into_an_authenticated_backup_are_refused() {
    let (mut server, mut alice, mut bob, mut bob2, recovery_key) = backing_up_authenticated();
    let old = backed_up_message(&mut server, &mut alice, &mut bob, "genuine");
    // Bob's laptop writes a session Alice never backed up.
    let from_laptop = bob2.send(&mut server, ROOM, "injected");
    let laptop_session = from_laptop["content"]["session_id"].as_str().unwrap();

    // The server knows the public key, and Bob gave it his laptop's
    // session: it writes an entry for it, and one under the genuine
    // entry's MAC.
    let public_key = BackupEncryptionKey::from_auth_data(
        server.backup_versions[0]["auth_data"].as_object().unwrap(),
    )
    .unwrap();
    let genuine_session = old["content"]["session_id"].as_str().unwrap().to_owned();
    let genuine_key = BackupDecryptionKey::from_recovery_key(&recovery_key).unwrap();
    let room = stored_room(&mut server);
    let genuine_data = room[&genuine_session]["session_data"].clone();
    let entry = EncryptedEntry::from_json(&genuine_data).unwrap();
    let mut session: Value = serde_json::from_slice(&genuine_key.decrypt(&entry).unwrap()).unwrap();
    let laptop_key = bob2.machine.export_room_keys();
    let laptop_export: Value = serde_json::from_str(&laptop_key).unwrap();
    let laptop_entry = laptop_export
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["session_id"] == laptop_session)
        .unwrap();
    for field in ["sender_key", "session_key", "sender_claimed_keys"] {
        session[field] = laptop_entry[field].clone();
    }
    room.insert(laptop_session.to_owned(), forge(&public_key, &session));
    let mut copied_mac = forge(&public_key, &session);
    copied_mac["session_data"]["signatures"] = genuine_data["signatures"].clone();
    room.insert(format!("{laptop_session}-copy"), copied_mac);

    let mut new = new_device_with_utd(&mut server, &old);
    let restore = restore(&server, &mut new, &recovery_key);
    assert_eq!((restore.imported, restore.refused), (1, 2));
    assert_eq!(body(&restore.late_decryptions[0]), "genuine");
    assert_eq!(
        new.decrypt(ROOM, &from_laptop).unwrap_err().cause,
        UtdCause::MissingRoomKey
    );
}

#[test]
fn only_a_device_holding_the_key_uploads_to_an_authenticated_backup() {
    let (mut server, mut alice, mut bob, mut bob2, _) = backing_up_authenticated();
    // Alice's second device trusts the backup (her first device signed
    // it) but holds no private key: it cannot MAC, so it sends nothing.
    let mut laptop = Client::new(&mut server, ALICE, "ALICELAPTOP");
    laptop.sync(&mut server, vec![encrypted_room(&[ALICE, BOB])]);
    assert!(laptop.machine.set_device_trust(
        super::user_id(ALICE),
        super::device_id("ALICEDEV"),
        LocalTrust::Verified
    ));
    let version = server.backup("1").0;
    laptop.machine.trust_backup(&version).unwrap();
    bob2.sync(&mut server, vec![]);
    bob.sync(&mut server, vec![]);
    let sent = bob.send(&mut server, ROOM, "for everyone");
    laptop.sync(&mut server, vec![]);
    laptop.decrypt(ROOM, &sent).unwrap();
    let uploads = server.backup_uploads;
    laptop.send_outgoing(&mut server);
    assert_eq!(server.backup_uploads, uploads);
    // Alice's first device, which holds the key, does.
    alice.sync(&mut server, vec![]);
    alice.send_outgoing(&mut server);
    let session_id = sent["content"]["session_id"].as_str().unwrap();
    assert!(backed_up_sessions(&server).iter().any(|s| s == session_id));
}
