//! One Myelin server per fuzzing process, in process and without sockets:
//! its services for the targets that call them directly, its HTTP
//! application for those that send requests. SQLite in a fresh temporary
//! directory, rate limits off, uploads capped small so that the limit is
//! within the fuzzer's reach.

use std::sync::OnceLock;

use axum::{
    Router,
    body::{Body, to_bytes},
    http::{Request, StatusCode},
};
use myelin_server::{config::Config, http::AppState, service::password::Password};
use serde_json::{Value, json};
use tokio::runtime::Runtime;
use tower::ServiceExt;

/// The largest upload the fuzzed server takes, in bytes.
pub const MAX_UPLOAD_BYTES: u64 = 4096;

/// The server's name.
pub const SERVER_NAME: &str = "localhost";

/// The one account, which makes the requests.
const USERNAME: &str = "fuzzer";
const PASSWORD: &str = "a long enough fuzzing password";

/// The running server.
pub struct Server {
    runtime: Runtime,
    /// Its services.
    pub state: AppState,
    app: Router,
    /// The account's `Authorization` header value.
    pub authorization: String,
}

/// The process's server, started on first use.
pub fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(start)
}

fn start() -> Server {
    let data_dir = std::env::temp_dir().join(format!("myelin-fuzz-{}", std::process::id()));
    // A pid reused from an earlier run: start from nothing.
    let _ = std::fs::remove_dir_all(&data_dir);
    let mut config = Config {
        server_name: SERVER_NAME.to_owned(),
        data_dir,
        max_upload_bytes: MAX_UPLOAD_BYTES,
        ..Config::default()
    };
    config.rate_limits.enabled = false;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts");
    let (state, _storage) = runtime
        .block_on(myelin_server::open(&config))
        .expect("the fuzzed server opens");
    let app = myelin_server::http::app(state.clone(), config.max_request_body_bytes);
    let mut server = Server {
        runtime,
        state,
        app,
        authorization: String::new(),
    };
    server.authorization = server.log_in();
    server
}

impl Server {
    /// Runs `future` to completion on the server's runtime.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// Sends `request` to the HTTP application: its status and body.
    pub fn send(&self, request: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
        self.block_on(async {
            let response = self
                .app
                .clone()
                .oneshot(request)
                .await
                .expect("the router is infallible");
            let (parts, body) = response.into_parts();
            let bytes = to_bytes(body, usize::MAX)
                .await
                .expect("a response body is readable");
            (parts.status, parts.headers, bytes.to_vec())
        })
    }

    fn log_in(&self) -> String {
        self.block_on(self.state.accounts.create_account_as_operator(
            USERNAME,
            &Password::new(PASSWORD.to_owned()),
            false,
        ))
        .expect("the fuzzing account is created");
        let body = json!({
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": USERNAME},
            "password": PASSWORD,
        });
        let request = Request::post("/_matrix/client/v3/login")
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .expect("a valid request");
        let (status, _, body) = self.send(request);
        assert_eq!(status, StatusCode::OK, "login");
        let body: Value = serde_json::from_slice(&body).expect("login answers JSON");
        let token = body["access_token"].as_str().expect("an access token");
        format!("Bearer {token}")
    }
}
