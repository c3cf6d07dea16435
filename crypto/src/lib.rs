//! Myelin's pure cryptographic building blocks.
//!
//! Everything here is a deterministic function or type: no I/O, no async, no
//! clock, no logging. The only entropy is in the `generate` and `new`
//! constructors of keys and accounts, and in sealing nonces. Each
//! algorithm is tested against published vectors (the Matrix spec
//! appendix, ruma's and gomatrixserverlib's tests, and events signed by
//! Synapse), with their sources cited next to the tests.
//!
//! For what the spec defines to the letter, this crate is a thin typed layer
//! over ruma (`ruma::canonical_json`, `ruma::signatures` and its room version
//! rules): Myelin's own code decides *which* function to call, with typed
//! identifiers and error enums that name what went wrong without echoing
//! keys or content.
//!
//! # Layout
//!
//! - [`json`]: canonical JSON, parsing and printing ([`parse_canonical_object`],
//!   [`to_canonical_string`], [`canonicalize`]).
//! - [`keys`]: the server's ed25519 [`SigningKey`] (seed in, seed out,
//!   `ed25519:<version>` key id, redacted `Debug`).
//! - [`signing`]: signing and verifying arbitrary JSON ([`sign_json`],
//!   [`verify_json`]).
//! - [`event`]: PDU content hashes, signatures, verification, reference
//!   hashes, event ids and room version 12 room ids.
//! - [`at_rest`]: encryption at rest for client stores ([`AtRestKey`]:
//!   argon2id + HKDF + AES-256-GCM, with a passphrase verifier).
//! - [`pdu`]: building a new PDU ([`NewPdu`] in, [`SignedPdu`] out: signed
//!   canonical JSON and event id, computed once).
//! - [`olm`]: a device's Olm [`olm::Account`] (identity keys, one-time and
//!   fallback keys) and its pairwise [`olm::Session`]s; [`megolm`]: the
//!   group sessions that encrypt room messages; [`device_signing`]: JSON
//!   signed by a device's ed25519 key; [`cross_signing`]: a user's
//!   master, self-signing and user-signing keys; [`pickle`]: encrypted persistence for
//!   all of them. Thin wrappers over vodozemac, which nothing else in the
//!   workspace names.
//! - [`backup`]: server-side key backup (`m.megolm_backup.v1.curve25519-aes-sha2`
//!   via vodozemac's `pk_encryption`).
//! - [`attachment`]: encrypted attachments (AES-256-CTR, SHA-256 of the
//!   ciphertext, the key as a JWK), whole-buffer or streaming.
//! - [`recovery_key`]: the spec's base58 recovery key encoding, shared by
//!   backup and secret storage; [`secret_storage`]: secrets in account data
//!   (`m.secret_storage.v1.aes-hmac-sha2`), keys from a recovery key or a
//!   passphrase.
//!
//! # Example
//!
//! An origin server finishes a PDU it built, derives its id, and a receiver
//! verifies it:
//!
//! ```
//! use myelin_crypto::{
//!     PublicKeyMap, SigningKey, Verified, event_id, hash_and_sign_event,
//!     parse_canonical_object, to_canonical_string, verify_event,
//! };
//! use ruma::{RoomVersionId, server_name};
//!
//! let key = SigningKey::from_seed_base64("YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1", "1")?;
//! let mut pdu = parse_canonical_object(
//!     r#"{
//!         "room_id": "!r:example.org", "sender": "@alice:example.org",
//!         "type": "m.room.message", "content": {"body": "hi", "msgtype": "m.text"},
//!         "prev_events": [], "auth_events": [], "depth": 2,
//!         "origin_server_ts": 1000000
//!     }"#,
//! )?;
//!
//! let origin = server_name!("example.org");
//! hash_and_sign_event(origin, &key, &RoomVersionId::V11, &mut pdu)?;
//! let id = event_id(&RoomVersionId::V11, &pdu)?;
//! assert!(id.as_str().starts_with('$'));
//! let wire_bytes = to_canonical_string(&pdu); // store and serve these
//!
//! // The receiver knows example.org's public keys by key id.
//! let mut public_keys = PublicKeyMap::new();
//! public_keys
//!     .entry(origin.to_string())
//!     .or_default()
//!     .insert(key.key_id().to_string(), key.public_key());
//! let received = parse_canonical_object(&wire_bytes)?;
//! assert_eq!(verify_event(&public_keys, &RoomVersionId::V11, &received)?, Verified::All);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Not supported yet
//!
//! - SAS and secret storage (see
//!   ARCHITECTURE.md). Olm and Megolm have no published test vectors in the
//!   spec; their tests pair both ends and attack each check instead.
//! - Room versions 1 and 2 have no hashed event ids ([`event_id`] refuses
//!   them), and room versions before 6 did not enforce canonical JSON, so
//!   hashes of their historical events may not be reproducible.
//! - Key validity (`valid_until_ts`) is not checked: the caller chooses which
//!   keys to pass to [`verify_event`].
//! - The redaction algorithm itself is not wrapped yet (ruma's
//!   `ruma::canonical_json::redact` applies it; signing and hashing use it
//!   internally).
//! - Only ed25519 signing keys.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod at_rest;
pub mod attachment;
pub mod backup;
pub mod backup_mac;
mod base64;
pub mod cross_signing;
pub mod device_signing;
pub mod event;
pub mod json;
pub mod key_export;
pub mod keys;
pub mod megolm;
pub mod olm;
pub mod pdu;
pub mod pickle;
pub mod recovery_key;
pub mod secret_storage;
pub mod signing;
#[cfg(test)]
mod testing;

pub use self::{
    at_rest::{AtRestError, AtRestKey, KdfParams, Verifier},
    device_signing::{DeviceSignatureError, verify_json_signature},
    event::{
        EventError, Verified, content_hash, event_id, hash_and_sign_event, reference_hash,
        required_signers, room_id_from_create_event, sign_event, verify_event,
    },
    json::{JsonError, canonicalize, parse_canonical_object, to_canonical_string},
    keys::{KeyError, SigningKey},
    pdu::{NewPdu, SignedPdu, V1EventIds, build_pdu},
    pickle::{PickleError, PickleKey},
    signing::{
        PublicKeyMap, PublicKeySet, SignatureError, sign_json, verify_json, verify_signature_by,
    },
};
