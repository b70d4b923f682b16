//! Dynamic client registration (RFC 7591), hardened for an endpoint anyone can reach: optional
//! initial access token, strict metadata rules, per-address and global rate limits, a cap on
//! stored clients, and secrets kept only as digests.

use super::metadata::{AuthMethod, ClientMetadata, FieldRules, MetadataError, parse_metadata};
use crate::store::{OAuthClientRecord, Store, StoreError};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// Who may register clients, and how many.
#[derive(Debug, Clone)]
pub struct RegistrationPolicy {
    /// Whether the registration endpoint accepts anything.
    pub enabled: bool,
    /// When set, requests must carry `Authorization: Bearer <this>`.
    pub initial_access_token: Option<String>,
    /// Hosts allowed in https redirect URIs (`*.example.com` for subdomains); empty allows
    /// any. Loopback http redirects are always allowed (RFC 8252).
    pub redirect_hosts: Vec<String>,
    /// Registrations per client address (IPv6: per /64) per hour; 0 refuses all.
    pub per_ip_per_hour: u32,
    /// Registrations per hour in total; 0 refuses all.
    pub global_per_hour: u32,
    /// Most clients stored at once.
    pub max_clients: u64,
    /// Clients unused this long are deleted by the periodic clean-up.
    pub unused_expiry: Duration,
}

impl Default for RegistrationPolicy {
    fn default() -> Self {
        RegistrationPolicy {
            enabled: false,
            initial_access_token: None,
            redirect_hosts: Vec::new(),
            per_ip_per_hour: 10,
            global_per_hour: 100,
            max_clients: 10_000,
            unused_expiry: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// Why a registration was refused; the text is the `error_description`.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    /// Registration is turned off.
    #[error(
        "dynamic client registration is disabled on this gateway; use a client ID metadata document or a pre-registered client"
    )]
    Disabled,
    /// The initial access token is missing or wrong.
    #[error("{0}")]
    InvalidToken(&'static str),
    /// A redirect URI breaks a rule (RFC 7591 `invalid_redirect_uri`).
    #[error("{0}")]
    InvalidRedirectUri(String),
    /// Another field breaks a rule (RFC 7591 `invalid_client_metadata`).
    #[error("{0}")]
    InvalidClientMetadata(String),
    /// Too many registrations recently.
    #[error("too many client registrations; retry after {} seconds", .0.secs())]
    RateLimited(RetryAfter),
    /// The store holds `max_clients` already.
    #[error(
        "this gateway holds the most registered clients it accepts; try again later or ask an administrator"
    )]
    TooManyClients,
    /// The store failed.
    #[error("{0}")]
    Store(#[from] StoreError),
}

impl RegistrationError {
    /// The OAuth `error` code.
    pub fn error_code(&self) -> &'static str {
        match self {
            RegistrationError::Disabled => "access_denied",
            RegistrationError::InvalidToken(_) => "invalid_token",
            RegistrationError::InvalidRedirectUri(_) => "invalid_redirect_uri",
            RegistrationError::InvalidClientMetadata(_) => "invalid_client_metadata",
            RegistrationError::RateLimited(_) | RegistrationError::TooManyClients => {
                "temporarily_unavailable"
            }
            RegistrationError::Store(_) => "server_error",
        }
    }

    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            RegistrationError::Disabled => 403,
            RegistrationError::InvalidToken(_) => 401,
            RegistrationError::InvalidRedirectUri(_)
            | RegistrationError::InvalidClientMetadata(_) => 400,
            RegistrationError::RateLimited(_) => 429,
            RegistrationError::TooManyClients => 503,
            RegistrationError::Store(_) => 500,
        }
    }
}

impl From<MetadataError> for RegistrationError {
    fn from(e: MetadataError) -> Self {
        match e {
            MetadataError::MissingRedirectUris | MetadataError::BadRedirectUri { .. } => {
                RegistrationError::InvalidRedirectUri(e.to_string())
            }
            _ => RegistrationError::InvalidClientMetadata(e.to_string()),
        }
    }
}

/// A request whose metadata passed every rule; `metadata.client_id` is still empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedRegistration {
    /// The validated metadata.
    pub metadata: ClientMetadata,
}

/// A client just registered: the response and the one time its secret exists in clear.
#[derive(Debug)]
pub struct IssuedClient {
    /// What was stored.
    pub record: OAuthClientRecord,
    /// The RFC 7591 §3.2.1 response body.
    pub response: Value,
}

/// Checks that registration is on and, when configured, the initial access token in the
/// `Authorization` header value.
pub fn check_access(
    policy: &RegistrationPolicy,
    authorization: Option<&str>,
) -> Result<(), RegistrationError> {
    if !policy.enabled {
        return Err(RegistrationError::Disabled);
    }
    let Some(expected) = &policy.initial_access_token else {
        return Ok(());
    };
    let presented = authorization
        .and_then(|h| h.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .ok_or(RegistrationError::InvalidToken(
            "registration needs an initial access token: send Authorization: Bearer <token>",
        ))?;
    // Digests have a fixed length, so the comparison time says nothing about the token's length.
    let a = Sha256::digest(presented.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    if bool::from(a.ct_eq(&b)) {
        Ok(())
    } else {
        Err(RegistrationError::InvalidToken(
            "the initial access token is not valid",
        ))
    }
}

/// Validates an RFC 7591 registration request body (its size is the caller's to bound).
pub fn validate_request(
    policy: &RegistrationPolicy,
    body: &Value,
) -> Result<ValidatedRegistration, RegistrationError> {
    let obj = body.as_object().ok_or_else(|| {
        RegistrationError::InvalidClientMetadata(
            "the registration request must be a JSON object".into(),
        )
    })?;
    let rules = FieldRules {
        auth_methods: &[
            AuthMethod::None,
            AuthMethod::ClientSecretBasic,
            AuthMethod::ClientSecretPost,
        ],
        // RFC 7591 §2: an absent method means client_secret_basic.
        default_auth_method: AuthMethod::ClientSecretBasic,
        redirect_hosts: &policy.redirect_hosts,
    };
    Ok(ValidatedRegistration {
        metadata: parse_metadata(obj, "", &rules)?,
    })
}

/// Gives a validated request its id (and secret, for a confidential client).
pub fn issue(request: ValidatedRegistration, ip: Option<IpAddr>, now_ms: i64) -> IssuedClient {
    let mut metadata = request.metadata;
    metadata.client_id = generate_client_id();
    let secret =
        (metadata.token_endpoint_auth_method != AuthMethod::None).then(generate_client_secret);
    let mut response = serde_json::to_value(&metadata).unwrap_or_else(|_| json!({}));
    if let Some(obj) = response.as_object_mut() {
        obj.insert("client_id_issued_at".into(), json!(now_ms / 1000));
        if let Some(secret) = &secret {
            obj.insert("client_secret".into(), json!(secret));
            // 0: the secret does not expire (RFC 7591 §3.2.1).
            obj.insert("client_secret_expires_at".into(), json!(0));
        }
    }
    let record = OAuthClientRecord {
        client_id: metadata.client_id.clone(),
        metadata: serde_json::to_string(&metadata).unwrap_or_default(),
        secret_hash: secret.as_deref().map(hash_secret),
        registered_ip: ip.map(|ip| ip.to_string()),
        created_at_ms: now_ms,
        last_used_ms: None,
        revoked_at_ms: None,
    };
    IssuedClient { record, response }
}

/// The whole registration: access, rate limits, validation, capacity, storage.
pub async fn register(
    policy: &RegistrationPolicy,
    limiter: &RateLimiter,
    store: &Store,
    ip: IpAddr,
    authorization: Option<&str>,
    body: &Value,
) -> Result<IssuedClient, RegistrationError> {
    check_access(policy, authorization)?;
    // Invalid requests count too, so the endpoint cannot be used to probe the rules cheaply.
    limiter.check(ip).map_err(RegistrationError::RateLimited)?;
    let validated = validate_request(policy, body)?;
    if store.count_oauth_clients().await? >= policy.max_clients {
        return Err(RegistrationError::TooManyClients);
    }
    let issued = issue(validated, Some(ip), crate::audit::now_ms());
    store.insert_oauth_client(&issued.record).await?;
    Ok(issued)
}

/// A new client id: `gh_` and 128 random bits, base64url.
pub fn generate_client_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    format!("gh_{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// A new client secret: 256 random bits, base64url.
pub fn generate_client_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Hex SHA-256 of a secret: enough for 256 random bits, which no dictionary contains.
pub fn hash_secret(secret: &str) -> String {
    crate::hex::encode(&Sha256::digest(secret.as_bytes()))
}

/// Whether `secret` hashes to `hash`, compared in constant time.
pub fn secret_matches(secret: &str, hash: &str) -> bool {
    hash_secret(secret).as_bytes().ct_eq(hash.as_bytes()).into()
}

/// How long to wait before trying again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

impl RetryAfter {
    /// Whole seconds, at least 1, for a `Retry-After` header.
    pub fn secs(&self) -> u64 {
        (self.0.as_secs() + u64::from(self.0.subsec_nanos() > 0)).max(1)
    }
}

/// In-memory registration rate limits, per address and global, over a sliding window (the
/// previous fixed window weighted by how much of it still overlaps). Memory is bounded: at most
/// `max_tracked` addresses are remembered.
pub struct RateLimiter {
    per_ip: u32,
    global: u32,
    window: Duration,
    max_tracked: usize,
    state: Mutex<LimiterState>,
}

struct LimiterState {
    global: Counter,
    per_ip: HashMap<IpAddr, Counter>,
}

#[derive(Clone, Copy)]
struct Counter {
    start: Instant,
    current: u32,
    previous: u32,
}

impl Counter {
    fn new(now: Instant) -> Counter {
        Counter {
            start: now,
            current: 0,
            previous: 0,
        }
    }

    /// Moves the window forward to contain `now`.
    fn roll(&mut self, now: Instant, window: Duration) {
        let elapsed = now.saturating_duration_since(self.start);
        if elapsed >= window * 2 {
            *self = Counter::new(now);
        } else if elapsed >= window {
            self.previous = self.current;
            self.current = 0;
            self.start += window;
        }
    }

    /// Ok when one more event fits under `limit`, else how long until it would.
    fn admit(&self, now: Instant, window: Duration, limit: u32) -> Result<(), Duration> {
        let w = window.as_secs_f64();
        let into = now.saturating_duration_since(self.start).as_secs_f64();
        let weighted = f64::from(self.previous) * (1.0 - into / w) + f64::from(self.current);
        if weighted + 1.0 <= f64::from(limit) {
            return Ok(());
        }
        if limit == 0 {
            return Err(window);
        }
        let room = f64::from(limit) - 1.0;
        let wait = if f64::from(self.current) > room {
            // Wait out this window, then until this window's count has faded enough.
            (w - into) + w * (1.0 - room / f64::from(self.current))
        } else {
            let needed = 1.0 - (room - f64::from(self.current)) / f64::from(self.previous);
            w * needed - into
        };
        Err(Duration::from_secs_f64(wait.clamp(0.0, 2.0 * w)))
    }
}

impl RateLimiter {
    /// Limits per hour, remembering at most 10 000 addresses.
    pub fn new(per_ip_per_hour: u32, global_per_hour: u32) -> RateLimiter {
        RateLimiter::with_window(
            per_ip_per_hour,
            global_per_hour,
            Duration::from_secs(3600),
            10_000,
        )
    }

    /// Limits over any window, remembering at most `max_tracked` addresses.
    pub fn with_window(
        per_ip: u32,
        global: u32,
        window: Duration,
        max_tracked: usize,
    ) -> RateLimiter {
        let now = Instant::now();
        RateLimiter {
            per_ip,
            global,
            window: window.max(Duration::from_secs(1)),
            max_tracked: max_tracked.max(1),
            state: Mutex::new(LimiterState {
                global: Counter::new(now),
                per_ip: HashMap::new(),
            }),
        }
    }

    /// Counts one registration from `ip`, or says how long to wait.
    pub fn check(&self, ip: IpAddr) -> Result<(), RetryAfter> {
        self.check_at(ip, Instant::now())
    }

    /// [`check`](Self::check) at a given instant (for tests).
    pub fn check_at(&self, ip: IpAddr, now: Instant) -> Result<(), RetryAfter> {
        let key = limiter_key(ip);
        let window = self.window;
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.global.roll(now, window);
        state
            .global
            .admit(now, window, self.global)
            .map_err(RetryAfter)?;
        if !state.per_ip.contains_key(&key) && state.per_ip.len() >= self.max_tracked {
            // Counters two windows old weigh nothing; drop them first, then the oldest.
            state
                .per_ip
                .retain(|_, c| now.saturating_duration_since(c.start) < window * 2);
            if state.per_ip.len() >= self.max_tracked
                && let Some(oldest) = state
                    .per_ip
                    .iter()
                    .min_by_key(|(_, c)| c.start)
                    .map(|(k, _)| *k)
            {
                state.per_ip.remove(&oldest);
            }
        }
        let counter = state.per_ip.entry(key).or_insert_with(|| Counter::new(now));
        counter.roll(now, window);
        counter
            .admit(now, window, self.per_ip)
            .map_err(RetryAfter)?;
        counter.current += 1;
        state.global.current += 1;
        Ok(())
    }

    /// How many addresses are remembered.
    pub fn tracked(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .per_ip
            .len()
    }
}

/// IPv4 as is; IPv6 by its /64, which one host usually holds whole.
fn limiter_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests;
