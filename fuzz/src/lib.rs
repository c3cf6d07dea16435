//! What several fuzz targets share: the spec's rules for canonical JSON
//! text, a fixed signing key, and one in-process server.

pub mod canonical;
pub mod server;

use myelin_crypto::SigningKey;

/// The key every signature a target makes or expects is checked with: the
/// spec appendix's example seed, so seeds from the spec sign alike.
pub fn signing_key() -> SigningKey {
    SigningKey::from_seed_base64("YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1", "1")
        .expect("the spec's example seed is a valid ed25519 seed")
}
