//! The key-set cache against a mock IdP on loopback: the refetch throttle, the cap on keys
//! kept, and discovery.

use super::*;
use crate::oauth::testing::{MockIdp, TestKey};
use serde_json::json;

fn timing(refetch_interval: Duration) -> JwksTiming {
    JwksTiming {
        refetch_interval,
        max_age: Duration::from_secs(3600),
        stale_window: Duration::ZERO,
    }
}

fn cache(mock: &MockIdp, refetch_interval: Duration) -> Arc<JwksCache> {
    let source = JwksSource::Uri(format!("{}/jwks", mock.issuer));
    Arc::new(JwksCache::new(
        "idp",
        &mock.issuer,
        source,
        timing(refetch_interval),
        reqwest::Client::new(),
    ))
}

#[tokio::test]
async fn unknown_kids_refetch_at_most_once_per_interval() {
    let old = TestKey::ec("old", false);
    let mock = MockIdp::start(&[&old]).await;
    let keys = cache(&mock, Duration::from_millis(400));
    assert!(keys.key_for(Some("old"), Algorithm::ES256).await.is_ok());
    assert_eq!(mock.jwks_hits(), 1);
    // Forged kids: one refetch, then none until the interval has passed.
    for _ in 0..5 {
        assert_eq!(
            keys.key_for(Some("forged"), Algorithm::ES256).await.err(),
            Some(JwksError::Unknown)
        );
    }
    assert_eq!(mock.jwks_hits(), 2);
    // The IdP rotates meanwhile: its new key is found once the interval is over, not before.
    let new = TestKey::ec("new", true);
    mock.publish(&[&old, &new]);
    assert!(keys.key_for(Some("new"), Algorithm::ES256).await.is_err());
    assert_eq!(mock.jwks_hits(), 2);
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(keys.key_for(Some("new"), Algorithm::ES256).await.is_ok());
    assert_eq!(mock.jwks_hits(), 3);
    // Known kids never refetch, and a key of the wrong type is an error, not a refetch.
    for _ in 0..5 {
        assert!(keys.key_for(Some("old"), Algorithm::ES256).await.is_ok());
    }
    assert!(matches!(
        keys.key_for(Some("old"), Algorithm::RS256).await.err(),
        Some(JwksError::WrongType { kid }) if kid == "old"
    ));
    assert_eq!(mock.jwks_hits(), 3);
    // A replaced key (a failed signature) is throttled the same way.
    let found = keys.key_for(Some("old"), Algorithm::ES256).await.unwrap();
    assert!(
        keys.replaced_key(Some("old"), Algorithm::ES256, &found)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(mock.jwks_hits(), 3);
}

#[tokio::test]
async fn at_most_max_keys_are_kept() {
    let key = TestKey::ec("k", false);
    let mock = MockIdp::start(&[]).await;
    // Keys the gateway cannot use come first and do not count.
    let mut published = vec![
        json!({"kty": "oct", "kid": "sym", "k": "c2VjcmV0"}),
        json!({"kty": "unknown", "kid": "odd"}),
    ];
    for i in 0..MAX_KEYS + 10 {
        let mut jwk = key.public_jwk();
        jwk["kid"] = json!(format!("k{i}"));
        published.push(jwk);
    }
    *mock.state.jwks.lock().unwrap() = json!({ "keys": published });
    let keys = cache(&mock, Duration::from_secs(30));
    for kept in ["k0", &format!("k{}", MAX_KEYS - 1)] {
        assert!(
            keys.key_for(Some(kept), Algorithm::ES256).await.is_ok(),
            "{kept}"
        );
    }
    assert_eq!(keys.current().unwrap().keys.len(), MAX_KEYS);
    for dropped in [format!("k{MAX_KEYS}"), format!("k{}", MAX_KEYS + 9)] {
        assert_eq!(
            keys.key_for(Some(&dropped), Algorithm::ES256).await.err(),
            Some(JwksError::Unknown),
            "{dropped}"
        );
    }
    // The first unknown kid refetched (and found the same capped set); the second did not.
    assert_eq!(mock.jwks_hits(), 2);
}

#[tokio::test]
async fn discovery_finds_the_key_set_and_checks_the_issuer() {
    let key = TestKey::ec("a", false);
    let mock = MockIdp::start(&[&key]).await;
    let discover = |issuer: &str| JwksSource::Discover {
        issuer: issuer.to_owned(),
        metadata_urls: vec![format!("{}/.well-known/openid-configuration", mock.issuer)],
        accept_uri: Some(|u: &str| u.starts_with("http://127.0.0.1")),
    };
    let http = reqwest::Client::new();
    let good = Arc::new(JwksCache::new(
        "idp",
        &mock.issuer,
        discover(&mock.issuer),
        timing(Duration::from_secs(30)),
        http.clone(),
    ));
    assert!(good.key_for(Some("a"), Algorithm::ES256).await.is_ok());
    // Metadata naming another issuer is not used, and no key set is read for it.
    let other = Arc::new(JwksCache::new(
        "idp",
        "https://other.example",
        discover("https://other.example"),
        timing(Duration::from_secs(30)),
        http,
    ));
    for _ in 0..3 {
        match other.key_for(Some("a"), Algorithm::ES256).await {
            Err(JwksError::Unavailable(m)) => assert!(m.contains("names issuer"), "{m}"),
            other => panic!("{:?}", other.err()),
        }
    }
    assert_eq!(mock.jwks_hits(), 1);
}
