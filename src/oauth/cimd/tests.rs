//! Metadata documents served by a real HTTP server on 127.0.0.1 (test mode), and the address
//! and URL rules without any traffic.

use super::*;
use axum::body::Body;
use axum::http::{Response, StatusCode, Uri};
use serde_json::json;

/// A document server that counts the requests each path receives.
struct DocServer {
    base: String,
    hits: Arc<Mutex<HashMap<String, usize>>>,
}

impl DocServer {
    async fn start() -> DocServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let (b, h) = (base.clone(), hits.clone());
        let app = axum::Router::new().fallback(move |uri: Uri| {
            let (base, hits) = (b.clone(), h.clone());
            async move {
                *hits
                    .lock()
                    .unwrap()
                    .entry(uri.path().to_owned())
                    .or_default() += 1;
                serve(&base, uri.path()).await
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        DocServer { base, hits }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

fn doc(id: &str) -> serde_json::Value {
    json!({
        "client_id": id,
        "client_name": "Test Client",
        "client_uri": "https://app.example",
        "redirect_uris": ["http://127.0.0.1:3000/callback", "https://app.example/cb"],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
        "scope": "mcp:tools"
    })
}

fn json_response(value: serde_json::Value, cache_control: Option<&str>) -> Response<Body> {
    let mut r = Response::builder().header("content-type", "application/json");
    if let Some(cc) = cache_control {
        r = r.header("cache-control", cc);
    }
    r.body(Body::from(value.to_string())).unwrap()
}

async fn serve(base: &str, path: &str) -> Response<Body> {
    let id = format!("{base}{path}");
    match path {
        "/good.json" => json_response(doc(&id), Some("public, max-age=60")),
        "/default.json" => json_response(doc(&id), None),
        "/nostore.json" => json_response(doc(&id), Some("no-store")),
        "/slowish.json" => {
            tokio::time::sleep(Duration::from_millis(150)).await;
            json_response(doc(&id), Some("no-store"))
        }
        "/mismatch.json" => json_response(doc("https://other.example/client.json"), None),
        "/no-id.json" => {
            let mut d = doc(&id);
            d.as_object_mut().unwrap().remove("client_id");
            json_response(d, None)
        }
        "/no-redirect.json" => {
            let mut d = doc(&id);
            d.as_object_mut().unwrap().remove("redirect_uris");
            json_response(d, None)
        }
        "/fragment-redirect.json" => {
            let mut d = doc(&id);
            d["redirect_uris"] = json!(["https://app.example/cb#frag"]);
            json_response(d, None)
        }
        "/secret.json" => {
            let mut d = doc(&id);
            d["token_endpoint_auth_method"] = json!("client_secret_basic");
            json_response(d, None)
        }
        "/big-stream.json" => {
            // Chunked, no Content-Length: only counting the bytes can stop it.
            let chunks = (0..1000).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1024]));
            Response::new(Body::from_stream(futures_util::stream::iter(chunks)))
        }
        "/big-declared.json" => Response::new(Body::from(vec![b' '; 64 * 1024])),
        "/slow.json" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            json_response(doc(&id), None)
        }
        "/redirect.json" => Response::builder()
            .status(StatusCode::FOUND)
            .header("location", "/good.json")
            .body(Body::empty())
            .unwrap(),
        "/text" => Response::new(Body::from("hello")),
        "/array.json" => json_response(json!([]), None),
        "/error.json" => Response::builder()
            .status(StatusCode::INTERNAL_SERVER_ERROR)
            .body(Body::empty())
            .unwrap(),
        _ => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Body::empty())
            .unwrap(),
    }
}

fn test_settings() -> CimdSettings {
    CimdSettings {
        allow_private_addresses: true,
        timeout: Duration::from_millis(500),
        ..CimdSettings::default()
    }
}

fn fetcher() -> CimdFetcher {
    CimdFetcher::new(test_settings()).unwrap()
}

#[tokio::test]
async fn oauth_cimd_good_document_is_fetched_validated_and_cached() {
    let server = DocServer::start().await;
    let f = fetcher();
    let id = server.url("/good.json");
    assert!(f.handles(&id));
    let meta = f.resolve(&id).await.unwrap();
    assert_eq!(meta.client_id, id);
    assert_eq!(meta.client_name.as_deref(), Some("Test Client"));
    assert_eq!(meta.redirect_uris.len(), 2);
    assert_eq!(meta.token_endpoint_auth_method, AuthMethod::None);
    assert_eq!(meta.scope.as_deref(), Some("mcp:tools"));
    for _ in 0..3 {
        assert_eq!(f.resolve(&id).await.unwrap(), meta);
    }
    assert_eq!(server.hits("/good.json"), 1, "max-age=60 is honoured");
    assert!(f.inflight.lock().unwrap().is_empty());

    // Without Cache-Control the default TTL applies.
    let id = server.url("/default.json");
    f.resolve(&id).await.unwrap();
    f.resolve(&id).await.unwrap();
    assert_eq!(server.hits("/default.json"), 1);
}

#[tokio::test]
async fn oauth_cimd_no_store_is_fetched_every_time_but_concurrent_callers_share_one_fetch() {
    let server = DocServer::start().await;
    let f = Arc::new(fetcher());
    let id = server.url("/nostore.json");
    for _ in 0..3 {
        f.resolve(&id).await.unwrap();
    }
    assert_eq!(server.hits("/nostore.json"), 3);

    let id = server.url("/slowish.json");
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let (f, id) = (f.clone(), id.clone());
            tokio::spawn(async move { f.resolve(&id).await })
        })
        .collect();
    for c in calls {
        c.await.unwrap().unwrap();
    }
    assert_eq!(server.hits("/slowish.json"), 1);
    assert!(f.inflight.lock().unwrap().is_empty());
}

#[tokio::test]
async fn oauth_cimd_documents_that_break_rules_are_refused_precisely() {
    let server = DocServer::start().await;
    let f = fetcher();
    let e = f.resolve(&server.url("/mismatch.json")).await.unwrap_err();
    assert_eq!(
        e,
        CimdError::ClientIdMismatch {
            expected: server.url("/mismatch.json"),
            found: "https://other.example/client.json".into()
        }
    );
    let e = f.resolve(&server.url("/no-id.json")).await.unwrap_err();
    assert!(
        matches!(e, CimdError::ClientIdMismatch { ref found, .. } if found.is_empty()),
        "{e}"
    );
    let e = f
        .resolve(&server.url("/no-redirect.json"))
        .await
        .unwrap_err();
    assert!(matches!(e, CimdError::BadRedirectUri(_)), "{e}");
    assert!(e.to_string().contains("redirect_uris is required"), "{e}");
    let e = f
        .resolve(&server.url("/fragment-redirect.json"))
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("redirect_uris[0] must not contain a fragment"),
        "{e}"
    );
    let e = f.resolve(&server.url("/secret.json")).await.unwrap_err();
    assert!(matches!(e, CimdError::NotPublicClient(_)), "{e}");
    assert!(
        e.to_string()
            .contains("client_secret_basic is not accepted"),
        "{e}"
    );
    let e = f.resolve(&server.url("/text")).await.unwrap_err();
    assert!(matches!(e, CimdError::NotJson(_)), "{e}");
    let e = f.resolve(&server.url("/array.json")).await.unwrap_err();
    assert_eq!(e, CimdError::NotObject);
    assert_eq!(
        f.resolve(&server.url("/missing.json")).await,
        Err(CimdError::Status(404))
    );
    assert_eq!(
        f.resolve(&server.url("/error.json")).await,
        Err(CimdError::Status(500))
    );

    // A failure is remembered briefly: a flood naming it costs one fetch.
    f.resolve(&server.url("/mismatch.json")).await.unwrap_err();
    assert_eq!(server.hits("/mismatch.json"), 1);
}

#[tokio::test]
async fn oauth_cimd_size_time_and_redirects_are_bounded() {
    let server = DocServer::start().await;
    let f = fetcher();
    let max = CimdSettings::default().max_bytes;
    assert_eq!(
        f.resolve(&server.url("/big-stream.json")).await,
        Err(CimdError::TooLarge(max))
    );
    assert_eq!(
        f.resolve(&server.url("/big-declared.json")).await,
        Err(CimdError::TooLarge(max))
    );

    let started = Instant::now();
    assert_eq!(
        f.resolve(&server.url("/slow.json")).await,
        Err(CimdError::Timeout(500))
    );
    assert!(started.elapsed() < Duration::from_secs(2));

    assert_eq!(
        f.resolve(&server.url("/redirect.json")).await,
        Err(CimdError::Redirected(302))
    );
    assert_eq!(server.hits("/good.json"), 0, "the redirect is not followed");
}

#[tokio::test]
async fn oauth_cimd_cache_is_bounded() {
    let server = DocServer::start().await;
    let f = CimdFetcher::new(CimdSettings {
        cache_max_entries: 2,
        ..test_settings()
    })
    .unwrap();
    for path in [
        "/good.json",
        "/default.json",
        "/mismatch.json",
        "/good.json",
    ] {
        let _ = f.resolve(&server.url(path)).await;
        assert!(f.cache.lock().unwrap().len() <= 2);
    }
}

#[tokio::test]
async fn oauth_cimd_private_addresses_are_refused_before_any_traffic() {
    let f = CimdFetcher::new(CimdSettings::default()).unwrap();
    for (id, host, addr) in [
        ("https://127.0.0.1/client.json", "127.0.0.1", "127.0.0.1"),
        ("https://[::1]/client.json", "[::1]", "::1"),
        ("https://10.1.2.3/client.json", "10.1.2.3", "10.1.2.3"),
        (
            "https://169.254.169.254/latest/meta-data",
            "169.254.169.254",
            "169.254.169.254",
        ),
        (
            "https://[::ffff:c0a8:1]/c",
            "[::ffff:c0a8:1]",
            "::ffff:192.168.0.1",
        ),
    ] {
        assert_eq!(
            f.resolve(id).await,
            Err(CimdError::PrivateAddress {
                host: host.into(),
                addr: addr.parse().unwrap()
            }),
            "{id}"
        );
    }
    // A name is resolved by the gateway and refused on what it resolves to.
    let e = f
        .resolve("https://localhost/client.json")
        .await
        .unwrap_err();
    assert!(
        matches!(&e, CimdError::PrivateAddress { host, addr } if host == "localhost" && addr.is_loopback()),
        "{e}"
    );
    assert!(e.to_string().contains("fetched only from public addresses"));
    // Test mode's plain http is refused outside test mode.
    assert_eq!(
        f.resolve("http://127.0.0.1:1/client.json").await,
        Err(CimdError::NotHttps)
    );
    assert!(!f.handles("http://127.0.0.1:1/client.json"));
}

#[test]
fn oauth_cimd_client_id_shape_rules() {
    let check = |id: &str| check_client_id(id, false).map(|_| ());
    assert_eq!(check("https://app.example/client.json"), Ok(()));
    assert_eq!(check("https://app.example/c?v=1"), Ok(()));
    assert_eq!(check("https://app.example:8443/c"), Err(CimdError::Port));
    assert_eq!(check("http://app.example/c"), Err(CimdError::NotHttps));
    assert_eq!(check("ftp://app.example/c"), Err(CimdError::NotHttps));
    assert_eq!(check("https://app.example"), Err(CimdError::NoPath));
    assert_eq!(check("https://app.example/"), Err(CimdError::NoPath));
    assert_eq!(check("https://app.example/c#x"), Err(CimdError::Fragment));
    assert_eq!(check("https://u:p@app.example/c"), Err(CimdError::Userinfo));
    assert_eq!(check("https://u@app.example/c"), Err(CimdError::Userinfo));
    for dots in [
        "https://app.example/a/../c",
        "https://app.example/./c",
        "https://app.example/a/%2E%2e/c",
        "https://app.example/a/..",
    ] {
        assert_eq!(check(dots), Err(CimdError::DotSegment), "{dots}");
    }
    assert!(matches!(
        check("https://APP.example/c"),
        Err(CimdError::NotCanonical { .. })
    ));
    assert!(matches!(
        check("https://app.example:443/c"),
        Err(CimdError::NotCanonical { .. })
    ));
    assert!(matches!(
        check("https://app.example\\c/x"),
        Err(CimdError::NotCanonical { .. })
    ));
    assert!(matches!(check("not a url"), Err(CimdError::NotUrl(_))));
    assert_eq!(
        check(&format!("https://a.example/{}", "x".repeat(2000))),
        Err(CimdError::TooLong)
    );
    assert_eq!(
        check_client_id("http://127.0.0.1:9/c", true).map(|_| ()),
        Ok(())
    );
    assert_eq!(
        check_client_id("http://10.0.0.1:9/c", true).map(|_| ()),
        Err(CimdError::NotHttps)
    );
    assert!(is_cimd_client_id("https://a.example/c", false));
    assert!(!is_cimd_client_id("http://127.0.0.1/c", false));
    assert!(is_cimd_client_id("http://127.0.0.1/c", true));
    assert!(!is_cimd_client_id("gh_abc", true));
}

#[test]
fn oauth_cimd_only_public_addresses_pass() {
    for public in [
        "8.8.8.8",
        "1.1.1.1",
        "2606:4700:4700::1111",
        "64:ff9b::808:808",
        "2002:808:808::1",
    ] {
        assert!(is_public(public.parse().unwrap()), "{public}");
    }
    for private in [
        "0.0.0.0",
        "127.0.0.1",
        "10.0.0.1",
        "100.64.0.1",
        "100.127.255.255",
        "169.254.169.254",
        "172.16.0.1",
        "172.31.255.255",
        "192.0.0.8",
        "192.0.2.1",
        "192.168.1.1",
        "198.18.0.1",
        "198.51.100.1",
        "203.0.113.1",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "::",
        "::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::127.0.0.1",
        "64:ff9b::a00:1",
        "2002:a00:1::1",
        "2001::1",
        "2001:db8::1",
        "3fff::1",
        "fc00::1",
        "fd12::1",
        "fe80::1",
        "fec0::1",
        "ff02::1",
        "100::1",
    ] {
        assert!(!is_public(private.parse().unwrap()), "{private}");
    }
}

#[test]
fn oauth_cimd_cache_control_is_clamped() {
    let f = fetcher();
    let ttl = |v: &str| {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(reqwest::header::CACHE_CONTROL, v.parse().unwrap());
        f.ttl(&h)
    };
    assert_eq!(ttl("max-age=120"), Some(Duration::from_secs(120)));
    assert_eq!(
        ttl("public, MAX-AGE=0"),
        Some(Duration::from_secs(60)),
        "min_ttl"
    );
    assert_eq!(
        ttl("max-age=99999999"),
        Some(Duration::from_secs(86400)),
        "max_ttl"
    );
    assert_eq!(ttl("max-age=60, no-store"), None);
    assert_eq!(ttl("no-cache"), None);
    assert_eq!(ttl("max-age=garbage"), Some(Duration::from_secs(600)));
    assert_eq!(
        f.ttl(&reqwest::header::HeaderMap::new()),
        Some(Duration::from_secs(600))
    );
}
