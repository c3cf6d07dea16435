//! `check_pdu` against events signed by `remote.example`, whose key
//! document a fake origin serves.

use std::sync::Arc;

use async_trait::async_trait;
use myelin_crypto::{NewPdu, SigningKey, build_pdu};
use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedServerName, UInt, events::TimelineEventType,
    room_id, server_name,
};
use serde_json::json;

use super::*;
use crate::{
    config::DatabaseLocation,
    service::{
        federation::{FederationError, KeyFetcher, system_clock},
        rooms::testing::{assert_matches, content, user},
        server_keys::ServerKeys,
    },
    storage::{self, Storage},
};

const VERSION: RoomVersion = RoomVersion::V10;

/// Serves one server's key document, and nothing for any other server.
struct OneOrigin {
    name: OwnedServerName,
    document: CanonicalJsonObject,
}

#[async_trait]
impl KeyFetcher for OneOrigin {
    async fn server_keys(
        &self,
        server: &ServerName,
    ) -> Result<CanonicalJsonObject, FederationError> {
        if server == self.name {
            Ok(self.document.clone())
        } else {
            Err(FederationError::Unreachable("no such server".to_owned()))
        }
    }

    async fn notary_keys(
        &self,
        _notary: &ServerName,
        _server: &ServerName,
    ) -> Result<Vec<CanonicalJsonObject>, FederationError> {
        Ok(Vec::new())
    }
}

/// `us.example`'s remote key service, with `remote.example` serving the
/// document of its key; `remote.example`'s keys.
struct Keys {
    keys: RemoteKeys,
    remote: ServerKeys,
    _dir: tempfile::TempDir,
}

async fn keys() -> Keys {
    let dir = tempfile::tempdir().unwrap();
    let location = |name: &str| DatabaseLocation::Sqlite(dir.path().join(name));
    let ours: Arc<dyn Storage> = storage::open(&location("us")).await.unwrap();
    let theirs: Arc<dyn Storage> = storage::open(&location("remote")).await.unwrap();
    let remote = ServerKeys::load_or_generate(theirs, server_name!("remote.example").to_owned())
        .await
        .unwrap();
    let own = ServerKeys::load_or_generate(ours.clone(), server_name!("us.example").to_owned())
        .await
        .unwrap();
    let origin = OneOrigin {
        name: server_name!("remote.example").to_owned(),
        document: remote.key_document(Millis::now()),
    };
    Keys {
        keys: RemoteKeys::new(
            ours,
            Arc::new(origin),
            Arc::new(own),
            Vec::new(),
            system_clock(),
        ),
        remote,
        _dir: dir,
    }
}

/// A message of `sender`'s, signed as `remote.example` with `key`.
fn message(sender: &str, key: &SigningKey) -> CanonicalJsonObject {
    let new = NewPdu {
        room_id: Some(room_id!("!room:remote.example").to_owned()),
        sender: user(sender),
        event_type: TimelineEventType::RoomMessage,
        state_key: None,
        content: content(json!({ "msgtype": "m.text", "body": "hello" })),
        prev_events: vec![OwnedEventId::try_from("$prev").unwrap()],
        auth_events: vec![OwnedEventId::try_from("$auth").unwrap()],
        depth: UInt::new(5).unwrap(),
        origin_server_ts: MilliSecondsSinceUnixEpoch::now(),
        redacts: None,
        v1_ids: None,
    };
    let signed = build_pdu(new, server_name!("remote.example"), key, &VERSION.id()).unwrap();
    let (_, object, _) = signed.into_parts();
    object
}

#[tokio::test]
async fn a_signed_event_with_its_content_passes_unchanged() {
    let keys = keys().await;
    let event = message("@bob:remote.example", keys.remote.current());
    let checked = check_pdu(&keys.keys, VERSION, event.clone()).await.unwrap();
    assert!(!checked.redacted);
    assert_eq!(checked.pdu.as_object(), &event);
}

#[tokio::test]
async fn changed_content_keeps_the_signature_but_the_event_goes_on_redacted() {
    let keys = keys().await;
    let mut event = message("@bob:remote.example", keys.remote.current());
    event.insert(
        "content".to_owned(),
        CanonicalJsonValue::Object(content(json!({ "msgtype": "m.text", "body": "forged" }))),
    );
    let checked = check_pdu(&keys.keys, VERSION, event).await.unwrap();
    assert!(checked.redacted);
    assert_eq!(checked.pdu.content().get(), "{}");
}

#[tokio::test]
async fn a_signature_by_a_key_the_origin_does_not_publish_is_refused() {
    let keys = keys().await;
    let stranger = SigningKey::from_seed(&[7; 32], "other").unwrap();
    let event = message("@bob:remote.example", &stranger);
    assert_matches!(
        check_pdu(&keys.keys, VERSION, event).await,
        Err(PduCheckError::Signature(_))
    );
}

#[tokio::test]
async fn an_event_for_a_user_of_another_server_needs_that_servers_signature() {
    let keys = keys().await;
    // Signed by remote.example, but the sender is of elsewhere.example.
    let event = message("@mallory:elsewhere.example", keys.remote.current());
    assert_matches!(
        check_pdu(&keys.keys, VERSION, event).await,
        Err(PduCheckError::Signature(_))
    );
}

#[tokio::test]
async fn an_event_missing_a_required_field_is_malformed() {
    let keys = keys().await;
    let mut event = message("@bob:remote.example", keys.remote.current());
    event.remove("depth");
    assert_matches!(
        check_pdu(&keys.keys, VERSION, event).await,
        Err(PduCheckError::Malformed(_))
    );
}
