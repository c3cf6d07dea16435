//! User-interactive authentication (UIA), the spec's multi-stage auth for
//! sensitive endpoints: <https://spec.matrix.org/v1.16/client-server-api/#user-interactive-authentication-api>.
//!
//! Sessions live in memory for [`SESSION_LIFETIME`]; each is bound to the
//! action it was started for, so stages completed to delete one device cannot
//! be spent on another action.

use std::{
    collections::HashMap,
    future::Future,
    sync::Mutex,
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::RngCore;
use ruma::{OwnedDeviceId, OwnedUserId};

use super::{ServiceError, password::Password};
use crate::config::Secret;

/// How long an unfinished UIA session is remembered.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// A stage type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthType {
    /// `m.login.dummy`: no check, used to complete open registration.
    Dummy,
    /// `m.login.password`: the account's password.
    Password,
    /// `m.login.registration_token`: a token the operator handed out.
    RegistrationToken,
}

impl AuthType {
    /// The spec's name for the stage.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dummy => "m.login.dummy",
            Self::Password => "m.login.password",
            Self::RegistrationToken => "m.login.registration_token",
        }
    }
}

/// The `auth` object a client submitted.
#[derive(Debug)]
pub struct AuthSubmission {
    /// The session it continues, if any.
    pub session: Option<String>,
    /// The stage it attempts.
    pub stage: Stage,
}

/// A submitted stage with its credentials.
#[derive(Debug)]
pub enum Stage {
    /// `m.login.dummy`.
    Dummy,
    /// `m.login.password` for the named user (localpart or full id).
    Password {
        /// Who the client says it is.
        user: String,
        /// The password.
        password: Password,
    },
    /// `m.login.registration_token`.
    RegistrationToken(Secret),
    /// A stage type the server does not offer.
    Unsupported(String),
}

impl Stage {
    fn auth_type(&self) -> Option<AuthType> {
        match self {
            Self::Dummy => Some(AuthType::Dummy),
            Self::Password { .. } => Some(AuthType::Password),
            Self::RegistrationToken(_) => Some(AuthType::RegistrationToken),
            Self::Unsupported(_) => None,
        }
    }
}

/// What a session was started for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UiaAction {
    /// Creating an account.
    Register,
    /// Deleting these devices of this user.
    DeleteDevices(OwnedUserId, Vec<OwnedDeviceId>),
    /// Changing this user's password.
    ChangePassword(OwnedUserId),
    /// Replacing this user's cross-signing keys.
    UploadCrossSigningKeys(OwnedUserId),
}

/// The 401 answer that tells the client how to go on.
#[derive(Debug)]
pub struct UiaChallenge {
    /// The session to quote in the next attempt.
    pub session: String,
    /// Each acceptable sequence of stages.
    pub flows: Vec<Vec<AuthType>>,
    /// Stages already passed in this session.
    pub completed: Vec<AuthType>,
    /// Why the last attempt failed, if it did.
    pub error: Option<ServiceError>,
}

/// The server's UIA sessions.
#[derive(Debug, Default)]
pub struct UiaSessions {
    sessions: Mutex<HashMap<String, SessionState>>,
}

#[derive(Debug)]
struct SessionState {
    action: UiaAction,
    completed: Vec<AuthType>,
    started: Instant,
}

impl UiaSessions {
    /// Runs one UIA step for `action`.
    ///
    /// `verify` checks the submitted stage's credentials; its
    /// [`ServiceError::Forbidden`] answers become the challenge's `error`.
    ///
    /// # Errors
    /// [`ServiceError::AuthRequired`] until one of `flows` is complete, or
    /// what `verify` failed with when it is not a refusal.
    pub async fn authorize<F, Fut>(
        &self,
        action: UiaAction,
        flows: &[&[AuthType]],
        auth: Option<AuthSubmission>,
        verify: F,
    ) -> Result<(), ServiceError>
    where
        F: FnOnce(Stage) -> Fut,
        Fut: Future<Output = Result<(), ServiceError>>,
    {
        let (session, stage) = match auth {
            Some(AuthSubmission { session, stage }) => (session, Some(stage)),
            None => (None, None),
        };
        let (session, completed) = self.resume_or_start(session, &action);
        let challenge = |completed, error| {
            ServiceError::AuthRequired(Box::new(UiaChallenge {
                session: session.clone(),
                flows: flows.iter().map(|flow| flow.to_vec()).collect(),
                completed,
                error,
            }))
        };
        let Some(stage) = stage else {
            return Err(challenge(completed, None));
        };

        let expected = stage.auth_type().filter(|kind| {
            flows
                .iter()
                .any(|flow| flow.starts_with(&completed) && flow.get(completed.len()) == Some(kind))
        });
        let Some(kind) = expected else {
            let error = ServiceError::InvalidParam("this stage is not expected now".to_owned());
            return Err(challenge(completed, Some(error)));
        };
        match verify(stage).await {
            Ok(()) => {}
            Err(refusal @ ServiceError::Forbidden(_)) => {
                return Err(challenge(completed, Some(refusal)));
            }
            Err(other) => return Err(other),
        }

        let mut completed = completed;
        completed.push(kind);
        if flows.contains(&completed.as_slice()) {
            self.lock().remove(&session);
            return Ok(());
        }
        if let Some(state) = self.lock().get_mut(&session) {
            state.completed.clone_from(&completed);
        }
        Err(challenge(completed, None))
    }

    /// Finds the client's session for this action, or starts a fresh one
    /// (for no session, an expired one, or one begun for another action).
    fn resume_or_start(
        &self,
        session: Option<String>,
        action: &UiaAction,
    ) -> (String, Vec<AuthType>) {
        let now = Instant::now();
        let mut sessions = self.lock();
        sessions.retain(|_, state| now.duration_since(state.started) < SESSION_LIFETIME);
        if let Some(id) = session
            && let Some(state) = sessions.get(&id)
            && state.action == *action
        {
            return (id, state.completed.clone());
        }
        let mut bytes = [0u8; 18];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let id = URL_SAFE_NO_PAD.encode(bytes);
        sessions.insert(
            id.clone(),
            SessionState {
                action: action.clone(),
                completed: Vec::new(),
                started: now,
            },
        );
        (id, Vec::new())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, SessionState>> {
        // A poisoned lock only means a request panicked mid-update; the map stays consistent.
        self.sessions
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMMY: &[&[AuthType]] = &[&[AuthType::Dummy]];

    fn challenge(result: Result<(), ServiceError>) -> UiaChallenge {
        match result {
            Err(ServiceError::AuthRequired(challenge)) => *challenge,
            other => panic!("expected a challenge, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn no_auth_gets_flows_and_a_session() {
        let uia = UiaSessions::default();
        let c = challenge(
            uia.authorize(UiaAction::Register, DUMMY, None, |_| async { Ok(()) })
                .await,
        );
        assert_eq!(c.flows, vec![vec![AuthType::Dummy]]);
        assert!(c.completed.is_empty() && c.error.is_none() && c.session.len() >= 24);
    }

    #[tokio::test]
    async fn completing_the_flow_succeeds_and_ends_the_session() {
        let uia = UiaSessions::default();
        let c = challenge(
            uia.authorize(UiaAction::Register, DUMMY, None, |_| async { Ok(()) })
                .await,
        );
        let auth = AuthSubmission {
            session: Some(c.session.clone()),
            stage: Stage::Dummy,
        };
        uia.authorize(UiaAction::Register, DUMMY, Some(auth), |_| async { Ok(()) })
            .await
            .unwrap();
        assert!(uia.lock().is_empty());
    }

    #[tokio::test]
    async fn refused_stage_keeps_the_session_and_reports_why() {
        let uia = UiaSessions::default();
        let flows: &[&[AuthType]] = &[&[AuthType::Password]];
        let action = UiaAction::ChangePassword("@a:x".try_into().unwrap());
        let auth = AuthSubmission {
            session: None,
            stage: Stage::Password {
                user: "a".to_owned(),
                password: Password::new("x".into()),
            },
        };
        let c = challenge(
            uia.authorize(action, flows, Some(auth), |_| async {
                Err(ServiceError::Forbidden("wrong password".to_owned()))
            })
            .await,
        );
        assert!(matches!(c.error, Some(ServiceError::Forbidden(_))));
        assert!(uia.lock().contains_key(&c.session));
    }

    #[tokio::test]
    async fn unexpected_stage_is_not_verified() {
        let uia = UiaSessions::default();
        let auth = AuthSubmission {
            session: None,
            stage: Stage::Unsupported("m.login.sso".into()),
        };
        let c = challenge(
            uia.authorize(UiaAction::Register, DUMMY, Some(auth), |_| async {
                panic!("must not verify an unexpected stage")
            })
            .await,
        );
        assert!(matches!(c.error, Some(ServiceError::InvalidParam(_))));
    }

    #[tokio::test]
    async fn a_session_cannot_be_spent_on_another_action() {
        let uia = UiaSessions::default();
        let alice: OwnedUserId = "@alice:x".try_into().unwrap();
        let first = UiaAction::DeleteDevices(alice.clone(), vec!["A".into()]);
        let c = challenge(
            uia.authorize(first, DUMMY, None, |_| async { Ok(()) })
                .await,
        );
        let other = UiaAction::DeleteDevices(alice, vec!["B".into()]);
        let (session, _) = uia.resume_or_start(Some(c.session.clone()), &other);
        assert_ne!(session, c.session);
    }
}
