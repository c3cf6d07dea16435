use serde_json::json;

use super::*;

const MASTER: &str = "m.cross_signing.master";
const SEED: &str = "nSh6yE1MqHhDYoPTZz2nTJvNUOPGm9l5hGxM/bWmUdQ";

fn new_key(passphrase: Option<&str>) -> NewSecretStorageKey {
    SecretStorageKey::create(passphrase).unwrap()
}

#[test]
fn recovery_key_opens_a_new_key_and_its_secrets() {
    let created = new_key(None);
    assert_eq!(created.description["algorithm"], SECRET_STORAGE_ALGORITHM);
    assert!(created.description.get("passphrase").is_none());
    assert_eq!(created.key.key_id().len(), KEY_ID_LENGTH);
    let content = created.key.encrypt_secret(MASTER, SEED).unwrap();

    let opened = SecretStorageKey::open(
        created.key.key_id(),
        &created.description,
        Unlock::RecoveryKey(&created.recovery_key),
    )
    .unwrap();
    assert_eq!(
        opened.decrypt_secret(MASTER, &content).unwrap().as_str(),
        SEED
    );
}

#[test]
fn passphrase_opens_its_key() {
    let created = new_key(Some("correct horse battery staple"));
    let passphrase = &created.description["passphrase"];
    assert_eq!(passphrase["algorithm"], PASSPHRASE_ALGORITHM);
    assert!(passphrase["iterations"].as_u64().unwrap() > 0);
    let content = created.key.encrypt_secret(MASTER, SEED).unwrap();
    let id = created.key.key_id();

    let opened = SecretStorageKey::open(
        id,
        &created.description,
        Unlock::Passphrase("correct horse battery staple"),
    )
    .unwrap();
    assert_eq!(
        opened.decrypt_secret(MASTER, &content).unwrap().as_str(),
        SEED
    );
    // The recovery key opens a passphrase key too.
    SecretStorageKey::open(
        id,
        &created.description,
        Unlock::RecoveryKey(&created.recovery_key),
    )
    .unwrap();
    assert_eq!(
        SecretStorageKey::open(id, &created.description, Unlock::Passphrase("wrong")).unwrap_err(),
        SecretStorageError::WrongKey
    );
}

#[test]
fn wrong_and_mistyped_recovery_keys_are_told_apart() {
    let created = new_key(None);
    let other = new_key(None);
    let id = created.key.key_id();
    assert_eq!(
        SecretStorageKey::open(
            id,
            &created.description,
            Unlock::RecoveryKey(&other.recovery_key)
        )
        .unwrap_err(),
        SecretStorageError::WrongKey
    );
    // Drop one character: a typo, reported as such.
    let typo: String = created.recovery_key.chars().skip(1).collect();
    assert!(matches!(
        SecretStorageKey::open(id, &created.description, Unlock::RecoveryKey(&typo)).unwrap_err(),
        SecretStorageError::RecoveryKey(_)
    ));
}

#[test]
fn key_without_passphrase_refuses_one() {
    let created = new_key(None);
    assert_eq!(
        SecretStorageKey::open(
            created.key.key_id(),
            &created.description,
            Unlock::Passphrase("anything")
        )
        .unwrap_err(),
        SecretStorageError::NoPassphrase
    );
}

#[test]
fn unsupported_descriptions_are_refused() {
    let created = new_key(None);
    let id = created.key.key_id();
    let mut other_algorithm = created.description.clone();
    other_algorithm["algorithm"] = json!("m.secret_storage.v2.something");
    assert_eq!(
        SecretStorageKey::open(
            id,
            &other_algorithm,
            Unlock::RecoveryKey(&created.recovery_key)
        )
        .unwrap_err(),
        SecretStorageError::Unsupported
    );
    for passphrase in [
        json!({"algorithm": "m.argon2", "salt": "s", "iterations": 1}),
        json!({"algorithm": "m.pbkdf2", "salt": "s", "iterations": 0}),
        json!({"algorithm": "m.pbkdf2", "salt": "s", "iterations": 1, "bits": 128}),
        json!({"algorithm": "m.pbkdf2", "salt": "s", "iterations": u64::MAX}),
    ] {
        let mut description = created.description.clone();
        description["passphrase"] = passphrase;
        assert_eq!(
            SecretStorageKey::open(id, &description, Unlock::Passphrase("p")).unwrap_err(),
            SecretStorageError::Unsupported
        );
    }
    let mut no_salt = created.description.clone();
    no_salt["passphrase"] = json!({"algorithm": "m.pbkdf2", "iterations": 1});
    assert_eq!(
        SecretStorageKey::open(id, &no_salt, Unlock::Passphrase("p")).unwrap_err(),
        SecretStorageError::Malformed
    );
}

#[test]
fn secrets_are_bound_to_their_name_and_key() {
    let created = new_key(None);
    let content = created.key.encrypt_secret(MASTER, SEED).unwrap();
    assert_eq!(
        created
            .key
            .decrypt_secret("m.cross_signing.self_signing", &content)
            .unwrap_err(),
        SecretStorageError::WrongKey
    );
    let other = new_key(None);
    assert_eq!(
        other.key.decrypt_secret(MASTER, &content).unwrap_err(),
        SecretStorageError::NotStored
    );
}

#[test]
fn tampered_and_malformed_entries_are_refused() {
    let created = new_key(None);
    let id = created.key.key_id().to_owned();
    let content = created.key.encrypt_secret(MASTER, SEED).unwrap();

    let mut tampered = content.clone();
    let ciphertext = tampered["encrypted"][&id]["ciphertext"].as_str().unwrap();
    // Swap the first character for another base64 one.
    let replacement = if ciphertext.starts_with('A') {
        "B"
    } else {
        "A"
    };
    tampered["encrypted"][&id]["ciphertext"] = json!(format!("{replacement}{}", &ciphertext[1..]));
    assert_eq!(
        created.key.decrypt_secret(MASTER, &tampered).unwrap_err(),
        SecretStorageError::WrongKey
    );

    let mut missing_mac = content.clone();
    missing_mac["encrypted"][&id]
        .as_object_mut()
        .unwrap()
        .remove("mac");
    assert_eq!(
        created
            .key
            .decrypt_secret(MASTER, &missing_mac)
            .unwrap_err(),
        SecretStorageError::Malformed
    );
    let mut bad_iv = content;
    bad_iv["encrypted"][&id]["iv"] = json!("not base64!");
    assert_eq!(
        created.key.decrypt_secret(MASTER, &bad_iv).unwrap_err(),
        SecretStorageError::Malformed
    );
}
