//! Which backup versions this device accepts, and the old ones it deletes
//! (`spec-notes/key-backup.md`).
//!
//! **The pin.** Once the user has an authenticated backup (MSC4048: this
//! device made, restored or trusted one, or secret storage holds its MAC
//! key), a backup of the spec's algorithm is refused
//! ([`BackupError::Downgrade`]): not restored, not trusted, not written to.
//! Otherwise a server could replace the authenticated version by an
//! unauthenticated one (the `auth_data` signature does not cover the
//! algorithm) and have its own keys taken from it. Only the user lifts the
//! pin, by enabling a backup of the spec's algorithm.
//!
//! **Retired versions.** A version replaced by one this device created is
//! deleted from the server once the new one exists. The version to delete
//! is a record until the server confirms (or says it is gone), so a
//! restart does not forget it.

use myelin_crypto::backup_mac::BackupMacKey;
use zeroize::Zeroizing;

use super::{
    OlmMachine, OutgoingRequest, Request,
    backup::{BackupError, PIN_RECORD, RETIRED_RECORD_KIND},
    requests::InFlight,
};

impl OlmMachine {
    /// Records that the user's backups are authenticated (secret storage
    /// holds the backup's MAC key): an unauthenticated backup is refused
    /// from now on, until the user enables one.
    pub fn pin_authenticated_backup(&mut self) {
        self.set_backup_pin(true);
    }

    /// Whether an unauthenticated backup is refused
    /// ([`OlmMachine::pin_authenticated_backup`]).
    pub fn requires_authenticated_backup(&self) -> bool {
        self.backup_pinned
    }

    /// The MAC key of the authenticated backup this device uses, as
    /// secret storage keeps it (MSC4048's `m.megolm_backup.v1.mac`), if it
    /// holds the backup's private key.
    pub fn backup_mac_secret(&self) -> Option<Zeroizing<String>> {
        let backup = self.backup.as_ref().filter(|b| b.authenticated)?;
        let key = backup.private_key.as_ref()?;
        Some(BackupMacKey::derive(key).to_base64())
    }

    pub(super) fn set_backup_pin(&mut self, pinned: bool) {
        if self.backup_pinned != pinned {
            self.backup_pinned = pinned;
            self.put(PIN_RECORD.to_owned(), &pinned);
        }
    }

    /// [`BackupError::Downgrade`] for an unauthenticated backup while the
    /// user's backups are authenticated.
    pub(super) fn refuse_downgrade(&self, authenticated: bool) -> Result<(), BackupError> {
        if self.backup_pinned && !authenticated {
            return Err(BackupError::Downgrade);
        }
        Ok(())
    }

    /// Deletes `version` from the server (after a restart too).
    pub(super) fn retire_backup(&mut self, version: String) {
        self.put(format!("{RETIRED_RECORD_KIND}/{version}"), &version);
        self.retired_backups.insert(version);
    }

    /// The server deleted `version`, or it was gone.
    pub(super) fn forget_retired_backup(&mut self, version: &str) {
        if self.retired_backups.remove(version) {
            self.changes
                .delete(format!("{RETIRED_RECORD_KIND}/{version}"));
        }
    }

    /// A deletion for each retired version not being deleted.
    pub(super) fn backup_delete_requests(&mut self) -> Vec<OutgoingRequest> {
        let deleting: Vec<&String> = self
            .in_flight
            .values()
            .filter_map(|request| match request {
                InFlight::BackupVersionDelete { version } => Some(version),
                _ => None,
            })
            .collect();
        let due: Vec<String> = self
            .retired_backups
            .iter()
            .filter(|version| !deleting.contains(version))
            .cloned()
            .collect();
        due.into_iter()
            .map(|version| {
                let in_flight = InFlight::BackupVersionDelete {
                    version: version.clone(),
                };
                self.issue(in_flight, |_| Request::BackupVersionDelete { version })
            })
            .collect()
    }
}
