//! The machine's encryption hot paths, each beside the raw vodozemac calls
//! it is made of, measured in the same run:
//!
//! - `megolm_message`: encrypting one room message and decrypting it as an
//!   event, against `GroupSession::encrypt` plus
//!   `InboundGroupSession::decrypt` of the same plaintext bytes;
//! - `share_room_key/{100,1000}`: sharing a new room key with devices whose
//!   Olm sessions exist, against one Olm encrypt of the same payload per
//!   device;
//! - `share_room_key_claiming/{100,1000}`: the same from claimed keys
//!   (signature checks and Olm session creation included), against one
//!   `create_outbound_session` plus encrypt per device;
//! - `decrypt_timeline/1000`: a fresh device decrypting 1,000 events of one
//!   session, against 1,000 `InboundGroupSession::decrypt`.
//!
//! Ours includes everything the application waits for: building the
//! request, and the record changes it must save before sending.
//!
//! `taskset -c 0 cargo bench -p myelin-sdk --bench encryption`

mod support;

use std::{hint::black_box, time::Duration};

use criterion::{BatchSize, BenchmarkGroup, Criterion, SamplingMode, measurement::WallTime};
use myelin_sdk::machine::{CryptoStore, MemoryStore, OlmMachine, OutgoingRequest, Request};
use serde_json::{Value, json};
use support::{
    ALICE, Client, ROOM, Server, WEEK_MS, pickle_key, recipients, room, room_id, users_of,
};
use vodozemac::{
    Curve25519PublicKey,
    megolm::{self, GroupSession, InboundGroupSession, MegolmMessage},
    olm::{self, Account},
};

const BOB: &str = "@bob:example.org";

fn main() {
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    megolm_message(&mut criterion);
    let mut server = Server::default();
    let devices = recipients(&mut server, 1000);
    for count in [100, 1000] {
        share_room_key(&mut criterion, &mut server, &devices[..count]);
    }
    for count in [100, 1000] {
        share_room_key_claiming(&mut criterion, &mut server, &devices[..count]);
    }
    decrypt_timeline(&mut criterion, 1000);
    criterion.final_summary();
}

/// The body of the `n`th message.
fn message(n: usize) -> Value {
    json!({"msgtype": "m.text", "body": format!("Message number {n} of the benchmark timeline.")})
}

/// What Megolm encrypts for a message: the event without its envelope.
fn megolm_plaintext(content: &Value) -> Vec<u8> {
    serde_json::to_vec(&json!({"type": "m.room.message", "content": content, "room_id": ROOM}))
        .expect("JSON serialises")
}

/// The timeline event the server makes of encrypted content.
fn room_event(n: usize, content: Value) -> Value {
    json!({
        "type": "m.room.encrypted",
        "event_id": format!("$event{n}"),
        "room_id": ROOM,
        "sender": ALICE,
        "origin_server_ts": 1,
        "content": content,
    })
}

/// Alice and Bob in the room, Bob holding Alice's current room key.
fn alice_and_bob() -> (Client, Client) {
    let mut server = Server::default();
    let mut alice = Client::new(&mut server, ALICE, "ALICEDEV");
    let mut bob = Client::new(&mut server, BOB, "BOBDEV");
    let members = [ALICE.to_owned(), BOB.to_owned()];
    alice.sync(&mut server, vec![room(&members)]);
    bob.sync(&mut server, vec![room(&members)]);
    let requests = alice.share_until(&mut server, |_| false);
    assert!(requests.is_empty(), "sharing settles");
    bob.sync(&mut server, vec![]);
    (alice, bob)
}

fn megolm_message(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("megolm_message");
    let (mut alice, mut bob) = alice_and_bob();
    let content = message(0);
    // The server's envelope stays; each message puts its content in it.
    let mut event = room_event(0, json!({}));
    let mut round_trip = || {
        event["content"] = alice
            .machine
            .encrypt_room_event(room_id(), "m.room.message", &content, 1)
            .expect("the key is shared");
        let changes = alice.machine.take_changes();
        let decrypted = bob.machine.decrypt_room_event(room_id(), &event);
        (changes, decrypted, bob.machine.take_changes())
    };
    let (_, decrypted, _) = round_trip();
    assert_eq!(decrypted.expect("Bob decrypts").content, content);
    group.bench_function("myelin", |b| b.iter(&mut round_trip));

    let mut outbound = GroupSession::new(megolm::SessionConfig::version_1());
    let mut inbound =
        InboundGroupSession::new(&outbound.session_key(), megolm::SessionConfig::version_1());
    let plaintext = megolm_plaintext(&content);
    group.bench_function("vodozemac", |b| {
        b.iter(|| {
            let message = outbound.encrypt(&plaintext);
            inbound.decrypt(&message).expect("decrypts")
        })
    });
    group.finish();
}

/// A group for the slow benchmarks: few samples of one iteration each.
fn slow_group<'a>(criterion: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut group = criterion.benchmark_group(name);
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .measurement_time(Duration::from_secs(4));
    group
}

/// A new device of Alice's in the room with `devices`, their device lists
/// fetched, and the claim for their keys it asks for next.
fn sender(server: &mut Server, devices: &[(String, String)]) -> (Client, OutgoingRequest) {
    let mut alice = Client::new(server, ALICE, "ALICEDEV");
    let mut members = users_of(devices);
    members.push(ALICE.to_owned());
    alice.sync(server, vec![room(&members)]);
    let mut claims = alice.share_until(server, |r| matches!(r, Request::KeysClaim { .. }));
    assert_eq!(claims.len(), 1, "one claim for every device");
    (alice, claims.remove(0))
}

/// The m.room_key payload ours encrypts for each device, for the raw
/// baseline to encrypt as many times.
fn room_key_payload(server: &Server, devices: &[(String, String)]) -> Vec<u8> {
    let session = GroupSession::new(megolm::SessionConfig::version_1());
    let sender = olm::Account::new().identity_keys();
    let (user, device) = &devices[0];
    let recipient_ed25519 = &server.device_keys(user, device)["keys"][format!("ed25519:{device}")];
    serde_json::to_vec(&json!({
        "type": "m.room_key",
        "content": {
            "algorithm": "m.megolm.v1.aes-sha2",
            "room_id": ROOM,
            "session_id": session.session_id(),
            "session_key": session.session_key().to_base64(),
        },
        "sender": ALICE,
        "sender_device": "ALICEDEV",
        "keys": {"ed25519": sender.ed25519.to_base64()},
        "recipient": user,
        "recipient_keys": {"ed25519": recipient_ed25519},
    }))
    .expect("JSON serialises")
}

/// Each device's curve25519 identity key and claimed one-time key.
fn claimed_keys(
    server: &Server,
    devices: &[(String, String)],
) -> Vec<(Curve25519PublicKey, Curve25519PublicKey)> {
    let key = |value: &Value| {
        Curve25519PublicKey::from_base64(value.as_str().expect("a key")).expect("valid key")
    };
    devices
        .iter()
        .map(|(user, device)| {
            let keys = &server.device_keys(user, device)["keys"];
            (
                key(&keys[format!("curve25519:{device}")]),
                key(&server.one_time_key(user, device)["key"]),
            )
        })
        .collect()
}

fn share_room_key(criterion: &mut Criterion, server: &mut Server, devices: &[(String, String)]) {
    let count = devices.len();
    let mut group = slow_group(criterion, &format!("share_room_key/{count}"));
    let (mut alice, claim) = sender(server, devices);
    alice.answer_all(server, &[claim]);
    let first = alice.share_until(server, |r| matches!(r, Request::ToDevice { .. }));
    alice.answer_all(server, &first);
    // Each share a rotation period later starts a new session for the
    // same devices, over the Olm sessions the first share made.
    let mut share = || {
        alice.now_ms += WEEK_MS;
        alice.share_and_send()
    };
    let (requests, _) = share();
    assert!(matches!(&requests[..], [r] if support::is_encrypted_to(r, count)));
    group.bench_function("myelin", |b| b.iter(&mut share));

    let account = Account::new();
    let mut sessions: Vec<olm::Session> = claimed_keys(server, devices)
        .into_iter()
        .map(|(identity, one_time)| {
            account
                .create_outbound_session(olm::SessionConfig::version_1(), identity, one_time)
                .expect("contributory keys")
        })
        .collect();
    let payload = room_key_payload(server, devices);
    group.bench_function("vodozemac", |b| {
        b.iter(|| {
            for session in &mut sessions {
                black_box(session.encrypt(&payload).expect("encrypts"));
            }
        })
    });
    group.finish();
}

fn share_room_key_claiming(
    criterion: &mut Criterion,
    server: &mut Server,
    devices: &[(String, String)],
) {
    let count = devices.len();
    let mut group = slow_group(criterion, &format!("share_room_key_claiming/{count}"));
    // A fresh sender each time, stopped where the claim's answer arrives.
    let setup = |server: &mut Server| {
        let (alice, claim) = sender(server, devices);
        let response = server.handle(ALICE, "ALICEDEV", &claim);
        (alice, claim.request_id, response)
    };
    let share = |(mut alice, claim_id, response): (Client, String, Value)| {
        alice
            .machine
            .mark_request_sent(&claim_id, &response)
            .expect("claim in flight");
        let (requests, changes) = alice.share_and_send();
        (requests, changes, alice)
    };
    let (requests, _, _) = share(setup(server));
    assert!(matches!(&requests[..], [r] if support::is_encrypted_to(r, count)));
    group.bench_function("myelin", |b| {
        b.iter_batched(|| setup(server), share, BatchSize::PerIteration)
    });

    let keys = claimed_keys(server, devices);
    let payload = room_key_payload(server, devices);
    group.bench_function("vodozemac", |b| {
        b.iter_batched(
            Account::new,
            |account| {
                for (identity, one_time) in &keys {
                    let mut session = account
                        .create_outbound_session(
                            olm::SessionConfig::version_1(),
                            *identity,
                            *one_time,
                        )
                        .expect("contributory keys");
                    black_box(session.encrypt(&payload).expect("encrypts"));
                }
                account
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

fn decrypt_timeline(criterion: &mut Criterion, count: usize) {
    let mut group = slow_group(criterion, &format!("decrypt_timeline/{count}"));
    let (mut alice, mut bob) = alice_and_bob();
    let events: Vec<Value> = (0..count)
        .map(|n| {
            let content = alice
                .machine
                .encrypt_room_event(room_id(), "m.room.message", &message(n), 1)
                .expect("the key is shared");
            room_event(n, content)
        })
        .collect();
    // Bob as saved after receiving the key: each iteration loads him
    // afresh, so every event is decrypted for the first time.
    let mut store = MemoryStore::new();
    store
        .save(bob.machine.take_changes())
        .expect("memory store");
    let records = store.load_all().expect("memory store");
    let load_bob = || {
        OlmMachine::load(
            BOB.try_into().expect("a valid user id"),
            "BOBDEV".into(),
            pickle_key(),
            &records,
        )
        .expect("loads")
    };
    let decrypt_all = |mut bob: OlmMachine| {
        let decrypted: Vec<_> = events
            .iter()
            .map(|event| bob.decrypt_room_event(room_id(), event))
            .collect();
        (decrypted, bob.take_changes(), bob)
    };
    let (decrypted, _, _) = decrypt_all(load_bob());
    assert!(decrypted.iter().all(Result::is_ok), "every event decrypts");
    group.bench_function("myelin", |b| {
        b.iter_batched(load_bob, decrypt_all, BatchSize::PerIteration)
    });

    let mut outbound = GroupSession::new(megolm::SessionConfig::version_1());
    let session_key = outbound.session_key();
    let messages: Vec<MegolmMessage> = (0..count)
        .map(|n| outbound.encrypt(megolm_plaintext(&message(n))))
        .collect();
    group.bench_function("vodozemac", |b| {
        b.iter_batched(
            || InboundGroupSession::new(&session_key, megolm::SessionConfig::version_1()),
            |mut inbound| {
                for message in &messages {
                    black_box(inbound.decrypt(message).expect("decrypts"));
                }
                inbound
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}
