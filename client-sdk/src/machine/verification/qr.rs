//! QR code verification ([spec]) between two users who both have
//! cross-signing: the binary QR payload, its checks, and the reciprocate
//! start that answers a scan.
//!
//! ```text
//! "MATRIX" | 0x02 (version) | mode | u16 BE length | transaction id |
//! key1 (32 bytes) | key2 (32 bytes) | secret (the rest, >= 8 bytes)
//! ```
//!
//! Only mode `0x00` (verifying another user) is built: key1 is the
//! showing user's master key, key2 the master key the shower believes the
//! scanning user has. The scanner checks both against what it knows and
//! answers with an `m.key.verification.start` of method `m.reciprocate.v1`
//! carrying the secret; the shower checks the secret, its user confirms
//! that the other device saw a match, and each side then signs the other's
//! master key with its user-signing key. The self-verification modes
//! `0x01` and `0x02` are refused.
//!
//! [spec]: https://spec.matrix.org/v1.16/client-server-api/#qr-codes

use serde_json::{Value, json};
use vodozemac::Ed25519PublicKey;

#[cfg(doc)]
use super::VerificationPhase;
use super::{
    CancelCode, DONE, FlowKey, START, State, VerificationError, sas::FlowIds, sas::SAS_V1,
    wrong_phase,
};
use crate::machine::OlmMachine;

pub(crate) const QR_SHOW: &str = "m.qr_code.show.v1";
pub(crate) const QR_SCAN: &str = "m.qr_code.scan.v1";
pub(crate) const RECIPROCATE: &str = "m.reciprocate.v1";

const PREFIX: &[u8] = b"MATRIX";
const VERSION: u8 = 0x02;
/// Verifying another user: both master keys.
pub(crate) const MODE_OTHER_USER: u8 = 0x00;
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
    /// A self-verification mode (`0x01`, `0x02`), not built.
    #[error("QR code mode {0:#04x} is not supported")]
    UnsupportedMode(u8),
    /// The code names another verification.
    #[error("the QR code is for another verification")]
    OtherFlow,
    /// A key in the code is not the one we know: the flow is cancelled
    /// with `m.key_mismatch`.
    #[error("the QR code's keys do not match the ones we know")]
    KeyMismatch,
    /// QR codes need our cross-signing keys and the other user's master
    /// key, and the other side must have offered the matching method.
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

/// What the showing side keeps: the secret to check, and the other
/// user's master key it put in the code (to sign when they reciprocate).
pub(crate) struct ShownQr {
    secret: Vec<u8>,
    pub(crate) their_master: String,
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

/// The code to show another user (mode `0x00`) and what to keep of it.
///
/// # Errors
///
/// [`QrError::Unavailable`] when either master key does not decode.
pub(crate) fn show_other_user(
    transaction_id: &str,
    own_master: &str,
    their_master: &str,
) -> Result<(QrCode, ShownQr), QrError> {
    use rand::RngCore;
    let mut secret = vec![0u8; SECRET_LEN];
    rand::thread_rng().fill_bytes(&mut secret);
    let code = QrCode {
        mode: MODE_OTHER_USER,
        transaction_id: transaction_id.to_owned(),
        key1: key_bytes(own_master).ok_or(QrError::Unavailable("our master key"))?,
        key2: key_bytes(their_master).ok_or(QrError::Unavailable("their master key"))?,
        secret: secret.clone(),
    };
    let shown = ShownQr {
        secret,
        their_master: their_master.to_owned(),
    };
    Ok((code, shown))
}

/// Checks a scanned mode-`0x00` code against what we know: key1 must be
/// the shower's master key, key2 our own. Returns the secret for the
/// reciprocate start.
///
/// # Errors
///
/// [`QrError::UnsupportedMode`], [`QrError::OtherFlow`],
/// [`QrError::KeyMismatch`].
pub(crate) fn check_scanned(
    code: &QrCode,
    transaction_id: &str,
    their_master: &str,
    own_master: &str,
) -> Result<(), QrError> {
    if code.mode != MODE_OTHER_USER {
        return Err(QrError::UnsupportedMode(code.mode));
    }
    if code.transaction_id != transaction_id {
        return Err(QrError::OtherFlow);
    }
    let matches = |bytes: &[u8; 32], key: &str| {
        key_bytes(key).is_some_and(|known| {
            subtle::ConstantTimeEq::ct_eq(known.as_slice(), bytes.as_slice()).into()
        })
    };
    if matches(&code.key1, their_master) && matches(&code.key2, own_master) {
        Ok(())
    } else {
        Err(QrError::KeyMismatch)
    }
}

/// The reciprocate start's content (before [`super::sas::FlowIds::tag`]).
pub(crate) fn reciprocate_content(own_device: &str, secret: &[u8]) -> Value {
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
    /// the QR code methods when verifying another user with our
    /// cross-signing keys at hand.
    pub(super) fn offered_methods(&self, other_user: &str) -> Vec<&'static str> {
        let mut methods = vec![SAS_V1];
        if other_user != self.user_id && self.has_cross_signing_keys() {
            methods.extend([QR_SHOW, QR_SCAN, RECIPROCATE]);
        }
        methods
    }

    /// The QR code to show for a ready flow with another user who offered
    /// to scan: the bytes to render. Showing it changes nothing until their
    /// device scans it and answers with our secret
    /// ([`VerificationPhase::TheyScannedQr`]).
    ///
    /// # Errors
    ///
    /// [`VerificationError::Qr`] with [`QrError::Unavailable`] without our
    /// cross-signing keys, their pinned master key, or their offer to
    /// scan; [`VerificationError`] for no such flow or one not ready.
    pub fn generate_qr_code(
        &mut self,
        user_id: &str,
        transaction_id: &str,
    ) -> Result<Vec<u8>, VerificationError> {
        let (own_master, their_master) = self.qr_masters(user_id)?;
        let flow = self.flow_mut(user_id, transaction_id)?;
        if !matches!(flow.state, State::Ready) {
            return Err(wrong_phase(flow, "show a QR code"));
        }
        if !flow.their_methods.iter().any(|m| m == QR_SCAN) {
            return Err(QrError::Unavailable("the other side cannot scan").into());
        }
        let (code, shown) = show_other_user(transaction_id, &own_master, &their_master)?;
        flow.shown_qr = Some(shown);
        Ok(code.to_bytes())
    }

    /// The other device's QR code, as scanned: checked against the master
    /// keys we know (theirs, and ours as they believe it); if it matches,
    /// the reciprocate start goes out and the flow waits for their done,
    /// after which their master key is signed.
    ///
    /// # Errors
    ///
    /// [`VerificationError::Qr`]: a malformed code, a self-verification
    /// mode, a code for another flow, or [`QrError::KeyMismatch`] (the
    /// flow is then cancelled with `m.key_mismatch`: someone showed keys
    /// that are not the ones we know).
    pub fn scan_qr_code(
        &mut self,
        user_id: &str,
        transaction_id: &str,
        data: &[u8],
        now_ms: u64,
    ) -> Result<(), VerificationError> {
        let code = QrCode::parse(data)?;
        let (own_master, their_master) = self.qr_masters(user_id)?;
        let flow = self.flow_mut(user_id, transaction_id)?;
        if !matches!(flow.state, State::Ready) {
            return Err(wrong_phase(flow, "scan a QR code"));
        }
        if let Err(error) = check_scanned(&code, transaction_id, &their_master, &own_master) {
            if error == QrError::KeyMismatch {
                self.cancel_flow(user_id, transaction_id, CancelCode::KeyMismatch);
            }
            return Err(error.into());
        }
        let start = flow
            .ids
            .tag(reciprocate_content(&flow.ids.own_device, &code.secret));
        flow.start = Some(start.clone());
        flow.started_ms = Some(now_ms);
        flow.state = State::QrScanned { their_master };
        let ids = flow.ids.clone();
        self.send_verification_event(&ids, START, start);
        Ok(())
    }

    /// Our user saw the other device report that our QR code matched:
    /// their master key (the one in our code) is signed and done goes out.
    ///
    /// # Errors
    ///
    /// [`VerificationError`]: no such flow, or no scan of our code.
    pub fn confirm_qr_scanned(
        &mut self,
        user_id: &str,
        transaction_id: &str,
    ) -> Result<(), VerificationError> {
        let flow = self.flow_mut(user_id, transaction_id)?;
        let their_master = match (&flow.state, &flow.shown_qr) {
            (State::QrReciprocated, Some(shown)) => shown.their_master.clone(),
            _ => return Err(wrong_phase(flow, "confirm the QR code scan")),
        };
        flow.state = State::WaitingForDone;
        let ids = flow.ids.clone();
        if self.sign_qr_verified_user(&ids, &their_master) {
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

    /// Signs `their_master` for the flow's other user when it is still the
    /// master key we have pinned for them; whether it was.
    pub(super) fn sign_qr_verified_user(&mut self, ids: &FlowIds, their_master: &str) -> bool {
        let current = self
            .devices
            .user_record(&ids.other_user)
            .and_then(|r| r.identity.as_ref())
            .map(|identity| identity.master.clone());
        if current.as_deref() != Some(their_master) {
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

    /// Our trusted master key and `user_id`'s pinned one, for a QR code.
    fn qr_masters(&self, user_id: &str) -> Result<(String, String), QrError> {
        if user_id == self.user_id {
            return Err(QrError::Unavailable("our own devices verify by SAS"));
        }
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
}

fn key_bytes(key: &str) -> Option<[u8; 32]> {
    Ed25519PublicKey::from_base64(key)
        .ok()
        .map(|key| key.as_bytes().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn master() -> String {
        vodozemac::Ed25519SecretKey::new().public_key().to_base64()
    }

    #[test]
    fn a_code_round_trips_and_its_layout_is_the_spec_s() {
        let (ours, theirs) = (master(), master());
        let (code, _) = show_other_user("txn1", &ours, &theirs).unwrap();
        let bytes = code.to_bytes();
        assert_eq!(&bytes[..6], b"MATRIX");
        assert_eq!(bytes[6..10], [0x02, 0x00, 0x00, 0x04]);
        assert_eq!(&bytes[10..14], b"txn1");
        assert_eq!(bytes.len(), 14 + 64 + 16);
        assert_eq!(QrCode::parse(&bytes).unwrap(), code);
        // The scanner (whose master key is `theirs`) accepts it.
        assert_eq!(check_scanned(&code, "txn1", &ours, &theirs), Ok(()));
    }

    #[test]
    fn a_code_with_a_key_we_do_not_know_or_for_another_flow_is_refused() {
        let (ours, theirs) = (master(), master());
        let (code, _) = show_other_user("txn1", &ours, &theirs).unwrap();
        // The shower was shown a server's key for us, or the code is not
        // the shower's master key.
        assert_eq!(
            check_scanned(&code, "txn1", &ours, &master()),
            Err(QrError::KeyMismatch)
        );
        assert_eq!(
            check_scanned(&code, "txn1", &master(), &theirs),
            Err(QrError::KeyMismatch)
        );
        assert_eq!(
            check_scanned(&code, "txn2", &ours, &theirs),
            Err(QrError::OtherFlow)
        );
        let mut own_device = code.clone();
        own_device.mode = 0x01;
        assert_eq!(
            check_scanned(&own_device, "txn1", &ours, &theirs),
            Err(QrError::UnsupportedMode(0x01))
        );
    }

    #[test]
    fn truncated_or_foreign_bytes_do_not_parse() {
        let (code, _) = show_other_user("txn1", &master(), &master()).unwrap();
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
        let (code, shown) = show_other_user("txn1", &master(), &master()).unwrap();
        assert!(shown.is_answered_by(&reciprocate_content("DEV", &code.secret)));
        assert!(!shown.is_answered_by(&reciprocate_content("DEV", &[7; 16])));
        assert!(!shown.is_answered_by(&json!({"method": RECIPROCATE})));
    }
}
