//! QR code verification ([spec]): the binary QR payload, its checks, the
//! reciprocate start that answers a scan, and the trust it ends in.
//!
//! ```text
//! "MATRIX" | 0x02 (version) | mode | u16 BE length | transaction id |
//! key1 (32 bytes) | key2 (32 bytes) | secret (the rest, >= 8 bytes)
//! ```
//!
//! | mode | shown by | key1 | key2 | once done, the shower / the scanner |
//! | --- | --- | --- | --- | --- |
//! | `0x00` | a user verifying another | the shower's master key | the scanner's master key as the shower knows it | each signs the other's master key with its user-signing key |
//! | `0x01` | our device that trusts our master key | our master key | the scanner's device key as the shower knows it | the shower verifies (and signs) the scanner's device / the scanner trusts the master key |
//! | `0x02` | our device that does not trust it yet | the shower's device key | the master key as the shower knows it | the shower trusts the master key / the scanner verifies (and signs) the shower's device |
//!
//! The scanner checks both keys against what it knows (a mismatch cancels
//! with `m.key_mismatch`) and answers with an `m.key.verification.start`
//! of method `m.reciprocate.v1` carrying the secret; the shower checks the
//! secret and its user confirms that the other device saw a match; the
//! shower's done then lets the scanner act.
//!
//! [spec]: https://spec.matrix.org/v1.16/client-server-api/#qr-codes

use ruma::{DeviceId, UserId};
use serde_json::{Value, json};
use vodozemac::Ed25519PublicKey;

#[cfg(doc)]
use super::VerificationPhase;
use super::{
    CancelCode, DONE, FlowKey, START, State, VerificationError, sas::FlowIds, sas::SAS_V1,
    wrong_phase,
};
use crate::machine::{LocalTrust, OlmMachine};

pub(crate) const QR_SHOW: &str = "m.qr_code.show.v1";
pub(crate) const QR_SCAN: &str = "m.qr_code.scan.v1";
pub(crate) const RECIPROCATE: &str = "m.reciprocate.v1";

const PREFIX: &[u8] = b"MATRIX";
const VERSION: u8 = 0x02;
/// Verifying another user: both master keys.
pub(crate) const MODE_OTHER_USER: u8 = 0x00;
/// Shown by our device that trusts our master key.
pub(crate) const MODE_SELF_TRUSTED: u8 = 0x01;
/// Shown by our device that does not trust our master key yet.
pub(crate) const MODE_SELF_UNTRUSTED: u8 = 0x02;
/// The spec's minimum; we make 16 random bytes.
const MIN_SECRET_LEN: usize = 8;
const SECRET_LEN: usize = 16;

/// Why a QR code could not be shown or was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QrError {
    /// Not a Matrix verification QR code of version 2.
    #[error("not a Matrix verification QR code")]
    Malformed,
    /// A mode the spec does not define, or one that does not fit the
    /// flow (a self-verification mode with another user, or the reverse).
    #[error("QR code mode {0:#04x} does not fit this verification")]
    WrongMode(u8),
    /// The code names another verification.
    #[error("the QR code is for another verification")]
    OtherFlow,
    /// A key in the code is not the one we know: the flow is cancelled
    /// with `m.key_mismatch`.
    #[error("the QR code's keys do not match the ones we know")]
    KeyMismatch,
    /// QR codes need the keys the mode puts in them (for another user,
    /// our cross-signing keys and their pinned master key), and the other
    /// side must have offered the matching method.
    #[error("QR code verification is not possible here: {0}")]
    Unavailable(&'static str),
}

/// A decoded QR code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QrCode {
    pub(crate) mode: u8,
    pub(crate) transaction_id: String,
    pub(crate) key1: [u8; 32],
    pub(crate) key2: [u8; 32],
    pub(crate) secret: Vec<u8>,
}

/// What the showing side keeps: the secret to check, and what to trust
/// once its user confirms the scan.
pub(crate) struct ShownQr {
    secret: Vec<u8>,
    pub(crate) trust: QrTrust,
}

/// What a QR code verification vouches for, applied when it is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum QrTrust {
    /// Another user's master key: signed with our user-signing key.
    UserMaster(String),
    /// Our own master key, which this device did not trust yet: trusted
    /// from now on; the other device (which vouched for it) is verified.
    OwnMaster(String),
    /// Another device of ours, whose key was checked: verified, and signed
    /// with our self-signing key when this device holds it.
    OwnDevice,
}

impl QrCode {
    /// The bytes to render as a QR code.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let txn = self.transaction_id.as_bytes();
        let mut bytes = Vec::with_capacity(PREFIX.len() + 4 + txn.len() + 64 + self.secret.len());
        bytes.extend_from_slice(PREFIX);
        bytes.push(VERSION);
        bytes.push(self.mode);
        // Transaction ids are short (ours 32 bytes, event ids ~44): one
        // that did not fit in 16 bits is not ours to show.
        bytes.extend_from_slice(&u16::try_from(txn.len()).unwrap_or(u16::MAX).to_be_bytes());
        bytes.extend_from_slice(txn);
        bytes.extend_from_slice(&self.key1);
        bytes.extend_from_slice(&self.key2);
        bytes.extend_from_slice(&self.secret);
        bytes
    }

    /// Parses scanned bytes.
    ///
    /// # Errors
    ///
    /// [`QrError::Malformed`] for anything but a version-2 Matrix code
    /// with a secret of at least 8 bytes.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self, QrError> {
        let rest = bytes.strip_prefix(PREFIX).ok_or(QrError::Malformed)?;
        let [VERSION, mode, high, low, rest @ ..] = rest else {
            return Err(QrError::Malformed);
        };
        let txn_len = usize::from(u16::from_be_bytes([*high, *low]));
        if rest.len() < txn_len + 64 + MIN_SECRET_LEN {
            return Err(QrError::Malformed);
        }
        let (txn, rest) = rest.split_at(txn_len);
        let (key1, rest) = rest.split_at(32);
        let (key2, secret) = rest.split_at(32);
        Ok(Self {
            mode: *mode,
            transaction_id: String::from_utf8(txn.to_vec()).map_err(|_| QrError::Malformed)?,
            key1: key1.try_into().map_err(|_| QrError::Malformed)?,
            key2: key2.try_into().map_err(|_| QrError::Malformed)?,
            secret: secret.to_vec(),
        })
    }
}

/// A code of `mode` with a fresh secret, and what the shower keeps.
///
/// # Errors
///
/// [`QrError::Unavailable`] when a key does not decode.
pub(crate) fn show(
    mode: u8,
    transaction_id: &str,
    key1: &str,
    key2: &str,
    trust: QrTrust,
) -> Result<(QrCode, ShownQr), QrError> {
    use rand::RngCore;
    let mut secret = vec![0u8; SECRET_LEN];
    rand::thread_rng().fill_bytes(&mut secret);
    let code = QrCode {
        mode,
        transaction_id: transaction_id.to_owned(),
        key1: key_bytes(key1).ok_or(QrError::Unavailable("a key that does not decode"))?,
        key2: key_bytes(key2).ok_or(QrError::Unavailable("a key that does not decode"))?,
        secret: secret.clone(),
    };
    Ok((code, ShownQr { secret, trust }))
}

/// Checks a scanned code's flow and keys against what the scanner expects
/// (each key compared in constant time).
///
/// # Errors
///
/// [`QrError::OtherFlow`], [`QrError::KeyMismatch`].
pub(crate) fn check_scanned(
    code: &QrCode,
    transaction_id: &str,
    key1: &str,
    key2: &str,
) -> Result<(), QrError> {
    if code.transaction_id != transaction_id {
        return Err(QrError::OtherFlow);
    }
    let matches = |bytes: &[u8; 32], key: &str| {
        key_bytes(key).is_some_and(|known| {
            subtle::ConstantTimeEq::ct_eq(known.as_slice(), bytes.as_slice()).into()
        })
    };
    if matches(&code.key1, key1) && matches(&code.key2, key2) {
        Ok(())
    } else {
        Err(QrError::KeyMismatch)
    }
}

/// The reciprocate start's content (before [`super::sas::FlowIds::tag`]).
pub(crate) fn reciprocate_content(own_device: &DeviceId, secret: &[u8]) -> Value {
    json!({
        "from_device": own_device,
        "method": RECIPROCATE,
        "secret": vodozemac::base64_encode(secret),
    })
}

impl ShownQr {
    /// Whether a reciprocate start carries our secret.
    pub(crate) fn is_answered_by(&self, start: &Value) -> bool {
        start
            .get("secret")
            .and_then(Value::as_str)
            .and_then(|s| vodozemac::base64_decode(s).ok())
            .is_some_and(|secret| {
                subtle::ConstantTimeEq::ct_eq(secret.as_slice(), self.secret.as_slice()).into()
            })
    }
}

impl OlmMachine {
    /// The methods we offer `other_user` in a request or ready: SAS, and
    /// the QR code methods when we can make or check a code: for another
    /// user, with our cross-signing keys at hand; for our own devices,
    /// once our master key is known.
    pub(super) fn offered_methods(&self, other_user: &UserId) -> Vec<&'static str> {
        let mut methods = vec![SAS_V1];
        let qr = if other_user == self.user_id {
            self.served_own_master().is_some()
        } else {
            self.has_cross_signing_keys()
        };
        if qr {
            methods.extend([QR_SHOW, QR_SCAN, RECIPROCATE]);
        }
        methods
    }

    /// The QR code to show for a ready flow whose other side offered to
    /// scan: the bytes to render. The mode follows the flow: `0x00` with
    /// another user, `0x01` with our own device when this one trusts our
    /// master key, `0x02` when it does not yet. Showing it changes nothing
    /// until the other device scans it and answers with our secret
    /// ([`VerificationPhase::TheyScannedQr`]).
    ///
    /// # Errors
    ///
    /// [`VerificationError::Qr`] with [`QrError::Unavailable`] without the
    /// keys the mode needs or the other side's offer to scan;
    /// [`VerificationError`] for no such flow or one not ready.
    pub fn generate_qr_code(
        &mut self,
        user_id: &UserId,
        transaction_id: &str,
    ) -> Result<Vec<u8>, VerificationError> {
        let flow = self.flow_mut(user_id, transaction_id)?;
        if !matches!(flow.state, State::Ready) {
            return Err(wrong_phase(flow, "show a QR code"));
        }
        if !flow.their_methods.iter().any(|m| m == QR_SCAN) {
            return Err(QrError::Unavailable("the other side cannot scan").into());
        }
        let other_device = flow.ids.other_device_id().to_owned();
        let (code, shown) = if user_id == self.user_id {
            let master = self
                .served_own_master()
                .ok_or(QrError::Unavailable("our master key"))?;
            match self.devices.own.trusted_master.clone() {
                Some(trusted) => {
                    if trusted != master {
                        return Err(QrError::Unavailable("the master key we trust").into());
                    }
                    let theirs = self.own_device_key(&other_device)?;
                    show(
                        MODE_SELF_TRUSTED,
                        transaction_id,
                        &trusted,
                        &theirs,
                        QrTrust::OwnDevice,
                    )?
                }
                None => {
                    let ours = self.account.identity_keys().ed25519.to_base64();
                    let trust = QrTrust::OwnMaster(master.clone());
                    show(MODE_SELF_UNTRUSTED, transaction_id, &ours, &master, trust)?
                }
            }
        } else {
            let (ours, theirs) = self.qr_masters(user_id)?;
            let trust = QrTrust::UserMaster(theirs.clone());
            show(MODE_OTHER_USER, transaction_id, &ours, &theirs, trust)?
        };
        let flow = self.flow_mut(user_id, transaction_id)?;
        flow.shown_qr = Some(shown);
        Ok(code.to_bytes())
    }

    /// The other device's QR code, as scanned: checked against the keys we
    /// know (see the module's table); if they match, the reciprocate start
    /// goes out and the flow waits for their done, which applies the trust
    /// the mode gives.
    ///
    /// # Errors
    ///
    /// [`VerificationError::Qr`]: a malformed code, a mode that does not
    /// fit the flow, a code for another flow, missing keys, or
    /// [`QrError::KeyMismatch`] (the flow is then cancelled with
    /// `m.key_mismatch`: someone showed keys that are not the ones we
    /// know).
    pub fn scan_qr_code(
        &mut self,
        user_id: &UserId,
        transaction_id: &str,
        data: &[u8],
        now_ms: u64,
    ) -> Result<(), VerificationError> {
        let code = QrCode::parse(data)?;
        let flow = self.flow_mut(user_id, transaction_id)?;
        if !matches!(flow.state, State::Ready) {
            return Err(wrong_phase(flow, "scan a QR code"));
        }
        let other_device = flow.ids.other_device_id().to_owned();
        let own_user = user_id == self.user_id;
        let (key1, key2, trust) = match code.mode {
            MODE_OTHER_USER if !own_user => {
                let (ours, theirs) = self.qr_masters(user_id)?;
                (theirs.clone(), ours, QrTrust::UserMaster(theirs))
            }
            MODE_SELF_TRUSTED if own_user => {
                let master = self
                    .served_own_master()
                    .ok_or(QrError::Unavailable("our master key"))?;
                let ours = self.account.identity_keys().ed25519.to_base64();
                (master.clone(), ours, QrTrust::OwnMaster(master))
            }
            MODE_SELF_UNTRUSTED if own_user => {
                let trusted = self
                    .devices
                    .own
                    .trusted_master
                    .clone()
                    .ok_or(QrError::Unavailable("a master key we trust"))?;
                let theirs = self.own_device_key(&other_device)?;
                (theirs, trusted, QrTrust::OwnDevice)
            }
            mode => return Err(QrError::WrongMode(mode).into()),
        };
        if let Err(error) = check_scanned(&code, transaction_id, &key1, &key2) {
            if error == QrError::KeyMismatch {
                self.cancel_flow(user_id, transaction_id, CancelCode::KeyMismatch);
            }
            return Err(error.into());
        }
        let flow = self.flow_mut(user_id, transaction_id)?;
        let start = flow
            .ids
            .tag(reciprocate_content(&flow.ids.own_device, &code.secret));
        flow.start = Some(start.clone());
        flow.started_ms = Some(now_ms);
        flow.state = State::QrScanned { trust };
        let ids = flow.ids.clone();
        self.send_verification_event(&ids, START, start);
        Ok(())
    }

    /// Our user saw the other device report that our QR code matched: the
    /// trust the code's mode gives is applied and done goes out.
    ///
    /// # Errors
    ///
    /// [`VerificationError`]: no such flow, or no scan of our code.
    pub fn confirm_qr_scanned(
        &mut self,
        user_id: &UserId,
        transaction_id: &str,
    ) -> Result<(), VerificationError> {
        let flow = self.flow_mut(user_id, transaction_id)?;
        let trust = match (&flow.state, &flow.shown_qr) {
            (State::QrReciprocated, Some(shown)) => shown.trust.clone(),
            _ => return Err(wrong_phase(flow, "confirm the QR code scan")),
        };
        flow.state = State::WaitingForDone;
        let ids = flow.ids.clone();
        if self.apply_qr_trust(&ids, &trust) {
            self.send_verification_event(&ids, DONE, json!({}));
        } else {
            self.cancel_flow(user_id, transaction_id, CancelCode::KeyMismatch);
        }
        Ok(())
    }

    /// Their reciprocate start, for the code we showed: it must carry our
    /// secret.
    pub(super) fn receive_reciprocate(
        &mut self,
        key: &FlowKey,
        content: &Value,
        now_ms: u64,
    ) -> Result<(), CancelCode> {
        let flow = self.flow_by_key(key)?;
        if !matches!(flow.state, State::Ready) {
            return Err(CancelCode::UnexpectedMessage);
        }
        let shown = flow.shown_qr.as_ref().ok_or(CancelCode::UnknownMethod)?;
        if !shown.is_answered_by(content) {
            return Err(CancelCode::KeyMismatch);
        }
        flow.start = Some(content.clone());
        flow.started_ms = Some(now_ms);
        flow.state = State::QrReciprocated;
        Ok(())
    }

    /// Applies what a finished QR code verification vouches for; whether
    /// the keys were still the ones in the code.
    pub(super) fn apply_qr_trust(&mut self, ids: &FlowIds, trust: &QrTrust) -> bool {
        match trust {
            QrTrust::UserMaster(master) => {
                let current = self
                    .devices
                    .user_record(&ids.other_user)
                    .and_then(|r| r.identity.as_ref())
                    .map(|identity| identity.master.clone());
                if current.as_deref() != Some(master.as_str()) {
                    return false;
                }
                match self.verify_user(&ids.other_user) {
                    Ok(request) => {
                        self.queued.push(request);
                        true
                    }
                    Err(_) => false,
                }
            }
            QrTrust::OwnMaster(master) => {
                if self.served_own_master().as_deref() != Some(master.as_str()) {
                    return false;
                }
                self.set_trust(&ids.other_user, ids.other_device_id(), LocalTrust::Verified);
                self.trust_own_master(master);
                true
            }
            QrTrust::OwnDevice => {
                self.set_trust(&ids.other_user, ids.other_device_id(), LocalTrust::Verified);
                self.sign_own_device(ids.other_device_id());
                true
            }
        }
    }

    /// Our trusted master key and `user_id`'s pinned one, for a code with
    /// another user.
    fn qr_masters(&self, user_id: &UserId) -> Result<(String, String), QrError> {
        let own = self
            .devices
            .own
            .trusted_master
            .clone()
            .filter(|_| self.has_cross_signing_keys())
            .ok_or(QrError::Unavailable("our cross-signing keys"))?;
        let theirs = self
            .devices
            .user_record(user_id)
            .and_then(|r| {
                let identity = r.identity.as_ref()?;
                (r.pinned_master.as_deref() == Some(&identity.master))
                    .then(|| identity.master.clone())
            })
            .ok_or(QrError::Unavailable("their master key"))?;
        Ok((own, theirs))
    }

    /// The master key the server serves for our user.
    fn served_own_master(&self) -> Option<String> {
        self.devices
            .user_record(&self.user_id)
            .and_then(|r| r.identity.as_ref())
            .map(|identity| identity.master.clone())
    }

    /// The ed25519 key of another device of ours, as queried.
    fn own_device_key(&self, device_id: &DeviceId) -> Result<String, QrError> {
        self.devices
            .device(&self.user_id, device_id)
            .map(|device| device.ed25519.clone())
            .ok_or(QrError::Unavailable("the other device's key"))
    }
}

fn key_bytes(key: &str) -> Option<[u8; 32]> {
    Ed25519PublicKey::from_base64(key)
        .ok()
        .map(|key| key.as_bytes().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> String {
        vodozemac::Ed25519SecretKey::new().public_key().to_base64()
    }

    fn other_user_code(ours: &str, theirs: &str) -> (QrCode, ShownQr) {
        let trust = QrTrust::UserMaster(theirs.to_owned());
        show(MODE_OTHER_USER, "txn1", ours, theirs, trust).unwrap()
    }

    #[test]
    fn a_code_round_trips_and_its_layout_is_the_spec_s() {
        let (ours, theirs) = (key(), key());
        let (code, _) = other_user_code(&ours, &theirs);
        let bytes = code.to_bytes();
        assert_eq!(&bytes[..6], b"MATRIX");
        assert_eq!(bytes[6..10], [0x02, 0x00, 0x00, 0x04]);
        assert_eq!(&bytes[10..14], b"txn1");
        assert_eq!(
            bytes[14..46],
            Ed25519PublicKey::from_base64(&ours).unwrap().as_bytes()[..]
        );
        assert_eq!(bytes.len(), 14 + 64 + 16);
        assert_eq!(QrCode::parse(&bytes).unwrap(), code);
        // The scanner (whose master key is `theirs`) accepts it.
        assert_eq!(check_scanned(&code, "txn1", &ours, &theirs), Ok(()));
    }

    #[test]
    fn a_code_with_a_key_we_do_not_know_or_for_another_flow_is_refused() {
        let (ours, theirs) = (key(), key());
        let (code, _) = other_user_code(&ours, &theirs);
        // The shower was shown a server's key for us, or the code is not
        // the shower's master key.
        assert_eq!(
            check_scanned(&code, "txn1", &ours, &key()),
            Err(QrError::KeyMismatch)
        );
        assert_eq!(
            check_scanned(&code, "txn1", &key(), &theirs),
            Err(QrError::KeyMismatch)
        );
        assert_eq!(
            check_scanned(&code, "txn2", &ours, &theirs),
            Err(QrError::OtherFlow)
        );
    }

    #[test]
    fn truncated_or_foreign_bytes_do_not_parse() {
        let (code, _) = other_user_code(&key(), &key());
        let bytes = code.to_bytes();
        assert_eq!(
            QrCode::parse(&bytes[..bytes.len() - 9]),
            Err(QrError::Malformed)
        );
        assert_eq!(QrCode::parse(b"MATRIX\x01\x00"), Err(QrError::Malformed));
        let mut other = bytes.clone();
        other[0] = b'N';
        assert_eq!(QrCode::parse(&other), Err(QrError::Malformed));
    }

    #[test]
    fn only_our_secret_answers_the_code() {
        let (code, shown) = other_user_code(&key(), &key());
        assert!(shown.is_answered_by(&reciprocate_content("DEV".into(), &code.secret)));
        assert!(!shown.is_answered_by(&reciprocate_content("DEV".into(), &[7; 16])));
        assert!(!shown.is_answered_by(&json!({"method": RECIPROCATE})));
    }
}
