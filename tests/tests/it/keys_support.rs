//! Helpers for the end-to-end encryption key tests: real ed25519 keys that
//! sign device keys, one-time keys and cross-signing keys the way clients
//! do (canonical JSON without `signatures` and `unsigned`), and raw calls
//! to the `/keys` endpoints.

use myelin_tests::{Account, TestServer};
use reqwest::{Method, StatusCode};
use ruma_ids::{
    CanonicalJsonObject,
    serde::{Base64, base64::Standard},
    signatures::{Ed25519KeyPair, sign_json},
};
use serde_json::{Value, json};

/// An ed25519 key pair whose key id is `ed25519:<name>`.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    /// Unpadded base64 public key.
    pub public: String,
}

impl SigningKey {
    /// A fresh key named `name` (a device id).
    pub fn named(name: &str) -> Self {
        let document = Ed25519KeyPair::generate();
        let pair = Ed25519KeyPair::from_der(&document, name.to_owned()).expect("key pair");
        let public = encode(&pair.public_key());
        Self { pair, public }
    }

    /// A fresh key named by its own public key, as cross-signing keys are.
    pub fn self_named() -> Self {
        let document = Ed25519KeyPair::generate();
        let probe = Ed25519KeyPair::from_der(&document, "x".to_owned()).expect("key pair");
        let public = encode(&probe.public_key());
        let pair = Ed25519KeyPair::from_der(&document, public.clone()).expect("key pair");
        Self { pair, public }
    }

    /// `object` with this key's signature as `entity` added.
    pub fn sign(&self, entity: &str, object: &Value) -> Value {
        let mut canonical: CanonicalJsonObject =
            serde_json::from_value(object.clone()).expect("canonical JSON object");
        sign_json(entity, &self.pair, &mut canonical).expect("sign");
        serde_json::to_value(canonical).expect("JSON")
    }
}

/// A client device with its identity keys.
pub struct Device {
    /// Its session.
    pub account: Account,
    /// The device's ed25519 key.
    pub ed25519: SigningKey,
    /// Stands in for its curve25519 key (any 32 bytes do for the server).
    pub curve25519: String,
}

impl Device {
    /// Identity keys for a logged-in session.
    pub fn new(account: &Account) -> Self {
        Self {
            account: account.clone(),
            ed25519: SigningKey::named(&account.device_id),
            curve25519: SigningKey::named("curve").public,
        }
    }

    /// The device's `DeviceKeys`, unsigned.
    pub fn unsigned_device_keys(&self) -> Value {
        let device_id = &self.account.device_id;
        json!({
            "user_id": self.account.user_id,
            "device_id": device_id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {
                format!("curve25519:{device_id}"): self.curve25519,
                format!("ed25519:{device_id}"): self.ed25519.public,
            },
        })
    }

    /// The device's `DeviceKeys`, self-signed.
    pub fn device_keys(&self) -> Value {
        self.ed25519
            .sign(&self.account.user_id, &self.unsigned_device_keys())
    }

    /// A signed curve25519 key `signed_curve25519:<name>`, signed by this device.
    pub fn one_time_key(&self, name: &str, fallback: bool) -> (String, Value) {
        let mut key = json!({ "key": SigningKey::named("otk").public });
        if fallback {
            key["fallback"] = json!(true);
        }
        (
            format!("signed_curve25519:{name}"),
            self.ed25519.sign(&self.account.user_id, &key),
        )
    }

    /// `n` signed one-time keys named `<prefix><i>`, as a map.
    pub fn one_time_keys(&self, prefix: &str, n: usize) -> Value {
        let keys: serde_json::Map<String, Value> = (0..n)
            .map(|i| self.one_time_key(&format!("{prefix}{i}"), false))
            .collect();
        Value::Object(keys)
    }

    /// `POST /keys/upload` with this device's token.
    pub async fn upload(&self, server: &TestServer, body: Value) -> (StatusCode, Value) {
        keys_call(server, &self.account.token, "/upload", body).await
    }

    /// Uploads the device keys, which must succeed.
    pub async fn publish(&self, server: &TestServer) {
        let answer = self
            .upload(server, json!({ "device_keys": self.device_keys() }))
            .await;
        assert_eq!(answer.0, StatusCode::OK, "upload: {}", answer.1);
    }
}

/// `POST /_matrix/client/v3/keys{path}`.
pub async fn keys_call(
    server: &TestServer,
    token: &str,
    path: &str,
    body: Value,
) -> (StatusCode, Value) {
    server
        .request(
            Method::POST,
            server.v3(&format!("/keys{path}")),
            Some(token),
            Some(body),
        )
        .await
}

/// `POST /logout` of a session, which must succeed (it deletes the device).
pub async fn logout(server: &TestServer, token: &str) {
    let (status, body) = server
        .request(
            Method::POST,
            server.v3("/logout"),
            Some(token),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "logout: {body}");
}

/// `POST /keys/query` for all devices of `users`, which must succeed.
pub async fn query(server: &TestServer, token: &str, users: &[&str]) -> Value {
    let device_keys: serde_json::Map<String, Value> = users
        .iter()
        .map(|user| ((*user).to_owned(), json!([])))
        .collect();
    let answer = keys_call(
        server,
        token,
        "/query",
        json!({ "device_keys": device_keys }),
    )
    .await;
    assert_eq!(answer.0, StatusCode::OK, "query: {}", answer.1);
    answer.1
}

/// `POST /keys/claim` of one `signed_curve25519` key of one device.
pub async fn claim_one(server: &TestServer, token: &str, user_id: &str, device_id: &str) -> Value {
    let body = json!({ "one_time_keys": { user_id: { device_id: "signed_curve25519" } } });
    let answer = keys_call(server, token, "/claim", body).await;
    assert_eq!(answer.0, StatusCode::OK, "claim: {}", answer.1);
    answer.1
}

/// The single claimed key of a device in a claim answer: `(key id, key)`.
pub fn claimed_key(answer: &Value, user_id: &str, device_id: &str) -> Option<(String, Value)> {
    let keys = answer["one_time_keys"][user_id][device_id].as_object()?;
    assert_eq!(keys.len(), 1, "one key per device: {answer}");
    keys.iter()
        .next()
        .map(|(id, key)| (id.clone(), key.clone()))
}

/// `value` without `signatures` and `unsigned`: what signatures cover.
pub fn signed_part(value: &Value) -> Value {
    let mut value = value.clone();
    if let Some(object) = value.as_object_mut() {
        object.remove("signatures");
        object.remove("unsigned");
    }
    value
}

/// Unpadded standard base64, as Matrix writes keys.
fn encode(bytes: &[u8]) -> String {
    Base64::<Standard>::new(bytes.to_vec()).encode()
}

/// A user's three cross-signing keys.
pub struct CrossSigning {
    /// Whose keys they are.
    pub user_id: String,
    /// The master key.
    pub master: SigningKey,
    /// The self-signing key.
    pub self_signing: SigningKey,
    /// The user-signing key.
    pub user_signing: SigningKey,
}

impl CrossSigning {
    /// Fresh keys for `user_id`.
    pub fn new(user_id: &str) -> Self {
        Self {
            user_id: user_id.to_owned(),
            master: SigningKey::self_named(),
            self_signing: SigningKey::self_named(),
            user_signing: SigningKey::self_named(),
        }
    }

    /// An unsigned `CrossSigningKey` object for `key`.
    pub fn key_object(&self, key: &SigningKey, usage: &str) -> Value {
        json!({
            "user_id": self.user_id,
            "usage": [usage],
            "keys": { format!("ed25519:{}", key.public): key.public },
        })
    }

    /// The master key object.
    pub fn master_key(&self) -> Value {
        self.key_object(&self.master, "master")
    }

    /// The self-signing key object, signed by the master key.
    pub fn self_signing_key(&self) -> Value {
        self.master.sign(
            &self.user_id,
            &self.key_object(&self.self_signing, "self_signing"),
        )
    }

    /// The user-signing key object, signed by the master key.
    pub fn user_signing_key(&self) -> Value {
        self.master.sign(
            &self.user_id,
            &self.key_object(&self.user_signing, "user_signing"),
        )
    }

    /// All three, as a `POST /keys/device_signing/upload` body.
    pub fn upload_body(&self) -> Value {
        json!({
            "master_key": self.master_key(),
            "self_signing_key": self.self_signing_key(),
            "user_signing_key": self.user_signing_key(),
        })
    }
}

/// `POST /keys/device_signing/upload`.
pub async fn upload_signing_keys(
    server: &TestServer,
    token: &str,
    body: Value,
) -> (StatusCode, Value) {
    keys_call(server, token, "/device_signing/upload", body).await
}

/// The UIA `auth` object for the test password in `session`.
pub fn password_auth(localpart: &str, session: &Value) -> Value {
    json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": localpart },
        "password": myelin_tests::PASSWORD,
        "session": session,
    })
}
