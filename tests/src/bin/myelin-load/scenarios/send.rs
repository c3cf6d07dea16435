//! Message throughput: `senders` accounts send concurrently into one room or
//! spread over several, for a fixed count or a fixed duration.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::json;

use super::{Ctx, Outcome, message_content, register_many, rooms_with_members};
use crate::{concurrent, matrix, stats};

/// Sends into `rooms` rooms; `tag` keeps the account names of the variants apart.
pub async fn run(ctx: &Ctx, rooms: usize, tag: &'static str) -> anyhow::Result<Outcome> {
    let senders_n = ctx.sizes.senders.max(1);
    let rooms_n = rooms.max(1);
    let role = if tag == "one" { "send1" } else { "sendn" };
    let senders = register_many(ctx, role, senders_n).await?;
    let room_ids = rooms_with_members(ctx, &senders[0], &senders[1..], rooms_n).await?;
    eprintln!(
        "  {senders_n} senders in {rooms_n} room(s); sending {}",
        match ctx.sizes.duration {
            Some(d) => format!("for {} s", d.as_secs_f64()),
            None => format!("{} messages", ctx.sizes.messages),
        }
    );

    // One unmeasured message per sender warms connections and server caches.
    let (api, s, r, run_id) = (
        ctx.api.clone(),
        senders.clone(),
        room_ids.clone(),
        ctx.run_id.clone(),
    );
    concurrent::run(senders_n, senders_n, move |k| {
        let (api, sender, room) = (api.clone(), s[k].clone(), r[k % r.len()].clone());
        let txn = format!("{run_id}-{role}-warm-{k}");
        async move { matrix::send_message(&api, &sender, &room, &txn, &message_content(k, None)).await }
    })
    .await
    .map_err(|e| e.context("warm-up sends"))?;

    let limit = match ctx.sizes.duration {
        Some(_) => usize::MAX,
        None => ctx.sizes.messages,
    };
    let next = Arc::new(AtomicUsize::new(0));
    let room_ids = Arc::new(room_ids);
    let started = Instant::now();
    let deadline = ctx.sizes.duration.map(|d| started + d);
    let (api, s, run_id) = (ctx.api.clone(), senders.clone(), ctx.run_id.clone());
    let per_sender: Vec<Vec<Duration>> = concurrent::run(senders_n, senders_n, move |k| {
        let (api, sender, rooms, next) =
            (api.clone(), s[k].clone(), room_ids.clone(), next.clone());
        let run_id = run_id.clone();
        async move {
            let mut latencies = Vec::new();
            loop {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= limit {
                    break;
                }
                let room = &rooms[i % rooms.len()];
                let txn = format!("{run_id}-{role}-{i}");
                let t0 = Instant::now();
                matrix::send_message(&api, &sender, room, &txn, &message_content(i, None))
                    .await
                    .map_err(|e| e.context(format!("message {i} from sender {k}")))?;
                latencies.push(t0.elapsed());
            }
            Ok(latencies)
        }
    })
    .await?;
    let elapsed = started.elapsed();
    let latencies: Vec<Duration> = per_sender.into_iter().flatten().collect();
    let sent = latencies.len();
    let mut outcome = Outcome {
        figures: vec![("messages_per_s", stats::rate(sent, elapsed))],
        params: vec![
            ("senders", json!(senders_n)),
            ("rooms", json!(rooms_n)),
            ("messages", json!(sent)),
            ("elapsed_s", json!(elapsed.as_secs_f64())),
        ],
    };
    if let Some(s) = stats::Summary::of(&latencies) {
        outcome.figures.push(("send_p50_ms", s.p50_ms));
        outcome.figures.push(("send_p99_ms", s.p99_ms));
    }
    Ok(outcome)
}
