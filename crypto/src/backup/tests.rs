use serde_json::json;

use super::{BackupDecryptionKey, BackupEncryptionKey, BackupError, EncryptedEntry};

const ROOM_KEY: &[u8] = br#"{"algorithm":"m.megolm.v1.aes-sha2","session_key":"AQAAAA"}"#;

#[test]
fn round_trip() {
    let key = BackupDecryptionKey::new();
    let entry = key.encryption_key().encrypt(ROOM_KEY).unwrap();
    assert_eq!(key.decrypt(&entry).unwrap().as_slice(), ROOM_KEY);
}

#[test]
fn each_entry_has_a_fresh_ephemeral_key() {
    let key = BackupDecryptionKey::new().encryption_key();
    let first = key.encrypt(ROOM_KEY).unwrap();
    let second = key.encrypt(ROOM_KEY).unwrap();
    assert_ne!(first.ephemeral, second.ephemeral);
    assert_ne!(first.ciphertext, second.ciphertext);
}

#[test]
fn ciphertext_does_not_contain_the_plaintext() {
    let entry = BackupDecryptionKey::new()
        .encryption_key()
        .encrypt(ROOM_KEY)
        .unwrap();
    let json = serde_json::to_string(&entry.to_json()).unwrap();
    assert!(!json.contains("session_key"), "{json}");
}

#[test]
fn wrong_key_fails() {
    let entry = BackupDecryptionKey::new()
        .encryption_key()
        .encrypt(ROOM_KEY)
        .unwrap();
    let other = BackupDecryptionKey::new();
    assert!(matches!(
        other.decrypt(&entry),
        Err(BackupError::Decryption)
    ));
}

#[test]
fn tampered_mac_fails() {
    let key = BackupDecryptionKey::new();
    let mut entry = key.encryption_key().encrypt(ROOM_KEY).unwrap();
    let mut mac = crate::base64::decode(&entry.mac).unwrap();
    mac[0] ^= 1;
    entry.mac = crate::base64::encode(&mac);
    assert!(matches!(key.decrypt(&entry), Err(BackupError::Decryption)));
}

/// The spec's MAC covers no data, so a changed ciphertext is caught only by
/// the padding check or by the caller's JSON parsing: never returned as the
/// original plaintext.
#[test]
fn tampered_ciphertext_never_yields_the_plaintext() {
    let key = BackupDecryptionKey::new();
    let entry = key.encryption_key().encrypt(ROOM_KEY).unwrap();
    let ciphertext = crate::base64::decode(&entry.ciphertext).unwrap();
    for position in 0..ciphertext.len() {
        let mut altered = ciphertext.clone();
        altered[position] ^= 0x80;
        let tampered = EncryptedEntry {
            ciphertext: crate::base64::encode(&altered),
            ..entry.clone()
        };
        if let Ok(plaintext) = key.decrypt(&tampered) {
            assert_ne!(plaintext.as_slice(), ROOM_KEY, "byte {position}");
        }
    }
    // In CBC, flipping a bit of the second-to-last block flips the same bit
    // of the last plaintext block: here the final padding byte, which then
    // exceeds the block size.
    let padding_byte = ciphertext.len() - 17;
    let mut altered = ciphertext;
    altered[padding_byte] ^= 0x80;
    let tampered = EncryptedEntry {
        ciphertext: crate::base64::encode(&altered),
        ..entry
    };
    assert!(matches!(
        key.decrypt(&tampered),
        Err(BackupError::Decryption)
    ));
}

#[test]
fn malformed_entries_are_refused() {
    let key = BackupDecryptionKey::new();
    let entry = key.encryption_key().encrypt(ROOM_KEY).unwrap();
    let bad_ephemeral = EncryptedEntry {
        ephemeral: "not a key".to_owned(),
        ..entry.clone()
    };
    assert!(matches!(
        key.decrypt(&bad_ephemeral),
        Err(BackupError::InvalidPublicKey)
    ));
    let bad_ciphertext = EncryptedEntry {
        ciphertext: "!!".to_owned(),
        ..entry
    };
    assert!(matches!(
        key.decrypt(&bad_ciphertext),
        Err(BackupError::MalformedEntry)
    ));
    assert!(matches!(
        EncryptedEntry::from_json(&json!({"ephemeral": "a", "mac": "b"})),
        Err(BackupError::MalformedEntry)
    ));
}

#[test]
fn entry_json_round_trip() {
    let entry = BackupDecryptionKey::new()
        .encryption_key()
        .encrypt(ROOM_KEY)
        .unwrap();
    let json = serde_json::Value::Object(entry.to_json());
    assert_eq!(EncryptedEntry::from_json(&json).unwrap(), entry);
}

#[test]
fn recovery_key_round_trip_and_format() {
    let key = BackupDecryptionKey::new();
    let recovery_key = key.to_recovery_key();
    let groups: Vec<&str> = recovery_key.split(' ').collect();
    assert!(groups[..groups.len() - 1].iter().all(|g| g.len() == 4));
    let compact: String = recovery_key.split(' ').collect();
    let bytes = bs58::decode(&compact).into_vec().unwrap();
    assert_eq!(bytes.len(), 35);
    assert_eq!(bytes[..2], [0x8b, 0x01]);
    assert_eq!(bytes[2..34], key.to_bytes()[..]);
    assert_eq!(bytes.iter().fold(0, |p, b| p ^ b), 0);

    let parsed = BackupDecryptionKey::from_recovery_key(&recovery_key).unwrap();
    assert_eq!(parsed.encryption_key(), key.encryption_key());
    // Users may drop or add whitespace.
    let retyped = format!("  {}\n", compact);
    let parsed = BackupDecryptionKey::from_recovery_key(&retyped).unwrap();
    assert_eq!(parsed.encryption_key(), key.encryption_key());
}

fn encode_raw(bytes: &[u8]) -> String {
    bs58::encode(bytes).into_string()
}

fn valid_raw(key: &BackupDecryptionKey) -> Vec<u8> {
    let compact: String = key.to_recovery_key().split(' ').collect();
    bs58::decode(&compact).into_vec().unwrap()
}

#[test]
fn recovery_key_typo_fails_parity() {
    let key = BackupDecryptionKey::new();
    let mut bytes = valid_raw(&key);
    bytes[10] ^= 0x01;
    assert!(matches!(
        BackupDecryptionKey::from_recovery_key(&encode_raw(&bytes)),
        Err(BackupError::RecoveryKeyParity)
    ));
}

#[test]
fn recovery_key_structure_errors() {
    let key = BackupDecryptionKey::new();
    let bytes = valid_raw(&key);

    let mut wrong_prefix = bytes.clone();
    wrong_prefix[0] = 0x8c;
    wrong_prefix[34] ^= 0x8b ^ 0x8c; // keep parity right: only the prefix is wrong
    assert!(matches!(
        BackupDecryptionKey::from_recovery_key(&encode_raw(&wrong_prefix)),
        Err(BackupError::RecoveryKeyPrefix)
    ));
    assert!(matches!(
        BackupDecryptionKey::from_recovery_key(&encode_raw(&bytes[..34])),
        Err(BackupError::RecoveryKeyLength(34))
    ));
    // `0`, `O`, `I` and `l` are not in the base58 alphabet.
    assert!(matches!(
        BackupDecryptionKey::from_recovery_key("EsT0 LW2K"),
        Err(BackupError::RecoveryKeyEncoding)
    ));
}

#[test]
fn private_bytes_round_trip() {
    let key = BackupDecryptionKey::new();
    let restored = BackupDecryptionKey::from_bytes(&key.to_bytes());
    assert_eq!(restored.encryption_key(), key.encryption_key());
}

#[test]
fn auth_data_round_trip() {
    let key = BackupDecryptionKey::new().encryption_key();
    let auth_data = key.auth_data();
    assert_eq!(
        BackupEncryptionKey::from_auth_data(&auth_data).unwrap(),
        key
    );
    assert!(matches!(
        BackupEncryptionKey::from_auth_data(&serde_json::Map::new()),
        Err(BackupError::InvalidPublicKey)
    ));
}

#[test]
fn debug_is_redacted() {
    let key = BackupDecryptionKey::new();
    let debug = format!("{key:?}");
    assert_eq!(debug, "BackupDecryptionKey([redacted])");
}

#[test]
fn pickle_round_trip_and_wrong_key() {
    let key = BackupDecryptionKey::new();
    let pickle_key = crate::PickleKey::from_bytes([7; 32]);
    let pickle = key.pickle(&pickle_key).unwrap();
    let restored = BackupDecryptionKey::from_pickle(&pickle, &pickle_key).unwrap();
    assert_eq!(restored.encryption_key(), key.encryption_key());
    let other = crate::PickleKey::from_bytes([8; 32]);
    assert!(BackupDecryptionKey::from_pickle(&pickle, &other).is_err());
}

/// Interoperability vectors generated with libolm by matrix-js-sdk:
/// matrix-org/matrix-js-sdk, spec/test-utils/test-data/index.ts, commit
/// 0a2dea6416c7a67ec9cd7c2ce625a3f88a52b37c (`BACKUP_DECRYPTION_KEY_BASE64`,
/// `SIGNED_BACKUP_DATA`, `CURVE25519_KEY_BACKUP_DATA`, `MEGOLM_SESSION_DATA`).
mod js_sdk_vectors {
    use super::*;
    use crate::{
        megolm::{ExportedSessionKey, InboundGroupSession},
        verify_json_signature,
    };

    const PRIVATE_KEY: &str = "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=";
    const PUBLIC_KEY: &str = "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo";
    const DEVICE_ED25519: &str = "YI/7vbGVLpGdYtuceQR8MSsKB/QjgfMXM1xqnn+0NWU";
    const AUTH_DATA_SIGNATURE: &str =
        "KDSNeumirTsd8piI0oVfv/wzg4J4HlEc7rs5XhODFcJ/YAcUdg65ajsZG+rLI0TQOSSGjorJqcrSiSB1HRSCAA";
    const CIPHERTEXT: &str = "r6HRk2/Im2yJe5cLP8R81aVjFWjYWPHpw7TVxphiSK1cdIDZTTK57r6MfU+0i/mTPn+/PosT74OvYwCnehy2d1BPGxhDl8AhPcBu3//Kzlq2o5CssPsw+88gRehkAsPg9Zp5G9sL9to6giltvTWTbsaQpmvv3HLmBOYSFIxvyZrOT/Ffqu325f0IEsKcyV2BdIkw8Ob9Xt+VWoe4MYEGG6y1T8W125zeFgKWI4Ow76uput64H9zZjIo+Cc+hCTO9Ea4EnosSjizCotevkNck7C/zGgfhBikiohROb6SbaZgxicSsEDZ+f7brnri9yP3iXS3PMDHHpa1+XzG2VOG/Y9OQZpkPq+pbLrCC+NWJeJPslDAK5i+RURwzjnPmaHKCRHTq86CwhFyiCDf61MGwCY3xjrmBJg44BCdxWqCx0YJvwsvVqqnl4vTieUfrwThNPsQ81aVkDHvlmrgrTt8icDa8jTJhu34jem+pbRSEM5aJikV4B+zYiLz+dH/v6UpYA2eG8ReOvwpPXp6CAcIlplRPpWbMBeLFVcPkT4KAXTp9exFpB4on4pf8OsaDomlt4qAA0rhAZmhPWPKcU/A0Tz4gyMu54OivVtw1SPj+5Iq+YDQ8jB6Po3ApzMf6fwF9x/FjevbboFB05X2Jr0NrbFqXMOUwXHMgDAGiIWX8+gkmmbaiNWqg2etjN94pobQSGZelb18XGN7kuwMk+Zwk7A";
    const EPHEMERAL: &str = "q+P1WdRtEiPIEtNuuGrRcueZxUbLnSKdsuTAkxewXgU";
    const MAC: &str = "OibmACbORhI";

    fn key() -> BackupDecryptionKey {
        let bytes: [u8; 32] = crate::base64::decode(PRIVATE_KEY)
            .unwrap()
            .try_into()
            .unwrap();
        BackupDecryptionKey::from_bytes(&bytes)
    }

    #[test]
    fn public_key_and_auth_data_signature() {
        assert_eq!(key().encryption_key().to_base64(), PUBLIC_KEY);
        let auth_data = json!({
            "public_key": PUBLIC_KEY,
            "signatures": {"@alice:localhost": {"ed25519:test_device": AUTH_DATA_SIGNATURE}},
        });
        let device = vodozemac::Ed25519PublicKey::from_base64(DEVICE_ED25519).unwrap();
        let auth_data = auth_data.as_object().unwrap();
        verify_json_signature(
            &device,
            "@alice:localhost",
            "ed25519:test_device",
            auth_data,
        )
        .unwrap();
        assert_eq!(
            BackupEncryptionKey::from_auth_data(auth_data).unwrap(),
            key().encryption_key()
        );
    }

    #[test]
    fn entry_encrypted_by_libolm_decrypts() {
        let entry = EncryptedEntry {
            ephemeral: EPHEMERAL.to_owned(),
            ciphertext: CIPHERTEXT.to_owned(),
            mac: MAC.to_owned(),
        };
        let plaintext = key().decrypt(&entry).unwrap();
        let session: serde_json::Value = serde_json::from_slice(&plaintext).unwrap();
        assert_eq!(session["algorithm"], "m.megolm.v1.aes-sha2");
        assert_eq!(
            session["sender_key"],
            "WimPd2udAU/1S/+YBpPbmr9L+0H5H+BnAVHSwDxlPGc"
        );
        let exported =
            ExportedSessionKey::from_base64(session["session_key"].as_str().unwrap()).unwrap();
        let inbound = InboundGroupSession::import(&exported);
        assert_eq!(
            inbound.session_id(),
            "ipdI6Zs/7DzFTEhiA2iGaMDfHkIYCleqXT6L+5e1/co"
        );
        // The entry's unencrypted `first_message_index` (1) is only
        // metadata for the server; the exported key itself starts at 0.
        assert_eq!(inbound.first_known_index(), 0);
        // The recovery key of this key round-trips through our encoding.
        let parsed = BackupDecryptionKey::from_recovery_key(&key().to_recovery_key()).unwrap();
        assert_eq!(parsed.encryption_key().to_base64(), PUBLIC_KEY);
    }
}
