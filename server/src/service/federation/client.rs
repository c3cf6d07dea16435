//! The outbound federation client: signed requests to other servers.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, header};
use myelin_crypto::to_canonical_string;
use ruma::{CanonicalJsonObject, CanonicalJsonValue, ServerName};
use serde_json::Value;

use super::{
    FederationError,
    auth::{SignedRequest, authorization_header},
    discovery::Discovery,
    keys::KeyFetcher,
    transport::Transport,
};
use crate::service::server_keys::ServerKeys;

/// Largest answer read from a remote server.
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// Sends requests to other servers, signed with this server's key.
#[derive(Debug)]
pub struct FederationClient {
    keys: Arc<ServerKeys>,
    transport: Transport,
    discovery: Discovery,
}

impl FederationClient {
    /// A client signing as `keys`' server.
    pub fn new(keys: Arc<ServerKeys>, transport: Transport, discovery: Discovery) -> Self {
        Self {
            keys,
            transport,
            discovery,
        }
    }

    /// `GET path_and_query` on `destination`.
    ///
    /// # Errors
    /// See [`FederationError`]; a remote Matrix error keeps its status and code.
    pub async fn get(
        &self,
        destination: &ServerName,
        path_and_query: &str,
    ) -> Result<Value, FederationError> {
        self.request(Method::GET, destination, path_and_query, None)
            .await
    }

    /// `POST path_and_query` on `destination` with a JSON object body.
    ///
    /// # Errors
    /// As [`Self::get`]; [`FederationError::InvalidRequest`] for a body that
    /// is not an object of canonical JSON (no floats).
    pub async fn post(
        &self,
        destination: &ServerName,
        path_and_query: &str,
        body: &Value,
    ) -> Result<Value, FederationError> {
        self.request(Method::POST, destination, path_and_query, Some(body))
            .await
    }

    /// `PUT path_and_query` on `destination` with a JSON object body.
    ///
    /// # Errors
    /// As [`Self::post`].
    pub async fn put(
        &self,
        destination: &ServerName,
        path_and_query: &str,
        body: &Value,
    ) -> Result<Value, FederationError> {
        self.request(Method::PUT, destination, path_and_query, Some(body))
            .await
    }

    async fn request(
        &self,
        method: Method,
        destination: &ServerName,
        path_and_query: &str,
        body: Option<&Value>,
    ) -> Result<Value, FederationError> {
        if !path_and_query.starts_with('/') {
            return Err(FederationError::InvalidRequest(
                "the path must start with /".to_owned(),
            ));
        }
        let content = body.map(canonical_object).transpose()?;
        // The bytes sent are the canonical JSON that is signed.
        let bytes = content.as_ref().map(to_canonical_string);
        let authorization = authorization_header(
            self.keys.current(),
            self.keys.server_name(),
            destination,
            &SignedRequest {
                method: method.as_str(),
                uri: path_and_query,
                content: content.as_ref(),
            },
        )
        .map_err(|e| FederationError::InvalidRequest(e.to_string()))?;
        let resolved = self.discovery.resolve(destination).await;
        let mut request = Request::builder()
            .method(method)
            .uri(path_and_query)
            .header(header::HOST, &resolved.host_header)
            .header(header::AUTHORIZATION, authorization);
        if bytes.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(bytes.map(Bytes::from).unwrap_or_default()))
            .map_err(|e| FederationError::InvalidRequest(e.to_string()))?;
        let (status, _, body) = self
            .transport
            .send(&resolved.target, request, MAX_RESPONSE_BYTES)
            .await?;
        let json: Option<Value> = serde_json::from_slice(&body).ok();
        if status.is_success() {
            return json.ok_or_else(|| {
                FederationError::InvalidResponse("the answer is not JSON".to_owned())
            });
        }
        let field = |name: &str| {
            json.as_ref()
                .and_then(|json| json.get(name))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        Err(FederationError::Remote {
            status: status.as_u16(),
            errcode: field("errcode"),
            error: field("error"),
        })
    }
}

#[async_trait]
impl KeyFetcher for FederationClient {
    async fn server_keys(
        &self,
        server: &ServerName,
    ) -> Result<CanonicalJsonObject, FederationError> {
        let document = self.get(server, "/_matrix/key/v2/server").await?;
        canonical_object(&document)
            .map_err(|_| FederationError::InvalidResponse("not a key document".to_owned()))
    }

    async fn notary_keys(
        &self,
        notary: &ServerName,
        server: &ServerName,
    ) -> Result<Vec<CanonicalJsonObject>, FederationError> {
        let answer = self
            .get(notary, &format!("/_matrix/key/v2/query/{server}"))
            .await?;
        let documents = answer
            .get("server_keys")
            .and_then(Value::as_array)
            .ok_or_else(|| FederationError::InvalidResponse("no server_keys".to_owned()))?;
        Ok(documents
            .iter()
            .filter_map(|document| canonical_object(document).ok())
            .collect())
    }
}

/// `value` as a canonical JSON object.
fn canonical_object(value: &Value) -> Result<CanonicalJsonObject, FederationError> {
    match CanonicalJsonValue::try_from(value.clone()) {
        Ok(CanonicalJsonValue::Object(object)) => Ok(object),
        _ => Err(FederationError::InvalidRequest(
            "the body must be a JSON object without floats".to_owned(),
        )),
    }
}
