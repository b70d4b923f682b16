//! Looking clients up in each source, and what each kind of client allows.

use super::*;
use crate::oauth::cimd::CimdSettings;
use crate::oauth::registration::{RegistrationPolicy, hash_secret, issue, validate_request};
use crate::store::OAuthClientRecord;
use serde_json::json;

fn pre(id: &str, secret: Option<&str>) -> PreRegistered {
    PreRegistered {
        client_id: id.into(),
        redirect_uris: vec![
            "https://ide.example/cb".into(),
            "http://127.0.0.1/cb".into(),
        ],
        client_name: Some("IDE".into()),
        secret_hash: secret.map(hash_secret),
    }
}

async fn memory_store() -> Store {
    Store::open("sqlite::memory:", std::path::Path::new("."), 1)
        .await
        .unwrap()
}

/// Serves one metadata document at /client.json on 127.0.0.1; returns its URL.
async fn serve_document() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://127.0.0.1:{}/client.json",
        listener.local_addr().unwrap().port()
    );
    let doc = json!({"client_id": url, "client_name": "Doc Client",
                     "redirect_uris": ["http://127.0.0.1:8000/callback"]});
    let app = axum::Router::new().route(
        "/client.json",
        axum::routing::get(move || async move { axum::Json(doc) }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

#[tokio::test]
async fn oauth_clients_pre_registered_come_first_and_check_redirects_and_secrets() {
    let registry = ClientRegistry::new(
        vec![
            pre("ide", None),
            pre("https://ide.example/client.json", Some("s3cret")),
        ],
        None,
        None,
    );
    let c = registry.find("ide").await.unwrap();
    assert_eq!(
        (c.client_id(), c.display_name(), c.kind()),
        ("ide", "IDE", "pre-registered")
    );
    assert!(c.is_public() && !c.verify_secret("anything"));
    assert_eq!(c.auth_method(), AuthMethod::None);
    assert!(c.redirect_uri_allowed("https://ide.example/cb"));
    assert!(!c.redirect_uri_allowed("https://ide.example/cb2"));
    assert!(!c.redirect_uri_allowed("https://ide.example/cb?x=1"));
    assert!(
        c.redirect_uri_allowed("http://127.0.0.1:49152/cb"),
        "any loopback port"
    );
    assert!(!c.redirect_uri_allowed("http://localhost:49152/cb"));

    // A configured client wins even when its id is a URL and documents are off.
    let c = registry
        .find("https://ide.example/client.json")
        .await
        .unwrap();
    assert!(!c.is_public());
    assert!(c.verify_secret("s3cret") && !c.verify_secret("s3cre"));
    assert_eq!(c.auth_method(), AuthMethod::ClientSecretBasic);

    let e = registry.find("nobody").await.unwrap_err();
    assert_eq!(
        (e.error_code(), e.to_string().as_str()),
        ("invalid_client", "unknown client_id nobody")
    );
    let e = registry
        .find("https://other.example/c.json")
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::MetadataDocumentsDisabled), "{e}");
    assert_eq!(e.error_code(), "invalid_client");
    let e = registry.find(&"x".repeat(3000)).await.unwrap_err();
    assert!(matches!(e, ClientError::TooLong));
    let e = registry.find("evil\"\\\n").await.unwrap_err().to_string();
    assert_eq!(e, "unknown client_id evil???");
}

#[tokio::test]
async fn oauth_clients_metadata_documents_are_public_clients() {
    let url = serve_document().await;
    let test_mode = CimdSettings {
        allow_private_addresses: true,
        ..CimdSettings::default()
    };
    let registry = ClientRegistry::new(vec![], Some(CimdFetcher::new(test_mode).unwrap()), None);
    let c = registry.find(&url).await.unwrap();
    assert_eq!(
        (c.kind(), c.display_name()),
        ("metadata-document", "Doc Client")
    );
    assert!(c.is_public() && !c.verify_secret(""));
    assert!(c.redirect_uri_allowed("http://127.0.0.1:8000/callback"));
    assert!(c.redirect_uri_allowed("http://127.0.0.1:9999/callback"));
    assert!(!c.redirect_uri_allowed("https://evil.example/callback"));

    // Outside test mode, plain http ids are refused with the reason, without a fetch.
    let strict = ClientRegistry::new(
        vec![],
        Some(CimdFetcher::new(CimdSettings::default()).unwrap()),
        None,
    );
    let e = strict
        .find("http://app.example/client.json")
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::Cimd(CimdError::NotHttps)), "{e}");
    assert_eq!(e.error_code(), "invalid_client");
    let e = strict.find("https://127.0.0.1/c.json").await.unwrap_err();
    assert!(e.to_string().contains("public addresses"), "{e}");
}

#[tokio::test]
async fn oauth_clients_dynamic_ones_come_from_the_store_unless_revoked() {
    let store = memory_store().await;
    let body = json!({"redirect_uris": ["https://app.example/cb"], "client_name": "Agent"});
    let issued = issue(
        validate_request(&RegistrationPolicy::default(), &body).unwrap(),
        None,
        1,
    );
    store.insert_oauth_client(&issued.record).await.unwrap();
    let id = issued.record.client_id.clone();
    let secret = issued.response["client_secret"]
        .as_str()
        .unwrap()
        .to_owned();

    let registry = ClientRegistry::new(vec![], None, Some(store.clone()));
    let c = registry.find(&id).await.unwrap();
    assert_eq!(
        (c.kind(), c.display_name(), c.client_id()),
        ("dynamic", "Agent", id.as_str())
    );
    assert!(!c.is_public() && c.verify_secret(&secret) && !c.verify_secret("no"));
    assert_eq!(c.auth_method(), AuthMethod::ClientSecretBasic);
    assert!(c.redirect_uri_allowed("https://app.example/cb"));
    assert!(!c.redirect_uri_allowed("https://app.example/cb/"));

    registry.mark_used(&c).await.unwrap();
    let used = store.oauth_client(&id).await.unwrap().unwrap().last_used_ms;
    assert!(used.is_some());
    // Within the hour, a client read after its last use is not written again.
    let again = registry.find(&id).await.unwrap();
    store.touch_oauth_client(&id, 5).await.unwrap();
    let RegisteredClient::Dynamic(d) = &again else {
        panic!()
    };
    assert_eq!(d.last_used_ms, used);
    registry.mark_used(&again).await.unwrap();
    assert_eq!(
        store.oauth_client(&id).await.unwrap().unwrap().last_used_ms,
        Some(5)
    );

    assert!(store.revoke_oauth_client(&id, 10).await.unwrap());
    let e = registry.find(&id).await.unwrap_err();
    assert!(matches!(e, ClientError::Revoked(_)), "{e}");
    assert_eq!(e.error_code(), "invalid_client");

    store
        .insert_oauth_client(&OAuthClientRecord {
            client_id: "gh_broken".into(),
            metadata: "{not json".into(),
            secret_hash: None,
            registered_ip: None,
            created_at_ms: 0,
            last_used_ms: None,
            revoked_at_ms: None,
        })
        .await
        .unwrap();
    let e = registry.find("gh_broken").await.unwrap_err();
    assert_eq!(e.error_code(), "server_error", "{e}");
    assert!(matches!(
        registry.find("gh_nobody").await,
        Err(ClientError::Unknown(_))
    ));
}
