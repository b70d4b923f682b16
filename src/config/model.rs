//! The YAML configuration model. Every field is documented in `docs/configuration.md`.

use super::auth::{Auth, ServerAuth, Store};
use super::duration::HumanDuration;
use super::secret::ValueSource;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP listener binds to.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Origins browsers may call from; other `Origin` headers get 403.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Size and count limits.
    #[serde(default)]
    pub limits: Limits,
    /// TLS on the MCP listener; absent: plain HTTP (e.g. behind a TLS-terminating proxy).
    #[serde(default)]
    pub tls: Option<super::Tls>,
    /// The operations listener (metrics, health, readiness) and the shutdown drain.
    #[serde(default)]
    pub ops: super::Ops,
    /// Downstream session settings.
    #[serde(default)]
    pub sessions: Sessions,
    /// Logging.
    #[serde(default)]
    pub log: Log,
    /// The gateway's external base URL (scheme, host, port), from which each virtual server's
    /// canonical resource URI is formed; by default `http://` followed by `listen`.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Inbound token verification: trusted issuers, caches, clock skew.
    #[serde(default)]
    pub auth: Auth,
    /// Durable state (API keys): SQLite by default, PostgreSQL for several replicas.
    #[serde(default)]
    pub store: Store,
    /// The audit trail of decisions and calls.
    #[serde(default)]
    pub audit: super::Audit,
    /// OpenTelemetry traces.
    #[serde(default)]
    pub traces: Traces,
    /// The catalog of approved definitions; absent: every upstream is served as it is.
    #[serde(default)]
    pub catalog: Option<CatalogConfig>,
    /// Gatehouse as the authorization server MCP clients see (users sign in at the IdP).
    #[serde(default)]
    pub oauth_server: Option<super::oauth_server::OAuthServerConfig>,
    /// The admin API (`/admin/`): who may use it. Absent: the API is off.
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    /// How users connect their own accounts for `user_oauth` upstreams.
    #[serde(default)]
    pub consent: Option<super::credentials::ConsentConfig>,
    /// Reload the configuration when the file changes (SIGHUP always reloads).
    #[serde(default = "default_true")]
    pub watch_config: bool,
    /// Several organisations on one gateway: their issuers, servers and administrators.
    #[serde(default)]
    pub tenancy: Option<super::tenants::Tenancy>,
    /// Request rates, concurrent calls and daily quotas per principal, tool, server or tenant.
    #[serde(default)]
    pub quotas: Option<super::quotas::Quotas>,
    /// The virtual servers (MCP endpoints) this gateway exposes.
    pub servers: Vec<VirtualServer>,
    /// The upstream MCP servers, by name.
    pub upstreams: BTreeMap<String, Upstream>,
}

fn default_true() -> bool {
    true
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}

/// Size and count limits that protect the gateway from hostile peers.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body a client may POST.
    pub max_body_bytes: usize,
    /// Largest single message accepted from an upstream (JSON body or SSE event).
    pub max_upstream_message_bytes: usize,
    /// Most resource URIs one `subscriptions/listen` may subscribe to (each is checked and
    /// subscribed upstream before the stream opens).
    pub subscriptions_per_listen: usize,
    /// How long a client may take to send its request body.
    pub body_read_timeout: HumanDuration,
    /// Distinct tool and prompt names that label metrics per virtual server; further names
    /// are counted as `unknown`.
    pub metric_names_per_server: usize,
    /// Caps and timers of client connections.
    pub connections: super::Connections,
    /// Most live sessions one principal may hold in this process.
    pub sessions_per_principal: usize,
    /// Most live sessions one client address may hold on a server without authentication.
    pub sessions_per_address: usize,
    /// Most concurrent streams of one session: its GET stream and its requests in progress.
    pub streams_per_session: usize,
    /// Most concurrent streams of one principal (one client address on an open server): GET
    /// streams, `subscriptions/listen` streams and requests in progress, across sessions.
    pub streams_per_principal: usize,
    /// Most 2026-07-28 calls of one principal (or client address) parked at once, waiting
    /// for the answers to an InputRequiredResult.
    pub parked_calls_per_principal: usize,
    /// Most messages held per session from the upstream standalone streams (opened at session
    /// start) until the client's GET stream arrives.
    pub standalone_hold_messages: usize,
    /// How long the upstream standalone streams of a new session wait for the client's GET
    /// stream; also the longest a message is held for it.
    pub standalone_hold_time: HumanDuration,
    /// Most events of a session's GET stream kept for a client resuming it (`Last-Event-ID`).
    pub replay_events_per_stream: usize,
    /// Most bytes of those events kept.
    pub replay_bytes_per_stream: usize,
}

/// Distinct tool and prompt names labelled per virtual server unless `limits` says otherwise
/// (the metrics registry starts with it, before any configuration is read).
pub const DEFAULT_METRIC_NAMES_PER_SERVER: usize = 500;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 4 * 1024 * 1024,
            max_upstream_message_bytes: 64 * 1024 * 1024,
            subscriptions_per_listen: 100,
            body_read_timeout: HumanDuration(Duration::from_secs(30)),
            metric_names_per_server: DEFAULT_METRIC_NAMES_PER_SERVER,
            connections: super::Connections::default(),
            sessions_per_principal: 64,
            sessions_per_address: 64,
            streams_per_session: 16,
            streams_per_principal: 128,
            parked_calls_per_principal: 16,
            standalone_hold_messages: 64,
            standalone_hold_time: HumanDuration(Duration::from_secs(30)),
            replay_events_per_stream: 64,
            replay_bytes_per_stream: 1024 * 1024,
        }
    }
}

/// Downstream session settings.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Sessions {
    /// Keys that seal session ids; the first seals, all open (rotation). Empty: a random key
    /// per process, so sessions do not survive a restart or move between replicas.
    pub keys: Vec<super::keys::KeyConfig>,
    /// A session ends this long after it began, whatever its activity.
    pub max_lifetime: HumanDuration,
    /// A session without requests or an open stream for this long ends, and its upstream
    /// sessions are closed.
    pub idle_timeout: HumanDuration,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions {
            keys: Vec::new(),
            max_lifetime: HumanDuration(Duration::from_secs(24 * 3600)),
            idle_timeout: HumanDuration(Duration::from_secs(30 * 60)),
        }
    }
}

/// Logging settings.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `gatehouse=debug,info`; `RUST_LOG` overrides it.
    pub level: String,
    /// The per-request access log.
    pub access: super::AccessLog,
}

/// OpenTelemetry trace export (OTLP over HTTP).
#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Traces {
    /// The OTLP/HTTP traces endpoint, e.g. `http://127.0.0.1:4318/v1/traces`; none: no export.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// Fraction of new traces sampled (a sampled parent from the client is always followed).
    pub sample_ratio: f64,
    /// Longest a finished span waits before it is exported.
    pub export_interval: HumanDuration,
}

impl Default for Traces {
    fn default() -> Self {
        Traces {
            otlp_endpoint: None,
            service_name: "gatehouse".into(),
            sample_ratio: 1.0,
            export_interval: HumanDuration(std::time::Duration::from_secs(5)),
        }
    }
}

impl Default for Log {
    fn default() -> Self {
        Log {
            format: LogFormat::Text,
            level: "info".into(),
            access: super::AccessLog::default(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A virtual server: one MCP endpoint merging several upstreams.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VirtualServer {
    /// Name shown to clients in `serverInfo` and used in logs.
    pub name: String,
    /// URL path of the endpoint, e.g. `/mcp`.
    pub path: String,
    /// Upstream names (keys of `upstreams`), in priority order.
    pub upstreams: Vec<String>,
    /// When names get the upstream prefix.
    #[serde(default)]
    pub prefix: PrefixMode,
    /// Between prefix and name.
    #[serde(default = "default_separator")]
    pub separator: String,
    /// What a list does when an upstream fails.
    #[serde(default)]
    pub on_upstream_error: OnUpstreamError,
    /// Instructions returned to clients (defaults to the upstreams' own, joined).
    #[serde(default)]
    pub instructions: Option<String>,
    /// Who may call this server; absent means anyone who can reach it.
    #[serde(default)]
    pub auth: Option<ServerAuth>,
    /// Which principal may see and use which function; absent means everything is allowed.
    #[serde(default)]
    pub policy: Option<super::Policy>,
    /// The tenant (under `tenancy.tenants`) this server belongs to.
    #[serde(default)]
    pub tenant: Option<String>,
    /// External hooks asked before requests and after results, in order.
    #[serde(default)]
    pub interceptors: Vec<super::interceptors::Interceptor>,
    /// Built-in scanning of results for secrets, personal data and injected instructions.
    #[serde(default)]
    pub guardrails: Option<super::guardrails::Guardrails>,
    /// Tools, prompts and resources as clients see them (renamed, fixed, narrowed).
    #[serde(default, rename = "virtual")]
    pub virtuals: Option<super::virtual_tools::Virtual>,
}

fn default_separator() -> String {
    "__".into()
}

/// When tool, prompt and resource-template names are prefixed with their upstream's name.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PrefixMode {
    /// Always prefix.
    Always,
    /// Prefix only when the virtual server has more than one upstream.
    #[default]
    Auto,
    /// Never prefix; two upstreams offering the same name is an error reported at run time.
    Never,
}

/// How lists behave when an upstream fails.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnUpstreamError {
    /// Return what the healthy upstreams offer and log a warning (fail-open).
    #[default]
    Partial,
    /// Fail the whole list (fail-closed).
    Fail,
}

/// An upstream MCP server.
#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// `http` or `stdio`.
    pub kind: UpstreamKind,
    /// Name used as the prefix (defaults to the upstream's key).
    #[serde(default)]
    pub prefix: Option<String>,
    /// http: the MCP endpoint URL.
    #[serde(default)]
    pub url: Option<String>,
    /// http: extra request headers; values may come from `env` or `file`.
    #[serde(default)]
    pub headers: BTreeMap<String, ValueSource>,
    /// http: which protocol generation to speak.
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// stdio: the program to run.
    #[serde(default)]
    pub command: Option<String>,
    /// stdio: its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// stdio: extra environment variables; values may come from `env` or `file`.
    #[serde(default)]
    pub env: BTreeMap<String, ValueSource>,
    /// stdio: variables passed on from the gateway's own environment; the child gets these,
    /// `env` and the credential variable, nothing else. A name ending in `*` is a prefix.
    #[serde(default = "default_inherit_env")]
    pub inherit_env: Vec<String>,
    /// stdio: working directory.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// Time limits.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// stdio: restart backoff after a crash.
    #[serde(default)]
    pub restart: Restart,
    /// The credential the gateway presents to this upstream.
    #[serde(default)]
    pub auth: Option<super::credentials::UpstreamAuth>,
}

/// What a stdio child inherits by default: enough to find programs, a home, a locale and a
/// temporary directory, and none of the secrets operators keep in the gateway's environment.
pub const DEFAULT_INHERIT_ENV: [&str; 4] = ["PATH", "HOME", "LANG", "TMPDIR"];

fn default_inherit_env() -> Vec<String> {
    DEFAULT_INHERIT_ENV
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}

/// Upstream transport.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamKind {
    /// Streamable HTTP.
    Http,
    /// A child process speaking JSON-RPC on stdin/stdout.
    Stdio,
}

/// Which MCP generation to use with an HTTP upstream.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default, schemars::JsonSchema)]
pub enum UpstreamProtocol {
    /// Probe `server/discover`, fall back to `initialize`.
    #[default]
    #[serde(rename = "auto")]
    Auto,
    /// Session-based (2025-11-25 and older).
    #[serde(rename = "2025-11-25")]
    Sessions,
    /// Stateless 2026-07-28.
    #[serde(rename = "2026-07-28")]
    Stateless,
}

/// Upstream time limits.
#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// TCP/TLS connect (http) or process start and initialize (stdio).
    pub connect: HumanDuration,
    /// One request, from send to final response.
    pub request: HumanDuration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: HumanDuration(Duration::from_secs(10)),
            request: HumanDuration(Duration::from_secs(60)),
        }
    }
}

/// Restart backoff for stdio upstreams.
#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Restart {
    /// First delay after a crash.
    pub initial_backoff: HumanDuration,
    /// Upper bound of the doubling delay.
    pub max_backoff: HumanDuration,
}

impl Default for Restart {
    fn default() -> Self {
        Restart {
            initial_backoff: HumanDuration(Duration::from_millis(250)),
            max_backoff: HumanDuration(Duration::from_secs(30)),
        }
    }
}

impl Config {
    /// The base URL resource URIs are formed from, without a trailing `/`.
    pub fn public_base(&self) -> String {
        match &self.public_url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => format!("http://{}", self.listen),
        }
    }

    /// With an `oauth_server`, makes its tokens acceptable as issuer `gatehouse` (issuer
    /// `public_url`, keys at `/oauth/jwks`). Servers name it in `auth.issuers` (or accept
    /// every issuer).
    pub fn add_facade_issuer(&mut self) -> Option<super::Issue> {
        use super::oauth_server::FACADE_ISSUER_NAME;
        self.oauth_server.as_ref()?;
        if self.auth.issuers.contains_key(FACADE_ISSUER_NAME) {
            return Some(super::Issue::new(
                format!("auth.issuers.{FACADE_ISSUER_NAME}"),
                "this name is the oauth_server's own issuer; rename this one",
            ));
        }
        let Some(public) = self
            .public_url
            .as_deref()
            .map(|u| u.trim_end_matches('/').to_owned())
        else {
            return Some(super::Issue::new(
                "public_url",
                "required with oauth_server: it is the issuer of the tokens Gatehouse signs",
            ));
        };
        self.auth.issuers.insert(
            FACADE_ISSUER_NAME.into(),
            super::Issuer {
                issuer: public.clone(),
                metadata_url: None,
                jwks_uri: Some(format!("{public}/oauth/jwks")),
                algorithms: vec!["ES256".into()],
                audiences: Vec::new(),
                introspection: None,
                claims: super::ClaimPaths::default(),
            },
        );
        None
    }

    /// The canonical resource URI of a virtual server (RFC 8707, RFC 9728 `resource`).
    pub fn resource_uri(&self, server: &VirtualServer) -> String {
        server
            .auth
            .as_ref()
            .and_then(|a| a.resource.clone())
            .unwrap_or_else(|| format!("{}{}", self.base_of(server), server.path))
    }

    /// The external base URL `server` is reached at: its tenant's `public_url`, or
    /// [`public_base`](Self::public_base).
    pub fn base_of(&self, server: &VirtualServer) -> String {
        self.tenant_base(self.tenant_of(server).map(|(_, t)| t))
    }

    /// The external base URL of `tenant`'s servers (of the gateway's own paths with none).
    pub fn tenant_base(&self, tenant: Option<&super::tenants::Tenant>) -> String {
        match tenant.and_then(|t| t.public_url.as_deref()) {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => self.public_base(),
        }
    }
}

/// People named by subject, group or role (console readers, a tenant's administrators).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct People {
    /// These subjects.
    #[serde(default)]
    pub subjects: Vec<String>,
    /// Members of these groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Holders of these roles.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// `catalog`: upstream definitions are served only once approved (and as approved).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CatalogConfig {
    /// Upstreams served without review (their definitions are still recorded by `catalog add`).
    #[serde(default)]
    pub trusted: Vec<String>,
    /// Extra scanner rules.
    #[serde(default)]
    pub rules: Vec<crate::catalog::scan::CustomRule>,
    /// How often the gateway lists every upstream itself to notice drift even when no client
    /// lists (`0s`: only clients' listings are compared). Upstreams whose credentials are
    /// per user cannot be listed by the gateway alone and are left to clients' listings.
    #[serde(default = "default_recheck")]
    pub recheck: HumanDuration,
}

fn default_recheck() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}

impl Default for CatalogConfig {
    fn default() -> Self {
        CatalogConfig {
            trusted: Vec::new(),
            rules: Vec::new(),
            recheck: default_recheck(),
        }
    }
}

/// `admin`: the HTTP admin API, for callers authenticated like a protected virtual server
/// and named here (by subject, group or role), and the browser console behind the IdP.
#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Whose tokens are accepted, and which scopes every admin request needs; the resource is
    /// `public_url` followed by `/admin` unless set. Without it the JSON admin API is off
    /// (the console, when configured, still serves).
    #[serde(default)]
    pub auth: Option<ServerAuth>,
    /// Subjects allowed to administer.
    #[serde(default)]
    pub subjects: Vec<String>,
    /// Members of these groups may administer.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Holders of these roles may administer.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Refuse admin requests on connections without a client certificate verified against
    /// `tls.client_ca` (set `tls.client_cert: optional` so that MCP clients need none).
    #[serde(default)]
    pub require_client_cert: bool,
    /// The browser console at `/admin/`: sign-in through the enterprise IdP.
    #[serde(default)]
    pub console: Option<super::console::ConsoleConfig>,
}
