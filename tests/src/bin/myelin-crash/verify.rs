//! The checks after each restart, with the load stopped: what the clients
//! were told against what the server now serves.

use std::collections::{BTreeMap, HashMap, HashSet};

use anyhow::Context;
use reqwest::Method;
use serde_json::{Value, json};

use crate::{
    api::{Api, REQUEST_TIMEOUT, encode_segment},
    ledger::{AckedEvent, AckedMedia, Findings, Ledger},
    matrix,
    observer::{self, Checkpoint, Delivered, Observer},
    ops::pointer_segment,
    world::World,
};

/// How far the checks of media and accounts got (each is checked once
/// per cycle after it was acknowledged, and all again at the end).
#[derive(Debug, Default)]
pub struct Progress {
    media: usize,
    accounts: usize,
}

/// Checks everything the ledger holds except media and accounts already
/// checked (all of them when `is_final`), and the sync tokens in
/// `resumed`, all handed out before the last kill.
pub async fn check(
    api: &Api,
    world: &World,
    ledger: &mut Ledger,
    observer: &Observer,
    resumed: &[Checkpoint],
    progress: &mut Progress,
    is_final: bool,
) -> anyhow::Result<()> {
    let mut findings = std::mem::take(&mut ledger.findings);
    room_events(&ledger.events, &observer.delivered, &mut findings);
    to_device(ledger, &observer.to_device, &mut findings);
    for checkpoint in resumed {
        resumed_token(api, world, ledger, observer, checkpoint, &mut findings).await?;
    }
    one_time_keys(api, world, ledger, &mut findings).await?;
    device_keys(api, world, ledger, &mut findings).await?;
    backup(api, world, ledger, &mut findings).await?;
    if is_final {
        *progress = Progress::default();
        for room_id in &world.rooms {
            room_history(api, world, ledger, room_id, &mut findings).await?;
        }
    }
    media(world, api, &ledger.media[progress.media..], &mut findings).await?;
    progress.media = ledger.media.len();
    for account in &ledger.accounts[progress.accounts..] {
        let session = matrix::Session {
            user_id: account.user_id.clone(),
            token: account.token.clone(),
        };
        let reply = api
            .request(
                Method::GET,
                "/account/whoami",
                Some(&session.token),
                None,
                REQUEST_TIMEOUT,
            )
            .await?;
        if !reply.status.is_success() {
            findings.lost.insert(format!(
                "the acknowledged registration of {} ({})",
                session.user_id, reply.status
            ));
        }
    }
    progress.accounts = ledger.accounts.len();
    ledger.findings = findings;
    Ok(())
}

/// Every acknowledged send delivered to the observer exactly once, with
/// the event id its sender was given.
fn room_events<'a>(
    acked: impl IntoIterator<Item = (&'a String, &'a AckedEvent)>,
    delivered: &[Delivered],
    findings: &mut Findings,
) {
    let mut by_marker: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut times: HashMap<&str, usize> = HashMap::new();
    for event in delivered {
        by_marker
            .entry(&event.marker)
            .or_default()
            .push(&event.event_id);
        *times.entry(&event.event_id).or_default() += 1;
    }
    for (event_id, n) in &times {
        if *n > 1 {
            findings
                .duplicated
                .insert(format!("event {event_id} delivered {n} times"));
        }
    }
    for (marker, ids) in &by_marker {
        let distinct: HashSet<&&str> = ids.iter().collect();
        if distinct.len() > 1 {
            findings.duplicated.insert(format!(
                "transaction {marker} stored as {} events",
                distinct.len()
            ));
        }
    }
    for (marker, acked) in acked {
        let finding = match by_marker.get(marker.as_str()) {
            None => format!(
                "event {} (transaction {marker}) in {} was never delivered",
                acked.event_id, acked.room_id
            ),
            Some(ids) if !ids.contains(&acked.event_id.as_str()) => format!(
                "transaction {marker} was answered {} but {} was delivered",
                acked.event_id, ids[0]
            ),
            Some(_) => continue,
        };
        findings.lost.insert(finding);
    }
}

/// Every acknowledged to-device message delivered exactly once.
fn to_device(ledger: &Ledger, delivered: &[String], findings: &mut Findings) {
    let mut times: HashMap<&str, usize> = HashMap::new();
    for marker in delivered {
        *times.entry(marker).or_default() += 1;
    }
    for (marker, n) in &times {
        if *n > 1 {
            findings
                .duplicated
                .insert(format!("to-device message {marker} delivered {n} times"));
        }
    }
    for marker in &ledger.to_device {
        if !times.contains_key(marker.as_str()) {
            findings
                .lost
                .insert(format!("to-device message {marker} was never delivered"));
        }
    }
}

/// `/sync?since=TOKEN` from another device of the observer's account:
/// together with what the observer had been delivered up to the token it
/// holds every acknowledged event, and nothing twice.
async fn resumed_token(
    api: &Api,
    world: &World,
    ledger: &Ledger,
    observer: &Observer,
    checkpoint: &Checkpoint,
    findings: &mut Findings,
) -> anyhow::Result<()> {
    let before: HashSet<&str> = observer.delivered[..checkpoint.delivered]
        .iter()
        .map(|event| event.event_id.as_str())
        .collect();
    let session = world.checker.session();
    let mut since = checkpoint.token.clone();
    let mut after: Vec<String> = Vec::new();
    loop {
        let body = matrix::sync(api, &session, Some(&since), Some(observer::FILTER), Some(0))
            .await
            .context("resuming a sync token")?;
        let batch = observer::read_batch(&body)?;
        since = batch.next_batch;
        if batch.events.is_empty() {
            break;
        }
        after.extend(batch.events.into_iter().map(|event| event.event_id));
    }
    let mut seen = HashSet::new();
    for event_id in &after {
        if before.contains(event_id.as_str()) || !seen.insert(event_id.as_str()) {
            findings
                .gaps
                .insert(format!("since={} repeated {event_id}", checkpoint.token));
        }
    }
    for acked in ledger.events.values() {
        if !before.contains(acked.event_id.as_str()) && !seen.contains(acked.event_id.as_str()) {
            findings.gaps.insert(format!(
                "since={} skipped {}",
                checkpoint.token, acked.event_id
            ));
        }
    }
    Ok(())
}

/// Each device's count of unclaimed one-time keys lies between what was
/// surely uploaded and not claimed, and what may have been; no key was
/// claimed that was never uploaded.
async fn one_time_keys(
    api: &Api,
    world: &World,
    ledger: &Ledger,
    findings: &mut Findings,
) -> anyhow::Result<()> {
    let mut claimed: BTreeMap<usize, HashSet<&str>> = BTreeMap::new();
    for (owner, key_id) in ledger.claimed.keys() {
        claimed.entry(*owner).or_default().insert(key_id);
    }
    for (index, client) in world.clients.iter().enumerate() {
        let surely = ledger.uploaded_keys.get(&index);
        let maybe = ledger.maybe_uploaded_keys.get(&index);
        let is_uploaded = |key: &str| {
            surely.is_some_and(|s| s.contains(key)) || maybe.is_some_and(|m| m.contains(key))
        };
        let claimed = claimed.remove(&index).unwrap_or_default();
        for key in &claimed {
            if !is_uploaded(key) {
                findings.duplicated.insert(format!(
                    "one-time key {key} of client {index} was claimed but never uploaded"
                ));
            }
        }
        let surely_left = surely.map_or(0, |s| {
            s.iter().filter(|k| !claimed.contains(k.as_str())).count()
        });
        let at_most = surely
            .into_iter()
            .flatten()
            .chain(maybe.into_iter().flatten())
            .filter(|k| !claimed.contains(k.as_str()))
            .collect::<HashSet<_>>()
            .len();
        let unknown_claims = ledger.unknown_claims.get(&index).copied().unwrap_or(0) as usize;
        let at_least = surely_left.saturating_sub(unknown_claims);
        let counts = api
            .call(
                Method::POST,
                "/keys/upload",
                Some(&client.token),
                Some(&json!({})),
                REQUEST_TIMEOUT,
            )
            .await?;
        let count = counts
            .pointer("/one_time_key_counts/curve25519")
            .and_then(Value::as_u64)
            .unwrap_or(0) as usize;
        if count < at_least {
            findings.lost.insert(format!(
                "client {index} has {count} one-time keys, at least {at_least} were uploaded and never claimed"
            ));
        }
        if count > at_most {
            findings.duplicated.insert(format!(
                "client {index} has {count} one-time keys, at most {at_most} can be left"
            ));
        }
    }
    Ok(())
}

/// Every client whose key upload was acknowledged has its device keys served.
async fn device_keys(
    api: &Api,
    world: &World,
    ledger: &Ledger,
    findings: &mut Findings,
) -> anyhow::Result<()> {
    let wanted: serde_json::Map<String, Value> = ledger
        .device_keys
        .iter()
        .map(|&index| (world.clients[index].user_id.clone(), json!([])))
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let answer = api
        .call(
            Method::POST,
            "/keys/query",
            Some(&world.observer.token),
            Some(&json!({"device_keys": wanted})),
            REQUEST_TIMEOUT,
        )
        .await?;
    for &index in &ledger.device_keys {
        let client = &world.clients[index];
        let served = answer.pointer(&format!(
            "/device_keys/{}/{}",
            pointer_segment(&client.user_id),
            pointer_segment(&client.device_id)
        ));
        let key = |keys: Option<&Value>| {
            keys.and_then(|k| {
                k.pointer(&format!(
                    "/keys/ed25519:{}",
                    pointer_segment(&client.device_id)
                ))
            })
            .cloned()
        };
        if key(served).is_none() || key(served) != key(Some(&client.device_keys)) {
            findings
                .lost
                .insert(format!("the device keys of client {index}"));
        }
    }
    Ok(())
}

/// Every acknowledged backup key is in its client's backup.
async fn backup(
    api: &Api,
    world: &World,
    ledger: &Ledger,
    findings: &mut Findings,
) -> anyhow::Result<()> {
    for (&index, sessions) in &ledger.backup {
        let client = &world.clients[index];
        let answer = api
            .call(
                Method::GET,
                &format!(
                    "/room_keys/keys?version={}",
                    encode_segment(&client.backup_version)
                ),
                Some(&client.token),
                None,
                REQUEST_TIMEOUT,
            )
            .await?;
        for (room_id, session) in sessions {
            let path = format!(
                "/rooms/{}/sessions/{}",
                pointer_segment(room_id),
                pointer_segment(session)
            );
            if answer.pointer(&path).is_none() {
                findings
                    .lost
                    .insert(format!("backup key {session} of client {index}"));
            }
        }
    }
    Ok(())
}

/// Every acknowledged upload downloads with the bytes sent.
async fn media(
    world: &World,
    api: &Api,
    uploads: &[AckedMedia],
    findings: &mut Findings,
) -> anyhow::Result<()> {
    for upload in uploads {
        let path = upload
            .content_uri
            .strip_prefix("mxc://")
            .with_context(|| format!("{} is not an mxc URI", upload.content_uri))?;
        let response = world
            .http
            .get(format!(
                "{}/_matrix/client/v1/media/download/{path}",
                api.base()
            ))
            .bearer_auth(&world.observer.token)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .context("downloading media")?;
        let status = response.status();
        let bytes = response.bytes().await.context("downloading media")?;
        if !status.is_success() || bytes.as_ref() != upload.bytes.as_slice() {
            findings
                .lost
                .insert(format!("media {} ({status})", upload.content_uri));
        }
    }
    Ok(())
}

/// The room's whole history through `/messages`: every acknowledged event
/// of the room exactly once, no transaction stored twice.
async fn room_history(
    api: &Api,
    world: &World,
    ledger: &Ledger,
    room_id: &str,
    findings: &mut Findings,
) -> anyhow::Result<()> {
    let mut from: Option<String> = None;
    let mut events: Vec<Delivered> = Vec::new();
    loop {
        let mut path = format!(
            "/rooms/{}/messages?dir=b&limit=1000",
            encode_segment(room_id)
        );
        if let Some(from) = &from {
            path.push_str(&format!("&from={}", encode_segment(from)));
        }
        let page = api
            .call(
                Method::GET,
                &path,
                Some(&world.observer.token),
                None,
                REQUEST_TIMEOUT,
            )
            .await?;
        let chunk = page.get("chunk").and_then(Value::as_array);
        let chunk_len = chunk.map_or(0, Vec::len);
        events.extend(
            chunk
                .into_iter()
                .flatten()
                .filter_map(observer::marked_event),
        );
        match page.get("end").and_then(Value::as_str) {
            Some(end) if chunk_len > 0 => from = Some(end.to_owned()),
            _ => break,
        }
    }
    let mut room_findings = Findings::default();
    let in_room = ledger
        .events
        .iter()
        .filter(|(_, acked)| acked.room_id == room_id);
    room_events(in_room, &events, &mut room_findings);
    let label = |finding: String| format!("/messages of {room_id}: {finding}");
    findings
        .lost
        .extend(room_findings.lost.into_iter().map(label));
    findings
        .duplicated
        .extend(room_findings.duplicated.into_iter().map(label));
    Ok(())
}
