//! Encrypted attachments: any `EncryptedFile` JSON and any ciphertext,
//! whole or streamed in any chunks, never panic; a file this crate
//! encrypted decrypts to its bytes through its own JSON, whole and
//! streamed alike; and one flipped ciphertext byte is always refused.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use myelin_crypto::attachment::{
    AttachmentDecryptor, AttachmentKeys, EncryptedFile, decrypt, encrypt,
};
use serde_json::Value;

#[derive(Arbitrary, Debug)]
enum Case {
    /// What a malicious sender can write: the file object and the bytes.
    Received {
        file: String,
        ciphertext: Vec<u8>,
        chunks: Vec<u16>,
    },
    /// A file encrypted here, then perhaps tampered with.
    RoundTrip {
        plaintext: Vec<u8>,
        chunks: Vec<u16>,
        flip: Option<(u16, u8)>,
    },
}

fuzz_target!(|case: Case| {
    match case {
        Case::Received {
            file,
            ciphertext,
            chunks,
        } => {
            let Ok(file) = serde_json::from_str::<Value>(&file) else {
                return;
            };
            let Ok(file) = EncryptedFile::from_json(&file) else {
                return;
            };
            let whole = decrypt(&ciphertext, &file.keys).ok();
            let streamed = streamed(&ciphertext, &file.keys, &chunks);
            assert_eq!(
                whole, streamed,
                "streaming decrypts as the whole buffer does"
            );
        }
        Case::RoundTrip {
            plaintext,
            chunks,
            flip,
        } => {
            let (mut ciphertext, keys) = encrypt(&plaintext).expect("encryption succeeds");
            let file = EncryptedFile {
                url: "mxc://a.test/file".to_owned(),
                keys,
            };
            let parsed = EncryptedFile::from_json(&file.to_json()).expect("our own JSON parses");
            assert_eq!(parsed.to_json(), file.to_json());
            assert_eq!(
                decrypt(&ciphertext, &parsed.keys).ok().as_deref(),
                Some(&plaintext[..])
            );
            assert_eq!(
                streamed(&ciphertext, &parsed.keys, &chunks).as_deref(),
                Some(&plaintext[..])
            );
            if let Some((at, mask)) = flip
                && !ciphertext.is_empty()
                && mask != 0
            {
                let at = usize::from(at) % ciphertext.len();
                ciphertext[at] ^= mask;
                assert!(
                    decrypt(&ciphertext, &parsed.keys).is_err(),
                    "a flipped byte is refused"
                );
                assert!(
                    streamed(&ciphertext, &parsed.keys, &chunks).is_none(),
                    "a flipped byte is refused"
                );
            }
        }
    }
});

/// Decrypts `ciphertext` in chunks of the given sizes (the rest in one).
fn streamed(ciphertext: &[u8], keys: &AttachmentKeys, chunks: &[u16]) -> Option<Vec<u8>> {
    let mut decryptor = AttachmentDecryptor::new(keys);
    let mut buffer = ciphertext.to_vec();
    let mut rest = &mut buffer[..];
    for size in chunks {
        let size = usize::from(*size).min(rest.len());
        let (chunk, tail) = rest.split_at_mut(size);
        decryptor.decrypt_chunk(chunk);
        rest = tail;
    }
    decryptor.decrypt_chunk(rest);
    decryptor.finish().ok()?;
    Some(buffer)
}
