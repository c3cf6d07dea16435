//! Timings of the hot paths, for a quick look without criterion:
//! `cargo test -p myelin-sdk --release --lib perf -- --ignored --nocapture`.

use std::time::Instant;

use serde_json::json;

use super::{
    ALICE, BOB, ROOM, encrypted_room,
    server::{Client, FakeServer},
};
use crate::machine::CryptoStore;

#[test]
#[ignore = "timing, run by hand in release"]
fn perf_share_with_1000_devices_and_decrypt_1000_events() {
    const DEVICES: usize = 1000;
    let mut server = FakeServer::default();
    let mut alice = Client::new(&mut server, ALICE, "ALICEDEV");
    let mut bobs: Vec<Client> = (0..DEVICES)
        .map(|i| Client::new(&mut server, BOB, &format!("BOB{i:04}")))
        .collect();
    // Rotation only by time, so one session carries all 1000 events.
    let mut room = encrypted_room(&[ALICE, BOB]);
    room.encryption =
        Some(json!({"algorithm": "m.megolm.v1.aes-sha2", "rotation_period_msgs": 100_000}));
    alice.sync(&mut server, vec![room.clone()]);

    let start = Instant::now();
    alice.share(&mut server, ROOM);
    let with_claims = start.elapsed();

    alice.now_ms += 7 * 24 * 60 * 60 * 1000;
    let start = Instant::now();
    alice.share(&mut server, ROOM);
    let with_sessions = start.elapsed();

    let devices = alice.machine.devices(BOB);
    let content = json!({"algorithm": "m.megolm.v1.aes-sha2", "room_id": ROOM, "session_id": "x".repeat(43), "session_key": "A".repeat(300)});
    let start = Instant::now();
    for device in &devices {
        std::hint::black_box(
            alice
                .machine
                .encrypt_for_device(device, "m.room_key", &content)
                .unwrap(),
        );
    }
    println!(
        "encrypt_for_device x{}: {:?}",
        devices.len(),
        start.elapsed()
    );
    let start = Instant::now();
    let changes = alice.machine.take_changes();
    println!(
        "take_changes: {:?} ({} records)",
        start.elapsed(),
        changes.records.len()
    );
    let start = Instant::now();
    alice.store.save(changes).unwrap();
    println!("memory store save: {:?}", start.elapsed());
    alice.now_ms += 7 * 24 * 60 * 60 * 1000;
    let start = Instant::now();
    let requests = alice.machine.share_room_key(ROOM, alice.now_ms).unwrap();
    println!("share_room_key alone: {:?}", start.elapsed());
    let start = Instant::now();
    for request in &requests {
        alice.answer(&mut server, request);
    }
    println!("fake server routing: {:?}", start.elapsed());
    alice.save();
    let bob = &mut bobs[0];
    bob.sync(&mut server, vec![room]);
    let events: Vec<_> = (0..1000)
        .map(|i| {
            let content = alice
                .machine
                .encrypt_room_event(
                    ROOM,
                    "m.room.message",
                    &json!({"body": format!("message {i}")}),
                    alice.now_ms,
                )
                .unwrap();
            server.room_event(ROOM, ALICE, content)
        })
        .collect();
    let start = Instant::now();
    for event in &events {
        bob.machine.decrypt_room_event(ROOM, event).unwrap();
    }
    let decrypt = start.elapsed();
    println!(
        "share with {DEVICES} devices: {with_claims:?} incl. claims and Olm session creation, \
         {with_sessions:?} with sessions; decrypt 1000 events: {decrypt:?}"
    );
}

#[test]
#[ignore = "timing, run by hand in release"]
fn perf_raw_olm_pieces() {
    use myelin_crypto::{PickleKey, olm::Account};
    let alice = Account::new();
    let mut bob = Account::new();
    bob.generate_one_time_keys(1);
    let otk = bob.unpublished_one_time_keys()[0].1;
    let mut session = alice
        .create_outbound_session(bob.identity_keys().curve25519, otk)
        .unwrap();
    let key = PickleKey::from_bytes([1; 32]);
    let start = Instant::now();
    for _ in 0..1000 {
        session.encrypt(b"{\"type\":\"m.room_key\",\"content\":{\"algorithm\":\"m.megolm.v1.aes-sha2\",\"room_id\":\"!room:example.org\",\"session_id\":\"abcdefghijklmnopqrstuvwxyzabcdefghijklmnopq\",\"session_key\":\"AgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}}").unwrap();
    }
    let encrypt = start.elapsed();
    let start = Instant::now();
    for _ in 0..1000 {
        std::hint::black_box(session.pickle(&key));
    }
    let pickle = start.elapsed();
    let start = Instant::now();
    for _ in 0..1000 {
        std::hint::black_box(
            alice
                .create_outbound_session(bob.identity_keys().curve25519, otk)
                .unwrap(),
        );
    }
    let create = start.elapsed();
    println!("1000x olm encrypt {encrypt:?}, pickle {pickle:?}, create outbound {create:?}");
}
