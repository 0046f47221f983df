//! The administration domain against a real Postgres: the rules every caller (CLI, console,
//! harnesses) gets from `eye_admin`.

use eye_admin::{
    AdminError,
    apps::{self, Revocation},
    dead_letters::{self, Selection},
    schemas::{self, Registration},
};
use eye_service::auth::{Role, hash_key};
use eye_test_support::TestDb;
use serde_json::json;

#[tokio::test]
async fn applications_keys_and_revocation() {
    let db = TestDb::new().await;
    let issued = apps::create(&db.pool, "shop", &[Role::Ingest]).await.unwrap();
    assert_eq!(issued.roles, ["ingest"]);
    let stored: Vec<u8> = sqlx::query_scalar("SELECT key_hash FROM api_keys WHERE id = $1")
        .bind(issued.key_id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(stored, hash_key(&issued.key), "only the key's hash is stored");

    let again = apps::create(&db.pool, "shop", &[Role::Ingest]).await.unwrap_err();
    assert!(matches!(again, AdminError::ApplicationExists { .. }), "{again}");
    assert!(again.to_string().contains("eye apps key shop"), "says what to do: {again}");
    let missing = apps::issue_key(&db.pool, "blog", &[Role::Read]).await.unwrap_err();
    assert!(matches!(missing, AdminError::NoSuchApplication { .. }), "{missing}");
    let no_roles = apps::issue_key(&db.pool, "shop", &[]).await.unwrap_err();
    assert!(matches!(no_roles, AdminError::Invalid(_)), "{no_roles}");

    let second = apps::issue_key(&db.pool, "shop", &[Role::Read]).await.unwrap();
    assert_eq!(second.application_id, issued.application_id);
    let listed = apps::list(&db.pool).await.unwrap();
    assert_eq!((listed.len(), listed[0].active_keys), (1, 2));
    assert_eq!(listed[0].roles, ["ingest", "read"]);

    let revoked = apps::revoke(&db.pool, "shop").await.unwrap();
    assert_eq!(revoked, Revocation { was_already_revoked: false, keys_revoked: 2 });
    let twice = apps::revoke(&db.pool, "shop").await.unwrap();
    assert_eq!(twice, Revocation { was_already_revoked: true, keys_revoked: 0 });
    let after = apps::issue_key(&db.pool, "shop", &[Role::Ingest]).await.unwrap_err();
    assert!(matches!(after, AdminError::ApplicationRevoked { .. }), "{after}");
    let reuse = apps::create(&db.pool, "shop", &[Role::Ingest]).await.unwrap_err();
    assert!(matches!(reuse, AdminError::ApplicationExistsRevoked { .. }), "{reuse}");
    let dev = apps::ensure_and_issue_key(&db.pool, "shop", &[Role::Ingest]).await.unwrap_err();
    assert!(matches!(dev, AdminError::ApplicationRevoked { .. }), "{dev}");
}

#[tokio::test]
async fn a_revoked_application_s_keys_are_refused_even_if_a_key_row_escaped() {
    let db = TestDb::new().await;
    let issued = apps::create(&db.pool, "shop", &[Role::Ingest]).await.unwrap();
    // Only the application row revoked (as if a key had been issued past the revocation): the
    // lookup joins the application, so the key still fails.
    sqlx::query("UPDATE applications SET revoked_at = now() WHERE id = $1")
        .bind(issued.application_id)
        .execute(&db.pool)
        .await
        .unwrap();
    let auth = eye_service::auth::Authenticator::new(db.pool.clone(), std::time::Duration::ZERO);
    let bearer = format!("Bearer {}", issued.key);
    let refused = auth.authenticate(Some(&bearer), Role::Ingest).await.unwrap_err();
    assert!(matches!(refused, eye_service::auth::AuthError::Invalid), "{refused}");
    assert_eq!(apps::key_holder(&db.pool, &issued.key).await.unwrap(), None);
}

#[tokio::test]
async fn ensuring_an_application_is_idempotent() {
    let db = TestDb::new().await;
    let id = apps::ensure(&db.pool, "loader").await.unwrap();
    assert_eq!(apps::ensure(&db.pool, "loader").await.unwrap(), id);
    let issued = apps::ensure_and_issue_key(&db.pool, "loader", &[Role::Read]).await.unwrap();
    assert_eq!(issued.application_id, id);
    let fresh = apps::ensure_and_issue_key(&db.pool, "dev", &[Role::Ingest]).await.unwrap();
    assert_ne!(fresh.application_id, id);
    assert!(apps::ensure(&db.pool, " padded").await.is_err());
}

#[tokio::test]
async fn schemas_are_versioned_and_unchanged_puts_add_nothing() {
    let db = TestDb::new().await;
    let v1 = json!({"type": "object", "required": ["path"]});
    let v2 = json!({"type": "object", "required": ["path", "host"]});
    let put = |schema| schemas::put(&db.pool, "page interaction", "pageview", schema);
    assert_eq!(put(&v1).await.unwrap(), Registration::Registered { version: 1 });
    assert_eq!(put(&v1).await.unwrap(), Registration::Unchanged { version: 1 });
    assert_eq!(put(&v2).await.unwrap(), Registration::Registered { version: 2 });
    assert_eq!(put(&v1).await.unwrap(), Registration::Registered { version: 3 }, "back to v1");
    let listed = schemas::list(&db.pool).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].latest_version, 3);

    // The type follows ingest's rules, so every registered type can be sent.
    for (category, name, field) in [(" ", "pageview", "category"), ("page", "", "name")] {
        let error = schemas::put(&db.pool, category, name, &v1).await.unwrap_err();
        assert!(matches!(error, AdminError::Invalid(_)), "{error}");
        assert!(error.to_string().contains(field), "{error}");
    }
    let long = "x".repeat(256);
    assert!(schemas::put(&db.pool, &long, "n", &v1).await.is_err());
    let invalid = schemas::put(&db.pool, "c", "n", &json!({"type": 12})).await.unwrap_err();
    assert!(invalid.to_string().contains("not a valid JSON Schema"), "{invalid}");
}

#[tokio::test]
async fn concurrent_puts_get_consecutive_versions() {
    let db = TestDb::new().await;
    let puts = (0..8).map(|n| {
        let pool = db.pool.clone();
        tokio::spawn(async move {
            let schema = json!({"type": "object", "title": format!("v{n}")});
            schemas::put(&pool, "c", "n", &schema).await.unwrap().version()
        })
    });
    let mut versions = Vec::new();
    for put in puts {
        versions.push(put.await.unwrap());
    }
    versions.sort_unstable();
    assert_eq!(versions, (1..=8).collect::<Vec<_>>());
}

#[tokio::test]
async fn the_examples_register_once() {
    let db = TestDb::new().await;
    let first = schemas::register_examples(&db.pool).await.unwrap();
    assert!(first.iter().all(|(_, _, r)| *r == Registration::Registered { version: 1 }));
    let second = schemas::register_examples(&db.pool).await.unwrap();
    assert!(second.iter().all(|(_, _, r)| *r == Registration::Unchanged { version: 1 }));
}

#[tokio::test]
async fn dead_letter_commands_refuse_empty_selections() {
    let db = TestDb::new().await;
    let none = dead_letters::replay(&db.pool, None, &Selection::Ids(vec![])).await.unwrap_err();
    assert!(none.to_string().contains("--all"), "{none}");
    assert_eq!(dead_letters::replay(&db.pool, None, &Selection::All).await.unwrap(), 0);
    assert!(dead_letters::list(&db.pool, None, 0).await.is_err());
    assert!(dead_letters::list(&db.pool, None, 10).await.unwrap().is_empty());
}
