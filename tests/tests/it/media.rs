//! The blind media store: uploads, asynchronous uploads, authenticated
//! downloads, the size limit and the headers that keep uploads inert.

use std::path::{Path, PathBuf};

use myelin_tests::{Backend, TestServer, assert_error, backend_tests};
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

backend_tests!(
    upload_and_download_round_trip,
    active_content_is_served_inert,
    create_then_upload_once_by_the_creator,
    downloads_need_a_token_and_a_known_id,
    uploads_over_the_limit_are_refused_and_leave_nothing,
    identical_uploads_share_one_blob,
    config_reports_the_default_limit,
);

async fn upload_and_download_round_trip(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    // Bytes that are not UTF-8, larger than one read chunk.
    let bytes: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let uri = upload(
        &server,
        &alice.token,
        "image/png",
        Some("cat.png"),
        bytes.clone(),
    )
    .await;
    let media_id = uri
        .strip_prefix("mxc://localhost/")
        .unwrap_or_else(|| panic!("content_uri {uri}"));
    assert!(
        media_id.len() >= 22
            && media_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "media id {media_id}"
    );

    let response = download(
        &server,
        Some(&alice.token),
        &format!("localhost/{media_id}"),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_inert_headers(&response);
    assert_eq!(header_of(&response, header::CONTENT_TYPE), "image/png");
    assert_eq!(
        header_of(&response, header::CONTENT_DISPOSITION),
        "inline; filename=\"cat.png\""
    );
    assert_eq!(
        header_of(&response, header::CONTENT_LENGTH),
        bytes.len().to_string()
    );
    assert_eq!(response.bytes().await.expect("body").as_ref(), bytes);

    // The file name in the URL replaces the uploaded one, encoded for the header.
    let response = download(
        &server,
        Some(&alice.token),
        &format!("localhost/{media_id}/%C3%A9t%C3%A9%22.png"),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header_of(&response, header::CONTENT_DISPOSITION),
        "inline; filename*=utf-8''%C3%A9t%C3%A9%22.png"
    );
    assert_eq!(response.bytes().await.expect("body").as_ref(), bytes);

    // Another user of the server may download it too.
    let bob = server.register("bob").await;
    let response = download(&server, Some(&bob.token), &format!("localhost/{media_id}")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.bytes().await.expect("body").as_ref(), bytes);
}

async fn active_content_is_served_inert(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let html = b"<html><script>alert(document.cookie)</script></html>".to_vec();
    for (content_type, filename) in [
        ("text/html", "page.html"),
        ("image/svg+xml", "image.svg"),
        ("application/javascript", "x.js"),
    ] {
        let uri = upload(
            &server,
            &alice.token,
            content_type,
            Some(filename),
            html.clone(),
        )
        .await;
        let path = uri.trim_start_matches("mxc://");
        let response = download(&server, Some(&alice.token), path).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_inert_headers(&response);
        assert_eq!(
            header_of(&response, header::CONTENT_TYPE),
            "application/octet-stream",
            "{content_type}"
        );
        assert_eq!(
            header_of(&response, header::CONTENT_DISPOSITION),
            format!("attachment; filename=\"{filename}\"")
        );
        assert_eq!(response.bytes().await.expect("body").as_ref(), html);
    }
    // No content type at all: bytes, as an attachment without a name.
    let uri = upload_raw(&server, &alice.token, None, None, b"opaque".to_vec()).await;
    let response = download(
        &server,
        Some(&alice.token),
        uri.trim_start_matches("mxc://"),
    )
    .await;
    assert_eq!(
        header_of(&response, header::CONTENT_TYPE),
        "application/octet-stream"
    );
    assert_eq!(
        header_of(&response, header::CONTENT_DISPOSITION),
        "attachment"
    );
}

async fn create_then_upload_once_by_the_creator(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let (status, created) = server
        .request(
            Method::POST,
            format!("{}/_matrix/media/v1/create", server.base_url),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let uri = created["content_uri"]
        .as_str()
        .expect("content_uri")
        .to_owned();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    assert!(
        created["unused_expires_at"]
            .as_i64()
            .is_some_and(|at| at > now),
        "{created}"
    );
    let path = uri.trim_start_matches("mxc://").to_owned();

    // Not uploaded yet: the spec's M_NOT_YET_UPLOADED, answered at once.
    let response = download(&server, Some(&alice.token), &path).await;
    assert_eq!(
        json_error(response).await,
        (StatusCode::GATEWAY_TIMEOUT, "M_NOT_YET_UPLOADED".to_owned())
    );

    let put = |token: String, body: &'static [u8]| {
        let url = format!(
            "{}/_matrix/media/v3/upload/{path}?filename=a.txt",
            server.base_url
        );
        let request = server
            .client
            .put(url)
            .bearer_auth(token)
            .header(header::CONTENT_TYPE, "text/plain")
            .body(body);
        async move { request.send().await.expect("request reaches the server") }
    };
    // Only the creator may fill it.
    let response = put(bob.token.clone(), b"bob's bytes").await;
    assert_eq!(
        json_error(response).await,
        (StatusCode::FORBIDDEN, "M_FORBIDDEN".to_owned())
    );
    let response = put(alice.token.clone(), b"alice's bytes").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<Value>().await.expect("json"), json!({}));
    // Only once.
    let response = put(alice.token.clone(), b"other bytes").await;
    assert_eq!(
        json_error(response).await,
        (StatusCode::CONFLICT, "M_CANNOT_OVERWRITE_MEDIA".to_owned())
    );

    let response = download(&server, Some(&alice.token), &path).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header_of(&response, header::CONTENT_TYPE), "text/plain");
    assert_eq!(
        header_of(&response, header::CONTENT_DISPOSITION),
        "inline; filename=\"a.txt\""
    );
    assert_eq!(
        response.bytes().await.expect("body").as_ref(),
        b"alice's bytes"
    );

    // An id nobody created, and one on another server.
    for unknown in [
        "localhost/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "elsewhere.example/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        let url = format!("{}/_matrix/media/v3/upload/{unknown}", server.base_url);
        let response = server
            .client
            .put(url)
            .bearer_auth(&alice.token)
            .body("x")
            .send()
            .await
            .expect("request reaches the server");
        assert_eq!(
            json_error(response).await,
            (StatusCode::NOT_FOUND, "M_NOT_FOUND".to_owned()),
            "{unknown}"
        );
    }
}

async fn downloads_need_a_token_and_a_known_id(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let uri = upload(&server, &alice.token, "text/plain", None, b"hello".to_vec()).await;
    let path = uri.trim_start_matches("mxc://");

    let response = download(&server, None, path).await;
    assert_eq!(
        json_error(response).await,
        (StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN".to_owned())
    );
    let response = download(&server, Some("not-a-token"), path).await;
    assert_eq!(
        json_error(response).await,
        (StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN".to_owned())
    );
    // Uploading needs a token too.
    let response = server
        .client
        .post(format!("{}/_matrix/media/v3/upload", server.base_url))
        .body("x")
        .send()
        .await
        .expect("request reaches the server");
    assert_eq!(
        json_error(response).await,
        (StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN".to_owned())
    );

    let media_id = path.trim_start_matches("localhost/");
    for unknown in [
        "localhost/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_owned(),
        "localhost/no.such.id".to_owned(),
        // Remote media is not fetched until federation exists.
        format!("elsewhere.example/{media_id}"),
    ] {
        let response = download(&server, Some(&alice.token), &unknown).await;
        assert_eq!(
            json_error(response).await,
            (StatusCode::NOT_FOUND, "M_NOT_FOUND".to_owned()),
            "{unknown}"
        );
    }
    // Thumbnails are not served.
    let (status, answer) = server
        .request(
            Method::GET,
            format!(
                "{}/_matrix/client/v1/media/thumbnail/{path}?width=32&height=32",
                server.base_url
            ),
            Some(&alice.token),
            None,
        )
        .await;
    assert_error(&(status, answer), StatusCode::NOT_FOUND, "M_UNRECOGNIZED");
}

async fn uploads_over_the_limit_are_refused_and_leave_nothing(backend: Backend) {
    // Uploads may be larger than JSON bodies: the media routes have their own limit.
    let server = TestServer::start_with(backend, |config| {
        config.max_request_body_bytes = 4096;
        config.max_upload_bytes = 8192;
    })
    .await;
    let alice = server.register("alice").await;
    let (status, answer) = server
        .request(
            Method::GET,
            format!("{}/_matrix/client/v1/media/config", server.base_url),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(
        (status, answer),
        (StatusCode::OK, json!({ "m.upload.size": 8192 }))
    );

    let fits = vec![1u8; 8192];
    let uri = upload(
        &server,
        &alice.token,
        "application/octet-stream",
        None,
        fits.clone(),
    )
    .await;
    let response = download(
        &server,
        Some(&alice.token),
        uri.trim_start_matches("mxc://"),
    )
    .await;
    assert_eq!(response.bytes().await.expect("body").as_ref(), fits);

    // Declared too large: refused before any byte is read.
    let response = server
        .client
        .post(format!("{}/_matrix/media/v3/upload", server.base_url))
        .bearer_auth(&alice.token)
        .body(vec![2u8; 8193])
        .send()
        .await
        .expect("request reaches the server");
    assert_eq!(
        json_error(response).await,
        (StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE".to_owned())
    );

    // Undeclared (chunked): refused once the running count crosses the limit.
    let (status, answer) =
        chunked_upload(&server, &alice.token, &[&[3u8; 5000], &[3u8; 5000]]).await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["errcode"], "M_TOO_LARGE");
    // A chunked upload under the limit is fine.
    let (status, answer) =
        chunked_upload(&server, &alice.token, &[&[4u8; 3000], &[4u8; 3000]]).await;
    assert_eq!(status, 200, "{answer}");

    // Only the two accepted uploads are on disk; nothing half-written remains.
    let media_dir = server.config.data_dir.join("media");
    assert_eq!(blob_files(&media_dir).len(), 2);
    let leftovers: Vec<_> = std::fs::read_dir(media_dir.join("tmp"))
        .expect("tmp dir")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

async fn identical_uploads_share_one_blob(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let bytes = b"the same ciphertext".to_vec();
    let first = upload(
        &server,
        &alice.token,
        "application/octet-stream",
        None,
        bytes.clone(),
    )
    .await;
    let second = upload(
        &server,
        &bob.token,
        "text/plain",
        Some("b.txt"),
        bytes.clone(),
    )
    .await;
    assert_ne!(first, second);
    let media_dir = server.config.data_dir.join("media");
    let blobs = blob_files(&media_dir);
    assert_eq!(blobs.len(), 1, "{blobs:?}");
    // Named by the SHA-256 of the bytes.
    let name = blobs[0].file_name().and_then(|n| n.to_str()).expect("name");
    assert_eq!(name.len(), 64);
    assert_eq!(std::fs::read(&blobs[0]).expect("blob"), bytes);

    // Each media id keeps its own metadata.
    let response = download(
        &server,
        Some(&alice.token),
        second.trim_start_matches("mxc://"),
    )
    .await;
    assert_eq!(header_of(&response, header::CONTENT_TYPE), "text/plain");
    let response = download(
        &server,
        Some(&alice.token),
        first.trim_start_matches("mxc://"),
    )
    .await;
    assert_eq!(
        header_of(&response, header::CONTENT_TYPE),
        "application/octet-stream"
    );

    upload(&server, &alice.token, "text/plain", None, b"other".to_vec()).await;
    assert_eq!(blob_files(&media_dir).len(), 2);
}

async fn config_reports_the_default_limit(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let url = format!("{}/_matrix/client/v1/media/config", server.base_url);
    let (status, answer) = server
        .request(Method::GET, &url, Some(&alice.token), None)
        .await;
    assert_eq!(
        (status, answer),
        (StatusCode::OK, json!({ "m.upload.size": 50 * 1024 * 1024 }))
    );
    let answer = server.request(Method::GET, &url, None, None).await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
}

/// Uploads and returns the `content_uri`.
async fn upload(
    server: &TestServer,
    token: &str,
    content_type: &str,
    filename: Option<&str>,
    bytes: Vec<u8>,
) -> String {
    upload_raw(server, token, Some(content_type), filename, bytes).await
}

async fn upload_raw(
    server: &TestServer,
    token: &str,
    content_type: Option<&str>,
    filename: Option<&str>,
    bytes: Vec<u8>,
) -> String {
    let mut request = server
        .client
        .post(format!("{}/_matrix/media/v3/upload", server.base_url))
        .bearer_auth(token)
        .body(bytes);
    if let Some(content_type) = content_type {
        request = request.header(header::CONTENT_TYPE, content_type);
    }
    if let Some(filename) = filename {
        request = request.query(&[("filename", filename)]);
    }
    let response = request.send().await.expect("request reaches the server");
    let status = response.status();
    let answer: Value = response.json().await.expect("JSON answer");
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer["content_uri"]
        .as_str()
        .unwrap_or_else(|| panic!("no content_uri in {answer}"))
        .to_owned()
}

/// `GET /_matrix/client/v1/media/download/{path}`.
async fn download(server: &TestServer, token: Option<&str>, path: &str) -> reqwest::Response {
    let mut request = server.client.get(format!(
        "{}/_matrix/client/v1/media/download/{path}",
        server.base_url
    ));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("request reaches the server")
}

/// An upload without `Content-Length`, over a raw socket (the test client
/// cannot stream a body).
async fn chunked_upload(server: &TestServer, token: &str, chunks: &[&[u8]]) -> (u16, Value) {
    let mut socket = tokio::net::TcpStream::connect(server.config.bind)
        .await
        .expect("connect");
    let mut request = format!(
        "POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: Bearer {token}\r\nContent-Type: application/octet-stream\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in chunks {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    // The server may answer and close before reading everything.
    let _ = socket.write_all(&request).await;
    let mut response = Vec::new();
    let _ = socket.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    // The JSON may itself be chunked; take from the first brace to the last.
    let json = match (body.find('{'), body.rfind('}')) {
        (Some(start), Some(end)) => serde_json::from_str(&body[start..=end]).expect("JSON"),
        _ => panic!("no JSON in {text:?}"),
    };
    (status, json)
}

/// Blob files under the media directory, leaving out temporary uploads.
fn blob_files(media_dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![media_dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("media dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "tmp") {
                    pending.push(path);
                }
            } else {
                found.push(path);
            }
        }
    }
    found
}

#[track_caller]
fn assert_inert_headers(response: &reqwest::Response) {
    assert_eq!(header_of(response, "x-content-type-options"), "nosniff");
    let csp = header_of(response, "content-security-policy");
    assert!(
        csp.starts_with("sandbox;") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    assert_eq!(
        header_of(response, "cross-origin-resource-policy"),
        "cross-origin"
    );
}

#[track_caller]
fn header_of(response: &reqwest::Response, name: impl header::AsHeaderName) -> String {
    response
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// The status and errcode of a JSON error answer.
async fn json_error(response: reqwest::Response) -> (StatusCode, String) {
    let status = response.status();
    let answer: Value = response.json().await.expect("JSON error");
    assert!(answer["error"].is_string(), "{answer}");
    (
        status,
        answer["errcode"].as_str().unwrap_or_default().to_owned(),
    )
}
