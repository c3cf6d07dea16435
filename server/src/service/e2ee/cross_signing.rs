//! Cross-signing: `POST /keys/device_signing/upload` (a user's master,
//! self-signing and user-signing keys) and `POST /keys/signatures/upload`
//! (signatures of devices and master keys made with them).

use std::collections::BTreeMap;

use ruma::{CanonicalJsonObject, OwnedUserId, UserId};

use super::{
    E2eeKeys,
    validate::{
        check_cross_signing_key, check_signed_by, parse_object, same_signed_content, signatures_of,
    },
};
use crate::{
    service::{
        ServiceError,
        uia::{AuthSubmission, UiaAction},
    },
    storage::{
        CrossSigningKey, CrossSigningKeyType, DeviceListChange, KeySignature, SignatureTarget,
    },
};

/// A `POST /keys/device_signing/upload` body, each key as uploaded.
#[derive(Debug, Default)]
pub struct SigningKeysUpload {
    /// The master key.
    pub master_key: Option<String>,
    /// The self-signing key, signed by the master key.
    pub self_signing_key: Option<String>,
    /// The user-signing key, signed by the master key.
    pub user_signing_key: Option<String>,
    /// The UIA step.
    pub auth: Option<AuthSubmission>,
}

/// Why one signed object of a `POST /keys/signatures/upload` was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureFailure {
    /// The Matrix error code.
    pub errcode: &'static str,
    /// What was wrong.
    pub error: String,
}

/// Refusals by user, then key id.
pub type SignatureFailures = BTreeMap<OwnedUserId, BTreeMap<String, SignatureFailure>>;

impl E2eeKeys {
    /// Publishes the caller's cross-signing keys.
    ///
    /// Each key must be the caller's, with the right usage, and the
    /// self-signing and user-signing keys must be signed by the master key
    /// (the new one, or the stored one when none is uploaded). As the spec
    /// says (MSC3967), the first upload needs no user-interactive auth, nor
    /// does re-uploading exactly the stored keys; replacing keys needs the
    /// password, so a stolen access token cannot take over the user's
    /// identity. A new master key drops the stored keys it did not sign.
    ///
    /// # Errors
    /// `InvalidParam` for a malformed key; `InvalidSignature` for a key the
    /// master key did not sign; `AuthRequired` until UIA completes.
    pub async fn upload_signing_keys(
        &self,
        user_id: &UserId,
        upload: SigningKeysUpload,
    ) -> Result<(), ServiceError> {
        let check = |json: Option<String>, key_type| {
            json.map(|json| check_cross_signing_key(&json, user_id, key_type))
                .transpose()
        };
        let uploaded: Vec<(CrossSigningKey, CanonicalJsonObject)> = [
            check(upload.master_key, CrossSigningKeyType::Master)?,
            check(upload.self_signing_key, CrossSigningKeyType::SelfSigning)?,
            check(upload.user_signing_key, CrossSigningKeyType::UserSigning)?,
        ]
        .into_iter()
        .flatten()
        .collect();
        if uploaded.is_empty() {
            return Err(ServiceError::MissingParam(
                "no cross-signing key was uploaded".to_owned(),
            ));
        }
        let stored: BTreeMap<CrossSigningKeyType, CrossSigningKey> = self
            .storage
            .cross_signing_keys(user_id)
            .await?
            .into_iter()
            .map(|key| (key.key_type, key))
            .collect();
        let stored_master = stored.get(&CrossSigningKeyType::Master);
        let master_key = uploaded
            .iter()
            .find(|(key, _)| key.key_type == CrossSigningKeyType::Master)
            .map(|(key, _)| key.public_key.clone())
            .or_else(|| stored_master.map(|key| key.public_key.clone()))
            .ok_or_else(|| ServiceError::InvalidParam("upload a master key first".to_owned()))?;
        for (key, object) in &uploaded {
            if key.key_type != CrossSigningKeyType::Master {
                let what = format!(
                    "the {} key's signature by the master key",
                    key.key_type.usage()
                );
                check_signed_by(object, user_id, &master_key, &what)?;
            }
        }

        let is_stored = |key: &CrossSigningKey, object: &CanonicalJsonObject| {
            stored.get(&key.key_type).is_some_and(|stored| {
                parse_object(&stored.json, key.key_type.usage())
                    .is_ok_and(|stored_object| stored_object == *object)
            })
        };
        if uploaded.iter().all(|(key, object)| is_stored(key, object)) {
            return Ok(());
        }
        if stored_master.is_some() {
            self.accounts
                .confirm_identity(
                    user_id,
                    UiaAction::UploadCrossSigningKeys(user_id.to_owned()),
                    upload.auth,
                )
                .await?;
        }
        let is_master_replaced =
            stored_master.is_some_and(|stored| stored.public_key != master_key);
        let removed: Vec<CrossSigningKeyType> = if is_master_replaced {
            [
                CrossSigningKeyType::SelfSigning,
                CrossSigningKeyType::UserSigning,
            ]
            .into_iter()
            .filter(|kind| !uploaded.iter().any(|(key, _)| key.key_type == *kind))
            .collect()
        } else {
            Vec::new()
        };
        let keys: Vec<CrossSigningKey> = uploaded.into_iter().map(|(key, _)| key).collect();
        let storage = &self.storage;
        let (keys, removed) = (&keys, &removed);
        self.device_lists
            .publish(
                &[DeviceListChange::public(user_id)],
                |position| async move {
                    Ok(storage
                        .set_cross_signing_keys(user_id, keys, removed, position)
                        .await?)
                },
            )
            .await?;
        let uploaded = |kind: CrossSigningKeyType| {
            keys.iter()
                .find(|key| key.key_type == kind)
                .map(|key| key.json.as_str())
        };
        self.device_lists
            .federate_signing_keys(
                user_id,
                uploaded(CrossSigningKeyType::Master),
                uploaded(CrossSigningKeyType::SelfSigning),
            )
            .await
    }

    /// Stores signatures the caller made: of their own devices by their
    /// self-signing key, of their own master key by one of their devices,
    /// and of other users' master keys by their user-signing key. Each
    /// signed object must be the stored key (up to its signatures) and each
    /// signature must verify; what fails is reported per key, and the rest
    /// is stored.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn upload_signatures(
        &self,
        signer: &UserId,
        signed: BTreeMap<OwnedUserId, BTreeMap<String, String>>,
    ) -> Result<SignatureFailures, ServiceError> {
        let own_keys: BTreeMap<CrossSigningKeyType, CrossSigningKey> = self
            .storage
            .cross_signing_keys(signer)
            .await?
            .into_iter()
            .map(|key| (key.key_type, key))
            .collect();
        let mut failures = SignatureFailures::new();
        let mut accepted = Vec::new();
        let mut changes = Vec::new();
        for (user_id, objects) in signed {
            for (key_id, json) in objects {
                match self
                    .check_signed_object(signer, &own_keys, &user_id, &key_id, &json)
                    .await
                {
                    Ok(signatures) => {
                        let change = if user_id == signer {
                            DeviceListChange::public(signer)
                        } else {
                            DeviceListChange {
                                user_id: user_id.clone(),
                                viewer: Some(signer.to_owned()),
                            }
                        };
                        if !changes.contains(&change) {
                            changes.push(change);
                        }
                        accepted.extend(signatures);
                    }
                    Err(failure) => {
                        failures
                            .entry(user_id.clone())
                            .or_default()
                            .insert(key_id, failure);
                    }
                }
            }
        }
        if !accepted.is_empty() {
            let storage = &self.storage;
            let (accepted, changes_ref) = (&accepted, &changes);
            self.device_lists
                .publish(&changes, |position| async move {
                    Ok(storage
                        .add_key_signatures(accepted, changes_ref, position)
                        .await?)
                })
                .await?;
        }
        Ok(failures)
    }

    /// The signatures on one uploaded object that the signer may add.
    async fn check_signed_object(
        &self,
        signer: &UserId,
        own_keys: &BTreeMap<CrossSigningKeyType, CrossSigningKey>,
        user_id: &UserId,
        key_id: &str,
        json: &str,
    ) -> Result<Vec<KeySignature>, SignatureFailure> {
        let object = parse_object(json, key_id).map_err(|e| failure("M_INVALID_PARAM", e))?;
        if !self.is_local(user_id) {
            return Err(failure(
                "M_NOT_FOUND",
                "keys of users on other servers cannot be signed here yet",
            ));
        }
        let their_keys = self
            .storage
            .cross_signing_keys(user_id)
            .await
            .map_err(|e| failure("M_UNKNOWN", ServiceError::from(e)))?;
        let their_master = their_keys
            .iter()
            .find(|key| key.key_type == CrossSigningKeyType::Master);
        let signature =
            |signer_key_id: String, signature: String, target: SignatureTarget| KeySignature {
                user_id: user_id.to_owned(),
                target,
                signer_user_id: signer.to_owned(),
                signer_key_id,
                signature,
            };
        let by_signer: Vec<(String, String)> = signatures_of(&object)
            .into_iter()
            .filter(|(entity, _, _)| entity == signer.as_str())
            .map(|(_, key_id, signature)| (key_id, signature))
            .collect();

        // A master key: the user's own, signed by one of their devices, or
        // another user's, signed by the signer's user-signing key.
        if let Some(master) = their_master.filter(|master| master.public_key == key_id) {
            matches_stored(&object, &master.json)?;
            let target = || SignatureTarget::CrossSigningKey(master.public_key.clone());
            if user_id != signer {
                let signing = own_keys
                    .get(&CrossSigningKeyType::UserSigning)
                    .ok_or_else(|| {
                        failure("M_INVALID_SIGNATURE", "you have no user-signing key")
                    })?;
                check_signed_by(&object, signer, &signing.public_key, "the signature")
                    .map_err(|e| failure("M_INVALID_SIGNATURE", e))?;
                let signer_key_id = format!("ed25519:{}", signing.public_key);
                let value = lookup(&by_signer, &signer_key_id)?;
                return Ok(vec![signature(signer_key_id, value, target())]);
            }
            let mut accepted = Vec::new();
            for (signer_key_id, value) in &by_signer {
                let Some(device_id) = signer_key_id.strip_prefix("ed25519:") else {
                    continue;
                };
                let device_key = self
                    .storage
                    .device_keys(signer, device_id.into())
                    .await
                    .map_err(|e| failure("M_UNKNOWN", ServiceError::from(e)))?;
                let Some(device_key) = device_key else {
                    continue;
                };
                if myelin_crypto::verify_signature_by(
                    &object,
                    signer.as_str(),
                    signer_key_id,
                    &device_key.ed25519_key,
                )
                .is_ok()
                {
                    accepted.push(signature(signer_key_id.clone(), value.clone(), target()));
                }
            }
            if accepted.is_empty() {
                return Err(failure(
                    "M_INVALID_SIGNATURE",
                    "no valid signature by one of your devices",
                ));
            }
            return Ok(accepted);
        }

        // One of the signer's own devices, signed by their self-signing key.
        if user_id != signer {
            return Err(failure(
                "M_NOT_FOUND",
                "only another user's master key can be signed",
            ));
        }
        let device_keys = self
            .storage
            .device_keys(user_id, key_id.into())
            .await
            .map_err(|e| failure("M_UNKNOWN", ServiceError::from(e)))?
            .ok_or_else(|| failure("M_NOT_FOUND", "no such key"))?;
        matches_stored(&object, &device_keys.json)?;
        let signing = own_keys
            .get(&CrossSigningKeyType::SelfSigning)
            .ok_or_else(|| failure("M_INVALID_SIGNATURE", "you have no self-signing key"))?;
        check_signed_by(&object, signer, &signing.public_key, "the signature")
            .map_err(|e| failure("M_INVALID_SIGNATURE", e))?;
        let signer_key_id = format!("ed25519:{}", signing.public_key);
        let value = lookup(&by_signer, &signer_key_id)?;
        Ok(vec![signature(
            signer_key_id,
            value,
            SignatureTarget::Device(key_id.into()),
        )])
    }
}

/// The uploaded object must be the stored key, up to its signatures.
fn matches_stored(object: &CanonicalJsonObject, stored: &str) -> Result<(), SignatureFailure> {
    let stored = parse_object(stored, "stored key").map_err(|e| failure("M_UNKNOWN", e))?;
    if same_signed_content(object, &stored) {
        Ok(())
    } else {
        Err(failure(
            "M_INVALID_PARAM",
            "the signed object is not the key this server holds",
        ))
    }
}

fn lookup(by_signer: &[(String, String)], key_id: &str) -> Result<String, SignatureFailure> {
    by_signer
        .iter()
        .find(|(id, _)| id == key_id)
        .map(|(_, signature)| signature.clone())
        .ok_or_else(|| failure("M_INVALID_SIGNATURE", "the signature is missing"))
}

fn failure(errcode: &'static str, error: impl ToString) -> SignatureFailure {
    SignatureFailure {
        errcode,
        error: error.to_string(),
    }
}
