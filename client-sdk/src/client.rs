//! [`Client`]: one account on one homeserver, its store, and the calls
//! that log in and out. Sync lives in [`crate::sync`], rooms in
//! [`crate::room`].

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
};

use reqwest::{Method, Url};
use ruma::{OwnedDeviceId, OwnedRoomId, OwnedUserId};
use serde::Deserialize;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::{
    discovery,
    encryption::{MACHINE_NAMESPACE, MachineSlot, PICKLE_KEY_NAMESPACE},
    error::{Error, Result},
    http::{Http, Request, RetryPolicy},
    room::{ROOMS_NAMESPACE, RoomInfo, outbox::OUTBOX_NAMESPACE},
    session::{AccessToken, Session, SessionMeta},
    store::{Changes, MemoryStore, SecretBox, Store, StoreError},
    sync::SYNC_NAMESPACE,
};

/// A Matrix client for one account: log in, sync, rooms, messages.
///
/// Cheap to clone; clones share the connection pool, the store and the
/// room list. See the [crate docs](crate) for an example.
#[derive(Debug, Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) http: Http,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) secrets: SecretBox,
    pub(crate) session: RwLock<Option<SessionMeta>>,
    pub(crate) rooms: RwLock<BTreeMap<OwnedRoomId, RoomInfo>>,
    /// Held over each read-modify-save-publish of the room list, so that a
    /// sync and a room creation cannot each save a copy missing the other's
    /// knowledge.
    pub(crate) room_list_lock: tokio::sync::Mutex<()>,
    /// Held by whichever task is syncing, so two loops never race on the token.
    pub(crate) sync_lock: tokio::sync::Mutex<()>,
    pub(crate) request_retry: RetryPolicy,
    /// The end-to-end encryption state, loaded on first use.
    pub(crate) machine: MachineSlot,
}

/// Builds a [`Client`]; see [`Client::builder`].
#[derive(Default)]
pub struct ClientBuilder {
    homeserver: Option<Homeserver>,
    store: Option<Arc<dyn Store>>,
    passphrase: Option<Zeroizing<String>>,
    request_retry: Option<RetryPolicy>,
    http_client: Option<reqwest::Client>,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("homeserver", &self.homeserver)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
enum Homeserver {
    Url(String),
    Discover(String),
}

impl ClientBuilder {
    /// Talk to the homeserver at this URL (`https://matrix.example.org`).
    pub fn homeserver_url(mut self, url: impl Into<String>) -> Self {
        self.homeserver = Some(Homeserver::Url(url.into()));
        self
    }

    /// Find the homeserver from a server name (`example.org`) through
    /// [`/.well-known/matrix/client`](https://spec.matrix.org/v1.16/client-server-api/#well-known-uris).
    /// A full `http://` or `https://` URL is looked up as given (tests,
    /// local servers).
    pub fn server_name(mut self, server_name: impl Into<String>) -> Self {
        self.homeserver = Some(Homeserver::Discover(server_name.into()));
        self
    }

    /// Keep the session, sync position and rooms in `store` (default: a
    /// fresh [`MemoryStore`], forgotten when the client is dropped).
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// The passphrase the store's secrets (the access token, later the
    /// crypto keys) are encrypted under. Required.
    pub fn passphrase(mut self, passphrase: impl Into<String>) -> Self {
        self.passphrase = Some(Zeroizing::new(passphrase.into()));
        self
    }

    /// How requests other than sync are retried (default
    /// [`RetryPolicy::default`]). Sends keep their transaction id across
    /// retries, so a retry never duplicates a message.
    pub fn request_retry(mut self, policy: RetryPolicy) -> Self {
        self.request_retry = Some(policy);
        self
    }

    /// Use this reqwest client (proxies, extra root certificates).
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http_client = Some(client);
        self
    }

    /// Opens the store, unlocks its secrets, restores a saved session if
    /// there is one, and resolves the homeserver.
    ///
    /// # Errors
    ///
    /// - [`Error::InvalidInput`] without a passphrase, without a
    ///   homeserver when the store holds no session, or with a homeserver
    ///   other than the saved session's (its token is not sent elsewhere);
    /// - [`Error::Store`] with [`StoreError::WrongPassphrase`] if the
    ///   passphrase does not open this store (nothing is changed);
    /// - [`Error::Discovery`] if discovery fails.
    pub async fn build(self) -> Result<Client> {
        let passphrase = self
            .passphrase
            .ok_or_else(|| Error::InvalidInput("a store passphrase is required".to_owned()))?;
        let store = self
            .store
            .unwrap_or_else(|| Arc::new(MemoryStore::new()) as Arc<dyn Store>);
        let secrets = SecretBox::unlock(store.as_ref(), passphrase.as_bytes()).await?;
        let session = Session::load(store.as_ref(), &secrets).await?;
        let http_client = match self.http_client {
            Some(client) => client,
            None => reqwest::Client::builder().build().map_err(Error::Network)?,
        };
        let homeserver = match (self.homeserver, &session) {
            (Some(Homeserver::Url(url)), _) => discovery::parse_homeserver(&url)?,
            (Some(Homeserver::Discover(name)), _) => {
                discovery::discover(&http_client, &name).await?
            }
            (None, Some(session)) => session.meta.homeserver.clone(),
            (None, None) => {
                return Err(Error::InvalidInput(
                    "no homeserver given and no saved session".to_owned(),
                ));
            }
        };
        // The saved token belongs to one homeserver; never hand it to another.
        if let Some(session) = &session
            && session.meta.homeserver != homeserver
        {
            return Err(Error::InvalidInput(format!(
                "the store holds a session on {}, not {homeserver}",
                session.meta.homeserver
            )));
        }
        let rooms = load_rooms(store.as_ref()).await?;
        let http = Http::new(http_client, homeserver);
        if let Some(session) = &session {
            http.set_token(Some(session.token.clone()));
        }
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                store,
                secrets,
                session: RwLock::new(session.map(|session| session.meta)),
                rooms: RwLock::new(rooms),
                sync_lock: tokio::sync::Mutex::new(()),
                room_list_lock: tokio::sync::Mutex::new(()),
                request_retry: self.request_retry.unwrap_or_default(),
                machine: MachineSlot::default(),
            }),
        })
    }
}

/// How to register an account; see [`Client::register`].
#[derive(Debug, Clone, Default)]
pub struct Registration {
    /// The localpart to ask for (`None` lets the server choose).
    pub username: Option<String>,
    /// The password.
    pub password: String,
    /// A token for servers that require `m.login.registration_token`.
    pub registration_token: Option<String>,
    /// The display name of the new device.
    pub device_display_name: Option<String>,
}

/// The answer to [`Client::whoami`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct WhoAmI {
    /// The account the token belongs to.
    pub user_id: OwnedUserId,
    /// The device, if the token is a device's.
    pub device_id: Option<OwnedDeviceId>,
}

#[derive(Deserialize)]
struct LoginResponse {
    user_id: OwnedUserId,
    access_token: String,
    device_id: OwnedDeviceId,
}

impl Client {
    /// Starts building a client.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// The homeserver this client talks to.
    pub fn homeserver(&self) -> &Url {
        self.inner.http.homeserver()
    }

    /// The store this client keeps its state in (applications may keep
    /// their own records there, in namespaces of their own).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The store's [`SecretBox`], for sealing further secrets (the crypto
    /// layer's pickles) under the same passphrase.
    pub fn secrets(&self) -> &SecretBox {
        &self.inner.secrets
    }

    /// The current session, if logged in (or restored from the store).
    pub fn session(&self) -> Option<SessionMeta> {
        self.inner
            .session
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Our user id.
    ///
    /// # Errors
    ///
    /// [`Error::NotLoggedIn`] without a session.
    pub fn user_id(&self) -> Result<OwnedUserId> {
        self.session()
            .map(|session| session.user_id)
            .ok_or(Error::NotLoggedIn)
    }

    /// Logs in with a user id or localpart and a password
    /// ([`m.login.password`](https://spec.matrix.org/v1.16/client-server-api/#password-based)),
    /// and saves the session.
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyLoggedIn`] if the client has a session; a
    /// [`Error::Matrix`] with [`ErrorKind::Forbidden`](crate::ErrorKind::Forbidden)
    /// for a wrong password.
    pub async fn login_password(
        &self,
        user: &str,
        password: &str,
        device_display_name: Option<&str>,
    ) -> Result<SessionMeta> {
        self.ensure_logged_out()?;
        let mut body = json!({
            "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": user },
            "password": password,
        });
        if let Some(name) = device_display_name {
            body["initial_device_display_name"] = json!(name);
        }
        let response: LoginResponse = self
            .inner
            .http
            .send(&Request::v3(Method::POST, &["login"]).json(body))
            .await?;
        self.start_session(response).await
    }

    /// Registers an account, completing the server's user-interactive
    /// authentication with `m.login.dummy` and, if `registration.registration_token`
    /// is set, `m.login.registration_token`; then saves the session.
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedAuthFlows`] if every flow the server offers needs
    /// a stage this SDK cannot complete; Matrix errors such as
    /// [`ErrorKind::UserInUse`](crate::ErrorKind::UserInUse).
    pub async fn register(&self, registration: Registration) -> Result<SessionMeta> {
        self.ensure_logged_out()?;
        let mut body = json!({ "password": registration.password });
        if let Some(username) = &registration.username {
            body["username"] = json!(username);
        }
        if let Some(name) = &registration.device_display_name {
            body["initial_device_display_name"] = json!(name);
        }
        let request = |body: Value| Request::v3(Method::POST, &["register"]).json(body);
        let (mut status, mut answer) = self.inner.http.send_raw(&request(body.clone())).await?;
        // Each 401 names the flows and what is done; complete the next stage
        // of a flow we can finish until the server answers 200.
        let mut stages_sent = 0;
        while status == reqwest::StatusCode::UNAUTHORIZED {
            // A 401 that carries an errcode after a stage says the stage
            // failed (a wrong token): report it rather than repeat it.
            if stages_sent > 0 && answer.get("errcode").is_some() {
                return Err(crate::http::error_from_answer(status, &answer, None));
            }
            let uia: UiaState = crate::http::parse(status, answer)?;
            let stage = uia.next_stage(registration.registration_token.is_some())?;
            // A server that keeps asking is not going to finish.
            stages_sent += 1;
            if stages_sent > 8 {
                return Err(Error::UnexpectedResponse {
                    status: 401,
                    reason: "registration did not finish after 8 stages".to_owned(),
                });
            }
            let mut auth = json!({ "type": stage, "session": uia.session });
            if stage == "m.login.registration_token" {
                auth["token"] = json!(registration.registration_token);
            }
            body["auth"] = auth;
            (status, answer) = self.inner.http.send_raw(&request(body.clone())).await?;
        }
        let response: LoginResponse = crate::http::parse(status, answer)?;
        self.start_session(response).await
    }

    /// Asks the server who the access token belongs to
    /// ([`/account/whoami`](https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3accountwhoami)).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::UnknownToken`](crate::ErrorKind::UnknownToken) if the
    /// token was logged out elsewhere.
    pub async fn whoami(&self) -> Result<WhoAmI> {
        self.inner
            .http
            .send(&Request::v3(Method::GET, &["account", "whoami"]))
            .await
    }

    /// Logs out: the server invalidates the token, and the store forgets
    /// the session, the sync position, the rooms and unsent events, in one
    /// transaction. A token the server no longer knows counts as logged out.
    ///
    /// # Errors
    ///
    /// [`Error::NotLoggedIn`] without a session; network and store errors
    /// (the local session is kept then, so logging out can be retried).
    pub async fn logout(&self) -> Result<()> {
        if self.session().is_none() {
            return Err(Error::NotLoggedIn);
        }
        let result: Result<Value> = self
            .inner
            .http
            .send(&Request::v3(Method::POST, &["logout"]).json(json!({})))
            .await;
        match result {
            Ok(_) => {}
            Err(error) if error.kind() == Some(&crate::ErrorKind::UnknownToken) => {}
            Err(error) => return Err(error),
        }
        let mut changes = Changes::new();
        Session::forget(&mut changes);
        // The device is gone; so are its keys.
        for namespace in [
            SYNC_NAMESPACE,
            ROOMS_NAMESPACE,
            OUTBOX_NAMESPACE,
            MACHINE_NAMESPACE,
            PICKLE_KEY_NAMESPACE,
        ] {
            for (key, _) in self.inner.store.list(namespace).await? {
                changes.delete(namespace, &key);
            }
        }
        self.inner.store.commit(changes).await?;
        self.inner.http.set_token(None);
        *self
            .inner
            .session
            .write()
            .unwrap_or_else(|e| e.into_inner()) = None;
        self.inner
            .rooms
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        *self.inner.machine.lock().await = None;
        Ok(())
    }

    fn ensure_logged_out(&self) -> Result<()> {
        match self.session() {
            Some(session) => Err(Error::AlreadyLoggedIn(session.user_id)),
            None => Ok(()),
        }
    }

    async fn start_session(&self, response: LoginResponse) -> Result<SessionMeta> {
        let session = Session {
            meta: SessionMeta {
                user_id: response.user_id,
                device_id: response.device_id,
                homeserver: self.homeserver().clone(),
            },
            token: AccessToken::new(response.access_token),
        };
        let mut changes = Changes::new();
        session.save(&self.inner.secrets, &mut changes)?;
        self.inner.store.commit(changes).await?;
        self.inner.http.set_token(Some(session.token));
        *self
            .inner
            .session
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(session.meta.clone());
        tracing::info!(user_id = %session.meta.user_id, device_id = %session.meta.device_id, "logged in");
        // A new device: create its Olm account and upload its keys.
        self.start_encryption().await?;
        Ok(session.meta)
    }
}

/// A 401 answer of user-interactive authentication.
#[derive(Deserialize)]
struct UiaState {
    #[serde(default)]
    session: Option<String>,
    #[serde(default)]
    flows: Vec<UiaFlow>,
    #[serde(default)]
    completed: Vec<String>,
}

#[derive(Deserialize)]
struct UiaFlow {
    #[serde(default)]
    stages: Vec<String>,
}

impl UiaState {
    /// The next stage of the first flow whose every stage we can complete.
    fn next_stage(&self, has_token: bool) -> Result<&'static str> {
        let can_do = |stage: &str| match stage {
            "m.login.dummy" => Some("m.login.dummy"),
            "m.login.registration_token" if has_token => Some("m.login.registration_token"),
            _ => None,
        };
        self.flows
            .iter()
            .filter(|flow| flow.stages.iter().all(|stage| can_do(stage).is_some()))
            .filter(|flow| flow.stages.starts_with(&self.completed))
            .find_map(|flow| flow.stages.get(self.completed.len()))
            .and_then(|stage| can_do(stage))
            .ok_or_else(|| Error::UnsupportedAuthFlows {
                flows: self.flows.iter().map(|flow| flow.stages.clone()).collect(),
            })
    }
}

async fn load_rooms(store: &dyn Store) -> Result<BTreeMap<OwnedRoomId, RoomInfo>, StoreError> {
    store
        .list(ROOMS_NAMESPACE)
        .await?
        .into_iter()
        .map(|(key, bytes)| {
            let info: RoomInfo = serde_json::from_slice(&bytes).map_err(|error| {
                StoreError::Encoding(format!("{ROOMS_NAMESPACE}/{key}: {error}"))
            })?;
            Ok((info.room_id.clone(), info))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::UiaState;
    use crate::Error;

    fn uia(value: serde_json::Value) -> UiaState {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn uia_picks_a_flow_we_can_finish() {
        let state = uia(json!({"session": "s", "flows": [
            {"stages": ["m.login.recaptcha"]},
            {"stages": ["m.login.registration_token", "m.login.dummy"]},
            {"stages": ["m.login.dummy"]}
        ]}));
        assert_eq!(state.next_stage(false).unwrap(), "m.login.dummy");
        assert_eq!(
            state.next_stage(true).unwrap(),
            "m.login.registration_token"
        );
        let later = uia(
            json!({"session": "s", "completed": ["m.login.registration_token"], "flows": [
                {"stages": ["m.login.registration_token", "m.login.dummy"]}
            ]}),
        );
        assert_eq!(later.next_stage(true).unwrap(), "m.login.dummy");
        let impossible = uia(json!({"flows": [{"stages": ["m.login.email.identity"]}]}));
        assert!(matches!(
            impossible.next_stage(true),
            Err(Error::UnsupportedAuthFlows { flows }) if flows == vec![vec!["m.login.email.identity".to_owned()]]
        ));
    }
}
