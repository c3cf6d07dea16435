//! The accounts, devices and rooms the load runs in, set up once before
//! the first cycle.

use anyhow::Context;
use reqwest::Method;
use ruma_ids::{
    CanonicalJsonObject,
    serde::{Base64, base64::Standard},
    signatures::{Ed25519KeyPair, sign_json},
};
use serde_json::{Value, json};

use crate::{
    api::{Api, REQUEST_TIMEOUT},
    concurrent,
    matrix::{self, Session},
};

/// Every account the harness creates gets this password.
pub const PASSWORD: &str = "myelin-crash-password-0123456789";
/// The content field carrying a message's transaction id, so that stored
/// events can be matched to what the clients were told.
pub const MARKER_FIELD: &str = "org.myelin.crash.txn";
/// The event type of the harness's to-device messages.
pub const TO_DEVICE_TYPE: &str = "org.myelin.crash";

/// A load client: one account with one device. No `Debug`: it holds a token.
pub struct Client {
    /// Full user id.
    pub user_id: String,
    /// Its device.
    pub device_id: String,
    /// Its access token (never printed).
    pub token: String,
    /// The device's signed `DeviceKeys`, uploaded again with every key upload.
    pub device_keys: Value,
    /// Its key backup version.
    pub backup_version: String,
}

/// What every cycle shares.
pub struct World {
    /// Distinguishes this run's account names.
    pub run_id: String,
    /// The load clients.
    pub clients: Vec<Client>,
    /// The rooms, every client and the observer joined.
    pub rooms: Vec<String>,
    /// The observer's device: it syncs every room and gets the to-device messages.
    pub observer: Device,
    /// A second device of the observer's account that resumes old sync tokens.
    pub checker: Device,
    /// For the requests outside `/_matrix/client/v3` (media).
    pub http: reqwest::Client,
}

/// A logged-in device. No `Debug`: it holds a token.
#[derive(Clone)]
pub struct Device {
    /// Full user id.
    pub user_id: String,
    /// Device id.
    pub device_id: String,
    /// Access token (never printed).
    pub token: String,
}

impl Device {
    /// As the load tool's session type.
    pub fn session(&self) -> Session {
        Session {
            user_id: self.user_id.clone(),
            token: self.token.clone(),
        }
    }
}

impl World {
    /// Registers the clients and the observer, creates `rooms` rooms and
    /// joins everyone to each, and creates each client's backup version.
    pub async fn set_up(
        api: &Api,
        run_id: String,
        clients: usize,
        rooms: usize,
    ) -> anyhow::Result<Self> {
        let observer = register(api, &format!("crash_{run_id}_observer")).await?;
        let checker = login(api, &observer.user_id).await?;
        let devices = {
            let (api, run_id) = (api.clone(), run_id.clone());
            concurrent::run(clients, 4, move |i| {
                let (api, run_id) = (api.clone(), run_id.clone());
                async move { register(&api, &format!("crash_{run_id}_client_{i}")).await }
            })
            .await?
        };
        let mut room_ids = Vec::with_capacity(rooms);
        for i in 0..rooms {
            let room_id =
                matrix::create_room(api, &observer.session(), &format!("crash room {i}")).await?;
            for device in &devices {
                matrix::join(api, &device.session(), &room_id).await?;
            }
            room_ids.push(room_id);
        }
        let mut clients = Vec::with_capacity(devices.len());
        for device in devices {
            let backup = api
                .call(
                    Method::POST,
                    "/room_keys/version",
                    Some(&device.token),
                    Some(&json!({
                        "algorithm": "m.megolm_backup.v1.curve25519-aes-sha2",
                        "auth_data": {"public_key": "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo"},
                    })),
                    REQUEST_TIMEOUT,
                )
                .await?;
            clients.push(Client {
                device_keys: signed_device_keys(&device.user_id, &device.device_id)?,
                backup_version: backup
                    .get("version")
                    .and_then(Value::as_str)
                    .context("POST /room_keys/version: no version")?
                    .to_owned(),
                user_id: device.user_id,
                device_id: device.device_id,
                token: device.token,
            });
        }
        Ok(Self {
            run_id,
            clients,
            rooms: room_ids,
            observer,
            checker,
            http: reqwest::Client::new(),
        })
    }
}

async fn register(api: &Api, username: &str) -> anyhow::Result<Device> {
    let body =
        json!({"username": username, "password": PASSWORD, "auth": {"type": "m.login.dummy"}});
    let answer = api
        .call(
            Method::POST,
            "/register",
            None,
            Some(&body),
            REQUEST_TIMEOUT,
        )
        .await?;
    device_from(&answer).context("POST /register")
}

async fn login(api: &Api, user_id: &str) -> anyhow::Result<Device> {
    let body = json!({
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user_id},
        "password": PASSWORD,
    });
    let answer = api
        .call(Method::POST, "/login", None, Some(&body), REQUEST_TIMEOUT)
        .await?;
    device_from(&answer).context("POST /login")
}

fn device_from(answer: &Value) -> anyhow::Result<Device> {
    let field = |name: &str| {
        answer
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .with_context(|| format!("the answer has no {name}"))
    };
    Ok(Device {
        user_id: field("user_id")?,
        device_id: field("device_id")?,
        token: field("access_token")?,
    })
}

/// A fresh device identity's `DeviceKeys`, signed by its ed25519 key as a
/// client signs them (the server checks the signature).
fn signed_device_keys(user_id: &str, device_id: &str) -> anyhow::Result<Value> {
    let document = Ed25519KeyPair::generate();
    let pair = Ed25519KeyPair::from_der(&document, device_id.to_owned())
        .context("loading the ed25519 key")?;
    let ed25519 = Base64::<Standard>::new(pair.public_key().to_vec()).encode();
    let unsigned = json!({
        "user_id": user_id,
        "device_id": device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {
            format!("curve25519:{device_id}"): ed25519,
            format!("ed25519:{device_id}"): ed25519,
        },
    });
    let mut canonical: CanonicalJsonObject = serde_json::from_value(unsigned)?;
    sign_json(user_id, &pair, &mut canonical).context("signing the device keys")?;
    Ok(serde_json::to_value(canonical)?)
}
