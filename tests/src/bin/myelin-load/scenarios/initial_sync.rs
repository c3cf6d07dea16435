//! Initial sync time for a user in `sync_rooms` rooms with
//! `sync_messages_per_room` messages each: the first call, then repeats.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;

use super::{Ctx, Outcome, message_content, register_many, rooms_with_members};
use crate::{concurrent, matrix, stats, sync_response};

/// Fills the rooms, then times `/sync` without a since token or filter.
pub async fn run(ctx: &Ctx) -> anyhow::Result<Outcome> {
    let (rooms_n, per_room) = (
        ctx.sizes.sync_rooms.max(1),
        ctx.sizes.sync_messages_per_room,
    );
    let accounts = register_many(ctx, "isync", 2).await?;
    let (writer, reader) = (accounts[0].clone(), accounts[1].clone());
    let rooms = rooms_with_members(ctx, &writer, std::slice::from_ref(&reader), rooms_n).await?;

    let total = rooms_n * per_room;
    eprintln!("  filling {rooms_n} rooms with {per_room} messages each ({total} sends)");
    let (api, run_id) = (ctx.api.clone(), ctx.run_id.clone());
    concurrent::run(total, ctx.sizes.senders.max(1), move |i| {
        let (api, writer, room) = (api.clone(), writer.clone(), rooms[i % rooms_n].clone());
        let txn = format!("{run_id}-isync-{i}");
        async move { matrix::send_message(&api, &writer, &room, &txn, &message_content(i, None)).await }
    })
    .await
    .map_err(|e| e.context("filling the rooms"))?;

    let t0 = Instant::now();
    let body = matrix::sync(&ctx.api, &reader, None, None, None)
        .await
        .context("first initial /sync")?;
    let first = t0.elapsed();
    let batch = sync_response::parse(&body).context("first initial /sync")?;
    if batch.joined_rooms < rooms_n {
        bail!(
            "the initial /sync shows {} joined rooms; the user is in {rooms_n}",
            batch.joined_rooms
        );
    }

    let mut repeats: Vec<Duration> = Vec::with_capacity(ctx.sizes.sync_repeats);
    for k in 0..ctx.sizes.sync_repeats {
        let t0 = Instant::now();
        let body = matrix::sync(&ctx.api, &reader, None, None, None)
            .await
            .with_context(|| format!("initial /sync repeat {k}"))?;
        repeats.push(t0.elapsed());
        sync_response::parse(&body).with_context(|| format!("initial /sync repeat {k}"))?;
    }

    let mut outcome = Outcome {
        figures: vec![("first_ms", first.as_secs_f64() * 1e3)],
        params: vec![
            ("rooms", json!(rooms_n)),
            ("messages_per_room", json!(per_room)),
            ("repeats", json!(repeats.len())),
            ("rooms_seen", json!(batch.joined_rooms)),
            ("timeline_events_seen", json!(batch.timeline_events)),
        ],
    };
    if let Some(s) = stats::Summary::of(&repeats) {
        outcome.figures.push(("median_ms", s.p50_ms));
        outcome.figures.push(("max_ms", s.max_ms));
    }
    Ok(outcome)
}
