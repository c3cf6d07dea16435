//! A small terminal chat client on myelin-sdk: log in (or register),
//! restore the session from a SQLite store on later runs, sync in the
//! background, and send what you type to the current room — end-to-end
//! encrypted unless the room is plain.
//!
//! ```sh
//! export MYELIN_PASSWORD='...' MYELIN_PASSPHRASE='protects the store'
//! cargo run -p myelin-sdk --example chat -- http://127.0.0.1:8008 alice alice.db
//! ```
//!
//! The first argument is a homeserver URL or a server name (discovered
//! through `/.well-known/matrix/client`). The password is only needed the
//! first time; set `MYELIN_REGISTER=1` to register the account instead.
//!
//! On a new device of an account that keeps its keys in secret storage
//! (`/recovery setup` on another device), the client asks for the
//! recovery key first: it unlocks the cross-signing keys (this device then
//! counts as verified), restores the key backup, and shows each room's
//! history. `/skip` goes on without.
//!
//! Every timeline line says how it reached you: `[e2e verified]`,
//! `[e2e unverified]`, `[e2e unknown device]`, `[e2e blacklisted]`,
//! `[e2e authenticity not guaranteed]` when the key did not come from the
//! sender's own device (forwarded, restored from the key backup, or shared
//! history; the line then says which), or `[plaintext]`; a message that did not decrypt shows its cause and
//! whether that cause is expected (sent before you joined, withheld) or a
//! failure worth reporting.
//!
//! Commands:
//! - `/create NAME`: an E2E-only room (encrypted; a Myelin server refuses
//!   plaintext in it); `/create-plain NAME` for an unencrypted one
//! - `/join ROOM`, `/switch ROOM`, `/invite USER`, `/leave`, `/rooms`
//! - `/history`: the last 20 events of the current room, decrypted
//! - `/devices USER`: a user's devices, fingerprints and trust (your own
//!   user shows this device's fingerprint to compare out of band)
//! - `/trust USER DEVICE verified|unset|blacklisted`: a local decision
//! - `/verify USER [DEVICE]`: interactive verification by emoji (SAS) with
//!   a device of USER (or each of their devices; your own other devices
//!   for your own user). Both terminals show the same seven emoji and three
//!   numbers; answer `y` if they match what the other side shows, `n` if
//!   not (that cancels with `m.mismatched_sas`). When both say yes the
//!   other device is verified. Incoming requests are shown as they arrive;
//!   `/accept [TRANSACTION]` takes the latest (or the one named).
//! - `/cross-signing`: create this account's cross-signing keys (asks the
//!   server for `MYELIN_PASSWORD` when it wants it); a verification then
//!   also signs the other user's identity. `/trust-identity USER` signs a
//!   user's identity without any comparison here: only once you compared
//!   their master key (`/identity USER`) out of band
//! - `/identity USER`: a user's master key, whether it is verified, and
//!   whether it changed since you verified it; sending to a room they are
//!   in is refused until `/acknowledge USER`
//! - `/only-verified on|off`: share the current room's keys only with
//!   verified devices
//! - `/share-history on|off`: hand people you invite to the current room the
//!   keys of its past messages (MSC4268; off by default)
//! - `/recovery setup`: create the cross-signing keys if there are none,
//!   back the room keys up, and keep both in secret storage; prints the
//!   recovery key, once. `/recovery show KEY` prints the key backup's own
//!   recovery key, read from secret storage; `/recovery rotate KEY`
//!   replaces the recovery key (the old one opens nothing afterwards)
//! - `/backup`: back the room keys up on the server and print the backup's
//!   recovery key; `/restore KEY` on a new device reads old messages
//!   again, drawing a progress bar
//! - `/request-secrets`: ask your other (verified) devices for the
//!   cross-signing keys and the backup key this device lacks
//! - `/export FILE PASSPHRASE`: write every room key to FILE in the spec's
//!   export format (Element imports it); `/import FILE PASSPHRASE` reads
//!   such a file
//! - `/quit`; anything else is sent to the current room.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use myelin_sdk::{
    Changes, Client, CreateRoom, Decryption, LoopControl, Membership, Registration, RoomEvent,
    RoomSecurity, SqliteStore, SyncSettings, SyncUpdate,
    machine::{
        BackupRestore, DecryptedRoomEvent, LocalTrust, ReceivedSecret, RestoreProgress,
        UnableToDecrypt, Verification, VerificationPhase, VerificationState,
        secret_storage::Unlock,
    },
    ruma::{OwnedDeviceId, OwnedRoomId, OwnedUserId},
};
use tokio::sync::{Notify, mpsc};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(server), Some(user), Some(store_path)) = (args.next(), args.next(), args.next())
    else {
        eprintln!("usage: chat HOMESERVER_URL_OR_SERVER_NAME USER STORE_PATH");
        std::process::exit(2);
    };
    let passphrase = std::env::var("MYELIN_PASSPHRASE")
        .map_err(|_| "set MYELIN_PASSPHRASE (it encrypts the access token in the store)")?;

    let store = SqliteStore::open(&store_path).await?;
    let builder = Client::builder()
        .store(Arc::new(store))
        .passphrase(passphrase);
    let builder = if server.starts_with("http://") || server.starts_with("https://") {
        builder.homeserver_url(server)
    } else {
        builder.server_name(server)
    };
    let client = builder.build().await?;

    match client.session() {
        Some(session) => println!(
            "* restored session of {} ({})",
            session.user_id, session.device_id
        ),
        None => {
            let password = std::env::var("MYELIN_PASSWORD")
                .map_err(|_| "set MYELIN_PASSWORD for the first login")?;
            let session = if std::env::var("MYELIN_REGISTER").as_deref() == Ok("1") {
                client
                    .register(Registration {
                        username: Some(user),
                        password,
                        device_display_name: Some("myelin chat example".to_owned()),
                        ..Registration::default()
                    })
                    .await?
            } else {
                client
                    .login_password(&user, &password, Some("myelin chat example"))
                    .await?
            };
            println!("* logged in as {} ({})", session.user_id, session.device_id);
        }
    }
    for (txn_id, outcome) in client.resend_pending().await? {
        println!(
            "* resent {txn_id}: {}",
            outcome.map_or_else(|e| e.to_string(), |id| id.to_string())
        );
    }

    let mut awaiting_recovery_key = client.needs_recovery().await?;
    if awaiting_recovery_key {
        // One sync first, so the rooms whose history the recovery shows
        // are known.
        client.sync_once(&SyncSettings::default()).await?;
        println!(
            "* this account keeps its keys in secret storage and this device is not verified yet: type your recovery key (or /skip)"
        );
    }

    // Verifications move on with each sync; a task of their own takes
    // their steps (the sync handler must not await the client).
    let prompts = Prompts::default();
    let synced = Arc::new(Notify::new());
    let verifying = tokio::spawn(drive_verifications(
        client.clone(),
        prompts.clone(),
        synced.clone(),
    ));

    // The sync loop runs in the background; aborting the task cancels it
    // cleanly (an update is saved whole or not at all).
    let syncing = tokio::spawn({
        let client = client.clone();
        async move {
            let printed = client
                .sync(
                    SyncSettings::default(),
                    |update: &SyncUpdate, _: &mut Changes| {
                        print_update(update);
                        synced.notify_one();
                        LoopControl::Continue
                    },
                )
                .await;
            if let Err(error) = printed {
                eprintln!("* sync stopped: {error}");
            }
        }
    });

    // Lines from the terminal, read on a thread of their own.
    let (lines_tx, mut lines) = mpsc::channel::<String>(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if lines_tx.blocking_send(line).is_err() {
                break;
            }
        }
    });

    let mut current: Option<OwnedRoomId> = None;
    while let Some(line) = lines.recv().await {
        let line = line.trim();
        let outcome = match prompts.take_answer(line) {
            Some((flow, matches)) => answer_sas(&client, flow, matches).await,
            None if awaiting_recovery_key => {
                let outcome = if line == "/skip" {
                    Ok(())
                } else {
                    recover(&client, line).await
                };
                awaiting_recovery_key = outcome.is_err();
                outcome.map(|()| true)
            }
            None => run_command(&client, &prompts, &mut current, line).await,
        };
        match outcome {
            Ok(true) => {}
            Ok(false) => break,
            Err(error) => println!("* error: {error}"),
        }
    }
    syncing.abort();
    verifying.abort();
    Ok(())
}

/// Runs one input line; `Ok(false)` means quit.
async fn run_command(
    client: &Client,
    prompts: &Prompts,
    current: &mut Option<OwnedRoomId>,
    line: &str,
) -> Result<bool, Box<dyn std::error::Error>> {
    let (command, rest) = line.split_once(' ').unwrap_or((line, ""));
    match command {
        "" => {}
        "/quit" => return Ok(false),
        "/create" | "/create-plain" => {
            let security = if command == "/create" {
                RoomSecurity::E2eOnly
            } else {
                RoomSecurity::Plain
            };
            let room = client
                .create_room(CreateRoom {
                    name: (!rest.is_empty()).then(|| rest.to_owned()),
                    security,
                    ..CreateRoom::default()
                })
                .await?;
            println!("* created {} ({security:?})", room.room_id());
            *current = Some(room.room_id().to_owned());
        }
        "/join" => {
            let room = client.join_room(rest).await?;
            println!("* joined {}", room.room_id());
            *current = Some(room.room_id().to_owned());
        }
        "/switch" => *current = Some(OwnedRoomId::try_from(rest)?),
        "/rooms" => {
            for room in client.rooms() {
                println!(
                    "* {} {:?} {} ({} members{})",
                    room.room_id,
                    room.membership,
                    room.name.as_deref().unwrap_or("(no name)"),
                    room.joined_members().len(),
                    if room.is_e2e_required {
                        ", e2e only"
                    } else if room.is_encrypted() {
                        ", encrypted"
                    } else {
                        ""
                    },
                );
            }
        }
        "/devices" => {
            let user = OwnedUserId::try_from(rest)?;
            let own_device = client.session().map(|s| s.device_id);
            for device in client.devices(&user).await? {
                let this = own_device
                    .as_ref()
                    .is_some_and(|d| d.as_str() == device.device_id);
                println!(
                    "* {} {} fingerprint {} {:?}{}",
                    device.user_id,
                    device.device_id,
                    device.ed25519,
                    device.trust,
                    if this { " (this device)" } else { "" },
                );
            }
        }
        "/trust" => {
            let mut words = rest.split_whitespace();
            let (Some(user), Some(device), Some(level)) =
                (words.next(), words.next(), words.next())
            else {
                return Err("usage: /trust USER DEVICE verified|unset|blacklisted".into());
            };
            let trust = match level {
                "verified" => LocalTrust::Verified,
                "unset" => LocalTrust::Unset,
                "blacklisted" => LocalTrust::Blacklisted,
                _ => return Err("trust is verified, unset or blacklisted".into()),
            };
            let user = OwnedUserId::try_from(user)?;
            let device = OwnedDeviceId::from(device);
            if client.set_device_trust(&user, &device, trust).await? {
                println!("* {user} {device} is now {trust:?}");
            } else {
                println!("* {user} has no device {device} we know of (/devices {user})");
            }
        }
        "/cross-signing" => {
            let password = std::env::var("MYELIN_PASSWORD").unwrap_or_default();
            client.bootstrap_cross_signing(&password).await?;
            println!("* cross-signing keys created; this device is signed");
        }
        "/verify" => request_verification(client, rest).await?,
        "/accept" => accept_verification(client, prompts, rest).await?,
        "/trust-identity" => {
            let user = OwnedUserId::try_from(rest)?;
            client.verify_user(&user).await?;
            println!("* {user}'s identity is verified (signed with your user-signing key)");
        }
        "/identity" => {
            let user = OwnedUserId::try_from(rest)?;
            match client.user_identity(&user).await? {
                None => println!("* {user} has no cross-signing identity we know of"),
                Some(identity) => println!(
                    "* {user} master key {}{}{}{}",
                    identity.master_key,
                    if identity.is_verified {
                        ", verified"
                    } else {
                        ", not verified"
                    },
                    if identity.has_changed {
                        ", changed"
                    } else {
                        ""
                    },
                    if identity.has_verification_violation {
                        " since you verified it: /acknowledge to send to them again"
                    } else {
                        ""
                    },
                ),
            }
        }
        "/acknowledge" => {
            let user = OwnedUserId::try_from(rest)?;
            client.acknowledge_identity_change(&user).await?;
            println!("* {user}'s new identity acknowledged (not verified)");
        }
        "/backup" => {
            let recovery_key = client.enable_backup().await?;
            println!("* write down the recovery key; it is the only way to read the backup:");
            println!("  {}", recovery_key.as_str());
            if client.backup_version().await?.is_none() {
                println!(
                    "* the server has not created the backup yet; retrying after the next sync"
                );
            } else {
                println!("* room keys are backed up");
            }
        }
        "/request-secrets" => match client.request_secrets().await? {
            0 => println!("* this device holds the cross-signing and backup keys already"),
            asked => println!(
                "* asked your other devices for {asked} secrets; a device that verified this one answers"
            ),
        },
        "/recovery" => recovery_command(client, rest).await?,
        "/restore" => {
            let restored = restore(client, rest).await?;
            for event in &restored.late_decryptions {
                println!(
                    "[{}] {} (earlier, from backup): {} {}",
                    event.room_id,
                    event.sender,
                    decrypted_body(event),
                    e2e_label(event)
                );
            }
        }
        "/export" | "/import" => {
            let Some((path, passphrase)) = rest.split_once(' ') else {
                return Err(format!("usage: {command} FILE PASSPHRASE").into());
            };
            if command == "/export" {
                let file = client.export_room_keys(passphrase).await?;
                std::fs::write(path, file)?;
                println!("* room keys written to {path}; keep it as safe as the passphrase");
            } else {
                let file = std::fs::read_to_string(path)?;
                let import = client.import_room_keys(&file, passphrase).await?;
                println!(
                    "* imported {} of {} keys ({} known already, {} unusable)",
                    import.imported, import.total, import.unchanged, import.invalid
                );
                for event in &import.late_decryptions {
                    println!(
                        "[{}] {} (earlier, from the file): {} {}",
                        event.room_id,
                        event.sender,
                        decrypted_body(event),
                        e2e_label(event)
                    );
                }
            }
        }
        "/invite" | "/history" | "/leave" | "/only-verified" | "/share-history" => {
            let room_id = current
                .as_ref()
                .ok_or("no current room: /join or /create first")?;
            let room = client.room(room_id);
            match command {
                "/invite" => room.invite(&OwnedUserId::try_from(rest)?).await?,
                "/leave" => {
                    room.leave().await?;
                    *current = None;
                }
                "/only-verified" => {
                    let on = on_off(rest)?;
                    client.set_only_verified(room_id, on).await?;
                    println!("* keys for {room_id} go only to verified devices: {on}");
                }
                "/share-history" => {
                    let on = on_off(rest)?;
                    room.set_share_history_on_invite(on).await?;
                    println!("* invitees to {room_id} get the keys of its history: {on}");
                }
                _ => print_history(client, room_id).await?,
            }
        }
        _ => {
            let room_id = current
                .as_ref()
                .ok_or("no current room: /join or /create first")?;
            let room = client.room(room_id);
            room.typing(false, Duration::ZERO).await.ok();
            // Encrypted rooms are encrypted here; the SDK never falls back
            // to plaintext.
            room.send_text(line).await?;
        }
    }
    Ok(true)
}

/// The last 20 events of `room_id`, decrypted.
async fn print_history(
    client: &Client,
    room_id: &OwnedRoomId,
) -> Result<(), Box<dyn std::error::Error>> {
    let page = client.room(room_id).messages(None, 20).await?;
    for event in page.events.iter().rev() {
        let decryption = if event.event_type == "m.room.encrypted" {
            Some(client.decrypt_event(room_id, event).await?)
        } else {
            None
        };
        print_event(room_id, event, decryption.as_ref());
    }
    Ok(())
}

/// Restores the key backup with its recovery key, with a progress bar,
/// and says how much.
async fn restore(
    client: &Client,
    backup_key: &str,
) -> Result<BackupRestore, Box<dyn std::error::Error>> {
    let restored = client
        .restore_backup_with_progress(backup_key, draw_progress)
        .await?;
    println!(
        "* restored {} keys from backup version {} ({} unusable, {} refused as not written by your devices)",
        restored.imported, restored.version, restored.invalid, restored.refused
    );
    Ok(restored)
}

/// Draws a restore's progress as a bar on stderr, redrawn in place.
fn draw_progress(progress: RestoreProgress) {
    const WIDTH: usize = 30;
    let done = progress.done();
    let filled = (done * WIDTH).checked_div(progress.total).unwrap_or(WIDTH);
    eprint!(
        "\r[{}{}] {done}/{} keys",
        "#".repeat(filled),
        " ".repeat(WIDTH - filled),
        progress.total
    );
    if done == progress.total {
        eprintln!();
    }
}

/// A new device's recovery: secret storage unlocked with the recovery key
/// (the cross-signing keys make this device verified), the key backup
/// restored with the backup key it held, and every room's history shown.
async fn recover(client: &Client, recovery_key: &str) -> Result<(), Box<dyn std::error::Error>> {
    let unlocked = client
        .unlock_secret_storage(Unlock::RecoveryKey(recovery_key))
        .await?;
    if unlocked.cross_signing {
        println!("* cross-signing keys unlocked; this device is verified");
    }
    if let Some(backup_key) = &unlocked.backup_recovery_key {
        restore(client, backup_key).await?;
    }
    for room in client.rooms() {
        if room.membership == Membership::Join {
            print_history(client, &room.room_id).await?;
        }
    }
    Ok(())
}

/// `/recovery setup|show KEY|rotate KEY`.
async fn recovery_command(client: &Client, rest: &str) -> Result<(), Box<dyn std::error::Error>> {
    let (action, key) = rest.split_once(' ').unwrap_or((rest, ""));
    match action {
        "setup" => {
            if client.user_identity(&client.user_id()?).await?.is_none() {
                let password = std::env::var("MYELIN_PASSWORD").unwrap_or_default();
                client.bootstrap_cross_signing(&password).await?;
                println!("* cross-signing keys created; this device is signed");
            }
            if client.backup_version().await?.is_none() {
                client.enable_backup().await?;
            }
            let recovery_key = client.enable_secret_storage(None).await?;
            println!(
                "* write down the recovery key; on a new device it unlocks your identity and your message history (shown only now):"
            );
            println!("  {}", recovery_key.as_str());
        }
        "show" => {
            let unlocked = client
                .unlock_secret_storage(Unlock::RecoveryKey(key))
                .await?;
            match unlocked.backup_recovery_key {
                Some(backup_key) => {
                    println!("* the key backup's recovery key: {}", backup_key.as_str())
                }
                None => println!("* secret storage holds no key backup key"),
            }
        }
        "rotate" => {
            let rotation = client
                .rotate_secret_storage_key(Unlock::RecoveryKey(key), None)
                .await?;
            if rotation.old_key_retired {
                println!("* the old recovery key opens nothing now; write down the new one:");
            } else {
                println!(
                    "* the old recovery key still opens some secrets (run /recovery rotate again); write down the new one:"
                );
            }
            println!("  {}", rotation.recovery_key.as_str());
        }
        _ => return Err("usage: /recovery setup | show KEY | rotate KEY".into()),
    }
    Ok(())
}

/// `/verify USER [DEVICE]`: sends the request(s); the rest of the flow is
/// [`drive_verifications`]'s.
async fn request_verification(
    client: &Client,
    rest: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut words = rest.split_whitespace();
    let user = OwnedUserId::try_from(words.next().ok_or("usage: /verify USER [DEVICE]")?)?;
    let own = client.user_id()?;
    let devices: Vec<OwnedDeviceId> = match words.next() {
        Some(device) => vec![OwnedDeviceId::from(device)],
        None if user == own => {
            client.request_own_verification().await?;
            println!("* verification requested from your other devices");
            return Ok(());
        }
        None => client
            .devices(&user)
            .await?
            .into_iter()
            .map(|device| device.device_id)
            .collect(),
    };
    if devices.is_empty() {
        return Err(format!("no device of {user} known: share a room first, or name it").into());
    }
    for device in devices {
        client.request_verification(&user, &device).await?;
        println!("* verification requested from {user} {device}");
    }
    Ok(())
}

/// `/accept [TRANSACTION]`: accepts the named incoming request, or the
/// latest one shown.
async fn accept_verification(
    client: &Client,
    prompts: &Prompts,
    rest: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let (user, transaction_id) = if rest.is_empty() {
        prompts
            .latest_request()
            .ok_or("no verification request waiting")?
    } else {
        let named = client
            .verifications()
            .await?
            .into_iter()
            .find(|v| !v.we_requested && v.transaction_id == rest)
            .ok_or("no such verification request")?;
        (named.user_id, named.transaction_id)
    };
    client
        .accept_verification_request(&user, &transaction_id)
        .await?;
    println!("* accepted; waiting for {user} to start");
    Ok(())
}

/// A flow: the other user and the transaction id.
type FlowKey = (OwnedUserId, String);

/// What the terminal was last asked about verifications: the emoji
/// comparison waiting for `y` or `n`, and the latest incoming request
/// (what a bare `/accept` takes).
#[derive(Clone, Default)]
struct Prompts(Arc<Mutex<PromptState>>);

#[derive(Default)]
struct PromptState {
    comparison: Option<FlowKey>,
    latest_request: Option<FlowKey>,
}

impl Prompts {
    fn state(&self) -> std::sync::MutexGuard<'_, PromptState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ask_comparison(&self, flow: FlowKey) {
        self.state().comparison = Some(flow);
    }

    fn note_request(&self, flow: FlowKey) {
        self.state().latest_request = Some(flow);
    }

    fn latest_request(&self) -> Option<FlowKey> {
        self.state().latest_request.take()
    }

    /// The flow ended: nothing about it is asked any more.
    fn forget(&self, flow: &FlowKey) {
        let mut state = self.state();
        if state.comparison.as_ref() == Some(flow) {
            state.comparison = None;
        }
        if state.latest_request.as_ref() == Some(flow) {
            state.latest_request = None;
        }
    }

    /// The flow and whether the SAS matches, if `line` answers the
    /// comparison being asked about.
    fn take_answer(&self, line: &str) -> Option<(FlowKey, bool)> {
        let matches = match line {
            "y" | "yes" => true,
            "n" | "no" => false,
            _ => return None,
        };
        let flow = self.state().comparison.take()?;
        Some((flow, matches))
    }
}

/// Confirms the SAS, or cancels with `m.mismatched_sas`.
async fn answer_sas(
    client: &Client,
    (user, transaction_id): FlowKey,
    matches: bool,
) -> Result<bool, Box<dyn std::error::Error>> {
    if matches {
        client.confirm_sas(&user, &transaction_id).await?;
        println!("* confirmed; waiting for {user} to confirm");
    } else {
        client.sas_mismatch(&user, &transaction_id).await?;
        println!("* told {user} the emoji differ; verification cancelled");
    }
    Ok(true)
}

/// Takes each verification's next step after every sync: shows incoming
/// requests, starts SAS on a flow we requested once it is ready (and
/// drops our other requests to that user), accepts the other side's start,
/// shows the emoji and asks, and reports how each flow ends.
async fn drive_verifications(client: Client, prompts: Prompts, synced: Arc<Notify>) {
    let mut shown: BTreeMap<FlowKey, VerificationPhase> = BTreeMap::new();
    let mut started_here: BTreeSet<FlowKey> = BTreeSet::new();
    loop {
        synced.notified().await;
        // A step we take changes the phase: look again until nothing moves.
        loop {
            let Ok(flows) = client.verifications().await else {
                break;
            };
            let mut moved = false;
            for flow in &flows {
                let key = (flow.user_id.clone(), flow.transaction_id.clone());
                if shown.get(&key) == Some(&flow.phase) {
                    continue;
                }
                shown.insert(key.clone(), flow.phase.clone());
                match take_step(&client, &prompts, &flows, flow, &key, &mut started_here).await {
                    Ok(took_step) => moved |= took_step,
                    Err(error) => println!("* verification with {}: {error}", key.0),
                }
            }
            if !moved {
                break;
            }
        }
    }
}

/// Shows one flow's new phase and takes our step in it; returns whether a
/// step was taken.
async fn take_step(
    client: &Client,
    prompts: &Prompts,
    flows: &[Verification],
    flow: &Verification,
    key: &FlowKey,
    started_here: &mut BTreeSet<FlowKey>,
) -> Result<bool, myelin_sdk::Error> {
    let (user, transaction_id) = key;
    let device = flow
        .device_id
        .as_deref()
        .map_or("(any device)", |d| d.as_str());
    match &flow.phase {
        VerificationPhase::Requested if !flow.we_requested => {
            prompts.note_request(key.clone());
            println!(
                "* verification request from {user} {device} ({transaction_id}): /accept to verify"
            );
        }
        VerificationPhase::Ready if flow.we_requested => {
            // Our other requests to this user are no longer needed.
            for other in flows.iter().filter(|other| {
                other.we_requested
                    && other.user_id == flow.user_id
                    && other.transaction_id != flow.transaction_id
                    && other.phase == VerificationPhase::Requested
            }) {
                client
                    .cancel_verification(user, &other.transaction_id)
                    .await?;
            }
            started_here.insert(key.clone());
            client.start_sas(user, transaction_id).await?;
            println!("* {user} {device} is ready; comparing emoji");
            return Ok(true);
        }
        VerificationPhase::Started if !started_here.contains(key) => {
            client.accept_sas(user, transaction_id).await?;
            return Ok(true);
        }
        VerificationPhase::ShowingSas => {
            // Asked before the question is printed: whoever reads the
            // question may answer at once.
            prompts.ask_comparison(key.clone());
            if let Some(emoji) = &flow.emoji {
                let shown: Vec<String> = emoji
                    .iter()
                    .map(|e| format!("{} {}", e.symbol, e.name))
                    .collect();
                println!("* emoji with {user} {device}: {}", shown.join(" | "));
            }
            if let Some([a, b, c]) = flow.decimals {
                println!("* numbers with {user} {device}: {a} {b} {c}");
            }
            println!("* do they match what {user} sees? y/n");
        }
        VerificationPhase::Done => {
            prompts.forget(key);
            println!("* verified {user} {device}");
        }
        VerificationPhase::Cancelled { code, by_us } => {
            prompts.forget(key);
            let by = if *by_us { "by us" } else { "by them" };
            println!(
                "* verification with {user} {device} cancelled {by}: {}",
                code.as_str()
            );
        }
        _ => {}
    }
    Ok(false)
}

fn print_update(update: &SyncUpdate) {
    for invite in &update.invited {
        println!("* invited to {} (/join {0})", invite.room_id);
    }
    let mut shown = Vec::new();
    for (room_id, event) in update.timeline_events() {
        let decryption = if event.event_type == "m.room.encrypted" {
            let id = event.event_id.as_str();
            let decrypted = update.decrypted.iter().find(|d| d.event_id == id);
            let failed = update.undecryptable.iter().find(|(_, u)| u.event_id == id);
            match (decrypted, failed) {
                (Some(decrypted), _) => Some(Ok(decrypted.clone())),
                (None, Some((_, utd))) => Some(Err(utd.clone())),
                (None, None) => None,
            }
        } else {
            None
        };
        print_event(room_id, event, decryption.as_ref());
        shown.push(event.event_id.as_str());
    }
    // Keys that arrived for events of earlier updates.
    for late in update
        .decrypted
        .iter()
        .filter(|d| !shown.contains(&d.event_id.as_str()))
    {
        println!(
            "[{}] {} (earlier, key just arrived): {} {}",
            late.room_id,
            late.sender,
            decrypted_body(late),
            e2e_label(late)
        );
    }
    for left in &update.left {
        println!("* left {}", left.room_id);
    }
    for secret in &update.secrets {
        match secret {
            ReceivedSecret::CrossSigningKeys => {
                println!(
                    "* cross-signing keys received from your other device; this device is verified"
                );
            }
            ReceivedSecret::BackupKey(recovery_key) => {
                println!(
                    "* backup key received; read old messages with /restore {}",
                    recovery_key.as_str()
                );
            }
            _ => {}
        }
    }
}

/// One timeline line: the body, or what the state event set, with how it
/// was protected.
fn print_event(room_id: &OwnedRoomId, event: &RoomEvent, decryption: Option<&Decryption>) {
    match decryption {
        Some(Ok(decrypted)) => println!(
            "[{room_id}] {}: {} {}",
            event.sender,
            decrypted_body(decrypted),
            e2e_label(decrypted)
        ),
        Some(Err(utd)) => println!("[{room_id}] {}: {}", event.sender, utd_label(utd)),
        None => match event.body() {
            Some(body) => println!("[{room_id}] {}: {body} [plaintext]", event.sender),
            None if event.is_state() => {
                println!("[{room_id}] {} set {}", event.sender, event.event_type)
            }
            None => {}
        },
    }
}

fn on_off(word: &str) -> Result<bool, Box<dyn std::error::Error>> {
    match word {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err("say on or off".into()),
    }
}

fn decrypted_body(event: &DecryptedRoomEvent) -> &str {
    event
        .content
        .get("body")
        .and_then(|b| b.as_str())
        .unwrap_or(&event.event_type)
}

fn e2e_label(event: &DecryptedRoomEvent) -> String {
    let trust = match event.verification {
        VerificationState::Verified => "verified",
        VerificationState::Unverified => "unverified",
        VerificationState::Blacklisted => "blacklisted",
        VerificationState::UnknownDevice => "unknown device",
        VerificationState::AuthenticityNotGuaranteed => "authenticity not guaranteed",
    };
    let device = event
        .sender_device
        .as_ref()
        .map_or("?", |device| device.as_str());
    let origin = match (&event.shared_by, event.forwarded) {
        (Some(inviter), _) => format!(", history shared by {inviter}"),
        (None, true) => ", forwarded".to_owned(),
        (None, false) => String::new(),
    };
    format!("[e2e {trust}, device {device}{origin}]")
}

fn utd_label(utd: &UnableToDecrypt) -> String {
    let kind = if utd.cause.is_expected() {
        "expected"
    } else {
        "unexpected"
    };
    format!("** unable to decrypt: {} ({kind}) **", utd.cause.name())
}
