//! [`SqliteStore`]: a [`Store`] in one SQLite file (sqlx).

use std::{path::Path, str::FromStr};

use sqlx::{
    Row, SqlitePool,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

use super::{Changes, Store, StoreError, StoreFuture};

/// One table holds every record; `(namespace, key)` is its primary key.
const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS records (
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (namespace, key)
) WITHOUT ROWID";

/// A [`Store`] in a SQLite database file. Each [`Changes`] batch is one
/// transaction, made durable (`synchronous = FULL`) before `commit` returns.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] if the file cannot be opened or created.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // The sync token and what it delivered must survive a power
            // cut together; NORMAL would only survive a process crash.
            .synchronous(SqliteSynchronous::Full);
        Self::connect(options).await
    }

    /// A private in-memory SQLite database (tests of the SQL itself).
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] if SQLite cannot start.
    pub async fn in_memory() -> Result<Self, StoreError> {
        Self::connect(SqliteConnectOptions::from_str("sqlite::memory:")?).await
    }

    async fn connect(options: SqliteConnectOptions) -> Result<Self, StoreError> {
        // One connection: SQLite has one writer, and a single connection
        // keeps an in-memory database alive and shared.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        sqlx::query(SCHEMA).execute(&pool).await?;
        Ok(Self { pool })
    }
}

impl Store for SqliteStore {
    fn get<'a>(&'a self, namespace: &'a str, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            let row = sqlx::query("SELECT value FROM records WHERE namespace = ? AND key = ?")
                .bind(namespace)
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
            Ok(row.map(|row| row.get::<Vec<u8>, _>(0)))
        })
    }

    fn list<'a>(&'a self, namespace: &'a str) -> StoreFuture<'a, Vec<(String, Vec<u8>)>> {
        Box::pin(async move {
            let rows =
                sqlx::query("SELECT key, value FROM records WHERE namespace = ? ORDER BY key")
                    .bind(namespace)
                    .fetch_all(&self.pool)
                    .await?;
            Ok(rows
                .into_iter()
                .map(|row| (row.get::<String, _>(0), row.get::<Vec<u8>, _>(1)))
                .collect())
        })
    }

    fn commit(&self, changes: Changes) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let mut transaction = self.pool.begin().await?;
            for (namespace, key, value) in changes.iter() {
                match value {
                    Some(value) => {
                        sqlx::query(
                            "INSERT INTO records (namespace, key, value) VALUES (?, ?, ?)
                             ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value",
                        )
                        .bind(namespace)
                        .bind(key)
                        .bind(value)
                        .execute(&mut *transaction)
                        .await?;
                    }
                    None => {
                        sqlx::query("DELETE FROM records WHERE namespace = ? AND key = ?")
                            .bind(namespace)
                            .bind(key)
                            .execute(&mut *transaction)
                            .await?;
                    }
                }
            }
            transaction.commit().await?;
            Ok(())
        })
    }
}
