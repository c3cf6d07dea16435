//! The storage conformance suite: the same assertions on every backend.

use std::sync::Arc;

use myelin_server::{
    config::DatabaseLocation,
    storage::{self, Millis, NewAccount, ProfileField, Session, Storage, StorageError, TokenHash},
};
use myelin_tests::{Backend, PostgresDatabase, backend_tests};
use ruma_ids::{device_id, owned_user_id};

backend_tests!(
    accounts_are_unique,
    sessions_resolve_and_reuse_devices,
    deleting_devices_revokes_their_tokens,
    profiles_and_renames_report_missing_rows,
    acknowledged_writes_survive_reopening,
);

/// A storage on a fresh database, with what keeps that database alive.
async fn open(backend: Backend) -> (Arc<dyn Storage>, Keep) {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let location = DatabaseLocation::Sqlite(dir.path().join("myelin.db"));
            (storage::open(&location).await.unwrap(), Keep::Dir(dir))
        }
        Backend::Postgres(url) => {
            let database = PostgresDatabase::create(&url).await;
            let location = DatabaseLocation::Postgres(myelin_server::config::Secret::new(
                database.url.clone(),
            ));
            (
                storage::open(&location).await.unwrap(),
                Keep::Database(database),
            )
        }
    }
}

#[allow(dead_code)]
enum Keep {
    Dir(tempfile::TempDir),
    Database(PostgresDatabase),
}

fn account(user_id: &str) -> NewAccount {
    NewAccount {
        user_id: user_id.try_into().unwrap(),
        password_hash: "$argon2id$placeholder".to_owned(),
        is_admin: false,
        created: Millis(1),
    }
}

fn session(user: &str, device: &str) -> Session {
    Session {
        user_id: user.try_into().unwrap(),
        device_id: device.into(),
    }
}

async fn accounts_are_unique(backend: Backend) {
    let (store, _keep) = open(backend).await;
    store.create_account(&account("@alice:x")).await.unwrap();
    assert!(matches!(
        store.create_account(&account("@alice:x")).await,
        Err(StorageError::Conflict(_))
    ));
    let stored = store
        .account(&owned_user_id!("@alice:x"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.password_hash, "$argon2id$placeholder");
    assert!(!stored.is_admin);
    assert!(
        store
            .account(&owned_user_id!("@bob:x"))
            .await
            .unwrap()
            .is_none()
    );
    store
        .set_password_hash(&owned_user_id!("@alice:x"), "$new")
        .await
        .unwrap();
    assert_eq!(
        store
            .account(&owned_user_id!("@alice:x"))
            .await
            .unwrap()
            .unwrap()
            .password_hash,
        "$new"
    );
    assert!(matches!(
        store
            .set_password_hash(&owned_user_id!("@bob:x"), "$new")
            .await,
        Err(StorageError::NotFound(_))
    ));
}

async fn sessions_resolve_and_reuse_devices(backend: Backend) {
    let (store, _keep) = open(backend).await;
    store.create_account(&account("@alice:x")).await.unwrap();
    let phone = session("@alice:x", "PHONE");
    store
        .open_session(&phone, Some("Phone"), &TokenHash([1; 32]), Millis(1))
        .await
        .unwrap();
    let found = store
        .session_for_token(&TokenHash([1; 32]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.session, phone);
    assert_eq!(found.hash, TokenHash([1; 32]));
    assert!(
        store
            .session_for_token(&TokenHash([2; 32]))
            .await
            .unwrap()
            .is_none()
    );

    // Reopening the device replaces its token and keeps its name.
    store
        .open_session(&phone, Some("ignored"), &TokenHash([3; 32]), Millis(2))
        .await
        .unwrap();
    assert!(
        store
            .session_for_token(&TokenHash([1; 32]))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .session_for_token(&TokenHash([3; 32]))
            .await
            .unwrap()
            .is_some()
    );
    let device = store
        .device(&owned_user_id!("@alice:x"), device_id!("PHONE"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(device.display_name.as_deref(), Some("Phone"));
}

async fn deleting_devices_revokes_their_tokens(backend: Backend) {
    let (store, _keep) = open(backend).await;
    let alice = owned_user_id!("@alice:x");
    store.create_account(&account("@alice:x")).await.unwrap();
    for (i, device) in ["A", "B", "C"].into_iter().enumerate() {
        let token = TokenHash([u8::try_from(i).unwrap(); 32]);
        store
            .open_session(&session("@alice:x", device), None, &token, Millis(1))
            .await
            .unwrap();
    }
    store
        .delete_devices(&alice, &["A".into(), "NOPE".into()])
        .await
        .unwrap();
    assert!(
        store
            .session_for_token(&TokenHash([0; 32]))
            .await
            .unwrap()
            .is_none()
    );
    store
        .delete_devices_except(&alice, Some(device_id!("C")))
        .await
        .unwrap();
    assert!(
        store
            .session_for_token(&TokenHash([1; 32]))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .session_for_token(&TokenHash([2; 32]))
            .await
            .unwrap()
            .is_some()
    );
    let devices = store.devices(&alice).await.unwrap();
    assert_eq!(
        devices
            .iter()
            .map(|d| d.device_id.as_str())
            .collect::<Vec<_>>(),
        ["C"]
    );
    store.delete_devices_except(&alice, None).await.unwrap();
    assert!(store.devices(&alice).await.unwrap().is_empty());
}

async fn profiles_and_renames_report_missing_rows(backend: Backend) {
    let (store, _keep) = open(backend).await;
    let alice = owned_user_id!("@alice:x");
    store.create_account(&account("@alice:x")).await.unwrap();
    assert_eq!(
        store.profile(&alice).await.unwrap().unwrap(),
        Default::default()
    );
    store
        .set_profile_field(&alice, ProfileField::Displayname, Some("Alice"))
        .await
        .unwrap();
    store
        .set_profile_field(&alice, ProfileField::AvatarUrl, Some("mxc://x/y"))
        .await
        .unwrap();
    let profile = store.profile(&alice).await.unwrap().unwrap();
    assert_eq!(
        (
            profile.displayname.as_deref(),
            profile.avatar_url.as_deref()
        ),
        (Some("Alice"), Some("mxc://x/y"))
    );
    let bob = owned_user_id!("@bob:x");
    assert!(store.profile(&bob).await.unwrap().is_none());
    assert!(matches!(
        store
            .set_profile_field(&bob, ProfileField::Displayname, Some("B"))
            .await,
        Err(StorageError::NotFound(_))
    ));
    assert!(matches!(
        store
            .rename_device(&alice, device_id!("NONE"), Some("x"))
            .await,
        Err(StorageError::NotFound(_))
    ));
}

async fn acknowledged_writes_survive_reopening(backend: Backend) {
    // Reopen on the same location: migrations are idempotent and data persists.
    let (location, _keep) = match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            (
                DatabaseLocation::Sqlite(dir.path().join("nested/dir/myelin.db")),
                Keep::Dir(dir),
            )
        }
        Backend::Postgres(url) => {
            let database = PostgresDatabase::create(&url).await;
            let location = DatabaseLocation::Postgres(myelin_server::config::Secret::new(
                database.url.clone(),
            ));
            (location, Keep::Database(database))
        }
    };
    let first = storage::open(&location).await.unwrap();
    first.create_account(&account("@alice:x")).await.unwrap();
    drop(first);
    let second = storage::open(&location).await.unwrap();
    assert!(
        second
            .account(&owned_user_id!("@alice:x"))
            .await
            .unwrap()
            .is_some()
    );
    second.close().await;
}
