//! The `myelin-server` binary: configuration in, server out.

use std::{
    io::{BufRead, IsTerminal},
    net::SocketAddr,
    path::PathBuf,
};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use myelin_server::{
    config::{Config, LogFormat, RegistrationMode, Secret},
    service::password::Password,
};
use tracing_subscriber::EnvFilter;

/// Myelin: a Matrix homeserver that routes what it cannot read.
///
/// Settings come from built-in defaults, then the TOML file given by
/// --config, then MYELIN_* environment variables, then flags.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    overrides: Overrides,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Args)]
struct Overrides {
    /// TOML configuration file.
    #[arg(long, env = "MYELIN_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Address and port to listen on [default: 127.0.0.1:8008].
    #[arg(long, env = "MYELIN_BIND", global = true)]
    bind: Option<SocketAddr>,
    /// Matrix server name, the part after ':' in user ids [default: localhost].
    #[arg(long, env = "MYELIN_SERVER_NAME", global = true)]
    server_name: Option<String>,
    /// Directory for the embedded database [default: ./myelin-data].
    #[arg(long, env = "MYELIN_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// Database URL: postgres://user@host/db, or sqlite://PATH [default: embedded SQLite in the data dir].
    #[arg(
        long,
        env = "MYELIN_DATABASE_URL",
        global = true,
        hide_env_values = true
    )]
    database_url: Option<String>,
    /// Who may register: open, token or closed [default: open].
    #[arg(long, env = "MYELIN_REGISTRATION", global = true)]
    registration: Option<RegistrationMode>,
    /// Log filter, e.g. info or myelin_server=debug [default: info; RUST_LOG wins].
    #[arg(long, env = "MYELIN_LOG", global = true)]
    log: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the client API (what runs when no command is given).
    Serve,
    /// Create an account directly in the database, whatever the registration mode.
    /// The password is read from the first line of standard input.
    RegisterUser {
        /// The new user's localpart, e.g. alice for @alice:SERVER_NAME.
        #[arg(long)]
        username: String,
        /// Make the account a server administrator.
        #[arg(long)]
        admin: bool,
    },
}

impl Overrides {
    fn into_config(self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::from_toml_file(path)?,
            None => Config::default(),
        };
        if let Some(bind) = self.bind {
            config.bind = bind;
        }
        if let Some(server_name) = self.server_name {
            config.server_name = server_name;
        }
        if let Some(data_dir) = self.data_dir {
            config.data_dir = data_dir;
        }
        if let Some(url) = self.database_url {
            config.database_url = Some(Secret::new(url));
        }
        if let Some(mode) = self.registration {
            config.registration.mode = mode;
        }
        if let Some(filter) = self.log {
            config.log.filter = filter;
        }
        config.validate()?;
        Ok(config)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = cli.overrides.into_config()?;
    init_logging(&config);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config).await,
        Command::RegisterUser { username, admin } => register_user(config, &username, admin).await,
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .with_context(|| format!("cannot listen on {}", config.bind))?;
    myelin_server::run(listener, config, shutdown_signal()).await?;
    Ok(())
}

async fn register_user(config: Config, username: &str, admin: bool) -> anyhow::Result<()> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    let password = Password::new(line.trim_end_matches(['\r', '\n']).to_owned());
    let (state, storage) = myelin_server::open(&config).await?;
    let created = state
        .accounts
        .create_account_as_operator(username, &password, admin)
        .await;
    storage.close().await;
    let user_id = created.map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("{user_id}");
    Ok(())
}

fn init_logging(config: &Config) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log.filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match config.log.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
