//! TLS on the listeners, against the real binary with certificates a CA made here: MCP over
//! HTTPS (ALPN h2), the operations listener requiring a client certificate, the admin API
//! refusing requests without one, and certificate reload (including a bad replacement).

mod auth_support;
mod common;

use common::{Client, Gateway, stdio_fixture_upstream};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A CA and the files of certificates it issued, in a directory of their own.
struct Pki {
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
    dir: tempfile::TempDir,
}

/// One issued certificate: DER (to compare with what a client saw) and PEM files.
struct Issued {
    der: Vec<u8>,
    cert_pem: String,
    key_pem: String,
}

impl Pki {
    fn new() -> Pki {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "gatehouse test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = params.self_signed(&key).unwrap();
        let pki = Pki {
            issuer: Issuer::new(params, key),
            ca_pem: ca.pem(),
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::write(pki.path("ca.pem"), &pki.ca_pem).unwrap();
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A certificate for `127.0.0.1` and `localhost` (server) or a client named `cn`.
    fn issue(&self, cn: &str, server: bool) -> Issued {
        let key = KeyPair::generate().unwrap();
        let names = if server {
            vec!["127.0.0.1".to_owned(), "localhost".to_owned()]
        } else {
            Vec::new()
        };
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Issued {
            der: cert.der().to_vec(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// Writes a server certificate's files as `server.pem` and `server.key`.
    fn install(&self, cert: &Issued) {
        // The key first: a poll between the two writes sees a mismatched pair, which must
        // keep the previous one and be retried once the certificate lands.
        std::fs::write(self.path("server.key"), &cert.key_pem).unwrap();
        std::fs::write(self.path("server.pem"), &cert.cert_pem).unwrap();
    }

    /// A YAML `tls` block with these files and extra fields.
    fn block(&self, extra: &str) -> String {
        format!(
            "{{ cert: {:?}, key: {:?}{extra} }}",
            self.path("server.pem"),
            self.path("server.key")
        )
    }

    fn client_ca(&self) -> String {
        format!(", client_ca: {:?}", self.path("ca.pem"))
    }

    /// A client trusting only this CA, optionally presenting `identity`, on a new pool.
    fn client(&self, identity: Option<&Issued>) -> reqwest::Client {
        let mut b = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap()])
            .tls_info(true)
            .timeout(Duration::from_secs(20));
        if let Some(id) = identity {
            let pem = format!("{}{}", id.cert_pem, id.key_pem);
            b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
        }
        b.build().unwrap()
    }
}

fn servers() -> String {
    format!(
        "servers:\n  - {{ name: main, path: /mcp, upstreams: [fx] }}\nupstreams:\n{}",
        stdio_fixture_upstream("fx", &[])
    )
}

/// The DER of the certificate a fresh connection to `url` is served.
async fn served_cert(pki: &Pki, url: &str) -> Vec<u8> {
    let resp = pki.client(None).get(url).send().await.unwrap();
    resp.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .expect("a TLS connection has a peer certificate")
        .to_vec()
}

fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn mcp_is_served_over_https_with_h2_and_plain_http_is_refused() {
    let pki = Pki::new();
    pki.install(&pki.issue("gatehouse", true));
    let gw = Gateway::start(&format!("tls: {}\n{}", pki.block(""), servers()));
    assert!(gw.base.starts_with("https://127.0.0.1:"), "{}", gw.base);

    let mut client = Client::new(&gw.url("/mcp"));
    client.http = pki.client(None);
    let init = client.initialize().await;
    assert_eq!(init["result"]["serverInfo"]["name"], "main", "{init}");
    assert!(client.tool_names().await.contains(&"echo".to_owned()));

    // ALPN offers h2; a client that speaks it gets it.
    let resp = pki.client(None).get(gw.url("/mcp")).send().await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);

    // Plain HTTP to the TLS port is no request: it fails the handshake, which is counted.
    let plain = gw.base.replacen("https://", "http://", 1);
    let r = reqwest::Client::new()
        .get(format!("{plain}/mcp"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(r.is_err() || r.unwrap().status() != 200);
    let mut failures = 0.0;
    for _ in 0..20 {
        failures = metric(
            &gw.metrics().await,
            "gatehouse_tls_handshake_failures_total{listener=\"mcp\"} ",
        );
        if failures >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(failures, 1.0);
    let stderr = gw.proc.stderr();
    assert!(
        !stderr
            .lines()
            .any(|l| l.contains("handshake") && (l.contains("WARN") || l.contains("ERROR"))),
        "a failed handshake is not a warning: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ops_listener_with_a_client_ca_refuses_clients_without_a_certificate() {
    let pki = Pki::new();
    pki.install(&pki.issue("gatehouse", true));
    let yaml = format!(
        "ops:\n  listen: 127.0.0.1:0\n  tls: {}\n{}",
        pki.block(&pki.client_ca()),
        servers()
    );
    let gw = Gateway::start(&yaml);
    assert!(gw.ops_base.starts_with("https://"), "{}", gw.ops_base);

    let without = pki.client(None).get(gw.ops_url("/healthz")).send().await;
    assert!(
        without.is_err(),
        "answered without a client certificate: {without:?}"
    );

    let scraper = pki.issue("prometheus", false);
    let with = pki
        .client(Some(&scraper))
        .get(gw.ops_url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(with.status(), 200);
    assert_eq!(with.text().await.unwrap(), "ok");

    // A certificate from another CA is refused as well.
    let stranger = Pki::new().issue("prometheus", false);
    let other = pki
        .client(Some(&stranger))
        .get(gw.ops_url("/healthz"))
        .send()
        .await;
    assert!(other.is_err(), "a foreign client certificate was accepted");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_api_needs_a_verified_client_certificate_and_mcp_clients_do_not() {
    let pki = Pki::new();
    pki.install(&pki.issue("gatehouse", true));
    let issuer = auth_support::TestIssuer::start().await;
    let yaml = format!(
        "tls: {tls}\n\
         auth:\n  issuers:\n    test: {{ issuer: \"{iss}\" }}\n\
         admin:\n  auth: {{ issuers: [test] }}\n  groups: [gatehouse-admins]\n  require_client_cert: true\n\
         catalog: {{ recheck: 1s }}\n{servers}",
        tls = pki.block(&format!("{}, client_cert: optional", pki.client_ca())),
        iss = issuer.issuer(),
        servers = servers(),
    );
    let gw = Gateway::start(&yaml);
    let token = issuer.token(
        &gw.url("/admin"),
        json!({"sub": "carol", "groups": ["gatehouse-admins"]}),
    );
    let admin_get = async |http: reqwest::Client| {
        let r = http
            .get(gw.url("/admin/catalog"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json::<Value>().await.unwrap_or(Value::Null))
    };

    let (status, body) = admin_get(pki.client(None)).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "client_certificate_required", "{body}");

    let operator = pki.issue("operator", false);
    let (status, body) = admin_get(pki.client(Some(&operator))).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["upstreams"].is_array(), "{body}");

    // MCP clients connect without a certificate.
    let mut client = Client::new(&gw.url("/mcp"));
    client.http = pki.client(None);
    assert_eq!(
        client.initialize().await["result"]["serverInfo"]["name"],
        "main"
    );
}

async fn wait_until_served(pki: &Pki, url: &str, der: &[u8]) -> bool {
    for _ in 0..50 {
        if served_cert(pki, url).await == der {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replaced_certificate_is_served_to_new_connections_and_a_bad_one_is_not() {
    let pki = Pki::new();
    let first = pki.issue("first", true);
    pki.install(&first);
    let gw = Gateway::start(&format!("tls: {}\n{}", pki.block(""), servers()));
    let url = gw.url("/mcp");
    assert_eq!(served_cert(&pki, &url).await, first.der);

    let second = pki.issue("second", true);
    pki.install(&second);
    assert!(
        wait_until_served(&pki, &url, &second.der).await,
        "the new certificate was never served"
    );

    // A key that is not the certificate's: the previous pair stays, the failure is counted.
    let third = pki.issue("third", true);
    std::fs::write(pki.path("server.pem"), &third.cert_pem).unwrap();
    let mut failed = 0.0;
    for _ in 0..50 {
        failed = metric(
            &gw.metrics().await,
            "gatehouse_tls_reloads_total{listener=\"mcp\",outcome=\"failure\"} ",
        );
        if failed >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(failed >= 1.0, "the bad pair was not counted");
    assert_eq!(served_cert(&pki, &url).await, second.der);
    assert!(
        gw.proc
            .stderr()
            .contains("certificate NOT reloaded, keeping the previous one"),
        "{}",
        gw.proc.stderr()
    );
}

#[test]
fn check_names_the_field_of_a_missing_or_mismatched_file() {
    let pki = Pki::new();
    let a = pki.issue("a", true);
    let b = pki.issue("b", true);
    std::fs::write(pki.path("server.pem"), &a.cert_pem).unwrap();
    std::fs::write(pki.path("server.key"), &b.key_pem).unwrap();
    let run = |yaml: &str| {
        let path = pki.path("gatehouse.yaml");
        std::fs::write(&path, yaml).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .arg("check")
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, text) = run(&format!("tls: {}\n{}", pki.block(""), servers()));
    assert!(!ok, "{text}");
    assert!(
        text.contains("tls.key: is not the private key of the certificate"),
        "{text}"
    );

    let missing = Path::new("/nonexistent/gatehouse.pem");
    let (ok, text) = run(&format!(
        "ops:\n  tls: {{ cert: {missing:?}, key: {:?} }}\n{}",
        pki.path("server.key"),
        servers()
    ));
    assert!(!ok, "{text}");
    assert!(text.contains("ops.tls.cert: cannot read"), "{text}");

    std::fs::write(pki.path("server.key"), &a.key_pem).unwrap();
    let (ok, text) = run(&format!("tls: {}\n{}", pki.block(""), servers()));
    assert!(ok, "{text}");
}

/// A client that connects and never starts its handshake is cut off at `handshake_timeout`
/// (it would otherwise hold one of the listener's connection slots for as long as it likes),
/// and counted as a failed handshake.
#[tokio::test(flavor = "multi_thread")]
async fn a_silent_client_is_closed_at_the_handshake_timeout() {
    use tokio::io::AsyncReadExt;
    let pki = Pki::new();
    pki.install(&pki.issue("gatehouse", true));
    let gw = Gateway::start(&format!(
        "tls: {}\n{}",
        pki.block(", handshake_timeout: 300ms"),
        servers()
    ));
    let addr = gw.base.trim_start_matches("https://").to_owned();
    let mut silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 16];
    // The server sends nothing before the ClientHello, so the read ends only when it closes.
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the connection was not closed: {read:?}"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
        "closed after {waited:?}, not at the 300ms handshake timeout"
    );
    let failures = metric(
        &gw.metrics().await,
        "gatehouse_tls_handshake_failures_total{listener=\"mcp\"} ",
    );
    assert_eq!(failures, 1.0);
}
