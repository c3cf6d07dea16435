//! The server under test as a child process: started on its storage,
//! killed with SIGKILL, started again on the same storage; and, for
//! PostgreSQL, the database cluster restarted under it.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, bail};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    sync::oneshot,
};

/// How long a start may take (migrations, loading state) before the run fails.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Server log lines kept to show when something fails.
const LOG_TAIL: usize = 40;

/// How to start the server: binary, data directory and storage flags.
pub struct ServerCommand {
    /// The `myelin-server` binary.
    pub binary: PathBuf,
    /// Its data directory (the SQLite file lives here in SQLite mode).
    pub data_dir: PathBuf,
    /// A config file that switches rate limits off.
    pub config: PathBuf,
    /// `--database-url` for PostgreSQL, `None` for the embedded SQLite.
    pub database_url: Option<String>,
}

/// A running server.
pub struct Server {
    child: Child,
    /// Where it listens.
    pub address: SocketAddr,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl ServerCommand {
    /// Writes the config file into `data_dir` and returns the command.
    pub fn new(
        binary: PathBuf,
        data_dir: &Path,
        database_url: Option<String>,
    ) -> anyhow::Result<Self> {
        // Rate limits off: the harness's clients send as fast as they can.
        let config = data_dir.join("crash.toml");
        std::fs::write(&config, "[rate_limits]\nenabled = false\n")
            .context("writing the server config")?;
        Ok(Self {
            binary,
            data_dir: data_dir.join("server"),
            config,
            database_url,
        })
    }

    /// Starts the server on an ephemeral loopback port and waits until it serves.
    pub async fn start(&self) -> anyhow::Result<Server> {
        let mut command = Command::new(&self.binary);
        // The harness's own MYELIN_* settings must not configure the server.
        for (key, _) in std::env::vars() {
            if key.starts_with("MYELIN_") {
                command.env_remove(key);
            }
        }
        command
            .env_remove("RUST_LOG")
            .arg("--config")
            .arg(&self.config)
            .args(["--bind", "127.0.0.1:0", "--log", "info", "--data-dir"])
            .arg(&self.data_dir);
        if let Some(url) = &self.database_url {
            command.args(["--database-url", url]);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        let stderr = child.stderr.take().context("the server's stderr")?;
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let (serving, address) = oneshot::channel();
        let tail = log.clone();
        tokio::spawn(async move {
            let mut serving = Some(serving);
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("serving over")
                    && let Some(sender) = serving.take()
                {
                    let _ = sender.send(serving_address(&line));
                }
                if let Ok(mut tail) = tail.lock() {
                    if tail.len() == LOG_TAIL {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
            }
        });
        let address = match tokio::time::timeout(START_TIMEOUT, address).await {
            Ok(Ok(Some(address))) => address,
            outcome => {
                let _ = child.kill().await;
                let tail = log.lock().map(|t| t.iter().cloned().collect::<Vec<_>>());
                bail!(
                    "the server did not start ({}); last log lines:\n{}",
                    match outcome {
                        Err(_) => "timed out",
                        Ok(Ok(_)) => "no address in its serving line",
                        Ok(Err(_)) => "it exited",
                    },
                    tail.unwrap_or_default().join("\n")
                );
            }
        };
        Ok(Server {
            child,
            address,
            log,
        })
    }
}

impl Server {
    /// The base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// SIGKILL: no shutdown, no flush; returns once the process is gone.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill().await.context("killing the server")
    }

    /// The last lines the server logged.
    pub fn log_tail(&self) -> Vec<String> {
        self.log
            .lock()
            .map(|tail| tail.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// `address=` of the server's "serving over HTTP" line.
fn serving_address(line: &str) -> Option<SocketAddr> {
    line.split_whitespace()
        .find_map(|field| field.strip_prefix("address="))
        .and_then(|address| address.parse().ok())
}

/// Restarts a PostgreSQL cluster, `VERSION/NAME` as `pg_lsclusters` shows it.
pub async fn restart_postgres(cluster: &str) -> anyhow::Result<()> {
    let (version, name) = cluster
        .split_once('/')
        .with_context(|| format!("--postgres-cluster {cluster:?} is not VERSION/NAME"))?;
    let status = Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", version, name, "restart"])
        .stdin(Stdio::null())
        .status()
        .await
        .context("running pg_ctlcluster")?;
    if !status.success() {
        bail!("pg_ctlcluster {version} {name} restart failed: {status}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_comes_from_the_serving_line() {
        let line = "2026-12-07T23:00:00Z  INFO myelin_server: serving over HTTP address=127.0.0.1:41234 server_name=localhost";
        assert_eq!(
            serving_address(line),
            Some("127.0.0.1:41234".parse().expect("address"))
        );
        assert_eq!(serving_address("serving over HTTP"), None);
    }
}
