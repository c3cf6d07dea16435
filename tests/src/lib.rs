//! Test support for Myelin's integration tests: in-process servers on
//! ephemeral loopback ports, one fresh database per test, and a small JSON
//! client.
//!
//! Every server test runs on SQLite, and on PostgreSQL when
//! `MYELIN_TEST_DATABASE_URL` names a server whose user may create
//! databases; [`backend_tests!`] generates both variants.

use std::{collections::BTreeMap, time::Duration};

use myelin_server::config::{Config, Secret, TlsConfig};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::{Connection, Executor, PgConnection};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

/// The environment variable naming the PostgreSQL server for tests.
pub const DATABASE_URL_VAR: &str = "MYELIN_TEST_DATABASE_URL";

/// The password every test account gets unless a test says otherwise.
pub const PASSWORD: &str = "correct horse battery";

/// Which storage backend a test server uses.
#[derive(Debug, Clone)]
pub enum Backend {
    /// A SQLite file in the server's temporary data directory.
    Sqlite,
    /// A fresh database on the PostgreSQL server at this URL.
    Postgres(String),
}

impl Backend {
    /// PostgreSQL, when `MYELIN_TEST_DATABASE_URL` is set.
    pub fn postgres() -> Option<Self> {
        std::env::var(DATABASE_URL_VAR)
            .ok()
            .filter(|url| !url.is_empty())
            .map(Self::Postgres)
    }
}

/// Generates, for each named `async fn(Backend)`, a `sqlite::name` test and a
/// `postgres::name` test (which reports itself skipped when
/// `MYELIN_TEST_DATABASE_URL` is unset; CI always sets it).
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    match $crate::Backend::postgres() {
                        Some(backend) => super::$name(backend).await,
                        None => eprintln!("skipped: {} is not set", $crate::DATABASE_URL_VAR),
                    }
                }
            )*
        }
    };
}

/// A throwaway PostgreSQL database, dropped with its owner.
#[derive(Debug)]
pub struct PostgresDatabase {
    admin_url: String,
    name: String,
    /// URL of the new database.
    pub url: String,
}

impl PostgresDatabase {
    /// Creates a uniquely named database on the server at `admin_url`.
    pub async fn create(admin_url: &str) -> Self {
        let name = format!("myelin_test_{}", random_suffix());
        let mut admin = PgConnection::connect(admin_url)
            .await
            .expect("connect to PostgreSQL");
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("create database");
        admin.close().await.ok();
        let url = replace_database(admin_url, &name);
        Self {
            admin_url: admin_url.to_owned(),
            name,
            url,
        }
    }
}

impl Drop for PostgresDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let statement = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // Drop cannot await, and may run inside a runtime: use a thread with its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut admin = PgConnection::connect(&admin_url)
                    .await
                    .map_err(std::io::Error::other)?;
                admin
                    .execute(statement.as_str())
                    .await
                    .map_err(std::io::Error::other)?;
                Ok::<_, std::io::Error>(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}

/// Swaps the database name in a `postgres://…/name?…` URL.
fn replace_database(url: &str, database: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{database}", &base[..path_start]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// A random lowercase suffix for unique names.
pub fn random_suffix() -> String {
    use std::{collections::hash_map::RandomState, hash::BuildHasher};
    let a = RandomState::new().hash_one(std::time::SystemTime::now());
    format!("{a:016x}")
}

/// A server running in this process on an ephemeral loopback port.
#[derive(Debug)]
pub struct TestServer {
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    /// The server's name, `localhost`.
    pub server_name: String,
    /// The configuration it runs with.
    pub config: Config,
    /// An HTTP client for it.
    pub client: reqwest::Client,
    /// `https://127.0.0.1:PORT` of its federation listener, for servers
    /// started by [`TestServer::start_federated`].
    pub federation_url: Option<String>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), myelin_server::StartError>>>,
    _data_dir: tempfile::TempDir,
    _database: Option<PostgresDatabase>,
}

impl TestServer {
    /// Starts a server with the test defaults (rate limits off).
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    /// Starts a server after `configure` adjusts the test defaults. With
    /// `MYELIN_TEST_LOG` set (a `tracing` filter), the server's logs go to
    /// the test's output.
    pub async fn start_with(backend: Backend, configure: impl FnOnce(&mut Config)) -> Self {
        Self::launch(backend, None, configure).await
    }

    /// Starts `count` servers that federate with each other over loopback
    /// (see [`Self::start_federated_with`]).
    pub async fn start_federated(backend: Backend, count: usize) -> Vec<Self> {
        Self::start_federated_with(backend, count, |_, _| {}).await
    }

    /// Starts `count` servers, each named `localhost:PORT` after its
    /// federation listener (TLS with a fresh self-signed certificate),
    /// with a `[federation] addresses` map naming every one of them,
    /// certificate checks off and loopback allowed for outgoing requests.
    /// `configure(i, config)` adjusts server `i` last.
    pub async fn start_federated_with(
        backend: Backend,
        count: usize,
        configure: impl Fn(usize, &mut Config),
    ) -> Vec<Self> {
        let mut listeners = Vec::new();
        for _ in 0..count {
            let listener = TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind loopback");
            listeners.push(listener);
        }
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().expect("local address").port())
            .collect();
        let addresses: BTreeMap<String, String> = ports
            .iter()
            .map(|port| (format!("localhost:{port}"), format!("127.0.0.1:{port}")))
            .collect();
        let mut servers = Vec::new();
        for (i, listener) in listeners.into_iter().enumerate() {
            let server = Self::launch(backend.clone(), Some(listener), |config| {
                config.server_name = format!("localhost:{}", ports[i]);
                config.federation.addresses = addresses.clone();
                configure(i, config);
            })
            .await;
            // The listeners were bound before the server started: this
            // answer waits for it to be serving, so its database is
            // migrated and its keys exist before a test opens them.
            let (status, _) = server
                .request(
                    Method::GET,
                    format!("{}/_matrix/client/versions", server.base_url),
                    None,
                    None,
                )
                .await;
            assert_eq!(status, StatusCode::OK, "server {i} did not start");
            servers.push(server);
        }
        servers
    }

    async fn launch(
        backend: Backend,
        federation: Option<TcpListener>,
        configure: impl FnOnce(&mut Config),
    ) -> Self {
        if let Ok(filter) = std::env::var("MYELIN_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .try_init();
        }
        let data_dir = tempfile::tempdir().expect("temporary data dir");
        let database = match backend {
            Backend::Sqlite => None,
            Backend::Postgres(url) => Some(PostgresDatabase::create(&url).await),
        };
        let mut config = Config {
            data_dir: data_dir.path().to_owned(),
            database_url: database.as_ref().map(|db| Secret::new(db.url.clone())),
            ..Config::default()
        };
        config.rate_limits.enabled = false;
        let federation_url = federation.as_ref().map(|listener| {
            let address = listener.local_addr().expect("local address");
            config.federation.enabled = true;
            config.federation.bind = address;
            config.federation.tls = Some(self_signed_certificate(data_dir.path()));
            config.federation.verify_certificates = false;
            config.federation.allowed_ip_ranges = vec![
                "127.0.0.0/8".parse().expect("range"),
                "::1".parse().expect("range"),
            ];
            format!("https://{address}")
        });
        configure(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let address = listener.local_addr().expect("local address");
        config.bind = address;
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let (shutdown, stop) = oneshot::channel::<()>();
        let task = tokio::spawn(myelin_server::run_with_federation(
            listener,
            federation,
            config.clone(),
            async move {
                stop.await.ok();
            },
        ));
        Self {
            base_url: format!("{scheme}://{address}"),
            server_name: config.server_name.clone(),
            config,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("HTTP client"),
            federation_url,
            shutdown: Some(shutdown),
            task: Some(task),
            _data_dir: data_dir,
            _database: database,
        }
    }

    /// An HTTP client for the federation listener, which accepts its
    /// self-signed certificate.
    pub fn federation_client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .danger_accept_invalid_certs(true)
            .build()
            .expect("HTTP client")
    }

    /// The current signing key's id and seed, read from the database: a
    /// test can then sign as this server.
    pub async fn signing_key_seed(&self) -> (String, String) {
        let url = self.database_url();
        let query = "SELECT key_id, seed FROM server_signing_keys WHERE expired_ts IS NULL";
        if url.starts_with("sqlite:") {
            let pool = sqlx::SqlitePool::connect(&url).await.expect("open SQLite");
            sqlx::query_as(query).fetch_one(&pool).await.expect("key")
        } else {
            let pool = sqlx::PgPool::connect(&url).await.expect("open PostgreSQL");
            sqlx::query_as(query).fetch_one(&pool).await.expect("key")
        }
    }

    /// Stops the server gracefully and returns how it ended.
    pub async fn stop(mut self) -> Result<(), myelin_server::StartError> {
        if let Some(shutdown) = self.shutdown.take() {
            shutdown.send(()).ok();
        }
        match self.task.take() {
            Some(task) => task.await.expect("server task panicked"),
            None => Ok(()),
        }
    }

    /// A URL of the server's database, for tests that inspect storage directly.
    pub fn database_url(&self) -> String {
        match &self._database {
            Some(database) => database.url.clone(),
            None => format!(
                "sqlite://{}?mode=ro",
                self._data_dir.path().join("myelin.db").display()
            ),
        }
    }

    /// Runs a `SELECT COUNT(*) …` on the server's database, either backend.
    pub async fn count_rows(&self, query: &str) -> i64 {
        let url = self.database_url();
        let (count,): (i64,) = if url.starts_with("sqlite:") {
            let pool = sqlx::SqlitePool::connect(&url).await.expect("open SQLite");
            sqlx::query_as(query).fetch_one(&pool).await.expect("count")
        } else {
            let pool = sqlx::PgPool::connect(&url).await.expect("open PostgreSQL");
            sqlx::query_as(query).fetch_one(&pool).await.expect("count")
        };
        count
    }

    /// `/_matrix/client/v3` + `path`.
    pub fn v3(&self, path: &str) -> String {
        format!("{}/_matrix/client/v3{path}", self.base_url)
    }

    /// The full user id for a localpart.
    pub fn user_id(&self, localpart: &str) -> String {
        format!("@{localpart}:{}", self.server_name)
    }

    /// Sends a JSON request and returns the status and the JSON answer.
    pub async fn request(
        &self,
        method: Method,
        url: impl Into<String>,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.client.request(method, url.into());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request reaches the server");
        let status = response.status();
        let text = response.text().await.expect("response body");
        let json = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{status} answer is not JSON: {text:?}"));
        (status, json)
    }

    /// Registers `localpart` with [`PASSWORD`] through the dummy UIA flow.
    pub async fn register(&self, localpart: &str) -> Account {
        let body = json!({
            "username": localpart,
            "password": PASSWORD,
            "auth": { "type": "m.login.dummy" },
        });
        let (status, answer) = self
            .request(Method::POST, self.v3("/register"), None, Some(body))
            .await;
        assert_eq!(status, StatusCode::OK, "register {localpart}: {answer}");
        Account::from_answer(&answer)
    }

    /// Logs `localpart` in with [`PASSWORD`].
    pub async fn login(&self, localpart: &str, device_id: Option<&str>) -> Account {
        let mut body = json!({
            "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": localpart },
            "password": PASSWORD,
        });
        if let Some(device_id) = device_id {
            body["device_id"] = json!(device_id);
        }
        let (status, answer) = self
            .request(Method::POST, self.v3("/login"), None, Some(body))
            .await;
        assert_eq!(status, StatusCode::OK, "login {localpart}: {answer}");
        Account::from_answer(&answer)
    }

    /// `GET /account/whoami` with `token`.
    pub async fn whoami(&self, token: &str) -> (StatusCode, Value) {
        self.request(Method::GET, self.v3("/account/whoami"), Some(token), None)
            .await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            shutdown.send(()).ok();
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Writes a self-signed certificate for `localhost` and its key into `dir`.
pub fn self_signed_certificate(dir: &std::path::Path) -> TlsConfig {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    let certificate = dir.join("federation-cert.pem");
    let private_key = dir.join("federation-key.pem");
    std::fs::write(&certificate, certified.cert.pem()).expect("write certificate");
    std::fs::write(&private_key, certified.signing_key.serialize_pem()).expect("write key");
    TlsConfig {
        certificate,
        private_key,
    }
}

/// Asserts that an answer is the Matrix error `errcode` with `status`.
#[track_caller]
pub fn assert_error(answer: &(StatusCode, Value), status: StatusCode, errcode: &str) {
    assert_eq!(answer.0, status, "status of {}", answer.1);
    assert_eq!(answer.1["errcode"], errcode, "errcode of {}", answer.1);
    assert!(
        answer.1["error"].is_string(),
        "error message in {}",
        answer.1
    );
}

/// A logged-in account.
#[derive(Debug, Clone)]
pub struct Account {
    /// Full user id.
    pub user_id: String,
    /// The session's device.
    pub device_id: String,
    /// The session's access token.
    pub token: String,
}

impl Account {
    fn from_answer(answer: &Value) -> Self {
        let field = |name: &str| {
            answer[name]
                .as_str()
                .unwrap_or_else(|| panic!("no {name} in {answer}"))
                .to_owned()
        };
        Self {
            user_id: field("user_id"),
            device_id: field("device_id"),
            token: field("access_token"),
        }
    }
}

/// Runs the futures concurrently on the calling task and collects their
/// outputs in order: concurrent requests without spawning, so they may
/// borrow the test's server and accounts.
pub async fn join_all<F: std::future::Future>(
    futures: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let mut set: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in set.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().map(|o| o.expect("ready")).collect()
}

#[cfg(test)]
mod tests {
    use super::replace_database;

    #[test]
    fn database_name_is_replaced_keeping_the_query() {
        assert_eq!(
            replace_database("postgres://root@127.0.0.1:5432/test?sslmode=disable", "x"),
            "postgres://root@127.0.0.1:5432/x?sslmode=disable"
        );
        assert_eq!(
            replace_database("postgres://localhost", "x"),
            "postgres://localhost/x"
        );
    }
}
