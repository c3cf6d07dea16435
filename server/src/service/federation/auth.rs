//! Request authentication between servers: the `Authorization: X-Matrix`
//! header ([spec]).
//!
//! The sender signs the JSON object `{method, uri, origin, destination,
//! content}` with its server key: `uri` is the request target exactly as
//! sent (path and `?query`, percent-encoding untouched) and `content` is
//! present only for requests with a body. The receiver rebuilds the object
//! from what it received and checks the signature against the origin's key
//! valid now. Parsing is as lenient as Synapse's: parameter names in any
//! case, values quoted or not, `destination` optional.
//!
//! [spec]: https://spec.matrix.org/v1.16/server-server-api/#request-authentication

use myelin_crypto::{SignatureError, SigningKey, sign_json, verify_signature_by};
use ruma::{CanonicalJsonObject, CanonicalJsonValue, OwnedServerName, ServerName};

/// Why a request's `Authorization` header does not authenticate it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// No `X-Matrix` authorization header.
    #[error("missing X-Matrix authorization")]
    Missing,
    /// The header is not `X-Matrix` with `origin`, `key` and `sig`.
    #[error("malformed X-Matrix authorization: {0}")]
    Malformed(&'static str),
    /// The header names another server as the destination.
    #[error("destination mismatch")]
    WrongDestination,
    /// The origin's key could not be found or is not valid now.
    #[error("unknown or expired key {key_id} of {origin}")]
    UnknownKey {
        /// The origin.
        origin: OwnedServerName,
        /// The key id it named.
        key_id: String,
    },
    /// The signature does not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// The key store failed (a fault of this server, not the request's).
    #[error("key storage failed: {0}")]
    Storage(String),
}

/// The parameters of one `X-Matrix` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XMatrix {
    /// The server that signed the request.
    pub origin: OwnedServerName,
    /// The server the request was meant for, when the sender named it.
    pub destination: Option<OwnedServerName>,
    /// The signing key's id, `ed25519:<version>`.
    pub key_id: String,
    /// The unpadded base64 signature.
    pub signature: String,
}

impl XMatrix {
    /// Parses an `Authorization` header value.
    ///
    /// # Errors
    /// [`AuthError::Missing`] for another scheme; [`AuthError::Malformed`]
    /// for missing or unparseable parameters.
    pub fn parse(header: &str) -> Result<Self, AuthError> {
        let header = header.trim_start();
        let (scheme, parameters) = header.split_once(' ').ok_or(AuthError::Missing)?;
        if !scheme.eq_ignore_ascii_case("X-Matrix") {
            return Err(AuthError::Missing);
        }
        let (mut origin, mut destination, mut key_id, mut signature) = (None, None, None, None);
        for parameter in parameters.split(',') {
            let Some((name, value)) = parameter.split_once('=') else {
                continue;
            };
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            match name.trim().to_ascii_lowercase().as_str() {
                "origin" => origin = Some(value),
                "destination" => destination = Some(value),
                "key" => key_id = Some(value),
                "sig" => signature = Some(value),
                _ => {}
            }
        }
        let server =
            |value: &str, what| ServerName::parse(value).map_err(|_| AuthError::Malformed(what));
        let origin = server(origin.ok_or(AuthError::Malformed("no origin"))?, "origin")?;
        let destination = destination.map(|d| server(d, "destination")).transpose()?;
        let key_id = key_id.ok_or(AuthError::Malformed("no key"))?;
        let signature = signature.ok_or(AuthError::Malformed("no sig"))?;
        if key_id.is_empty() || key_id.len() > 255 || key_id.contains('\0') {
            return Err(AuthError::Malformed("key"));
        }
        Ok(Self {
            origin,
            destination,
            key_id: key_id.to_owned(),
            signature: signature.to_owned(),
        })
    }

    /// Checks that the request was meant for `us`: a named destination
    /// must be our name (an unnamed one is taken to be).
    ///
    /// # Errors
    /// [`AuthError::WrongDestination`].
    pub fn check_destination(&self, us: &ServerName) -> Result<(), AuthError> {
        match &self.destination {
            Some(destination) if destination != us => Err(AuthError::WrongDestination),
            _ => Ok(()),
        }
    }

    /// Verifies the signature over the request as received by `us`, with
    /// the origin's public key (unpadded base64) for [`Self::key_id`].
    ///
    /// # Errors
    /// [`AuthError::WrongDestination`] or [`AuthError::BadSignature`].
    pub fn verify(
        &self,
        public_key: &str,
        us: &ServerName,
        request: &SignedRequest<'_>,
    ) -> Result<(), AuthError> {
        self.check_destination(us)?;
        let mut object = request_object(request, &self.origin, us);
        let signature = CanonicalJsonObject::from([(
            self.key_id.clone(),
            CanonicalJsonValue::String(self.signature.clone()),
        )]);
        object.insert(
            "signatures".to_owned(),
            CanonicalJsonValue::Object(CanonicalJsonObject::from([(
                self.origin.to_string(),
                CanonicalJsonValue::Object(signature),
            )])),
        );
        verify_signature_by(&object, self.origin.as_str(), &self.key_id, public_key)
            .map_err(|_| AuthError::BadSignature)
    }
}

/// What a request signature covers besides the origin and destination.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    /// `GET`, `PUT`, …
    pub method: &'a str,
    /// The request target exactly as sent: path and `?query`.
    pub uri: &'a str,
    /// The JSON body, for requests that have one.
    pub content: Option<&'a CanonicalJsonObject>,
}

/// The `Authorization` header value for a request from `origin` to
/// `destination`, signed with `key`.
///
/// # Errors
/// Never in practice: signing fails only for an object whose `signatures`
/// is malformed, and this one has none.
pub fn authorization_header(
    key: &SigningKey,
    origin: &ServerName,
    destination: &ServerName,
    request: &SignedRequest<'_>,
) -> Result<String, SignatureError> {
    let mut object = request_object(request, origin, destination);
    sign_json(origin, key, &mut object)?;
    let signature = object
        .get("signatures")
        .and_then(CanonicalJsonValue::as_object)
        .and_then(|s| s.get(origin.as_str()))
        .and_then(CanonicalJsonValue::as_object)
        .and_then(|s| s.get(key.key_id().as_str()))
        .and_then(|s| match s {
            CanonicalJsonValue::String(s) => Some(s.as_str()),
            _ => None,
        })
        .ok_or_else(|| SignatureError::Malformed("signing added no signature".to_owned()))?;
    Ok(format!(
        "X-Matrix origin=\"{origin}\",destination=\"{destination}\",key=\"{}\",sig=\"{signature}\"",
        key.key_id()
    ))
}

/// `{method, uri, origin, destination, content?}`.
fn request_object(
    request: &SignedRequest<'_>,
    origin: &ServerName,
    destination: &ServerName,
) -> CanonicalJsonObject {
    let string = |s: &str| CanonicalJsonValue::String(s.to_owned());
    let mut object = CanonicalJsonObject::from([
        ("method".to_owned(), string(request.method)),
        ("uri".to_owned(), string(request.uri)),
        ("origin".to_owned(), string(origin.as_str())),
        ("destination".to_owned(), string(destination.as_str())),
    ]);
    if let Some(content) = request.content {
        object.insert(
            "content".to_owned(),
            CanonicalJsonValue::Object(content.clone()),
        );
    }
    object
}

#[cfg(test)]
mod tests {
    use myelin_crypto::parse_canonical_object;
    use ruma::server_name;

    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_seed_base64("YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1", "1").unwrap()
    }

    /// The spec's example request: `origin.hs.example.com` asking
    /// `destination.hs.example.com` to `PUT /_matrix/federation/v1/send/…`.
    #[test]
    fn signed_header_round_trips_and_binds_every_field() {
        let content = parse_canonical_object(r#"{"pdus":[],"origin":"o.example"}"#).unwrap();
        let request = SignedRequest {
            method: "PUT",
            uri: "/_matrix/federation/v1/send/1?a=b%20c",
            content: Some(&content),
        };
        let origin = server_name!("o.example");
        let us = server_name!("d.example:8448");
        let header = authorization_header(&key(), origin, us, &request).unwrap();
        assert!(header.starts_with("X-Matrix origin=\"o.example\",destination=\"d.example:8448\",key=\"ed25519:1\",sig=\""), "{header}");
        let parsed = XMatrix::parse(&header).unwrap();
        let public = key().public_key().encode();
        parsed.verify(&public, us, &request).unwrap();

        let other_content = parse_canonical_object(r#"{"pdus":[1]}"#).unwrap();
        for altered in [
            SignedRequest {
                method: "POST",
                ..request
            },
            SignedRequest {
                uri: "/_matrix/federation/v1/send/1?a=b+c",
                ..request
            },
            SignedRequest {
                content: None,
                ..request
            },
            SignedRequest {
                content: Some(&other_content),
                ..request
            },
        ] {
            assert_eq!(
                parsed.verify(&public, us, &altered),
                Err(AuthError::BadSignature)
            );
        }
        // Verified as another server: the destination no longer matches.
        assert_eq!(
            parsed.verify(&public, server_name!("x.example"), &request),
            Err(AuthError::WrongDestination)
        );
        // Another key under the same id.
        let other = SigningKey::generate("1").unwrap().public_key().encode();
        assert_eq!(
            parsed.verify(&other, us, &request),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn parsing_is_lenient_as_synapse_is() {
        let request = SignedRequest {
            method: "GET",
            uri: "/x",
            content: None,
        };
        let origin = server_name!("o.example");
        let us = server_name!("d.example");
        let header = authorization_header(&key(), origin, us, &request).unwrap();
        let sig = XMatrix::parse(&header).unwrap().signature;
        // Unquoted values, upper-case names, no destination, spaces.
        let loose = format!("x-matrix ORIGIN=o.example, Key=ed25519:1 ,sig={sig}");
        let parsed = XMatrix::parse(&loose).unwrap();
        assert_eq!(parsed.destination, None);
        parsed
            .verify(&key().public_key().encode(), us, &request)
            .unwrap();

        assert_eq!(XMatrix::parse("Bearer abc"), Err(AuthError::Missing));
        assert_eq!(XMatrix::parse("X-Matrix"), Err(AuthError::Missing));
        assert_eq!(
            XMatrix::parse("X-Matrix origin=o.example,key=ed25519:1"),
            Err(AuthError::Malformed("no sig"))
        );
        assert_eq!(
            XMatrix::parse("X-Matrix origin=o.example,signature=abc,key=ed25519:1"),
            Err(AuthError::Malformed("no sig"))
        );
        assert_eq!(
            XMatrix::parse("X-Matrix origin=\"not a name\",key=k,sig=s"),
            Err(AuthError::Malformed("origin"))
        );
    }
}
