//! Room key export and import: a file matrix-js-sdk's crypto wrote opens
//! here and decrypts its message; our own export moves sessions to a new
//! device; entries that lie about their session are skipped.

use myelin_crypto::key_export::decrypt_key_export;
use serde_json::{Value, json};

use super::{
    ALICE, BOB, ROOM, alice_and_bob, encrypted_room, room_id,
    server::{Client, FakeServer, body, pickle_key},
};
use crate::machine::{OlmMachine, UtdCause};

/// The file, its passphrase, and a message its key decrypts
/// (`myelin_crypto`'s `key_export/js_sdk_export.json`).
fn js_sdk_vector() -> Value {
    serde_json::from_str(include_str!(
        "../../../../crypto/src/key_export/js_sdk_export.json"
    ))
    .unwrap()
}

#[test]
fn a_file_exported_by_matrix_js_sdk_decrypts_its_rooms_history() {
    let vector = js_sdk_vector();
    let payload = decrypt_key_export(
        vector["file"].as_str().unwrap(),
        vector["passphrase"].as_str().unwrap(),
    )
    .unwrap();
    let mut machine = OlmMachine::new(&super::user(ALICE), "NEWDEVICE".into(), pickle_key());
    let import = machine.import_room_keys(&payload).unwrap();
    assert_eq!((import.total, import.imported, import.invalid), (1, 1, 0));

    let event = json!({
        "type": "m.room.encrypted",
        "event_id": "$exported",
        "sender": "@alice:example.org",
        "origin_server_ts": 1,
        "content": vector["encrypted_event_content"],
    });
    let decrypted = machine
        .decrypt_room_event(room_id("!room:example.org"), &event)
        .unwrap();
    assert_eq!(decrypted.content["body"], vector["decrypted_body"]);
    assert!(
        decrypted.forwarded,
        "an imported key is not the sender's word"
    );
}

#[test]
fn an_export_moves_every_session_to_a_new_device() {
    let mut server = FakeServer::default();
    let (mut alice, mut bob, _) = alice_and_bob(&mut server);
    let from_bob = bob.send(&mut server, ROOM, "from bob");
    alice.sync(&mut server, vec![]);
    alice.decrypt(ROOM, &from_bob).unwrap();
    let from_alice = alice.send(&mut server, ROOM, "from alice");

    let payload = alice.machine.export_room_keys();
    let sessions: Value = serde_json::from_str(&payload).unwrap();
    assert_eq!(sessions.as_array().unwrap().len(), 2, "{sessions}");
    assert!(
        sessions
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["room_id"] == ROOM)
    );

    let mut new = Client::new(&mut server, ALICE, "ALICENEW");
    new.sync(&mut server, vec![encrypted_room(&[ALICE, BOB])]);
    let utd = new.decrypt(ROOM, &from_bob).unwrap_err();
    assert_eq!(utd.cause, UtdCause::MissingRoomKey);
    let import = new.machine.import_room_keys(payload.as_bytes()).unwrap();
    assert_eq!(
        (import.imported, import.unchanged, import.invalid),
        (2, 0, 0)
    );
    assert_eq!(import.late_decryptions.len(), 1);
    assert_eq!(body(&import.late_decryptions[0]), "from bob");
    assert_eq!(body(&new.decrypt(ROOM, &from_alice).unwrap()), "from alice");

    // The same file again adds nothing.
    let again = new.machine.import_room_keys(payload.as_bytes()).unwrap();
    assert_eq!((again.imported, again.unchanged), (0, 2));
}

#[test]
fn entries_that_are_not_what_they_claim_are_skipped() {
    let mut server = FakeServer::default();
    let (mut alice, _, _) = alice_and_bob(&mut server);
    alice.send(&mut server, ROOM, "hello");
    let mut sessions: Value = serde_json::from_str(&alice.machine.export_room_keys()).unwrap();
    let genuine = sessions[0].clone();
    let mut misfiled = genuine.clone();
    misfiled["session_id"] = json!("AnotherSessionsIdAnotherSessionsIdAnotherS");
    let mut no_room = genuine.clone();
    no_room["room_id"] = json!("not a room id");
    let mut olm = genuine;
    olm["algorithm"] = json!("m.olm.v1.curve25519-aes-sha2");
    sessions = json!([misfiled, no_room, olm, 42]);

    let mut new = OlmMachine::new(&super::user(ALICE), "NEWDEVICE".into(), pickle_key());
    let import = new
        .import_room_keys(sessions.to_string().as_bytes())
        .unwrap();
    assert_eq!((import.total, import.imported, import.invalid), (4, 0, 4));
    assert!(new.import_room_keys(b"{\"not\": \"a list\"}").is_err());
}
