//! Public profiles: display names and avatars.

use std::sync::Arc;

use ruma::{OwnedServerName, UserId};

use super::ServiceError;
use crate::{
    config::{ProfileLookupConfig, UserDirectoryConfig},
    storage::{Profile, ProfileField, Storage, StorageError},
};

mod directory;

pub use directory::DirectorySearch;

/// Longest display name accepted, in characters.
pub const MAX_DISPLAYNAME_CHARS: usize = 256;
/// Longest avatar URL accepted, in bytes.
pub const MAX_AVATAR_URL_BYTES: usize = 1024;

/// Profiles of local users.
#[derive(Debug)]
pub struct Profiles {
    storage: Arc<dyn Storage>,
    server_name: OwnedServerName,
    lookup: ProfileLookupConfig,
    directory: UserDirectoryConfig,
}

impl Profiles {
    /// Builds the service; `lookup` says who may look profiles up, and
    /// `directory` whom the user directory finds.
    pub fn new(
        storage: Arc<dyn Storage>,
        server_name: OwnedServerName,
        lookup: ProfileLookupConfig,
        directory: UserDirectoryConfig,
    ) -> Self {
        Self {
            storage,
            server_name,
            lookup,
            directory,
        }
    }

    /// A user's profile as `viewer` (`None` without an access token) may
    /// see it. Refusals name no reason and are the same for unknown users,
    /// so a lookup the configuration refuses cannot tell who exists.
    ///
    /// # Errors
    /// `Forbidden` when the configuration refuses the lookup; `NotFound`
    /// for an unknown user otherwise.
    pub async fn lookup(
        &self,
        viewer: Option<&UserId>,
        user_id: &UserId,
    ) -> Result<Profile, ServiceError> {
        self.check_lookup(viewer, user_id).await?;
        self.get(user_id).await
    }

    /// Whether the configuration lets `viewer` see `user_id`'s profile,
    /// wherever that profile comes from.
    ///
    /// # Errors
    /// `Forbidden` when it does not; storage failures.
    pub async fn check_lookup(
        &self,
        viewer: Option<&UserId>,
        user_id: &UserId,
    ) -> Result<(), ServiceError> {
        let refused = || ServiceError::Forbidden("this profile is not disclosed to you".to_owned());
        let Some(viewer) = viewer else {
            return if self.lookup.require_auth {
                Err(refused())
            } else {
                Ok(())
            };
        };
        if self.lookup.shared_rooms_only
            && viewer != user_id
            && !share_a_room(self.storage.as_ref(), viewer, user_id).await?
        {
            return Err(refused());
        }
        Ok(())
    }

    /// A local user's profile as another server asks for it
    /// (`GET /_matrix/federation/v1/query/profile`). The request is
    /// authenticated by the server's signature, which satisfies
    /// `require_auth`; with `shared_rooms_only`, remote users are refused,
    /// since no room is shared over federation yet.
    ///
    /// # Errors
    /// `InvalidParam` for a user of another server; `Forbidden` as above;
    /// `NotFound` for an unknown user.
    pub async fn lookup_for_server(&self, user_id: &UserId) -> Result<Profile, ServiceError> {
        if user_id.server_name() != self.server_name {
            return Err(ServiceError::InvalidParam(
                "the user is not a user of this server".to_owned(),
            ));
        }
        if self.lookup.shared_rooms_only {
            return Err(ServiceError::Forbidden(
                "this profile is not disclosed to you".to_owned(),
            ));
        }
        self.get(user_id).await
    }

    /// A user's profile.
    ///
    /// # Errors
    /// `NotFound` for an unknown user; other servers' users are asked over
    /// federation instead (`Federation::query_profile`).
    pub async fn get(&self, user_id: &UserId) -> Result<Profile, ServiceError> {
        if user_id.server_name() != self.server_name {
            return Err(ServiceError::NotFound(
                "profile lookup over federation is not supported yet".to_owned(),
            ));
        }
        self.storage
            .profile(user_id)
            .await?
            .ok_or_else(|| ServiceError::NotFound("no such user".to_owned()))
    }

    /// Sets or clears one field of the caller's own profile.
    ///
    /// # Errors
    /// `Forbidden` for someone else's profile; `InvalidParam` for a bad value.
    pub async fn set(
        &self,
        caller: &UserId,
        target: &UserId,
        field: ProfileField,
        value: Option<&str>,
    ) -> Result<(), ServiceError> {
        if caller != target {
            return Err(ServiceError::Forbidden(
                "you may only change your own profile".to_owned(),
            ));
        }
        // Clients clear a field by sending an empty string as often as `null`.
        let value = value.filter(|value| !value.is_empty());
        match (field, value) {
            (ProfileField::Displayname, Some(name))
                if name.chars().count() > MAX_DISPLAYNAME_CHARS =>
            {
                return Err(ServiceError::InvalidParam(format!(
                    "display names are limited to {MAX_DISPLAYNAME_CHARS} characters"
                )));
            }
            (ProfileField::AvatarUrl, Some(url))
                if !url.starts_with("mxc://") || url.len() > MAX_AVATAR_URL_BYTES =>
            {
                return Err(ServiceError::InvalidParam(format!(
                    "avatar_url must be an mxc:// URI of at most {MAX_AVATAR_URL_BYTES} bytes"
                )));
            }
            _ => {}
        }
        match self.storage.set_profile_field(target, field, value).await {
            Err(StorageError::NotFound(_)) => {
                Err(ServiceError::NotFound("no such user".to_owned()))
            }
            other => Ok(other?),
        }
    }
}

/// Whether both users are joined to (or invited into) one room.
///
/// # Errors
/// Storage failures.
pub async fn share_a_room(
    storage: &dyn Storage,
    a: &UserId,
    b: &UserId,
) -> Result<bool, ServiceError> {
    let present = |membership: &str| matches!(membership, "join" | "invite");
    let rooms_of_a: std::collections::HashSet<_> = storage
        .memberships_of(a, None)
        .await?
        .into_iter()
        .filter(|m| present(&m.membership))
        .map(|m| m.room_id)
        .collect();
    Ok(storage
        .memberships_of(b, None)
        .await?
        .iter()
        .any(|m| present(&m.membership) && rooms_of_a.contains(&m.room_id)))
}
