//! Server discovery: from a server name to a homeserver URL through
//! [`/.well-known/matrix/client`](https://spec.matrix.org/v1.16/client-server-api/#well-known-uris).

use reqwest::{StatusCode, Url};
use serde_json::Value;

use crate::error::{Error, Result};

/// Resolves `server_name` (or an `http(s)://` base URL, looked up as is)
/// to a homeserver URL, and checks that it speaks the Client-Server API.
///
/// Following the spec: a 404 means "no delegation" (the server name is the
/// homeserver); any other failure to read a valid `m.homeserver.base_url`
/// is an error; the result must answer `/_matrix/client/versions`.
pub(crate) async fn discover(client: &reqwest::Client, server_name: &str) -> Result<Url> {
    let base = if server_name.starts_with("http://") || server_name.starts_with("https://") {
        parse_homeserver(server_name)?
    } else {
        parse_homeserver(&format!("https://{server_name}"))?
    };
    let well_known = base
        .join("/.well-known/matrix/client")
        .map_err(|error| Error::Discovery(error.to_string()))?;
    let response = client
        .get(well_known)
        .send()
        .await
        .map_err(Error::Network)?;
    let homeserver = match response.status() {
        StatusCode::NOT_FOUND => base,
        status if status.is_success() => {
            let body: Value = response
                .json()
                .await
                .map_err(|_| Error::Discovery("well-known answer is not JSON".to_owned()))?;
            let url = body
                .pointer("/m.homeserver/base_url")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    Error::Discovery("well-known has no m.homeserver.base_url".to_owned())
                })?;
            parse_homeserver(url).map_err(|error| Error::Discovery(error.to_string()))?
        }
        status => {
            return Err(Error::Discovery(format!(
                "well-known answered HTTP {status}"
            )));
        }
    };
    let versions = homeserver
        .join("_matrix/client/versions")
        .map_err(|error| Error::Discovery(error.to_string()))?;
    let answer: Value = client
        .get(versions)
        .send()
        .await
        .map_err(Error::Network)?
        .json()
        .await
        .map_err(|_| Error::Discovery(format!("{homeserver} does not answer /versions")))?;
    if !answer.get("versions").is_some_and(Value::is_array) {
        return Err(Error::Discovery(format!(
            "{homeserver} does not answer /versions with a version list"
        )));
    }
    Ok(homeserver)
}

/// Parses a homeserver base URL: `http` or `https`, with a path that can
/// take segments. A missing trailing `/` is added so relative joins keep
/// any path prefix.
pub(crate) fn parse_homeserver(url: &str) -> Result<Url> {
    let mut url =
        Url::parse(url).map_err(|error| Error::InvalidInput(format!("homeserver URL: {error}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(Error::InvalidInput(
            "homeserver URL must be http(s)".to_owned(),
        ));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}
