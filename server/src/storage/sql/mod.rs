//! The SQL backends.
//!
//! The queries are written once, in the SQL that SQLite and PostgreSQL share
//! (`$n` placeholders, `ON CONFLICT`, `RETURNING`), and [`sql_storage!`]
//! instantiates them for each concrete sqlx driver. That keeps one body of
//! storage code without the `Any` driver's type erasure. Queries are checked
//! at run time, so building needs no live database.

use std::{path::Path, sync::Arc, time::Duration};

use async_trait::async_trait;
use sqlx::{
    Pool, Postgres, Sqlite,
    postgres::PgPoolOptions,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

use super::{Storage, StorageError};

mod accounts;
mod cache;
mod dehydrated_devices;
mod device_lists;
mod e2ee_keys;
mod federation_inbox;
mod federation_outbound;
mod key_backup;
mod keys;
mod media;
mod message_batch;
mod push;
mod recent;
mod remote_keys;
mod remote_rooms;
mod rooms;
mod to_device;
mod user_data;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// Page cache per SQLite connection, in KiB.
const SQLITE_CACHE_KIB: u32 = 128;

/// The embedded SQLite backend.
#[derive(Debug, Clone)]
pub struct SqliteStorage {
    pool: Pool<Sqlite>,
    /// Writes batches of plain messages, on a connection of its own: SQLite
    /// drops a connection's whole page cache when another connection has
    /// written since it last read, and a writer drawn from the shared pool
    /// read the index pages it was about to change back from the file at
    /// nearly every commit. Other events are written through the pool.
    messages: Arc<message_batch::MessageWriter>,
    cache: Arc<cache::ReadCache>,
}

impl SqliteStorage {
    /// Opens (creating if needed) the database file and migrates it.
    ///
    /// The log runs in WAL mode with `synchronous=FULL`: a commit is on disk
    /// before the server acknowledges it, so `kill -9` or a power cut loses
    /// nothing acknowledged.
    ///
    /// # Errors
    /// When the file or its directory cannot be created, or migration fails.
    pub async fn open(path: &Path) -> Result<Self, StorageError> {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            // Each connection keeps its own page cache (2 MiB by default);
            // the operating system caches the file anyway, and after a load
            // run the default held several MiB of the server's memory for no
            // measurable speed (spec-notes/write-path.md).
            .pragma("cache_size", format!("-{SQLITE_CACHE_KIB}"))
            // Savepoints' statement journals in memory, not in a temporary
            // file created and deleted at every group commit.
            .pragma("temp_store", "memory");
        // An embedded database's connections do not go stale: no ping (a
        // round trip to the connection's thread) before each use. Three:
        // each is a thread with its own page cache, and most syncs read
        // the newest events from memory.
        let pool = SqlitePoolOptions::new()
            .max_connections(3)
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await?;
        SQLITE_MIGRATIONS.run(&pool).await?;
        let messages = Arc::new(message_batch::MessageWriter::open(path)?);
        Ok(Self {
            pool,
            messages,
            cache: Arc::default(),
        })
    }
}

/// The PostgreSQL backend.
#[derive(Debug, Clone)]
pub struct PostgresStorage {
    pool: Pool<Postgres>,
    cache: Arc<cache::ReadCache>,
}

impl PostgresStorage {
    /// Connects and migrates.
    ///
    /// # Errors
    /// When the server cannot be reached or migration fails.
    pub async fn open(url: &str) -> Result<Self, StorageError> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        POSTGRES_MIGRATIONS.run(&pool).await?;
        Ok(Self {
            pool,
            cache: Arc::default(),
        })
    }
}

/// Maps a uniqueness violation to [`StorageError::Conflict`].
pub(super) fn conflict_on_unique(what: &'static str) -> impl FnOnce(sqlx::Error) -> StorageError {
    move |error| match &error {
        sqlx::Error::Database(db) if db.is_unique_violation() => StorageError::Conflict(what),
        _ => StorageError::Backend(error),
    }
}

/// Maps a write naming a device that no longer exists (a foreign key
/// violation) to `NotFound("device")`.
pub(super) fn device_gone(error: sqlx::Error) -> StorageError {
    match &error {
        sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
            StorageError::NotFound("device")
        }
        _ => StorageError::Backend(error),
    }
}

#[async_trait]
impl Storage for SqliteStorage {
    async fn close(&self) {
        self.messages.close();
        self.pool.close().await;
    }
}

#[async_trait]
impl Storage for PostgresStorage {
    async fn close(&self) {
        self.pool.close().await;
    }
}
