//! A small terminal chat client on myelin-sdk: log in (or register),
//! restore the session from a SQLite store on later runs, sync in the
//! background, and send what you type to the current room.
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
//! Commands: `/create NAME`, `/join ROOM`, `/switch ROOM`, `/invite USER`,
//! `/rooms`, `/history`, `/leave`, `/quit`; anything else is sent to the
//! current room.

use std::{sync::Arc, time::Duration};

use myelin_sdk::{
    Changes, Client, CreateRoom, LoopControl, Registration, RoomSecurity, SqliteStore,
    SyncSettings, SyncUpdate,
    ruma::{OwnedRoomId, OwnedUserId},
};
use tokio::sync::mpsc;

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
        match run_command(&client, &mut current, line.trim()).await {
            Ok(true) => {}
            Ok(false) => break,
            Err(error) => println!("* error: {error}"),
        }
    }
    syncing.abort();
    Ok(())
}

/// Runs one input line; `Ok(false)` means quit.
async fn run_command(
    client: &Client,
    current: &mut Option<OwnedRoomId>,
    line: &str,
) -> Result<bool, Box<dyn std::error::Error>> {
    let (command, rest) = line.split_once(' ').unwrap_or((line, ""));
    match command {
        "" => {}
        "/quit" => return Ok(false),
        "/create" => {
            let room = client
                .create_room(CreateRoom {
                    name: (!rest.is_empty()).then(|| rest.to_owned()),
                    // Until the crypto machine lands the SDK cannot encrypt,
                    // and it refuses to send plaintext to encrypted rooms.
                    security: RoomSecurity::Plain,
                    ..CreateRoom::default()
                })
                .await?;
            println!("* created {}", room.room_id());
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
                    if room.is_encrypted() {
                        ", encrypted"
                    } else {
                        ""
                    },
                );
            }
        }
        "/invite" | "/history" | "/leave" => {
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
                _ => {
                    let page = room.messages(None, 20).await?;
                    for event in page.events.iter().rev() {
                        println!(
                            "  {} {}: {}",
                            event.event_id,
                            event.sender,
                            event.body().unwrap_or(&event.event_type)
                        );
                    }
                }
            }
        }
        _ => {
            let room_id = current
                .as_ref()
                .ok_or("no current room: /join or /create first")?;
            let room = client.room(room_id);
            room.typing(false, Duration::ZERO).await.ok();
            room.send_text(line).await?;
        }
    }
    Ok(true)
}

fn print_update(update: &SyncUpdate) {
    for invite in &update.invited {
        println!("* invited to {} (/join {0})", invite.room_id);
    }
    for (room_id, event) in update.timeline_events() {
        match event.body() {
            Some(body) => println!("[{room_id}] {}: {body}", event.sender),
            None if event.is_state() => {
                println!("[{room_id}] {} set {}", event.sender, event.event_type)
            }
            None => {}
        }
    }
    for left in &update.left {
        println!("* left {}", left.room_id);
    }
}
