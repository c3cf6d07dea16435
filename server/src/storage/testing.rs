//! A fresh database for a test: SQLite in a temporary directory, or a
//! database of its own on the PostgreSQL server `MYELIN_TEST_DATABASE_URL`
//! names.

use sqlx::{Connection, Executor};

use crate::config::{DatabaseLocation, Secret};

/// A database that outlives the storage opened on it, so a test can
/// reopen it (a restart).
pub(crate) struct TestDatabase {
    /// Where it is.
    pub(crate) location: DatabaseLocation,
    /// The administration URL and the database's name, on PostgreSQL.
    postgres: Option<(String, String)>,
    _dir: tempfile::TempDir,
}

impl TestDatabase {
    /// A new empty database, on PostgreSQL when `postgres`.
    pub(crate) async fn create(postgres: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        if !postgres {
            return Self {
                location: DatabaseLocation::Sqlite(dir.path().join("db")),
                postgres: None,
                _dir: dir,
            };
        }
        let admin = std::env::var("MYELIN_TEST_DATABASE_URL").unwrap();
        let name = format!("myelin_unit_{}", rand::random::<u64>());
        let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
        conn.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap();
        let (base, _) = admin.rsplit_once('/').unwrap();
        Self {
            location: DatabaseLocation::Postgres(Secret::new(format!("{base}/{name}"))),
            postgres: Some((admin, name)),
            _dir: dir,
        }
    }

    /// Removes a PostgreSQL database (a SQLite one goes with its directory).
    pub(crate) async fn remove(self) {
        if let Some((admin, name)) = &self.postgres {
            let mut conn = sqlx::PgConnection::connect(admin).await.unwrap();
            conn.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                .await
                .unwrap();
        }
    }
}
