//! `myelin-load`: measures a homeserver through the standard Client-Server
//! API only (registration rate, message throughput and latency, send-to-sync
//! delivery, initial sync, server memory), so the same run can be pointed at
//! Myelin, Synapse or any other homeserver. Prints a table, writes JSON, and
//! compares two JSON results side by side.

mod api;
mod compare;
mod concurrent;
mod host;
mod matrix;
mod memory;
mod report;
mod scenarios;
mod stats;
mod sync_response;

use std::{
    collections::hash_map::RandomState,
    hash::{BuildHasher, Hasher},
    path::PathBuf,
    process::ExitCode,
    time::{Duration, SystemTime},
};

use anyhow::Context;
use clap::Parser;
use serde_json::json;

use crate::{
    report::{Record, RunInfo},
    scenarios::{Ctx, Outcome, Scenario, Sizes},
};

/// Load-test a Matrix homeserver over the standard Client-Server API (v3).
///
/// Runs the chosen scenarios one after another against --homeserver, prints
/// a table and, with --json, writes one object per scenario. A failed
/// scenario is reported (endpoint, status, errcode) and the run goes on;
/// the exit status is 1 if any failed. Every run uses fresh accounts
/// (random suffix), so the same server can be measured repeatedly.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Homeserver base URL, e.g. http://127.0.0.1:8008.
    #[arg(long, required_unless_present = "compare")]
    homeserver: Option<String>,
    /// Name for this run in the table and JSON [default: the URL].
    #[arg(long)]
    label: Option<String>,
    /// Write the results to this JSON file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Scenarios to run, comma-separated [default: all but idle-polls, in this order].
    #[arg(long, value_delimiter = ',')]
    scenarios: Option<Vec<Scenario>>,
    /// Server process id: report its resident memory (VmRSS) at start and end.
    #[arg(long)]
    server_pid: Option<u32>,

    /// register: accounts to register.
    #[arg(long, default_value_t = 100)]
    users: usize,
    /// Requests in flight for registration and set-up (account creation, joins).
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// send-*: concurrent senders (also the writers that fill initial-sync rooms).
    #[arg(long, default_value_t = 8)]
    senders: usize,
    /// send-*: messages per scenario.
    #[arg(long, default_value_t = 2000)]
    messages: usize,
    /// send-*: send for this many seconds instead of --messages.
    #[arg(long)]
    duration: Option<f64>,
    /// send-spread-rooms: rooms to spread the messages over.
    #[arg(long, default_value_t = 20)]
    spread_rooms: usize,
    /// delivery: measured messages.
    #[arg(long, default_value_t = 200)]
    delivery_count: usize,
    /// delivery: unmeasured messages sent first.
    #[arg(long, default_value_t = 5)]
    delivery_warmup: usize,
    /// delivery: pause after each delivery, so the receiver is back in its long-poll.
    #[arg(long, default_value_t = 20)]
    delivery_gap_ms: u64,
    /// initial-sync: rooms the user is in.
    #[arg(long, default_value_t = 20)]
    sync_rooms: usize,
    /// initial-sync: messages in each room.
    #[arg(long, default_value_t = 100)]
    sync_messages: usize,
    /// initial-sync: initial syncs timed after the first (median reported).
    #[arg(long, default_value_t = 10)]
    sync_repeats: usize,
    /// idle-polls: long-polls parked at once (one connection each).
    #[arg(long, default_value_t = 2000)]
    idle_polls: usize,
    /// Retries of one request answered 429 before giving up.
    #[arg(long, default_value_t = 50)]
    max_retries: u32,

    /// Compare two result files instead of running: BASE.json OTHER.json.
    #[arg(long, num_args = 2, value_names = ["BASE_JSON", "OTHER_JSON"], conflicts_with = "homeserver")]
    compare: Option<Vec<PathBuf>>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("myelin-load: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Ok(true) when every scenario succeeded.
async fn run(cli: Cli) -> anyhow::Result<bool> {
    if let Some(files) = &cli.compare {
        let (base, other) = (compare::load(&files[0])?, compare::load(&files[1])?);
        print!("{}", compare::table(&base, &other));
        return Ok(true);
    }
    let homeserver = cli.homeserver.clone().context("--homeserver is required")?;
    let api = api::Api::new(&homeserver, cli.max_retries)?;
    let versions = api.versions().await?;
    let label = cli.label.clone().unwrap_or_else(|| api.base().to_owned());
    let run_id = random_tag();
    eprintln!(
        "myelin-load: {label} at {} (spec versions: {}); run {run_id}",
        api.base(),
        versions.join(" ")
    );

    if let Some(load) = host::load_average_1m()
        && load > 0.5 * host::cpus() as f64
    {
        eprintln!(
            "myelin-load: warning: the machine is busy (1-minute load average {load} on {} CPUs); \
             figures will be noisy",
            host::cpus()
        );
    }
    let start_memory = cli
        .server_pid
        .map(|pid| memory::read(pid).map_err(|e| format!("{e:#}")));
    let mut ctx = Ctx {
        api: api.clone(),
        run_id: run_id.clone(),
        sizes: sizes(&cli)?,
        server_pid: cli.server_pid,
    };
    let mut records = Vec::new();
    let chosen = cli
        .scenarios
        .clone()
        .unwrap_or_else(|| Scenario::ALL.to_vec());
    for (k, scenario) in chosen.into_iter().enumerate() {
        // A scenario may be listed twice: each run gets its own accounts.
        ctx.run_id = format!("{run_id}s{k}");
        eprintln!("{}: running", scenario.name());
        let (retries_before, started) = (api.retries(), SystemTime::now());
        let mut result = scenarios::run(scenario, &ctx)
            .await
            .map_err(|e| format!("{e:#}"));
        if let (Ok(outcome), Some(load)) = (&mut result, host::load_average_1m()) {
            outcome.params.push(("host_load_1m", json!(load)));
        }
        if let (Ok(outcome), Some(pid)) = (&mut result, cli.server_pid)
            && let Ok(m) = memory::read(pid)
        {
            outcome.params.push((
                "server_rss_after_mib",
                json!(round1(memory::mib(m.rss_kib))),
            ));
        }
        match &result {
            Ok(_) => eprintln!("{}: done", scenario.name()),
            Err(e) => eprintln!("{}: FAILED: {e}", scenario.name()),
        }
        records.push(Record {
            scenario: scenario.name(),
            started,
            result,
            retries_429: api.retries() - retries_before,
        });
    }
    if let Some(start) = start_memory {
        records.push(memory_record(start, cli.server_pid.unwrap_or_default()));
    }

    let info = RunInfo {
        label: &label,
        homeserver: api.base(),
    };
    print!("{}", report::table(&info, &records));
    if let Some(path) = &cli.json {
        let text = serde_json::to_string_pretty(&report::to_json(&info, &records))?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
        eprintln!("myelin-load: wrote {}", path.display());
    }
    Ok(records.iter().all(|r| r.result.is_ok()))
}

fn sizes(cli: &Cli) -> anyhow::Result<Sizes> {
    let duration = match cli.duration {
        Some(secs) if secs.is_finite() && secs > 0.0 => Some(Duration::from_secs_f64(secs)),
        Some(secs) => anyhow::bail!("--duration must be a positive number of seconds, not {secs}"),
        None => None,
    };
    Ok(Sizes {
        users: cli.users,
        concurrency: cli.concurrency.max(1),
        senders: cli.senders.max(1),
        messages: cli.messages,
        duration,
        spread_rooms: cli.spread_rooms.max(1),
        delivery_count: cli.delivery_count,
        delivery_warmup: cli.delivery_warmup,
        delivery_gap: Duration::from_millis(cli.delivery_gap_ms),
        sync_rooms: cli.sync_rooms.max(1),
        sync_messages_per_room: cli.sync_messages,
        sync_repeats: cli.sync_repeats,
        idle_polls: cli.idle_polls,
    })
}

/// The `memory` record: resident memory at the start and the end of the run.
fn memory_record(start: Result<memory::Memory, String>, pid: u32) -> Record {
    let started = SystemTime::now();
    let result = start.and_then(|start| {
        let end = memory::read(pid).map_err(|e| format!("{e:#}"))?;
        let mut figures = vec![
            ("rss_start_mib", memory::mib(start.rss_kib)),
            ("rss_end_mib", memory::mib(end.rss_kib)),
        ];
        if let Some(peak) = end.peak_kib {
            figures.push(("rss_peak_mib", memory::mib(peak)));
        }
        Ok(Outcome {
            figures,
            params: vec![("pid", json!(pid))],
        })
    });
    Record {
        scenario: "memory",
        started,
        result,
        retries_429: 0,
    }
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// Eight lowercase hex digits, different on every run (std's randomly keyed
/// hasher, mixed with the clock and the pid).
fn random_tag() -> String {
    let mut hasher = RandomState::new().build_hasher();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    hasher.write_u128(now);
    hasher.write_u32(std::process::id());
    format!("{:08x}", hasher.finish() as u32)
}
