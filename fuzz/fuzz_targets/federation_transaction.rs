//! `PUT /_matrix/federation/v1/send/{txnId}` after the request signature:
//! the body read as the extractor reads it (UTF-8, a canonical JSON object,
//! then a transaction), and the transaction received by the server (its
//! checks, each PDU's checks before the room, each EDU). Never a panic nor
//! an internal error. Also the `X-Matrix` header: any text parses or is
//! refused, and a header signed for the request verifies.
//!
//! Input: the `Authorization` header, a newline, the transaction id, a
//! newline, the body.
#![no_main]

use std::sync::atomic::{AtomicU64, Ordering};

use libfuzzer_sys::fuzz_target;
use myelin_crypto::parse_canonical_object;
use myelin_fuzz::{server::server, signing_key};
use myelin_server::{
    http::error::MatrixError,
    service::federation::{
        SignedRequest, XMatrix, auth::authorization_header, inbound::Transaction,
    },
};
use ruma::{CanonicalJsonValue, server_name};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(3, '\n');
    let (Some(header), Some(txn_id), Some(body)) = (parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    let origin = server_name!("remote.example");
    let us = server_name!("localhost");

    // Any header text parses or is refused; a parsed one checks its destination.
    if let Ok(parsed) = XMatrix::parse(header) {
        let _ = parsed.check_destination(us);
    }

    let Ok(content) = parse_canonical_object(body) else {
        return;
    };
    let uri = format!("/_matrix/federation/v1/send/{txn_id}");
    let request = SignedRequest {
        method: "PUT",
        uri: &uri,
        content: Some(&content),
    };
    let key = signing_key();
    let signed = authorization_header(&key, origin, us, &request)
        .expect("signing a request object succeeds");
    let parsed = XMatrix::parse(&signed).expect("a header we signed parses");
    assert_eq!(parsed.origin, origin);
    parsed
        .verify(&key.public_key().encode(), us, &request)
        .expect("a header we signed verifies");

    let body = CanonicalJsonValue::Object(content);
    let Ok(transaction) = serde_json::from_value::<Transaction>(body.into()) else {
        return;
    };
    // A transaction id is answered once: a fresh one each run keeps the
    // fuzzer's inputs reaching the processing rather than the stored answer.
    static RUN: AtomicU64 = AtomicU64::new(0);
    let txn_id = format!("{txn_id}{}", RUN.fetch_add(1, Ordering::Relaxed));
    let server = server();
    let answer = server.block_on(server.state.inbound.receive_transaction(
        origin,
        &txn_id,
        transaction,
    ));
    match answer {
        Ok(answer) => assert!(answer["pdus"].is_object(), "the answer lists PDUs"),
        Err(error) => {
            let error = MatrixError::from(error);
            assert!(
                !error.status.is_server_error(),
                "{}: {:?}",
                error.status,
                error.error
            );
        }
    }
});
