//! The extractor for authenticated federation requests.

use axum::{
    extract::{FromRequest, OriginalUri, Request},
    http::header,
};
use myelin_crypto::parse_canonical_object;
use ruma::{CanonicalJsonObject, CanonicalJsonValue, OwnedServerName};
use serde::de::DeserializeOwned;

use crate::{
    http::{AppState, error::MatrixError, extract::body_bytes},
    service::federation::SignedRequest,
};

/// A request signed by another server: the origin that signed it, and its
/// JSON body parsed as `T` (an empty body reads as `{}`).
///
/// The signature covers the request target as received: the original URI,
/// since nested routers rewrite the one they pass on.
#[derive(Debug)]
pub struct Signed<T> {
    /// The server that signed the request.
    pub origin: OwnedServerName,
    /// The body.
    pub body: T,
}

impl<T: DeserializeOwned> FromRequest<AppState> for Signed<T> {
    type Rejection = MatrixError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let method = request.method().as_str().to_owned();
        let uri = request
            .extensions()
            .get::<OriginalUri>()
            .map_or_else(|| request.uri().clone(), |original| original.0.clone());
        let target = uri
            .path_and_query()
            .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned());
        let authorizations: Vec<String> = request
            .headers()
            .get_all(header::AUTHORIZATION)
            .iter()
            .filter_map(|value| value.to_str().ok().map(str::to_owned))
            .collect();
        let bytes = body_bytes(request, state).await?;
        let content = if bytes.is_empty() {
            None
        } else {
            let text = std::str::from_utf8(&bytes)
                .map_err(|_| MatrixError::not_json("body is not UTF-8"))?;
            Some(
                parse_canonical_object(text)
                    .map_err(|_| MatrixError::not_json("body is not a canonical JSON object"))?,
            )
        };
        let origin = state
            .federation
            .authenticate(
                authorizations.iter().map(String::as_str),
                &SignedRequest {
                    method: &method,
                    uri: &target,
                    content: content.as_ref(),
                },
            )
            .await?;
        let content = CanonicalJsonValue::Object(content.unwrap_or_else(CanonicalJsonObject::new));
        let body = serde_json::from_value(content.into())
            .map_err(|e| MatrixError::bad_json(e.to_string()))?;
        Ok(Self { origin, body })
    }
}
