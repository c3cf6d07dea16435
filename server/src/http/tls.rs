//! TLS for the client API with rustls.
//!
//! [`TlsListener`] accepts TCP connections and runs each handshake in its own
//! task, so one slow or hostile client cannot hold up the others; finished
//! streams are handed to axum through [`axum::serve::Listener`].

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        self, ServerConfig,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    },
    server::TlsStream,
};
use tracing::{debug, warn};

use crate::config::TlsConfig;

/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes finished but not yet picked up by the server.
const ACCEPT_QUEUE: usize = 256;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file is missing or not PEM.
    #[error("cannot read TLS certificate {path}: {reason}")]
    Certificate {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// The key file is missing or not PEM.
    #[error("cannot read TLS private key {path}: {reason}")]
    PrivateKey {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// rustls refused the pair.
    #[error("invalid TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The listening socket failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A listener that yields TLS streams whose handshake has completed.
#[derive(Debug)]
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
}

impl TlsListener {
    /// Wraps a bound TCP listener with the configured certificate and key.
    ///
    /// # Errors
    /// When the files cannot be read or rustls rejects them.
    pub fn new(tcp: TcpListener, config: &TlsConfig) -> Result<Self, TlsError> {
        let acceptor = TlsAcceptor::from(Arc::new(server_config(config)?));
        let local_addr = tcp.local_addr()?;
        let (sender, ready) = mpsc::channel(ACCEPT_QUEUE);
        tokio::spawn(accept_loop(tcp, acceptor, sender));
        Ok(Self { ready, local_addr })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept loop only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

async fn accept_loop(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = tcp.accept() => match accepted {
                Ok(connection) => connection,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(%error, "accepting a TCP connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = ready.closed() => return,
        };
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = ready.send((tls, peer)).await;
                }
                Ok(Err(error)) => debug!(%error, "TLS handshake failed"),
                Err(_) => debug!("TLS handshake timed out"),
            }
        });
    }
}

fn server_config(config: &TlsConfig) -> Result<ServerConfig, TlsError> {
    let certificate_error = |reason: String| TlsError::Certificate {
        path: config.certificate.clone(),
        reason,
    };
    let certificates = CertificateDer::pem_file_iter(&config.certificate)
        .map_err(|e| certificate_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| certificate_error(e.to_string()))?;
    if certificates.is_empty() {
        return Err(certificate_error("no certificate in the file".to_owned()));
    }
    let key =
        PrivateKeyDer::from_pem_file(&config.private_key).map_err(|e| TlsError::PrivateKey {
            path: config.private_key.clone(),
            reason: e.to_string(),
        })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certificates, key)?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(server)
}
