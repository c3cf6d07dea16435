//! Idle long-polls: many `/sync` requests parked at once should cost the
//! server little memory and no CPU, and a message should wake exactly the
//! polls of users who may see it. Half the polls are a room member's, half
//! an outsider's; one message to the room must answer all of the member's
//! and none of the outsider's.

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::json;
use tokio::{sync::mpsc, task::JoinSet};

use super::{Ctx, Outcome, message_content, register_many, rooms_with_members};
use crate::{
    matrix::{self, Session},
    memory, stats, sync_response,
};

/// Longer than the whole scenario: no poll ends by its own timeout.
const LONG_POLL_MS: u64 = 120_000;
/// How long the parked polls are watched for the server's CPU time.
const IDLE_WINDOW: Duration = Duration::from_secs(3);
/// How long waking the polls may take before the scenario fails.
const DEADLINE: Duration = Duration::from_secs(60);
/// How often the server's open files are counted while the polls connect.
const CONNECT_CHECK: Duration = Duration::from_millis(50);
/// The polls are taken as connected once the server's open files stop
/// growing for this long (a server may also close idle connections of the
/// set-up, so the count need not reach one per poll).
const CONNECT_SETTLED: Duration = Duration::from_secs(2);

/// Whose poll answered, and when.
struct Answered {
    member: bool,
    at: Instant,
    result: anyhow::Result<()>,
}

/// Parks `idle_polls` long-polls (one connection each), measures the
/// server's memory and CPU time while they wait, then wakes them.
pub async fn run(ctx: &Ctx) -> anyhow::Result<Outcome> {
    let pid = ctx
        .server_pid
        .context("idle-polls reads the server's memory and CPU time: pass --server-pid")?;
    let polls = ctx.sizes.idle_polls.max(2);
    let accounts = register_many(ctx, "idle", 3).await?;
    let (sender, member, outsider) = (&accounts[0], &accounts[1], &accounts[2]);
    let room = rooms_with_members(ctx, sender, std::slice::from_ref(member), 1)
        .await?
        .remove(0);
    let member_since = current_token(ctx, member).await?;
    let outsider_since = current_token(ctx, outsider).await?;

    let (files_before, rss_before) = (memory::open_files(pid)?, memory::read(pid)?.rss_kib);
    // A client of their own, with no idle connections to reuse: every poll
    // opens one, so the server's open files count them.
    let poll_api = crate::api::Api::new(ctx.api.base(), 0)?;
    let (tx, mut answers) = mpsc::unbounded_channel();
    let mut tasks = JoinSet::new();
    for i in 0..polls {
        let member_poll = i % 2 == 0;
        let (session, since) = if member_poll {
            (member.clone(), member_since.clone())
        } else {
            (outsider.clone(), outsider_since.clone())
        };
        tasks.spawn(poll(
            poll_api.clone(),
            session,
            since,
            member_poll,
            tx.clone(),
        ));
    }
    let connect_started = Instant::now();
    let held = held_connections(pid, files_before, polls).await?;
    let connect_time = connect_started.elapsed();

    let cpu_before = memory::cpu_time(pid)?;
    tokio::time::sleep(IDLE_WINDOW).await;
    let idle_cpu = memory::cpu_time(pid)?.saturating_sub(cpu_before);
    let rss_parked = memory::read(pid)?.rss_kib;
    if let Ok(early) = answers.try_recv() {
        bail!(
            "a long-poll returned before anything was sent ({})",
            early
                .result
                .err()
                .map_or("empty answer".to_owned(), |e| format!("{e:#}"))
        );
    }

    let sent_at = Instant::now();
    matrix::send_message(
        &ctx.api,
        sender,
        &room,
        &format!("{}-idle", ctx.run_id),
        &message_content(0, None),
    )
    .await
    .context("sending the waking message")?;
    let (mut woken, mut outsiders_woken) = (Vec::with_capacity(polls / 2), 0);
    let members = polls.div_ceil(2);
    while woken.len() < members {
        let answer = tokio::time::timeout_at((sent_at + DEADLINE).into(), answers.recv())
            .await
            .with_context(|| format!("{} of {members} member polls woke", woken.len()))?
            .context("the polls stopped")?;
        answer.result.context("a woken long-poll")?;
        if answer.member {
            woken.push(answer.at.saturating_duration_since(sent_at));
        } else {
            outsiders_woken += 1;
        }
    }
    // Whatever the outsider's polls answer now, they answered after every
    // member's had: counted too.
    while let Ok(answer) = answers.try_recv() {
        outsiders_woken += usize::from(!answer.member);
    }
    tasks.abort_all();

    let wake = stats::Summary::of(&woken).context("no poll woke")?;
    Ok(Outcome {
        figures: vec![
            (
                "rss_per_1000_polls_mib",
                memory::mib(rss_parked.saturating_sub(rss_before)) * 1000.0 / held as f64,
            ),
            (
                "idle_cpu_percent",
                idle_cpu.as_secs_f64() / IDLE_WINDOW.as_secs_f64() * 100.0,
            ),
            ("wake_p50_ms", wake.p50_ms),
            ("wake_all_ms", wake.max_ms),
            ("outsider_polls_woken", outsiders_woken as f64),
        ],
        params: vec![
            ("polls", json!(polls)),
            ("connections_held", json!(held)),
            ("member_polls", json!(members)),
            ("idle_window_s", json!(IDLE_WINDOW.as_secs())),
            (
                "connect_s",
                json!((connect_time.as_secs_f64() * 10.0).round() / 10.0),
            ),
            (
                "server_rss_parked_mib",
                json!((memory::mib(rss_parked) * 10.0).round() / 10.0),
            ),
        ],
    })
}

/// Waits until the server holds a connection for each of `polls` (its open
/// files grew by that much since `files_before`) or its open files stopped
/// growing; returns how many it holds.
async fn held_connections(pid: u32, files_before: usize, polls: usize) -> anyhow::Result<usize> {
    let (mut held, mut grew_at) = (0, Instant::now());
    loop {
        let now_held = memory::open_files(pid)?.saturating_sub(files_before);
        if now_held > held {
            (held, grew_at) = (now_held, Instant::now());
        }
        if held >= polls || grew_at.elapsed() >= CONNECT_SETTLED {
            ensure!(held > 0, "the server took none of the {polls} connections");
            return Ok(held);
        }
        tokio::time::sleep(CONNECT_CHECK).await;
    }
}

/// The `next_batch` of an immediate sync: the point the polls wait from.
async fn current_token(ctx: &Ctx, session: &Session) -> anyhow::Result<String> {
    let body = matrix::sync(&ctx.api, session, None, None, Some(0))
        .await
        .context("initial /sync")?;
    Ok(sync_response::parse(&body)?.next_batch)
}

/// One long-poll from `since`, reported when it answers.
async fn poll(
    api: crate::api::Api,
    session: Session,
    since: String,
    member: bool,
    tx: mpsc::UnboundedSender<Answered>,
) {
    let result = matrix::sync(&api, &session, Some(&since), None, Some(LONG_POLL_MS))
        .await
        .map(drop);
    let _ = tx.send(Answered {
        member,
        at: Instant::now(),
        result,
    });
}
