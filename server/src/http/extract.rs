//! Request extractors whose every failure is a Matrix error JSON, never
//! axum's plain-text rejections.

use std::net::{IpAddr, Ipv4Addr};

use axum::{
    body::Bytes,
    extract::{ConnectInfo, FromRequest, FromRequestParts, Request},
    http::{StatusCode, header, request::Parts},
};
use serde::{Deserialize, de::DeserializeOwned};

use super::{AppState, PeerAddr, error::MatrixError};
use crate::{service::tokens::AccessToken, storage::Session};

/// A JSON body: unparseable text is `M_NOT_JSON`, the wrong shape is
/// `M_BAD_JSON`, and a body over the configured limit is `M_TOO_LARGE`.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = MatrixError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    MatrixError::too_large()
                } else {
                    MatrixError::not_json("could not read the request body")
                }
            })?;
        parse_json(&bytes).map(Json)
    }
}

/// Parses JSON, telling malformed text apart from a well-formed wrong shape.
///
/// # Errors
/// `M_NOT_JSON` or `M_BAD_JSON`.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, MatrixError> {
    serde_json::from_slice(bytes).map_err(|e| {
        // A shape error can be reported before a syntax error further on; only
        // text that is valid JSON throughout is `M_BAD_JSON`. The second pass
        // runs on failures only.
        let is_valid_json = serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok();
        if e.classify() == serde_json::error::Category::Data && is_valid_json {
            MatrixError::bad_json(e.to_string())
        } else {
            MatrixError::not_json("body is not valid JSON")
        }
    })
}

/// Path parameters; a malformed one is `M_INVALID_PARAM`.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = MatrixError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Path(value))
            .map_err(|rejection| MatrixError::invalid_param(rejection.body_text()))
    }
}

/// Query parameters; a malformed one is `M_INVALID_PARAM`.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = MatrixError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|axum::extract::Query(value)| Query(value))
            .map_err(|rejection| MatrixError::invalid_param(rejection.body_text()))
    }
}

/// The session an access token acts for. The token comes from
/// `Authorization: Bearer …` or, for old clients, the `access_token` query
/// parameter.
#[derive(Debug, Clone)]
pub struct Authed(pub Session);

impl FromRequestParts<AppState> for Authed {
    type Rejection = MatrixError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = presented_token(parts)?.ok_or_else(MatrixError::missing_token)?;
        let session = state.accounts.authenticate(&token).await?;
        Ok(Authed(session))
    }
}

/// The session of a request that may come with or without an access
/// token: none when it has none, an error when the one it has is bad.
#[derive(Debug, Clone)]
pub struct MaybeAuthed(pub Option<Session>);

impl FromRequestParts<AppState> for MaybeAuthed {
    type Rejection = MatrixError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        match presented_token(parts)? {
            Some(token) => Ok(MaybeAuthed(Some(
                state.accounts.authenticate(&token).await?,
            ))),
            None => Ok(MaybeAuthed(None)),
        }
    }
}

fn presented_token(parts: &Parts) -> Result<Option<AccessToken>, MatrixError> {
    if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
        let value = value.to_str().map_err(|_| MatrixError::missing_token())?;
        let (scheme, token) = value
            .split_once(' ')
            .ok_or_else(MatrixError::missing_token)?;
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(MatrixError::missing_token());
        }
        return Ok(Some(AccessToken::from_presented(token.trim())));
    }
    #[derive(Deserialize)]
    struct TokenQuery {
        access_token: Option<String>,
    }
    let query = axum::extract::Query::<TokenQuery>::try_from_uri(&parts.uri)
        .map_err(|rejection| MatrixError::invalid_param(rejection.body_text()))?;
    Ok(query
        .0
        .access_token
        .map(|token| AccessToken::from_presented(&token)))
}

/// The client's address, for rate limits. Requests that did not come over a
/// socket (in-process tests) count as `0.0.0.0`.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = MatrixError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<PeerAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.0.ip());
        Ok(ClientIp(ip))
    }
}
