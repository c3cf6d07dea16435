//! End-to-end encryption keys: device keys, one-time and fallback keys,
//! cross-signing keys and the signatures users upload for them.
//!
//! Every key object is the exact JSON text a client uploaded; the service
//! checks signatures before anything reaches this store, and nothing here
//! parses the JSON again. See spec-notes/device-keys.md.

use std::fmt;

use async_trait::async_trait;
use ruma::{DeviceId, OwnedDeviceId, OwnedUserId, UserId};

use super::{DeviceListChange, Millis, StorageError, StreamPosition};

/// A device's identity keys as uploaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceKeys {
    /// The `ed25519:<device_id>` public key, unpadded base64.
    pub ed25519_key: String,
    /// The `curve25519:<device_id>` public key, unpadded base64.
    pub curve25519_key: String,
    /// The whole `DeviceKeys` object, verbatim.
    pub json: String,
}

/// A one-time or fallback key.
#[derive(Clone, PartialEq, Eq)]
pub struct OneTimeKey {
    /// `<algorithm>:<key id>`, as in the upload's map.
    pub key_id: String,
    /// The algorithm, the part of `key_id` before the colon.
    pub algorithm: String,
    /// The key as uploaded: a JSON string or a signed key object.
    pub json: String,
}

impl fmt::Debug for OneTimeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OneTimeKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// A device with keys, as `/keys/query` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueriedDevice {
    /// The device.
    pub device_id: OwnedDeviceId,
    /// The name its user gave it.
    pub display_name: Option<String>,
    /// Its `DeviceKeys` object, verbatim.
    pub json: String,
}

/// Which of a user's three cross-signing keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CrossSigningKeyType {
    /// Signs the other two, and is what other users verify.
    Master,
    /// Signs the user's own devices.
    SelfSigning,
    /// Signs other users' master keys.
    UserSigning,
}

impl CrossSigningKeyType {
    /// Every type, master first.
    pub const ALL: [Self; 3] = [Self::Master, Self::SelfSigning, Self::UserSigning];

    /// The `usage` the spec gives keys of this type, also the stored name.
    pub fn usage(self) -> &'static str {
        match self {
            Self::Master => "master",
            Self::SelfSigning => "self_signing",
            Self::UserSigning => "user_signing",
        }
    }

    fn from_usage(usage: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.usage() == usage)
    }
}

/// A cross-signing key as uploaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrossSigningKey {
    /// Which key it is.
    pub key_type: CrossSigningKeyType,
    /// Its ed25519 public key, unpadded base64 (also its key id's name).
    pub public_key: String,
    /// The whole `CrossSigningKey` object, verbatim.
    pub json: String,
}

/// What a signature signs: a device's keys or a cross-signing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureTarget {
    /// The device keys of this device.
    Device(OwnedDeviceId),
    /// The cross-signing key with this public key.
    CrossSigningKey(String),
}

/// A signature on one of `user_id`'s keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySignature {
    /// Whose key is signed.
    pub user_id: OwnedUserId,
    /// Which key.
    pub target: SignatureTarget,
    /// Who signed.
    pub signer_user_id: OwnedUserId,
    /// With which key, `ed25519:<name>`.
    pub signer_key_id: String,
    /// The signature, unpadded base64.
    pub signature: String,
}

/// What the end-to-end encryption key services persist.
#[async_trait]
pub trait E2eeKeyStore: Send + Sync {
    /// A device's identity keys.
    async fn device_keys(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
    ) -> Result<Option<DeviceKeys>, StorageError>;

    /// Stores a device's keys and records the change at `position`.
    ///
    /// # Errors
    /// [`StorageError::Conflict`] when the device has keys with other
    /// identity keys (checked in the write, so two racing uploads cannot
    /// both win); [`StorageError::NotFound`] when the device is gone.
    async fn set_device_keys(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        keys: &DeviceKeys,
        position: StreamPosition,
    ) -> Result<(), StorageError>;

    /// Adds one-time keys, all or none; a key id already present with the
    /// same JSON is left alone.
    ///
    /// # Errors
    /// [`StorageError::Conflict`] when a key id is present with other JSON;
    /// [`StorageError::NotFound`] when the device is gone.
    async fn add_one_time_keys(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        keys: &[OneTimeKey],
        now: Millis,
    ) -> Result<(), StorageError>;

    /// Replaces the device's fallback key of each key's algorithm. A new key
    /// starts unused; re-uploading the stored key keeps its state.
    ///
    /// # Errors
    /// [`StorageError::NotFound`] when the device is gone.
    async fn set_fallback_keys(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        keys: &[OneTimeKey],
    ) -> Result<(), StorageError>;

    /// How many unclaimed one-time keys the device has, by algorithm.
    async fn one_time_key_counts(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
    ) -> Result<Vec<(String, u64)>, StorageError>;

    /// The algorithms of the device's fallback keys not yet claimed.
    async fn unused_fallback_key_types(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
    ) -> Result<Vec<String>, StorageError>;

    /// Takes the device's oldest one-time key of `algorithm`, which no other
    /// claim can then get; when none is left, its fallback key, marked used.
    async fn claim_key(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        algorithm: &str,
    ) -> Result<Option<OneTimeKey>, StorageError>;

    /// Every device of the user that has uploaded keys.
    async fn devices_with_keys(&self, user_id: &UserId)
    -> Result<Vec<QueriedDevice>, StorageError>;

    /// The user's cross-signing keys.
    async fn cross_signing_keys(
        &self,
        user_id: &UserId,
    ) -> Result<Vec<CrossSigningKey>, StorageError>;

    /// Replaces some of the user's cross-signing keys and deletes others
    /// (keys signed by a replaced master key), recording the change at
    /// `position`; one transaction.
    async fn set_cross_signing_keys(
        &self,
        user_id: &UserId,
        keys: &[CrossSigningKey],
        removed: &[CrossSigningKeyType],
        position: StreamPosition,
    ) -> Result<(), StorageError>;

    /// The uploaded signatures on any of the user's keys.
    async fn key_signatures(&self, user_id: &UserId) -> Result<Vec<KeySignature>, StorageError>;

    /// Stores signatures and records the device-list changes they cause at
    /// `position`; one transaction. A signature on a device whose keys are
    /// gone is dropped.
    async fn add_key_signatures(
        &self,
        signatures: &[KeySignature],
        changes: &[DeviceListChange],
        position: StreamPosition,
    ) -> Result<(), StorageError>;
}

/// Parses a stored cross-signing key type.
///
/// # Errors
/// [`StorageError::Corrupt`] for a name this server never writes.
pub(crate) fn parse_key_type(name: &str) -> Result<CrossSigningKeyType, StorageError> {
    CrossSigningKeyType::from_usage(name).ok_or_else(|| StorageError::Corrupt {
        table: "cross_signing_keys",
        reason: format!("unknown key type {name:?}"),
    })
}
