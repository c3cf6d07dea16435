//! Accounts: registration, password login, access tokens and passwords.

use std::{net::IpAddr, sync::Arc, time::Duration};

use rand::{Rng, distributions::Uniform};
use ruma::{DeviceId, OwnedDeviceId, OwnedServerName, OwnedUserId, UserId};
use tracing::{debug, info};

use super::{
    ServiceError,
    e2ee::DeviceLists,
    password::{Password, PasswordHasher},
    rate_limit::RateLimiter,
    tokens::{self, AccessToken},
    uia::{
        AuthSubmission, AuthType, RegisteredAccount, RegistrationParams, Stage, UiaAction,
        UiaLimits, UiaSessions,
    },
};
use crate::{
    config::{Config, PasswordPolicy, RegistrationConfig, RegistrationMode},
    storage::{DeviceListChange, IssuedTokens, Millis, NewAccount, Session, Storage, StorageError},
};

/// Longest user id the spec allows, in bytes.
const MAX_USER_ID_BYTES: usize = 255;
/// Longest device id or device display name we store.
pub const MAX_DEVICE_FIELD_CHARS: usize = 255;

/// A request to create an account (`POST /register`).
#[derive(Debug, Default)]
pub struct Registration {
    /// Desired localpart; generated when absent.
    pub username: Option<String>,
    /// The password; required to finish.
    pub password: Option<Password>,
    /// Device id for the first session; generated when absent.
    pub device_id: Option<OwnedDeviceId>,
    /// Display name for the first device.
    pub initial_device_display_name: Option<String>,
    /// Create the account without logging in (`None`: as the first
    /// request of the session said, else no).
    pub inhibit_login: Option<bool>,
    /// Hand out a refresh token, with an access token that expires (`None`:
    /// as the first request of the session said, else no).
    pub refresh_token: Option<bool>,
    /// The UIA step.
    pub auth: Option<AuthSubmission>,
    /// A guest's access token: the guest account becomes a full one, with
    /// its user id, instead of a new account being created.
    pub guest_access_token: Option<AccessToken>,
}

/// How a registration asked to be logged in.
struct RegistrationLogin<'a> {
    is_inhibited: bool,
    display_name: Option<&'a str>,
    refresh_token: bool,
}

impl Registration {
    fn login(&self) -> RegistrationLogin<'_> {
        RegistrationLogin {
            is_inhibited: self.inhibit_login == Some(true),
            display_name: self.initial_device_display_name.as_deref(),
            refresh_token: self.refresh_token == Some(true),
        }
    }
}

/// A request to log in with a password (`POST /login`).
#[derive(Debug)]
pub struct PasswordLogin {
    /// Localpart or full user id.
    pub user: String,
    /// The password.
    pub password: Password,
    /// Reuse this device (its old token is revoked), or create it.
    pub device_id: Option<OwnedDeviceId>,
    /// Display name if a device is created.
    pub initial_device_display_name: Option<String>,
    /// Hand out a refresh token, with an access token that expires.
    pub refresh_token: bool,
}

/// A freshly opened session: what a client needs to act.
#[derive(Debug)]
pub struct NewSession {
    /// The account.
    pub user_id: OwnedUserId,
    /// The session's device.
    pub device_id: OwnedDeviceId,
    /// Its bearer token.
    pub access_token: AccessToken,
    /// The refresh token and the access token's lifetime, for clients
    /// that asked for one.
    pub refresh: Option<Refresh>,
}

/// A refresh token and how long the access token issued with it lives.
#[derive(Debug)]
pub struct Refresh {
    /// The refresh token (a bearer secret like the access token).
    pub refresh_token: AccessToken,
    /// The access token's lifetime.
    pub expires_in: Duration,
}

/// The outcome of a registration.
#[derive(Debug)]
pub enum Registered {
    /// Account created and logged in.
    LoggedIn(NewSession),
    /// Account created; `inhibit_login` asked for no session.
    AccountOnly(OwnedUserId),
}

/// Accounts and their credentials.
#[derive(Debug)]
pub struct Accounts {
    storage: Arc<dyn Storage>,
    server_name: OwnedServerName,
    registration: RegistrationConfig,
    password_policy: PasswordPolicy,
    uia: UiaSessions,
    hasher: PasswordHasher,
    login_limiter: RateLimiter,
    registration_limiter: RateLimiter,
    device_lists: Arc<DeviceLists>,
    refreshable_token_lifetime: Duration,
}

impl std::fmt::Debug for dyn Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Storage")
    }
}

impl Accounts {
    /// Builds the service from the configuration.
    ///
    /// # Errors
    /// `Internal` when the password workers cannot start.
    pub fn new(
        storage: Arc<dyn Storage>,
        server_name: OwnedServerName,
        config: &Config,
        device_lists: Arc<DeviceLists>,
    ) -> Result<Self, ServiceError> {
        let limits = config.rate_limits.enabled.then_some(&config.rate_limits);
        Ok(Self {
            storage,
            server_name,
            registration: config.registration.clone(),
            password_policy: config.password_policy.clone(),
            uia: UiaSessions::new(UiaLimits {
                total: config.limits.uia_sessions,
                per_user: config.limits.uia_sessions_per_user,
            }),
            hasher: PasswordHasher::start(config.limits.password_hash_queue)?,
            login_limiter: RateLimiter::new(limits.map(|l| l.login)),
            registration_limiter: RateLimiter::new(limits.map(|l| l.registration)),
            device_lists,
            refreshable_token_lifetime: Duration::from_millis(
                config.refreshable_access_token_lifetime_ms,
            ),
        })
    }

    /// This server's name.
    pub fn server_name(&self) -> &ruma::ServerName {
        &self.server_name
    }

    /// Runs one step of registration.
    ///
    /// # Errors
    /// [`ServiceError::AuthRequired`] until UIA completes; `Forbidden` when
    /// registration is closed; `UserInUse`, `InvalidUsername`, `WeakPassword`;
    /// `LimitExceeded` past the per-address rate.
    pub async fn register(
        &self,
        mut request: Registration,
        client: IpAddr,
    ) -> Result<Registered, ServiceError> {
        self.registration_limiter.check(&format!("ip:{client}"))?;
        // Later stages may carry only `auth`: the first request's
        // parameters fill in what they leave out.
        let session = request.auth.as_ref().and_then(|auth| auth.session.clone());
        if let Some(kept) = session
            .as_deref()
            .and_then(|id| self.uia.registration_params(id))
        {
            request.username = request.username.or(kept.username);
            request.password = request.password.or(kept.password);
            request.device_id = request.device_id.or(kept.device_id);
            request.initial_device_display_name = request
                .initial_device_display_name
                .or(kept.initial_device_display_name);
            request.inhibit_login = request.inhibit_login.or(kept.inhibit_login);
            request.refresh_token = request.refresh_token.or(kept.refresh_token);
        }
        let flow: &[AuthType] = match self.registration.mode {
            RegistrationMode::Closed => {
                return Err(ServiceError::Forbidden(
                    "registration is disabled".to_owned(),
                ));
            }
            RegistrationMode::Open => &[AuthType::Dummy],
            RegistrationMode::Token => &[AuthType::RegistrationToken],
        };
        if let Some(account) = session
            .as_deref()
            .and_then(|id| self.uia.registered_account(id))
        {
            return self.register_again(account, request).await;
        }
        // A generated username is chosen now and kept with the session, so
        // requests racing to complete it name one account, never two.
        if request.username.is_none() && request.guest_access_token.is_none() {
            request.username = Some(random_localpart());
        }
        // Fail fast on what the client can fix before asking it to authenticate.
        let user_id = match &request.username {
            Some(username) => {
                let user_id = self.user_id_for_new_localpart(username)?;
                if self.storage.account(&user_id).await?.is_some() {
                    return Err(ServiceError::UserInUse);
                }
                Some(user_id)
            }
            None => None,
        };
        if let Some(password) = &request.password {
            self.check_password_policy(password)?;
        }
        if let Some(device_id) = &request.device_id {
            check_device_id(device_id)?;
        }
        check_display_name(request.initial_device_display_name.as_deref())?;

        let outcome = self
            .uia
            .authorize(
                UiaAction::Register,
                &[flow],
                request.auth.take(),
                |stage| async move {
                    match stage {
                        Stage::RegistrationToken(token) => {
                            self.check_registration_token(token.expose())
                        }
                        _ => Ok(()),
                    }
                },
            )
            .await;
        if let Err(ServiceError::AuthRequired(challenge)) = &outcome {
            let params = RegistrationParams {
                username: request.username.clone(),
                password: request.password.clone(),
                device_id: request.device_id.clone(),
                initial_device_display_name: request.initial_device_display_name.clone(),
                inhibit_login: request.inhibit_login,
                refresh_token: request.refresh_token,
            };
            self.uia.remember_registration(&challenge.session, params);
        }
        outcome?;

        let password = request
            .password
            .take()
            .ok_or_else(|| ServiceError::MissingParam("password".to_owned()))?;
        let user_id = match (request.guest_access_token.take(), user_id) {
            (Some(guest), _) => self.upgrade_guest(&guest, &password).await?,
            (None, user_id) => {
                // Without a guest token a username was given or generated.
                let user_id =
                    user_id.ok_or_else(|| ServiceError::MissingParam("username".to_owned()))?;
                self.create_account(&user_id, &password, false, false)
                    .await?;
                user_id
            }
        };
        let registered = self
            .log_in_registered(user_id.clone(), request.device_id.clone(), &request.login())
            .await?;
        if let Some(session) = &session {
            let device_id = match &registered {
                Registered::LoggedIn(new) => Some(new.device_id.clone()),
                Registered::AccountOnly(_) => None,
            };
            let account = RegisteredAccount { user_id, device_id };
            self.uia.remember_registered(session, account);
        }
        Ok(registered)
    }

    /// Answers a retry of a completed registration as the first answer
    /// was given: the same account, logged in again on the same device
    /// (whose earlier token ends), so a client whose answer was lost can
    /// go on; never a second account.
    ///
    /// # Errors
    /// `Forbidden` when the retry names another username: the session was
    /// spent on a different request.
    async fn register_again(
        &self,
        account: RegisteredAccount,
        request: Registration,
    ) -> Result<Registered, ServiceError> {
        if let Some(username) = &request.username
            && self.user_id_for_new_localpart(username).ok().as_ref() != Some(&account.user_id)
        {
            return Err(ServiceError::Forbidden(
                "this session completed a registration for another username".to_owned(),
            ));
        }
        let device_id = account.device_id.or_else(|| request.device_id.clone());
        self.log_in_registered(account.user_id, device_id, &request.login())
            .await
    }

    /// Opens the new account's first session, unless `inhibit_login`.
    async fn log_in_registered(
        &self,
        user_id: OwnedUserId,
        device_id: Option<OwnedDeviceId>,
        login: &RegistrationLogin<'_>,
    ) -> Result<Registered, ServiceError> {
        if login.is_inhibited {
            return Ok(Registered::AccountOnly(user_id));
        }
        let session = self
            .open_session(
                user_id,
                device_id,
                login.display_name,
                login.refresh_token,
                false,
            )
            .await?;
        Ok(Registered::LoggedIn(session))
    }

    /// Registers a guest (`kind=guest`), when the configuration allows
    /// guests: an account with a generated id and no usable password,
    /// limited to the guest endpoints, logged in on a new device.
    ///
    /// # Errors
    /// `GuestAccessForbidden` when guests are not allowed; `LimitExceeded`
    /// past the per-address registration rate.
    pub async fn register_guest(
        &self,
        initial_device_display_name: Option<&str>,
        client: IpAddr,
    ) -> Result<NewSession, ServiceError> {
        if !self.registration.guests || self.registration.mode == RegistrationMode::Closed {
            return Err(ServiceError::GuestAccessForbidden);
        }
        self.registration_limiter.check(&format!("ip:{client}"))?;
        check_display_name(initial_device_display_name)?;
        let user_id = self.user_id_for_new_localpart(&random_localpart())?;
        // A random password nobody learns: guests cannot log in again.
        let unusable = Password::new(tokens::AccessToken::generate().expose().to_owned());
        self.create_account(&user_id, &unusable, false, true)
            .await?;
        info!(%user_id, "guest registered");
        self.open_session(user_id, None, initial_device_display_name, false, true)
            .await
    }

    /// Makes the guest whose token this is a full account with `password`;
    /// the guest's devices (and tokens) end.
    async fn upgrade_guest(
        &self,
        guest: &AccessToken,
        password: &Password,
    ) -> Result<OwnedUserId, ServiceError> {
        let not_a_guest = || ServiceError::Forbidden("not a guest access token".to_owned());
        let session = self.authenticate(guest).await.map_err(|_| not_a_guest())?;
        if !session.is_guest {
            return Err(not_a_guest());
        }
        let hash = self.hasher.hash(password).await?;
        if !self.storage.upgrade_guest(&session.user_id, &hash).await? {
            return Err(not_a_guest());
        }
        info!(user_id = %session.user_id, "guest upgraded to a full account");
        Ok(session.user_id)
    }

    /// Whether a localpart could be registered (`GET /register/available`).
    ///
    /// # Errors
    /// `UserInUse` or `InvalidUsername` when it could not; `LimitExceeded`.
    pub async fn check_username_available(
        &self,
        username: &str,
        client: IpAddr,
    ) -> Result<(), ServiceError> {
        self.registration_limiter.check(&format!("ip:{client}"))?;
        let user_id = self.user_id_for_new_localpart(username)?;
        if self.storage.account(&user_id).await?.is_some() {
            return Err(ServiceError::UserInUse);
        }
        Ok(())
    }

    /// Creates an account without UIA or registration mode: for the operator's CLI.
    ///
    /// # Errors
    /// `InvalidUsername`, `WeakPassword`, `UserInUse`.
    pub async fn create_account_as_operator(
        &self,
        username: &str,
        password: &Password,
        is_admin: bool,
    ) -> Result<OwnedUserId, ServiceError> {
        let user_id = self.user_id_for_new_localpart(username)?;
        self.check_password_policy(password)?;
        self.create_account(&user_id, password, is_admin, false)
            .await?;
        Ok(user_id)
    }

    /// Logs in with a password.
    ///
    /// # Errors
    /// `Forbidden` for an unknown user or a wrong password (the two are not
    /// told apart); `LimitExceeded` past the per-address or per-account rate;
    /// `InvalidParam` for the id of the user's dehydrated device.
    pub async fn login(
        &self,
        login: PasswordLogin,
        client: IpAddr,
    ) -> Result<NewSession, ServiceError> {
        self.login_limiter.check(&format!("ip:{client}"))?;
        if let Some(device_id) = &login.device_id {
            check_device_id(device_id)?;
        }
        check_display_name(login.initial_device_display_name.as_deref())?;
        let user_id = self
            .verify_password(&login.user, &login.password, &format!("ip:{client}"))
            .await?;
        let session = self
            .open_session(
                user_id,
                login.device_id,
                login.initial_device_display_name.as_deref(),
                login.refresh_token,
                false,
            )
            .await?;
        info!(user_id = %session.user_id, device_id = %session.device_id, "logged in");
        Ok(session)
    }

    /// Who an access token acts for.
    ///
    /// # Errors
    /// [`ServiceError::UnknownToken`] when it is not live.
    pub async fn authenticate(&self, token: &AccessToken) -> Result<Session, ServiceError> {
        let presented = token.hash();
        let stored = self.storage.session_for_token(&presented).await?;
        // The index finds the row by hash; the final check is constant-time so
        // that no comparison of secret material depends on where bytes differ.
        match stored {
            Some(stored) if tokens::hashes_match(&stored.hash, &presented) => {
                match stored.expires {
                    // The client can refresh it: a soft logout.
                    Some(expires) if Millis::now().0 >= expires.0 => {
                        Err(ServiceError::ExpiredToken)
                    }
                    _ => Ok(stored.session),
                }
            }
            _ => Err(ServiceError::UnknownToken),
        }
    }

    /// Ends one session: its device and token are deleted (`POST /logout`).
    ///
    /// # Errors
    /// Storage failures.
    pub async fn logout(&self, session: &Session) -> Result<(), ServiceError> {
        self.storage
            .delete_devices(&session.user_id, std::slice::from_ref(&session.device_id))
            .await?;
        self.devices_changed(&session.user_id).await
    }

    /// Ends every session of a user (`POST /logout/all`).
    ///
    /// # Errors
    /// Storage failures.
    pub async fn logout_all(&self, user_id: &UserId) -> Result<(), ServiceError> {
        self.storage.delete_devices_except(user_id, None).await?;
        self.devices_changed(user_id).await
    }

    /// Changes the caller's password after UIA; optionally logs out every other device.
    ///
    /// # Errors
    /// `AuthRequired` until the current password is given; `WeakPassword`.
    pub async fn change_password(
        &self,
        session: &Session,
        new_password: &Password,
        logout_devices: bool,
        auth: Option<AuthSubmission>,
    ) -> Result<(), ServiceError> {
        self.check_password_policy(new_password)?;
        self.confirm_identity(
            &session.user_id,
            UiaAction::ChangePassword(session.user_id.clone()),
            auth,
        )
        .await?;
        let hash = self.hasher.hash(new_password).await?;
        self.storage
            .set_password_hash(&session.user_id, &hash)
            .await?;
        if logout_devices {
            self.storage
                .delete_devices_except(&session.user_id, Some(&session.device_id))
                .await?;
            self.devices_changed(&session.user_id).await?;
        }
        info!(user_id = %session.user_id, logout_devices, "password changed");
        Ok(())
    }

    /// Deactivates the caller's account after UIA with its password: it
    /// can never log in again and its user id is never reused; its devices,
    /// tokens, device keys and key backups are deleted, and with `erase`
    /// its profile too. Leaving its rooms is the caller's next step
    /// ([`crate::service::room_ops::RoomOps::leave_every_room`]).
    ///
    /// # Errors
    /// `AuthRequired` until the password is given.
    pub async fn deactivate(
        &self,
        session: &Session,
        erase: bool,
        auth: Option<AuthSubmission>,
    ) -> Result<(), ServiceError> {
        let user_id = &session.user_id;
        self.confirm_identity(user_id, UiaAction::Deactivate(user_id.clone(), erase), auth)
            .await?;
        self.storage.deactivate_account(user_id, erase).await?;
        self.devices_changed(user_id).await?;
        info!(%user_id, erase, "account deactivated");
        Ok(())
    }

    /// Tells those who share a room with the user, on this server and
    /// others, that these devices of theirs were deleted.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn devices_deleted(
        &self,
        user_id: &UserId,
        device_ids: &[OwnedDeviceId],
    ) -> Result<(), ServiceError> {
        self.device_lists.devices_deleted(user_id, device_ids).await
    }

    /// Tells those who share a room with the user that their devices changed.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn devices_changed(&self, user_id: &UserId) -> Result<(), ServiceError> {
        self.device_lists
            .record(&[DeviceListChange::public(user_id)])
            .await
    }

    /// UIA with the account's password, for actions a stolen token alone must not do.
    ///
    /// # Errors
    /// `AuthRequired` until the password of `user_id` is given; `Forbidden`
    /// (403, not another challenge) for a password stage naming someone
    /// else, as the spec asks.
    pub async fn confirm_identity(
        &self,
        user_id: &UserId,
        action: UiaAction,
        auth: Option<AuthSubmission>,
    ) -> Result<(), ServiceError> {
        if let Some(AuthSubmission {
            stage: Stage::Password { user, .. },
            ..
        }) = &auth
            && self.resolve_local_user(user).as_deref() != Some(user_id)
        {
            return Err(ServiceError::Forbidden(
                "the password stage names another user".to_owned(),
            ));
        }
        self.uia
            .authorize(action, &[&[AuthType::Password]], auth, |stage| async move {
                let Stage::Password { user, password } = stage else {
                    return Err(ServiceError::Forbidden("a password is required".to_owned()));
                };
                let verified = self.verify_password(&user, &password, "uia").await?;
                if verified != user_id {
                    return Err(ServiceError::Forbidden(
                        "that is not your account".to_owned(),
                    ));
                }
                Ok(())
            })
            .await
    }

    /// Checks a password; `origin` names where the attempt comes from
    /// (`ip:ADDRESS` for a login, `uia` for a password stage).
    ///
    /// Only failures count against an account, so logging in often costs
    /// nothing. Once an account's failures pass the login limit, attempts
    /// from origins that failed against it lately are refused unchecked,
    /// while an origin with no recent failure is still checked: a flood of
    /// wrong passwords from elsewhere never locks the owner out, and a
    /// guesser that spreads over many addresses gets about one guess per
    /// address while the account is under attack.
    async fn verify_password(
        &self,
        user: &str,
        password: &Password,
        origin: &str,
    ) -> Result<OwnedUserId, ServiceError> {
        let user_id = self.resolve_local_user(user);
        let keys = user_id.as_ref().map(|user_id| {
            (
                format!("user:{user_id}"),
                format!("user:{user_id}:{origin}"),
            )
        });
        if let Some((account, account_origin)) = &keys
            && !self.login_limiter.has_room(account)
            && !self.login_limiter.is_untouched(account_origin)
        {
            return Err(ServiceError::LimitExceeded {
                retry_after: std::time::Duration::from_secs(60),
            });
        }
        let account = match &user_id {
            Some(user_id) => self.storage.account(user_id).await?,
            None => None,
        };
        let stored = account.as_ref().map(|a| a.password_hash.clone());
        if self.hasher.verify(password, stored).await?
            && let Some(account) = account
        {
            // Told only to whoever knows the password.
            if account.deactivated {
                return Err(ServiceError::UserDeactivated);
            }
            return Ok(account.user_id);
        }
        if let Some((account, account_origin)) = &keys {
            self.login_limiter.record(account);
            self.login_limiter.record(account_origin);
        }
        debug!("password check failed");
        Err(ServiceError::Forbidden(
            "invalid username or password".to_owned(),
        ))
    }

    async fn create_account(
        &self,
        user_id: &UserId,
        password: &Password,
        is_admin: bool,
        is_guest: bool,
    ) -> Result<(), ServiceError> {
        let password_hash = self.hasher.hash(password).await?;
        let account = NewAccount {
            user_id: user_id.to_owned(),
            password_hash,
            is_admin,
            is_guest,
            created: Millis::now(),
        };
        match self.storage.create_account(&account).await {
            Ok(()) => {
                info!(%user_id, is_admin, "account created");
                Ok(())
            }
            Err(StorageError::Conflict(_)) => Err(ServiceError::UserInUse),
            Err(e) => Err(e.into()),
        }
    }

    async fn open_session(
        &self,
        user_id: OwnedUserId,
        device_id: Option<OwnedDeviceId>,
        display_name: Option<&str>,
        refresh_token: bool,
        is_guest: bool,
    ) -> Result<NewSession, ServiceError> {
        // The dehydrated device holds no session: one opened on it would
        // let a sync take the messages waiting for the next device.
        if let Some(requested) = &device_id
            && self
                .storage
                .dehydrated_device(&user_id)
                .await?
                .is_some_and(|dehydrated| dehydrated.device_id == *requested)
        {
            return Err(ServiceError::InvalidParam(
                "this device id is the user's dehydrated device".to_owned(),
            ));
        }
        let session = Session {
            user_id,
            device_id: device_id.unwrap_or_else(random_device_id),
            is_guest,
        };
        let now = Millis::now();
        let (access_token, refresh, tokens) = self.new_tokens(refresh_token, now);
        self.storage
            .open_session(&session, display_name, &tokens, now)
            .await?;
        self.devices_changed(&session.user_id).await?;
        Ok(NewSession {
            user_id: session.user_id,
            device_id: session.device_id,
            access_token,
            refresh,
        })
    }

    /// Spends a refresh token for a new access token and a new refresh
    /// token (`POST /refresh`). The spent token keeps working until the new
    /// ones are first used, so a client whose answer was lost can retry.
    ///
    /// # Errors
    /// [`ServiceError::UnknownToken`] for an unknown or revoked refresh token.
    pub async fn refresh(&self, refresh_token: &AccessToken) -> Result<NewSession, ServiceError> {
        let now = Millis::now();
        let (access_token, refresh, tokens) = self.new_tokens(true, now);
        let session = self
            .storage
            .refresh_session(&refresh_token.hash(), &tokens, now)
            .await?
            .ok_or(ServiceError::UnknownToken)?;
        debug!(user_id = %session.user_id, device_id = %session.device_id, "access token refreshed");
        Ok(NewSession {
            user_id: session.user_id,
            device_id: session.device_id,
            access_token,
            refresh,
        })
    }

    /// A new access token, and with `refresh_token` a refresh token and the
    /// access token's expiry; with what to store of them.
    fn new_tokens(
        &self,
        refresh_token: bool,
        now: Millis,
    ) -> (AccessToken, Option<Refresh>, IssuedTokens) {
        let access_token = AccessToken::generate();
        let refresh = refresh_token.then(|| Refresh {
            refresh_token: AccessToken::generate(),
            expires_in: self.refreshable_token_lifetime,
        });
        let lifetime =
            i64::try_from(self.refreshable_token_lifetime.as_millis()).unwrap_or(i64::MAX);
        let tokens = IssuedTokens {
            access: access_token.hash(),
            access_expires: refresh
                .as_ref()
                .map(|_| Millis(now.0.saturating_add(lifetime))),
            refresh: refresh.as_ref().map(|r| r.refresh_token.hash()),
        };
        (access_token, refresh, tokens)
    }

    /// The full id for a localpart being registered, under the spec's rules
    /// for new user ids: `a-z 0-9 . _ = - / +`, at most 255 bytes in all.
    fn user_id_for_new_localpart(&self, username: &str) -> Result<OwnedUserId, ServiceError> {
        let localpart = username.to_ascii_lowercase();
        let allowed =
            |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._=-/+".contains(&b);
        if localpart.is_empty() || !localpart.bytes().all(allowed) {
            return Err(ServiceError::InvalidUsername(
                "user ids may contain only a-z, 0-9 and . _ = - / +".to_owned(),
            ));
        }
        let user_id = format!("@{localpart}:{}", self.server_name);
        if user_id.len() > MAX_USER_ID_BYTES {
            return Err(ServiceError::InvalidUsername(
                "the user id is too long".to_owned(),
            ));
        }
        UserId::parse(user_id).map_err(|e| ServiceError::InvalidUsername(e.to_string()))
    }

    /// The local user a login names, if it could be one of ours.
    fn resolve_local_user(&self, user: &str) -> Option<OwnedUserId> {
        let localpart = match user.strip_prefix('@') {
            Some(_) => {
                let user_id = UserId::parse(user).ok()?;
                if user_id.server_name() != self.server_name {
                    return None;
                }
                user_id.localpart().to_owned()
            }
            None => user.to_owned(),
        };
        UserId::parse(format!(
            "@{}:{}",
            localpart.to_ascii_lowercase(),
            self.server_name
        ))
        .ok()
    }

    fn check_password_policy(&self, password: &Password) -> Result<(), ServiceError> {
        let min = self.password_policy.min_length;
        if password.char_count() < min {
            return Err(ServiceError::WeakPassword(format!(
                "the password must be at least {min} characters long"
            )));
        }
        Ok(())
    }

    fn check_registration_token(&self, presented: &str) -> Result<(), ServiceError> {
        use subtle::ConstantTimeEq;
        // Every configured token is compared, so timing does not reveal which one nearly matched.
        let valid = self
            .registration
            .tokens
            .iter()
            .fold(subtle::Choice::from(0), |found, token| {
                found | token.expose().as_bytes().ct_eq(presented.as_bytes())
            });
        if bool::from(valid) {
            Ok(())
        } else {
            Err(ServiceError::Forbidden(
                "invalid registration token".to_owned(),
            ))
        }
    }

    /// Whether `token` is one of the configured registration tokens
    /// (`GET /register/m.login.registration_token/validity`).
    ///
    /// # Errors
    /// `Forbidden` when registration is not token-gated; `LimitExceeded`.
    pub fn check_registration_token_validity(
        &self,
        token: &str,
        client: IpAddr,
    ) -> Result<bool, ServiceError> {
        self.registration_limiter.check(&format!("ip:{client}"))?;
        if self.registration.mode != RegistrationMode::Token {
            return Err(ServiceError::Forbidden(
                "registration tokens are not in use".to_owned(),
            ));
        }
        Ok(self.check_registration_token(token).is_ok())
    }
}

/// Rejects device ids that are empty, too long or hold control characters.
///
/// # Errors
/// [`ServiceError::InvalidParam`].
pub fn check_device_id(device_id: &DeviceId) -> Result<(), ServiceError> {
    let id = device_id.as_str();
    if id.is_empty()
        || id.chars().count() > MAX_DEVICE_FIELD_CHARS
        || id.chars().any(char::is_control)
    {
        return Err(ServiceError::InvalidParam(format!(
            "device ids must be 1 to {MAX_DEVICE_FIELD_CHARS} printable characters"
        )));
    }
    Ok(())
}

/// Rejects device display names over the length limit.
///
/// # Errors
/// [`ServiceError::InvalidParam`].
pub fn check_display_name(name: Option<&str>) -> Result<(), ServiceError> {
    if name.is_some_and(|name| name.chars().count() > MAX_DEVICE_FIELD_CHARS) {
        return Err(ServiceError::InvalidParam(format!(
            "device display names are limited to {MAX_DEVICE_FIELD_CHARS} characters"
        )));
    }
    Ok(())
}

fn random_device_id() -> OwnedDeviceId {
    let letters = Uniform::from(b'A'..=b'Z');
    let id: String = rand::thread_rng()
        .sample_iter(letters)
        .take(10)
        .map(char::from)
        .collect();
    id.into()
}

fn random_localpart() -> String {
    let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let pick = Uniform::from(0..alphabet.len());
    rand::thread_rng()
        .sample_iter(pick)
        .take(12)
        .map(|i| char::from(alphabet[i]))
        .collect()
}
