//! The spec's [recovery key] encoding of a 32-byte key, shared by key backup
//! and secret storage: base58 of `0x8B 0x01`, the key and a parity byte (the
//! XOR of all previous bytes), shown in groups of four characters.
//!
//! [recovery key]: https://spec.matrix.org/v1.16/client-server-api/#recovery-key

use zeroize::Zeroizing;

/// The two bytes every recovery key starts with.
const PREFIX: [u8; 2] = [0x8b, 0x01];
/// Prefix, 32-byte key, parity byte.
const LENGTH: usize = PREFIX.len() + 32 + 1;
/// The recovery key is shown to users in groups of this many characters.
const GROUP: usize = 4;

/// Why a typed recovery key was refused. Never carries key material.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecoveryKeyError {
    /// A character is not in the base58 alphabet.
    #[error("recovery key is not valid base58")]
    Encoding,
    /// The key decodes to the wrong number of bytes.
    #[error("recovery key has {0} bytes, expected {LENGTH}")]
    Length(usize),
    /// The key does not start with `0x8B 0x01`.
    #[error("recovery key has the wrong prefix")]
    Prefix,
    /// The parity byte does not match: a typo.
    #[error("recovery key parity check failed")]
    Parity,
}

/// Encodes `key` as a recovery key, with spaces every four characters.
pub(crate) fn encode(key: &[u8; 32]) -> Zeroizing<String> {
    let mut bytes = Zeroizing::new(Vec::with_capacity(LENGTH));
    bytes.extend_from_slice(&PREFIX);
    bytes.extend_from_slice(key);
    let parity = bytes.iter().fold(0, |parity, byte| parity ^ byte);
    bytes.push(parity);
    let encoded = Zeroizing::new(bs58::encode(bytes.as_slice()).into_string());
    let mut grouped = Zeroizing::new(String::with_capacity(encoded.len() * 5 / 4));
    for (index, character) in encoded.chars().enumerate() {
        if index > 0 && index % GROUP == 0 {
            grouped.push(' ');
        }
        grouped.push(character);
    }
    grouped
}

/// Decodes a recovery key as the user typed it: whitespace anywhere is
/// ignored.
pub(crate) fn decode(recovery_key: &str) -> Result<Zeroizing<[u8; 32]>, RecoveryKeyError> {
    let compact: Zeroizing<String> = Zeroizing::new(
        recovery_key
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect(),
    );
    let bytes = Zeroizing::new(
        bs58::decode(compact.as_str())
            .into_vec()
            .map_err(|_| RecoveryKeyError::Encoding)?,
    );
    if bytes.len() != LENGTH {
        return Err(RecoveryKeyError::Length(bytes.len()));
    }
    if bytes[..2] != PREFIX {
        return Err(RecoveryKeyError::Prefix);
    }
    if bytes.iter().fold(0, |parity, byte| parity ^ byte) != 0 {
        return Err(RecoveryKeyError::Parity);
    }
    let mut key = Zeroizing::new([0; 32]);
    key.copy_from_slice(&bytes[2..34]);
    Ok(key)
}
