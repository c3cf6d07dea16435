//! Export files round trip, refuse wrong passphrases and altered bytes, and
//! match a file matrix-js-sdk's crypto produced (`js_sdk_export.json`).

use serde_json::Value;

use super::*;

const PASSPHRASE: &str = "correct horse battery staple";
/// Few rounds: the tests are about the format, not the cost.
const ROUNDS: u32 = 1_000;

fn js_sdk_vector() -> Value {
    serde_json::from_str(include_str!("js_sdk_export.json")).unwrap()
}

#[test]
fn a_file_made_by_matrix_js_sdk_decrypts_to_its_export() {
    let vector = js_sdk_vector();
    let payload = decrypt_key_export(
        vector["file"].as_str().unwrap(),
        vector["passphrase"].as_str().unwrap(),
    )
    .unwrap();
    assert_eq!(
        payload.as_slice(),
        vector["plaintext"].as_str().unwrap().as_bytes()
    );
}

#[test]
fn an_export_round_trips_in_the_armoured_format() {
    let payload = br#"[{"algorithm":"m.megolm.v1.aes-sha2"}]"#.repeat(20);
    let file = encrypt_key_export(&payload, PASSPHRASE, ROUNDS).unwrap();
    assert!(file.starts_with("-----BEGIN MEGOLM SESSION DATA-----\n"));
    assert!(file.ends_with("\n-----END MEGOLM SESSION DATA-----\n"));
    assert!(file.lines().all(|line| line.len() <= 96));
    assert_eq!(
        decrypt_key_export(&file, PASSPHRASE).unwrap().as_slice(),
        payload
    );

    // The layout: version 1, then the rounds after salt and IV, and an IV
    // with bit 63 clear.
    let bytes = unarmour(&file).unwrap();
    assert_eq!(bytes[0], 1);
    assert_eq!(bytes[33..37], ROUNDS.to_be_bytes());
    assert_eq!(bytes[17 + 8] & 0x80, 0);
    assert_eq!(bytes.len(), 37 + payload.len() + 32);
    // Fresh salt and IV each time.
    let again = encrypt_key_export(&payload, PASSPHRASE, ROUNDS).unwrap();
    assert_ne!(unarmour(&again).unwrap()[1..33], bytes[1..33]);
}

#[test]
fn a_wrong_passphrase_or_an_altered_byte_is_refused() {
    let file = encrypt_key_export(b"[]", PASSPHRASE, ROUNDS).unwrap();
    assert_eq!(
        decrypt_key_export(&file, "wrong").unwrap_err(),
        KeyExportError::WrongPassphrase
    );
    let mut bytes = unarmour(&file).unwrap();
    bytes[38] ^= 1;
    assert_eq!(
        decrypt_key_export(&armour(&bytes), PASSPHRASE).unwrap_err(),
        KeyExportError::WrongPassphrase
    );
}

#[test]
fn damaged_or_hostile_files_get_typed_errors() {
    assert_eq!(
        decrypt_key_export("not an export", PASSPHRASE).unwrap_err(),
        KeyExportError::NotAnExport
    );
    let unterminated = "-----BEGIN MEGOLM SESSION DATA-----\nAQID\n";
    assert_eq!(
        decrypt_key_export(unterminated, PASSPHRASE).unwrap_err(),
        KeyExportError::NotAnExport
    );
    assert_eq!(
        decrypt_key_export(&armour(&[1, 2, 3]), PASSPHRASE).unwrap_err(),
        KeyExportError::Malformed
    );
    let file = encrypt_key_export(b"[]", PASSPHRASE, ROUNDS).unwrap();
    let mut bytes = unarmour(&file).unwrap();
    bytes[0] = 2;
    assert_eq!(
        decrypt_key_export(&armour(&bytes), PASSPHRASE).unwrap_err(),
        KeyExportError::Malformed
    );
    // A file asking for four billion rounds is refused before any work.
    bytes[0] = 1;
    bytes[33..37].copy_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(
        decrypt_key_export(&armour(&bytes), PASSPHRASE).unwrap_err(),
        KeyExportError::Rounds
    );
    assert_eq!(
        encrypt_key_export(b"[]", PASSPHRASE, 0).unwrap_err(),
        KeyExportError::Rounds
    );
}
