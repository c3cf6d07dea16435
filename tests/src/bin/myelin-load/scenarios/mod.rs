//! The measurements, one module each, and what they share: the run
//! context, account set-up and the shape of a result.

mod delivery;
mod idle_polls;
mod initial_sync;
mod register;
mod send;

use std::time::Duration;

use serde_json::Value;

use crate::{api::Api, concurrent, matrix, matrix::Session};

/// One measurement the tool can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Concurrent registrations with the m.login.dummy flow (users/s).
    Register,
    /// Concurrent senders into one room (messages/s, send latency).
    SendOneRoom,
    /// Concurrent senders spread over several rooms (messages/s, send latency).
    SendSpreadRooms,
    /// Send-to-sync delivery latency with a long-polling receiver.
    Delivery,
    /// Initial sync of a user in many rooms with history.
    InitialSync,
    /// Many parked long-polls: the server's memory and CPU time while they
    /// wait, and how fast one message wakes the right ones (not in a
    /// default run; needs --server-pid).
    IdlePolls,
}

impl Scenario {
    /// Every scenario, in the order a full run takes them.
    pub const ALL: [Scenario; 5] = [
        Scenario::Register,
        Scenario::SendOneRoom,
        Scenario::SendSpreadRooms,
        Scenario::Delivery,
        Scenario::InitialSync,
    ];

    /// The name used on the command line, in the table and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Register => "register",
            Scenario::SendOneRoom => "send-one-room",
            Scenario::SendSpreadRooms => "send-spread-rooms",
            Scenario::Delivery => "delivery",
            Scenario::InitialSync => "initial-sync",
            Scenario::IdlePolls => "idle-polls",
        }
    }
}

/// Sizes of the scenarios (from the command line).
#[derive(Debug, Clone)]
pub struct Sizes {
    /// Users registered by the `register` scenario.
    pub users: usize,
    /// Requests in flight during set-up and registration.
    pub concurrency: usize,
    /// Concurrent senders in the send scenarios.
    pub senders: usize,
    /// Messages per send scenario (unless `duration` is set).
    pub messages: usize,
    /// Send for this long instead of a fixed count.
    pub duration: Option<Duration>,
    /// Rooms in `send-spread-rooms`.
    pub spread_rooms: usize,
    /// Measured messages in `delivery`.
    pub delivery_count: usize,
    /// Unmeasured messages sent first in `delivery`.
    pub delivery_warmup: usize,
    /// Pause after each delivery before the next send.
    pub delivery_gap: Duration,
    /// Rooms the `initial-sync` user is in.
    pub sync_rooms: usize,
    /// Messages in each of those rooms.
    pub sync_messages_per_room: usize,
    /// Initial syncs timed after the first.
    pub sync_repeats: usize,
    /// Long-polls parked at once in `idle-polls`.
    pub idle_polls: usize,
}

/// What every scenario gets.
pub struct Ctx {
    /// The homeserver.
    pub api: Api,
    /// A random tag that makes this scenario run's user names and transaction ids unique.
    pub run_id: String,
    /// Scenario sizes.
    pub sizes: Sizes,
    /// The server's process id, when given.
    pub server_pid: Option<u32>,
}

/// The figures a scenario measured and the parameters it ran with.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Named figures; the unit is the name's suffix (`_per_s`, `_ms`, `_mib`).
    pub figures: Vec<(&'static str, f64)>,
    /// Parameters and counts that are not figures to compare.
    pub params: Vec<(&'static str, Value)>,
}

/// Runs one scenario.
pub async fn run(scenario: Scenario, ctx: &Ctx) -> anyhow::Result<Outcome> {
    match scenario {
        Scenario::Register => register::run(ctx).await,
        Scenario::SendOneRoom => send::run(ctx, 1, "one").await,
        Scenario::SendSpreadRooms => send::run(ctx, ctx.sizes.spread_rooms, "spread").await,
        Scenario::Delivery => delivery::run(ctx).await,
        Scenario::InitialSync => initial_sync::run(ctx).await,
        Scenario::IdlePolls => idle_polls::run(ctx).await,
    }
}

/// The localpart for account `i` of `role` in this run.
fn username(ctx: &Ctx, role: &str, i: usize) -> String {
    format!("load_{}_{role}_{i}", ctx.run_id)
}

/// Registers `n` accounts for `role` (set-up, not measured).
async fn register_many(ctx: &Ctx, role: &'static str, n: usize) -> anyhow::Result<Vec<Session>> {
    let api = ctx.api.clone();
    let names: Vec<String> = (0..n).map(|i| username(ctx, role, i)).collect();
    concurrent::run(n, ctx.sizes.concurrency, move |i| {
        let (api, name) = (api.clone(), names[i].clone());
        async move { matrix::register(&api, &name).await }
    })
    .await
    .map_err(|e| e.context(format!("setting up {n} {role} accounts")))
}

/// `owner` creates `n` rooms; every session in `members` joins all of them.
async fn rooms_with_members(
    ctx: &Ctx,
    owner: &Session,
    members: &[Session],
    n: usize,
) -> anyhow::Result<Vec<String>> {
    let (api, owner_session) = (ctx.api.clone(), owner.clone());
    let run_id = ctx.run_id.clone();
    let rooms = concurrent::run(n, ctx.sizes.concurrency, move |i| {
        let (api, owner, name) = (
            api.clone(),
            owner_session.clone(),
            format!("load {run_id} {i}"),
        );
        async move { matrix::create_room(&api, &owner, &name).await }
    })
    .await
    .map_err(|e| e.context(format!("setting up {n} rooms")))?;
    let api = ctx.api.clone();
    let (members_owned, rooms_owned) = (members.to_vec(), rooms.clone());
    let pairs = members.len() * n;
    concurrent::run(pairs, ctx.sizes.concurrency, move |k| {
        let api = api.clone();
        let member = members_owned[k / n].clone();
        let room = rooms_owned[k % n].clone();
        async move { matrix::join(&api, &member, &room).await }
    })
    .await
    .map_err(|e| e.context(format!("joining {} members to {n} rooms", members.len())))?;
    Ok(rooms)
}

/// The content of load message `i`, optionally carrying a marker.
fn message_content(i: usize, marker: Option<&str>) -> Value {
    let mut content = serde_json::json!({"msgtype": "m.text", "body": format!("load message {i}")});
    if let Some(marker) = marker {
        content[crate::sync_response::MARKER_KEY] = Value::from(marker);
    }
    content
}
