//! Room key export files: every room key of this device sealed under a
//! passphrase in the spec's format, which Element and other clients import,
//! and the import of such files. The key derivation (PBKDF2, 500,000
//! rounds) runs on a blocking thread, outside the machine's lock.

use myelin_crypto::key_export::{DEFAULT_EXPORT_ROUNDS, decrypt_key_export, encrypt_key_export};
use zeroize::Zeroizing;

use myelin_crypto::key_export::KeyExportError;

use crate::{Client, Error, error::Result, machine::KeyImport};

impl Client {
    /// Every room key this device holds, from the first message it can
    /// read, in an export file protected by `passphrase` (the spec's
    /// `-----BEGIN MEGOLM SESSION DATA-----` format).
    ///
    /// The file reads every message those keys decrypt: keep it as safe as
    /// the passphrase is strong.
    ///
    /// # Errors
    /// [`Error::NotLoggedIn`]; [`Error::KeyExport`] if the system's random
    /// number generator fails; store errors.
    pub async fn export_room_keys(&self, passphrase: &str) -> Result<String> {
        let payload = {
            let slot = self.machine().await?;
            slot.as_ref().ok_or(Error::NotLoggedIn)?.export_room_keys()
        };
        let passphrase = Zeroizing::new(passphrase.to_owned());
        blocking(move || encrypt_key_export(payload.as_bytes(), &passphrase, DEFAULT_EXPORT_ROUNDS))
            .await
    }

    /// Imports the room keys of an export file made with `passphrase` (by
    /// this SDK, Element, or any client writing the spec's format). Keys
    /// are taken as forwarded ones: never over a better copy we hold.
    /// Events that were undecryptable for want of them come back in
    /// [`KeyImport::late_decryptions`].
    ///
    /// # Errors
    /// [`Error::KeyExport`] for a wrong passphrase, an altered or damaged
    /// file, or one that holds no list of sessions (nothing is imported
    /// then); [`Error::NotLoggedIn`]; store errors.
    pub async fn import_room_keys(&self, file: &str, passphrase: &str) -> Result<KeyImport> {
        let file = file.to_owned();
        let passphrase = Zeroizing::new(passphrase.to_owned());
        let payload = blocking(move || decrypt_key_export(&file, &passphrase)).await?;
        let mut slot = self.machine().await?;
        let machine = slot.as_mut().ok_or(Error::NotLoggedIn)?;
        let import = machine
            .import_room_keys(&payload)
            .map_err(|_| Error::KeyExport(KeyExportError::Malformed))?;
        tracing::info!(
            total = import.total,
            imported = import.imported,
            unchanged = import.unchanged,
            invalid = import.invalid,
            "imported room keys"
        );
        let requests = machine.outgoing_requests();
        self.send_machine_requests(machine, requests).await?;
        Ok(import)
    }
}

/// Runs the key derivation off the async runtime.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::result::Result<T, KeyExportError> + Send + 'static,
) -> Result<T> {
    // A blocking task fails only by panicking (passed on here) or by the
    // runtime shutting down, when nothing awaits this any more.
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|error| std::panic::resume_unwind(error.into_panic()))
        .map_err(Error::KeyExport)
}
