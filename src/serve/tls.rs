//! TLS for a listener: the rustls server configuration built from the `tls` block (ALPN h2 and
//! http/1.1, client-certificate verification), kept current by polling the files' contents
//! (an invalid new pair keeps the previous one), and the handshake under a timeout.

use crate::config::{ClientCert, Loaded, Tls};
use crate::telemetry::metrics::METRICS;
use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::pki_types::CertificateDer;
use rustls::server::WebPkiClientVerifier;
use sha2::{Digest, Sha256};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;

/// How often the certificate files are checked for changes.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// The client certificate a connection presented and the CA verified, as a request extension.
#[derive(Clone, Debug)]
pub struct ClientCertificate(pub Arc<CertificateDer<'static>>);

/// The provider every TLS use in the gateway shares.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The server configuration for `loaded`; on failure, the field (relative to the `tls` block)
/// and what is wrong.
pub fn server_config(
    loaded: Loaded,
    mode: ClientCert,
) -> Result<ServerConfig, (&'static str, String)> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ("cert", e.to_string()))?;
    let builder = match loaded.client_roots {
        None => builder.with_no_client_auth(),
        Some(roots) => {
            let mut store = rustls::RootCertStore::empty();
            for cert in roots {
                store
                    .add(cert)
                    .map_err(|e| ("client_ca", format!("not a usable CA certificate: {e}")))?;
            }
            let mut verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider);
            if mode == ClientCert::Optional {
                verifier = verifier.allow_unauthenticated();
            }
            let verifier = verifier
                .build()
                .map_err(|e| ("client_ca", format!("cannot verify clients with it: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(loaded.chain, loaded.key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => (
                "key",
                "is not the private key of the certificate in `cert`".to_owned(),
            ),
            e => ("key", format!("cannot be used with `cert`: {e}")),
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A listener's TLS configuration, replaced when its files change.
pub struct TlsSource {
    /// `mcp` or `ops`, for logs and metrics.
    listener: &'static str,
    /// The configuration field of the block (`tls`, `ops.tls`).
    prefix: &'static str,
    tls: Tls,
    current: ArcSwap<ServerConfig>,
    /// Digest of the files the current configuration came from (or last failed to load).
    seen: Mutex<[u8; 32]>,
}

impl TlsSource {
    /// Loads the block's files; fails with the same message `gatehouse check` gives.
    pub fn new(
        listener: &'static str,
        prefix: &'static str,
        tls: Tls,
    ) -> anyhow::Result<Arc<TlsSource>> {
        let seen = digest(&tls);
        let config = build(&tls, prefix)?;
        Ok(Arc::new(TlsSource {
            listener,
            prefix,
            tls,
            current: ArcSwap::from_pointee(config),
            seen: Mutex::new(seen),
        }))
    }

    /// The configuration new connections get.
    fn current(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }

    /// Time a client has for its handshake.
    fn handshake_timeout(&self) -> Duration {
        self.tls.handshake_timeout.0
    }

    /// Loads the files again if their content changed; keeps the current configuration when
    /// the new files cannot be used.
    pub fn refresh(&self) {
        let now = digest(&self.tls);
        {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if *seen == now {
                return;
            }
            *seen = now;
        }
        match build(&self.tls, self.prefix) {
            Ok(config) => {
                self.current.store(Arc::new(config));
                METRICS.ops.tls_reload(self.listener, true);
                tracing::info!(
                    listener = self.listener,
                    "{}: certificate reloaded; new connections use it",
                    self.prefix
                );
            }
            Err(e) => {
                METRICS.ops.tls_reload(self.listener, false);
                tracing::error!(
                    listener = self.listener,
                    "certificate NOT reloaded, keeping the previous one: {e}"
                );
            }
        }
    }

    /// Polls the files for as long as the process runs.
    pub async fn watch(self: Arc<Self>) {
        let mut tick = tokio::time::interval(WATCH_INTERVAL);
        loop {
            tick.tick().await;
            self.refresh();
        }
    }

    /// Performs the handshake under the timeout. A failure is counted and logged at debug
    /// only: scanners and health checkers that close early would otherwise flood the log.
    pub async fn accept(
        &self,
        socket: TcpStream,
        peer: std::net::SocketAddr,
    ) -> Option<(
        tokio_rustls::server::TlsStream<TcpStream>,
        Option<ClientCertificate>,
    )> {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.current());
        let failed = |why: String| {
            METRICS.ops.tls_handshake_failure(self.listener);
            tracing::debug!(listener = self.listener, %peer, "TLS handshake failed: {why}");
        };
        match tokio::time::timeout(self.handshake_timeout(), acceptor.accept(socket)).await {
            Ok(Ok(stream)) => {
                let cert = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| ClientCertificate(Arc::new(c.clone().into_owned())));
                Some((stream, cert))
            }
            Ok(Err(e)) => {
                failed(e.to_string());
                None
            }
            Err(_) => {
                failed(format!(
                    "no handshake within {}ms",
                    self.handshake_timeout().as_millis()
                ));
                None
            }
        }
    }
}

fn build(tls: &Tls, prefix: &str) -> anyhow::Result<ServerConfig> {
    let loaded = tls.load(prefix)?;
    server_config(loaded, tls.client_cert).map_err(|(f, m)| anyhow::anyhow!("{prefix}.{f}: {m}"))
}

/// A digest of every file of the block; unreadable files count as empty, so that their
/// return is noticed.
fn digest(tls: &Tls) -> [u8; 32] {
    let mut h = Sha256::new();
    for path in [Some(&tls.cert), Some(&tls.key), tls.client_ca.as_ref()]
        .into_iter()
        .flatten()
    {
        let bytes = std::fs::read(path).unwrap_or_default();
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    h.finalize().into()
}
