//! `GET /rooms/{roomId}/members?at=`: the members as of a sync token.

use myelin_tests::{Backend, TestServer, backend_tests};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

backend_tests!(members_at_a_token_are_the_members_then);

fn member_ids(answer: &Value) -> Vec<String> {
    let mut ids: Vec<String> = answer["chunk"]
        .as_array()
        .expect("chunk")
        .iter()
        .filter(|event| event["content"]["membership"] == "join")
        .map(|event| event["state_key"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

async fn members_at_a_token_are_the_members_then(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let (_, created) = server
        .request(
            Method::POST,
            server.v3("/createRoom"),
            Some(&alice.token),
            Some(json!({ "preset": "public_chat" })),
        )
        .await;
    let room = created["room_id"].as_str().unwrap().to_owned();
    let (_, synced) = server
        .request(Method::GET, server.v3("/sync"), Some(&alice.token), None)
        .await;
    let before_bob = synced["next_batch"].as_str().unwrap().to_owned();
    assert_eq!(
        server
            .request(
                Method::POST,
                server.v3(&format!("/join/{room}")),
                Some(&bob.token),
                Some(json!({}))
            )
            .await
            .0,
        StatusCode::OK
    );

    let members = |at: Option<&str>| {
        let query = at.map(|at| format!("?at={at}")).unwrap_or_default();
        server.request(
            Method::GET,
            server.v3(&format!("/rooms/{room}/members{query}")),
            Some(&alice.token),
            None,
        )
    };
    let (status, then) = members(Some(&before_bob)).await;
    assert_eq!(status, StatusCode::OK, "{then}");
    assert_eq!(member_ids(&then), vec![alice.user_id.clone()]);
    let (_, now) = members(None).await;
    assert_eq!(
        member_ids(&now),
        vec![alice.user_id.clone(), bob.user_id.clone()]
    );
    let (status, _) = members(Some("not-a-token")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
