//! Pushers (`GET /pushers`, `POST /pushers/set`): the push gateways a
//! client registers for its device. Myelin keeps HTTP pushers, each tied to
//! the device that set it (gone when the device is); [`super::push`]
//! delivers notifications to their gateways (spec-notes/push.md).

use std::sync::Arc;

use ruma::UserId;
use serde_json::{Map, Value, json};

use super::ServiceError;
use crate::storage::{NewPusher, Session, Storage};

/// Most pushers one account may hold.
pub const MAX_PUSHERS_PER_USER: usize = 32;
/// Longest `pushkey`, in bytes (the spec's limit).
const MAX_PUSHKEY_BYTES: usize = 512;
/// Longest `app_id`, in characters (the spec's limit).
const MAX_APP_ID_CHARS: usize = 64;
/// Longest `profile_tag`, in characters (the spec's limit).
const MAX_PROFILE_TAG_CHARS: usize = 32;
/// Longest display name or language tag, in characters.
const MAX_NAME_CHARS: usize = 256;
/// Largest `data` object, in bytes of JSON.
const MAX_DATA_BYTES: usize = 2048;
/// The path every Push Gateway API URL ends with.
const NOTIFY_PATH: &str = "/_matrix/push/v1/notify";

/// Reading and changing users' pushers.
#[derive(Debug)]
pub struct Pushers {
    storage: Arc<dyn Storage>,
}

impl Pushers {
    /// Builds the service.
    pub fn new(storage: Arc<dyn Storage>) -> Self {
        Self { storage }
    }

    /// The user's pushers, as clients read them back.
    ///
    /// # Errors
    /// Storage failures; a stored pusher that no longer parses.
    pub async fn list(&self, user_id: &UserId) -> Result<Vec<Value>, ServiceError> {
        self.storage
            .pushers(user_id)
            .await?
            .iter()
            .map(|json| {
                serde_json::from_str(json)
                    .map_err(|e| ServiceError::Internal(format!("stored pusher: {e}")))
            })
            .collect()
    }

    /// Applies a `POST /pushers/set` body for the session's device: `kind`
    /// `http` adds or replaces a pusher, `null` removes it.
    ///
    /// # Errors
    /// `MissingParam` / `InvalidParam` for a body the spec does not allow
    /// (or another kind than `http`); `Forbidden` for a new pusher past
    /// [`MAX_PUSHERS_PER_USER`].
    pub async fn set(
        &self,
        session: &Session,
        body: &Map<String, Value>,
    ) -> Result<(), ServiceError> {
        let app_id = required_text(body, "app_id", MAX_APP_ID_CHARS)?;
        let pushkey = required_text(body, "pushkey", MAX_PUSHKEY_BYTES)?;
        if pushkey.len() > MAX_PUSHKEY_BYTES {
            return Err(ServiceError::InvalidParam(format!(
                "pushkey is at most {MAX_PUSHKEY_BYTES} bytes"
            )));
        }
        match body.get("kind") {
            None => return Err(ServiceError::MissingParam("kind".to_owned())),
            Some(Value::Null) => {
                self.storage
                    .delete_pusher(&session.user_id, app_id, pushkey)
                    .await?;
                return Ok(());
            }
            Some(Value::String(kind)) if kind == "http" => {}
            Some(_) => {
                return Err(ServiceError::InvalidParam(
                    "only pushers of kind http are supported".to_owned(),
                ));
            }
        }
        let pusher = http_pusher(body, app_id, pushkey)?;
        let existing = self.list(&session.user_id).await?;
        let is_new = !existing
            .iter()
            .any(|p| p["app_id"] == app_id && p["pushkey"] == pushkey);
        if is_new && existing.len() >= MAX_PUSHERS_PER_USER {
            return Err(ServiceError::Forbidden(format!(
                "an account may have at most {MAX_PUSHERS_PER_USER} pushers"
            )));
        }
        let append = match body.get("append") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(append)) => *append,
            Some(_) => return Err(invalid("append must be a boolean")),
        };
        let json = pusher.to_string();
        let new = NewPusher {
            user_id: &session.user_id,
            device_id: &session.device_id,
            app_id,
            pushkey,
            json: &json,
        };
        self.storage.set_pusher(new, append).await?;
        Ok(())
    }
}

/// An HTTP pusher as clients read it back, from a valid body.
fn http_pusher(
    body: &Map<String, Value>,
    app_id: &str,
    pushkey: &str,
) -> Result<Value, ServiceError> {
    let mut pusher = json!({
        "app_id": app_id,
        "pushkey": pushkey,
        "kind": "http",
        "app_display_name": required_text(body, "app_display_name", MAX_NAME_CHARS)?,
        "device_display_name": required_text(body, "device_display_name", MAX_NAME_CHARS)?,
        "lang": required_text(body, "lang", MAX_NAME_CHARS)?,
        "data": gateway_data(body)?,
    });
    match body.get("profile_tag") {
        None | Some(Value::Null) => {}
        Some(Value::String(tag)) if is_text(tag, MAX_PROFILE_TAG_CHARS) => {
            pusher["profile_tag"] = Value::from(tag.as_str());
        }
        Some(_) => {
            return Err(invalid(&format!(
                "profile_tag is a string of at most {MAX_PROFILE_TAG_CHARS} characters"
            )));
        }
    }
    Ok(pusher)
}

/// `data` of an HTTP pusher: an object with the gateway's `url`, whose
/// `format` (if any) is `event_id_only`.
fn gateway_data(body: &Map<String, Value>) -> Result<Value, ServiceError> {
    let data = match body.get("data") {
        None | Some(Value::Null) => return Err(ServiceError::MissingParam("data".to_owned())),
        Some(Value::Object(data)) => data,
        Some(_) => return Err(invalid("data must be an object")),
    };
    if Value::Object(data.clone()).to_string().len() > MAX_DATA_BYTES {
        return Err(invalid(&format!("data is at most {MAX_DATA_BYTES} bytes")));
    }
    let url = match data.get("url") {
        None => return Err(ServiceError::MissingParam("data.url".to_owned())),
        Some(Value::String(url)) => url,
        Some(_) => return Err(invalid("data.url must be a string")),
    };
    let has_scheme = url.starts_with("https://") || url.starts_with("http://");
    let path = url
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|at| &rest[at..]))
        .unwrap_or_default();
    if !has_scheme || path != NOTIFY_PATH {
        return Err(invalid(&format!(
            "data.url must be an http(s) URL whose path is {NOTIFY_PATH}"
        )));
    }
    if data
        .get("format")
        .is_some_and(|format| format != "event_id_only")
    {
        return Err(invalid("data.format may only be event_id_only"));
    }
    Ok(Value::Object(data.clone()))
}

/// A required, non-empty string field of at most `max` characters, without
/// NUL (which no database text column can hold).
fn required_text<'a>(
    body: &'a Map<String, Value>,
    field: &str,
    max: usize,
) -> Result<&'a str, ServiceError> {
    match body.get(field) {
        None | Some(Value::Null) => Err(ServiceError::MissingParam(field.to_owned())),
        Some(Value::String(text)) if is_text(text, max) => Ok(text),
        Some(_) => Err(invalid(&format!(
            "{field} must be a non-empty string of at most {max} characters, without NUL"
        ))),
    }
}

fn is_text(text: &str, max: usize) -> bool {
    !text.is_empty() && text.chars().count() <= max && !text.contains('\0')
}

fn invalid(message: &str) -> ServiceError {
    ServiceError::InvalidParam(message.to_owned())
}
