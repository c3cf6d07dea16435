//! Server configuration.
//!
//! Sources are layered: built-in defaults (enough to run with no file), then
//! a TOML file, then `MYELIN_*` environment variables and command-line flags
//! (see `main.rs`). [`Config::validate`] turns the result into typed values and
//! names the offending key when something is wrong.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
};

use ruma::{OwnedServerName, RoomVersionId, ServerName};
use serde::Deserialize;

use crate::service::{push::PrunePolicy, rooms::version::RoomVersion};

/// Everything the server needs to know at start-up.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The Matrix server name: the part after `:` in user ids (`@alice:localhost`).
    pub server_name: String,
    /// Address and port the client API listens on.
    pub bind: SocketAddr,
    /// Directory for the embedded database and the media store (`media/`). Created on first start.
    pub data_dir: PathBuf,
    /// Database URL. Unset means an embedded SQLite database at `<data_dir>/myelin.db`;
    /// `postgres://…` selects PostgreSQL.
    pub database_url: Option<Secret>,
    /// Room version for new rooms when the client names none (`1` to `12`).
    pub default_room_version: String,
    /// Rooms whose current state is kept in memory; past it, the least
    /// recently used idle rooms are dropped and reloaded from storage when
    /// next used.
    pub max_cached_rooms: usize,
    /// Largest request body accepted, in bytes; larger requests get `M_TOO_LARGE`.
    pub max_request_body_bytes: usize,
    /// Largest media upload accepted, in bytes (`m.upload.size`); larger
    /// uploads get `M_TOO_LARGE`. Uploads stream to disk, so this is not
    /// bounded by `max_request_body_bytes`.
    pub max_upload_bytes: u64,
    /// Most to-device messages kept waiting for one device. A send that
    /// would pass it is refused whole with 429 `M_LIMIT_EXCEEDED`, never
    /// partly dropped.
    pub max_pending_to_device: u64,
    /// Most to-device messages from one sender kept waiting for one
    /// device, so that one account cannot fill an inbox on its own. Past
    /// it, that device is refused like a full inbox.
    pub max_pending_to_device_per_sender: u64,
    /// Largest content of one to-device message, in bytes; larger gets
    /// 413 `M_TOO_LARGE` (the spec limits an event to 64 KiB).
    pub max_to_device_message_bytes: usize,
    /// Who may create accounts through the client API.
    pub registration: RegistrationConfig,
    /// Lifetime of access tokens handed out with a refresh token (clients
    /// ask for one with `refresh_token: true` at login or registration), in
    /// milliseconds. Tokens handed out without one do not expire.
    pub refreshable_access_token_lifetime_ms: u64,
    /// Who may look up users' profiles.
    pub profile_lookup: ProfileLookupConfig,
    /// Whom the user directory finds.
    pub user_directory: UserDirectoryConfig,
    /// Presence (online, away, offline).
    pub presence: PresenceConfig,
    /// Delivery of notifications to push gateways.
    pub push: PushConfig,
    /// Password rules applied at registration and password change.
    pub password_policy: PasswordPolicy,
    /// Request rate limits on login and registration.
    pub rate_limits: RateLimitConfig,
    /// Caps on what clients can make the server hold (`[limits]`).
    pub limits: Limits,
    /// Serve the client API over TLS instead of plain HTTP.
    pub tls: Option<TlsConfig>,
    /// The Server-Server API: its listener, and how this server reaches others.
    pub federation: FederationConfig,
    /// Log output.
    pub log: LogConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server_name: "localhost".to_owned(),
            bind: SocketAddr::from(([127, 0, 0, 1], 8008)),
            data_dir: PathBuf::from("myelin-data"),
            database_url: None,
            default_room_version: "12".to_owned(),
            max_cached_rooms: 4096,
            max_request_body_bytes: 4 * 1024 * 1024,
            max_upload_bytes: 50 * 1024 * 1024,
            max_pending_to_device: 10_000,
            max_pending_to_device_per_sender: 1_000,
            max_to_device_message_bytes: 64 * 1024,
            registration: RegistrationConfig::default(),
            refreshable_access_token_lifetime_ms: 5 * 60 * 1000,
            profile_lookup: ProfileLookupConfig::default(),
            user_directory: UserDirectoryConfig::default(),
            presence: PresenceConfig::default(),
            push: PushConfig::default(),
            password_policy: PasswordPolicy::default(),
            rate_limits: RateLimitConfig::default(),
            limits: Limits::default(),
            tls: None,
            federation: FederationConfig::default(),
            log: LogConfig::default(),
        }
    }
}

/// Who may look up profiles (`[profile_lookup]` in the TOML file). The
/// spec lets servers require authentication for `GET /profile/{userId}`
/// and refuse lookups with 403; refusals are the same for users that do not
/// exist, so they cannot be used to list accounts.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProfileLookupConfig {
    /// Only requests with an access token may look profiles up.
    pub require_auth: bool,
    /// Only users who share a room (joined or invited) with the user they
    /// look up, or look themselves up.
    pub shared_rooms_only: bool,
}

impl Default for ProfileLookupConfig {
    fn default() -> Self {
        Self {
            require_auth: true,
            shared_rooms_only: false,
        }
    }
}

/// Whom the user directory finds (`[user_directory]` in the TOML file).
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UserDirectoryConfig {
    /// Every local account, instead of the spec's default: users who share
    /// a room with the searcher and users in public rooms.
    pub search_all_users: bool,
}

/// Presence settings (`[presence]` in the TOML file).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PresenceConfig {
    /// Share users' presence with those who share a room with them. Off,
    /// nobody learns when anyone is online: changes are dropped and
    /// everyone reads as offline.
    pub enabled: bool,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// Push gateway delivery (`[push]` in the TOML file).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PushConfig {
    /// Post to gateways on loopback, private, link-local and other
    /// non-public addresses. Off, a pusher's URL cannot make the server
    /// reach its own network (the URL is chosen by clients).
    pub allow_private_gateways: bool,
    /// Wait before retrying a failed post to a gateway, in milliseconds;
    /// each next retry waits twice as long, five retries at most.
    pub retry_delay_ms: u64,
    /// How long an event that notified a user stays in their
    /// `GET /notifications` once their read receipt has passed it, in
    /// milliseconds (unread ones stay).
    pub read_notification_retention_ms: u64,
    /// Most notifications kept per user, read or not (the newest).
    pub max_notifications_per_user: u32,
    /// Between two prunings of notifications, in milliseconds.
    pub prune_interval_ms: u64,
}

impl Default for PushConfig {
    fn default() -> Self {
        let prune = PrunePolicy::default();
        let millis =
            |duration: std::time::Duration| u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        Self {
            allow_private_gateways: false,
            retry_delay_ms: 1000,
            read_notification_retention_ms: millis(prune.read_retention),
            max_notifications_per_user: prune.keep_per_user,
            prune_interval_ms: millis(prune.interval),
        }
    }
}

/// Registration settings (`[registration]` in the TOML file).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrationConfig {
    /// `open`, `token` (each registration needs one of `tokens`) or `closed`
    /// (accounts only through `myelin-server register-user`).
    pub mode: RegistrationMode,
    /// Registration tokens accepted in `token` mode (`m.login.registration_token`).
    pub tokens: Vec<Secret>,
    /// Guest accounts (`POST /register?kind=guest`), limited to the
    /// endpoints the spec lists for guests (unless registration is closed).
    pub guests: bool,
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        Self {
            mode: RegistrationMode::Open,
            tokens: Vec::new(),
            guests: false,
        }
    }
}

/// Who may register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RegistrationMode {
    /// Anyone who can reach the server.
    Open,
    /// Anyone holding a configured registration token.
    Token,
    /// Nobody through the API; an operator uses the CLI.
    Closed,
}

/// Password rules (`[password_policy]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PasswordPolicy {
    /// Minimum length in characters; shorter passwords get `M_WEAK_PASSWORD`.
    pub min_length: usize,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self { min_length: 8 }
    }
}

/// Caps on what clients can make the server hold in memory or on disk
/// (`[limits]`). Past one, a request gets a Matrix error, never a crash.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Unfinished user-interactive auth sessions kept, for everyone; those
    /// started by registration (no account yet) may hold half of them.
    /// Past it, a new session gets 429 `M_LIMIT_EXCEEDED`.
    pub uia_sessions: usize,
    /// Unfinished user-interactive auth sessions kept for one account.
    pub uia_sessions_per_user: usize,
    /// Password checks and hashes waiting for the hashing thread, the one
    /// being done included. Past it, a login, registration or password
    /// stage gets 429 `M_LIMIT_EXCEEDED` before anything is queued.
    pub password_hash_queue: usize,
    /// Users one `/keys/query` may name; more get 400 `M_INVALID_PARAM`.
    pub keys_query_users: usize,
    /// Keys one `/keys/claim` may ask for; more get 400 `M_INVALID_PARAM`.
    pub keys_claim_keys: usize,
    /// Largest sync filter, in bytes of JSON; larger gets 413 `M_TOO_LARGE`.
    pub filter_bytes: usize,
    /// Distinct sync filters kept per account (uploading one already kept
    /// answers its id); past it 403 `M_FORBIDDEN`.
    pub filters_per_user: u64,
    /// Key backup versions per account, deleted ones included (their
    /// numbers stay taken); past it 403 `M_FORBIDDEN`.
    pub backup_versions_per_user: u64,
    /// Largest push rule set of an account, in bytes of JSON; a change that
    /// would pass it gets 413 `M_TOO_LARGE`.
    pub push_rules_bytes: usize,
    /// Bytes of media one account may have uploaded; an upload that would
    /// pass it gets 413 `M_TOO_LARGE`.
    pub media_bytes_per_user: u64,
    /// Media ids one account may hold reserved (`/media/v1/create`) and
    /// not yet uploaded to; past it 429 `M_LIMIT_EXCEEDED`.
    pub pending_media_ids: u64,
    /// Stream positions a sync or `/keys/changes` reads device-list
    /// changes over. From an older token the server does not read them; it
    /// reports everyone the user shares a room with as changed (always
    /// correct: clients query those keys again).
    pub device_list_window: u64,
    /// Events one `createRoom` may add beyond the preset's own
    /// (`initial_state` entries plus `invite`s); more get 400
    /// `M_INVALID_PARAM` before the room exists.
    pub create_room_events: usize,
    /// Account data entries (global and per room) one account may keep;
    /// a new one past it gets 403 `M_FORBIDDEN` (changing one it has is
    /// always allowed).
    pub account_data_entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            uia_sessions: 10_000,
            uia_sessions_per_user: 5,
            password_hash_queue: 64,
            keys_query_users: 1_000,
            keys_claim_keys: 10_000,
            filter_bytes: 64 * 1024,
            filters_per_user: 1_000,
            backup_versions_per_user: 1_000,
            push_rules_bytes: 256 * 1024,
            media_bytes_per_user: 1024 * 1024 * 1024,
            pending_media_ids: 10,
            device_list_window: 100_000,
            create_room_events: 100,
            account_data_entries: 1_000,
        }
    }
}

/// Rate limits (`[rate_limits]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Switch every limit off (test set-ups, trusted networks).
    pub enabled: bool,
    /// Login attempts, counted per client IP; and failed attempts, counted
    /// per targeted account (see `Accounts::verify_password`).
    pub login: RateLimit,
    /// Registration attempts, counted per client IP.
    pub registration: RateLimit,
    /// Room events sent (`/send`, `/state`, `/redact`), per account.
    pub sends: RateLimit,
    /// Rooms created, per account.
    pub room_creation: RateLimit,
    /// Invites sent, per account.
    pub invites: RateLimit,
    /// `sendToDevice` requests, per account.
    pub to_device: RateLimit,
    /// `/keys/claim` requests, per account.
    pub key_claims: RateLimit,
    /// Media uploads, per account.
    pub media_uploads: RateLimit,
    /// Typing notifications, per account.
    pub typing: RateLimit,
    /// Public room directory listings (`/publicRooms`, which needs no
    /// account), per client IP.
    pub public_rooms: RateLimit,
    /// Addresses of reverse proxies (`10.0.0.0/8`, `::1/128`, or a plain
    /// address) whose `X-Forwarded-For` header names the client for
    /// address-keyed limits. From any other peer the header is ignored, since
    /// a client could write anything in it.
    pub trusted_proxies: Vec<IpRange>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            login: RateLimit {
                per_second: 0.2,
                burst: 5,
            },
            registration: RateLimit {
                per_second: 0.1,
                burst: 5,
            },
            sends: RateLimit {
                per_second: 10.0,
                burst: 50,
            },
            room_creation: RateLimit {
                per_second: 0.05,
                burst: 5,
            },
            invites: RateLimit {
                per_second: 0.5,
                burst: 20,
            },
            to_device: RateLimit {
                per_second: 20.0,
                burst: 100,
            },
            key_claims: RateLimit {
                per_second: 2.0,
                burst: 20,
            },
            media_uploads: RateLimit {
                per_second: 0.5,
                burst: 10,
            },
            typing: RateLimit {
                per_second: 1.0,
                burst: 10,
            },
            public_rooms: RateLimit {
                per_second: 2.0,
                burst: 20,
            },
            trusted_proxies: Vec::new(),
        }
    }
}

/// A token bucket: `burst` requests at once, refilled at `per_second`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained rate, in requests per second.
    pub per_second: f64,
    /// Requests allowed in a burst.
    pub burst: u32,
}

/// An address range, `ADDRESS/PREFIX` or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    network: IpAddr,
    prefix: u8,
}

impl IpRange {
    /// Whether `address` is in the range (an IPv4 address in IPv6 form
    /// counts as the IPv4 address).
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = match address {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
            v4 @ IpAddr::V4(_) => v4,
        };
        match (self.network, address) {
            (IpAddr::V4(network), IpAddr::V4(address)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(network) & mask == u32::from(address) & mask
            }
            (IpAddr::V6(network), IpAddr::V6(address)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(network) & mask == u128::from(address) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for IpRange {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (address, prefix) = text
            .split_once('/')
            .map_or((text, None), |(a, p)| (a, Some(p)));
        let network: IpAddr = address
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not an address or ADDRESS/PREFIX"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(prefix) => prefix
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?} has a prefix length over {max}"))?,
        };
        Ok(Self { network, prefix })
    }
}

impl<'de> Deserialize<'de> for IpRange {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// TLS for the client API (`[tls]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the certificate chain, leaf first.
    pub certificate: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub private_key: PathBuf,
}

/// The Server-Server API (`[federation]`).
///
/// Off by default: a fresh checkout serves only the client API and needs no
/// certificate. Turned on, the server listens on `bind` over TLS (the
/// certificate in `[federation.tls]` is required) and other servers find it
/// as the spec's server discovery says (`server_name` with an explicit port,
/// `/.well-known/matrix/server`, or port 8448).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FederationConfig {
    /// Serve the federation listener.
    pub enabled: bool,
    /// Address and port the federation listener binds.
    pub bind: SocketAddr,
    /// The federation listener's certificate and key (required when enabled).
    pub tls: Option<TlsConfig>,
    /// Check remote servers' certificates against the web PKI roots (plus
    /// `extra_ca_file`). Turn off only for test set-ups with self-signed
    /// peers: anyone on the path could then pose as any server.
    pub verify_certificates: bool,
    /// A PEM file of further certificate authorities to trust for remote servers.
    pub extra_ca_file: Option<PathBuf>,
    /// Non-public address ranges (`127.0.0.0/8`, `::1`, `10.0.0.0/8`) that
    /// outgoing federation requests may reach. Empty, the server never
    /// connects to loopback, private or link-local addresses, whatever a
    /// server name resolves to.
    pub allowed_ip_ranges: Vec<IpRange>,
    /// Fixed addresses (`host:port`) for server names, used before any
    /// discovery: for tests and private deployments.
    pub addresses: std::collections::BTreeMap<String, String>,
    /// Servers asked for other servers' keys (`/_matrix/key/v2/query`) when
    /// the origin itself cannot be reached. Empty: only origins are asked.
    pub trusted_notaries: Vec<String>,
    /// How long one outgoing request may take, connection included, in milliseconds.
    pub request_timeout_ms: u64,
    /// How long the sender waits before sending a failed transaction
    /// again, in milliseconds; the wait doubles after each failure.
    pub sender_backoff_initial_ms: u64,
    /// The longest wait between attempts at a transaction, in milliseconds.
    pub sender_backoff_max_ms: u64,
}

impl Default for FederationConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            bind: SocketAddr::from(([0, 0, 0, 0], 8448)),
            tls: None,
            verify_certificates: true,
            extra_ca_file: None,
            allowed_ip_ranges: Vec::new(),
            addresses: std::collections::BTreeMap::new(),
            trusted_notaries: Vec::new(),
            request_timeout_ms: 30_000,
            sender_backoff_initial_ms: 5_000,
            sender_backoff_max_ms: 3_600_000,
        }
    }
}

/// Logging (`[log]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `myelin_server=debug,info`;
    /// `RUST_LOG` overrides it.
    pub filter: String,
    /// `text` for people, `json` for log collectors.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            filter: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A configuration value that must never reach a log: its `Debug` is redacted.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A configuration that failed validation; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The TOML file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML file is not valid or has an unknown key.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, which names the key.
        message: String,
    },
    /// A value is out of range or malformed.
    #[error("invalid value for `{key}`: {reason}")]
    Invalid {
        /// The offending key.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// Which database the server stores into.
#[derive(Debug, Clone)]
pub enum DatabaseLocation {
    /// An embedded SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL server.
    Postgres(Secret),
}

impl Config {
    /// Reads a TOML file over the defaults.
    ///
    /// # Errors
    /// When the file cannot be read or has an unknown or mistyped key.
    pub fn from_toml_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml_str(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses TOML text over the defaults.
    ///
    /// # Errors
    /// The parser's message, naming the key, when the text is invalid.
    pub fn from_toml_str(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Checks every value and returns the typed server name.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first bad key.
    pub fn validate(&self) -> Result<OwnedServerName, ConfigError> {
        let server_name =
            ServerName::parse(&self.server_name).map_err(|e| ConfigError::Invalid {
                key: "server_name",
                reason: e.to_string(),
            })?;
        if self.max_request_body_bytes < 1024 {
            return Err(ConfigError::Invalid {
                key: "max_request_body_bytes",
                reason: "must be at least 1024".to_owned(),
            });
        }
        if self.refreshable_access_token_lifetime_ms == 0 {
            return Err(ConfigError::Invalid {
                key: "refreshable_access_token_lifetime_ms",
                reason: "must be at least 1".to_owned(),
            });
        }
        if self.max_cached_rooms == 0 {
            return Err(ConfigError::Invalid {
                key: "max_cached_rooms",
                reason: "must be at least 1".to_owned(),
            });
        }
        if self.max_upload_bytes == 0 {
            return Err(ConfigError::Invalid {
                key: "max_upload_bytes",
                reason: "must be at least 1".to_owned(),
            });
        }
        for (key, value) in [
            ("max_pending_to_device", self.max_pending_to_device),
            (
                "max_pending_to_device_per_sender",
                self.max_pending_to_device_per_sender,
            ),
            (
                "max_to_device_message_bytes",
                u64::try_from(self.max_to_device_message_bytes).unwrap_or(u64::MAX),
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    key,
                    reason: "must be at least 1".to_owned(),
                });
            }
        }
        for (key, value) in [
            ("limits.uia_sessions", self.limits.uia_sessions),
            (
                "limits.uia_sessions_per_user",
                self.limits.uia_sessions_per_user,
            ),
            (
                "limits.password_hash_queue",
                self.limits.password_hash_queue,
            ),
            ("limits.keys_query_users", self.limits.keys_query_users),
            ("limits.create_room_events", self.limits.create_room_events),
            ("limits.keys_claim_keys", self.limits.keys_claim_keys),
            ("limits.filter_bytes", self.limits.filter_bytes),
            ("limits.push_rules_bytes", self.limits.push_rules_bytes),
            (
                "limits.filters_per_user",
                usize::try_from(self.limits.filters_per_user).unwrap_or(usize::MAX),
            ),
            (
                "limits.backup_versions_per_user",
                usize::try_from(self.limits.backup_versions_per_user).unwrap_or(usize::MAX),
            ),
            (
                "limits.media_bytes_per_user",
                usize::try_from(self.limits.media_bytes_per_user).unwrap_or(usize::MAX),
            ),
            (
                "limits.pending_media_ids",
                usize::try_from(self.limits.pending_media_ids).unwrap_or(usize::MAX),
            ),
            (
                "limits.device_list_window",
                usize::try_from(self.limits.device_list_window).unwrap_or(usize::MAX),
            ),
            (
                "limits.account_data_entries",
                usize::try_from(self.limits.account_data_entries).unwrap_or(usize::MAX),
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    key,
                    reason: "must be at least 1".to_owned(),
                });
            }
        }
        if self.registration.mode == RegistrationMode::Token && self.registration.tokens.is_empty()
        {
            return Err(ConfigError::Invalid {
                key: "registration.tokens",
                reason: "token mode needs at least one token".to_owned(),
            });
        }
        for (key, limit) in [
            ("rate_limits.login", self.rate_limits.login),
            ("rate_limits.registration", self.rate_limits.registration),
            ("rate_limits.sends", self.rate_limits.sends),
            ("rate_limits.room_creation", self.rate_limits.room_creation),
            ("rate_limits.invites", self.rate_limits.invites),
            ("rate_limits.to_device", self.rate_limits.to_device),
            ("rate_limits.key_claims", self.rate_limits.key_claims),
            ("rate_limits.media_uploads", self.rate_limits.media_uploads),
            ("rate_limits.typing", self.rate_limits.typing),
            ("rate_limits.public_rooms", self.rate_limits.public_rooms),
        ] {
            if !(limit.per_second.is_finite() && limit.per_second > 0.0) || limit.burst == 0 {
                return Err(ConfigError::Invalid {
                    key,
                    reason: "per_second must be positive and burst at least 1".to_owned(),
                });
            }
        }
        let is_supported = RoomVersionId::try_from(self.default_room_version.as_str())
            .is_ok_and(|id| RoomVersion::try_from(&id).is_ok());
        if !is_supported {
            return Err(ConfigError::Invalid {
                key: "default_room_version",
                reason: "supported room versions are 1 to 12".to_owned(),
            });
        }
        self.validate_federation()?;
        self.database()?;
        Ok(server_name)
    }

    fn validate_federation(&self) -> Result<(), ConfigError> {
        let federation = &self.federation;
        if federation.enabled && federation.tls.is_none() {
            return Err(ConfigError::Invalid {
                key: "federation.tls",
                reason: "the federation listener needs a certificate and key".to_owned(),
            });
        }
        if federation.request_timeout_ms == 0 {
            return Err(ConfigError::Invalid {
                key: "federation.request_timeout_ms",
                reason: "must be at least 1".to_owned(),
            });
        }
        if federation.sender_backoff_initial_ms == 0 {
            return Err(ConfigError::Invalid {
                key: "federation.sender_backoff_initial_ms",
                reason: "must be at least 1".to_owned(),
            });
        }
        if federation.sender_backoff_max_ms < federation.sender_backoff_initial_ms {
            return Err(ConfigError::Invalid {
                key: "federation.sender_backoff_max_ms",
                reason: "must be at least federation.sender_backoff_initial_ms".to_owned(),
            });
        }
        for (name, address) in &federation.addresses {
            ServerName::parse(name).map_err(|e| ConfigError::Invalid {
                key: "federation.addresses",
                reason: format!("{name:?}: {e}"),
            })?;
            let has_port = address
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !has_port {
                return Err(ConfigError::Invalid {
                    key: "federation.addresses",
                    reason: format!("{address:?} is not host:port"),
                });
            }
        }
        for notary in &federation.trusted_notaries {
            ServerName::parse(notary).map_err(|e| ConfigError::Invalid {
                key: "federation.trusted_notaries",
                reason: format!("{notary:?}: {e}"),
            })?;
        }
        Ok(())
    }

    /// Settings that are valid but risky, each as a sentence for the
    /// operator, given the address the server is actually bound to.
    pub fn warnings(&self, bound: SocketAddr) -> Vec<&'static str> {
        let mut warnings = Vec::new();
        if self.registration.mode == RegistrationMode::Open && !bound.ip().is_loopback() {
            warnings.push(
                "registration is open and the server listens beyond loopback: anyone who \
                 can reach it can create accounts (set registration.mode to \"token\" or \
                 \"closed\")",
            );
        }
        if self.federation.enabled && !self.federation.verify_certificates {
            warnings.push(
                "federation.verify_certificates is off: anyone on the network path can \
                 pose as any remote server",
            );
        }
        warnings
    }

    /// Where the data lives, from `database_url` or the data directory.
    ///
    /// # Errors
    /// When `database_url` names an unsupported scheme.
    pub fn database(&self) -> Result<DatabaseLocation, ConfigError> {
        let Some(url) = &self.database_url else {
            return Ok(DatabaseLocation::Sqlite(self.data_dir.join("myelin.db")));
        };
        let url = url.expose();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(DatabaseLocation::Postgres(Secret::new(url)))
        } else if let Some(path) = url.strip_prefix("sqlite://") {
            Ok(DatabaseLocation::Sqlite(PathBuf::from(path)))
        } else {
            Err(ConfigError::Invalid {
                key: "database_url",
                reason: "expected postgres://… or sqlite://PATH".to_owned(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example in the README must stay a valid configuration.
    #[test]
    fn documented_example_parses() {
        let readme = include_str!("../../README.md");
        let start = readme.find("```toml\n").expect("README has a toml example") + 8;
        let end = start + readme[start..].find("```").expect("example is closed");
        let config = Config::from_toml_str(&readme[start..end]).expect("example parses");
        config.validate().expect("example validates");
        assert_eq!(config.registration.mode, RegistrationMode::Token);
        assert!(!config.push.allow_private_gateways);
    }

    #[test]
    fn push_gateways_stay_public_unless_allowed() {
        assert!(!Config::default().push.allow_private_gateways);
        let config =
            Config::from_toml_str("[push]\nallow_private_gateways = true\nretry_delay_ms = 5")
                .expect("parses");
        assert!(config.push.allow_private_gateways);
        assert_eq!(config.push.retry_delay_ms, 5);
        let err = Config::from_toml_str("[push]\nallow_private = true").expect_err("unknown key");
        assert!(err.contains("allow_private"), "{err}");
    }

    #[test]
    fn defaults_need_no_file() {
        let config = Config::default();
        assert_eq!(
            config.validate().expect("defaults are valid").as_str(),
            "localhost"
        );
        assert!(
            matches!(config.database(), Ok(DatabaseLocation::Sqlite(p)) if p.ends_with("myelin.db"))
        );
    }

    #[test]
    fn open_registration_beyond_loopback_is_warned_about() {
        let open = Config::default();
        let loopback = SocketAddr::from(([127, 0, 0, 1], 8008));
        let public = SocketAddr::from(([0, 0, 0, 0], 8008));
        assert!(open.warnings(loopback).is_empty());
        assert_eq!(open.warnings(public).len(), 1);
        let mut gated = Config::default();
        gated.registration.mode = RegistrationMode::Token;
        assert!(gated.warnings(public).is_empty());
    }

    #[test]
    fn federation_is_off_by_default_and_checked_when_on() {
        let defaults = Config::default();
        assert!(!defaults.federation.enabled);
        assert!(defaults.federation.verify_certificates);
        assert!(defaults.federation.allowed_ip_ranges.is_empty());
        let without_certificate = Config::from_toml_str("[federation]\nenabled = true").unwrap();
        assert!(matches!(
            without_certificate.validate(),
            Err(ConfigError::Invalid {
                key: "federation.tls",
                ..
            })
        ));
        let bad_address =
            Config::from_toml_str("[federation.addresses]\n\"a.example\" = \"nowhere\"").unwrap();
        assert!(matches!(
            bad_address.validate(),
            Err(ConfigError::Invalid {
                key: "federation.addresses",
                ..
            })
        ));
        let good = Config::from_toml_str(
            "[federation]\nallowed_ip_ranges = [\"127.0.0.0/8\"]\n\
             [federation.addresses]\n\"a.example:8448\" = \"[::1]:8448\"",
        )
        .unwrap();
        good.validate().unwrap();
        assert_eq!(good.federation.allowed_ip_ranges.len(), 1);
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = Config::from_toml_str("bindd = \"127.0.0.1:1\"").expect_err("unknown key");
        assert!(err.contains("bindd"), "{err}");
    }

    #[test]
    fn token_mode_without_tokens_is_rejected() {
        let config = Config::from_toml_str("[registration]\nmode = \"token\"").expect("parses");
        assert!(matches!(
            config.validate(),
            Err(ConfigError::Invalid {
                key: "registration.tokens",
                ..
            })
        ));
    }

    #[test]
    fn address_ranges_parse_and_match() {
        let range: IpRange = "10.0.0.0/8".parse().unwrap();
        assert!(range.contains("10.9.8.7".parse().unwrap()));
        assert!(range.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!range.contains("11.0.0.1".parse().unwrap()));
        let one: IpRange = "::1".parse().unwrap();
        assert!(one.contains("::1".parse().unwrap()));
        assert!(!one.contains("::2".parse().unwrap()));
        let all: IpRange = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("192.0.2.1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<IpRange>().is_err());
        assert!("proxy".parse::<IpRange>().is_err());
        let config = Config::from_toml_str("[rate_limits]\ntrusted_proxies = [\"10.0.0.0/99\"]");
        assert!(config.is_err_and(|e| e.contains("prefix")));
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let config = Config {
            database_url: Some(Secret::new("postgres://u:hunter2@db/x")),
            ..Config::default()
        };
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
