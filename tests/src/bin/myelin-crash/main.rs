//! `myelin-crash`: kills a Myelin server with SIGKILL under a mixed load,
//! again and again, and checks after each restart that nothing it
//! acknowledged was lost or duplicated and that old sync tokens still
//! resume without gaps or repeats (tests/crash/README.md).

#[allow(
    dead_code,
    reason = "the load tool's HTTP client, shared; the crash harness uses part of it"
)]
#[path = "../myelin-load/api.rs"]
mod api;
#[allow(
    dead_code,
    reason = "the load tool's HTTP client, shared; the crash harness uses part of it"
)]
#[path = "../myelin-load/concurrent.rs"]
mod concurrent;
mod ledger;
#[allow(
    dead_code,
    reason = "the load tool's endpoints, shared; the crash harness uses part of them"
)]
#[path = "../myelin-load/matrix.rs"]
mod matrix;
mod observer;
mod ops;
mod server;
mod verify;
mod world;

use std::{
    path::PathBuf,
    process::ExitCode,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use myelin_tests::PostgresDatabase;
use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::{
    api::Api,
    ledger::{Kind, Ledger},
    observer::{Checkpoint, Observer},
    ops::Worker,
    server::{Server, ServerCommand},
    verify::Progress,
    world::World,
};

/// How often the clients' HTTP layer retries a 429 (rate limits are off).
const MAX_429_RETRIES: u32 = 50;
/// How long the server may take to serve again after its database restarted.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(60);
/// Tokens are resumed only if fewer events than this followed them (the
/// sync filter's timeline limit is 500 per room).
const MAX_EVENTS_AFTER_TOKEN: usize = 400;
/// Findings printed per category; the counts cover all of them.
const FINDINGS_SHOWN: usize = 20;

/// Kill a Myelin server with SIGKILL under load, restart it on the same
/// storage, and check that everything it acknowledged is still there,
/// exactly once.
///
/// Each cycle runs a mixed load (room sends, to-device messages, key
/// uploads and claims, key backup, media, registrations) from --clients
/// concurrent clients for a random (seeded) time, kills the server,
/// restarts it, retries the requests that were in flight with the same
/// transaction ids, and checks. Exit status: 0 nothing lost, duplicated or
/// skipped; 1 something was; 2 the harness could not run.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// The myelin-server binary (release by hand, the debug build in CI).
    #[arg(long)]
    server: PathBuf,
    /// Storage backend.
    #[arg(long, value_enum, default_value_t = BackendKind::Sqlite)]
    backend: BackendKind,
    /// postgres: a server URL whose user may create databases; a fresh
    /// database is created for the run and dropped after it.
    #[arg(long, env = "MYELIN_TEST_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Kill-and-restart cycles.
    #[arg(long, default_value_t = 10)]
    cycles: u32,
    /// Seed for the kill moments and the load's choices [default: from the clock; printed].
    #[arg(long)]
    seed: Option<u64>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Rooms the clients send into.
    #[arg(long, default_value_t = 8)]
    rooms: usize,
    /// Shortest load before a kill, in milliseconds.
    #[arg(long, default_value_t = 100)]
    min_load_ms: u64,
    /// Longest load before a kill, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    max_load_ms: u64,
    /// Sync tokens from before each kill resumed after the restart (the
    /// last one and random earlier ones of the cycle).
    #[arg(long, default_value_t = 3)]
    resumed_tokens: usize,
    /// postgres: also restart the database cluster mid-load every N cycles
    /// (the server must recover by itself before the kill).
    #[arg(long)]
    restart_postgres_every: Option<u32>,
    /// The cluster to restart, VERSION/NAME [default: the only version in /etc/postgresql, main].
    #[arg(long)]
    postgres_cluster: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BackendKind {
    /// The embedded SQLite file in the data directory.
    Sqlite,
    /// A fresh PostgreSQL database.
    Postgres,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("myelin-crash: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// What the run counts besides the ledger.
#[derive(Debug, Default)]
struct Counters {
    tokens_resumed: usize,
    postgres_restarts: u32,
}

/// Runs every cycle; `Ok(false)` when something was lost, duplicated or skipped.
async fn run(cli: Cli) -> anyhow::Result<bool> {
    if cli.min_load_ms > cli.max_load_ms || cli.clients == 0 || cli.rooms == 0 {
        bail!(
            "--min-load-ms must not exceed --max-load-ms, and --clients and --rooms must be positive"
        );
    }
    let seed = cli.seed.unwrap_or_else(clock_seed);
    let storage = tempfile::tempdir().context("creating the data directory")?;
    let database = match cli.backend {
        BackendKind::Sqlite => None,
        BackendKind::Postgres => {
            let url = cli
                .database_url
                .as_deref()
                .context("--backend postgres needs --database-url (or MYELIN_TEST_DATABASE_URL)")?;
            Some(PostgresDatabase::create(url).await)
        }
    };
    let postgres_cluster = match (cli.restart_postgres_every, cli.backend) {
        (None, _) => None,
        (Some(_), BackendKind::Sqlite) => {
            bail!("--restart-postgres-every needs --backend postgres")
        }
        (Some(_), BackendKind::Postgres) => Some(match &cli.postgres_cluster {
            Some(cluster) => cluster.clone(),
            None => default_cluster()?,
        }),
    };
    println!(
        "myelin-crash: {:?}, {} cycles, seed {seed}, {} clients, {} rooms, load {}–{} ms per cycle",
        cli.backend, cli.cycles, cli.clients, cli.rooms, cli.min_load_ms, cli.max_load_ms
    );
    let command = ServerCommand::new(
        cli.server.clone(),
        storage.path(),
        database.as_ref().map(|d| d.url.clone()),
    )?;
    let started = Instant::now();
    let mut server = command.start().await?;
    let outcome = cycles(
        &cli,
        seed,
        &command,
        &mut server,
        postgres_cluster.as_deref(),
    )
    .await;
    if outcome.is_err() {
        eprintln!("last server log lines:\n{}", server.log_tail().join("\n"));
    }
    server.kill().await?;
    let (ledger, counters) = outcome?;
    report(&cli, &ledger, &counters, started.elapsed());
    // The database is dropped only once the server is gone.
    drop(database);
    Ok(ledger.findings.is_clean())
}

/// Sets up the clients, then kills and restarts the server `--cycles` times.
async fn cycles(
    cli: &Cli,
    seed: u64,
    command: &ServerCommand,
    server: &mut Server,
    postgres_cluster: Option<&str>,
) -> anyhow::Result<(Ledger, Counters)> {
    let mut api = Api::new(&server.url(), MAX_429_RETRIES)?;
    let world = Arc::new(World::set_up(&api, format!("{seed:x}"), cli.clients, cli.rooms).await?);
    let mut observer = Observer::new(world.observer.session());
    observer.catch_up(&api).await?;
    let mut workers: Vec<Worker> = (0..cli.clients).map(|i| Worker::new(i, seed)).collect();
    let mut ledger = Ledger::default();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut counters = Counters::default();
    let mut progress = Progress::default();
    for cycle in 1..=cli.cycles {
        let first_checkpoint = observer.checkpoints.len();
        // Shared by the clients while they run; the checks own it again.
        let shared = Arc::new(Mutex::new(std::mem::take(&mut ledger)));
        let stop = Arc::new(AtomicBool::new(false));
        let following = tokio::spawn(observer.follow(api.clone(), stop.clone()));
        let loads: Vec<_> = workers
            .into_iter()
            .map(|worker| {
                tokio::spawn(worker.load(world.clone(), api.clone(), shared.clone(), stop.clone()))
            })
            .collect();
        let load = Duration::from_millis(rng.gen_range(cli.min_load_ms..=cli.max_load_ms));
        let restarts_postgres = cli
            .restart_postgres_every
            .is_some_and(|every| every > 0 && cycle % every == 0);
        if let (true, Some(cluster)) = (restarts_postgres, postgres_cluster) {
            tokio::time::sleep(load / 2).await;
            server::restart_postgres(cluster).await?;
            counters.postgres_restarts += 1;
            await_recovery(&shared).await?;
            tokio::time::sleep(load / 2).await;
        } else {
            tokio::time::sleep(load).await;
        }
        // SIGKILL while requests are in flight, and only then tell the
        // clients to stop: what was in flight stays unanswered.
        server.kill().await?;
        stop.store(true, Ordering::Relaxed);
        workers = Vec::with_capacity(loads.len());
        for load in loads {
            workers.push(load.await.context("a client task panicked")??);
        }
        observer = following.await.context("the observer task panicked")??;
        // Every token handed out so far was handed out before the kill.
        let before_kill = first_checkpoint..observer.checkpoints.len();

        *server = command.start().await?;
        api = Api::new(&server.url(), MAX_429_RETRIES)?;
        for worker in &mut workers {
            worker.resolve(&world, &api, &shared).await?;
        }
        observer.catch_up(&api).await?;
        let resumed = pick_resumed(
            &observer.checkpoints[before_kill],
            observer.delivered.len(),
            cli.resumed_tokens,
            &mut rng,
        );
        counters.tokens_resumed += resumed.len();
        let is_final = cycle == cli.cycles;
        ledger = Arc::try_unwrap(shared)
            .map_err(|_| anyhow::anyhow!("a client still holds the ledger"))?
            .into_inner()
            .map_err(|_| anyhow::anyhow!("ledger poisoned"))?;
        verify::check(
            &api,
            &world,
            &mut ledger,
            &observer,
            &resumed,
            &mut progress,
            is_final,
        )
        .await?;
        println!(
            "cycle {cycle}: killed after {} ms{}; acknowledged {}, unknown {}, lost {}, duplicated {}, gaps {}",
            load.as_millis(),
            if restarts_postgres {
                " (PostgreSQL restarted mid-load)"
            } else {
                ""
            },
            ledger.acked.values().sum::<u64>(),
            ledger.unknown.values().sum::<u64>(),
            ledger.findings.lost.len(),
            ledger.findings.duplicated.len(),
            ledger.findings.gaps.len(),
        );
    }
    Ok((ledger, counters))
}

/// Waits until some request is acknowledged after the database restart.
async fn await_recovery(ledger: &Mutex<Ledger>) -> anyhow::Result<()> {
    let acked = || {
        ledger
            .lock()
            .map(|l| l.acked.values().sum::<u64>())
            .map_err(|_| anyhow::anyhow!("ledger poisoned"))
    };
    let before = acked()?;
    let started = Instant::now();
    while acked()? == before {
        if started.elapsed() > RECOVERY_DEADLINE {
            bail!(
                "the server acknowledged nothing for {RECOVERY_DEADLINE:?} after PostgreSQL restarted"
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// The last token before the kill and up to `n - 1` random earlier ones
/// of the cycle, of those that a single sync can resume: with fewer than
/// [`MAX_EVENTS_AFTER_TOKEN`] events delivered after them, no room's
/// timeline reaches the filter's limit.
fn pick_resumed(
    checkpoints: &[Checkpoint],
    delivered: usize,
    n: usize,
    rng: &mut StdRng,
) -> Vec<Checkpoint> {
    let Some(last) = checkpoints.last() else {
        return Vec::new();
    };
    let mut picked = vec![last.clone()];
    let resumable = checkpoints[..checkpoints.len() - 1]
        .partition_point(|c| c.delivered + MAX_EVENTS_AFTER_TOKEN <= delivered);
    let earlier = &checkpoints[resumable..checkpoints.len() - 1];
    for _ in 1..n {
        if earlier.is_empty() {
            break;
        }
        picked.push(earlier[rng.gen_range(0..earlier.len())].clone());
    }
    picked
}

fn report(cli: &Cli, ledger: &Ledger, counters: &Counters, elapsed: Duration) {
    println!();
    println!(
        "{} cycles ({:?}) in {:.1} s; {} sync tokens resumed after a kill; {} PostgreSQL restarts",
        cli.cycles,
        cli.backend,
        elapsed.as_secs_f64(),
        counters.tokens_resumed,
        counters.postgres_restarts
    );
    println!("{:<14} {:>10} {:>8}", "request", "acked", "unknown");
    for kind in Kind::ALL {
        println!(
            "{:<14} {:>10} {:>8}",
            kind.name(),
            ledger.acked.get(&kind).copied().unwrap_or(0),
            ledger.unknown.get(&kind).copied().unwrap_or(0)
        );
    }
    println!(
        "{:<14} {:>10} {:>8}",
        "total",
        ledger.acked.values().sum::<u64>(),
        ledger.unknown.values().sum::<u64>()
    );
    let findings = &ledger.findings;
    println!(
        "lost {}, duplicated {}, sync gaps or repeats {}",
        findings.lost.len(),
        findings.duplicated.len(),
        findings.gaps.len()
    );
    for (label, list) in [
        ("lost", &findings.lost),
        ("duplicated", &findings.duplicated),
        ("gap", &findings.gaps),
    ] {
        for finding in list.iter().take(FINDINGS_SHOWN) {
            println!("  {label}: {finding}");
        }
    }
}

/// A seed from the clock, for runs that do not name one.
fn clock_seed() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// `VERSION/main` for the one PostgreSQL version installed.
fn default_cluster() -> anyhow::Result<String> {
    let versions: Vec<String> = std::fs::read_dir("/etc/postgresql")
        .context("reading /etc/postgresql (name the cluster with --postgres-cluster)")?
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    match versions.as_slice() {
        [version] => Ok(format!("{version}/main")),
        _ => bail!(
            "PostgreSQL versions {versions:?} in /etc/postgresql: name the cluster with --postgres-cluster"
        ),
    }
}
