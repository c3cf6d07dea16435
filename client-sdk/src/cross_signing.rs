//! The client's cross-signing: bootstrap with user-interactive auth,
//! verifying users, and what the application reads about identities. The
//! machine decides everything ([`crate::machine::cross_signing`]); this
//! module sends its requests, adds the password when the server asks for
//! it, and commits what changed. See `spec-notes/cross-signing.md`.

use reqwest::StatusCode;
use ruma::{DeviceId, OwnedUserId, UserId};
use serde_json::{Value, json};

use crate::{
    Client,
    encryption::http_request,
    error::{Error, Result},
    machine::{OlmMachine, OutgoingRequest, Request, UserIdentity},
};

/// The one user-interactive auth stage the SDK completes here.
const PASSWORD_STAGE: &str = "m.login.password";

impl Client {
    /// Sets up cross-signing for this account from this device, or
    /// replaces the keys ([spec]): new master, self-signing and
    /// user-signing keys are uploaded, then this device is signed with the
    /// self-signing key. The private keys stay on this device, sealed in
    /// the store.
    ///
    /// The first upload for an account needs no password (MSC3967);
    /// replacing keys does, and `password` answers the server's
    /// `m.login.password` stage. Until the server accepts, keys this device
    /// had stay in force.
    ///
    /// # Errors
    ///
    /// A [`Error::Matrix`] with [`ErrorKind::Forbidden`](crate::ErrorKind::Forbidden)
    /// for a wrong password; [`Error::UnsupportedAuthFlows`] when the server
    /// wants a stage other than the password; network and store errors.
    ///
    /// [spec]: https://spec.matrix.org/v1.16/client-server-api/#cross-signing
    pub async fn bootstrap_cross_signing(&self, password: &str) -> Result<()> {
        let user_id = self.user_id()?;
        let mut slot = self.machine().await?;
        let machine = slot.as_mut().ok_or(Error::NotLoggedIn)?;
        let outgoing = machine.bootstrap_cross_signing();
        // The new private keys are saved before the server sees them.
        self.commit_machine(machine).await?;
        let answer = self
            .send_signing_keys(&outgoing, user_id.as_str(), password)
            .await;
        self.report_answer(machine, &outgoing, answer).await?;
        // This device's signature by the new self-signing key.
        let requests = machine.outgoing_requests();
        self.send_machine_requests(machine, requests).await
    }

    /// Marks `user_id` as verified by signing their master key with our
    /// user-signing key, and uploads the signature. Their devices that they
    /// cross-signed are then verified, on every device of ours that trusts
    /// our identity. Call this only after comparing their master key
    /// ([`Client::user_identity`]) out of band.
    ///
    /// # Errors
    ///
    /// [`Error::Crypto`] with a
    /// [`CrossSigningError`](crate::machine::CrossSigningError): this
    /// device has not bootstrapped cross-signing, the user has none, their
    /// identity changed and was not acknowledged
    /// ([`Client::pin_identity`]), or the server refused the signature;
    /// network and store errors.
    pub async fn verify_user(&self, user_id: &UserId) -> Result<()> {
        let mut slot = self.machine().await?;
        let machine = slot.as_mut().ok_or(Error::NotLoggedIn)?;
        if machine.user_identity(user_id).is_none() {
            // Not tracked yet (no shared encrypted room), or their keys
            // came after our last query: query them now.
            machine.refresh_user_keys(user_id);
            let requests = machine.outgoing_requests();
            self.send_machine_requests(machine, requests).await?;
        }
        let outgoing = machine.verify_user(user_id)?;
        self.send_signature(machine, &outgoing).await
    }

    /// Vouches for another device of ours (one the user recognises): signs
    /// it with our self-signing key and uploads the signature. It is then
    /// verified for everyone who verified us.
    ///
    /// # Errors
    ///
    /// [`Error::Crypto`] with a
    /// [`CrossSigningError`](crate::machine::CrossSigningError): this
    /// device has not bootstrapped cross-signing, the device is unknown, or
    /// the server refused the signature; network and store errors.
    pub async fn verify_own_device(&self, device_id: &DeviceId) -> Result<()> {
        let own = self.user_id()?;
        let mut slot = self.machine().await?;
        let machine = slot.as_mut().ok_or(Error::NotLoggedIn)?;
        let is_known = machine
            .devices(&own)
            .iter()
            .any(|device| device.device_id == device_id.as_str());
        if !is_known {
            // A device that logged in after our last query: query again.
            machine.refresh_user_keys(&own);
            let requests = machine.outgoing_requests();
            self.send_machine_requests(machine, requests).await?;
        }
        let outgoing = machine.verify_own_device(device_id)?;
        self.send_signature(machine, &outgoing).await
    }

    /// Accepts `user_id`'s new master key after a
    /// [`DeviceWarning::IdentityChanged`](crate::machine::DeviceWarning::IdentityChanged):
    /// the warning stops, but the user is verified again only by
    /// [`Client::verify_user`]. Returns whether an identity is known.
    ///
    /// # Errors
    ///
    /// [`Error::NotLoggedIn`] and store errors.
    pub async fn pin_identity(&self, user_id: &UserId) -> Result<bool> {
        self.with_machine(|machine| machine.pin_identity(user_id))
            .await
    }

    /// Accepts that `user_id`, whom we had verified, now shows another
    /// identity (a verification violation: sending to rooms they read fails
    /// with [`MachineError::VerificationViolation`](crate::machine::MachineError::VerificationViolation)
    /// until this is called). Pins the new master key and forgets the old
    /// verification; the new identity is verified only by
    /// [`Client::verify_user`]. Returns whether the user is known.
    ///
    /// # Errors
    ///
    /// [`Error::NotLoggedIn`] and store errors.
    pub async fn acknowledge_identity_change(&self, user_id: &UserId) -> Result<bool> {
        self.with_machine(|machine| machine.acknowledge_identity_change(user_id))
            .await
    }

    /// The users in verification violation: verified once, showing another
    /// master key now, not acknowledged ([`Client::acknowledge_identity_change`]).
    ///
    /// # Errors
    ///
    /// [`Error::NotLoggedIn`] and store errors.
    pub async fn verification_violations(&self) -> Result<Vec<OwnedUserId>> {
        self.with_machine(|machine| machine.verification_violations())
            .await
    }

    /// Whether a verification violation of a room's reader refuses sending
    /// there (on unless turned off; kept in the store).
    ///
    /// # Errors
    ///
    /// [`Error::NotLoggedIn`] and store errors.
    pub async fn set_verification_violations_block_sending(&self, blocks: bool) -> Result<()> {
        self.with_machine(|machine| machine.set_verification_violations_block_sending(blocks))
            .await
    }

    /// `user_id`'s cross-signing identity as last fetched: the master key to
    /// compare out of band, whether it is verified, whether it changed.
    ///
    /// # Errors
    ///
    /// [`Error::NotLoggedIn`] and store errors.
    pub async fn user_identity(&self, user_id: &UserId) -> Result<Option<UserIdentity>> {
        self.with_machine(|machine| machine.user_identity(user_id))
            .await
    }

    /// Whether a device is verified: locally ([`Client::set_device_trust`]),
    /// or cross-signed by its owner whose identity is verified.
    ///
    /// # Errors
    ///
    /// [`Error::NotLoggedIn`] and store errors.
    pub async fn is_device_verified(&self, user_id: &UserId, device_id: &DeviceId) -> Result<bool> {
        self.with_machine(|machine| machine.is_device_verified(user_id, device_id))
            .await
    }

    /// Sends a `/keys/device_signing/upload`, completing the password stage
    /// of user-interactive auth if the server asks for it.
    async fn send_signing_keys(
        &self,
        outgoing: &OutgoingRequest,
        user_id: &str,
        password: &str,
    ) -> Result<Value> {
        let Request::SigningKeysUpload { body } = &outgoing.request else {
            return Err(Error::InvalidInput("not a signing keys upload".to_owned()));
        };
        let request = |body: Value| http_request(&Request::SigningKeysUpload { body });
        let (status, answer) = self.inner.http.send_raw(&request(body.clone())).await?;
        if status != StatusCode::UNAUTHORIZED {
            return Ok(answer);
        }
        let flows: Vec<Vec<String>> = answer
            .get("flows")
            .and_then(|flows| serde_json::from_value::<Vec<Value>>(flows.clone()).ok())
            .unwrap_or_default()
            .iter()
            .map(|flow| {
                serde_json::from_value(flow.get("stages").cloned().unwrap_or_default())
                    .unwrap_or_default()
            })
            .collect();
        if !flows.iter().any(|stages| stages == &[PASSWORD_STAGE]) {
            return Err(Error::UnsupportedAuthFlows { flows });
        }
        let mut body = body.clone();
        body["auth"] = json!({
            "type": PASSWORD_STAGE,
            "identifier": { "type": "m.id.user", "user": user_id },
            "password": password,
            "session": answer.get("session"),
        });
        let (status, answer) = self.inner.http.send_raw(&request(body)).await?;
        if status.is_success() {
            Ok(answer)
        } else {
            // A 401 after the stage is a wrong password (`M_FORBIDDEN`).
            Err(crate::http::error_from_answer(status, &answer, None))
        }
    }

    /// Sends a signature upload and reports its outcome. The machine's
    /// changes are committed first, as before every request it hands out;
    /// nothing is sent if that fails.
    async fn send_signature(
        &self,
        machine: &mut OlmMachine,
        outgoing: &OutgoingRequest,
    ) -> Result<()> {
        if let Err(error) = self.commit_machine(machine).await {
            // The request id was issued just now; it cannot be unknown.
            let _ = machine.mark_request_failed(&outgoing.request_id);
            return Err(error);
        }
        let answer = self
            .inner
            .http
            .send::<Value>(&http_request(&outgoing.request))
            .await;
        self.report_answer(machine, outgoing, answer).await
    }

    /// Reports the outcome of one request to the machine and commits what
    /// changed; the request's error, or the machine's refusal, is returned.
    pub(crate) async fn report_answer(
        &self,
        machine: &mut OlmMachine,
        outgoing: &OutgoingRequest,
        answer: Result<Value>,
    ) -> Result<()> {
        let reported = match answer {
            Ok(answer) => machine
                .mark_request_sent(&outgoing.request_id, &answer)
                .map_err(Error::from),
            Err(error) => {
                // The request id was issued just now; it cannot be unknown.
                let _ = machine.mark_request_failed(&outgoing.request_id);
                Err(error)
            }
        };
        self.commit_machine(machine).await?;
        reported
    }
}
