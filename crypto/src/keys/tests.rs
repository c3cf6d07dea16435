use super::{KeyError, SigningKey};
use crate::testing::{SPEC_PUBLIC_KEY, spec_key};

#[test]
fn spec_seed_derives_published_public_key_and_key_id() {
    let key = spec_key();
    assert_eq!(key.public_key().encode(), SPEC_PUBLIC_KEY);
    assert_eq!(key.key_id().as_str(), "ed25519:1");
    assert_eq!(key.version().as_str(), "1");
}

#[test]
fn seed_round_trips_in_canonical_base64() {
    // The spec's seed has non-zero trailing bits (its last character is `1`);
    // the canonical encoding of the same 32 bytes ends in `0`.
    let key = spec_key();
    let exported = key.to_seed_base64();
    assert_eq!(
        exported.as_str(),
        "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA0"
    );
    let reloaded = SigningKey::from_seed_base64(&exported, "1").unwrap();
    assert_eq!(reloaded.public_key(), key.public_key());
}

#[test]
fn debug_redacts_the_seed() {
    let debug = format!("{:?}", spec_key());
    assert_eq!(
        debug,
        format!(
            "SigningKey {{ key_id: \"ed25519:1\", public_key: \"{SPEC_PUBLIC_KEY}\", \
             seed: [redacted] }}"
        )
    );
    assert!(!debug.contains("YJDBA9"));
}

#[test]
fn rejects_bad_seed_and_version() {
    assert!(matches!(
        SigningKey::from_seed_base64("Zm9v", "1"),
        Err(KeyError::SeedLength {
            expected: 32,
            found: 3
        })
    ));
    assert!(matches!(
        SigningKey::from_seed_base64("!!", "1"),
        Err(KeyError::SeedNotBase64)
    ));
    for version in ["", "a:b", "a b", "a.b"] {
        assert!(
            matches!(
                SigningKey::from_seed(&[0; 32], version),
                Err(KeyError::InvalidVersion { version: v }) if v == version
            ),
            "{version:?}"
        );
    }
    assert!(matches!(
        SigningKey::generate("no way"),
        Err(KeyError::InvalidVersion { .. })
    ));
}

#[test]
fn generated_keys_are_distinct_and_reload_from_their_seed() {
    let a = SigningKey::generate("a_1").unwrap();
    let b = SigningKey::generate("a_1").unwrap();
    assert_ne!(a.public_key(), b.public_key());
    assert_eq!(a.key_id().as_str(), "ed25519:a_1");
    let reloaded = SigningKey::from_seed_base64(&a.to_seed_base64(), "a_1").unwrap();
    assert_eq!(reloaded.public_key(), a.public_key());
}
