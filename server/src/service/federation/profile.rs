//! Other servers' users' profiles, asked for on behalf of local clients
//! (`GET /_matrix/federation/v1/query/profile`).

use ruma::UserId;
use serde_json::Value;

use super::{Federation, FederationError};
use crate::{service::ServiceError, storage::Profile};

impl Federation {
    /// A remote user's display name and avatar, asked of their server.
    ///
    /// # Errors
    /// `NotFound` when federation is off, the server does not know the
    /// user, or cannot be reached: for the client, there is no profile.
    pub async fn query_profile(&self, user_id: &UserId) -> Result<Profile, ServiceError> {
        if !self.enabled {
            return Err(ServiceError::NotFound(
                "this server does not federate".to_owned(),
            ));
        }
        let path = format!(
            "/_matrix/federation/v1/query/profile?user_id={}",
            super::percent_encode(user_id.as_str())
        );
        let answer = self
            .client
            .get(user_id.server_name(), &path)
            .await
            .map_err(|error| {
                tracing::info!(server = %user_id.server_name(), %error, "remote profile lookup failed");
                ServiceError::NotFound(match error {
                    FederationError::Remote { status: 404, .. } => "no such user".to_owned(),
                    _ => "the user's server did not answer".to_owned(),
                })
            })?;
        // Only strings are a profile's fields; anything else is left out.
        let field = |name: &str| answer.get(name).and_then(Value::as_str).map(str::to_owned);
        Ok(Profile {
            displayname: field("displayname"),
            avatar_url: field("avatar_url"),
        })
    }
}
