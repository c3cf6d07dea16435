//! The spec publishes no secret storage vectors, so the known answers below
//! were computed independently with Python's `hashlib` (PBKDF2-SHA-512) and
//! `cryptography` (HKDF-SHA-256, AES-256-CTR, HMAC-SHA-256), from the spec's
//! description of the algorithm.

use super::*;

/// The key `00 01 02 … 1f`.
fn counting_key() -> SecretStorageKey {
    let mut bytes = Zeroizing::new([0u8; 32]);
    for (index, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::try_from(index).unwrap();
    }
    SecretStorageKey(bytes)
}

const IV: &str = "AQEBAQEBAQF/AgICAgICAg";
const MASTER: &str = "m.cross_signing.master";
/// An unpadded base64 secret, as cross-signing keys are stored.
const SECRET: &[u8] = b"aGVsbG8gc2VjcmV0IHN0b3JhZ2U";

fn known_entry() -> EncryptedSecret {
    EncryptedSecret {
        iv: IV.to_owned(),
        ciphertext: "Ag0Csfe97i7RZC3sEQLEwGQyA9K4gsfmaUkX".to_owned(),
        mac: "6w7Er3fgRBHZRjHnOC1xUzS2iId+o4mkTSBB/K7OQp8".to_owned(),
    }
}

#[test]
fn decrypts_independently_computed_entry() {
    let plaintext = counting_key().decrypt(MASTER, &known_entry()).unwrap();
    assert_eq!(plaintext.as_slice(), SECRET);
}

#[test]
fn checks_independently_computed_key_check() {
    let key = counting_key();
    key.check(IV, "dKWJYREy4UEw1HOMTWIIZbtXtiSiELhivetS9IlFbqk")
        .unwrap();
    // Padded base64 (what matrix-js-sdk writes) is accepted too.
    key.check(
        "AQEBAQEBAQF/AgICAgICAg==",
        "dKWJYREy4UEw1HOMTWIIZbtXtiSiELhivetS9IlFbqk=",
    )
    .unwrap();
}

#[test]
fn passphrase_known_answer() {
    let params = PassphraseParams {
        salt: "saltysaltysaltysalt".to_owned(),
        iterations: 10,
    };
    let key = SecretStorageKey::from_passphrase("correct horse battery staple", &params).unwrap();
    let expected: Vec<u8> = (0..32)
        .map(|i| {
            u8::from_str_radix(
                &"cf0cb0ff5c97b286f432f3611d8fdf344297923a350c509516798c8f7aa3391c"
                    [2 * i..2 * i + 2],
                16,
            )
            .unwrap()
        })
        .collect();
    assert_eq!(key.0.as_slice(), expected.as_slice());
}

#[test]
fn passphrase_rounds_are_bounded() {
    for iterations in [0, MAX_ITERATIONS + 1] {
        let params = PassphraseParams {
            salt: "salt".to_owned(),
            iterations,
        };
        assert_eq!(
            SecretStorageKey::from_passphrase("pass", &params).unwrap_err(),
            SecretStorageError::Passphrase
        );
    }
}

#[test]
fn generated_passphrase_params_are_fresh() {
    let first = PassphraseParams::generate().unwrap();
    let second = PassphraseParams::generate().unwrap();
    assert_eq!(first.salt.len(), SALT_LENGTH);
    assert!(first.salt.chars().all(|c| c.is_ascii_alphanumeric()));
    assert_ne!(first.salt, second.salt);
    assert_eq!(first.iterations, DEFAULT_ITERATIONS);
}

#[test]
fn round_trip_with_fresh_iv() {
    let key = SecretStorageKey::generate().unwrap();
    let first = key.encrypt(MASTER, SECRET).unwrap();
    let second = key.encrypt(MASTER, SECRET).unwrap();
    assert_ne!(first.iv, second.iv);
    assert_ne!(first.ciphertext, second.ciphertext);
    assert_eq!(key.decrypt(MASTER, &first).unwrap().as_slice(), SECRET);
    assert_eq!(key.decrypt(MASTER, &second).unwrap().as_slice(), SECRET);
    // The counter half of the IV has its top bit cleared.
    let iv = decode_iv(&first.iv).unwrap();
    assert_eq!(iv[8] & 0x80, 0);
}

#[test]
fn key_check_round_trip_and_wrong_key() {
    let key = SecretStorageKey::generate().unwrap();
    let (iv, mac) = key.key_check().unwrap();
    key.check(&iv, &mac).unwrap();
    let other = SecretStorageKey::generate().unwrap();
    assert_eq!(other.check(&iv, &mac), Err(SecretStorageError::WrongKey));
}

#[test]
fn wrong_key_is_refused() {
    let other = SecretStorageKey::generate().unwrap();
    assert_eq!(
        other.decrypt(MASTER, &known_entry()).unwrap_err(),
        SecretStorageError::WrongKey
    );
}

#[test]
fn entry_under_another_name_is_refused() {
    assert_eq!(
        counting_key()
            .decrypt("m.cross_signing.self_signing", &known_entry())
            .unwrap_err(),
        SecretStorageError::WrongKey
    );
}

#[test]
fn tampered_ciphertext_or_mac_is_refused() {
    let key = counting_key();
    let mut ciphertext = base64::decode(&known_entry().ciphertext).unwrap();
    ciphertext[0] ^= 1;
    let tampered = EncryptedSecret {
        ciphertext: base64::encode(&ciphertext),
        ..known_entry()
    };
    assert_eq!(
        key.decrypt(MASTER, &tampered).unwrap_err(),
        SecretStorageError::WrongKey
    );
    let mut mac = base64::decode(&known_entry().mac).unwrap();
    mac[31] ^= 1;
    let tampered = EncryptedSecret {
        mac: base64::encode(&mac),
        ..known_entry()
    };
    assert_eq!(
        key.decrypt(MASTER, &tampered).unwrap_err(),
        SecretStorageError::WrongKey
    );
}

#[test]
fn malformed_entries_are_not_wrong_keys() {
    let key = counting_key();
    for entry in [
        EncryptedSecret {
            iv: "not base64!".to_owned(),
            ..known_entry()
        },
        EncryptedSecret {
            iv: "AQEB".to_owned(), // three bytes, not sixteen
            ..known_entry()
        },
        EncryptedSecret {
            ciphertext: "%%%".to_owned(),
            ..known_entry()
        },
        EncryptedSecret {
            mac: "%%%".to_owned(),
            ..known_entry()
        },
    ] {
        assert_eq!(
            key.decrypt(MASTER, &entry).unwrap_err(),
            SecretStorageError::Malformed
        );
    }
}

#[test]
fn recovery_key_round_trip() {
    let key = SecretStorageKey::generate().unwrap();
    let recovery_key = key.to_recovery_key();
    let parsed = SecretStorageKey::from_recovery_key(&recovery_key).unwrap();
    assert_eq!(parsed.0.as_slice(), key.0.as_slice());
    // Groups of four, separated by single spaces.
    assert!(
        recovery_key
            .split(' ')
            .all(|group| (1..=4).contains(&group.len()))
    );
    // Typed without spaces, or with extra ones, it still parses.
    let compact: String = recovery_key.split_whitespace().collect();
    assert!(SecretStorageKey::from_recovery_key(&format!("  {compact} ")).is_ok());
}

#[test]
fn mistyped_recovery_keys_give_typed_errors() {
    let recovery_key = counting_key().to_recovery_key();
    let compact: String = recovery_key.split_whitespace().collect();

    let bad_character = format!("0{}", &compact[1..]); // '0' is not base58
    assert_eq!(
        SecretStorageKey::from_recovery_key(&bad_character).unwrap_err(),
        SecretStorageError::RecoveryKey(RecoveryKeyError::Encoding)
    );
    assert!(matches!(
        SecretStorageKey::from_recovery_key(&compact[..compact.len() - 4]).unwrap_err(),
        SecretStorageError::RecoveryKey(RecoveryKeyError::Length(_))
    ));

    // Change one key byte: the parity no longer matches.
    let mut bytes = bs58::decode(&compact).into_vec().unwrap();
    bytes[10] ^= 0x01;
    assert_eq!(
        SecretStorageKey::from_recovery_key(&bs58::encode(&bytes).into_string()).unwrap_err(),
        SecretStorageError::RecoveryKey(RecoveryKeyError::Parity)
    );
    // Change the prefix but keep parity right.
    let mut bytes = bs58::decode(&compact).into_vec().unwrap();
    bytes[1] ^= 0x02;
    bytes[34] ^= 0x02;
    assert_eq!(
        SecretStorageKey::from_recovery_key(&bs58::encode(&bytes).into_string()).unwrap_err(),
        SecretStorageError::RecoveryKey(RecoveryKeyError::Prefix)
    );
}

#[test]
fn debug_is_redacted() {
    let key = counting_key();
    assert_eq!(format!("{key:?}"), "SecretStorageKey([redacted])");
}
