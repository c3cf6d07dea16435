//! The user directory (`POST /user_directory/search`): finding local users
//! by user id or display name. As the spec asks, a searcher finds the users
//! who share a room with them and the users in public rooms (a room whose
//! join rule is `public`); `[user_directory] search_all_users` widens it to
//! every local account. Deactivated accounts are never found. The answer is
//! computed from current memberships and profiles at each search, so joins,
//! leaves, profile changes and deactivations show at once.

use ruma::{OwnedUserId, UserId};

use super::Profiles;
use crate::{service::ServiceError, storage::Profile};

/// Results when the client asks for no number.
const DEFAULT_LIMIT: u64 = 10;
/// Most results one search returns.
const MAX_LIMIT: u64 = 100;
/// Longest search term accepted, in bytes.
const MAX_TERM_BYTES: usize = 256;

/// What a search found.
#[derive(Debug)]
pub struct DirectorySearch {
    /// The users found, with their profiles, by user id.
    pub results: Vec<(OwnedUserId, Profile)>,
    /// Whether more users matched than were returned.
    pub limited: bool,
}

impl Profiles {
    /// The users `searcher` may find whose user id or display name contains
    /// `term` (case-insensitively); at most `limit` (10 when `None`, 100 at
    /// most).
    ///
    /// # Errors
    /// `InvalidParam` for an overlong term or one with a NUL character;
    /// storage failures.
    pub async fn search_directory(
        &self,
        searcher: &UserId,
        term: &str,
        limit: Option<u64>,
    ) -> Result<DirectorySearch, ServiceError> {
        if term.len() > MAX_TERM_BYTES || term.contains('\0') {
            return Err(ServiceError::InvalidParam(format!(
                "search_term is at most {MAX_TERM_BYTES} bytes, without NUL characters"
            )));
        }
        let limit = limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT);
        // One more than asked for tells whether the answer was cut.
        let fetch = u32::try_from(limit + 1).unwrap_or(u32::MAX);
        let mut results = self
            .storage
            .search_user_directory(
                searcher,
                &term.trim().to_lowercase(),
                fetch,
                self.directory.search_all_users,
            )
            .await?;
        let limited = results.len() as u64 > limit;
        results.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok(DirectorySearch { results, limited })
    }
}
