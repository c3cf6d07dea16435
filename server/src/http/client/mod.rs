//! The Client-Server API, `/_matrix/client`.

mod account;
mod auth_data;
mod capabilities;
mod devices;
mod login;
mod profile;
mod register;
mod versions;

use axum::{
    Router,
    routing::{get, post},
};

use super::AppState;

/// Routes under `/_matrix/client`.
pub fn router() -> Router<AppState> {
    let v3 = Router::new()
        .route("/register", post(register::register))
        .route(
            "/register/available",
            get(register::check_registration_availability),
        )
        .route("/login", get(login::get_login_types).post(login::login))
        .route("/logout", post(login::logout))
        .route("/logout/all", post(login::logout_all))
        .route("/account/whoami", get(account::whoami))
        .route("/account/password", post(account::change_password))
        .route("/devices", get(devices::get_devices))
        .route(
            "/devices/{device_id}",
            get(devices::get_device)
                .put(devices::update_device)
                .delete(devices::delete_device),
        )
        .route("/delete_devices", post(devices::delete_devices))
        .route("/profile/{user_id}", get(profile::get_profile))
        .route(
            "/profile/{user_id}/displayname",
            get(profile::get_display_name).put(profile::set_display_name),
        )
        .route(
            "/profile/{user_id}/avatar_url",
            get(profile::get_avatar_url).put(profile::set_avatar_url),
        )
        .route("/capabilities", get(capabilities::get_capabilities));
    let v1 = Router::new().route(
        "/register/m.login.registration_token/validity",
        get(register::check_registration_token_validity),
    );
    Router::new()
        .route("/versions", get(versions::get_supported_versions))
        .nest("/v3", v3.clone())
        // r0 is the pre-1.0 name of v3; older clients still use it.
        .nest("/r0", v3)
        .nest("/v1", v1)
}

/// `{}`: the body of endpoints that answer nothing.
fn empty_object() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({}))
}
