//! User-interactive authentication (UIA), the spec's multi-stage auth for
//! sensitive endpoints: <https://spec.matrix.org/v1.16/client-server-api/#user-interactive-authentication-api>.
//!
//! Sessions live in memory for [`SESSION_LIFETIME`]; each is bound to the
//! action it was started for, so stages completed to delete one device cannot
//! be spent on another action. They are few and small: a session keeps a
//! digest of its action (not the action, whose device list a client sizes),
//! each account may hold [`UiaLimits::per_user`] of them, registration (no
//! account yet) half of [`UiaLimits::total`], and everyone the total.

use std::{
    collections::HashMap,
    future::Future,
    sync::Mutex,
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::RngCore;
use ruma::{OwnedDeviceId, OwnedUserId, UserId};
use sha2::{Digest, Sha256};

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
    /// Deactivating this user's account (erasing it when `true`).
    Deactivate(OwnedUserId, bool),
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

impl UiaAction {
    /// The account the action is for; `None` for registration.
    fn user_id(&self) -> Option<&UserId> {
        match self {
            Self::Register => None,
            Self::DeleteDevices(user_id, _)
            | Self::ChangePassword(user_id)
            | Self::UploadCrossSigningKeys(user_id)
            | Self::Deactivate(user_id, _) => Some(user_id),
        }
    }

    /// A fixed-size fingerprint of the action: what a session keeps.
    fn digest(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        match self {
            Self::Register => hasher.update(b"register"),
            Self::DeleteDevices(user_id, devices) => {
                hasher.update(b"delete_devices\0");
                hasher.update(user_id.as_bytes());
                for device in devices {
                    hasher.update(b"\0");
                    hasher.update(device.as_bytes());
                }
            }
            Self::ChangePassword(user_id) => {
                hasher.update(b"change_password\0");
                hasher.update(user_id.as_bytes());
            }
            Self::UploadCrossSigningKeys(user_id) => {
                hasher.update(b"cross_signing\0");
                hasher.update(user_id.as_bytes());
            }
            Self::Deactivate(user_id, erase) => {
                hasher.update(b"deactivate\0");
                hasher.update(user_id.as_bytes());
                hasher.update([u8::from(*erase)]);
            }
        }
        hasher.finalize().into()
    }
}

/// How many sessions are kept.
#[derive(Debug, Clone, Copy)]
pub struct UiaLimits {
    /// For everyone; registration may take half.
    pub total: usize,
    /// For one account.
    pub per_user: usize,
}

/// The server's UIA sessions.
#[derive(Debug)]
pub struct UiaSessions {
    sessions: Mutex<HashMap<String, SessionState>>,
    limits: UiaLimits,
}

#[derive(Debug)]
struct SessionState {
    action: [u8; 32],
    user_id: Option<OwnedUserId>,
    completed: Vec<AuthType>,
    started: Instant,
    /// For a registration: what its first request asked for.
    registration: Option<RegistrationParams>,
    /// For a completed registration: the account it created.
    registered: Option<RegisteredAccount>,
}

/// The account a completed registration session created, so that a retry
/// of the same request gets the same answer instead of a second account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredAccount {
    /// The new account.
    pub user_id: OwnedUserId,
    /// The device its first session opened (`None` with `inhibit_login`).
    pub device_id: Option<OwnedDeviceId>,
}

/// What a registration's first request asked for, kept with its session:
/// clients may send the parameters only once, and the later stages carry
/// only `auth`.
#[derive(Debug, Clone, Default)]
pub struct RegistrationParams {
    /// The desired localpart.
    pub username: Option<String>,
    /// The password (wiped when the session ends).
    pub password: Option<Password>,
    /// The device id for the first session.
    pub device_id: Option<OwnedDeviceId>,
    /// The first device's display name.
    pub initial_device_display_name: Option<String>,
    /// Whether to open no session.
    pub inhibit_login: Option<bool>,
    /// Whether to hand out a refresh token.
    pub refresh_token: Option<bool>,
}

impl UiaSessions {
    /// No sessions yet, at most `limits` of them.
    pub fn new(limits: UiaLimits) -> Self {
        Self {
            sessions: Mutex::new(HashMap::new()),
            limits,
        }
    }

    /// Runs one UIA step for `action`.
    ///
    /// `verify` checks the submitted stage's credentials; its
    /// [`ServiceError::Forbidden`] answers become the challenge's `error`.
    ///
    /// # Errors
    /// [`ServiceError::AuthRequired`] until one of `flows` is complete;
    /// `LimitExceeded` when a new session would pass a cap; what `verify`
    /// failed with when it is not a refusal.
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
        let quoted = session.clone();
        let (session, completed) = self.resume_or_start(session, &action, Instant::now())?;
        if flows.contains(&completed.as_slice()) {
            // "Completed stages cannot be retried by clients": a retry of
            // a completed (registration) session is answered as the call.
            return Ok(());
        }
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
            let mut sessions = self.lock();
            // A registration session the client knows is kept until it
            // expires: the spec has a retried completed request answered
            // with the call's result, and the session remembers which
            // account that is (`remember_registered`).
            if action == UiaAction::Register && quoted.as_ref() == Some(&session) {
                if let Some(state) = sessions.get_mut(&session) {
                    state.completed = completed;
                }
            } else {
                sessions.remove(&session);
            }
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
        now: Instant,
    ) -> Result<(String, Vec<AuthType>), ServiceError> {
        let digest = action.digest();
        let mut sessions = self.lock();
        sessions.retain(|_, state| now.duration_since(state.started) < SESSION_LIFETIME);
        if let Some(id) = session
            && let Some(state) = sessions.get(&id)
            && state.action == digest
        {
            return Ok((id, state.completed.clone()));
        }
        let user_id = action.user_id();
        // Sessions of finished registrations are kept only to answer
        // retries; they hold no place (`remember_registered` bounds them).
        let open = |state: &&SessionState| state.registered.is_none();
        let alike = |state: &&SessionState| state.user_id.as_deref() == user_id;
        let cap = match user_id {
            Some(_) => self.limits.per_user,
            None => (self.limits.total / 2).max(1),
        };
        let alike_full = sessions.values().filter(open).filter(alike).count() >= cap;
        if alike_full || sessions.values().filter(open).count() >= self.limits.total {
            // The oldest session of the full set expires first; a place
            // frees then at the latest.
            let oldest = sessions
                .values()
                .filter(open)
                .filter(|state| !alike_full || alike(state))
                .map(|state| state.started)
                .min();
            let retry_after = oldest.map_or(SESSION_LIFETIME, |started| {
                SESSION_LIFETIME.saturating_sub(now.duration_since(started))
            });
            return Err(ServiceError::LimitExceeded { retry_after });
        }
        let mut bytes = [0u8; 18];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let id = URL_SAFE_NO_PAD.encode(bytes);
        sessions.insert(
            id.clone(),
            SessionState {
                action: digest,
                user_id: user_id.map(ToOwned::to_owned),
                completed: Vec::new(),
                started: now,
                registration: None,
                registered: None,
            },
        );
        Ok((id, Vec::new()))
    }

    /// Keeps a registration's parameters with its session, unless it
    /// already keeps some: the first request's stand.
    pub fn remember_registration(&self, session: &str, params: RegistrationParams) {
        let register = UiaAction::Register.digest();
        if let Some(state) = self.lock().get_mut(session)
            && state.action == register
            && state.registration.is_none()
        {
            state.registration = Some(params);
        }
    }

    /// Records the account a completed registration session created; the
    /// password it kept is forgotten, as no later request needs it.
    /// At most [`UiaLimits::total`] of them are kept: past it, the one
    /// started first is forgotten (its retries then start over, which
    /// costs a client only a lost answer it asked for twice).
    pub fn remember_registered(&self, session: &str, account: RegisteredAccount) {
        let mut sessions = self.lock();
        if let Some(state) = sessions.get_mut(session) {
            if let Some(params) = &mut state.registration {
                params.password = None;
            }
            state.registered = Some(account);
        }
        let finished = sessions
            .values()
            .filter(|state| state.registered.is_some())
            .count();
        if finished > self.limits.total {
            let oldest = sessions
                .iter()
                .filter(|(_, state)| state.registered.is_some())
                .min_by_key(|(_, state)| state.started)
                .map(|(id, _)| id.clone());
            if let Some(oldest) = oldest {
                sessions.remove(&oldest);
            }
        }
    }

    /// The account a completed registration session already created.
    pub fn registered_account(&self, session: &str) -> Option<RegisteredAccount> {
        let register = UiaAction::Register.digest();
        self.lock()
            .get(session)
            .filter(|state| state.action == register)
            .and_then(|state| state.registered.clone())
    }

    /// The parameters a registration session keeps.
    pub fn registration_params(&self, session: &str) -> Option<RegistrationParams> {
        let register = UiaAction::Register.digest();
        self.lock()
            .get(session)
            .filter(|state| state.action == register)
            .and_then(|state| state.registration.clone())
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
    const LIMITS: UiaLimits = UiaLimits {
        total: 100,
        per_user: 5,
    };

    fn challenge(result: Result<(), ServiceError>) -> UiaChallenge {
        match result {
            Err(ServiceError::AuthRequired(challenge)) => *challenge,
            other => panic!("expected a challenge, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn no_auth_gets_flows_and_a_session() {
        let uia = UiaSessions::new(LIMITS);
        let c = challenge(
            uia.authorize(UiaAction::Register, DUMMY, None, |_| async { Ok(()) })
                .await,
        );
        assert_eq!(c.flows, vec![vec![AuthType::Dummy]]);
        assert!(c.completed.is_empty() && c.error.is_none() && c.session.len() >= 24);
    }

    #[tokio::test]
    async fn completing_the_flow_succeeds_and_ends_the_session() {
        let uia = UiaSessions::new(LIMITS);
        let action = || UiaAction::ChangePassword("@a:x".try_into().unwrap());
        let c = challenge(
            uia.authorize(action(), DUMMY, None, |_| async { Ok(()) })
                .await,
        );
        let auth = || AuthSubmission {
            session: Some(c.session.clone()),
            stage: Stage::Dummy,
        };
        uia.authorize(action(), DUMMY, Some(auth()), |_| async { Ok(()) })
            .await
            .unwrap();
        assert!(uia.lock().is_empty());
        // The spent session buys nothing more: a retry starts over.
        let (again, completed) = uia
            .resume_or_start(Some(c.session.clone()), &action(), Instant::now())
            .unwrap();
        assert_ne!(again, c.session);
        assert!(completed.is_empty());
    }

    #[tokio::test]
    async fn a_completed_registration_answers_its_retries() {
        let uia = UiaSessions::new(LIMITS);
        let c = challenge(
            uia.authorize(UiaAction::Register, DUMMY, None, |_| async { Ok(()) })
                .await,
        );
        let auth = || AuthSubmission {
            session: Some(c.session.clone()),
            stage: Stage::Dummy,
        };
        uia.authorize(UiaAction::Register, DUMMY, Some(auth()), |_| async {
            Ok(())
        })
        .await
        .unwrap();
        let account = RegisteredAccount {
            user_id: "@a:x".try_into().unwrap(),
            device_id: None,
        };
        uia.remember_registered(&c.session, account.clone());
        uia.authorize(UiaAction::Register, DUMMY, Some(auth()), |_| async {
            panic!("a completed stage is not verified again")
        })
        .await
        .unwrap();
        assert_eq!(uia.registered_account(&c.session), Some(account));

        // A registration done in one request quoted no session: there is
        // nothing a retry could name, so nothing is kept.
        let one_shot = AuthSubmission {
            session: None,
            stage: Stage::Dummy,
        };
        uia.authorize(UiaAction::Register, DUMMY, Some(one_shot), |_| async {
            Ok(())
        })
        .await
        .unwrap();
        assert_eq!(uia.lock().len(), 1);
    }

    #[test]
    fn finished_registrations_hold_no_place_and_are_bounded() {
        let uia = UiaSessions::new(UiaLimits {
            total: 2,
            per_user: 1,
        });
        let start = Instant::now();
        for n in 0..3u64 {
            let (id, _) = uia
                .resume_or_start(None, &UiaAction::Register, start + Duration::from_secs(n))
                .unwrap();
            let account = RegisteredAccount {
                user_id: format!("@u{n}:x").try_into().unwrap(),
                device_id: None,
            };
            uia.remember_registered(&id, account);
        }
        // The first is forgotten; the two others stay, and take no place.
        let kept: Vec<String> = uia
            .lock()
            .values()
            .filter_map(|state| state.registered.as_ref())
            .map(|account| account.user_id.to_string())
            .collect();
        assert_eq!(kept.len(), 2);
        assert!(!kept.contains(&"@u0:x".to_owned()));
        uia.resume_or_start(None, &UiaAction::Register, start)
            .unwrap();
    }

    #[tokio::test]
    async fn refused_stage_keeps_the_session_and_reports_why() {
        let uia = UiaSessions::new(LIMITS);
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
        let uia = UiaSessions::new(LIMITS);
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
        let uia = UiaSessions::new(LIMITS);
        let alice: OwnedUserId = "@alice:x".try_into().unwrap();
        let first = UiaAction::DeleteDevices(alice.clone(), vec!["A".into()]);
        let c = challenge(
            uia.authorize(first, DUMMY, None, |_| async { Ok(()) })
                .await,
        );
        let other = UiaAction::DeleteDevices(alice, vec!["B".into()]);
        let (session, _) = uia
            .resume_or_start(Some(c.session.clone()), &other, Instant::now())
            .unwrap();
        assert_ne!(session, c.session);
    }

    #[test]
    fn capped_sessions_free_up_as_they_expire() {
        let uia = UiaSessions::new(UiaLimits {
            total: 4,
            per_user: 2,
        });
        let alice: OwnedUserId = "@alice:x".try_into().unwrap();
        let action = UiaAction::ChangePassword(alice);
        let start = Instant::now();
        uia.resume_or_start(None, &action, start).unwrap();
        let later = start + Duration::from_secs(60);
        uia.resume_or_start(None, &action, later).unwrap();
        let Err(ServiceError::LimitExceeded { retry_after }) =
            uia.resume_or_start(None, &action, later)
        else {
            panic!("a third session for one user must be refused");
        };
        assert_eq!(retry_after, SESSION_LIFETIME - Duration::from_secs(60));
        // Once the first has expired there is room again, and it is gone.
        uia.resume_or_start(None, &action, start + SESSION_LIFETIME)
            .unwrap();
        assert_eq!(uia.lock().len(), 2);
    }
}
