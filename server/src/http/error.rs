//! The Matrix error JSON, and the one place service errors become HTTP answers.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Map, Value, json};
use tracing::error;

use crate::service::{ServiceError, UiaChallenge};

/// A Matrix error response: `{"errcode": …, "error": …}` plus any extra fields.
#[derive(Debug)]
pub struct MatrixError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The `M_*` code clients match on and a human-readable explanation;
    /// absent only from a UIA challenge that reports no failure.
    pub error: Option<(&'static str, String)>,
    /// Fields that some errors carry (`retry_after_ms`, `soft_logout`, UIA flows).
    pub extra: Map<String, Value>,
}

impl MatrixError {
    /// An error with no extra fields.
    pub fn new(status: StatusCode, errcode: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            error: Some((errcode, message.into())),
            extra: Map::new(),
        }
    }

    /// 404 `M_UNRECOGNIZED`: no such endpoint.
    pub fn unrecognized() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "M_UNRECOGNIZED",
            "Unrecognized request",
        )
    }

    /// 405 `M_UNRECOGNIZED`: the endpoint exists but not with this method.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "M_UNRECOGNIZED",
            "Method not allowed",
        )
    }

    /// 401 `M_MISSING_TOKEN`.
    pub fn missing_token() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "M_MISSING_TOKEN",
            "Missing access token",
        )
    }

    /// 400 `M_NOT_JSON`.
    pub fn not_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_NOT_JSON", message)
    }

    /// 400 `M_BAD_JSON`.
    pub fn bad_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_BAD_JSON", message)
    }

    /// 400 `M_INVALID_PARAM`.
    pub fn invalid_param(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_INVALID_PARAM", message)
    }

    /// 413 `M_TOO_LARGE`.
    pub fn too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "M_TOO_LARGE",
            "Request body too large",
        )
    }

    fn with(mut self, key: &str, value: Value) -> Self {
        self.extra.insert(key.to_owned(), value);
        self
    }
}

impl IntoResponse for MatrixError {
    fn into_response(self) -> Response {
        let retry_after = self.extra.get("retry_after_ms").and_then(Value::as_u64);
        let mut body = self.extra;
        if let Some((errcode, message)) = self.error {
            body.insert("errcode".to_owned(), Value::from(errcode));
            body.insert("error".to_owned(), Value::from(message));
        }
        let mut response = (self.status, Json(Value::Object(body))).into_response();
        if let Some(ms) = retry_after {
            let seconds = ms.div_ceil(1000).to_string();
            if let Ok(value) = HeaderValue::from_str(&seconds) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

impl From<ServiceError> for MatrixError {
    fn from(error: ServiceError) -> Self {
        use StatusCode as S;
        match error {
            ServiceError::Forbidden(m) => Self::new(S::FORBIDDEN, "M_FORBIDDEN", m),
            ServiceError::UnknownToken => Self::new(
                S::UNAUTHORIZED,
                "M_UNKNOWN_TOKEN",
                "Unknown or expired access token",
            )
            .with("soft_logout", Value::Bool(false)),
            ServiceError::ExpiredToken => Self::new(
                S::UNAUTHORIZED,
                "M_UNKNOWN_TOKEN",
                "The access token has expired: refresh it",
            )
            .with("soft_logout", Value::Bool(true)),
            ServiceError::NotFound(m) => Self::new(S::NOT_FOUND, "M_NOT_FOUND", m),
            ServiceError::UserInUse => {
                Self::new(S::BAD_REQUEST, "M_USER_IN_USE", "User ID already taken")
            }
            ServiceError::InvalidUsername(m) => Self::new(S::BAD_REQUEST, "M_INVALID_USERNAME", m),
            ServiceError::WeakPassword(m) => Self::new(S::BAD_REQUEST, "M_WEAK_PASSWORD", m),
            ServiceError::MissingParam(m) => Self::new(S::BAD_REQUEST, "M_MISSING_PARAM", m),
            ServiceError::InvalidParam(m) => Self::invalid_param(m),
            ServiceError::BadJson(m) => Self::bad_json(m),
            ServiceError::InvalidSignature(m) => {
                Self::new(S::BAD_REQUEST, "M_INVALID_SIGNATURE", m)
            }
            ServiceError::UserDeactivated => Self::new(
                S::FORBIDDEN,
                "M_USER_DEACTIVATED",
                "This account has been deactivated",
            ),
            ServiceError::GuestAccessForbidden => Self::new(
                S::FORBIDDEN,
                "M_GUEST_ACCESS_FORBIDDEN",
                "Guest access is disabled",
            ),
            ServiceError::LimitExceeded { retry_after } => {
                let ms = u64::try_from(retry_after.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1);
                Self::new(
                    S::TOO_MANY_REQUESTS,
                    "M_LIMIT_EXCEEDED",
                    "Too many requests",
                )
                .with("retry_after_ms", Value::from(ms))
            }
            ServiceError::UnsupportedRoomVersion(version) => Self::new(
                S::BAD_REQUEST,
                "M_UNSUPPORTED_ROOM_VERSION",
                format!("room version {version} is not supported"),
            ),
            ServiceError::RoomInUse => {
                Self::new(S::BAD_REQUEST, "M_ROOM_IN_USE", "Room alias already taken")
            }
            ServiceError::AliasInUse => {
                Self::new(S::CONFLICT, "M_UNKNOWN", "Room alias already exists")
            }
            ServiceError::BadAlias(m) => Self::new(S::BAD_REQUEST, "M_BAD_ALIAS", m),
            ServiceError::EventTooLarge => Self::new(
                S::PAYLOAD_TOO_LARGE,
                "M_TOO_LARGE",
                "Events are limited to 65535 bytes",
            ),
            ServiceError::MediaTooLarge { limit } => Self::new(
                S::PAYLOAD_TOO_LARGE,
                "M_TOO_LARGE",
                format!("Uploads are limited to {limit} bytes"),
            ),
            ServiceError::CannotOverwriteMedia => Self::new(
                S::CONFLICT,
                "M_CANNOT_OVERWRITE_MEDIA",
                "This media has been uploaded already",
            ),
            ServiceError::NotYetUploaded => Self::new(
                S::GATEWAY_TIMEOUT,
                "M_NOT_YET_UPLOADED",
                "This media has not been uploaded yet",
            ),
            ServiceError::WrongRoomKeysVersion { current_version } => Self::new(
                S::FORBIDDEN,
                "M_WRONG_ROOM_KEYS_VERSION",
                "Wrong backup version",
            )
            .with("current_version", Value::from(current_version)),
            // Custom codes put their namespace first, in capitals, then `_`
            // (the spec's example: `COM.MYDOMAIN.HERE_FORBIDDEN`).
            ServiceError::E2eRequired(m) => Self::new(S::FORBIDDEN, "ORG.MYELIN_E2E_REQUIRED", m),
            // 429 tells clients to back off and retry, which is the remedy:
            // the inbox drains as soon as the device syncs.
            ServiceError::ToDeviceInboxFull(refused) => Self::new(
                S::TOO_MANY_REQUESTS,
                "M_LIMIT_EXCEEDED",
                "Every recipient device has as many to-device messages waiting as the \
                 server keeps; nothing was sent, retry after they sync",
            )
            .with("org.myelin.inbox_full", inbox_full(&refused)),
            ServiceError::TooLarge(m) => Self::new(S::PAYLOAD_TOO_LARGE, "M_TOO_LARGE", m),
            ServiceError::IncompatibleRoomVersion(version) => Self::new(
                S::BAD_REQUEST,
                "M_INCOMPATIBLE_ROOM_VERSION",
                format!("the room is of version {version}"),
            )
            .with("room_version", Value::String(version)),
            ServiceError::BadGateway(m) => Self::new(S::BAD_GATEWAY, "M_UNKNOWN", m),
            ServiceError::AuthRequired(challenge) => uia_challenge(*challenge),
            ServiceError::Storage(e) => internal(&e),
            ServiceError::Internal(detail) => internal(&detail),
        }
    }
}

impl From<crate::service::federation::AuthError> for MatrixError {
    fn from(error: crate::service::federation::AuthError) -> Self {
        use crate::service::federation::AuthError;
        match error {
            AuthError::Storage(detail) => internal(&detail),
            // Synapse's words for the cases remote servers log.
            AuthError::WrongDestination => Self::new(
                StatusCode::UNAUTHORIZED,
                "M_UNAUTHORIZED",
                "Destination mismatch",
            ),
            other => Self::new(
                StatusCode::UNAUTHORIZED,
                "M_UNAUTHORIZED",
                other.to_string(),
            ),
        }
    }
}

/// The devices a to-device send did not reach, as `[{user_id, device_id}]`.
pub fn inbox_full(refused: &[crate::service::to_device::RefusedDevice]) -> Value {
    refused
        .iter()
        .map(|(user_id, device_id)| json!({ "user_id": user_id, "device_id": device_id }))
        .collect()
}

/// The UIA 401 body: flows, params, session, completed, and the last stage's error.
fn uia_challenge(challenge: UiaChallenge) -> MatrixError {
    let UiaChallenge {
        session,
        flows,
        completed,
        error,
    } = challenge;
    let flows: Vec<Value> = flows
        .iter()
        .map(|flow| json!({ "stages": flow.iter().map(|t| t.as_str()).collect::<Vec<_>>() }))
        .collect();
    let completed: Vec<&str> = completed.iter().map(|t| t.as_str()).collect();
    let mut error = MatrixError {
        status: StatusCode::UNAUTHORIZED,
        error: error.and_then(|stage_error| MatrixError::from(stage_error).error),
        extra: Map::new(),
    }
    .with("flows", Value::from(flows))
    .with("params", json!({}))
    .with("session", Value::from(session));
    if !completed.is_empty() {
        error = error.with("completed", Value::from(completed));
    }
    error
}

/// Logs an internal fault and answers with a generic message.
fn internal(detail: &dyn std::fmt::Display) -> MatrixError {
    error!(error = %detail, "internal error");
    MatrixError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "M_UNKNOWN",
        "Internal server error",
    )
}
