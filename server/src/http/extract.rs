//! Request extractors whose every failure is a Matrix error JSON, never
//! axum's plain-text rejections.

use std::net::{IpAddr, Ipv4Addr};

use axum::{
    body::Bytes,
    extract::{ConnectInfo, FromRequest, FromRequestParts, Request},
    http::{HeaderMap, StatusCode, header, request::Parts},
};
use serde::{Deserialize, de::DeserializeOwned};

use super::{AppState, PeerAddr, error::MatrixError, guest_access::guest_may};
use crate::{
    config::IpRange,
    service::{ServiceError, tokens::AccessToken},
    storage::Session,
};

/// A JSON body: unparseable text is `M_NOT_JSON`, the wrong shape is
/// `M_BAD_JSON`, and a body over the configured limit is `M_TOO_LARGE`.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = MatrixError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        parse_json(&body_bytes(request, state).await?).map(Json)
    }
}

/// The whole request body: over the configured limit it is `M_TOO_LARGE`,
/// unreadable `M_NOT_JSON`.
///
/// # Errors
/// As above.
pub async fn body_bytes<S: Send + Sync>(request: Request, state: &S) -> Result<Bytes, MatrixError> {
    Bytes::from_request(request, state)
        .await
        .map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                MatrixError::too_large()
            } else {
                MatrixError::not_json("could not read the request body")
            }
        })
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
        // A rate-limit layer may have authenticated this request already.
        let session = match parts.extensions.get::<Authed>() {
            Some(Authed(session)) => session.clone(),
            None => {
                let token = presented_token(parts)?.ok_or_else(MatrixError::missing_token)?;
                let session = state.accounts.authenticate(&token).await?;
                parts.extensions.insert(Authed(session.clone()));
                session
            }
        };
        check_guest_access(parts, &session)?;
        Ok(Authed(session))
    }
}

/// Refuses a guest's request to an endpoint guests may not use.
fn check_guest_access(parts: &Parts, session: &Session) -> Result<(), MatrixError> {
    let route = parts
        .extensions
        .get::<axum::extract::MatchedPath>()
        .map_or("", axum::extract::MatchedPath::as_str);
    if session.is_guest && !guest_may(&parts.method, route, parts.uri.path()) {
        return Err(ServiceError::GuestAccessForbidden.into());
    }
    Ok(())
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
            Some(token) => {
                let session = state.accounts.authenticate(&token).await?;
                check_guest_access(parts, &session)?;
                Ok(MaybeAuthed(Some(session)))
            }
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
/// socket (in-process tests) count as `0.0.0.0`. When the peer is one of the
/// configured trusted proxies, the client is the last address in
/// `X-Forwarded-For` that is not itself a trusted proxy (what a client puts
/// in front of it is the client's own word); from any other peer the header
/// is ignored.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = MatrixError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<PeerAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.0.ip());
        Ok(ClientIp(client_address(
            peer,
            &parts.headers,
            &state.trusted_proxies,
        )))
    }
}

/// The client behind `peer`, as [`ClientIp`] describes.
fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[IpRange]) -> IpAddr {
    let is_trusted = |address: IpAddr| trusted.iter().any(|range| range.contains(address));
    if !is_trusted(peer) {
        return peer;
    }
    let mut client = peer;
    // Every proxy appends the address it got the request from; read from the
    // nearest hop backwards while the hops are trusted proxies.
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .collect::<Vec<_>>();
    for hop in hops.iter().rev() {
        let Ok(address) = hop.trim().parse::<IpAddr>() else {
            break;
        };
        client = address;
        if !is_trusted(address) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_is_read_only_behind_a_trusted_proxy() {
        let trusted: Vec<IpRange> = vec!["10.0.0.0/8".parse().unwrap()];
        let proxy: IpAddr = "10.0.0.5".parse().unwrap();
        let stranger: IpAddr = "198.51.100.7".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            "192.0.2.1, 203.0.113.4, 10.0.0.9".parse().unwrap(),
        );
        // The hop before the innermost proxy, not what the client wrote first.
        assert_eq!(
            client_address(proxy, &headers, &trusted),
            "203.0.113.4".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_address(stranger, &headers, &trusted), stranger);
        headers.insert("x-forwarded-for", "garbage".parse().unwrap());
        assert_eq!(client_address(proxy, &headers, &trusted), proxy);
        assert_eq!(client_address(proxy, &HeaderMap::new(), &trusted), proxy);
    }
}
