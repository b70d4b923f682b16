//! Registration rules, issuing, the whole flow on SQLite, and the rate limiter.

use super::*;
use serde_json::json;

fn policy() -> RegistrationPolicy {
    RegistrationPolicy {
        enabled: true,
        ..RegistrationPolicy::default()
    }
}

fn refused(policy: &RegistrationPolicy, body: Value) -> (&'static str, String) {
    let e = validate_request(policy, &body).unwrap_err();
    (e.error_code(), e.to_string())
}

#[test]
fn oauth_registration_access_needs_enabled_and_the_initial_token() {
    let off = RegistrationPolicy::default();
    let e = check_access(&off, None).unwrap_err();
    assert_eq!((e.error_code(), e.status()), ("access_denied", 403));
    assert!(check_access(&policy(), None).is_ok());

    let guarded = RegistrationPolicy {
        initial_access_token: Some("s3cret-token".into()),
        ..policy()
    };
    let e = check_access(&guarded, None).unwrap_err();
    assert_eq!((e.error_code(), e.status()), ("invalid_token", 401));
    assert!(e.to_string().contains("Authorization: Bearer"));
    let e = check_access(&guarded, Some("Bearer wrong")).unwrap_err();
    assert_eq!(e.to_string(), "the initial access token is not valid");
    assert!(check_access(&guarded, Some("Basic s3cret-token")).is_err());
    assert!(check_access(&guarded, Some("Bearer s3cret-token")).is_ok());
    assert!(check_access(&guarded, Some("bearer s3cret-token")).is_ok());
}

#[test]
fn oauth_registration_metadata_rules() {
    let p = policy();
    let v = validate_request(
        &p,
        &json!({"redirect_uris": ["http://127.0.0.1:4000/cb"], "token_endpoint_auth_method": "none",
                "client_name": "My\u{0}Agent", "unknown_field": {"ignored": true}}),
    )
    .unwrap();
    assert_eq!(v.metadata.token_endpoint_auth_method, AuthMethod::None);
    assert_eq!(v.metadata.client_name.as_deref(), Some("MyAgent"));
    let v = validate_request(&p, &json!({"redirect_uris": ["https://app.example/cb"]})).unwrap();
    assert_eq!(
        v.metadata.token_endpoint_auth_method,
        AuthMethod::ClientSecretBasic,
        "RFC 7591 default"
    );

    let cases = [
        (
            json!({}),
            "invalid_redirect_uri",
            "redirect_uris is required",
        ),
        (
            json!({"redirect_uris": "https://a.example/cb"}),
            "invalid_redirect_uri",
            "redirect_uris is required",
        ),
        (
            json!({"redirect_uris": ["https://a.example/cb#f"]}),
            "invalid_redirect_uri",
            "redirect_uris[0] must not contain a fragment",
        ),
        (
            json!({"redirect_uris": ["https://a.example/cb", "javascript:alert(1)"]}),
            "invalid_redirect_uri",
            "redirect_uris[1] uses the scheme javascript:",
        ),
        (
            json!({"redirect_uris": ["data:text/html,hi"]}),
            "invalid_redirect_uri",
            "scheme data:",
        ),
        (
            json!({"redirect_uris": ["file:///etc/passwd"]}),
            "invalid_redirect_uri",
            "scheme file:",
        ),
        (
            json!({"redirect_uris": ["http://a.example/cb"]}),
            "invalid_redirect_uri",
            "use https://",
        ),
        (
            json!({"redirect_uris": ["https://a.example/cb"], "grant_types": ["implicit"]}),
            "invalid_client_metadata",
            "grant_types contains implicit",
        ),
        (
            json!({"redirect_uris": ["https://a.example/cb"], "grant_types": ["password"]}),
            "invalid_client_metadata",
            "only authorization_code and refresh_token supported",
        ),
        (
            json!({"redirect_uris": ["https://a.example/cb"], "response_types": ["code", "token"]}),
            "invalid_client_metadata",
            "response_types contains token",
        ),
        (
            json!({"redirect_uris": ["https://a.example/cb"], "token_endpoint_auth_method": "private_key_jwt"}),
            "invalid_client_metadata",
            "private_key_jwt is not accepted here; use none or client_secret_basic or client_secret_post",
        ),
        (
            json!({"redirect_uris": ["https://a.example/cb"], "client_name": "n".repeat(201)}),
            "invalid_client_metadata",
            "client_name is longer than 200",
        ),
        (
            json!({"redirect_uris": ["https://a.example/cb"], "client_name": 7}),
            "invalid_client_metadata",
            "client_name must be a string",
        ),
        (
            json!(["https://a.example/cb"]),
            "invalid_client_metadata",
            "must be a JSON object",
        ),
    ];
    for (body, code, text) in cases {
        let (c, t) = refused(&p, body.clone());
        assert_eq!(c, code, "{body}: {t}");
        assert!(t.contains(text), "{body}: {t}");
    }

    let limited = RegistrationPolicy {
        redirect_hosts: vec!["app.example".into()],
        ..policy()
    };
    assert!(
        validate_request(
            &limited,
            &json!({"redirect_uris": ["https://app.example/cb"]})
        )
        .is_ok()
    );
    assert!(validate_request(&limited, &json!({"redirect_uris": ["http://[::1]:9/cb"]})).is_ok());
    let (c, t) = refused(
        &limited,
        json!({"redirect_uris": ["https://evil.example/cb"]}),
    );
    assert_eq!(c, "invalid_redirect_uri");
    assert!(
        t.contains("evil.example, which is not in this gateway's allowed redirect hosts"),
        "{t}"
    );
}

#[test]
fn oauth_registration_issues_ids_and_keeps_only_secret_digests() {
    let p = policy();
    let public = validate_request(
        &p,
        &json!({"redirect_uris": ["http://127.0.0.1/cb"], "token_endpoint_auth_method": "none"}),
    )
    .unwrap();
    let issued = issue(public, None, 1_700_000_000_123);
    let id = issued.record.client_id.clone();
    assert!(id.starts_with("gh_") && id.len() == 3 + 22, "{id}");
    assert_eq!(issued.record.secret_hash, None);
    assert_eq!(issued.response["client_id"], json!(id));
    assert_eq!(issued.response["client_id_issued_at"], json!(1_700_000_000));
    assert!(issued.response.get("client_secret").is_none());
    let stored: ClientMetadata = serde_json::from_str(&issued.record.metadata).unwrap();
    assert_eq!(stored.client_id, id);

    let confidential =
        validate_request(&p, &json!({"redirect_uris": ["https://a.example/cb"]})).unwrap();
    let ip: IpAddr = "192.0.2.9".parse().unwrap();
    let issued = issue(confidential, Some(ip), 0);
    let secret = issued.response["client_secret"].as_str().unwrap();
    assert_eq!(secret.len(), 43);
    assert_eq!(issued.response["client_secret_expires_at"], json!(0));
    assert_eq!(
        issued.response["token_endpoint_auth_method"],
        json!("client_secret_basic")
    );
    let hash = issued.record.secret_hash.as_deref().unwrap();
    assert_ne!(hash, secret);
    assert!(secret_matches(secret, hash));
    assert!(!secret_matches("guess", hash));
    assert_eq!(issued.record.registered_ip.as_deref(), Some("192.0.2.9"));
    assert_ne!(generate_client_id(), generate_client_id());
}

#[tokio::test]
async fn oauth_registration_end_to_end_on_sqlite_with_limits() {
    let store = Store::open("sqlite::memory:", std::path::Path::new("."), 1)
        .await
        .unwrap();
    let p = RegistrationPolicy {
        max_clients: 2,
        ..policy()
    };
    let limiter = RateLimiter::new(2, 100);
    let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
    let body =
        json!({"redirect_uris": ["http://127.0.0.1/cb"], "token_endpoint_auth_method": "none"});
    let first = register(&p, &limiter, &store, a, None, &body)
        .await
        .unwrap();
    let stored = store
        .oauth_client(&first.record.client_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored, first.record);
    // An invalid request still counts against the address.
    let e = register(&p, &limiter, &store, a, None, &json!({}))
        .await
        .unwrap_err();
    assert_eq!(e.error_code(), "invalid_redirect_uri");
    let e = register(&p, &limiter, &store, a, None, &body)
        .await
        .unwrap_err();
    assert!(
        matches!(e, RegistrationError::RateLimited(r) if r.secs() > 0),
        "{e}"
    );
    assert_eq!(e.status(), 429);
    register(&p, &limiter, &store, b, None, &body)
        .await
        .unwrap();
    let e = register(&p, &limiter, &store, b, None, &body)
        .await
        .unwrap_err();
    assert!(matches!(e, RegistrationError::TooManyClients), "{e}");
    assert_eq!(store.count_oauth_clients().await.unwrap(), 2);
}

#[test]
fn oauth_rate_limiter_per_address_global_and_sliding() {
    let hour = Duration::from_secs(3600);
    let limiter = RateLimiter::with_window(3, 5, hour, 100);
    let t0 = Instant::now();
    let a: IpAddr = "198.51.100.1".parse().unwrap();
    let b: IpAddr = "198.51.100.2".parse().unwrap();
    for _ in 0..3 {
        limiter.check_at(a, t0).unwrap();
    }
    let wait = limiter.check_at(a, t0).unwrap_err();
    // Three in this window: the next fits once two thirds of it have faded after it ends.
    assert!((4790..=4810).contains(&wait.0.as_secs()), "{wait:?}");
    limiter.check_at(b, t0).unwrap();
    limiter.check_at(b, t0).unwrap();
    let wait = limiter.check_at(b, t0).unwrap_err();
    assert!(
        wait.0 > Duration::from_secs(3600),
        "global limit of 5 reached: {wait:?}"
    );

    // Half way through the next window, the previous counts half: a has 1.5 of 3.
    let later = t0 + hour + hour / 2;
    limiter.check_at(a, later).unwrap();
    assert!(limiter.check_at(a, later).is_err());
    // Two windows later everything is forgotten.
    let much_later = t0 + hour * 3;
    for _ in 0..3 {
        limiter.check_at(a, much_later).unwrap();
    }
    assert_eq!(RetryAfter(Duration::from_millis(1)).secs(), 1);
    assert_eq!(RetryAfter(Duration::from_millis(2001)).secs(), 3);
}

#[test]
fn oauth_rate_limiter_groups_ipv6_by_64_and_bounds_memory() {
    let limiter = RateLimiter::with_window(1, 1000, Duration::from_secs(60), 4);
    let t = Instant::now();
    limiter
        .check_at("2001:db8:1:2::1".parse().unwrap(), t)
        .unwrap();
    assert!(
        limiter
            .check_at("2001:db8:1:2:ffff::9".parse().unwrap(), t)
            .is_err()
    );
    limiter
        .check_at("2001:db8:1:3::1".parse().unwrap(), t)
        .unwrap();
    // IPv4-mapped IPv6 counts as the IPv4 address.
    limiter.check_at("203.0.113.5".parse().unwrap(), t).unwrap();
    assert!(
        limiter
            .check_at("::ffff:203.0.113.5".parse().unwrap(), t)
            .is_err()
    );
    for i in 0..50u8 {
        let _ = limiter.check_at(IpAddr::from([10, 0, 0, i]), t);
        assert!(limiter.tracked() <= 4);
    }
    let none = RateLimiter::with_window(0, 10, Duration::from_secs(60), 4);
    assert_eq!(
        none.check_at("10.0.0.1".parse().unwrap(), t),
        Err(RetryAfter(Duration::from_secs(60)))
    );
}
