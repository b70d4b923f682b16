//! Test support: a mock IdP (discovery, JWKS, token endpoint) on 127.0.0.1 and keys from
//! tests/keys to sign tokens with.

use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The Authorization header and form of a token request.
pub(crate) type TokenRequest = (Option<String>, HashMap<String, String>);

/// What the mock IdP serves and what it was sent.
#[derive(Default)]
pub(crate) struct MockState {
    pub discovery: Mutex<Value>,
    pub jwks: Mutex<Value>,
    pub jwks_hits: AtomicUsize,
    /// Status and body of the token endpoint.
    pub token_response: Mutex<(u16, Value)>,
    /// Authorization header and form of each token request.
    pub token_requests: Mutex<Vec<TokenRequest>>,
}

/// A running mock IdP whose issuer is its base URL.
pub(crate) struct MockIdp {
    pub issuer: String,
    pub state: Arc<MockState>,
}

impl MockIdp {
    /// Starts a mock IdP publishing `keys`.
    pub(crate) async fn start(keys: &[&TestKey]) -> MockIdp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(MockState::default());
        *state.discovery.lock().unwrap() = json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{issuer}/authorize?p=policy"),
            "token_endpoint": format!("{issuer}/token"),
            "jwks_uri": format!("{issuer}/jwks"),
            "code_challenge_methods_supported": ["S256"],
        });
        *state.jwks.lock().unwrap() = jwks(keys);
        let app = Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(|State(s): State<Arc<MockState>>| async move {
                    Json(s.discovery.lock().unwrap().clone())
                }),
            )
            .route(
                "/jwks",
                get(|State(s): State<Arc<MockState>>| async move {
                    s.jwks_hits.fetch_add(1, Ordering::SeqCst);
                    Json(s.jwks.lock().unwrap().clone())
                }),
            )
            .route(
                "/token",
                post(
                    |State(s): State<Arc<MockState>>,
                     headers: HeaderMap,
                     Form(form): Form<HashMap<String, String>>| async move {
                        let auth = headers
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        s.token_requests.lock().unwrap().push((auth, form));
                        let (status, body) = s.token_response.lock().unwrap().clone();
                        (StatusCode::from_u16(status).unwrap(), Json(body))
                    },
                ),
            )
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        MockIdp { issuer, state }
    }

    /// Replaces the published keys.
    pub(crate) fn publish(&self, keys: &[&TestKey]) {
        *self.state.jwks.lock().unwrap() = jwks(keys);
    }

    /// How often the key set was fetched.
    pub(crate) fn jwks_hits(&self) -> usize {
        self.state.jwks_hits.load(Ordering::SeqCst)
    }
}

fn jwks(keys: &[&TestKey]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.public_jwk()).collect::<Vec<_>>() })
}

/// A private key from tests/keys, published under `kid`.
pub(crate) struct TestKey {
    pub kid: String,
    pub alg: Algorithm,
    encoding: EncodingKey,
}

impl TestKey {
    /// The RSA test key.
    pub(crate) fn rsa(kid: &str) -> TestKey {
        let pem = include_bytes!("../../tests/keys/rs256.pem");
        TestKey {
            kid: kid.into(),
            alg: Algorithm::RS256,
            encoding: EncodingKey::from_rsa_pem(pem).unwrap(),
        }
    }

    /// One of the two P-256 test keys (`b` selects the second).
    pub(crate) fn ec(kid: &str, b: bool) -> TestKey {
        let pem: &[u8] = if b {
            include_bytes!("../../tests/keys/es256-b.pem")
        } else {
            include_bytes!("../../tests/keys/es256-a.pem")
        };
        TestKey {
            kid: kid.into(),
            alg: Algorithm::ES256,
            encoding: EncodingKey::from_ec_pem(pem).unwrap(),
        }
    }

    /// The public JWK with kid and alg.
    pub(crate) fn public_jwk(&self) -> Value {
        let mut jwk = Jwk::from_encoding_key(&self.encoding, self.alg).unwrap();
        jwk.common.key_id = Some(self.kid.clone());
        serde_json::to_value(jwk).unwrap()
    }

    /// Signs `claims` with header `typ` (none: no typ).
    pub(crate) fn sign(&self, typ: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.typ = typ.map(str::to_owned);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

/// An unsigned (`alg: none`) JWT.
pub(crate) fn unsigned(claims: &Value) -> String {
    let part = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
    format!(
        "{}.{}.",
        part(&json!({"alg": "none", "typ": "JWT"})),
        part(claims)
    )
}

/// An HS256 JWT signed with `secret`.
pub(crate) fn hmac(claims: &Value, kid: &str, secret: &[u8]) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret)).unwrap()
}

/// Seconds since the epoch.
pub(crate) fn now() -> i64 {
    crate::store::now_secs()
}
