//! One HTTPS exchange with a remote server: connect to a checked address,
//! TLS with the name the spec says to verify, HTTP/1.1, a bounded answer,
//! all under one timeout.
//!
//! Connections are not pooled yet: each request opens its own.

use std::{io, net::IpAddr, path::Path, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{HeaderMap, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::{
    TlsConnector,
    rustls::{
        self, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
        client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        crypto::WebPkiSupportedAlgorithms,
        pki_types::{CertificateDer, ServerName as TlsName, UnixTime, pem::PemObject},
    },
};

use super::FederationError;
use crate::{config::FederationConfig, service::address_policy::AddressPolicy};

/// Where to connect and which name the certificate must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// A DNS name or an IP address (without brackets).
    pub host: String,
    /// The TCP port.
    pub port: u16,
    /// The name sent as SNI and checked in the certificate: a DNS name or
    /// an IP address (no SNI is sent for those).
    pub tls_name: String,
}

/// Why the transport could not be built from the configuration.
#[derive(Debug, thiserror::Error)]
pub enum TransportSetupError {
    /// The extra CA file could not be read.
    #[error("cannot read federation.extra_ca_file {path}: {reason}")]
    CaFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("invalid federation TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Sends requests to remote servers.
#[derive(Clone)]
pub struct Transport {
    tls: TlsConnector,
    policy: AddressPolicy,
    timeout: Duration,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("policy", &self.policy)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// A transport as `[federation]` configures it.
    ///
    /// # Errors
    /// When the extra CA file cannot be read or rustls refuses it.
    pub fn new(config: &FederationConfig) -> Result<Self, TransportSetupError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let mut tls = if config.verify_certificates {
            let mut roots = RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            if let Some(path) = &config.extra_ca_file {
                for certificate in read_certificates(path)? {
                    roots.add(certificate)?;
                }
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(
                    provider.signature_verification_algorithms,
                )))
                .with_no_client_auth()
        };
        // Synapse offers no ALPN; HTTP/1.1 is what every server speaks.
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            tls: TlsConnector::from(Arc::new(tls)),
            policy: AddressPolicy::allowing(config.allowed_ip_ranges.clone()),
            timeout: Duration::from_millis(config.request_timeout_ms),
        })
    }

    /// Sends `request` to `target` and reads at most `max_body` bytes of
    /// the answer.
    ///
    /// # Errors
    /// [`FederationError::Refused`] when the target resolves to no address
    /// the policy permits; [`FederationError::Unreachable`] for DNS,
    /// connection, TLS and HTTP failures and the timeout;
    /// [`FederationError::InvalidResponse`] for an answer over `max_body`.
    pub async fn send(
        &self,
        target: &Target,
        request: Request<Full<Bytes>>,
        max_body: usize,
    ) -> Result<(StatusCode, HeaderMap, Bytes), FederationError> {
        tokio::time::timeout(self.timeout, self.exchange(target, request, max_body))
            .await
            .map_err(|_| FederationError::Unreachable("timed out".to_owned()))?
    }

    async fn exchange(
        &self,
        target: &Target,
        request: Request<Full<Bytes>>,
        max_body: usize,
    ) -> Result<(StatusCode, HeaderMap, Bytes), FederationError> {
        let addresses = self
            .policy
            .resolve(&target.host, target.port)
            .await
            .map_err(|e| match e.kind() {
                io::ErrorKind::PermissionDenied => FederationError::Refused(format!(
                    "{} resolves to no address federation may reach",
                    target.host
                )),
                _ => FederationError::Unreachable(format!("cannot resolve {}: {e}", target.host)),
            })?;
        let mut last_error = None;
        let mut stream = None;
        for address in addresses {
            match TcpStream::connect(address).await {
                Ok(connected) => {
                    stream = Some(connected);
                    break;
                }
                Err(e) => last_error = Some(e),
            }
        }
        let stream = stream.ok_or_else(|| {
            let reason = last_error.map_or_else(String::new, |e| e.to_string());
            FederationError::Unreachable(format!("cannot connect to {}: {reason}", target.host))
        })?;
        let name = match target.tls_name.parse::<IpAddr>() {
            Ok(ip) => TlsName::IpAddress(ip.into()),
            Err(_) => TlsName::try_from(target.tls_name.clone()).map_err(|_| {
                FederationError::Unreachable(format!("{} is not a TLS name", target.tls_name))
            })?,
        };
        let tls = self
            .tls
            .connect(name, stream)
            .await
            .map_err(|e| FederationError::Unreachable(format!("TLS: {e}")))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| FederationError::Unreachable(format!("HTTP: {e}")))?;
        let driver = tokio::spawn(connection);
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| FederationError::Unreachable(format!("HTTP: {e}")))?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, max_body)
            .collect()
            .await
            .map_err(|e| FederationError::InvalidResponse(format!("reading the answer: {e}")))?
            .to_bytes();
        driver.abort();
        Ok((parts.status, parts.headers, body))
    }
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TransportSetupError> {
    let error = |reason: String| TransportSetupError::CaFile {
        path: path.to_owned(),
        reason,
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(e.to_string()))?;
    if certificates.is_empty() {
        return Err(error("no certificate in the file".to_owned()));
    }
    Ok(certificates)
}

/// Accepts any certificate, still checking that the handshake is signed by
/// the key it presents: `verify_certificates = false`, for test set-ups
/// with self-signed peers only.
#[derive(Debug)]
struct AcceptAnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &TlsName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
