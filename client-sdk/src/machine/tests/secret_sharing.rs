//! Secret sharing between Bob's phone (cross-signing and a backup) and his
//! new laptop: answered only between devices verified both ways; secrets
//! from anyone else, or never asked for, are ignored.

use myelin_crypto::backup::BackupDecryptionKey;
use serde_json::{Value, json};

use super::{
    BOB, LocalTrust, ROOM, alice_and_bob, device_id,
    server::{Client, FakeServer},
    user_id,
};
use crate::machine::{ReceivedSecret, SyncOutput, tests::cross_signing::bootstrap};

const PHONE: &str = "BOBPHONE";
const LAPTOP: &str = "BOBLAPTOP";

/// Bob's phone with cross-signing and a backup (its recovery key), his
/// laptop without either, and Alice; everyone synced.
fn phone_and_laptop(server: &mut FakeServer) -> (Client, Client, Client, String) {
    let (mut alice, mut phone, mut laptop) = alice_and_bob(server);
    assert_eq!(
        (phone.device.as_str(), laptop.device.as_str()),
        (PHONE, LAPTOP)
    );
    bootstrap(&mut phone, server);
    let (request, recovery_key) = phone.machine.enable_backup().unwrap();
    phone.answer(server, &request);
    phone.save();
    for client in [&mut alice, &mut phone, &mut laptop] {
        client.sync(server, vec![]);
    }
    (alice, phone, laptop, recovery_key.to_string())
}

/// The key of a device of Bob's in the fake server's inboxes.
fn inbox_of(device: &str) -> (String, String) {
    (BOB.to_owned(), device.to_owned())
}

fn trust(client: &mut Client, device: &str) {
    assert!(
        client
            .machine
            .set_device_trust(user_id(BOB), device_id(device), LocalTrust::Verified)
    );
}

/// The laptop asks; the phone syncs (and answers, if it does); the
/// laptop syncs and reports what it took.
fn ask(server: &mut FakeServer, phone: &mut Client, laptop: &mut Client) -> SyncOutput {
    assert_eq!(laptop.machine.request_secrets(), 4);
    laptop.send_outgoing(server);
    phone.sync(server, vec![]);
    laptop.sync(server, vec![])
}

#[test]
fn a_verified_new_device_gets_the_cross_signing_and_backup_keys() {
    let mut server = FakeServer::default();
    let (_, mut phone, mut laptop, recovery_key) = phone_and_laptop(&mut server);
    let recovery_key = zeroize::Zeroizing::new(recovery_key);
    trust(&mut laptop, PHONE);

    // The phone has not verified the laptop: no answer.
    let output = ask(&mut server, &mut phone, &mut laptop);
    assert!(output.secrets.is_empty());
    assert!(!laptop.machine.has_cross_signing_keys());

    // Once it has, the laptop gets everything (the phone claims an Olm
    // session with it first).
    trust(&mut phone, LAPTOP);
    let output = ask(&mut server, &mut phone, &mut laptop);
    assert_eq!(output.secrets.len(), 2, "{:?}", output.secrets);
    assert!(output.secrets.contains(&ReceivedSecret::CrossSigningKeys));
    assert!(
        output
            .secrets
            .contains(&ReceivedSecret::BackupKey(recovery_key.clone()))
    );
    assert!(laptop.machine.has_cross_signing_keys());
    laptop.send_outgoing(&mut server);
    assert!(
        laptop
            .machine
            .is_device_verified(user_id(BOB), device_id(LAPTOP))
    );
    // The requests are withdrawn from Bob's other devices, and nothing is
    // asked again.
    let withdrawn = server.inboxes[&inbox_of(PHONE)]
        .iter()
        .filter(|event| event["content"]["action"] == "request_cancellation")
        .count();
    assert_eq!(withdrawn, 4);
    // The backup key opens the backup; then the laptop lacks nothing.
    assert_eq!(laptop.machine.request_secrets(), 1);
    let (version, keys) = server.backup("1");
    laptop
        .machine
        .restore_backup(&recovery_key, &version, &keys)
        .unwrap();
    assert_eq!(laptop.machine.request_secrets(), 0);
}

#[test]
fn secrets_from_an_unverified_device_are_ignored() {
    let mut server = FakeServer::default();
    let (_, mut phone, mut laptop, _) = phone_and_laptop(&mut server);
    // The phone trusts the laptop and answers, but the laptop never
    // verified the phone: whoever holds the phone's keys may be anyone.
    trust(&mut phone, LAPTOP);
    let output = ask(&mut server, &mut phone, &mut laptop);
    assert!(output.secrets.is_empty());
    assert!(!laptop.machine.has_cross_signing_keys());
}

#[test]
fn secrets_sent_by_another_user_or_never_asked_for_are_ignored() {
    let mut server = FakeServer::default();
    let (mut alice, mut phone, mut laptop, _) = phone_and_laptop(&mut server);
    trust(&mut laptop, PHONE);
    assert_eq!(laptop.machine.request_secrets(), 4);
    laptop.send_outgoing(&mut server);
    let requests: Vec<Value> = server
        .inboxes
        .get_mut(&inbox_of(PHONE))
        .unwrap()
        .drain(..)
        .filter(|event| event["type"] == "m.secret.request")
        .collect();
    let request_id = |name: &str| {
        requests
            .iter()
            .find(|r| r["content"]["name"] == name)
            .map(|r| r["content"]["request_id"].as_str().unwrap().to_owned())
            .unwrap()
    };

    // Alice answers one of the laptop's requests with a key of her own,
    // over the Olm session her room key opened; a plaintext answer and
    // one to no request follow.
    alice.send(&mut server, ROOM, "hello");
    let laptop_device = alice
        .machine
        .devices(user_id(BOB))
        .into_iter()
        .find(|d| d.device_id == LAPTOP)
        .unwrap();
    let backup_key = BackupDecryptionKey::new().to_base64();
    let secret =
        json!({"request_id": request_id("m.megolm_backup.v1"), "secret": backup_key.as_str()});
    let forged = alice
        .machine
        .encrypt_for_device(&laptop_device, "m.secret.send", &secret)
        .unwrap();
    let inbox = server.inboxes.entry(inbox_of(LAPTOP)).or_default();
    inbox.push(
        json!({"sender": alice.user.as_str(), "type": "m.room.encrypted", "content": forged}),
    );
    inbox.push(json!({"sender": BOB, "type": "m.secret.send", "content": secret}));
    let output = laptop.sync(&mut server, vec![]);
    assert!(output.secrets.is_empty());

    // The phone's answer to a request the laptop never made.
    trust(&mut phone, LAPTOP);
    let unasked = json!({"type": "m.secret.request", "sender": BOB, "content": {
        "name": "m.megolm_backup.v1", "action": "request",
        "requesting_device_id": LAPTOP, "request_id": "not-the-laptops"}});
    server
        .inboxes
        .entry(inbox_of(PHONE))
        .or_default()
        .push(unasked);
    phone.sync(&mut server, vec![]);
    let answered = server.inboxes[&inbox_of(LAPTOP)]
        .iter()
        .any(|event| event["sender"] == BOB && event["type"] == "m.room.encrypted");
    assert!(answered, "the phone answered the request it was shown");
    let output = laptop.sync(&mut server, vec![]);
    assert!(output.secrets.is_empty());
    assert!(!laptop.machine.has_cross_signing_keys());
}
