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
        trace_id: Some(format!("{at_ms:032x}")),
        tenant: Some(if subject == "bob" { "beta" } else { "acme" }.into()),
        guardrails: (subject == "bob")
            .then(|| r#"[{"rule":"email","action":"flag","count":1}]"#.into()),
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
    let beta = AuditFilter {
        tenant: Some("beta".into()),
        limit: 100,
        ..Default::default()
    };
    let got_beta = store.query_audit(&beta).await.unwrap();
    assert_eq!(
        got_beta,
        [batch[2].clone()],
        "a tenant's partition holds only its records"
    );
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
    let page2 = AuditFilter {
        until_ms: Some(now),
        limit: 1,
        offset: 1,
        ..Default::default()
    };
    let got = store.query_audit(&page2).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].subject.as_deref(),
        Some("alice"),
        "the second newest"
    );
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

/// A fresh PostgreSQL schema for one test (the store's tables land there), dropped at the end.
struct PgSchema {
    admin: sqlx::PgPool,
    name: String,
}

impl PgSchema {
    /// `prefix` plus digits only: the name is put into DDL as is.
    async fn create(prefix: &str) -> PgSchema {
        let name = format!("{prefix}_{}_{}", std::process::id(), now_secs());
        let admin = sqlx::PgPool::connect(POSTGRES_URL)
            .await
            .unwrap_or_else(|e| {
                panic!("PostgreSQL must run on 127.0.0.1:5432 with a database `test` ({e})")
            });
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
            .execute(&admin)
            .await
            .unwrap();
        PgSchema { admin, name }
    }

    fn options(&self) -> PgConnectOptions {
        PgConnectOptions::from_str(POSTGRES_URL)
            .unwrap()
            .options([("search_path", self.name.as_str())])
    }

    async fn drop(self) {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA {} CASCADE",
            self.name
        )))
        .execute(&self.admin)
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn postgres_store_migrates_persists_and_manages_api_keys() {
    let schema = PgSchema::create("gh_test").await;
    let store = Store::open_postgres(schema.options(), 4, "test")
        .await
        .unwrap();
    assert_eq!(store.kind(), "postgres");
    exercise_api_keys(&store).await;
    store.close().await;
    let again = Store::open_postgres(schema.options(), 4, "test")
        .await
        .unwrap();
    assert_eq!(again.list_api_keys().await.unwrap().len(), 2);
    again.close().await;
    schema.drop().await;
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

/// Users' connections to upstreams, and their tokens sealed at rest.
mod upstream_connections {
    use gatehouse::config::Secret;
    use gatehouse::keyring::Keyring;
    use gatehouse::store::{Store, StoredConnection};

    const ACCESS_TOKEN: &str = "gho_PlainAccessToken4a7f2c9e1d";
    const REFRESH_TOKEN: &str = "ghr_PlainRefreshToken8b3e6d0f5a";
    const SUBJECT: &str = "alice.visible@example.com";

    fn connection(binding: &str, upstream: &str, at_ms: i64) -> StoredConnection {
        StoredConnection {
            binding: binding.into(),
            upstream: upstream.into(),
            subject: format!("subject-of-{binding}"),
            issuer: "https://idp.example.com".into(),
            key_id: "k1".into(),
            sealed: format!("v1.k1.nonce-{binding}-{upstream}.ciphertext"),
            scopes: "repo read:user".into(),
            expires_at_ms: Some(at_ms + 3_600_000),
            created_at_ms: at_ms,
            updated_at_ms: at_ms,
        }
    }

    fn sealer(keys: &[(&str, u8)]) -> Keyring {
        use base64::Engine;
        let keys: Vec<(String, Secret)> = keys
            .iter()
            .map(|(id, byte)| {
                let text = base64::engine::general_purpose::STANDARD.encode([*byte; 32]);
                ((*id).to_owned(), Secret::new(text))
            })
            .collect();
        Keyring::new(&keys).unwrap()
    }

    /// What the sealed value is bound to: its row.
    fn aad(binding: &str, upstream: &str) -> Vec<u8> {
        [binding.as_bytes(), b"\0", upstream.as_bytes()].concat()
    }

    fn token_set() -> String {
        format!(r#"{{"access_token":"{ACCESS_TOKEN}","refresh_token":"{REFRESH_TOKEN}"}}"#)
    }

    /// Put, get, replace, list and delete, whatever the database.
    async fn exercise_connections(store: &Store) {
        assert!(store.connections("u1").await.unwrap().is_empty());
        assert!(store.connection("u1", "github").await.unwrap().is_none());

        let github = connection("u1", "github", 1_000);
        let mut gitlab = connection("u1", "gitlab", 2_000);
        gitlab.expires_at_ms = None;
        gitlab.scopes = String::new();
        let other_user = connection("u2", "github", 3_000);
        // Inserted out of order: the list is ordered by upstream, not by insertion.
        store.put_connection(&gitlab).await.unwrap();
        store.put_connection(&github).await.unwrap();
        store.put_connection(&other_user).await.unwrap();

        assert_eq!(
            store.connection("u1", "github").await.unwrap().as_ref(),
            Some(&github),
            "a connection comes back exactly as written"
        );
        assert_eq!(
            store.connection("u1", "gitlab").await.unwrap().as_ref(),
            Some(&gitlab),
            "no expiry and no scopes survive the round trip"
        );
        assert!(store.connection("u1", "jira").await.unwrap().is_none());
        assert!(store.connection("u3", "github").await.unwrap().is_none());
        assert_eq!(store.all_connections(100).await.unwrap().len(), 3);
        assert_eq!(store.all_connections(2).await.unwrap().len(), 2, "capped");

        // Replacing keeps the original creation time and takes everything else.
        let replacement = StoredConnection {
            subject: "renamed".into(),
            issuer: "https://idp2.example.com".into(),
            key_id: "k2".into(),
            sealed: "v1.k2.other-nonce.other-ciphertext".into(),
            scopes: "repo".into(),
            expires_at_ms: None,
            created_at_ms: 9_000,
            updated_at_ms: 9_500,
            ..github.clone()
        };
        store.put_connection(&replacement).await.unwrap();
        let replaced = store.connection("u1", "github").await.unwrap().unwrap();
        assert_eq!(
            replaced,
            StoredConnection {
                created_at_ms: 1_000,
                ..replacement.clone()
            }
        );

        // A user's list holds only that user's rows, ordered by upstream.
        let listed = store.connections("u1").await.unwrap();
        assert_eq!(
            listed
                .iter()
                .map(|c| c.upstream.as_str())
                .collect::<Vec<_>>(),
            ["github", "gitlab"]
        );
        assert!(listed.iter().all(|c| c.binding == "u1"));
        assert_eq!(
            store.connections("u2").await.unwrap(),
            std::slice::from_ref(&other_user)
        );
        assert!(store.connections("u3").await.unwrap().is_empty());
        // Hostile input is data, not SQL.
        assert!(store.connections("' OR '1'='1").await.unwrap().is_empty());

        assert!(store.delete_connection("u1", "github").await.unwrap());
        assert!(
            !store.delete_connection("u1", "github").await.unwrap(),
            "deleting twice reports nothing to do"
        );
        assert!(!store.delete_connection("u3", "github").await.unwrap());
        assert!(store.connection("u1", "github").await.unwrap().is_none());
        assert_eq!(store.connections("u1").await.unwrap(), [gitlab.clone()]);
        assert_eq!(
            store.connection("u2", "github").await.unwrap(),
            Some(other_user),
            "another user's connection to the same upstream is untouched"
        );
    }

    /// Seals a token set, stores it, and opens what the store gives back.
    async fn store_sealed_tokens(store: &Store, sealer: &Keyring) {
        let row_aad = aad("u9", "github");
        let sealed = sealer.seal(token_set().as_bytes(), &row_aad);
        let now = gatehouse::audit::now_ms();
        let c = StoredConnection {
            subject: SUBJECT.into(),
            key_id: sealer.current_key_id().to_owned(),
            sealed,
            ..connection("u9", "github", now)
        };
        store.put_connection(&c).await.unwrap();
        let back = store.connection("u9", "github").await.unwrap().unwrap();
        assert_eq!(back.key_id, "k1");
        assert!(!back.sealed.contains(ACCESS_TOKEN));
        assert!(!format!("{back:?}").contains(&back.sealed));
        assert_eq!(
            sealer.open(&back.sealed, &row_aad).unwrap(),
            token_set().as_bytes()
        );
        // Bound to its row: it does not open as another user's.
        assert!(sealer.open(&back.sealed, &aad("u8", "github")).is_err());
    }

    fn contains(haystack: &[u8], needle: &str) -> bool {
        haystack
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
    }

    /// The database file and any journal beside it, as bytes.
    fn database_bytes(dir: &std::path::Path) -> Vec<u8> {
        let mut bytes = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with("gatehouse.db") {
                bytes.extend(std::fs::read(&path).unwrap());
            }
        }
        bytes
    }

    #[tokio::test]
    async fn sqlite_file_store_keeps_connections_and_never_a_plain_token() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open("sqlite://gatehouse.db", dir.path(), 4)
            .await
            .unwrap();
        exercise_connections(&store).await;
        let sealer = sealer(&[("k1", 1)]);
        store_sealed_tokens(&store, &sealer).await;
        // Before closing (the rows may still be in the write-ahead log) and after.
        for closed in [false, true] {
            if closed {
                store.close().await;
            }
            let bytes = database_bytes(dir.path());
            assert!(
                contains(&bytes, SUBJECT),
                "the search does find what is stored in clear (closed: {closed})"
            );
            assert!(!contains(&bytes, ACCESS_TOKEN), "closed: {closed}");
            assert!(!contains(&bytes, REFRESH_TOKEN), "closed: {closed}");
            assert!(!contains(&bytes, "PlainAccessToken"), "closed: {closed}");
        }

        // After a restart and a key rotation, the value still opens.
        let again = Store::open("sqlite://gatehouse.db", dir.path(), 4)
            .await
            .unwrap();
        let row = again.connection("u9", "github").await.unwrap().unwrap();
        let rotated = sealer_rotated();
        assert_eq!(
            rotated.open(&row.sealed, &aad("u9", "github")).unwrap(),
            token_set().as_bytes()
        );
        assert_ne!(row.key_id, rotated.current_key_id(), "due for re-sealing");
        again.close().await;
    }

    fn sealer_rotated() -> Keyring {
        sealer(&[("k2", 2), ("k1", 1)])
    }

    #[tokio::test]
    async fn sqlite_memory_store_keeps_connections() {
        let store = Store::open("sqlite::memory:", std::path::Path::new("."), 8)
            .await
            .unwrap();
        exercise_connections(&store).await;
        store_sealed_tokens(&store, &sealer(&[("k1", 1)])).await;
    }

    #[tokio::test]
    async fn postgres_store_keeps_connections() {
        let schema = super::PgSchema::create("gh_test_conn").await;
        let store = Store::open_postgres(schema.options(), 4, "test")
            .await
            .unwrap();
        exercise_connections(&store).await;
        store_sealed_tokens(&store, &sealer(&[("k1", 1)])).await;
        store.close().await;
        // The rows persist across a reopen.
        let again = Store::open_postgres(schema.options(), 4, "test")
            .await
            .unwrap();
        let row = again.connection("u9", "github").await.unwrap().unwrap();
        assert_eq!(
            sealer_rotated()
                .open(&row.sealed, &aad("u9", "github"))
                .unwrap(),
            token_set().as_bytes()
        );
        assert_eq!(again.connections("u1").await.unwrap().len(), 1);
        again.close().await;
        schema.drop().await;
    }
}
