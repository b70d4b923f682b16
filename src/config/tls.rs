//! Configuration of TLS on the listeners (`tls` for the MCP listener, `ops.tls` for the
//! operations listener): the certificate chain and key files, and client-certificate
//! verification. The files are read here too, so that `gatehouse check` and a reload report
//! a missing, unreadable or mismatched pair with the field that names it.

use super::duration::HumanDuration;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// TLS on one listener.
#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// PEM file holding the server certificate followed by its intermediates.
    pub cert: PathBuf,
    /// PEM file holding the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM file of the CA certificates that client certificates must chain to; absent: no
    /// client certificate is asked for.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: `required` (a connection without a verified client certificate is
    /// refused during the handshake) or `optional` (a client may connect without one; routes
    /// that need one, such as the admin API with `admin.require_client_cert`, refuse then).
    #[serde(default)]
    pub client_cert: ClientCert,
    /// Time a client has to complete its TLS handshake once connected.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout: HumanDuration,
}

fn default_handshake_timeout() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(10))
}

/// Whether a listener with `client_ca` insists on a client certificate.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClientCert {
    /// Every connection presents a certificate the CA signed.
    #[default]
    Required,
    /// A connection may present none; one presented must verify.
    Optional,
}

/// The PEM contents of one listener's files, parsed.
#[derive(Debug)]
pub struct Loaded {
    /// The chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The key.
    pub key: PrivateKeyDer<'static>,
    /// The client CA certificates, when configured.
    pub client_roots: Option<Vec<CertificateDer<'static>>>,
}

/// Why a listener's TLS files cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    /// A file could not be read.
    #[error("{field}: cannot read {path}: {source}")]
    Read {
        /// The configuration field naming the file.
        field: String,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file holds no usable PEM item of the expected kind.
    #[error("{field}: {path}: {what}")]
    Content {
        /// The configuration field naming the file.
        field: String,
        /// The file.
        path: PathBuf,
        /// What was wrong.
        what: String,
    },
}

impl TlsFileError {
    /// The configuration field the error is about.
    pub fn field(&self) -> &str {
        match self {
            TlsFileError::Read { field, .. } | TlsFileError::Content { field, .. } => field,
        }
    }

    /// The message without the field.
    pub fn message(&self) -> String {
        match self {
            TlsFileError::Read { path, source, .. } => {
                format!("cannot read {}: {source}", path.display())
            }
            TlsFileError::Content { path, what, .. } => format!("{}: {what}", path.display()),
        }
    }
}

fn read(field: &str, path: &Path) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|source| TlsFileError::Read {
        field: field.to_owned(),
        path: path.to_owned(),
        source,
    })
}

fn certs(field: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let pem = read(field, path)?;
    let bad = |what: String| TlsFileError::Content {
        field: field.to_owned(),
        path: path.to_owned(),
        what,
    };
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(bad("holds no CERTIFICATE block".into()));
    }
    Ok(certs)
}

impl Tls {
    /// Reads and parses the files; `prefix` is the field of this block (`tls`, `ops.tls`).
    /// Whether the key belongs to the certificate is checked when the server configuration
    /// is built ([`crate::serve`]), and by [`check`].
    pub fn load(&self, prefix: &str) -> Result<Loaded, TlsFileError> {
        let chain = certs(&format!("{prefix}.cert"), &self.cert)?;
        let key_field = format!("{prefix}.key");
        let pem = read(&key_field, &self.key)?;
        let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsFileError::Content {
            field: key_field,
            path: self.key.clone(),
            what: format!("holds no private key: {e}"),
        })?;
        let client_roots = match &self.client_ca {
            Some(p) => Some(certs(&format!("{prefix}.client_ca"), p)?),
            None => None,
        };
        Ok(Loaded {
            chain,
            key,
            client_roots,
        })
    }
}

/// Reports every problem of one listener's TLS block: files missing, unreadable, not PEM,
/// a key that is not the certificate's, a CA file rustls cannot use.
pub fn check(tls: &Tls, prefix: &str, issues: &mut dyn FnMut(String, String)) {
    if tls.handshake_timeout.0.is_zero() {
        issues(
            format!("{prefix}.handshake_timeout"),
            "must be longer than 0s".into(),
        );
    }
    if tls.client_ca.is_none() && tls.client_cert == ClientCert::Optional {
        issues(
            format!("{prefix}.client_cert"),
            "needs `client_ca` (the CA that signs client certificates)".into(),
        );
    }
    let loaded = match tls.load(prefix) {
        Ok(l) => l,
        Err(e) => return issues(e.field().to_owned(), e.message()),
    };
    if let Err((field, message)) = crate::serve::tls::server_config(loaded, tls.client_cert) {
        issues(format!("{prefix}.{field}"), message);
    }
}
