//! Who a client is: a client_id is looked up among the pre-registered clients of the
//! configuration, then as a metadata document URL, then among dynamically registered clients,
//! and the result says which redirect URIs it may use and how it authenticates.

use super::cimd::{CimdError, CimdFetcher};
use super::metadata::{AuthMethod, ClientMetadata, redirect_matches, shown};
use super::registration::secret_matches;
use crate::store::{Store, StoreError};
use std::collections::HashMap;
use std::sync::Arc;

/// Longest client_id looked up; longer ones are refused before any work.
const MAX_CLIENT_ID_LEN: usize = 2048;
/// A dynamic client's last use is written at most this often, not on every token.
const TOUCH_INTERVAL_MS: i64 = 3600 * 1000;

/// A client declared in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreRegistered {
    /// Its identifier.
    pub client_id: String,
    /// Its exact redirect URIs.
    pub redirect_uris: Vec<String>,
    /// Name for the consent page.
    pub client_name: Option<String>,
    /// Hex SHA-256 of its secret; `None` for a public client.
    pub secret_hash: Option<String>,
}

/// A dynamically registered client, read from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamicClient {
    /// Its validated metadata.
    pub metadata: ClientMetadata,
    /// Hex SHA-256 of its secret; `None` for a public client.
    pub secret_hash: Option<String>,
    /// When it was last used, milliseconds since the epoch.
    pub last_used_ms: Option<i64>,
}

/// A client the gateway knows, whichever way it became known.
#[derive(Debug, Clone)]
pub enum RegisteredClient {
    /// Declared in the configuration.
    PreRegistered(Arc<PreRegistered>),
    /// Described by a Client ID Metadata Document (always public).
    Metadata(Arc<ClientMetadata>),
    /// Registered through RFC 7591.
    Dynamic(Arc<DynamicClient>),
}

impl RegisteredClient {
    /// Its client_id.
    pub fn client_id(&self) -> &str {
        match self {
            RegisteredClient::PreRegistered(p) => &p.client_id,
            RegisteredClient::Metadata(m) => &m.client_id,
            RegisteredClient::Dynamic(d) => &d.metadata.client_id,
        }
    }

    /// The name to show the user: its client_name, else its client_id.
    pub fn display_name(&self) -> &str {
        let name = match self {
            RegisteredClient::PreRegistered(p) => p.client_name.as_deref(),
            RegisteredClient::Metadata(m) => m.client_name.as_deref(),
            RegisteredClient::Dynamic(d) => d.metadata.client_name.as_deref(),
        };
        name.unwrap_or_else(|| self.client_id())
    }

    /// How it became known, for logs and audit.
    pub fn kind(&self) -> &'static str {
        match self {
            RegisteredClient::PreRegistered(_) => "pre-registered",
            RegisteredClient::Metadata(_) => "metadata-document",
            RegisteredClient::Dynamic(_) => "dynamic",
        }
    }

    /// Its registered redirect URIs.
    pub fn redirect_uris(&self) -> &[String] {
        match self {
            RegisteredClient::PreRegistered(p) => &p.redirect_uris,
            RegisteredClient::Metadata(m) => &m.redirect_uris,
            RegisteredClient::Dynamic(d) => &d.metadata.redirect_uris,
        }
    }

    /// Whether `uri` is one of its redirect URIs: exactly, or for a loopback URI on any port
    /// (RFC 8252 §7.3).
    pub fn redirect_uri_allowed(&self, uri: &str) -> bool {
        self.redirect_uris()
            .iter()
            .any(|registered| redirect_matches(registered, uri))
    }

    /// How it authenticates at the token endpoint.
    pub fn auth_method(&self) -> AuthMethod {
        match self {
            RegisteredClient::PreRegistered(p) if p.secret_hash.is_some() => {
                AuthMethod::ClientSecretBasic
            }
            RegisteredClient::PreRegistered(_) | RegisteredClient::Metadata(_) => AuthMethod::None,
            RegisteredClient::Dynamic(d) => d.metadata.token_endpoint_auth_method,
        }
    }

    /// Whether it may hold refresh tokens: pre-registered clients may; a registered client or
    /// metadata document only if its `grant_types` lists `refresh_token` (RFC 7591 §2: absent
    /// means `authorization_code` alone).
    pub fn allows_refresh(&self) -> bool {
        let listed = |m: &ClientMetadata| m.grant_types.iter().any(|g| g == "refresh_token");
        match self {
            RegisteredClient::PreRegistered(_) => true,
            RegisteredClient::Metadata(m) => listed(m),
            RegisteredClient::Dynamic(d) => listed(&d.metadata),
        }
    }

    /// Whether it has no secret (PKCE alone binds codes to it).
    pub fn is_public(&self) -> bool {
        self.secret_hash().is_none()
    }

    /// Whether `secret` is its secret (constant time); always false for a public client.
    pub fn verify_secret(&self, secret: &str) -> bool {
        self.secret_hash()
            .is_some_and(|hash| secret_matches(secret, hash))
    }

    fn secret_hash(&self) -> Option<&str> {
        match self {
            RegisteredClient::PreRegistered(p) => p.secret_hash.as_deref(),
            RegisteredClient::Metadata(_) => None,
            RegisteredClient::Dynamic(d) => d.secret_hash.as_deref(),
        }
    }
}

/// Why a client_id cannot be used; [`ClientError::error_code`] gives the OAuth error.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nobody registered this id.
    #[error("unknown client_id {0}")]
    Unknown(String),
    /// Longer than anything this gateway issues or fetches.
    #[error("client_id is longer than {MAX_CLIENT_ID_LEN} bytes")]
    TooLong,
    /// An administrator revoked it.
    #[error("client {0} was revoked; register again")]
    Revoked(String),
    /// A URL client_id while metadata documents are off.
    #[error(
        "client_id is a URL, but this gateway does not accept client ID metadata documents; use a registered or pre-registered client_id"
    )]
    MetadataDocumentsDisabled,
    /// The metadata document could not be used.
    #[error("{0}")]
    Cimd(#[from] CimdError),
    /// The stored metadata does not parse (the row was damaged).
    #[error("stored metadata of client {client_id} is unreadable: {reason}")]
    Corrupt {
        /// The client.
        client_id: String,
        /// The parser's message.
        reason: String,
    },
    /// The store failed.
    #[error("{0}")]
    Store(#[from] StoreError),
}

impl ClientError {
    /// `invalid_client` for anything about the client; `server_error` when the gateway failed.
    pub fn error_code(&self) -> &'static str {
        match self {
            ClientError::Corrupt { .. } | ClientError::Store(_) => "server_error",
            ClientError::Cimd(CimdError::Client(_)) => "server_error",
            _ => "invalid_client",
        }
    }
}

/// Every way the gateway knows clients.
pub struct ClientRegistry {
    pre: HashMap<String, Arc<PreRegistered>>,
    cimd: Option<CimdFetcher>,
    store: Option<Store>,
}

impl ClientRegistry {
    /// A registry of the configured clients, metadata documents when `cimd` is set, and
    /// dynamic clients when `store` is set.
    pub fn new(pre: Vec<PreRegistered>, cimd: Option<CimdFetcher>, store: Option<Store>) -> Self {
        let pre = pre
            .into_iter()
            .map(|p| (p.client_id.clone(), Arc::new(p)))
            .collect();
        ClientRegistry { pre, cimd, store }
    }

    /// Finds the client `client_id` names.
    pub async fn find(&self, client_id: &str) -> Result<RegisteredClient, ClientError> {
        if client_id.len() > MAX_CLIENT_ID_LEN {
            return Err(ClientError::TooLong);
        }
        if let Some(p) = self.pre.get(client_id) {
            return Ok(RegisteredClient::PreRegistered(p.clone()));
        }
        // A URL is a metadata document or nothing (the store never issues URLs); the fetcher
        // explains what is wrong with one it will not fetch, e.g. plain http.
        let has_prefix = |p: &str| {
            client_id
                .get(..p.len())
                .is_some_and(|h| h.eq_ignore_ascii_case(p))
        };
        if has_prefix("https://") || has_prefix("http://") {
            return match &self.cimd {
                Some(cimd) => Ok(RegisteredClient::Metadata(cimd.resolve(client_id).await?)),
                None => Err(ClientError::MetadataDocumentsDisabled),
            };
        }
        let Some(store) = &self.store else {
            return Err(ClientError::Unknown(shown(client_id)));
        };
        let record = store
            .oauth_client(client_id)
            .await?
            .ok_or_else(|| ClientError::Unknown(shown(client_id)))?;
        if record.revoked_at_ms.is_some() {
            return Err(ClientError::Revoked(shown(client_id)));
        }
        let metadata: ClientMetadata =
            serde_json::from_str(&record.metadata).map_err(|e| ClientError::Corrupt {
                client_id: shown(client_id),
                reason: e.to_string(),
            })?;
        if metadata.client_id != record.client_id {
            return Err(ClientError::Corrupt {
                client_id: shown(client_id),
                reason: "its metadata names another client_id".into(),
            });
        }
        Ok(RegisteredClient::Dynamic(Arc::new(DynamicClient {
            metadata,
            secret_hash: record.secret_hash,
            last_used_ms: record.last_used_ms,
        })))
    }

    /// Records that a dynamic client was used now (at most once an hour, to spare the store a
    /// write per token); other clients have nothing to record.
    pub async fn mark_used(&self, client: &RegisteredClient) -> Result<(), ClientError> {
        let (RegisteredClient::Dynamic(d), Some(store)) = (client, &self.store) else {
            return Ok(());
        };
        let now = crate::audit::now_ms();
        if d.last_used_ms.is_some_and(|t| now - t < TOUCH_INTERVAL_MS) {
            return Ok(());
        }
        store.touch_oauth_client(client.client_id(), now).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
