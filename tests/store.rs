//! The same store tests on SQLite and on PostgreSQL (127.0.0.1:5432, database `test`, a fresh
//! schema per test so that runs never see each other's rows).

use gatehouse::store::{AuditFilter, AuditRecord, NewApiKey, Store, now_secs};
use sqlx::postgres::PgConnectOptions;
use std::str::FromStr;

const POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

fn key(id: &str, subject: &str) -> NewApiKey {
    NewApiKey {
        id: id.into(),
        digest: format!("digest-of-{id}"),
        subject: subject.into(),
        scopes: vec!["mcp:tools".into(), "crm:read".into()],
        groups: vec!["ci".into()],
        servers: vec!["/mcp".into()],
        description: "test key".into(),
        expires_at: Some(now_secs() + 3600),
    }
}

/// Everything the API key table must do, whatever the database.
async fn exercise_api_keys(store: &Store) {
    assert!(store.list_api_keys().await.unwrap().is_empty());
    store
        .insert_api_key(&key("aaaaaaaaaaaa", "alice"))
        .await
        .unwrap();
    let mut never = key("bbbbbbbbbbbb", "bob");
    never.expires_at = None;
    never.scopes.clear();
    store.insert_api_key(&never).await.unwrap();

    let found = store
        .find_api_key("aaaaaaaaaaaa")
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(found.subject, "alice");
    assert_eq!(found.digest, "digest-of-aaaaaaaaaaaa");
    assert_eq!(found.scopes, ["mcp:tools", "crm:read"]);
    assert_eq!(found.groups, ["ci"]);
    assert_eq!(found.servers, ["/mcp"]);
    assert!(found.revoked_at.is_none());
    assert!((found.created_at - now_secs()).abs() < 60);
    let bob = store.find_api_key("bbbbbbbbbbbb").await.unwrap().unwrap();
    assert_eq!((bob.expires_at, bob.scopes.len()), (None, 0));
    assert!(store.find_api_key("cccccccccccc").await.unwrap().is_none());

    // Ids are unique.
    assert!(
        store
            .insert_api_key(&key("aaaaaaaaaaaa", "mallory"))
            .await
            .is_err()
    );
    assert_eq!(
        store
            .find_api_key("aaaaaaaaaaaa")
            .await
            .unwrap()
            .unwrap()
            .subject,
        "alice"
    );

    assert_eq!(store.list_api_keys().await.unwrap().len(), 2);
    assert!(store.revoke_api_key("aaaaaaaaaaaa").await.unwrap());
    assert!(
        !store.revoke_api_key("aaaaaaaaaaaa").await.unwrap(),
        "revoking twice reports nothing to do"
    );
    assert!(!store.revoke_api_key("nonexistent00").await.unwrap());
    assert!(
        store
            .find_api_key("aaaaaaaaaaaa")
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_some()
    );
    // Hostile input is data, not SQL.
    assert!(store.find_api_key("' OR '1'='1").await.unwrap().is_none());
    exercise_audit(store).await;
}

/// Audit records: batch insert, filters, newest first, retention.
async fn exercise_audit(store: &Store) {
    let record = |at_ms: i64, subject: &str, outcome: &str| AuditRecord {
        at_ms,
        request_id: format!("r{at_ms}"),
        server: "main".into(),
        upstream: Some("crm".into()),
        method: "tools/call".into(),
        target: Some("crm__echo".into()),
        subject: Some(subject.into()),
        issuer: Some("https://idp".into()),
        client_id: None,
        decision: "allow".into(),
        rule: Some("r1".into()),
        outcome: outcome.into(),
        error_code: (outcome == "error").then_some(-32602),
        latency_us: 1200,
        bytes_in: 80,
        bytes_out: 120,
        arguments: Some(r#"{"text":"x"}"#.into()),
    };
    let now = gatehouse::audit::now_ms();
    let batch = vec![
        record(now - 10 * 86_400_000, "old", "ok"),
        record(now - 2000, "alice", "ok"),
        record(now - 1000, "bob", "error"),
    ];
    store.insert_audit(&batch).await.unwrap();
    let all = AuditFilter {
        limit: 100,
        ..Default::default()
    };
    let got = store.query_audit(&all).await.unwrap();
    assert_eq!(
        got.iter()
            .map(|r| r.subject.clone().unwrap())
            .collect::<Vec<_>>(),
        ["bob", "alice", "old"]
    );
    assert_eq!(got[0], batch[2], "a record comes back exactly as written");
    let errors = AuditFilter {
        outcome: Some("error".into()),
        limit: 100,
        ..Default::default()
    };
    assert_eq!(store.query_audit(&errors).await.unwrap().len(), 1);
    let recent = AuditFilter {
        since_ms: now - 60_000,
        subject: Some("alice".into()),
        limit: 100,
        ..Default::default()
    };
    assert_eq!(store.query_audit(&recent).await.unwrap().len(), 1);
    assert_eq!(
        store.delete_audit_before(now - 86_400_000).await.unwrap(),
        1,
        "retention removes only the old record"
    );
    assert_eq!(store.query_audit(&all).await.unwrap().len(), 2);
}

#[tokio::test]
async fn sqlite_file_store_migrates_persists_and_manages_api_keys() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open("sqlite://state/gatehouse.db", dir.path(), 4)
        .await
        .err()
        .map(|e| e.to_string());
    // A missing folder is a clear error, not a panic.
    assert!(
        store.as_deref().is_some_and(|e| e.contains("cannot open")),
        "{store:?}"
    );
    let store = Store::open("sqlite://gatehouse.db", dir.path(), 4)
        .await
        .unwrap();
    assert_eq!(store.kind(), "sqlite");
    exercise_api_keys(&store).await;
    store.close().await;
    // Reopening runs the migrations again without harm and keeps the rows.
    let again = Store::open("sqlite://gatehouse.db", dir.path(), 4)
        .await
        .unwrap();
    assert_eq!(again.list_api_keys().await.unwrap().len(), 2);
    again.close().await;
}

#[tokio::test]
async fn sqlite_memory_store_works_with_its_single_connection() {
    let store = Store::open("sqlite::memory:", std::path::Path::new("."), 8)
        .await
        .unwrap();
    exercise_api_keys(&store).await;
}

#[tokio::test]
async fn postgres_store_migrates_persists_and_manages_api_keys() {
    // Digits only: the name is put into DDL as is.
    let schema = format!("gh_test_{}_{}", std::process::id(), now_secs());
    let admin = sqlx::PgPool::connect(POSTGRES_URL)
        .await
        .unwrap_or_else(|e| {
            panic!("PostgreSQL must run on 127.0.0.1:5432 with a database `test` ({e})")
        });
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&admin)
        .await
        .unwrap();
    let options = || {
        PgConnectOptions::from_str(POSTGRES_URL)
            .unwrap()
            .options([("search_path", schema.as_str())])
    };
    let store = Store::open_postgres(options(), 4, "test").await.unwrap();
    assert_eq!(store.kind(), "postgres");
    exercise_api_keys(&store).await;
    store.close().await;
    let again = Store::open_postgres(options(), 4, "test").await.unwrap();
    assert_eq!(again.list_api_keys().await.unwrap().len(), 2);
    again.close().await;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&admin)
        .await
        .unwrap();
}

#[tokio::test]
async fn bad_store_urls_are_explained_without_their_password() {
    let e = Store::open(
        "mysql://root:hunter2@127.0.0.1/x",
        std::path::Path::new("."),
        1,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("expected sqlite://PATH or postgres://"), "{e}");
    assert!(!e.contains("hunter2"), "{e}");
    let e = Store::open(
        "postgres://postgres:hunter2@127.0.0.1:1/test",
        std::path::Path::new("."),
        1,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("cannot open") && !e.contains("hunter2"), "{e}");
}
