//! Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document, MCP 2025-11-25
//! authorization): a client_id that is an https URL names a JSON document describing the client.
//! Fetching a URL chosen by anyone is server-side request forgery waiting to happen, so the host
//! is resolved here, every address checked, the connection made only to checked addresses,
//! redirects refused, and time and size bounded.

use super::metadata::{
    AuthMethod, ClientMetadata, FieldRules, MetadataError, parse_metadata, shown,
};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use url::{Host, Url};

/// How long a failed fetch is remembered, so a flood of requests naming one bad URL costs one
/// fetch every few seconds rather than one each.
const FAILURE_TTL: Duration = Duration::from_secs(5);
/// Longest client_id URL accepted.
const MAX_CLIENT_ID_LEN: usize = 2000;

/// Limits on fetching and caching metadata documents.
#[derive(Debug, Clone)]
pub struct CimdSettings {
    /// Largest document read, in bytes.
    pub max_bytes: usize,
    /// Time for the whole fetch: resolution, connection, response and body.
    pub timeout: Duration,
    /// Allows loopback and private addresses, and http:// to loopback. For tests only.
    pub allow_private_addresses: bool,
    /// Most documents (and recent failures) kept in memory.
    pub cache_max_entries: usize,
    /// Shortest time a document is kept, whatever its `max-age`.
    pub min_ttl: Duration,
    /// Longest time a document is kept, whatever its `max-age`.
    pub max_ttl: Duration,
    /// How long a document without `max-age` is kept.
    pub default_ttl: Duration,
}

impl Default for CimdSettings {
    fn default() -> Self {
        CimdSettings {
            max_bytes: 5 * 1024,
            timeout: Duration::from_secs(3),
            allow_private_addresses: false,
            cache_max_entries: 1000,
            min_ttl: Duration::from_secs(60),
            max_ttl: Duration::from_secs(24 * 3600),
            default_ttl: Duration::from_secs(600),
        }
    }
}

/// Why a metadata-document client_id cannot be used; the text is an `invalid_client`
/// `error_description`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CimdError {
    /// Not a URL at all.
    #[error("client_id is not a URL: {0}")]
    NotUrl(String),
    /// Longer than accepted.
    #[error("client_id is longer than {MAX_CLIENT_ID_LEN} bytes")]
    TooLong,
    /// A scheme other than https.
    #[error("client_id must be an https:// URL")]
    NotHttps,
    /// `https://host` or `https://host/` alone.
    #[error("client_id must have a path after the host, e.g. https://app.example/client.json")]
    NoPath,
    /// A `#fragment`.
    #[error("client_id must not contain a fragment (#)")]
    Fragment,
    /// `user:password@`.
    #[error("client_id must not contain a user name or password")]
    Userinfo,
    /// `.` or `..` path segments.
    #[error("client_id must not contain . or .. path segments")]
    DotSegment,
    /// A URL a parser would rewrite (case, default port, escapes), which would give one document
    /// several ids.
    #[error("client_id is not in canonical form; write it as {canonical}")]
    NotCanonical {
        /// The canonical form.
        canonical: String,
    },
    /// The host is or resolves to an address the gateway must not fetch from.
    // The address itself stays out of the message: callers are unauthenticated, and the text
    // must not turn the gateway into an oracle for internal DNS.
    #[error(
        "client_id host {host} is or resolves to a loopback, private or reserved address; metadata documents are fetched only from public addresses"
    )]
    PrivateAddress {
        /// The host.
        host: String,
        /// The refused address.
        addr: IpAddr,
    },
    /// A port other than the https default.
    #[error("client_id must use the default https port (no :port)")]
    Port,
    /// The host does not resolve.
    #[error("cannot resolve the client_id host {host}")]
    Dns {
        /// The host.
        host: String,
        /// The resolver's error.
        reason: String,
    },
    /// Connecting or reading failed.
    #[error("cannot fetch the client metadata document")]
    Fetch(String),
    /// The whole fetch took too long.
    #[error("fetching the client metadata document took longer than {0} ms")]
    Timeout(u128),
    /// A 3xx answer; redirects are not followed.
    #[error(
        "the client metadata document URL answered {0} (a redirect); redirects are not followed"
    )]
    Redirected(u16),
    /// Any other non-2xx answer.
    #[error("fetching the client metadata document returned HTTP status {0}")]
    Status(u16),
    /// More than `max_bytes`.
    #[error("the client metadata document is larger than {0} bytes")]
    TooLarge(usize),
    /// Not JSON.
    #[error("the client metadata document is not valid JSON: {0}")]
    NotJson(String),
    /// JSON, but not an object.
    #[error("the client metadata document is not a JSON object")]
    NotObject,
    /// The document's `client_id` differs from its URL.
    #[error("the client metadata document's client_id ({found}) differs from its URL ({expected})")]
    ClientIdMismatch {
        /// The URL.
        expected: String,
        /// What the document says (sanitised; empty when absent).
        found: String,
    },
    /// `redirect_uris` is missing or one of them breaks a rule.
    #[error("the client metadata document is invalid: {0}")]
    BadRedirectUri(String),
    /// The document asks for client authentication; only public clients are accepted.
    #[error("the client metadata document is invalid: {0} (a public client)")]
    NotPublicClient(String),
    /// Another field breaks a rule.
    #[error("the client metadata document is invalid: {0}")]
    BadMetadata(String),
    /// The HTTP client could not be built (a TLS setup problem).
    #[error("cannot build the HTTP client for metadata documents: {0}")]
    Client(String),
}

impl From<MetadataError> for CimdError {
    fn from(e: MetadataError) -> Self {
        match e {
            MetadataError::MissingRedirectUris | MetadataError::BadRedirectUri { .. } => {
                CimdError::BadRedirectUri(e.to_string())
            }
            MetadataError::AuthMethod { .. } => CimdError::NotPublicClient(e.to_string()),
            MetadataError::BadField { .. } => CimdError::BadMetadata(e.to_string()),
        }
    }
}

/// Whether `client_id` is to be resolved as a metadata document: an https URL, or in test mode
/// (`allow_private_addresses`) an http URL on 127.0.0.1.
pub fn is_cimd_client_id(client_id: &str, allow_private_addresses: bool) -> bool {
    client_id.starts_with("https://")
        || (allow_private_addresses && client_id.starts_with("http://127.0.0.1"))
}

/// Fetches, validates and caches metadata documents.
pub struct CimdFetcher {
    settings: CimdSettings,
    http: reqwest::Client,
    cache: Mutex<HashMap<String, CacheEntry>>,
    /// One fetch per URL at a time: concurrent callers wait for the same answer.
    inflight: Mutex<HashMap<String, Arc<Pending>>>,
}

type Outcome = Result<Arc<ClientMetadata>, CimdError>;
type Pending = tokio::sync::OnceCell<Outcome>;

struct CacheEntry {
    outcome: Outcome,
    expires: Instant,
}

impl CimdFetcher {
    /// A fetcher with its own HTTP client: no proxy, no redirects, the checking resolver.
    pub fn new(settings: CimdSettings) -> Result<CimdFetcher, CimdError> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would connect on our behalf to an address we never checked.
            .no_proxy()
            .https_only(!settings.allow_private_addresses)
            .connect_timeout(settings.timeout)
            .dns_resolver(Arc::new(CheckingResolver {
                allow_private: settings.allow_private_addresses,
            }))
            .user_agent(concat!(
                "Gatehouse/",
                env!("CARGO_PKG_VERSION"),
                " (client metadata)"
            ))
            .build()
            .map_err(|e| CimdError::Client(e.to_string()))?;
        Ok(CimdFetcher {
            settings,
            http,
            cache: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
        })
    }

    /// Whether this fetcher resolves `client_id` (see [`is_cimd_client_id`]).
    pub fn handles(&self, client_id: &str) -> bool {
        is_cimd_client_id(client_id, self.settings.allow_private_addresses)
    }

    /// The validated metadata of the client `client_id`, from the cache or fetched.
    pub async fn resolve(&self, client_id: &str) -> Result<Arc<ClientMetadata>, CimdError> {
        let url = check_client_id(client_id, self.settings.allow_private_addresses)?;
        if let Some(hit) = self.cached(client_id) {
            return hit;
        }
        let pending = {
            let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            inflight.entry(client_id.to_owned()).or_default().clone()
        };
        // Removes the in-flight entry even when this caller is cancelled mid-fetch.
        let _guard = InflightGuard {
            map: &self.inflight,
            key: client_id,
            pending: &pending,
        };
        pending
            .get_or_init(|| async {
                let (outcome, ttl) = match self.fetch(url, client_id).await {
                    Ok((meta, ttl)) => (Ok(Arc::new(meta)), ttl),
                    Err(e) => (Err(e), Some(FAILURE_TTL)),
                };
                if let Some(ttl) = ttl {
                    self.store(client_id, outcome.clone(), ttl);
                }
                outcome
            })
            .await
            .clone()
    }

    fn cached(&self, client_id: &str) -> Option<Outcome> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .get(client_id)
            .filter(|e| e.expires > Instant::now())
            .map(|e| e.outcome.clone())
    }

    fn store(&self, client_id: &str, outcome: Outcome, ttl: Duration) {
        if self.settings.cache_max_entries == 0 {
            return;
        }
        let now = Instant::now();
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= self.settings.cache_max_entries && !cache.contains_key(client_id) {
            cache.retain(|_, e| e.expires > now);
            if cache.len() >= self.settings.cache_max_entries
                && let Some(victim) = cache
                    .iter()
                    .min_by_key(|(_, e)| e.expires)
                    .map(|(k, _)| k.clone())
            {
                cache.remove(&victim);
            }
        }
        cache.insert(
            client_id.to_owned(),
            CacheEntry {
                outcome,
                expires: now + ttl,
            },
        );
    }

    /// One fetch within the overall timeout; the duration is how long to cache it (`None`:
    /// `no-store`).
    async fn fetch(
        &self,
        url: Url,
        client_id: &str,
    ) -> Result<(ClientMetadata, Option<Duration>), CimdError> {
        let timeout = self.settings.timeout;
        tokio::time::timeout(timeout, self.fetch_unbounded(url, client_id))
            .await
            .map_err(|_| CimdError::Timeout(timeout.as_millis()))?
    }

    async fn fetch_unbounded(
        &self,
        url: Url,
        client_id: &str,
    ) -> Result<(ClientMetadata, Option<Duration>), CimdError> {
        // The resolver sees only names; a literal address must be checked here.
        let literal = match url.host() {
            Some(Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        };
        if let Some(ip) = literal
            && !self.settings.allow_private_addresses
            && !is_public(ip)
        {
            return Err(CimdError::PrivateAddress {
                host: url.host_str().unwrap_or_default().to_owned(),
                addr: ip,
            });
        }
        let max = self.settings.max_bytes;
        let mut response = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(fetch_error)?;
        let status = response.status();
        if status.is_redirection() {
            return Err(CimdError::Redirected(status.as_u16()));
        }
        if !status.is_success() {
            return Err(CimdError::Status(status.as_u16()));
        }
        if response.content_length().is_some_and(|n| n > max as u64) {
            return Err(CimdError::TooLarge(max));
        }
        let ttl = self.ttl(response.headers());
        // Content-Length may be absent or false: count what actually arrives.
        let mut body = Vec::with_capacity(max.min(8192));
        while let Some(chunk) = response.chunk().await.map_err(fetch_error)? {
            if body.len() + chunk.len() > max {
                return Err(CimdError::TooLarge(max));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((parse_document(&body, client_id)?, ttl))
    }

    /// How long to keep a document, from its Cache-Control.
    fn ttl(&self, headers: &reqwest::header::HeaderMap) -> Option<Duration> {
        let s = &self.settings;
        let mut max_age = None;
        for value in headers.get_all(reqwest::header::CACHE_CONTROL) {
            let Ok(value) = value.to_str() else { continue };
            for directive in value.split(',').map(str::trim) {
                let lower = directive.to_ascii_lowercase();
                // We never revalidate, so no-cache means the same as no-store to us.
                if lower == "no-store" || lower == "no-cache" {
                    return None;
                }
                if let Some(v) = lower.strip_prefix("max-age=") {
                    max_age = v
                        .trim_matches('"')
                        .parse::<u64>()
                        .ok()
                        .map(Duration::from_secs);
                }
            }
        }
        Some(
            max_age
                .unwrap_or(s.default_ttl)
                .clamp(s.min_ttl, s.max_ttl.max(s.min_ttl)),
        )
    }
}

/// Validates the client_id URL's shape (draft §3) before anything is fetched.
fn check_client_id(client_id: &str, allow_private: bool) -> Result<Url, CimdError> {
    if client_id.len() > MAX_CLIENT_ID_LEN {
        return Err(CimdError::TooLong);
    }
    if client_id.contains('#') {
        return Err(CimdError::Fragment);
    }
    let url = Url::parse(client_id).map_err(|e| CimdError::NotUrl(e.to_string()))?;
    let loopback_http = allow_private
        && url.scheme() == "http"
        && matches!(url.host(), Some(Host::Ipv4(ip)) if ip.is_loopback());
    if url.scheme() != "https" && !loopback_http {
        return Err(CimdError::NotHttps);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(CimdError::Userinfo);
    }
    // The parser would resolve dot segments away, so look at the text as written.
    let after_authority = client_id
        .splitn(4, '/')
        .nth(3)
        .unwrap_or_default()
        .split(['?', '#'])
        .next()
        .unwrap_or_default();
    if after_authority.split('/').any(|seg| {
        let seg = seg.to_ascii_lowercase().replace("%2e", ".");
        seg == "." || seg == ".."
    }) {
        return Err(CimdError::DotSegment);
    }
    if url.path() == "/" || url.path().is_empty() {
        return Err(CimdError::NoPath);
    }
    // Only the https port: the fetcher must not probe other services' ports.
    if !allow_private && url.port().is_some() {
        return Err(CimdError::Port);
    }
    if url.as_str() != client_id {
        return Err(CimdError::NotCanonical {
            canonical: shown(url.as_str()),
        });
    }
    Ok(url)
}

/// Parses and validates a fetched document for `client_id`.
fn parse_document(body: &[u8], client_id: &str) -> Result<ClientMetadata, CimdError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| CimdError::NotJson(e.to_string()))?;
    let obj = value.as_object().ok_or(CimdError::NotObject)?;
    match obj.get("client_id").and_then(|v| v.as_str()) {
        Some(found) if found == client_id => {}
        found => {
            return Err(CimdError::ClientIdMismatch {
                expected: shown(client_id),
                found: found.map(shown).unwrap_or_default(),
            });
        }
    }
    let rules = FieldRules {
        auth_methods: &[AuthMethod::None],
        default_auth_method: AuthMethod::None,
        redirect_hosts: &[],
    };
    Ok(parse_metadata(obj, client_id, &rules)?)
}

/// Our own error when a resolver or literal check refused, else the transport's message.
fn fetch_error(e: reqwest::Error) -> CimdError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(err) = source {
        if let Some(ours) = err.downcast_ref::<CimdError>() {
            return ours.clone();
        }
        source = err.source();
    }
    if e.is_timeout() {
        return CimdError::Fetch("connecting timed out".into());
    }
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(err) = source {
        message.push_str(": ");
        message.push_str(&err.to_string());
        source = err.source();
    }
    CimdError::Fetch(message)
}

/// Resolves a name and refuses it if any of its addresses is not public; the connection then
/// goes only to the addresses returned here, so a DNS answer cannot change between check and use.
struct CheckingResolver {
    allow_private: bool,
}

impl Resolve for CheckingResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        let allow_private = self.allow_private;
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| CimdError::Dns {
                    host: shown(&host),
                    reason: e.to_string(),
                })?
                .collect();
            if addrs.is_empty() {
                return Err(CimdError::Dns {
                    host: shown(&host),
                    reason: "no addresses".into(),
                }
                .into());
            }
            // All or nothing: a name that also points inside must not be fetched at all.
            if !allow_private && let Some(bad) = addrs.iter().find(|a| !is_public(a.ip())) {
                return Err(CimdError::PrivateAddress {
                    host: shown(&host),
                    addr: bad.ip(),
                }
                .into());
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// Whether `ip` is a globally routable unicast address the gateway may connect to for a client.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(a == 0                                   // "this network"
        || a == 10
        || a == 127
        || (a == 100 && (64..128).contains(&b)) // CGNAT
        || (a == 169 && b == 254)
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 0 && c == 0)       // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2)       // documentation
        || (a == 192 && b == 88 && c == 99)     // 6to4 relay anycast
        || (a == 192 && b == 168)
        || (a == 198 && (18..20).contains(&b))  // benchmarking
        || (a == 198 && b == 51 && c == 100)    // documentation
        || (a == 203 && b == 0 && c == 113)     // documentation
        || a >= 224) // multicast, reserved, broadcast
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let seg = ip.segments();
    // Addresses that carry an IPv4 address are as public as that address.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2..6] == [0, 0, 0, 0] {
        // NAT64 well-known prefix (DNS64 synthesises these on IPv6-only networks).
        let [.., a, b] = seg;
        return is_public_v4(Ipv4Addr::new(
            (a >> 8) as u8,
            a as u8,
            (b >> 8) as u8,
            b as u8,
        ));
    }
    if seg[0] == 0x2002 {
        // 6to4 embeds the IPv4 address in bits 16..48.
        let (a, b) = (seg[1], seg[2]);
        return is_public_v4(Ipv4Addr::new(
            (a >> 8) as u8,
            a as u8,
            (b >> 8) as u8,
            b as u8,
        ));
    }
    // Only 2000::/3 is global unicast; inside it, these blocks are not reachable services:
    // IETF protocol assignments incl. Teredo (2001::/23) and documentation (2001:db8::/32,
    // 3fff::/20).
    (seg[0] & 0xe000) == 0x2000
        && !(seg[0] == 0x2001 && seg[1] < 0x0200)
        && !(seg[0] == 0x2001 && seg[1] == 0x0db8)
        && !(seg[0] == 0x3fff && seg[1] < 0x1000)
}

/// Drops the in-flight entry when the fetch that created it ends, however it ends.
struct InflightGuard<'a> {
    map: &'a Mutex<HashMap<String, Arc<Pending>>>,
    key: &'a str,
    pending: &'a Arc<Pending>,
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        // Once answered, later callers read the cache; if cancelled with nobody else waiting,
        // nobody will finish it. Otherwise a waiter takes the fetch over and keeps the entry.
        let finished_or_orphaned =
            self.pending.initialized() || Arc::strong_count(self.pending) <= 2;
        if finished_or_orphaned
            && map
                .get(self.key)
                .is_some_and(|p| Arc::ptr_eq(p, self.pending))
        {
            map.remove(self.key);
        }
    }
}

#[cfg(test)]
mod tests;
