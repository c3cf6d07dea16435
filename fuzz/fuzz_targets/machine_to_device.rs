//! The SDK's sans-I/O machine fed what a malicious server or device can
//! send: to-device events as any JSON, Olm ciphertexts that decrypt to any
//! payload (a real peer account encrypts them to the machine's keys), room
//! keys shared over Olm, room events as any JSON and Megolm ciphertexts of
//! any plaintext, interleaved with the other sync fields. No panic, and
//! the machine keeps answering.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use myelin_crypto::{
    PickleKey,
    megolm::{MEGOLM_ALGORITHM, OutboundGroupSession},
    olm::{Account, Curve25519PublicKey, OLM_ALGORITHM, Session},
};
use myelin_sdk::machine::{OlmMachine, Request, SyncChanges};
use ruma::{OwnedUserId, RoomId, device_id, user_id};
use serde_json::{Value, json};

/// Most steps in one run.
const MAX_STEPS: usize = 16;

const ROOM: &str = "!room:a.test";
const PEER: &str = "@alice:a.test";
const PEER_DEVICE: &str = "ALICEDEV";

#[derive(Arbitrary, Debug)]
enum Step {
    /// A to-device event as any JSON text.
    ToDevice(String),
    /// An Olm-encrypted to-device event from the peer: the payload's
    /// `type` and `content` are the fuzzer's, its envelope (sender,
    /// recipient, keys) right or wrong as the flags say.
    Olm {
        event_type: String,
        content: String,
        envelope: Envelope,
    },
    /// The peer's Megolm session, shared with the machine over Olm.
    RoomKey { envelope: Envelope },
    /// A room event as any JSON text.
    RoomEvent(String),
    /// A room event Megolm-encrypted by the peer's session.
    Megolm { plaintext: String, event_id: u8 },
    /// The rest of a sync.
    Sync {
        changed: Vec<u8>,
        left: Vec<u8>,
        one_time_keys: u16,
        fallback: Option<Vec<String>>,
        initial: bool,
    },
}

/// Which fields of an Olm payload's envelope are the right ones.
#[derive(Arbitrary, Debug)]
struct Envelope {
    wrong_sender: bool,
    wrong_recipient: bool,
    wrong_keys: bool,
}

/// The other end: an Olm account with a session to the machine, and a
/// Megolm session for the room.
struct Peer {
    account: Account,
    session: Session,
    group: OutboundGroupSession,
}

fuzz_target!(|steps: Vec<Step>| {
    let me = user_id!("@bob:a.test");
    let mut machine = OlmMachine::new(me, device_id!("BOBDEV"), PickleKey::from_bytes([7; 32]));
    let (our_curve, our_ed) = {
        let keys = machine.identity_keys();
        (keys.curve25519, keys.ed25519.to_base64())
    };
    let mut peer = Peer::new(our_curve, one_time_key(&mut machine));
    let room = <&RoomId>::try_from(ROOM).expect("a valid room id");
    for (index, step) in steps.into_iter().take(MAX_STEPS).enumerate() {
        let now_ms = 1_000_000 + index as u64;
        let to_device = match step {
            Step::ToDevice(text) => serde_json::from_str(&text).ok(),
            Step::Olm {
                event_type,
                content,
                envelope,
            } => {
                let content = serde_json::from_str(&content).unwrap_or(Value::String(content));
                Some(peer.olm_event(&our_curve, &our_ed, &event_type, content, &envelope))
            }
            Step::RoomKey { envelope } => {
                let content = json!({
                    "algorithm": MEGOLM_ALGORITHM,
                    "room_id": ROOM,
                    "session_id": peer.group.session_id(),
                    "session_key": peer.group.session_key().to_base64(),
                });
                Some(peer.olm_event(&our_curve, &our_ed, "m.room_key", content, &envelope))
            }
            Step::RoomEvent(text) => {
                if let Ok(event) = serde_json::from_str::<Value>(&text) {
                    let _ = machine.decrypt_room_event(room, &event);
                }
                None
            }
            Step::Megolm {
                plaintext,
                event_id,
            } => {
                let event = peer.megolm_event(&plaintext, event_id);
                let _ = machine.decrypt_room_event(room, &event);
                None
            }
            Step::Sync {
                changed,
                left,
                one_time_keys,
                fallback,
                initial,
            } => {
                machine.receive_sync_changes(SyncChanges {
                    changed_devices: changed.iter().map(|u| user(*u)).collect(),
                    left_devices: left.iter().map(|u| user(*u)).collect(),
                    one_time_key_counts: [(
                        "signed_curve25519".to_owned(),
                        u64::from(one_time_keys),
                    )]
                    .into(),
                    unused_fallback_key_types: fallback,
                    is_initial: initial,
                    now_ms,
                    ..SyncChanges::default()
                });
                None
            }
        };
        if let Some(event) = to_device {
            machine.receive_sync_changes(SyncChanges {
                to_device_events: vec![event],
                now_ms,
                ..SyncChanges::default()
            });
        }
        let _ = machine.outgoing_requests();
        let _ = machine.take_changes();
    }
});

impl Peer {
    fn new(their_curve: Curve25519PublicKey, their_one_time_key: Curve25519PublicKey) -> Self {
        let account = Account::new();
        let session = account
            .create_outbound_session(their_curve, their_one_time_key)
            .expect("the machine's one-time key is a valid key");
        Self {
            account,
            session,
            group: OutboundGroupSession::new(),
        }
    }

    /// An Olm to-device event whose payload carries `event_type` and `content`.
    fn olm_event(
        &mut self,
        their_curve: &Curve25519PublicKey,
        their_ed: &str,
        event_type: &str,
        content: Value,
        envelope: &Envelope,
    ) -> Value {
        let ours = self.account.identity_keys();
        let wrong = |is_wrong: bool, right: Value| {
            if is_wrong {
                json!("@mallory:c.test")
            } else {
                right
            }
        };
        let payload = json!({
            "type": event_type,
            "content": content,
            "sender": wrong(envelope.wrong_sender, json!(PEER)),
            "sender_device": PEER_DEVICE,
            "recipient": wrong(envelope.wrong_recipient, json!("@bob:a.test")),
            "recipient_keys": {"ed25519": wrong(envelope.wrong_recipient, json!(their_ed))},
            "keys": {"ed25519": wrong(envelope.wrong_keys, json!(ours.ed25519.to_base64()))},
        });
        let message = self
            .session
            .encrypt(payload.to_string().as_bytes())
            .expect("an Olm session encrypts");
        json!({
            "type": "m.room.encrypted",
            "sender": PEER,
            "content": {
                "algorithm": OLM_ALGORITHM,
                "sender_key": ours.curve25519.to_base64(),
                "ciphertext": {their_curve.to_base64(): message},
            },
        })
    }

    /// A Megolm room event of `plaintext` (any text, JSON or not).
    fn megolm_event(&mut self, plaintext: &str, event_id: u8) -> Value {
        json!({
            "type": "m.room.encrypted",
            "event_id": format!("${event_id}:a.test"),
            "sender": PEER,
            "room_id": ROOM,
            "origin_server_ts": 1_000_000,
            "content": {
                "algorithm": MEGOLM_ALGORITHM,
                "sender_key": self.account.identity_keys().curve25519.to_base64(),
                "device_id": PEER_DEVICE,
                "session_id": self.group.session_id(),
                "ciphertext": self.group.encrypt(plaintext.as_bytes()),
            },
        })
    }
}

/// One of the one-time keys the machine asks to upload.
fn one_time_key(machine: &mut OlmMachine) -> Curve25519PublicKey {
    machine
        .outgoing_requests()
        .into_iter()
        .find_map(|request| match request.request {
            Request::KeysUpload { body } => body["one_time_keys"]
                .as_object()?
                .values()
                .find_map(|key| Curve25519PublicKey::from_base64(key["key"].as_str()?).ok()),
            _ => None,
        })
        .expect("a new machine uploads one-time keys")
}

fn user(index: u8) -> OwnedUserId {
    let users = [PEER, "@bob:a.test", "@carol:b.test", "not a user"];
    OwnedUserId::try_from(users[usize::from(index) % 3]).expect("a valid user id")
}
