//! A test-owned token issuer: RFC 8414 metadata, a JWKS whose keys the test can rotate, and an
//! RFC 7662 introspection endpoint, served on a free loopback port. Keys are committed test
//! keys (tests/keys), never used anywhere else.
#![allow(dead_code)]

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use http::{HeaderMap, StatusCode};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A signing key of the test issuer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestKey {
    /// ES256, published from the start (kid `es-a`).
    EsA,
    /// ES256, published only after `rotate_in_es_b` (kid `es-b`).
    EsB,
    /// RS256 (kid `rs`).
    Rs,
    /// EdDSA (kid `ed`).
    Ed,
}

impl TestKey {
    pub fn kid(self) -> &'static str {
        match self {
            TestKey::EsA => "es-a",
            TestKey::EsB => "es-b",
            TestKey::Rs => "rs",
            TestKey::Ed => "ed",
        }
    }

    pub fn alg(self) -> Algorithm {
        match self {
            TestKey::EsA | TestKey::EsB => Algorithm::ES256,
            TestKey::Rs => Algorithm::RS256,
            TestKey::Ed => Algorithm::EdDSA,
        }
    }

    fn pem(self) -> &'static [u8] {
        match self {
            TestKey::EsA => include_bytes!("../keys/es256-a.pem"),
            TestKey::EsB => include_bytes!("../keys/es256-b.pem"),
            TestKey::Rs => include_bytes!("../keys/rs256.pem"),
            TestKey::Ed => include_bytes!("../keys/ed25519.pem"),
        }
    }

    pub fn encoding_key(self) -> EncodingKey {
        match self {
            TestKey::EsA | TestKey::EsB => EncodingKey::from_ec_pem(self.pem()).unwrap(),
            TestKey::Rs => EncodingKey::from_rsa_pem(self.pem()).unwrap(),
            TestKey::Ed => EncodingKey::from_ed_pem(self.pem()).unwrap(),
        }
    }

    fn jwk(self) -> Value {
        let mut jwk = Jwk::from_encoding_key(&self.encoding_key(), self.alg()).unwrap();
        jwk.common.key_id = Some(self.kid().into());
        serde_json::to_value(jwk).unwrap()
    }
}

/// The RSA public key in PEM, for the HMAC-confusion attack.
pub const RS_PUBLIC_PEM: &[u8] = include_bytes!("../keys/rs256.pub.pem");

/// What the issuer's endpoints share with the test.
pub struct Shared {
    pub issuer: String,
    published: Mutex<Vec<TestKey>>,
    /// Introspection answers by token.
    opaque: Mutex<HashMap<String, Value>>,
    pub jwks_fetches: AtomicUsize,
    pub introspections: AtomicUsize,
    pub metadata_fetches: AtomicUsize,
    /// How metadata and the key set are served: see [`KeyService`].
    key_service: AtomicU8,
    /// `EsB`'s key material is published under `EsA`'s kid (a key replaced in place).
    es_a_replaced: AtomicBool,
}

/// How the issuer serves its metadata and key set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum KeyService {
    /// Normally.
    Up = 0,
    /// HTTP 503.
    Failing = 1,
    /// Holds each request for 10 s, then answers 503 (an IdP that does not answer).
    Hanging = 2,
}

/// A running test issuer.
pub struct TestIssuer {
    pub shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

/// The client credentials the gateway must present to the introspection endpoint.
pub const INTROSPECTION_CLIENT: (&str, &str) = ("gatehouse", "s3cret-introspection");

impl TestIssuer {
    /// Starts an issuer publishing `EsA`, `Rs` and `Ed`.
    pub async fn start() -> TestIssuer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared {
            issuer,
            published: Mutex::new(vec![TestKey::EsA, TestKey::Rs, TestKey::Ed]),
            opaque: Mutex::new(HashMap::new()),
            jwks_fetches: AtomicUsize::new(0),
            introspections: AtomicUsize::new(0),
            metadata_fetches: AtomicUsize::new(0),
            key_service: AtomicU8::new(KeyService::Up as u8),
            es_a_replaced: AtomicBool::new(false),
        });
        let app = Router::new()
            .route("/.well-known/oauth-authorization-server", get(metadata))
            .route("/jwks", get(jwks))
            .route("/introspect", post(introspect))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        TestIssuer { shared, task }
    }

    pub fn issuer(&self) -> &str {
        &self.shared.issuer
    }

    /// Publishes `EsB` as well (a key rotation).
    pub fn rotate_in_es_b(&self) {
        self.shared.published.lock().unwrap().push(TestKey::EsB);
    }

    /// Makes metadata and the key set answer as `mode` says.
    pub fn serve_keys(&self, mode: KeyService) {
        self.shared.key_service.store(mode as u8, Ordering::SeqCst);
    }

    /// Replaces `EsA`'s key with `EsB`'s material under the same kid `es-a`.
    pub fn replace_es_a_in_place(&self) {
        self.shared.es_a_replaced.store(true, Ordering::SeqCst);
    }

    /// Signs `claims` with `key`, naming `kid` in the header.
    pub fn sign_as(&self, key: TestKey, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(key.alg());
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, claims, &key.encoding_key()).unwrap()
    }

    /// How many key-set requests reached this issuer (served or not).
    pub fn jwks_fetches(&self) -> usize {
        self.shared.jwks_fetches.load(Ordering::SeqCst)
    }

    /// How many introspection requests reached this issuer.
    pub fn introspections(&self) -> usize {
        self.shared.introspections.load(Ordering::SeqCst)
    }

    /// Claims of a good token for `aud`, valid for five minutes.
    pub fn claims(&self, aud: &str) -> Value {
        let now = now();
        json!({
            "iss": self.shared.issuer, "sub": "alice", "aud": aud, "client_id": "agent-1",
            "scope": "mcp:tools", "groups": ["engineering"],
            "iat": now, "nbf": now, "exp": now + 300, "jti": format!("j{}", rand_u64()),
        })
    }

    /// Signs `claims` with `key` (kid and alg from the key).
    pub fn sign(&self, key: TestKey, claims: &Value) -> String {
        let mut header = Header::new(key.alg());
        header.kid = Some(key.kid().into());
        jsonwebtoken::encode(&header, claims, &key.encoding_key()).unwrap()
    }

    /// A good ES256 token for `aud`, with `changes` merged into the claims (null removes).
    pub fn token(&self, aud: &str, changes: Value) -> String {
        let mut claims = self.claims(aud);
        merge(&mut claims, changes);
        self.sign(TestKey::EsA, &claims)
    }

    /// Registers an opaque token with the introspection answer `answer`.
    pub fn add_opaque(&self, token: &str, answer: Value) {
        self.shared
            .opaque
            .lock()
            .unwrap()
            .insert(token.into(), answer);
    }
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Merges `changes` into `claims`; a null removes the claim.
pub fn merge(claims: &mut Value, changes: Value) {
    if let Value::Object(c) = changes {
        for (k, v) in c {
            if v.is_null() {
                claims.as_object_mut().unwrap().remove(&k);
            } else {
                claims[k] = v;
            }
        }
    }
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn rand_u64() -> u64 {
    use rand::RngCore;
    rand::rng().next_u64()
}

/// Whether the key service is down (after holding the request, when it hangs).
async fn key_service_down(s: &Shared) -> bool {
    match s.key_service.load(Ordering::SeqCst) {
        1 => true,
        2 => {
            tokio::time::sleep(std::time::Duration::from_secs(10)).await;
            true
        }
        _ => false,
    }
}

async fn metadata(State(s): State<Arc<Shared>>) -> Result<Json<Value>, StatusCode> {
    s.metadata_fetches.fetch_add(1, Ordering::SeqCst);
    if key_service_down(&s).await {
        return Err(StatusCode::SERVICE_UNAVAILABLE);
    }
    Ok(Json(json!({
        "issuer": s.issuer,
        "jwks_uri": format!("{}/jwks", s.issuer),
        "introspection_endpoint": format!("{}/introspect", s.issuer),
        "response_types_supported": ["code"],
    })))
}

async fn jwks(State(s): State<Arc<Shared>>) -> Result<Json<Value>, StatusCode> {
    s.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    if key_service_down(&s).await {
        return Err(StatusCode::SERVICE_UNAVAILABLE);
    }
    let replaced = s.es_a_replaced.load(Ordering::SeqCst);
    let keys: Vec<Value> = s
        .published
        .lock()
        .unwrap()
        .iter()
        .map(|&k| match k {
            TestKey::EsA if replaced => {
                let mut jwk = TestKey::EsB.jwk();
                jwk["kid"] = json!(TestKey::EsA.kid());
                jwk
            }
            k => k.jwk(),
        })
        .collect();
    // An HMAC key in the set must be ignored by the gateway, never used to verify.
    let mut all = keys;
    all.push(json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}));
    Ok(Json(json!({ "keys": all })))
}

async fn introspect(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> (StatusCode, Json<Value>) {
    s.introspections.fetch_add(1, Ordering::SeqCst);
    use base64::Engine;
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            INTROSPECTION_CLIENT.0, INTROSPECTION_CLIENT.1
        ))
    );
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_client"})),
        );
    }
    let token = form.get("token").cloned().unwrap_or_default();
    let answer = s.opaque.lock().unwrap().get(&token).cloned();
    (
        StatusCode::OK,
        Json(answer.unwrap_or_else(|| json!({"active": false}))),
    )
}
