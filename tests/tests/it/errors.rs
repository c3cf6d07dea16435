//! Malformed, oversized and hostile requests get a Matrix error, never a
//! panic or a 500; CORS; rate limits.

use myelin_server::config::RateLimit;
use myelin_tests::{Backend, PASSWORD, TestServer, assert_error, backend_tests};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

backend_tests!(
    unknown_endpoints_and_methods_are_unrecognized,
    malformed_bodies_are_not_json_or_bad_json,
    oversized_bodies_are_too_large,
    absurd_parameters_are_refused_cleanly,
    cors_headers_on_every_answer,
    login_and_registration_are_rate_limited,
);

/// Sends raw bytes and returns the status and JSON answer.
async fn raw(server: &TestServer, method: Method, url: &str, body: Vec<u8>) -> (StatusCode, Value) {
    let response = server
        .client
        .request(method, url)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status}: not JSON: {text:?}")),
    )
}

async fn unknown_endpoints_and_methods_are_unrecognized(backend: Backend) {
    let server = TestServer::start(backend).await;
    let unknown = raw(
        &server,
        Method::GET,
        &server.v3("/no/such/endpoint"),
        vec![],
    )
    .await;
    assert_error(&unknown, StatusCode::NOT_FOUND, "M_UNRECOGNIZED");
    let outside = raw(
        &server,
        Method::GET,
        &format!("{}/anything", server.base_url),
        vec![],
    )
    .await;
    assert_error(&outside, StatusCode::NOT_FOUND, "M_UNRECOGNIZED");
    let wrong_method = raw(&server, Method::DELETE, &server.v3("/login"), vec![]).await;
    assert_error(
        &wrong_method,
        StatusCode::METHOD_NOT_ALLOWED,
        "M_UNRECOGNIZED",
    );
}

async fn malformed_bodies_are_not_json_or_bad_json(backend: Backend) {
    let server = TestServer::start(backend).await;
    let login = server.v3("/login");
    for body in [
        &b"{not json"[..],
        b"",
        b"\xff\xfe{}",
        b"{\"type\": \"m.login.password\"",
        b"[1, 2,]",
    ] {
        let answer = raw(&server, Method::POST, &login, body.to_vec()).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "M_NOT_JSON");
    }
    let nested = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let answer = raw(&server, Method::POST, &login, nested.into_bytes()).await;
    assert_eq!(answer.0, StatusCode::BAD_REQUEST, "{}", answer.1);
    for body in [
        json!([]),
        json!("a string"),
        json!({ "type": 5 }),
        json!({ "type": "m.login.password", "identifier": "alice", "password": PASSWORD }),
        json!({ "type": "m.login.password", "user": "alice" }),
    ] {
        let answer = raw(&server, Method::POST, &login, body.to_string().into_bytes()).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    }
    let register = raw(
        &server,
        Method::POST,
        &server.v3("/register"),
        br#"{"username": ["x"]}"#.to_vec(),
    )
    .await;
    assert_error(&register, StatusCode::BAD_REQUEST, "M_BAD_JSON");
}

async fn oversized_bodies_are_too_large(backend: Backend) {
    let server =
        TestServer::start_with(backend, |config| config.max_request_body_bytes = 4096).await;
    let huge =
        json!({ "type": "m.login.password", "user": "a".repeat(8192), "password": PASSWORD });
    let answer = raw(
        &server,
        Method::POST,
        &server.v3("/login"),
        huge.to_string().into_bytes(),
    )
    .await;
    assert_error(&answer, StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE");
    // The same without a Content-Length header: a chunked body is cut off at the limit.
    let (status_line, body) = chunked_post(
        &server,
        "/_matrix/client/v3/login",
        huge.to_string().as_bytes(),
    )
    .await;
    assert!(status_line.starts_with("HTTP/1.1 413"), "{status_line}");
    assert!(body.contains("M_TOO_LARGE"), "{body}");
}

/// Posts `body` with `Transfer-Encoding: chunked` over a raw socket and returns
/// the status line and the rest of the answer.
async fn chunked_post(server: &TestServer, path: &str, body: &[u8]) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = server.config.bind;
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in body.chunks(1024) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    // The server may answer and close before reading everything; that is the point.
    let _ = stream.write_all(&request).await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (status_line, rest) = answer.split_once("\r\n").unwrap_or((&answer, ""));
    (status_line.to_owned(), rest.to_owned())
}

async fn absurd_parameters_are_refused_cleanly(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let long_device = json!({
        "type": "m.login.password", "user": "alice", "password": PASSWORD,
        "device_id": "D".repeat(10_000),
    });
    let answer = server
        .request(Method::POST, server.v3("/login"), None, Some(long_device))
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let control = json!({ "type": "m.login.password", "user": "alice", "password": PASSWORD, "device_id": "A\nB" });
    let answer = server
        .request(Method::POST, server.v3("/login"), None, Some(control))
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let huge_name = json!({
        "username": "u".repeat(100_000), "password": PASSWORD, "auth": { "type": "m.login.dummy" },
    });
    let answer = server
        .request(Method::POST, server.v3("/register"), None, Some(huge_name))
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "M_INVALID_USERNAME");
    let too_many: Vec<String> = (0..1001).map(|i| format!("D{i}")).collect();
    let answer = server
        .request(
            Method::POST,
            server.v3("/delete_devices"),
            Some(&alice.token),
            Some(json!({ "devices": too_many })),
        )
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let bad_query = server
        .request(
            Method::POST,
            server.v3("/register?kind=admin"),
            None,
            Some(json!({})),
        )
        .await;
    assert_error(&bad_query, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    // A percent-encoded invalid UTF-8 path segment.
    let answer = raw(&server, Method::GET, &server.v3("/profile/%FF%FE"), vec![]).await;
    assert_eq!(answer.0, StatusCode::BAD_REQUEST, "{}", answer.1);
    let unknown_stage =
        json!({ "username": "bob", "password": PASSWORD, "auth": { "type": "m.login.sso" } });
    let answer = server
        .request(
            Method::POST,
            server.v3("/register"),
            None,
            Some(unknown_stage),
        )
        .await;
    assert_eq!(answer.0, StatusCode::UNAUTHORIZED, "{}", answer.1);
    assert_eq!(answer.1["errcode"], "M_INVALID_PARAM");
}

async fn cors_headers_on_every_answer(backend: Backend) {
    let server = TestServer::start(backend).await;
    let preflight = server
        .client
        .request(Method::OPTIONS, server.v3("/login"))
        .header("Origin", "https://app.example")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success());
    let headers = preflight.headers();
    assert_eq!(headers["access-control-allow-origin"], "*");
    let methods = headers["access-control-allow-methods"].to_str().unwrap();
    for method in ["GET", "POST", "PUT", "DELETE", "OPTIONS"] {
        assert!(methods.contains(method), "{methods}");
    }
    let allowed = headers["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for header in ["x-requested-with", "content-type", "authorization"] {
        assert!(allowed.contains(header), "{allowed}");
    }
    for url in [
        format!("{}/_matrix/client/versions", server.base_url),
        server.v3("/nowhere"),
    ] {
        let response = server.client.get(url).send().await.unwrap();
        assert_eq!(response.headers()["access-control-allow-origin"], "*");
    }
}

async fn login_and_registration_are_rate_limited(backend: Backend) {
    let server = TestServer::start_with(backend, |config| {
        config.rate_limits.enabled = true;
        config.rate_limits.login = RateLimit {
            per_second: 0.01,
            burst: 2,
        };
        config.rate_limits.registration = RateLimit {
            per_second: 0.01,
            burst: 1,
        };
    })
    .await;
    server.register("alice").await;
    let answer = server
        .request(
            Method::POST,
            server.v3("/register"),
            None,
            Some(json!({ "username": "bob", "password": PASSWORD })),
        )
        .await;
    assert_error(&answer, StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED");
    assert!(
        answer.1["retry_after_ms"]
            .as_u64()
            .is_some_and(|ms| ms > 1000),
        "{}",
        answer.1
    );

    let wrong =
        json!({ "type": "m.login.password", "user": "alice", "password": "wrong password" });
    for _ in 0..2 {
        let answer = server
            .request(Method::POST, server.v3("/login"), None, Some(wrong.clone()))
            .await;
        assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    }
    let response = server
        .client
        .post(server.v3("/login"))
        .json(&wrong)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().contains_key("retry-after"));
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["errcode"], "M_LIMIT_EXCEEDED");
    assert!(answer["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0));
}
