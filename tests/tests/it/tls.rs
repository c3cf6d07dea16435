//! The client API over TLS.

use myelin_server::config::TlsConfig;
use myelin_tests::{Backend, TestServer};

#[tokio::test]
async fn serves_the_client_api_over_tls() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let certificate = dir.path().join("cert.pem");
    let private_key = dir.path().join("key.pem");
    std::fs::write(&certificate, certified.cert.pem()).unwrap();
    std::fs::write(&private_key, certified.signing_key.serialize_pem()).unwrap();

    let server = TestServer::start_with(Backend::Sqlite, |config| {
        config.tls = Some(TlsConfig {
            certificate,
            private_key,
        });
    })
    .await;
    let port = server.config.bind.port();
    let client = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).unwrap(),
        )
        .resolve("localhost", server.config.bind)
        .build()
        .unwrap();
    let versions: serde_json::Value = client
        .get(format!("https://localhost:{port}/_matrix/client/versions"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        versions["versions"]
            .as_array()
            .is_some_and(|v| !v.is_empty())
    );

    // Plain HTTP to the TLS port gets no answer.
    let plain = reqwest::get(format!("http://127.0.0.1:{port}/_matrix/client/versions")).await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_missing_certificate_stops_start_up_with_the_path() {
    let server = TestServer::start_with(Backend::Sqlite, |config| {
        config.tls = Some(TlsConfig {
            certificate: "/nonexistent/cert.pem".into(),
            private_key: "/nonexistent/key.pem".into(),
        });
    })
    .await;
    let error = server.stop().await.expect_err("start-up must fail");
    assert!(
        error.to_string().contains("/nonexistent/cert.pem"),
        "{error}"
    );
}
