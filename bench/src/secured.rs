//! The "secured" configuration: JWT (ES256) authentication, a policy with declarative and CEL
//! rules, and the audit trail on — the setting the overhead budget is defined for. Also a
//! micro-benchmark of policy evaluation.

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use std::time::Instant;

const KEY_PEM: &[u8] = include_bytes!("../../tests/keys/es256-a.pem");
const KID: &str = "bench";

/// Token exchanges the bench IdP answered (the gateway should cache: one per user).
pub static EXCHANGES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The environment variable holding the gateway's client secret at the bench IdP.
pub const IDP_SECRET_ENV: &str = "GATEHOUSE_BENCH_IDP_SECRET";

/// A key-set endpoint on loopback publishing the bench's ES256 key, and a token endpoint
/// answering RFC 8693 exchanges; returns the issuer URL.
pub async fn start_issuer() -> String {
    let key = EncodingKey::from_ec_pem(KEY_PEM).unwrap();
    let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap();
    jwk.common.key_id = Some(KID.into());
    let jwks = json!({"keys": [jwk]});
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route(
            "/jwks",
            axum::routing::get(move || async move { axum::Json(jwks) }),
        )
        .route(
            "/token",
            axum::routing::post(|| async {
                let n = EXCHANGES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                axum::Json(json!({
                    "access_token": format!("bench-exchanged-{n}"),
                    "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                    "token_type": "Bearer",
                    "expires_in": 3600,
                }))
            }),
        );
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    issuer
}

/// An ES256 access token for `aud`, valid for an hour.
pub fn token(issuer: &str, aud: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({"iss": issuer, "sub": "bench-user", "aud": aud, "scope": "mcp:tools bench:run",
        "groups": ["engineering"], "client_id": "bench", "iat": now, "exp": now + 3600});
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(KID.into());
    jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_ec_pem(KEY_PEM).unwrap(),
    )
    .unwrap()
}

const POLICY: &str = r#"    policy:
      default: deny
      rules:
        - name: no-contractors
          effect: deny
          groups: [contractors]
        - name: no-admin-tools
          effect: deny
          tools: "admin_*"
        - name: big-needs-engineering
          tools: big
          when: 'principal.groups.exists(g, g == "engineering")'
        - name: everyone-else
          scopes: [mcp:tools]
"#;

/// The secured gateway's configuration (audit to SQLite in `dir`). A cell's clients (up to 64)
/// share one session, past the default cap of 16 streams per session. Its `quota` server is the
/// secured one with quotas counted too (a rate, concurrent calls and a daily quota per
/// principal, none ever reached), in this process or, with `redis`, in that Redis. Its
/// `guarded` server is the secured one with the default output guardrails scanning results.
pub fn config(issuer: &str, fixture_json: &str, redis: Option<&str>) -> String {
    let store = match redis {
        None => String::new(),
        Some(url) => format!(
            "  redis: {{ url: \"{url}\", key_prefix: \"gatehouse-bench:{}:\" }}\n",
            std::process::id()
        ),
    };
    format!(
        "listen: 127.0.0.1:0\nops: {{ listen: 127.0.0.1:0 }}\nwatch_config: false\nlog: {{ level: warn }}\nstore: {{ url: \"sqlite://audit.db\" }}\nlimits: {{ streams_per_session: 256 }}\nauth:\n  issuers:\n    bench: {{ issuer: \"{issuer}\", jwks_uri: \"{issuer}/jwks\", algorithms: [ES256] }}\nquotas:\n{store}  rules:\n    - {{ name: bench, servers: [quota], rate: {{ requests: 1000000, per: 1s }}, concurrent: 10000, daily: 1000000000000 }}\nservers:\n  - name: secure\n    path: /secure\n    upstreams: [fxj]\n    auth: {{ scopes: [mcp:tools] }}\n{POLICY}  - name: quota\n    path: /quota\n    upstreams: [fxj]\n    auth: {{ scopes: [mcp:tools] }}\n{POLICY}  - name: guarded\n    path: /guarded\n    upstreams: [fxj]\n    auth: {{ scopes: [mcp:tools] }}\n    guardrails: {{}}\n{POLICY}  - name: exchange\n    path: /exchange\n    upstreams: [fxx]\n    auth: {{ scopes: [mcp:tools] }}\n{POLICY}upstreams:\n  fxj: {{ kind: http, url: \"{fixture_json}\", protocol: \"2025-11-25\" }}\n  fxx:\n    kind: http\n    url: \"{fixture_json}\"\n    protocol: \"2025-11-25\"\n    auth: {{ kind: token_exchange, idp: {{ token_endpoint: \"{issuer}/token\", client_id: bench, client_secret: {{ env: {IDP_SECRET_ENV} }} }}, scopes: [bench:run] }}\n"
    )
}

/// Nanoseconds per policy decision: (declarative rules only, with a CEL rule deciding).
pub fn policy_micro(iterations: u32) -> (f64, f64) {
    use gatehouse::auth::Principal;
    use gatehouse::policy::{CompiledPolicy, Facts, FunctionKind};
    let yaml = format!(
        "auth:\n  issuers:\n    b: {{ issuer: \"https://idp.example\" }}\nservers:\n  - name: s\n    path: /s\n    upstreams: [u]\n    auth: {{ scopes: [mcp:tools] }}\n{POLICY}upstreams:\n  u: {{ kind: http, url: \"http://127.0.0.1:9/\" }}\n"
    );
    let config =
        gatehouse::config::Config::from_yaml(&yaml, std::path::Path::new("bench.yaml")).unwrap();
    let policy = CompiledPolicy::compile(config.servers[0].policy.as_ref().unwrap()).unwrap();
    let principal = Principal::hypothetical(
        json!({"sub": "u", "scope": "mcp:tools", "groups": ["engineering"]}),
        &Default::default(),
    )
    .unwrap();
    let time = |name: &str| {
        let facts = Facts {
            server: "s",
            method: "tools/call",
            kind: FunctionKind::Tool,
            name,
            upstream: "u",
        };
        let args = Value::Object(Default::default());
        let start = Instant::now();
        let mut allowed = 0u32;
        for _ in 0..iterations {
            allowed += u32::from(
                std::hint::black_box(policy.decide(Some(&principal), &facts, Some(&args)))
                    .allowed(),
            );
        }
        assert_eq!(allowed, iterations);
        start.elapsed().as_nanos() as f64 / f64::from(iterations)
    };
    (time("echo"), time("big"))
}
