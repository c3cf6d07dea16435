//! The media upload path over HTTP: `POST /upload` and `POST /create` then
//! `PUT /upload/{server}/{id}`, with any content type, file name, declared
//! length and bytes. Never a 5xx; an upload over the limit is refused with
//! `M_TOO_LARGE`; one that is taken downloads as the same bytes, with a
//! content type and disposition a browser cannot run.
#![no_main]

use arbitrary::Arbitrary;
use axum::{
    body::Body,
    http::{HeaderValue, Method, Request, StatusCode, header},
};
use libfuzzer_sys::fuzz_target;
use myelin_fuzz::server::{MAX_UPLOAD_BYTES, SERVER_NAME, Server, server};
use serde_json::Value;

#[derive(Arbitrary, Debug)]
struct Upload {
    /// Into an id made by `POST /create` (or a made-up one) rather than a new one.
    target: Target,
    content_type: Option<String>,
    filename: Option<String>,
    /// The `Content-Length` header, when the fuzzer names one.
    declared_length: Option<String>,
    bytes: Vec<u8>,
}

#[derive(Arbitrary, Debug)]
enum Target {
    New,
    Created,
    Named {
        server_name: String,
        media_id: String,
    },
}

/// Content types a download may carry: the inline ones stay as uploaded.
const SAFE_TYPES: &[&str] = &["application/octet-stream", "text/plain"];

fuzz_target!(|upload: Upload| {
    let server = server();
    let Some((request, put_into)) = request(server, &upload) else {
        return;
    };
    let (status, _, body) = server.send(request);
    assert!(!status.is_server_error(), "{status} for an upload");
    let answer: Value = serde_json::from_slice(&body).expect("every answer is JSON");
    if status != StatusCode::OK {
        assert!(answer["errcode"].is_string(), "an error has an errcode");
        return;
    }
    assert!(
        upload.bytes.len() as u64 <= MAX_UPLOAD_BYTES,
        "an oversized upload was taken"
    );
    // `PUT` answers `{}`: the id is the one it named.
    let uri = put_into
        .or_else(|| answer["content_uri"].as_str().map(str::to_owned))
        .expect("a POST answers its content URI");
    check_download(server, &uri, &upload);
});

/// The upload request and, for a `PUT`, the `mxc://` URI it fills; `None`
/// when a header cannot be written at all or no media id can be reserved.
fn request(server: &Server, upload: &Upload) -> Option<(Request<Body>, Option<String>)> {
    let put_into = match &upload.target {
        Target::New => None,
        Target::Created => {
            let created = server.send(authorized(server, Method::POST, "/_matrix/media/v1/create"));
            if created.0 == StatusCode::TOO_MANY_REQUESTS {
                // Ids reserved by earlier inputs and never filled: the quota.
                return None;
            }
            assert_eq!(created.0, StatusCode::OK, "create a media id");
            let created: Value = serde_json::from_slice(&created.2).expect("JSON");
            Some(
                created["content_uri"]
                    .as_str()
                    .expect("an mxc URI")
                    .to_owned(),
            )
        }
        Target::Named {
            server_name,
            media_id,
        } => Some(format!("mxc://{server_name}/{media_id}")),
    };
    let path = match &upload.target {
        Target::New => "/_matrix/media/v3/upload".to_owned(),
        Target::Created => format!(
            "/_matrix/media/v3/upload/{}",
            put_into
                .as_deref()
                .unwrap_or_default()
                .trim_start_matches("mxc://")
        ),
        Target::Named {
            server_name,
            media_id,
        } => format!(
            "/_matrix/media/v3/upload/{}/{}",
            percent_encode(server_name),
            percent_encode(media_id)
        ),
    };
    let path = match &upload.filename {
        Some(name) => format!("{path}?filename={}", percent_encode(name)),
        None => path,
    };
    let method = if matches!(upload.target, Target::New) {
        Method::POST
    } else {
        Method::PUT
    };
    let mut request = authorized(server, method, &path);
    let headers = request.headers_mut();
    if let Some(content_type) = &upload.content_type {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(content_type).ok()?,
        );
    }
    if let Some(length) = &upload.declared_length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_str(length).ok()?);
    }
    *request.body_mut() = Body::from(upload.bytes.clone());
    Some((request, put_into))
}

fn authorized(server: &Server, method: Method, path: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, &server.authorization)
        .body(Body::empty())
        .expect("a valid request")
}

/// Downloads what was uploaded: the same bytes, inert headers.
fn check_download(server: &Server, uri: &str, upload: &Upload) {
    let (server_name, media_id) = uri
        .strip_prefix("mxc://")
        .and_then(|rest| rest.split_once('/'))
        .expect("an mxc URI");
    assert_eq!(server_name, SERVER_NAME);
    let path = format!(
        "/_matrix/client/v1/media/download/{server_name}/{}",
        percent_encode(media_id)
    );
    let (status, headers, body) = server.send(authorized(server, Method::GET, &path));
    assert_eq!(status, StatusCode::OK, "an uploaded file downloads");
    assert_eq!(body, upload.bytes, "the bytes come back as uploaded");
    let content_type = headers[header::CONTENT_TYPE].to_str().expect("ASCII");
    let disposition = headers[header::CONTENT_DISPOSITION]
        .to_str()
        .expect("ASCII");
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    if disposition.starts_with("inline") {
        assert!(
            content_type.starts_with("image/")
                || content_type.starts_with("video/")
                || content_type.starts_with("audio/")
                || SAFE_TYPES.contains(&content_type),
            "{content_type} shown inline"
        );
        assert!(
            !content_type.contains("svg") && !content_type.contains("html"),
            "{content_type} shown inline"
        );
    } else {
        assert!(
            disposition.starts_with("attachment"),
            "disposition {disposition}"
        );
        assert_eq!(content_type, "application/octet-stream");
    }
}

/// Every byte but the unreserved ones percent-encoded.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                char::from(byte).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}
