//! The JSON shapes clients use to prove who they are: the UIA `auth` object
//! and user identifiers.

use serde::Deserialize;

use crate::{
    config::Secret,
    http::error::MatrixError,
    service::{
        password::Password,
        uia::{AuthSubmission, Stage},
    },
};

/// `identifier` in a login or `m.login.password` stage.
#[derive(Debug, Deserialize)]
pub struct UserIdentifier {
    #[serde(rename = "type")]
    kind: String,
    user: Option<String>,
}

/// Picks the user a login names: the `m.id.user` identifier, or the
/// deprecated top-level `user` field.
///
/// # Errors
/// `M_UNKNOWN` for identifier types other than `m.id.user`; `M_BAD_JSON`
/// when no user is named.
pub fn identified_user(
    identifier: Option<UserIdentifier>,
    legacy_user: Option<String>,
) -> Result<String, MatrixError> {
    match identifier {
        Some(UserIdentifier { kind, user }) if kind == "m.id.user" => {
            user.ok_or_else(|| MatrixError::bad_json("identifier.user is required"))
        }
        Some(_) => Err(MatrixError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "M_UNKNOWN",
            "only the m.id.user identifier is supported",
        )),
        None => legacy_user.ok_or_else(|| MatrixError::bad_json("identifier is required")),
    }
}

/// The UIA `auth` object.
#[derive(Debug, Deserialize)]
pub struct AuthData {
    #[serde(rename = "type")]
    kind: Option<String>,
    session: Option<String>,
    identifier: Option<UserIdentifier>,
    user: Option<String>,
    password: Option<String>,
    token: Option<String>,
}

impl AuthData {
    /// The stage this object attempts; `None` when it names no stage type
    /// (the client is only asking for the flows).
    ///
    /// # Errors
    /// `M_BAD_JSON` when a stage lacks its credentials.
    pub fn into_submission(self) -> Result<Option<AuthSubmission>, MatrixError> {
        let Some(kind) = self.kind else {
            return Ok(None);
        };
        let stage = match kind.as_str() {
            "m.login.dummy" => Stage::Dummy,
            "m.login.password" => Stage::Password {
                user: identified_user(self.identifier, self.user)?,
                password: Password::new(
                    self.password
                        .ok_or_else(|| MatrixError::bad_json("auth.password is required"))?,
                ),
            },
            "m.login.registration_token" => Stage::RegistrationToken(Secret::new(
                self.token
                    .ok_or_else(|| MatrixError::bad_json("auth.token is required"))?,
            )),
            _ => Stage::Unsupported(kind),
        };
        Ok(Some(AuthSubmission {
            session: self.session,
            stage,
        }))
    }
}

/// Turns an optional `auth` field into a UIA submission.
///
/// # Errors
/// As [`AuthData::into_submission`].
pub fn submission(auth: Option<AuthData>) -> Result<Option<AuthSubmission>, MatrixError> {
    auth.map_or(Ok(None), AuthData::into_submission)
}
