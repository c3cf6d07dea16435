//! Myelin's Matrix homeserver.
//!
//! The server speaks the Matrix Client-Server API so that unmodified Matrix
//! clients work against it. It is built in three layers whose dependencies
//! point down:
//!
//! - [`http`]: axum routers and extractors; every failure is a Matrix error JSON;
//! - [`service`]: the protocol (accounts, devices, profiles, user-interactive auth);
//! - [`storage`]: one interface with SQLite (embedded default) and PostgreSQL backends.
//!
//! ```no_run
//! # async fn example() -> Result<(), myelin_server::StartError> {
//! let config = myelin_server::config::Config::default();
//! let listener = tokio::net::TcpListener::bind(config.bind).await?;
//! myelin_server::run(listener, config, std::future::pending()).await
//! # }
//! ```
//!
//! Federation (`service::federation`) receives and sends transactions,
//! serves the room DAG to other servers and joins, invites and leaves
//! across servers; spec-notes/federation.md lists what it does not do yet.

pub mod config;
pub mod http;
pub mod service;
pub mod storage;

use std::{future::Future, sync::Arc, time::Duration};

use tokio::net::TcpListener;
use tracing::{info, warn};

use config::{Config, ConfigError};
use http::{
    AppState,
    tls::{TlsError, TlsListener},
};
use service::{
    ServiceError,
    account_data::AccountData,
    accounts::Accounts,
    committed::CommittedFeed,
    dehydrated_devices::DehydratedDevices,
    devices::Devices,
    e2ee::{DeviceLists, E2eeKeys},
    federation::{
        Federation, FederationClient, RemoteKeys,
        discovery::{Discovery, NetworkLookups},
        inbound::{Inbound, InboundServices},
        membership::RemoteMembership,
        sender::{Backoff, FederationSender},
        system_clock,
        transport::{Transport, TransportSetupError},
    },
    key_backup::KeyBackup,
    media::{Media, MediaQuota},
    notifier::Notifier,
    presence::Presence,
    profile::Profiles,
    public_rooms::PublicRooms,
    push::{PrunePolicy, Push, PushServices, RetryPolicy},
    push_rules::PushRules,
    pushers::Pushers,
    rate_limit::{AccountBudgets, RateLimiter},
    room_events::{RoomEvents, parse_version},
    room_ops::RoomOps,
    server_keys::ServerKeys,
    stream::Stream,
    sync::{FilterLimits, Sync},
    to_device::{ToDevice, ToDeviceLimits},
    typing::Typing,
};
use storage::{Storage, StorageError};

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The database could not be opened or migrated.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The server's signing key could not be loaded or created.
    #[error("signing key: {0}")]
    SigningKey(#[source] ServiceError),
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The federation client could not be set up.
    #[error(transparent)]
    Federation(#[from] TransportSetupError),
    /// A service could not start.
    #[error("cannot start the services: {0}")]
    Services(ServiceError),
    /// Serving failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Opens the configured storage and builds the services on it.
///
/// # Errors
/// When the configuration is invalid or the database cannot be opened.
pub async fn open(config: &Config) -> Result<(AppState, Arc<dyn Storage>), StartError> {
    let server_name = config.validate()?;
    let storage = storage::open(&config.database()?).await?;
    let server_keys = ServerKeys::load_or_generate(storage.clone(), server_name.clone())
        .await
        .map_err(StartError::SigningKey)?;
    let server_keys = Arc::new(server_keys);
    let federation = Arc::new(federation(
        config,
        &storage,
        &server_keys,
        server_name.clone(),
    )?);
    let notifier = Arc::new(Notifier::default());
    let stream = Arc::new(Stream::new(storage.max_stream_position().await?));
    let outbound =
        federation_sender(config, &storage, &stream, &federation, server_name.clone()).await?;
    let device_lists = Arc::new(DeviceLists::new(
        storage.clone(),
        stream.clone(),
        notifier.clone(),
        outbound.clone(),
        config.limits.device_list_window,
    ));
    let accounts = Arc::new(
        Accounts::new(
            storage.clone(),
            server_name.clone(),
            config,
            device_lists.clone(),
        )
        .map_err(StartError::Services)?,
    );
    let e2ee_keys = Arc::new(E2eeKeys::new(
        storage.clone(),
        device_lists.clone(),
        accounts.clone(),
        config.limits.keys_query_users,
        config.limits.keys_claim_keys,
    ));
    let profiles = Arc::new(Profiles::new(
        storage.clone(),
        server_name.clone(),
        config.profile_lookup,
        config.user_directory,
    ));
    let (committed, committed_events) = CommittedFeed::new();
    let room_events = Arc::new(RoomEvents::new(
        storage.clone(),
        server_keys.clone(),
        notifier.clone(),
        stream.clone(),
        config.max_cached_rooms,
        committed,
    ));
    let default_version =
        parse_version(&config.default_room_version).map_err(StartError::Services)?;
    let presence = Arc::new(Presence::new(
        storage.clone(),
        stream.clone(),
        room_events.clone(),
        notifier.clone(),
        config.presence.enabled,
    ));
    let typing = Arc::new(Typing::new(notifier.clone()));
    let account_data = Arc::new(AccountData::new(
        storage.clone(),
        stream.clone(),
        notifier.clone(),
        room_events.clone(),
        outbound.clone(),
        config.limits.account_data_entries,
    ));
    let push_rules = Arc::new(PushRules::new(
        storage.clone(),
        account_data.clone(),
        config.limits.push_rules_bytes,
    ));
    let push = Arc::new(Push::start(
        storage.clone(),
        PushServices {
            events: room_events.clone(),
            push_rules: push_rules.clone(),
        },
        server_name.clone(),
        committed_events,
        config.push.allow_private_gateways,
        RetryPolicy {
            first_delay: Duration::from_millis(config.push.retry_delay_ms),
            ..RetryPolicy::default()
        },
        PrunePolicy {
            interval: Duration::from_millis(config.push.prune_interval_ms.max(1)),
            read_retention: Duration::from_millis(config.push.read_notification_retention_ms),
            keep_per_user: config.push.max_notifications_per_user,
        },
    ));
    let to_device = Arc::new(ToDevice::new(
        storage.clone(),
        stream.clone(),
        notifier.clone(),
        outbound.clone(),
        ToDeviceLimits {
            max_pending: config.max_pending_to_device,
            max_pending_per_sender: config.max_pending_to_device_per_sender,
            max_message_bytes: config.max_to_device_message_bytes,
        },
    ));
    let sync = Arc::new(Sync::new(
        storage.clone(),
        room_events.clone(),
        notifier,
        typing.clone(),
        device_lists.clone(),
        to_device.clone(),
        FilterLimits {
            max_bytes: config.limits.filter_bytes,
            per_user: config.limits.filters_per_user,
        },
    ));
    let media = Arc::new(
        Media::new(
            storage.clone(),
            server_name.clone(),
            &config.data_dir,
            config.max_upload_bytes,
            MediaQuota {
                bytes_per_user: config.limits.media_bytes_per_user,
                pending_ids: config.limits.pending_media_ids,
            },
        )
        .map_err(StartError::Services)?,
    );
    let key_backup = Arc::new(KeyBackup::new(
        storage.clone(),
        config.limits.backup_versions_per_user,
    ));
    let inbound = Arc::new(Inbound::new(
        storage.clone(),
        InboundServices {
            events: room_events.clone(),
            federation: federation.clone(),
            typing: typing.clone(),
            account_data: account_data.clone(),
            to_device: to_device.clone(),
            device_lists,
        },
        system_clock(),
    ));
    let membership = Arc::new(RemoteMembership::new(
        room_events.clone(),
        storage.clone(),
        federation.clone(),
        server_keys.clone(),
    ));
    let rooms = Arc::new(RoomOps::new(
        room_events,
        membership.clone(),
        storage.clone(),
        profiles.clone(),
        push_rules.clone(),
        server_name,
        default_version,
        config.limits.create_room_events,
    ));
    let public_rooms = Arc::new(PublicRooms::new(
        rooms.clone(),
        stream.clone(),
        RateLimiter::new(
            config
                .rate_limits
                .enabled
                .then_some(config.rate_limits.public_rooms),
        ),
    ));
    let dehydrated_devices = Arc::new(DehydratedDevices::new(
        storage.clone(),
        accounts.clone(),
        e2ee_keys.clone(),
        to_device.clone(),
        stream.clone(),
    ));
    let state = AppState {
        dehydrated_devices,
        public_rooms,
        budgets: Arc::new(AccountBudgets::new(&config.rate_limits)),
        trusted_proxies: config.rate_limits.trusted_proxies.clone().into(),
        federation,
        inbound,
        membership,
        outbound,
        to_device,
        e2ee_keys,
        key_backup,
        sync,
        media,
        typing,
        account_data,
        push_rules,
        push,
        pushers: Arc::new(Pushers::new(storage.clone())),
        presence,
        devices: Arc::new(Devices::new(storage.clone(), accounts.clone())),
        rooms,
        profiles,
        server_keys,
        accounts,
    };
    Ok((state, storage))
}

/// The federation services: the outbound client, the remote key cache
/// that fetches through it, and request authentication on top.
fn federation(
    config: &Config,
    storage: &Arc<dyn Storage>,
    server_keys: &Arc<ServerKeys>,
    server_name: ruma::OwnedServerName,
) -> Result<Federation, StartError> {
    let settings = &config.federation;
    let transport = Transport::new(settings)?;
    let discovery = Discovery::new(
        &settings.addresses,
        Box::new(NetworkLookups::new(transport.clone())),
    );
    let client = Arc::new(FederationClient::new(
        server_keys.clone(),
        transport,
        discovery,
    ));
    let notaries = settings
        .trusted_notaries
        .iter()
        .filter_map(|name| ruma::ServerName::parse(name).ok())
        .collect();
    let keys = Arc::new(RemoteKeys::new(
        storage.clone(),
        client.clone(),
        server_keys.clone(),
        notaries,
        system_clock(),
    ));
    Ok(Federation::new(
        server_name,
        keys,
        client,
        system_clock(),
        settings.enabled,
    ))
}

/// The outbound federation sender, sending through the federation
/// client; started only when federation is enabled (EDUs queued meanwhile
/// wait for it).
async fn federation_sender(
    config: &Config,
    storage: &Arc<dyn Storage>,
    stream: &Arc<Stream>,
    federation: &Federation,
    server_name: ruma::OwnedServerName,
) -> Result<FederationSender, StartError> {
    let settings = &config.federation;
    let sender = FederationSender::new(
        storage.clone(),
        stream.clone(),
        server_name,
        federation.client().clone(),
        Backoff {
            initial: Duration::from_millis(settings.sender_backoff_initial_ms),
            max: Duration::from_millis(settings.sender_backoff_max_ms),
        },
    );
    if settings.enabled {
        sender.start().await.map_err(StartError::Services)?;
    }
    Ok(sender)
}

/// Serves the client API on `listener` until `shutdown` resolves, then
/// finishes in-flight requests and closes the database. With
/// `[federation] enabled`, the federation listener binds its configured
/// address too.
///
/// The listener is bound by the caller, so tests can bind port 0.
///
/// # Errors
/// When start-up fails (see [`open`]) or a listener fails.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let federation = if config.federation.enabled {
        Some(TcpListener::bind(config.federation.bind).await?)
    } else {
        None
    };
    run_with_federation(listener, federation, config, shutdown).await
}

/// [`run`] with the federation listener bound by the caller too (tests
/// bind port 0 and name the server after it). `federation_listener` is
/// used only when `[federation] enabled`.
///
/// # Errors
/// As [`run`].
pub async fn run_with_federation(
    listener: TcpListener,
    federation_listener: Option<TcpListener>,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let (state, storage) = open(&config).await?;
    let outbound = state.outbound.clone();
    let shutdown = futures_util::FutureExt::shared(Box::pin(shutdown));
    let federation = match (&config.federation.tls, federation_listener) {
        (Some(tls), Some(tcp)) if config.federation.enabled => {
            let address = tcp.local_addr()?;
            let tls_listener = TlsListener::new(tcp, tls)?;
            let app = http::federation::app(state.clone(), config.max_request_body_bytes);
            info!(%address, "serving federation over HTTPS");
            let stop = shutdown.clone();
            Some(tokio::spawn(async move {
                axum::serve(tls_listener, app)
                    .with_graceful_shutdown(stop)
                    .await
            }))
        }
        _ => None,
    };
    let served = serve_client_api(listener, state, &config, shutdown).await;
    if let Some(federation) = federation {
        if served.is_err() {
            // The shutdown signal may never come now.
            federation.abort();
        }
        match federation.await {
            Err(error) if error.is_cancelled() => {}
            Ok(result) => result?,
            Err(error) => warn!(%error, "the federation listener stopped abnormally"),
        }
    }
    // Unsent work stays in storage for the next start.
    outbound.stop();
    storage.close().await;
    served?;
    info!("stopped");
    Ok(())
}

async fn serve_client_api(
    listener: TcpListener,
    state: AppState,
    config: &Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let app = http::app(state, config.max_request_body_bytes)
        .into_make_service_with_connect_info::<http::PeerAddr>();
    let address = listener.local_addr()?;
    for warning in config.warnings(address) {
        warn!("{warning}");
    }
    match &config.tls {
        None => {
            info!(%address, server_name = %config.server_name, "serving over HTTP");
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await?;
        }
        Some(tls) => {
            let listener = TlsListener::new(listener, tls)?;
            info!(%address, server_name = %config.server_name, "serving over HTTPS");
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await?;
        }
    }
    Ok(())
}
