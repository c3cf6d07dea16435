use proptest::prelude::*;
use serde_json::{Value, json};

use super::{
    AttachmentDecryptor, AttachmentEncryptor, AttachmentError, AttachmentKeys, EncryptedFile,
    decrypt, encrypt,
};

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn file_json(keys: &AttachmentKeys) -> Value {
    EncryptedFile {
        url: "mxc://example.org/abc".to_owned(),
        keys: keys.clone(),
    }
    .to_json()
}

/// NIST SP 800-38A, appendix F.5.5 (CTR-AES256.Encrypt). The counter's low
/// 64 bits do not wrap within these four blocks, so a 64-bit counter
/// matches the 128-bit one NIST uses.
#[test]
fn nist_sp800_38a_ctr_aes256() {
    let key: [u8; 32] = hex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4")
        .try_into()
        .unwrap();
    let iv: [u8; 16] = hex("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff").try_into().unwrap();
    let plaintext = hex(concat!(
        "6bc1bee22e409f96e93d7e117393172a",
        "ae2d8a571e03ac9c9eb76fac45af8e51",
        "30c81c46a35ce411e5fbc1191a0a52ef",
        "f69f2445df4f9b17ad2b417be66c3710",
    ));
    let expected = hex(concat!(
        "601ec313775789a5b7a7f504bbf3d228",
        "f443e3ca4d62b59aca84e990cacaf5c5",
        "2b0930daa23de94ce87017ba2d84988d",
        "dfc9c58db67aada613c2dd08457941a6",
    ));
    let mut encryptor = AttachmentEncryptor::with_key_and_iv(key.into(), iv);
    let mut data = plaintext.clone();
    encryptor.encrypt_chunk(&mut data);
    assert_eq!(data, expected);
    let keys = encryptor.finish();
    assert_eq!(decrypt(&data, &keys).unwrap(), plaintext);
}

#[test]
fn round_trip_through_json() {
    let plaintext = b"a picture of a cat".repeat(100);
    let (ciphertext, keys) = encrypt(&plaintext).unwrap();
    assert_ne!(ciphertext, plaintext);
    let parsed = EncryptedFile::from_json(&file_json(&keys)).unwrap();
    assert_eq!(parsed.url, "mxc://example.org/abc");
    assert_eq!(decrypt(&ciphertext, &parsed.keys).unwrap(), plaintext);
}

#[test]
fn json_has_the_spec_shape() {
    let (_, keys) = encrypt(b"x").unwrap();
    let value = file_json(&keys);
    assert_eq!(value["v"], "v2");
    assert_eq!(value["key"]["kty"], "oct");
    assert_eq!(value["key"]["alg"], "A256CTR");
    assert_eq!(value["key"]["ext"], true);
    assert_eq!(value["key"]["key_ops"], json!(["encrypt", "decrypt"]));
    let k = value["key"]["k"].as_str().unwrap();
    assert_eq!(k.len(), 43, "unpadded base64url of 32 bytes");
    assert!(!k.contains(['+', '/', '=']));
    let iv = value["iv"].as_str().unwrap();
    assert_eq!(iv.len(), 22, "unpadded base64 of 16 bytes");
    assert_eq!(value["hashes"]["sha256"].as_str().unwrap().len(), 43);
    // The counter half of a fresh IV is zero.
    assert_eq!(&keys.iv[8..], &[0u8; 8]);
}

#[test]
fn fresh_keys_differ() {
    let (a, ka) = encrypt(b"same").unwrap();
    let (b, kb) = encrypt(b"same").unwrap();
    assert_ne!(a, b);
    assert_ne!(*ka.key, *kb.key);
}

#[test]
fn flipped_ciphertext_byte_fails_the_hash() {
    let plaintext = vec![7u8; 1000];
    let (mut ciphertext, keys) = encrypt(&plaintext).unwrap();
    ciphertext[500] ^= 1;
    assert_eq!(
        decrypt(&ciphertext, &keys),
        Err(AttachmentError::HashMismatch)
    );

    let mut decryptor = AttachmentDecryptor::new(&keys);
    decryptor.decrypt_chunk(&mut ciphertext);
    assert_eq!(decryptor.finish(), Err(AttachmentError::HashMismatch));
}

#[test]
fn truncated_or_extended_ciphertext_fails_the_hash() {
    let (ciphertext, keys) = encrypt(&[1u8; 64]).unwrap();
    assert_eq!(
        decrypt(&ciphertext[..63], &keys),
        Err(AttachmentError::HashMismatch)
    );
    let mut longer = ciphertext.clone();
    longer.push(0);
    assert_eq!(decrypt(&longer, &keys), Err(AttachmentError::HashMismatch));
}

#[test]
fn wrong_key_or_iv_does_not_recover_the_plaintext() {
    let plaintext = b"secret document contents".to_vec();
    let (ciphertext, keys) = encrypt(&plaintext).unwrap();

    let mut wrong_key = keys.clone();
    wrong_key.key[0] ^= 1;
    let out = decrypt(&ciphertext, &wrong_key).unwrap();
    assert_ne!(out, plaintext);

    let mut wrong_iv = keys.clone();
    wrong_iv.iv[0] ^= 1;
    assert_ne!(decrypt(&ciphertext, &wrong_iv).unwrap(), plaintext);
}

#[test]
fn another_files_hash_is_refused() {
    let (ciphertext, _) = encrypt(b"first file").unwrap();
    let (_, other) = encrypt(b"first file").unwrap();
    assert_eq!(
        decrypt(&ciphertext, &other),
        Err(AttachmentError::HashMismatch)
    );
}

fn mutated(edit: impl FnOnce(&mut Value)) -> Result<EncryptedFile, AttachmentError> {
    let (_, keys) = encrypt(b"x").unwrap();
    let mut value = file_json(&keys);
    edit(&mut value);
    EncryptedFile::from_json(&value)
}

#[test]
fn json_validation() {
    use AttachmentError::*;
    assert_eq!(
        mutated(|v| v["v"] = json!("v1")).unwrap_err(),
        UnsupportedVersion
    );
    assert_eq!(mutated(|v| v["v"] = json!(2)).unwrap_err(), Malformed("v"));
    assert_eq!(
        mutated(|v| {
            v.as_object_mut().unwrap().remove("v");
        })
        .unwrap_err(),
        Malformed("v")
    );
    assert_eq!(
        mutated(|v| v["key"]["kty"] = json!("RSA")).unwrap_err(),
        UnsupportedKey("kty")
    );
    assert_eq!(
        mutated(|v| v["key"]["alg"] = json!("A128CTR")).unwrap_err(),
        UnsupportedKey("alg")
    );
    assert_eq!(
        mutated(|v| v["key"]["key_ops"] = json!(["encrypt"])).unwrap_err(),
        UnsupportedKey("key_ops")
    );
    assert_eq!(
        mutated(|v| v["key"]["key_ops"] = json!("encrypt")).unwrap_err(),
        Malformed("key_ops")
    );
    assert_eq!(
        mutated(|v| v["key"]["ext"] = json!(false)).unwrap_err(),
        UnsupportedKey("ext")
    );
    assert_eq!(
        mutated(|v| v["key"]["k"] = json!("AAAA")).unwrap_err(),
        BadLength("k")
    );
    assert_eq!(
        mutated(|v| v["key"]["k"] = json!("!!not base64!!")).unwrap_err(),
        BadLength("k")
    );
    assert_eq!(
        mutated(|v| v["iv"] = json!("AAAAAAAAAAAAAAAAAAAAAAAAAAAA")).unwrap_err(),
        BadLength("iv")
    );
    assert_eq!(
        mutated(|v| v["hashes"] = json!({})).unwrap_err(),
        Malformed("hashes.sha256")
    );
    assert_eq!(
        mutated(|v| v["hashes"]["sha256"] = json!("AAAA")).unwrap_err(),
        BadLength("hashes.sha256")
    );
    assert_eq!(
        mutated(|v| v["url"] = json!("https://evil")).unwrap_err(),
        Malformed("url")
    );
    assert_eq!(mutated(|v| *v = json!([])).unwrap_err(), Malformed("v"));
    // A key allowing more operations is still accepted.
    assert!(mutated(|v| v["key"]["key_ops"] = json!(["decrypt", "sign", "encrypt"])).is_ok());
}

#[test]
fn debug_does_not_print_the_key() {
    let (_, keys) = encrypt(b"x").unwrap();
    let k = file_json(&keys)["key"]["k"].as_str().unwrap().to_owned();
    assert!(!format!("{keys:?}").contains(&k));
}

fn chunked<F: FnMut(&mut [u8])>(data: &mut [u8], cuts: &[usize], mut f: F) {
    let mut start = 0;
    for &cut in cuts {
        let end = (start + cut).min(data.len());
        f(&mut data[start..end]);
        start = end;
    }
    f(&mut data[start..]);
}

proptest! {
    #[test]
    fn chunked_equals_whole(
        plaintext in proptest::collection::vec(any::<u8>(), 0..600),
        cuts in proptest::collection::vec(0usize..70, 0..20),
    ) {
        let mut encryptor = AttachmentEncryptor::new().unwrap();
        let mut ciphertext = plaintext.clone();
        chunked(&mut ciphertext, &cuts, |c| encryptor.encrypt_chunk(c));
        let keys = encryptor.finish();

        // Whole-buffer decryption agrees with chunked encryption.
        prop_assert_eq!(&decrypt(&ciphertext, &keys).unwrap(), &plaintext);
        // And encrypting the whole buffer with the same key and IV agrees too.
        let mut whole = AttachmentEncryptor::with_key_and_iv(keys.key.clone(), keys.iv);
        let mut again = plaintext.clone();
        whole.encrypt_chunk(&mut again);
        prop_assert_eq!(&again, &ciphertext);
        prop_assert_eq!(whole.finish().sha256, keys.sha256);

        // Chunked decryption, with the cuts reversed, recovers it and verifies.
        let mut decryptor = AttachmentDecryptor::new(&keys);
        let mut out = ciphertext.clone();
        let reversed: Vec<usize> = cuts.iter().rev().copied().collect();
        chunked(&mut out, &reversed, |c| decryptor.decrypt_chunk(c));
        prop_assert_eq!(decryptor.finish(), Ok(()));
        prop_assert_eq!(out, plaintext);
    }
}

/// The vectors of matrix-org/browser-encrypt-attachment's
/// test/decrypt.Spec.js (commit 519739399503133f198ff09028215c7eee26cac1),
/// what Element's encrypted attachments are tested against. Their JWKs
/// predate `ext` and `v`, which the spec now requires; those two fields
/// are added here. The second IV is all ones: its counter half is at the
/// wrap point.
#[test]
fn browser_encrypt_attachment_vectors() {
    let vectors = [
        (
            "",
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "AAAAAAAAAAAAAAAAAAAAAA",
            "",
        ),
        (
            "nZxRAVw962fwUQ5/",
            "geLWS2ptBew5aPLJRTK+QnI3Krdl3UaxN8qfahHWhfc",
            "__________________________________________8",
            "/////////////////////w",
            "Hello, World",
        ),
    ];
    for (ciphertext, sha256, k, iv, plaintext) in vectors {
        let file = EncryptedFile::from_json(&json!({
            "url": "mxc://example.org/vector",
            "key": {
                "alg": "A256CTR", "k": k, "key_ops": ["encrypt", "decrypt"],
                "kty": "oct", "ext": true,
            },
            "iv": iv,
            "hashes": { "sha256": sha256 },
            "v": "v2",
        }))
        .unwrap();
        let ciphertext = crate::base64::decode(ciphertext).unwrap();
        assert_eq!(
            decrypt(&ciphertext, &file.keys).unwrap(),
            plaintext.as_bytes()
        );
        // And our encryptor, given the same key and IV, produces it.
        let mut encryptor =
            AttachmentEncryptor::with_key_and_iv(file.keys.key.clone(), file.keys.iv);
        let mut again = plaintext.as_bytes().to_vec();
        encryptor.encrypt_chunk(&mut again);
        assert_eq!(again, ciphertext);
        assert_eq!(encryptor.finish().sha256, file.keys.sha256);
    }
}

/// WebCrypto's 64-bit counter wraps without carrying into the nonce half:
/// the block after counter `ff..ff` uses counter `00..00`, same nonce.
#[test]
fn the_counter_half_wraps_like_webcrypto() {
    let key = zeroize::Zeroizing::new([9u8; 32]);
    let mut at_wrap = AttachmentEncryptor::with_key_and_iv(key.clone(), [0xff; 16]);
    let mut two_blocks = [0u8; 32];
    at_wrap.encrypt_chunk(&mut two_blocks);

    let mut wrapped_iv = [0xff; 16];
    wrapped_iv[8..].fill(0);
    let mut after_wrap = AttachmentEncryptor::with_key_and_iv(key, wrapped_iv);
    let mut one_block = [0u8; 16];
    after_wrap.encrypt_chunk(&mut one_block);
    assert_eq!(two_blocks[16..], one_block);
}
