//! The binary's behaviour.

use std::process::Command;

use myelin_tests::{Backend, PASSWORD, PostgresDatabase, backend_tests};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::process::{ServerProcess, binary, register_user};

backend_tests!(
    acknowledged_registration_survives_kill_9,
    acknowledged_messages_survive_kill_9,
    sigterm_shuts_down_gracefully
);

/// Extra flags selecting the backend, and what keeps a PostgreSQL database alive.
async fn backend_args(backend: Backend) -> (Vec<String>, Option<PostgresDatabase>) {
    match backend {
        Backend::Sqlite => (vec![], None),
        Backend::Postgres(url) => {
            let database = PostgresDatabase::create(&url).await;
            (
                vec!["--database-url".to_owned(), database.url.clone()],
                Some(database),
            )
        }
    }
}

async fn register(server: &ServerProcess, localpart: &str) -> Value {
    let body =
        json!({ "username": localpart, "password": PASSWORD, "auth": { "type": "m.login.dummy" } });
    let response = reqwest::Client::new()
        .post(server.v3("/register"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

async fn login_status(server: &ServerProcess, user: &str, password: &str) -> StatusCode {
    let body = json!({ "type": "m.login.password", "user": user, "password": password });
    reqwest::Client::new()
        .post(server.v3("/login"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
}

async fn acknowledged_registration_survives_kill_9(backend: Backend) {
    let data = tempfile::tempdir().unwrap();
    let (args, _database) = backend_args(backend).await;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut server = ServerProcess::start(data.path(), &args);
    let registered = register(&server, "alice").await;
    // SIGKILL: no shutdown, no checkpoint, nothing flushed after the answer.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    drop(server);

    let server = ServerProcess::start(data.path(), &args);
    assert_eq!(
        login_status(&server, "alice", PASSWORD).await,
        StatusCode::OK
    );
    let token = registered["access_token"].as_str().unwrap();
    let whoami = reqwest::Client::new()
        .get(server.v3("/account/whoami"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        whoami.status(),
        StatusCode::OK,
        "the acknowledged session survives too"
    );
}

/// Sends many messages at once, so the server commits them in groups, and
/// kills it the moment the last one is acknowledged: every acknowledged
/// message must be there after the restart, and the room must go on.
async fn acknowledged_messages_survive_kill_9(backend: Backend) {
    const SENDS: usize = 48;
    let data = tempfile::tempdir().unwrap();
    let (args, _database) = backend_args(backend).await;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut server = ServerProcess::start(data.path(), &args);
    let registered = register(&server, "alice").await;
    let token = registered["access_token"].as_str().unwrap().to_owned();
    let client = reqwest::Client::new();
    let created: Value = client
        .post(server.v3("/createRoom"))
        .bearer_auth(&token)
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let room = created["room_id"].as_str().unwrap().to_owned();
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..SENDS {
        let request = client
            .put(server.v3(&format!("/rooms/{room}/send/m.room.message/t{i}")))
            .bearer_auth(&token)
            .json(&json!({ "msgtype": "m.text", "body": i.to_string() }));
        sends.spawn(async move {
            let answer = request.send().await.unwrap();
            assert_eq!(answer.status(), StatusCode::OK);
            let answer: Value = answer.json().await.unwrap();
            answer["event_id"].as_str().unwrap().to_owned()
        });
    }
    let acknowledged = sends.join_all().await;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    drop(server);

    let server = ServerProcess::start(data.path(), &args);
    for event_id in &acknowledged {
        let answer = client
            .get(server.v3(&format!("/rooms/{room}/event/{event_id}")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(
            answer.status(),
            StatusCode::OK,
            "{event_id} was acknowledged"
        );
    }
    let next = client
        .put(server.v3(&format!("/rooms/{room}/send/m.room.message/after")))
        .bearer_auth(&token)
        .json(&json!({ "msgtype": "m.text", "body": "after the restart" }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        next.status(),
        StatusCode::OK,
        "the room goes on from what was stored"
    );
}

async fn sigterm_shuts_down_gracefully(backend: Backend) {
    let data = tempfile::tempdir().unwrap();
    let (args, _database) = backend_args(backend).await;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut server = ServerProcess::start(data.path(), &args);
    register(&server, "alice").await;
    let pid = server.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = server.child.wait().unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(
        server
            .remaining_log()
            .iter()
            .any(|line| line.contains("stopped"))
    );
}

#[test]
fn help_documents_every_setting() {
    let output = binary().arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for needle in [
        "--bind",
        "--server-name",
        "--data-dir",
        "--database-url",
        "--config",
        "--registration",
        "MYELIN_BIND",
        "MYELIN_SERVER_NAME",
        "MYELIN_DATA_DIR",
        "MYELIN_DATABASE_URL",
        "MYELIN_CONFIG",
        "register-user",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}:\n{help}");
    }
}

#[tokio::test]
async fn settings_layer_file_then_environment_then_flags() {
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("myelin.toml");
    std::fs::write(
        &config,
        "server_name = \"file.test\"\n[registration]\nmode = \"open\"\n",
    )
    .unwrap();
    let config_arg = config.to_str().unwrap();

    let server_name_of = |server: ServerProcess| async move {
        let registered = register(&server, "alice").await;
        registered["user_id"]
            .as_str()
            .unwrap()
            .split_once(':')
            .unwrap()
            .1
            .to_owned()
    };
    let from_file = ServerProcess::start(&data.path().join("a"), &["--config", config_arg]);
    assert_eq!(server_name_of(from_file).await, "file.test");

    let mut with_env = binary();
    with_env.env("MYELIN_SERVER_NAME", "env.test");
    let from_env =
        ServerProcess::start_command(with_env, &data.path().join("b"), &["--config", config_arg]);
    assert_eq!(server_name_of(from_env).await, "env.test");

    let mut with_env = binary();
    with_env.env("MYELIN_SERVER_NAME", "env.test");
    let from_flag = ServerProcess::start_command(
        with_env,
        &data.path().join("c"),
        &["--config", config_arg, "--server-name", "flag.test"],
    );
    assert_eq!(server_name_of(from_flag).await, "flag.test");
}

#[test]
fn invalid_configuration_fails_naming_the_key() {
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("bad.toml");
    std::fs::write(&config, "server_name = \"bad name!\"\n").unwrap();
    let output = binary()
        .args(["--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("server_name"), "{stderr}");
}

#[tokio::test]
async fn register_user_creates_accounts_on_a_closed_server() {
    let data = tempfile::tempdir().unwrap();
    let output = register_user(data.path(), &["--username", "root", "--admin"], PASSWORD);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "@root:localhost"
    );
    let again = register_user(data.path(), &["--username", "root"], PASSWORD);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("taken"));
    let weak = register_user(data.path(), &["--username", "weak"], "short");
    assert!(!weak.status.success());

    let server = ServerProcess::start(data.path(), &["--registration", "closed"]);
    assert_eq!(
        login_status(&server, "root", PASSWORD).await,
        StatusCode::OK
    );
    let body =
        json!({ "username": "eve", "password": PASSWORD, "auth": { "type": "m.login.dummy" } });
    let refused = reqwest::Client::new()
        .post(server.v3("/register"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
}
