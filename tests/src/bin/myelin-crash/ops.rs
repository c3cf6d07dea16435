//! The mixed load: what each request is, how it is sent, and what its
//! answer adds to the ledger.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use base64::{Engine, engine::general_purpose::STANDARD_NO_PAD};
use rand::{Rng, SeedableRng, rngs::StdRng};
use reqwest::Method;
use serde_json::{Value, json};

use crate::{
    api::{Api, REQUEST_TIMEOUT, encode_segment},
    ledger::{AckedAccount, AckedEvent, AckedMedia, Kind, Ledger},
    world::{MARKER_FIELD, TO_DEVICE_TYPE, World},
};

/// Pause before retrying a request whose outcome was unknown.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// How long a request may keep failing after a restart before the run fails.
const RESOLVE_DEADLINE: Duration = Duration::from_secs(60);

/// One request of the load.
#[derive(Debug, Clone)]
pub enum Op {
    /// A message into room `room` with transaction id `txn`.
    Send { room: usize, txn: String },
    /// A to-device message to the observer, transaction id `txn`.
    ToDevice { txn: String },
    /// The device keys again, and new one-time keys.
    KeyUpload { key_ids: Vec<String> },
    /// One one-time key of client `owner`.
    KeyClaim { owner: usize },
    /// A room key into the client's backup.
    Backup { room: usize, session: String },
    /// A media upload.
    Media { bytes: Vec<u8> },
    /// A new account.
    Register { username: String },
}

impl Op {
    fn kind(&self) -> Kind {
        match self {
            Op::Send { .. } => Kind::Send,
            Op::ToDevice { .. } => Kind::ToDevice,
            Op::KeyUpload { .. } => Kind::KeyUpload,
            Op::KeyClaim { .. } => Kind::KeyClaim,
            Op::Backup { .. } => Kind::Backup,
            Op::Media { .. } => Kind::Media,
            Op::Register { .. } => Kind::Register,
        }
    }
}

/// What became of one attempt.
enum Attempt {
    /// A 2xx, with its body.
    Acked(Value),
    /// No answer, or a 5xx: it may or may not have landed.
    Unknown,
    /// Any other answer: the harness or the server is wrong.
    Rejected {
        /// The Matrix errcode, if any.
        errcode: Option<String>,
        /// The endpoint, the status and the error.
        message: String,
    },
}

/// A request waiting for its outcome.
struct Pending {
    op: Op,
    /// Whether an attempt already failed (counted once as unknown).
    is_unknown: bool,
}

/// One client's loop: its own seeded choices and sequence numbers, and the
/// request it was sending when the server died.
pub struct Worker {
    index: usize,
    rng: StdRng,
    seq: u64,
    pending: Option<Pending>,
}

impl Worker {
    /// Worker `index`, its choices seeded from the run's seed.
    pub fn new(index: usize, seed: u64) -> Self {
        Self {
            index,
            rng: StdRng::seed_from_u64(
                seed ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            ),
            seq: 0,
            pending: None,
        }
    }

    /// Sends requests until `stop` is set; a request without an answer at
    /// that moment stays pending for [`Worker::resolve`].
    pub async fn load(
        mut self,
        world: Arc<World>,
        api: Api,
        ledger: Arc<Mutex<Ledger>>,
        stop: Arc<AtomicBool>,
    ) -> anyhow::Result<Self> {
        loop {
            let pending = match self.pending.take() {
                Some(pending) => pending,
                None if stop.load(Ordering::Relaxed) => return Ok(self),
                None => Pending {
                    op: self.next_op(&world),
                    is_unknown: false,
                },
            };
            if let Some(pending) = self.attempt(&world, &api, &ledger, pending).await? {
                self.pending = Some(pending);
                if stop.load(Ordering::Relaxed) {
                    return Ok(self);
                }
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }

    /// Retries the pending request (same transaction id) until it is answered.
    pub async fn resolve(
        &mut self,
        world: &World,
        api: &Api,
        ledger: &Mutex<Ledger>,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        while let Some(pending) = self.pending.take() {
            if started.elapsed() > RESOLVE_DEADLINE {
                bail!(
                    "client {}: {:?} still fails after {RESOLVE_DEADLINE:?}",
                    self.index,
                    pending.op.kind()
                );
            }
            self.pending = self.attempt(world, api, ledger, pending).await?;
            if self.pending.is_some() {
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
        Ok(())
    }

    /// One attempt; returns the request again if its outcome is unknown.
    async fn attempt(
        &self,
        world: &World,
        api: &Api,
        ledger: &Mutex<Ledger>,
        mut pending: Pending,
    ) -> anyhow::Result<Option<Pending>> {
        let attempt = send(world, api, self.index, &pending.op).await;
        let mut ledger = ledger
            .lock()
            .map_err(|_| anyhow::anyhow!("ledger poisoned"))?;
        match attempt {
            Attempt::Acked(body) => {
                record(&mut ledger, world, self.index, &pending.op, &body)?;
                Ok(None)
            }
            Attempt::Unknown => {
                if !pending.is_unknown {
                    pending.is_unknown = true;
                    ledger.unknown(pending.op.kind());
                    if let Op::KeyUpload { key_ids } = &pending.op {
                        ledger
                            .maybe_uploaded_keys
                            .entry(self.index)
                            .or_default()
                            .extend(key_ids.iter().cloned());
                    }
                }
                // Every attempt that got no answer may have used up a key.
                if let Op::KeyClaim { owner } = pending.op {
                    *ledger.unknown_claims.entry(owner).or_default() += 1;
                }
                Ok(Some(pending))
            }
            Attempt::Rejected { errcode, .. }
                if is_landed_registration(&pending, errcode.as_deref()) =>
            {
                Ok(None)
            }
            Attempt::Rejected { message, .. } => {
                bail!("client {}: {message}", self.index)
            }
        }
    }

    fn next_op(&mut self, world: &World) -> Op {
        self.seq += 1;
        let txn = format!("c{}n{}", self.index, self.seq);
        let roll = self.rng.gen_range(0..100);
        match roll {
            0..50 => Op::Send {
                room: self.rng.gen_range(0..world.rooms.len()),
                txn,
            },
            50..65 => Op::ToDevice { txn },
            65..75 => Op::KeyUpload {
                key_ids: (0..2).map(|k| format!("{txn}k{k}")).collect(),
            },
            75..83 => Op::KeyClaim {
                owner: (self.index + self.rng.gen_range(1..world.clients.len().max(2)))
                    % world.clients.len(),
            },
            83..93 => Op::Backup {
                room: self.rng.gen_range(0..world.rooms.len()),
                session: txn,
            },
            93..98 => {
                let len = self.rng.gen_range(16..4096);
                Op::Media {
                    bytes: (0..len).map(|_| self.rng.r#gen()).collect(),
                }
            }
            _ => Op::Register {
                username: format!("crash_{}_{txn}", world.run_id),
            },
        }
    }
}

/// A retried registration answered `M_USER_IN_USE`: the first attempt landed.
fn is_landed_registration(pending: &Pending, errcode: Option<&str>) -> bool {
    pending.is_unknown
        && matches!(pending.op, Op::Register { .. })
        && errcode == Some("M_USER_IN_USE")
}

async fn send(world: &World, api: &Api, index: usize, op: &Op) -> Attempt {
    let client = &world.clients[index];
    let token = Some(client.token.as_str());
    let (method, path, body) = match op {
        Op::Send { room, txn } => (
            Method::PUT,
            format!(
                "/rooms/{}/send/m.room.message/{}",
                encode_segment(&world.rooms[*room]),
                encode_segment(txn)
            ),
            json!({"msgtype": "m.text", "body": "crash harness", MARKER_FIELD: txn}),
        ),
        Op::ToDevice { txn } => (
            Method::PUT,
            format!("/sendToDevice/{TO_DEVICE_TYPE}/{}", encode_segment(txn)),
            json!({"messages": {&world.observer.user_id: {&world.observer.device_id: {MARKER_FIELD: txn}}}}),
        ),
        Op::KeyUpload { key_ids } => {
            let keys: serde_json::Map<String, Value> = key_ids
                .iter()
                .map(|id| (format!("curve25519:{id}"), json!(public_key(id))))
                .collect();
            (
                Method::POST,
                "/keys/upload".to_owned(),
                json!({"device_keys": client.device_keys, "one_time_keys": keys}),
            )
        }
        Op::KeyClaim { owner } => {
            let target = &world.clients[*owner];
            (
                Method::POST,
                "/keys/claim".to_owned(),
                json!({"one_time_keys": {&target.user_id: {&target.device_id: "curve25519"}}}),
            )
        }
        Op::Backup { room, session } => (
            Method::PUT,
            format!(
                "/room_keys/keys/{}/{}?version={}",
                encode_segment(&world.rooms[*room]),
                encode_segment(session),
                encode_segment(&client.backup_version)
            ),
            json!({
                "first_message_index": 0,
                "forwarded_count": 0,
                "is_verified": false,
                "session_data": {"ephemeral": public_key(session), "ciphertext": session, "mac": "AAAA"},
            }),
        ),
        Op::Media { bytes } => return upload_media(world, api, client, bytes).await,
        Op::Register { username } => (
            Method::POST,
            "/register".to_owned(),
            json!({"username": username, "password": crate::world::PASSWORD, "auth": {"type": "m.login.dummy"}}),
        ),
    };
    let token = if matches!(op, Op::Register { .. }) {
        None
    } else {
        token
    };
    match api
        .request(method.clone(), &path, token, Some(&body), REQUEST_TIMEOUT)
        .await
    {
        Ok(reply) if reply.status.is_success() => Attempt::Acked(reply.body),
        Ok(reply) if reply.status.is_server_error() => Attempt::Unknown,
        Ok(reply) => {
            let error = crate::api::api_error(method, &path, &reply);
            Attempt::Rejected {
                message: error.to_string(),
                errcode: error.errcode,
            }
        }
        Err(_) => Attempt::Unknown,
    }
}

async fn upload_media(
    world: &World,
    api: &Api,
    client: &crate::world::Client,
    bytes: &[u8],
) -> Attempt {
    let url = format!("{}/_matrix/media/v3/upload?filename=crash.bin", api.base());
    let response = world
        .http
        .post(&url)
        .bearer_auth(&client.token)
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .body(bytes.to_vec())
        .timeout(REQUEST_TIMEOUT)
        .send()
        .await;
    let Ok(response) = response else {
        return Attempt::Unknown;
    };
    let status = response.status();
    if status.is_server_error() {
        return Attempt::Unknown;
    }
    match response.json::<Value>().await {
        Ok(body) if status.is_success() => Attempt::Acked(body),
        Ok(body) => Attempt::Rejected {
            errcode: body
                .get("errcode")
                .and_then(Value::as_str)
                .map(str::to_owned),
            message: format!("POST /_matrix/media/v3/upload answered {status}"),
        },
        Err(_) => Attempt::Unknown,
    }
}

/// Adds an acknowledged request and its answer to the ledger.
fn record(
    ledger: &mut Ledger,
    world: &World,
    index: usize,
    op: &Op,
    body: &Value,
) -> anyhow::Result<()> {
    let field = |name: &str| {
        body.get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .with_context(|| format!("the answer to {:?} has no {name}", op.kind()))
    };
    match op {
        Op::Send { room, txn } => {
            let event = AckedEvent {
                room_id: world.rooms[*room].clone(),
                event_id: field("event_id")?,
            };
            ledger.ack_event(txn, event);
        }
        Op::ToDevice { txn } => {
            ledger.ack(Kind::ToDevice);
            ledger.to_device.insert(txn.clone());
        }
        Op::KeyUpload { key_ids } => {
            ledger.ack(Kind::KeyUpload);
            ledger.device_keys.insert(index);
            ledger
                .uploaded_keys
                .entry(index)
                .or_default()
                .extend(key_ids.iter().cloned());
        }
        Op::KeyClaim { owner } => {
            let target = &world.clients[*owner];
            let key_id = body
                .pointer(&format!(
                    "/one_time_keys/{}/{}",
                    pointer_segment(&target.user_id),
                    pointer_segment(&target.device_id)
                ))
                .and_then(Value::as_object)
                .and_then(|keys| keys.keys().next())
                .map(|key| key.trim_start_matches("curve25519:").to_owned());
            ledger.ack_claim(*owner, key_id);
        }
        Op::Backup { room, session } => {
            ledger.ack(Kind::Backup);
            ledger
                .backup
                .entry(index)
                .or_default()
                .insert((world.rooms[*room].clone(), session.clone()));
        }
        Op::Media { bytes } => {
            ledger.ack(Kind::Media);
            ledger.media.push(AckedMedia {
                content_uri: field("content_uri")?,
                bytes: bytes.clone(),
            });
        }
        Op::Register { .. } => {
            ledger.ack(Kind::Register);
            ledger.accounts.push(AckedAccount {
                user_id: field("user_id")?,
                token: field("access_token")?,
            });
        }
    }
    Ok(())
}

/// A stand-in curve25519 key (any 32 bytes do for the server), derived from `seed`.
fn public_key(seed: &str) -> String {
    let mut bytes = [0u8; 32];
    for (i, byte) in seed.bytes().enumerate() {
        bytes[i % 32] ^= byte.rotate_left(i as u32 / 32);
    }
    STANDARD_NO_PAD.encode(bytes)
}

/// Escapes a JSON pointer segment (RFC 6901).
pub fn pointer_segment(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}
