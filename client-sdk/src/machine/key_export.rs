//! Room keys out of and into the machine as the spec's [key export]
//! payload: a JSON list of sessions, each as the backup stores it plus its
//! `room_id` and `session_id`. [`myelin_crypto::key_export`] seals the
//! payload into the passphrase-protected file; the client does that off
//! the machine's lock, since the key derivation takes a while.
//!
//! An imported session is trusted as a forwarded key is: the file's
//! writer, not the session's sender, vouches for it, so it never replaces a
//! better copy and is merged only into the same ratchet.
//!
//! [key export]: https://spec.matrix.org/v1.16/client-server-api/#key-exports

use ruma::RoomId;
use serde_json::Value;
use zeroize::Zeroizing;

use super::{
    DecryptedRoomEvent, OlmMachine, SyncOutput,
    backup::{exported_session, session_from_backup},
};

/// What an import did.
#[derive(Debug, Default)]
pub struct KeyImport {
    /// Sessions in the file.
    pub total: usize,
    /// Sessions stored (new, or an existing one extended backwards).
    pub imported: usize,
    /// Sessions that added nothing to what we hold, or that are not the
    /// ratchet we hold under their id.
    pub unchanged: usize,
    /// Entries that are not Megolm room keys, or whose session is not the
    /// one they name.
    pub invalid: usize,
    /// Events kept undecryptable that the imported keys decrypted.
    pub late_decryptions: Vec<DecryptedRoomEvent>,
}

/// The payload was not a JSON list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the room key export does not hold a list of sessions")]
pub struct NotAKeyList;

impl OlmMachine {
    /// Every room key this device holds, from its first known index, as an
    /// export payload.
    pub fn export_room_keys(&self) -> Zeroizing<String> {
        let sessions: Vec<Value> = self
            .inbound
            .iter()
            .map(|(key_id, entry)| {
                let mut session = exported_session(entry);
                session.insert("room_id".to_owned(), key_id.room_id.as_str().into());
                session.insert("session_id".to_owned(), key_id.session_id.as_str().into());
                Value::Object(session)
            })
            .collect();
        // Serialising a `Value` of strings cannot fail.
        let payload = serde_json::to_string(&sessions).unwrap_or_default();
        let mut sessions = Value::Array(sessions);
        super::zeroize_json(&mut sessions);
        Zeroizing::new(payload)
    }

    /// Takes the sessions of an export payload; entries that are not room
    /// keys are counted and skipped.
    ///
    /// # Errors
    /// [`NotAKeyList`] when the payload is not a JSON list (nothing is
    /// imported then).
    pub fn import_room_keys(&mut self, payload: &[u8]) -> Result<KeyImport, NotAKeyList> {
        let mut sessions: Value = serde_json::from_slice(payload).map_err(|_| NotAKeyList)?;
        let Some(list) = sessions.as_array() else {
            return Err(NotAKeyList);
        };
        let mut import = KeyImport {
            total: list.len(),
            ..KeyImport::default()
        };
        let mut output = SyncOutput::default();
        for session in list {
            let field = |name: &str| session.get(name).and_then(Value::as_str);
            let room_id = field("room_id").and_then(|id| <&RoomId>::try_from(id).ok());
            let entry = room_id
                .zip(field("session_id"))
                .and_then(|(room_id, session_id)| {
                    session_from_backup(room_id, session_id, session, None)
                });
            let Some(entry) = entry else {
                import.invalid += 1;
                continue;
            };
            if self.accept_inbound(entry, &mut output) {
                import.imported += 1;
            } else {
                import.unchanged += 1;
            }
        }
        super::zeroize_json(&mut sessions);
        import.late_decryptions = output.late_decryptions;
        Ok(import)
    }
}
