//! Unit tests of the consent service: the sign-in step against a mock IdP (each refusal of
//! the consent login's ID token), cookies, and the small helpers.

use super::*;
use crate::oauth::testing::{MockIdp, TestKey, now, unsigned};
use http::header;
use serde_json::{Value, json};

const CLIENT: &str = "gatehouse-consent";

async fn service(idp: &MockIdp, public_url: &str) -> ConsentService {
    let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let yaml = format!(
        "login: {{ issuer: \"{}\", client_id: {CLIENT}, client_secret: s3cret }}\nkeys: [{{ id: k1, key: \"{key}\" }}]\n",
        idp.issuer
    );
    let cfg: ConsentConfig = serde_saphyr::from_str(&yaml).unwrap();
    let store = crate::oauth::keys::tests::memory_store().await;
    let svc = ConsentService::new(&cfg, public_url, store).unwrap();
    let client: config::OAuthClient = serde_saphyr::from_str(&format!(
        "{{ issuer: \"{}\", client_id: gw-at-crm, client_secret: s }}",
        idp.issuer
    ))
    .unwrap();
    svc.register(
        "crm",
        &client,
        &["crm:read".into()],
        "https://crm.example/mcp".into(),
        "https://crm.example/mcp",
    )
    .unwrap();
    svc
}

fn alice(issuer: &str) -> OnBehalfOf {
    OnBehalfOf {
        binding: "b-alice".into(),
        subject: "alice".into(),
        issuer: issuer.into(),
        subject_token: None,
    }
}

fn query_of(url: &str) -> HashMap<String, String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

/// Opens a fresh link for alice: the callback query (with a code), the nonce sent to the IdP
/// and the browser's cookies.
async fn open(svc: &ConsentService) -> (CallbackQuery, String, Vec<String>) {
    let issuer = svc.login_issuer.clone();
    let CredentialError::ConsentRequired { elicitation_id, .. } =
        svc.consent_required(&alice(&issuer), "crm")
    else {
        panic!("expected a link");
    };
    let a = svc.open_link(&elicitation_id).await;
    let (Page::Redirect(url), Some(BrowserCookie::Set(cookie))) = (a.page, a.cookie) else {
        panic!("expected a redirect that sets a cookie");
    };
    let q = query_of(&url);
    assert_eq!(q["scope"], "openid profile email");
    assert_eq!(q["code_challenge_method"], "S256");
    // The link works once.
    let again = svc.open_link(&elicitation_id).await;
    assert!(
        matches!(&again.page, Page::Refused { status: 400, message } if message.contains("already opened")),
        "{again:?}"
    );
    let back = CallbackQuery {
        code: Some("code-1".into()),
        state: Some(q["state"].clone()),
        error: None,
    };
    (back, q["nonce"].clone(), vec![cookie])
}

fn id_token(key: &TestKey, issuer: &str, changes: Value) -> String {
    let mut claims = json!({
        "iss": issuer, "sub": "alice", "aud": CLIENT, "iat": now(), "exp": now() + 300,
        "preferred_username": "alice.l",
    });
    for (k, v) in changes.as_object().unwrap() {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    key.sign(Some("JWT"), &claims)
}

fn answer_with(idp: &MockIdp, token: Option<String>) {
    let mut body = json!({ "access_token": "at", "token_type": "Bearer" });
    if let Some(t) = token {
        body["id_token"] = json!(t);
    }
    *idp.state.token_response.lock().unwrap() = (200, body);
}

#[tokio::test]
async fn the_consent_login_needs_a_verified_id_token_of_the_same_user_with_its_nonce() {
    let key = TestKey::rsa("rsa-1");
    let unpublished = TestKey::ec("ec-unpublished", false);
    let idp = MockIdp::start(&[&key]).await;
    let svc = service(&idp, "http://127.0.0.1:9").await;
    let iss = idp.issuer.clone();

    let refusals: Vec<(&str, Option<String>, &str)> = vec![
        ("no id token", None, "sent no ID token"),
        (
            "wrong nonce",
            Some(id_token(&key, &iss, json!({"nonce": "another-login"}))),
            "nonce",
        ),
        ("forged signature", None, "ec-unpublished"),
        ("unsigned", None, "alg none"),
        ("wrong audience", None, "another client"),
        ("another user", None, "different user"),
    ];
    for (case, token, expected) in refusals {
        let (q, nonce, cookies) = open(&svc).await;
        let token = token.or_else(|| match case {
            "forged signature" => Some(id_token(&unpublished, &iss, json!({"nonce": nonce}))),
            "unsigned" => Some(unsigned(&json!({
                "iss": iss, "sub": "alice", "aud": CLIENT, "iat": now(), "exp": now() + 300, "nonce": nonce,
            }))),
            "wrong audience" => Some(id_token(&key, &iss, json!({"nonce": nonce, "aud": "other"}))),
            "another user" => Some(id_token(&key, &iss, json!({"nonce": nonce, "sub": "bob"}))),
            _ => None,
        });
        answer_with(&idp, token);
        let a = svc.signed_in(&q, &cookies).await;
        match &a.page {
            Page::Refused { status, message } => {
                assert_eq!(*status, 403, "{case}: {message}");
                assert!(message.contains(expected), "{case}: {message}");
                assert!(message.contains("not made"), "{case}: {message}");
            }
            other => panic!("{case}: expected a refusal, got {other:?}"),
        }
        assert!(matches!(a.cookie, Some(BrowserCookie::Clear(_))), "{case}");
        // The refused flow is gone: its state does not work again.
        let again = svc.signed_in(&q, &cookies).await;
        assert!(
            matches!(again.page, Page::Refused { status: 400, .. }),
            "{case}: {again:?}"
        );
    }

    // The right user, the right nonce, the IdP's key: on to the service's authorization server.
    let (q, nonce, _cookies) = open(&svc).await;
    // Another browser (no cookie, or another flow's) cannot finish it.
    let (_, _, other_cookies) = open(&svc).await;
    answer_with(&idp, Some(id_token(&key, &iss, json!({"nonce": nonce}))));
    let elsewhere = svc.signed_in(&q, &other_cookies).await;
    assert!(
        matches!(&elsewhere.page, Page::Refused { status: 403, message } if message.contains("another browser")),
        "{elsewhere:?}"
    );
    let (q, nonce, cookies2) = open(&svc).await;
    answer_with(&idp, Some(id_token(&key, &iss, json!({"nonce": nonce}))));
    let a = svc.signed_in(&q, &cookies2).await;
    let Page::Redirect(url) = &a.page else {
        panic!("expected the service's authorization page, got {a:?}");
    };
    assert!(
        url.starts_with(&format!("{iss}/authorize?p=policy&")),
        "{url}"
    );
    let at_service = query_of(url);
    assert_eq!(at_service["client_id"], "gw-at-crm");
    assert_eq!(at_service["resource"], "https://crm.example/mcp");
    assert!(
        !at_service.contains_key("nonce"),
        "no openid asked for: no nonce"
    );
    // The IdP was sent the code with the PKCE verifier and the gateway's client authentication.
    let requests = idp.state.token_requests.lock().unwrap();
    let (auth, form) = requests.last().unwrap();
    assert!(auth.as_deref().is_some_and(|a| a.starts_with("Basic ")));
    assert_eq!(form["grant_type"], "authorization_code");
    assert_eq!(form["code_verifier"].len(), 43);
}

#[tokio::test]
async fn flow_cookies_are_host_only_over_https_and_read_back_by_prefix() {
    let key = TestKey::rsa("rsa-1");
    let idp = MockIdp::start(&[&key]).await;
    let https = service(&idp, "https://gw.example").await;
    let v = https.set_cookie(&BrowserCookie::Set("abc".into())).unwrap();
    let v = v.to_str().unwrap();
    assert!(v.starts_with("__Host-gatehouse_connect_"), "{v}");
    for part in [
        "=abc;",
        "Path=/;",
        "HttpOnly",
        "SameSite=Lax",
        "Max-Age=600",
        "Secure",
    ] {
        assert!(v.contains(part), "{part} in {v}");
    }
    let cleared = https
        .set_cookie(&BrowserCookie::Clear("abc".into()))
        .unwrap();
    let cleared = cleared.to_str().unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    assert_eq!(
        cleared.split('=').next(),
        v.split('=').next(),
        "the same cookie name"
    );
    let http = service(&idp, "http://127.0.0.1:9").await;
    let plain = http.set_cookie(&BrowserCookie::Set("abc".into())).unwrap();
    assert!(!plain.to_str().unwrap().contains("Secure"));

    let mut headers = HeaderMap::new();
    headers.append(
        header::COOKIE,
        HeaderValue::from_static(
            "other=1; __Host-gatehouse_connect_0123=a; gatehouse_connect_45=b",
        ),
    );
    assert_eq!(ConsentService::browser_cookies(&headers), ["a", "b"]);
}
#[test]
fn pkce_challenge_is_the_s256_of_the_verifier() {
    // RFC 7636 appendix B.
    assert_eq!(
        challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    );
}

#[test]
fn authorize_urls_are_form_encoded() {
    let u = authorize_url(
        "https://as/auth",
        &[("scope", "a b"), ("redirect_uri", "http://x/y?z")],
    );
    assert_eq!(
        u,
        "https://as/auth?scope=a+b&redirect_uri=http%3A%2F%2Fx%2Fy%3Fz"
    );
}
