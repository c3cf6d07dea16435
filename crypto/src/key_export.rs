//! Room key export files: the spec's [key export] format, which Element,
//! matrix-js-sdk's Rust crypto and matrix-rust-sdk read and write.
//!
//! PBKDF2-HMAC-SHA-512 turns the passphrase and a random 16-byte salt into
//! 64 bytes: an AES-256 key and an HMAC-SHA-256 key. The payload (the JSON
//! list of exported sessions) is encrypted with AES-256-CTR under a random
//! IV whose bit 63 is clear; the file is
//! `0x01 ‖ salt ‖ IV ‖ rounds (u32, big-endian) ‖ ciphertext ‖ HMAC`, the
//! HMAC over everything before it, in base64 between
//! `-----BEGIN MEGOLM SESSION DATA-----` and
//! `-----END MEGOLM SESSION DATA-----`.
//!
//! [key export]: https://spec.matrix.org/v1.16/client-server-api/#key-exports

use aes::Aes256;
use aes_gcm::aead::{OsRng, rand_core::RngCore};
use ctr::cipher::{KeyIvInit, StreamCipher};
use hmac::{Hmac, Mac};
use sha2::{Sha256, Sha512};
use zeroize::Zeroizing;

use crate::base64;

/// The rounds a new export gets (matrix-js-sdk's and Element's choice).
pub const DEFAULT_EXPORT_ROUNDS: u32 = 500_000;
/// Refuse files asking for more rounds than this: a hostile file must not
/// hang the client for hours.
const MAX_ROUNDS: u32 = 10_000_000;
const HEADER: &str = "-----BEGIN MEGOLM SESSION DATA-----";
const FOOTER: &str = "-----END MEGOLM SESSION DATA-----";
const VERSION: u8 = 1;
const SALT_LENGTH: usize = 16;
const IV_LENGTH: usize = 16;
const MAC_LENGTH: usize = 32;
/// Version, salt, IV and rounds.
const PREFIX_LENGTH: usize = 1 + SALT_LENGTH + IV_LENGTH + 4;
/// Characters per line of the base64 body.
const LINE_LENGTH: usize = 96;

/// AES-256-CTR as WebCrypto's `AES-CTR` with a 64-bit counter; with bit 63
/// of the IV clear it cannot wrap, so a 128-bit counter reads it alike.
type Aes256Ctr = ctr::Ctr64BE<Aes256>;
type HmacSha256 = Hmac<Sha256>;

/// Why an export file could not be written or read. No variant carries
/// key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyExportError {
    /// The text is not between the `MEGOLM SESSION DATA` header and footer,
    /// or its body is not base64.
    #[error("not a room key export file")]
    NotAnExport,
    /// The file is too short, or of a format version other than 1.
    #[error("unsupported or damaged room key export file")]
    Malformed,
    /// The file asks for zero rounds or more than ten million.
    #[error("the export's key derivation rounds are out of range")]
    Rounds,
    /// The passphrase is not the one the file was made with, or the file
    /// was altered: the MAC does not match.
    #[error("wrong passphrase for this room key export")]
    WrongPassphrase,
    /// The operating system's random number generator failed.
    #[error("the operating system's random number generator failed")]
    Randomness,
}

/// Encrypts `payload` (the JSON list of exported sessions) into an export
/// file under `passphrase`, deriving the keys with `rounds` of PBKDF2.
///
/// # Errors
/// [`KeyExportError::Rounds`] for zero or too many rounds;
/// [`KeyExportError::Randomness`].
pub fn encrypt_key_export(
    payload: &[u8],
    passphrase: &str,
    rounds: u32,
) -> Result<String, KeyExportError> {
    check_rounds(rounds)?;
    let mut salt = [0u8; SALT_LENGTH];
    let mut iv = [0u8; IV_LENGTH];
    OsRng
        .try_fill_bytes(&mut salt)
        .and_then(|()| OsRng.try_fill_bytes(&mut iv))
        .map_err(|_| KeyExportError::Randomness)?;
    iv[8] &= 0x7f;
    let keys = derive_keys(passphrase, &salt, rounds);

    let mut file = Vec::with_capacity(PREFIX_LENGTH + payload.len() + MAC_LENGTH);
    file.push(VERSION);
    file.extend_from_slice(&salt);
    file.extend_from_slice(&iv);
    file.extend_from_slice(&rounds.to_be_bytes());
    let start = file.len();
    file.extend_from_slice(payload);
    Aes256Ctr::new(keys.aes.as_ref().into(), &iv.into()).apply_keystream(&mut file[start..]);
    let mut mac = keys.mac;
    mac.update(&file);
    file.extend_from_slice(&mac.finalize().into_bytes());
    Ok(armour(&file))
}

/// Decrypts an export file made with `passphrase`; returns its payload.
///
/// # Errors
/// [`KeyExportError::NotAnExport`], [`KeyExportError::Malformed`],
/// [`KeyExportError::Rounds`], [`KeyExportError::WrongPassphrase`].
pub fn decrypt_key_export(
    file: &str,
    passphrase: &str,
) -> Result<Zeroizing<Vec<u8>>, KeyExportError> {
    let bytes = unarmour(file)?;
    if bytes.len() < PREFIX_LENGTH + MAC_LENGTH || bytes[0] != VERSION {
        return Err(KeyExportError::Malformed);
    }
    let (signed, mac) = bytes.split_at(bytes.len() - MAC_LENGTH);
    let salt = &signed[1..=SALT_LENGTH];
    let iv = &signed[1 + SALT_LENGTH..1 + SALT_LENGTH + IV_LENGTH];
    let rounds_bytes: [u8; 4] = signed[PREFIX_LENGTH - 4..PREFIX_LENGTH]
        .try_into()
        .map_err(|_| KeyExportError::Malformed)?;
    let rounds = u32::from_be_bytes(rounds_bytes);
    check_rounds(rounds)?;
    let keys = derive_keys(passphrase, salt, rounds);
    let mut check = keys.mac;
    check.update(signed);
    check
        .verify_slice(mac)
        .map_err(|_| KeyExportError::WrongPassphrase)?;
    let mut payload = Zeroizing::new(signed[PREFIX_LENGTH..].to_vec());
    Aes256Ctr::new(keys.aes.as_ref().into(), iv.into()).apply_keystream(&mut payload);
    Ok(payload)
}

fn check_rounds(rounds: u32) -> Result<(), KeyExportError> {
    if rounds == 0 || rounds > MAX_ROUNDS {
        return Err(KeyExportError::Rounds);
    }
    Ok(())
}

/// The AES key and the HMAC key (keyed, not yet fed), PBKDF2's 64 bytes.
struct ExportKeys {
    aes: Zeroizing<[u8; 32]>,
    mac: HmacSha256,
}

fn derive_keys(passphrase: &str, salt: &[u8], rounds: u32) -> ExportKeys {
    let mut both = Zeroizing::new([0u8; 64]);
    pbkdf2::pbkdf2_hmac::<Sha512>(passphrase.as_bytes(), salt, rounds, both.as_mut_slice());
    let mut aes = Zeroizing::new([0u8; 32]);
    aes.copy_from_slice(&both[..32]);
    let mac = <HmacSha256 as Mac>::new_from_slice(&both[32..])
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    ExportKeys { aes, mac }
}

/// Padded base64 in lines of [`LINE_LENGTH`], between the header and footer.
fn armour(bytes: &[u8]) -> String {
    let mut body = base64::encode(bytes);
    while !body.len().is_multiple_of(4) {
        body.push('=');
    }
    let mut text = format!("{HEADER}\n");
    for line in body.as_bytes().chunks(LINE_LENGTH) {
        // Base64 is ASCII, so any split is on a character boundary.
        text.push_str(std::str::from_utf8(line).unwrap_or_default());
        text.push('\n');
    }
    text.push_str(FOOTER);
    text.push('\n');
    text
}

/// The bytes between the header and footer lines.
fn unarmour(text: &str) -> Result<Vec<u8>, KeyExportError> {
    let mut lines = text.lines().map(str::trim);
    lines
        .by_ref()
        .find(|line| *line == HEADER)
        .ok_or(KeyExportError::NotAnExport)?;
    let mut body = String::new();
    for line in lines {
        if line == FOOTER {
            return base64::decode(body.trim_end_matches('='))
                .map_err(|_| KeyExportError::NotAnExport);
        }
        body.push_str(line);
    }
    Err(KeyExportError::NotAnExport)
}

#[cfg(test)]
mod tests;
