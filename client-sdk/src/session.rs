//! The logged-in session: who we are, on which device, with which token,
//! and how it is kept in the store (the token sealed, the rest in the clear).

use std::sync::Arc;

use reqwest::Url;
use ruma::{OwnedDeviceId, OwnedUserId};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::store::{Changes, SecretBox, Store, StoreError, get_json};

pub(crate) const SESSION_NAMESPACE: &str = "session";
const META_KEY: &str = "meta";
const TOKEN_KEY: &str = "access_token";

/// An access token. Its `Debug` prints `[redacted]`, it has no `Display`,
/// and its memory is zeroized when the last copy is dropped.
#[derive(Clone)]
pub struct AccessToken(Arc<Zeroizing<String>>);

impl AccessToken {
    /// Wraps a token.
    pub fn new(token: String) -> Self {
        Self(Arc::new(Zeroizing::new(token)))
    }

    /// The token itself, for the `Authorization` header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessToken([redacted])")
    }
}

/// Who the client is logged in as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionMeta {
    /// The account.
    pub user_id: OwnedUserId,
    /// This client's device.
    pub device_id: OwnedDeviceId,
    /// The homeserver the session lives on.
    #[serde(with = "url_as_string")]
    pub homeserver: Url,
}

/// A full session: [`SessionMeta`] and the access token.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub(crate) meta: SessionMeta,
    pub(crate) token: AccessToken,
}

impl Session {
    /// Adds this session to `changes`, the token sealed.
    pub(crate) fn save(
        &self,
        secrets: &SecretBox,
        changes: &mut Changes,
    ) -> Result<(), StoreError> {
        changes.put_json(SESSION_NAMESPACE, META_KEY, &self.meta)?;
        secrets.put(
            changes,
            SESSION_NAMESPACE,
            TOKEN_KEY,
            self.token.expose().as_bytes(),
        )
    }

    /// Loads the saved session, if there is one.
    pub(crate) async fn load(
        store: &dyn Store,
        secrets: &SecretBox,
    ) -> Result<Option<Self>, StoreError> {
        let Some(meta) = get_json::<SessionMeta>(store, SESSION_NAMESPACE, META_KEY).await? else {
            return Ok(None);
        };
        let Some(token) = secrets.get(store, SESSION_NAMESPACE, TOKEN_KEY).await? else {
            return Err(StoreError::Encoding(
                "session saved without its access token".to_owned(),
            ));
        };
        let token = String::from_utf8(token.to_vec())
            .map_err(|_| StoreError::Encoding("access token is not UTF-8".to_owned()))?;
        Ok(Some(Self {
            meta,
            token: AccessToken::new(token),
        }))
    }

    /// Adds the removal of the saved session to `changes`.
    pub(crate) fn forget(changes: &mut Changes) {
        changes.delete(SESSION_NAMESPACE, META_KEY);
        changes.delete(SESSION_NAMESPACE, TOKEN_KEY);
    }
}

/// `Url` as its string form (reqwest's `Url` has no serde support enabled).
mod url_as_string {
    use reqwest::Url;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(super) fn serialize<S: Serializer>(url: &Url, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(url.as_str())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Url, D::Error> {
        let text = String::deserialize(deserializer)?;
        Url::parse(&text).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::AccessToken;

    #[test]
    fn tokens_never_print() {
        let token = AccessToken::new("syt_very_secret".to_owned());
        assert_eq!(format!("{token:?}"), "AccessToken([redacted])");
        assert_eq!(token.expose(), "syt_very_secret");
    }
}
