//! The client's interactive verification (SAS over to-device messages).
//! The machine runs the flows ([`crate::machine::verification`]); incoming
//! `m.key.verification.*` events reach it with each sync. Each call here
//! takes one step, commits the machine's changes and then sends what it
//! queued, as everywhere else. See `spec-notes/verification.md`.

use ruma::{DeviceId, UserId};

use crate::{
    Client,
    encryption::now_ms,
    error::{Error, Result},
    machine::{MachineError, OlmMachine, Verification, VerificationError},
};

impl Client {
    /// Asks a device (another user's, or another of ours) to verify by SAS;
    /// returns the transaction id naming the flow. Follow it with
    /// [`Client::verification`] after each sync.
    ///
    /// # Errors
    ///
    /// [`Error::Crypto`] with [`VerificationError::UnknownDevice`] for a
    /// device not queried yet; network and store errors.
    pub async fn request_verification(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
    ) -> Result<String> {
        self.verification_step(|machine| {
            machine.request_verification(user_id.as_str(), device_id.as_str(), now_ms())
        })
        .await
    }

    /// Asks every other device of ours to verify this one; the first to
    /// accept takes the flow. Returns the transaction id.
    ///
    /// # Errors
    ///
    /// [`Error::Crypto`] with [`VerificationError::UnknownDevice`] when no
    /// other device of ours is known; network and store errors.
    pub async fn request_own_verification(&self) -> Result<String> {
        self.verification_step(|machine| machine.request_own_verification(now_ms()))
            .await
    }

    /// Accepts an incoming request (sends `ready`).
    ///
    /// # Errors
    ///
    /// [`Error::Crypto`] with a [`VerificationError`]; network and store
    /// errors.
    pub async fn accept_verification_request(
        &self,
        user_id: &UserId,
        transaction_id: &str,
    ) -> Result<()> {
        self.verification_step(|machine| {
            machine.accept_verification_request(user_id.as_str(), transaction_id)
        })
        .await
    }

    /// Starts SAS on a ready flow.
    ///
    /// # Errors
    ///
    /// [`Error::Crypto`] with a [`VerificationError`]; network and store
    /// errors.
    pub async fn start_sas(&self, user_id: &UserId, transaction_id: &str) -> Result<()> {
        self.verification_step(|machine| {
            machine.start_sas(user_id.as_str(), transaction_id, now_ms())
        })
        .await
    }

    /// Accepts the other side's SAS start.
    ///
    /// # Errors
    ///
    /// [`Error::Crypto`] with a [`VerificationError`]; network and store
    /// errors.
    pub async fn accept_sas(&self, user_id: &UserId, transaction_id: &str) -> Result<()> {
        self.verification_step(|machine| machine.accept_sas(user_id.as_str(), transaction_id))
            .await
    }

    /// The user says the emoji (or numbers) match.
    ///
    /// # Errors
    ///
    /// [`Error::Crypto`] with a [`VerificationError`]; network and store
    /// errors.
    pub async fn confirm_sas(&self, user_id: &UserId, transaction_id: &str) -> Result<()> {
        self.verification_step(|machine| machine.confirm_sas(user_id.as_str(), transaction_id))
            .await
    }

    /// The user says the emoji (or numbers) differ: cancels with
    /// `m.mismatched_sas`.
    ///
    /// # Errors
    ///
    /// [`Error::Crypto`] with a [`VerificationError`]; network and store
    /// errors.
    pub async fn sas_mismatch(&self, user_id: &UserId, transaction_id: &str) -> Result<()> {
        self.verification_step(|machine| machine.sas_mismatch(user_id.as_str(), transaction_id))
            .await
    }

    /// Cancels a verification (`m.user`).
    ///
    /// # Errors
    ///
    /// [`Error::Crypto`] with a [`VerificationError`]; network and store
    /// errors.
    pub async fn cancel_verification(&self, user_id: &UserId, transaction_id: &str) -> Result<()> {
        self.verification_step(|machine| {
            machine.cancel_verification(user_id.as_str(), transaction_id)
        })
        .await
    }

    /// One verification: its phase and, once keys are exchanged, the emoji
    /// and numbers to compare.
    ///
    /// # Errors
    ///
    /// [`Error::NotLoggedIn`] and store errors.
    pub async fn verification(
        &self,
        user_id: &UserId,
        transaction_id: &str,
    ) -> Result<Option<Verification>> {
        self.with_machine(|machine| machine.verification(user_id.as_str(), transaction_id))
            .await
    }

    /// Every verification this session knows, finished ones included.
    ///
    /// # Errors
    ///
    /// [`Error::NotLoggedIn`] and store errors.
    pub async fn verifications(&self) -> Result<Vec<Verification>> {
        self.with_machine(|machine| machine.verifications()).await
    }

    /// Runs one machine step, then commits and sends what it queued
    /// (commit first: see `send_machine_requests`).
    async fn verification_step<T>(
        &self,
        step: impl FnOnce(&mut OlmMachine) -> Result<T, VerificationError>,
    ) -> Result<T> {
        let mut slot = self.machine().await?;
        let machine = slot.as_mut().ok_or(Error::NotLoggedIn)?;
        let value = step(machine).map_err(MachineError::from)?;
        let requests = machine.outgoing_requests();
        self.send_machine_requests(machine, requests).await?;
        Ok(value)
    }
}
