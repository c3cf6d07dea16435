//! The `m.sas.v1` exchange itself ([spec]), one type per step: each
//! transition consumes the state it leaves, so a flow cannot, say, compute
//! a MAC before both keys are in or accept twice. vodozemac does the ECDH,
//! the SAS bytes and the MACs; this file only builds and checks contents.
//!
//! ```text
//! starter:  SentStart ──accept──► AwaitingKey ──key (commitment checked)──► KeysExchanged
//! accepter: ReceivedStart ──accept()──► AwaitingKey ──key──► KeysExchanged
//! KeysExchanged ──confirm()──► Confirmed ──their mac verified──► (verified keys)
//! ```
//!
//! [spec]: https://spec.matrix.org/v1.16/client-server-api/#short-authentication-string-sas-verification

use std::collections::BTreeMap;

use ruma::{DeviceId, OwnedDeviceId, OwnedRoomId, OwnedUserId};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use vodozemac::{
    Curve25519PublicKey,
    sas::{EstablishedSas, Mac, Sas},
};

use super::CancelCode;

pub(crate) const SAS_V1: &str = "m.sas.v1";
pub(crate) const KEY_AGREEMENT: &str = "curve25519-hkdf-sha256";
pub(crate) const HASH: &str = "sha256";
pub(crate) const MAC_METHOD: &str = "hkdf-hmac-sha256.v2";
pub(crate) const SAS_EMOJI: &str = "emoji";
pub(crate) const SAS_DECIMAL: &str = "decimal";

/// Who is who in one flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FlowIds {
    pub(crate) own_user: OwnedUserId,
    pub(crate) own_device: OwnedDeviceId,
    pub(crate) other_user: OwnedUserId,
    /// `None` while a request to all our other devices, or one we sent in
    /// a room, waits for the first `ready`.
    pub(crate) other_device: Option<OwnedDeviceId>,
    pub(crate) transaction_id: String,
    /// The room of an in-room flow (whose transaction id is the request's
    /// event id); `None` for a flow over to-device messages.
    pub(crate) room_id: Option<OwnedRoomId>,
}

impl FlowIds {
    /// The other device's id as the SAS and MAC info strings carry it;
    /// empty before a device took the flow, when no SAS can run (a start
    /// needs a ready flow).
    pub(crate) fn other_device_str(&self) -> &str {
        self.other_device_id().as_str()
    }

    /// The other device's id; empty (naming no device) before a device
    /// took the flow.
    pub(crate) fn other_device_id(&self) -> &DeviceId {
        self.other_device.as_deref().unwrap_or_else(|| "".into())
    }

    /// `content` with the field that names the flow: `transaction_id` in a
    /// to-device message; in a room, `m.relates_to` referencing the request
    /// event (and no `transaction_id`, which the spec leaves out there).
    pub(crate) fn tag(&self, mut content: Value) -> Value {
        if let Some(fields) = content.as_object_mut() {
            if self.room_id.is_some() {
                fields.insert(
                    "m.relates_to".to_owned(),
                    json!({"rel_type": "m.reference", "event_id": self.transaction_id}),
                );
            } else {
                fields.insert("transaction_id".to_owned(), json!(self.transaction_id));
            }
        }
        content
    }
}

/// The `m.key.verification.start` content we send.
pub(crate) fn start_content(ids: &FlowIds) -> Value {
    ids.tag(json!({
        "from_device": ids.own_device,
        "method": SAS_V1,
        "key_agreement_protocols": [KEY_AGREEMENT],
        "hashes": [HASH],
        "message_authentication_codes": [MAC_METHOD],
        "short_authentication_string": [SAS_DECIMAL, SAS_EMOJI],
    }))
}

/// Checks a start we received offers what we speak.
///
/// # Errors
///
/// [`CancelCode::UnknownMethod`] for another method or no common
/// algorithm; [`CancelCode::InvalidMessage`] for a malformed content.
pub(crate) fn check_start(content: &Value) -> Result<(), CancelCode> {
    if content.get("method").and_then(Value::as_str) != Some(SAS_V1) {
        return Err(CancelCode::UnknownMethod);
    }
    let offers = |field: &str, wanted: &str| -> Result<bool, CancelCode> {
        let list = content
            .get(field)
            .and_then(Value::as_array)
            .ok_or(CancelCode::InvalidMessage)?;
        Ok(list.iter().any(|v| v.as_str() == Some(wanted)))
    };
    let common = offers("key_agreement_protocols", KEY_AGREEMENT)?
        && offers("hashes", HASH)?
        && offers("message_authentication_codes", MAC_METHOD)?
        && offers("short_authentication_string", SAS_DECIMAL)?;
    if common {
        Ok(())
    } else {
        Err(CancelCode::UnknownMethod)
    }
}

/// We sent the start; waiting for the other side's accept.
pub(crate) struct SentStart {
    sas: Sas,
    start: Value,
}

/// We received a start (checked); the user (or an earlier choice) has yet
/// to accept it.
pub(crate) struct ReceivedStart {
    sas: Sas,
    start: Value,
}

/// Accept exchanged; waiting for the other side's ephemeral key.
pub(crate) struct AwaitingKey {
    sas: Sas,
    role: Role,
}

#[derive(Debug, Clone)]
enum Role {
    /// We started: the accepter committed to its key with this hash.
    Starter { commitment: String },
    /// We accepted: our key goes out once theirs is in.
    Accepter,
}

/// Both keys are in: the short authentication string can be shown.
pub(crate) struct KeysExchanged {
    established: EstablishedSas,
    emoji: [u8; 7],
    decimals: [u16; 3],
    their_mac: Option<Value>,
}

/// The user confirmed the SAS and our MAC went out; waiting for (or
/// holding) theirs.
pub(crate) struct Confirmed {
    established: EstablishedSas,
    their_mac: Option<Value>,
}

impl SentStart {
    /// A fresh ephemeral key, and the start to send.
    pub(crate) fn new(ids: &FlowIds) -> (Self, Value) {
        let start = start_content(ids);
        let state = Self {
            sas: Sas::new(),
            start: start.clone(),
        };
        (state, start)
    }

    /// Their accept: checked against what we offered; our key goes out.
    ///
    /// # Errors
    ///
    /// [`CancelCode::UnknownMethod`] for a choice we did not offer;
    /// [`CancelCode::InvalidMessage`] without a commitment.
    pub(crate) fn receive_accept(
        self,
        ids: &FlowIds,
        accept: &Value,
    ) -> Result<(AwaitingKey, Value), CancelCode> {
        let field = |name: &str| accept.get(name).and_then(Value::as_str);
        if field("method").is_some_and(|m| m != SAS_V1)
            || field("key_agreement_protocol") != Some(KEY_AGREEMENT)
            || field("hash") != Some(HASH)
            || field("message_authentication_code") != Some(MAC_METHOD)
        {
            return Err(CancelCode::UnknownMethod);
        }
        let sas_methods = accept
            .get("short_authentication_string")
            .and_then(Value::as_array)
            .ok_or(CancelCode::InvalidMessage)?;
        let offered = |m: &Value| matches!(m.as_str(), Some(SAS_EMOJI | SAS_DECIMAL));
        if sas_methods.is_empty() || !sas_methods.iter().all(offered) {
            return Err(CancelCode::UnknownMethod);
        }
        let commitment = field("commitment")
            .ok_or(CancelCode::InvalidMessage)?
            .to_owned();
        let key = key_content(ids, self.sas.public_key());
        let _ = self.start;
        let state = AwaitingKey {
            sas: self.sas,
            role: Role::Starter { commitment },
        };
        Ok((state, key))
    }

    /// The start we sent, to compare with a concurrent one.
    pub(crate) fn start(&self) -> &Value {
        &self.start
    }
}

impl ReceivedStart {
    /// A start we received, checked with [`check_start`] by the caller.
    pub(crate) fn new(start: Value) -> Self {
        Self {
            sas: Sas::new(),
            start,
        }
    }

    /// Accepts: commits to our ephemeral key over their start.
    pub(crate) fn accept(self, ids: &FlowIds) -> (AwaitingKey, Value) {
        let commitment = commitment(&self.sas.public_key(), &self.start);
        let accept = ids.tag(json!({
            "method": SAS_V1,
            "key_agreement_protocol": KEY_AGREEMENT,
            "hash": HASH,
            "message_authentication_code": MAC_METHOD,
            "short_authentication_string": [SAS_DECIMAL, SAS_EMOJI],
            "commitment": commitment,
        }));
        let state = AwaitingKey {
            sas: self.sas,
            role: Role::Accepter,
        };
        (state, accept)
    }
}

impl AwaitingKey {
    /// Their ephemeral key. As starter we check it against the accepter's
    /// commitment (over the start we sent); as accepter ours goes out now.
    ///
    /// # Errors
    ///
    /// [`CancelCode::MismatchedCommitment`] when the key is not the one
    /// committed to (a key swapped in transit); [`CancelCode::InvalidMessage`]
    /// for a malformed or non-contributory key.
    pub(crate) fn receive_key(
        self,
        ids: &FlowIds,
        start: &Value,
        content: &Value,
    ) -> Result<(KeysExchanged, Option<Value>), CancelCode> {
        let their_key = content
            .get("key")
            .and_then(Value::as_str)
            .and_then(|k| Curve25519PublicKey::from_base64(k).ok())
            .ok_or(CancelCode::InvalidMessage)?;
        let our_key = self.sas.public_key();
        let (reply, info) = match &self.role {
            Role::Starter {
                commitment: expected,
            } => {
                let actual = commitment(&their_key, start);
                let equal: bool =
                    subtle::ConstantTimeEq::ct_eq(actual.as_bytes(), expected.as_bytes()).into();
                if !equal {
                    return Err(CancelCode::MismatchedCommitment);
                }
                (None, sas_info(ids, true, &our_key, &their_key))
            }
            Role::Accepter => (
                Some(key_content(ids, our_key)),
                sas_info(ids, false, &our_key, &their_key),
            ),
        };
        let established = self
            .sas
            .diffie_hellman(their_key)
            .map_err(|_| CancelCode::InvalidMessage)?;
        let bytes = established.bytes(&info);
        let (a, b, c) = bytes.decimals();
        let state = KeysExchanged {
            emoji: bytes.emoji_indices(),
            decimals: [a, b, c],
            established,
            their_mac: None,
        };
        Ok((state, reply))
    }
}

impl KeysExchanged {
    /// The seven emoji indices of the SAS.
    pub(crate) fn emoji(&self) -> [u8; 7] {
        self.emoji
    }

    /// The three numbers of the SAS.
    pub(crate) fn decimals(&self) -> [u16; 3] {
        self.decimals
    }

    /// Their MAC arrived before the user confirmed: kept, checked at
    /// confirmation (the spec lets it come first).
    pub(crate) fn hold_mac(&mut self, mac: Value) {
        self.their_mac = Some(mac);
    }

    /// The user says the SAS matches: MACs our `keys` (key id -> public
    /// key) for the other side.
    pub(crate) fn confirm(
        self,
        ids: &FlowIds,
        keys: &BTreeMap<String, String>,
    ) -> (Confirmed, Value) {
        let mac = mac_content(&self.established, ids, keys);
        let state = Confirmed {
            established: self.established,
            their_mac: self.their_mac,
        };
        (state, mac)
    }
}

impl Confirmed {
    /// Their MAC, if it came before the confirmation.
    pub(crate) fn take_held_mac(&mut self) -> Option<Value> {
        self.their_mac.take()
    }

    /// Checks their MAC against the keys we know for them (key id ->
    /// public key): see [`verify_mac`].
    pub(crate) fn verify_mac(
        &self,
        ids: &FlowIds,
        content: &Value,
        known: &BTreeMap<String, String>,
    ) -> Result<Vec<String>, CancelCode> {
        verify_mac(&self.established, ids, content, known)
    }
}

/// `unpadded_base64(sha256(key || canonical_json(start)))`, the commitment
/// of an accept.
fn commitment(key: &Curve25519PublicKey, start: &Value) -> String {
    let canonical = myelin_crypto::canonicalize(&start.to_string()).unwrap_or_default();
    let mut hasher = Sha256::new();
    hasher.update(key.to_base64().as_bytes());
    hasher.update(canonical.as_bytes());
    vodozemac::base64_encode(hasher.finalize())
}

fn key_content(ids: &FlowIds, key: Curve25519PublicKey) -> Value {
    ids.tag(json!({"key": key.to_base64()}))
}

/// The HKDF info of `curve25519-hkdf-sha256`: the starter's, then the
/// accepter's user, device and ephemeral key, then the transaction id.
fn sas_info(
    ids: &FlowIds,
    we_started: bool,
    our_key: &Curve25519PublicKey,
    their_key: &Curve25519PublicKey,
) -> String {
    let ours = (
        ids.own_user.as_str(),
        ids.own_device.as_str(),
        our_key.to_base64(),
    );
    let theirs = (
        ids.other_user.as_str(),
        ids.other_device_str(),
        their_key.to_base64(),
    );
    let (first, second) = if we_started {
        (ours, theirs)
    } else {
        (theirs, ours)
    };
    format!(
        "MATRIX_KEY_VERIFICATION_SAS|{}|{}|{}|{}|{}|{}|{}",
        first.0, first.1, first.2, second.0, second.1, second.2, ids.transaction_id
    )
}

/// `MATRIX_KEY_VERIFICATION_MAC` + sender user and device + receiver user
/// and device + transaction id: the prefix of every MAC info.
fn mac_base(sender: (&str, &str), receiver: (&str, &str), transaction_id: &str) -> String {
    format!(
        "MATRIX_KEY_VERIFICATION_MAC{}{}{}{}{transaction_id}",
        sender.0, sender.1, receiver.0, receiver.1
    )
}

/// The `m.key.verification.mac` content over our `keys`.
fn mac_content(
    established: &EstablishedSas,
    ids: &FlowIds,
    keys: &BTreeMap<String, String>,
) -> Value {
    let base = mac_base(
        (ids.own_user.as_str(), ids.own_device.as_str()),
        (ids.other_user.as_str(), ids.other_device_str()),
        &ids.transaction_id,
    );
    let mut macs = Map::new();
    for (key_id, key) in keys {
        let mac = established.calculate_mac(key, &format!("{base}{key_id}"));
        macs.insert(key_id.clone(), json!(mac.to_base64()));
    }
    let key_ids = keys.keys().cloned().collect::<Vec<_>>().join(",");
    let keys_mac = established.calculate_mac(&key_ids, &format!("{base}KEY_IDS"));
    ids.tag(json!({
        "mac": macs,
        "keys": keys_mac.to_base64(),
    }))
}

/// Checks an `m.key.verification.mac` from the other side: the MAC of the
/// key id list, then each MAC over a key we know for them. Returns the key
/// ids whose MAC verified. A key id we know no key for is never trusted:
/// it is left out of the answer (the spec lets it be ignored), so a MAC
/// over a key the device does not have cannot verify anything.
///
/// # Errors
///
/// [`CancelCode::KeyMismatch`] when the key id list or a known key's MAC
/// does not verify (a different key was MAC'd, or a key was swapped in
/// transit), or when no known key is covered at all;
/// [`CancelCode::InvalidMessage`] for a malformed content.
pub(crate) fn verify_mac(
    established: &EstablishedSas,
    ids: &FlowIds,
    content: &Value,
    known: &BTreeMap<String, String>,
) -> Result<Vec<String>, CancelCode> {
    let base = mac_base(
        (ids.other_user.as_str(), ids.other_device_str()),
        (ids.own_user.as_str(), ids.own_device.as_str()),
        &ids.transaction_id,
    );
    let macs = content
        .get("mac")
        .and_then(Value::as_object)
        .ok_or(CancelCode::InvalidMessage)?;
    let parse = |value: &Value| {
        value
            .as_str()
            .and_then(|m| Mac::from_base64(m).ok())
            .ok_or(CancelCode::InvalidMessage)
    };
    let keys_mac = parse(content.get("keys").ok_or(CancelCode::InvalidMessage)?)?;
    let mut key_ids: Vec<&str> = macs.keys().map(String::as_str).collect();
    key_ids.sort_unstable();
    established
        .verify_mac(&key_ids.join(","), &format!("{base}KEY_IDS"), &keys_mac)
        .map_err(|_| CancelCode::KeyMismatch)?;
    let mut verified = Vec::new();
    for (key_id, mac) in macs {
        let mac = parse(mac)?;
        let Some(key) = known.get(key_id) else {
            continue;
        };
        established
            .verify_mac(key, &format!("{base}{key_id}"), &mac)
            .map_err(|_| CancelCode::KeyMismatch)?;
        verified.push(key_id.clone());
    }
    if verified.is_empty() {
        return Err(CancelCode::KeyMismatch);
    }
    Ok(verified)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(own: (&str, &str), other: (&str, &str)) -> FlowIds {
        FlowIds {
            own_user: own.0.try_into().unwrap(),
            own_device: own.1.into(),
            other_user: other.0.try_into().unwrap(),
            other_device: Some(other.1.into()),
            transaction_id: "txn".to_owned(),
            room_id: None,
        }
    }

    /// Alice starts, Bob accepts; both end with keys exchanged.
    fn exchange() -> (FlowIds, FlowIds, KeysExchanged, KeysExchanged) {
        let alice_ids = ids(("@alice:x", "A"), ("@bob:x", "B"));
        let bob_ids = ids(("@bob:x", "B"), ("@alice:x", "A"));
        let (alice, start) = SentStart::new(&alice_ids);
        check_start(&start).unwrap();
        let sent_start = alice.start().clone();
        let (bob, accept) = ReceivedStart::new(start.clone()).accept(&bob_ids);
        let (alice, alice_key) = alice.receive_accept(&alice_ids, &accept).unwrap();
        let (bob, bob_key) = bob.receive_key(&bob_ids, &start, &alice_key).unwrap();
        let (alice, none) = alice
            .receive_key(&alice_ids, &sent_start, &bob_key.unwrap())
            .unwrap();
        assert!(none.is_none(), "the starter's key went out already");
        (alice_ids, bob_ids, alice, bob)
    }

    #[test]
    fn both_sides_derive_the_same_sas_and_verify_each_others_macs() {
        let (alice_ids, bob_ids, alice, bob) = exchange();
        assert_eq!(alice.emoji(), bob.emoji());
        assert_eq!(alice.decimals(), bob.decimals());
        assert!(alice.decimals().iter().all(|d| (1000..=9191).contains(d)));
        let bob_keys = BTreeMap::from([("ed25519:B".to_owned(), "bobkey".to_owned())]);
        let (bob, mac) = bob.confirm(&bob_ids, &bob_keys);
        let (alice, _) = alice.confirm(&alice_ids, &BTreeMap::new());
        assert_eq!(
            alice.verify_mac(&alice_ids, &mac, &bob_keys).unwrap(),
            vec!["ed25519:B".to_owned()]
        );
        // Another key under the same id (the server swapped the device's
        // keys) does not verify.
        let other = BTreeMap::from([("ed25519:B".to_owned(), "otherkey".to_owned())]);
        assert_eq!(
            alice.verify_mac(&alice_ids, &mac, &other),
            Err(CancelCode::KeyMismatch)
        );
        let _ = bob;
    }

    #[test]
    fn a_mac_over_a_key_the_device_does_not_have_verifies_nothing() {
        let (alice_ids, bob_ids, alice, bob) = exchange();
        // Bob MACs a key Alice has never seen for him.
        let forged = BTreeMap::from([("ed25519:EVIL".to_owned(), "evilkey".to_owned())]);
        let (_, mac) = bob.confirm(&bob_ids, &forged);
        let (alice, _) = alice.confirm(&alice_ids, &BTreeMap::new());
        let known = BTreeMap::from([("ed25519:B".to_owned(), "bobkey".to_owned())]);
        assert_eq!(
            alice.verify_mac(&alice_ids, &mac, &known),
            Err(CancelCode::KeyMismatch)
        );
    }

    #[test]
    fn a_key_list_with_a_mac_removed_in_transit_is_refused() {
        let (alice_ids, bob_ids, alice, bob) = exchange();
        let keys = BTreeMap::from([
            ("ed25519:B".to_owned(), "bobkey".to_owned()),
            ("ed25519:M".to_owned(), "master".to_owned()),
        ]);
        let (_, mut mac) = bob.confirm(&bob_ids, &keys);
        mac["mac"].as_object_mut().unwrap().remove("ed25519:M");
        let (alice, _) = alice.confirm(&alice_ids, &BTreeMap::new());
        assert_eq!(
            alice.verify_mac(&alice_ids, &mac, &keys),
            Err(CancelCode::KeyMismatch)
        );
    }

    #[test]
    fn a_key_other_than_the_committed_one_is_refused() {
        let alice_ids = ids(("@alice:x", "A"), ("@bob:x", "B"));
        let bob_ids = ids(("@bob:x", "B"), ("@alice:x", "A"));
        let (alice, start) = SentStart::new(&alice_ids);
        let (_bob, accept) = ReceivedStart::new(start.clone()).accept(&bob_ids);
        let (alice, _) = alice.receive_accept(&alice_ids, &accept).unwrap();
        let mallory = Sas::new().public_key().to_base64();
        let swapped = json!({"transaction_id": "txn", "key": mallory});
        assert_eq!(
            alice.receive_key(&alice_ids, &start, &swapped).err(),
            Some(CancelCode::MismatchedCommitment)
        );
    }

    #[test]
    fn a_start_without_a_common_method_is_refused() {
        let mut start = start_content(&ids(("@a:x", "A"), ("@b:x", "B")));
        assert_eq!(check_start(&start), Ok(()));
        start["message_authentication_codes"] = json!(["hkdf-hmac-sha256"]);
        assert_eq!(check_start(&start), Err(CancelCode::UnknownMethod));
        start["method"] = json!("m.reciprocate.v1");
        assert_eq!(check_start(&start), Err(CancelCode::UnknownMethod));
    }
}
