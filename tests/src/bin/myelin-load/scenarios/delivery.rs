//! Send-to-sync delivery latency: a receiver long-polls `/sync`; a sender
//! sends one marked message at a time and waits until the receiver has it.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{Ctx, Outcome, message_content, register_many, rooms_with_members};
use crate::{
    api::ApiError,
    matrix::{self, Session},
    stats, sync_response,
};

/// The receiver's long-poll timeout.
const LONG_POLL_MS: u64 = 30_000;
/// How long one message may take to show up before the scenario fails.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(30);

/// What the receiver task reports.
enum Seen {
    /// A marker arrived in a sync response that returned at this instant.
    Marker(String, Instant),
    /// The sync loop stopped.
    Failed(anyhow::Error),
}

/// Measures `delivery_count` deliveries after `delivery_warmup` unmeasured ones.
pub async fn run(ctx: &Ctx) -> anyhow::Result<Outcome> {
    let accounts = register_many(ctx, "dlv", 2).await?;
    let (sender, receiver) = (&accounts[0], &accounts[1]);
    let room = rooms_with_members(ctx, sender, std::slice::from_ref(receiver), 1)
        .await?
        .remove(0);
    let filter = receiver_filter(ctx, receiver, &room).await?;

    // Catch up first, so the loop below starts from "now".
    let first = matrix::sync(&ctx.api, receiver, None, Some(&filter), Some(0))
        .await
        .context("receiver's first /sync")?;
    let since = sync_response::parse(&first)?.next_batch;

    let (tx, mut rx) = mpsc::unbounded_channel();
    let poller = tokio::spawn(receive(
        ctx.api.clone(),
        receiver.clone(),
        filter,
        since,
        tx,
    ));
    let result = measure(ctx, sender, &room, &mut rx).await;
    poller.abort();
    result
}

/// A filter that keeps the receiver's responses to this room's messages:
/// uploaded when the server allows it, inline JSON otherwise.
async fn receiver_filter(ctx: &Ctx, receiver: &Session, room: &str) -> anyhow::Result<String> {
    let filter = json!({
        "presence": {"types": []},
        "account_data": {"types": []},
        "room": {
            "rooms": [room],
            "timeline": {"limit": 50, "types": ["m.room.message"]},
            "state": {"types": [], "lazy_load_members": true},
            "ephemeral": {"types": []},
            "account_data": {"types": []}
        }
    });
    match matrix::upload_filter(&ctx.api, receiver, &filter).await {
        Ok(id) => Ok(id),
        Err(e) if e.downcast_ref::<ApiError>().is_some() => {
            eprintln!("  filter upload failed ({e}); using an inline filter");
            Ok(filter.to_string())
        }
        Err(e) => Err(e),
    }
}

/// The receiver's sync loop: reports every marker with the instant its
/// response arrived, until the channel closes or a sync fails.
async fn receive(
    api: crate::api::Api,
    receiver: Session,
    filter: String,
    mut since: String,
    tx: mpsc::UnboundedSender<Seen>,
) {
    loop {
        let answer = matrix::sync(
            &api,
            &receiver,
            Some(&since),
            Some(&filter),
            Some(LONG_POLL_MS),
        )
        .await;
        let arrived = Instant::now();
        let batch = answer
            .and_then(|body: Value| sync_response::parse(&body))
            .context("receiver's long-poll /sync");
        match batch {
            Ok(batch) => {
                since = batch.next_batch;
                for marker in batch.markers {
                    if tx.send(Seen::Marker(marker, arrived)).is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                let _ = tx.send(Seen::Failed(e));
                return;
            }
        }
    }
}

async fn measure(
    ctx: &Ctx,
    sender: &Session,
    room: &str,
    rx: &mut mpsc::UnboundedReceiver<Seen>,
) -> anyhow::Result<Outcome> {
    let (warmup, count) = (ctx.sizes.delivery_warmup, ctx.sizes.delivery_count);
    let mut delivery = Vec::with_capacity(count);
    let mut send = Vec::with_capacity(count);
    eprintln!("  {warmup} warm-up + {count} measured messages, one at a time");
    for i in 0..warmup + count {
        let marker = format!("{}-dlv-{i}", ctx.run_id);
        let t0 = Instant::now();
        matrix::send_message(
            &ctx.api,
            sender,
            room,
            &marker,
            &message_content(i, Some(&marker)),
        )
        .await
        .with_context(|| format!("sending delivery message {i}"))?;
        let sent = t0.elapsed();
        let seen_at = wait_for(rx, &marker, t0 + DELIVERY_DEADLINE)
            .await
            .with_context(|| format!("delivery message {i}"))?;
        if i >= warmup {
            delivery.push(seen_at.saturating_duration_since(t0));
            send.push(sent);
        }
        tokio::time::sleep(ctx.sizes.delivery_gap).await;
    }
    let mut outcome = Outcome {
        figures: Vec::new(),
        params: vec![
            ("messages", json!(count)),
            ("warmup", json!(warmup)),
            ("gap_ms", json!(ctx.sizes.delivery_gap.as_millis() as u64)),
            ("long_poll_ms", json!(LONG_POLL_MS)),
        ],
    };
    if let Some(s) = stats::Summary::of(&delivery) {
        outcome.figures.extend([
            ("delivery_p50_ms", s.p50_ms),
            ("delivery_p90_ms", s.p90_ms),
            ("delivery_p99_ms", s.p99_ms),
            ("delivery_max_ms", s.max_ms),
        ]);
    }
    if let Some(s) = stats::Summary::of(&send) {
        outcome.figures.push(("send_p50_ms", s.p50_ms));
    }
    Ok(outcome)
}

/// Waits until the receiver reports `marker`; other markers are stale and skipped.
async fn wait_for(
    rx: &mut mpsc::UnboundedReceiver<Seen>,
    marker: &str,
    deadline: Instant,
) -> anyhow::Result<Instant> {
    loop {
        let next = tokio::time::timeout_at(deadline.into(), rx.recv()).await;
        match next {
            Err(_) => bail!(
                "not seen by the receiver's /sync within {} s",
                DELIVERY_DEADLINE.as_secs()
            ),
            Ok(None) => bail!("the receiver's sync loop stopped"),
            Ok(Some(Seen::Failed(e))) => return Err(e),
            Ok(Some(Seen::Marker(m, at))) if m == marker => return Ok(at),
            Ok(Some(Seen::Marker(..))) => {}
        }
    }
}
