//! Tests of the IdP adapter against a mock IdP on 127.0.0.1.

use super::*;
use crate::oauth::testing::{MockIdp, TestKey, hmac, now, unsigned};
use serde_json::json;

const CLIENT: &str = "gatehouse-client";
const NONCE: &str = "n-0S6_WzA2Mj";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn idp(flavor: IdpFlavor, key: &TestKey) -> (MockIdp, Idp) {
    let mock = MockIdp::start(&[key]).await;
    let mut s = IdpSettings::new(flavor, &mock.issuer, CLIENT);
    s.client_secret = Some(Secret::new("s3cret:/+".into()));
    let idp = Idp::discover(s, client()).await.unwrap();
    (mock, idp)
}

fn claims(issuer: &str) -> Value {
    json!({
        "iss": issuer, "sub": "user-1", "aud": CLIENT, "nonce": NONCE,
        "iat": now(), "exp": now() + 300, "email": "u1@example.com", "name": "User One",
        "groups": ["sales"], "roles": ["reader"], "tid": "t-1"
    })
}

#[tokio::test]
async fn login_redeems_the_code_and_verifies_the_id_token() {
    let key = TestKey::rsa("r1");
    let (mock, idp) = idp(IdpFlavor::Oidc, &key).await;
    let url = idp.authorization_url("st", NONCE, "ch", "https://gw.example/oauth/callback");
    let parsed = url::Url::parse(&url).unwrap();
    let q: BTreeMap<_, _> = parsed.query_pairs().into_owned().collect();
    assert_eq!(q["p"], "policy", "the endpoint's own query is kept");
    assert_eq!(
        (
            q["response_type"].as_str(),
            q["code_challenge_method"].as_str()
        ),
        ("code", "S256")
    );
    assert_eq!(
        (
            q["state"].as_str(),
            q["nonce"].as_str(),
            q["code_challenge"].as_str()
        ),
        ("st", NONCE, "ch")
    );
    assert_eq!(q["scope"], "openid profile email");
    assert!(!q.contains_key("resource"));

    *mock.state.token_response.lock().unwrap() = (
        200,
        json!({"access_token": "x", "id_token": key.sign(Some("JWT"), &claims(&mock.issuer))}),
    );
    let who = idp
        .redeem("the-code", "the-verifier", "https://gw.example/cb", NONCE)
        .await
        .unwrap();
    assert_eq!(
        (who.subject.as_str(), who.issuer.as_str()),
        ("user-1", mock.issuer.as_str())
    );
    assert_eq!(
        (who.groups.clone(), who.roles.clone()),
        (vec!["sales".to_string()], vec!["reader".to_string()])
    );
    assert_eq!(
        (who.email.as_deref(), who.tenant.as_deref()),
        (Some("u1@example.com"), None)
    );
    assert!(!who.groups_incomplete);
    let requests = mock.state.token_requests.lock().unwrap().clone();
    let (auth, form) = &requests[0];
    assert_eq!(form["code"], "the-code");
    assert_eq!(form["code_verifier"], "the-verifier");
    assert_eq!(form["redirect_uri"], "https://gw.example/cb");
    assert!(!form.contains_key("client_secret"));
    // RFC 6749 §2.3.1: form-encoded before Basic.
    use base64::Engine;
    let expected =
        base64::engine::general_purpose::STANDARD.encode("gatehouse-client:s3cret%3A%2F%2B");
    assert_eq!(auth.as_deref(), Some(format!("Basic {expected}").as_str()));
}

#[tokio::test]
async fn refuses_bad_id_tokens() {
    let key = TestKey::rsa("r1");
    let (mock, idp) = idp(IdpFlavor::Oidc, &key).await;
    let iss = mock.issuer.clone();
    let with = |patch: Value| {
        let mut c = claims(&iss);
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    };
    let ec_under_rsa_kid = TestKey::ec("r1", false);
    let cases: Vec<(String, &str)> = vec![
        (
            key.sign(Some("JWT"), &with(json!({"aud": "someone-else"}))),
            "aud",
        ),
        (
            key.sign(Some("JWT"), &with(json!({"aud": [CLIENT, "other"]}))),
            "azp",
        ),
        (key.sign(Some("JWT"), &with(json!({"azp": "other"}))), "azp"),
        (
            key.sign(Some("JWT"), &with(json!({"nonce": "replayed"}))),
            "nonce",
        ),
        (
            key.sign(Some("JWT"), &with(json!({"nonce": null}))),
            "nonce",
        ),
        (
            key.sign(Some("JWT"), &with(json!({"iss": "https://evil.example"}))),
            "issuer",
        ),
        (
            key.sign(Some("JWT"), &with(json!({"exp": now() - 600}))),
            "expired",
        ),
        (
            key.sign(Some("JWT"), &with(json!({"nbf": now() + 600}))),
            "not valid yet",
        ),
        (
            key.sign(Some("JWT"), &with(json!({"iat": now() + 600}))),
            "future",
        ),
        (key.sign(Some("JWT"), &with(json!({"iat": null}))), "iat"),
        (key.sign(Some("at+jwt"), &claims(&iss)), "type"),
        (unsigned(&claims(&iss)), "alg none"),
        (hmac(&claims(&iss), "r1", b"secret"), "HS256"),
        (ec_under_rsa_kid.sign(None, &claims(&iss)), "algorithm"),
    ];
    for (token, why) in cases {
        let e = idp.verify_id_token(&token, NONCE).await.unwrap_err();
        assert!(e.to_string().contains(why), "{why}: {e}");
        assert!(!e.to_string().contains(&token));
    }
    // A bad signature: the payload of one token with the signature of another.
    let good = key.sign(Some("JWT"), &claims(&iss));
    let forged_payload = key.sign(Some("JWT"), &with(json!({"sub": "admin"})));
    let parts: Vec<&str> = good.split('.').collect();
    let forged: Vec<&str> = forged_payload.split('.').collect();
    let spliced = format!("{}.{}.{}", parts[0], forged[1], parts[2]);
    let e = idp.verify_id_token(&spliced, NONCE).await.unwrap_err();
    assert!(e.to_string().contains("signature"), "{e}");
    assert!(idp.verify_id_token(&good, NONCE).await.is_ok());
}

#[tokio::test]
async fn discovery_checks_the_issuer_and_settings() {
    let key = TestKey::rsa("r1");
    let mock = MockIdp::start(&[&key]).await;
    mock.state.discovery.lock().unwrap()["issuer"] = json!("https://elsewhere.example");
    let e = Idp::discover(
        IdpSettings::new(IdpFlavor::Oidc, &mock.issuer, CLIENT),
        client(),
    )
    .await
    .err()
    .unwrap();
    assert!(matches!(e, IdpError::IssuerMismatch { .. }), "{e}");
    // Entra: no resource parameter, no v1 issuer, templates only with allowed tenants.
    let mut s = IdpSettings::new(
        IdpFlavor::Entra,
        "https://login.microsoftonline.com/t-1/v2.0",
        CLIENT,
    );
    s.extra_authorize_params
        .insert("resource".into(), "api://x".into());
    let e = Idp::discover(s, client()).await.err().unwrap();
    assert!(e.to_string().contains("resource"), "{e}");
    let s = IdpSettings::new(IdpFlavor::Entra, "https://sts.windows.net/t-1/", CLIENT);
    assert!(
        Idp::discover(s, client())
            .await
            .err()
            .unwrap()
            .to_string()
            .contains("v2.0")
    );
    let mut s = IdpSettings::new(IdpFlavor::Okta, &mock.issuer, CLIENT);
    s.extra_authorize_params.insert("state".into(), "x".into());
    assert!(matches!(
        Idp::discover(s, client()).await,
        Err(IdpError::Config(_))
    ));
    let mut s = IdpSettings::new(IdpFlavor::Okta, &mock.issuer, CLIENT);
    s.algorithms = vec![Algorithm::HS256];
    assert!(matches!(
        Idp::discover(s, client()).await,
        Err(IdpError::Config(_))
    ));
    assert!(matches!(
        Idp::discover(
            IdpSettings::new(IdpFlavor::Oidc, "http://idp.example", CLIENT),
            client()
        )
        .await,
        Err(IdpError::Config(_))
    ));
    // Okta/Auth0 audience goes through as an extra parameter.
    mock.state.discovery.lock().unwrap()["issuer"] = json!(mock.issuer);
    let mut s = IdpSettings::new(IdpFlavor::Auth0, &mock.issuer, CLIENT);
    s.extra_authorize_params
        .insert("audience".into(), "https://api.example".into());
    s.scopes = vec!["email".into()];
    let idp = Idp::discover(s, client()).await.unwrap();
    let url = idp.authorization_url("s", "n", "c", "https://gw/cb");
    assert!(
        url.contains("audience=https%3A%2F%2Fapi.example") && url.contains("scope=openid+email"),
        "{url}"
    );
}

#[tokio::test]
async fn entra_multi_tenant_needs_listed_tenants() {
    let key = TestKey::rsa("r1");
    let mock = MockIdp::start(&[&key]).await;
    let template = format!("{}/{{tenantid}}/v2.0", mock.issuer);
    mock.state.discovery.lock().unwrap()["issuer"] = json!(template);
    let mut s = IdpSettings::new(
        IdpFlavor::Entra,
        &format!("{}/organizations/v2.0", mock.issuer),
        CLIENT,
    );
    s.discovery_url = Some(format!("{}/.well-known/openid-configuration", mock.issuer));
    let e = Idp::discover(s.clone(), client()).await.err().unwrap();
    assert!(matches!(e, IdpError::MultiTenant(_)), "{e}");
    s.allowed_tenants = vec!["t-1".into()];
    let idp = Idp::discover(s, client()).await.unwrap();
    let for_tenant = |tid: &str, iss_tid: &str| {
        let mut c = claims(&template.replace("{tenantid}", iss_tid));
        c["tid"] = json!(tid);
        key.sign(Some("JWT"), &c)
    };
    let who = idp
        .verify_id_token(&for_tenant("t-1", "t-1"), NONCE)
        .await
        .unwrap();
    assert_eq!(who.tenant.as_deref(), Some("t-1"));
    assert!(
        idp.verify_id_token(&for_tenant("t-2", "t-2"), NONCE)
            .await
            .is_err()
    );
    assert!(
        idp.verify_id_token(&for_tenant("t-2", "t-1"), NONCE)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn token_endpoint_errors_and_key_rotation() {
    let old = TestKey::rsa("old");
    let (mock, idp) = idp(IdpFlavor::Keycloak, &old).await;
    *mock.state.token_response.lock().unwrap() = (
        400,
        json!({"error": "invalid_grant", "error_description": "code the-code is bad"}),
    );
    let e = idp
        .redeem("the-code", "v", "https://gw/cb", NONCE)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, IdpError::TokenEndpoint { status: 400, error } if error == "invalid_grant"),
        "{e}"
    );
    assert!(!e.to_string().contains("the-code"));
    *mock.state.token_response.lock().unwrap() = (200, json!({"access_token": "x"}));
    assert!(matches!(
        idp.redeem("c", "v", "https://gw/cb", NONCE).await,
        Err(IdpError::NoIdToken)
    ));
    // Keycloak roles come from realm_access.roles; unverified emails are dropped.
    let mut c = claims(&mock.issuer);
    c["realm_access"] = json!({"roles": ["kc-admin"]});
    c["email_verified"] = json!(false);
    let who = idp
        .verify_id_token(&old.sign(None, &c), NONCE)
        .await
        .unwrap();
    assert_eq!((who.roles, who.email), (vec!["kc-admin".to_string()], None));
    assert_eq!(mock.jwks_hits(), 1);
    // The IdP rotates: an unknown kid re-reads the key set once, not on every token.
    let new = TestKey::ec("new", true);
    mock.publish(&[&old, &new]);
    assert!(
        idp.verify_id_token(&new.sign(None, &claims(&mock.issuer)), NONCE)
            .await
            .is_ok()
    );
    assert_eq!(mock.jwks_hits(), 2);
    let forged = TestKey::ec("forged", false);
    for _ in 0..5 {
        assert!(
            idp.verify_id_token(&forged.sign(None, &claims(&mock.issuer)), NONCE)
                .await
                .is_err()
        );
    }
    assert_eq!(mock.jwks_hits(), 2, "no further re-read for 30 s");
}
