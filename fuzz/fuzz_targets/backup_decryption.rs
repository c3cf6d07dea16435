//! Restoring a key backup, the spec's (`m.megolm_backup.v1.curve25519-aes-sha2`)
//! and the authenticated one (MSC4048): a `keys` answer as a malicious
//! server can write it, with entries that are any JSON or are sealed to
//! the backup's key (the server holds the public key) around any
//! plaintext or a real room key, with or without a MAC. Never a panic, and
//! every entry is counted once as imported, unchanged, invalid or refused.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use myelin_crypto::{
    PickleKey,
    backup::BackupDecryptionKey,
    backup_mac::{AUTHENTICATED_BACKUP_ALGORITHM, BackupMacKey},
    megolm::{MEGOLM_ALGORITHM, OutboundGroupSession},
    olm::Account,
};
use myelin_sdk::machine::OlmMachine;
use ruma::{device_id, user_id};
use serde_json::{Map, Value, json};

const SPEC_ALGORITHM: &str = "m.megolm_backup.v1.curve25519-aes-sha2";

#[derive(Arbitrary, Debug)]
struct Restore {
    authenticated: bool,
    /// A recovery key of the fuzzer's instead of the backup's.
    recovery_key: Option<String>,
    rooms: Vec<(Room, Vec<Entry>)>,
}

#[derive(Arbitrary, Debug)]
enum Room {
    Ours,
    Named(String),
}

#[derive(Arbitrary, Debug)]
enum Entry {
    /// Any JSON as the entry.
    Raw { session_id: String, data: String },
    /// An entry sealed to the backup's key.
    Sealed {
        /// Any plaintext, else a real room key's.
        plaintext: Option<String>,
        /// Filed under another session id than the key's.
        session_id: Option<String>,
        /// The authenticated backup's MAC over it.
        has_mac: bool,
        first_message_index: u32,
        forwarded_count: u8,
        is_verified: bool,
    },
}

fuzz_target!(|restore: Restore| {
    let me = user_id!("@bob:a.test");
    let mut machine = OlmMachine::new(me, device_id!("BOBDEV"), PickleKey::from_bytes([7; 32]));
    let key = BackupDecryptionKey::from_bytes(&[9; 32]);
    let algorithm = if restore.authenticated {
        AUTHENTICATED_BACKUP_ALGORITHM
    } else {
        SPEC_ALGORITHM
    };
    let version = json!({
        "algorithm": algorithm,
        "auth_data": key.encryption_key().auth_data(),
        "version": "1",
    });
    let mac_key = BackupMacKey::derive(&key);
    let sender = Account::new().identity_keys();
    let mut rooms = Map::new();
    for (room, entries) in restore.rooms.into_iter().take(4) {
        let room_id = match room {
            Room::Ours => "!room:a.test".to_owned(),
            Room::Named(name) => name,
        };
        let mut sessions = Map::new();
        for entry in entries.into_iter().take(8) {
            let (session_id, data) = match entry {
                Entry::Raw { session_id, data } => (
                    session_id,
                    serde_json::from_str(&data).unwrap_or(Value::String(data)),
                ),
                Entry::Sealed {
                    plaintext,
                    session_id,
                    has_mac,
                    first_message_index,
                    forwarded_count,
                    is_verified,
                } => {
                    let group = OutboundGroupSession::new();
                    let plaintext = plaintext.unwrap_or_else(|| {
                        json!({
                            "algorithm": MEGOLM_ALGORITHM,
                            "sender_key": sender.curve25519.to_base64(),
                            "sender_claimed_keys": {"ed25519": sender.ed25519.to_base64()},
                            "forwarding_curve25519_key_chain": [],
                            "session_key": myelin_crypto::megolm::InboundGroupSession::new(&group.session_key())
                                .export_at_first_known_index()
                                .to_base64(),
                        })
                        .to_string()
                    });
                    let sealed = key
                        .encryption_key()
                        .encrypt(plaintext.as_bytes())
                        .expect("sealing succeeds");
                    let mut session_data = sealed.to_json();
                    if has_mac {
                        mac_key.sign(me.as_str(), &mut session_data);
                    }
                    let data = json!({
                        "first_message_index": first_message_index,
                        "forwarded_count": forwarded_count,
                        "is_verified": is_verified,
                        "session_data": session_data,
                    });
                    (session_id.unwrap_or_else(|| group.session_id()), data)
                }
            };
            sessions.insert(session_id, data);
        }
        rooms.insert(room_id, json!({ "sessions": sessions }));
    }
    let entries: usize = rooms
        .values()
        .map(|room| room["sessions"].as_object().map_or(0, Map::len))
        .sum();
    let keys = json!({ "rooms": rooms });
    let recovery_key = restore
        .recovery_key
        .unwrap_or_else(|| key.to_recovery_key().to_string());
    if let Ok(restored) = machine.restore_backup(&recovery_key, &version, &keys) {
        assert_eq!(
            restored.imported + restored.unchanged + restored.invalid + restored.refused,
            entries,
            "every entry counted once"
        );
    }
});
