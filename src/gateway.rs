//! The running gateway: the current configuration's runtime (swapped atomically on reload),
//! the session registry and the sealing keys.

use crate::auth::{Authenticator, ServerGuard};
use crate::catalog::Catalog;
use crate::config::Config;
use crate::credentials::consent::ConsentService;
use crate::downstream::rules::OriginPolicy;
use crate::downstream::session_registry::SessionRegistry;
use crate::federation::VirtualServer;
use crate::keyring::Keyring;
use crate::policy::CompiledPolicy;
use crate::store::Store;
use crate::upstream::UpstreamClient;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// Everything built from one configuration.
pub struct Runtime {
    /// The configuration it was built from.
    pub config: Config,
    /// What serves each virtual server, by [`Config::route_key`] (its path, with tenants
    /// resolved by host its tenant and path): find one with [`Runtime::route`].
    pub routes: HashMap<String, Route>,
    /// With tenants resolved by host: each host's tenant (empty otherwise).
    pub tenant_hosts: HashMap<String, Arc<str>>,
    /// Each server's and upstream's tenant.
    pub owners: Arc<crate::config::tenants::Owners>,
    /// The compiled quotas and their counters, when configured.
    pub quotas: Option<Arc<crate::quota::Quotas>>,
    /// Upstream clients by name.
    pub upstreams: HashMap<String, Arc<UpstreamClient>>,
    /// DNS-rebinding protection.
    pub origins: OriginPolicy,
    /// Credential verification shared by every virtual server.
    pub auth: Arc<Authenticator>,
    /// Consent flows and user connections for `user_oauth` upstreams.
    pub consent: Option<Arc<ConsentService>>,
    /// Approved definitions, when the configuration has a catalog.
    pub catalog: Option<Arc<Catalog>>,
    /// Who may use the admin API, when it is on.
    pub admin_guard: Option<Arc<ServerGuard>>,
    /// The authorization-server façade, when configured.
    pub oauth: Option<Arc<crate::oauth::facade::Facade>>,
    /// The admin console's IdP client, when the console is configured.
    pub console: Option<Arc<crate::admin::console::ConsoleIdp>>,
    /// `log.access.trusted_proxies`, parsed once (validation has refused any that do not parse).
    pub trusted_proxies: Vec<crate::config::Cidr>,
}

/// What serves one virtual server's path, built together from its configuration entry.
pub struct Route {
    /// The federation of its upstreams.
    pub server: Arc<VirtualServer>,
    /// Its authentication requirements; `None`: an open server.
    pub guard: Option<Arc<ServerGuard>>,
    /// Its compiled policy (open when it has none).
    pub policy: Arc<CompiledPolicy>,
}

impl Runtime {
    /// The route serving `path` for a request to `host` (its `Host` header, or the HTTP/2
    /// authority): with tenants resolved by host, only a server of that host's tenant.
    pub fn route(&self, host: Option<&str>, path: &str) -> Option<&Route> {
        if self.tenant_hosts.is_empty() {
            return self.routes.get(path);
        }
        let host = crate::downstream::rules::host_name(host?);
        let tenant = self.tenant_hosts.get(&host.to_ascii_lowercase())?;
        self.routes
            .get(&crate::config::tenants::route_key(Some(tenant), path))
    }

    /// The guards of the protected virtual servers.
    pub fn guards(&self) -> impl Iterator<Item = &Arc<ServerGuard>> {
        self.routes.values().filter_map(|r| r.guard.as_ref())
    }

    /// Builds a runtime, reusing the upstream clients of `previous` whose configuration did not
    /// change, so that a reload neither restarts their processes nor drops their pools.
    pub fn build(
        config: Config,
        previous: Option<&Runtime>,
        store: Option<&Store>,
        auditor: Option<&Arc<crate::audit::Auditor>>,
    ) -> Result<Runtime, String> {
        Self::build_with(config, previous, store, auditor, &HashMap::new())
    }

    /// [`build`](Self::build), with the clients of the upstreams named in `bound` given
    /// rather than built from their configuration (unit tests bind scripted upstreams).
    fn build_with(
        config: Config,
        previous: Option<&Runtime>,
        store: Option<&Store>,
        auditor: Option<&Arc<crate::audit::Auditor>>,
        bound: &HashMap<String, Arc<UpstreamClient>>,
    ) -> Result<Runtime, String> {
        let consent = match (&config.consent, previous) {
            // Flows in progress survive a reload that leaves the block unchanged.
            (Some(c), Some(p)) if p.config.consent.as_ref() == Some(c) => p.consent.clone(),
            (Some(c), _) => {
                let store = store.ok_or("consent needs the store")?;
                let public = config.public_url.as_deref().unwrap_or_default();
                Some(Arc::new(
                    ConsentService::new(c, public, store.clone())
                        .map_err(|e| format!("consent: {e}"))?,
                ))
            }
            (None, _) => None,
        };
        let catalog = match (&config.catalog, previous) {
            (Some(c), Some(p)) if p.config.catalog.as_ref() == Some(c) => p.catalog.clone(),
            (Some(c), _) => Some(Catalog::start(
                store.ok_or("the catalog needs the store")?.clone(),
                c,
                auditor.cloned(),
            )?),
            (None, _) => None,
        };
        let mut upstreams = HashMap::new();
        for (name, cfg) in &config.upstreams {
            let reused = bound.get(name).cloned().or_else(|| {
                previous.and_then(|p| {
                    let same = p.config.upstreams.get(name) == Some(cfg)
                        && p.config.consent == config.consent
                        && p.config.limits.max_upstream_message_bytes
                            == config.limits.max_upstream_message_bytes;
                    same.then(|| p.upstreams.get(name).cloned()).flatten()
                })
            });
            let client = match reused {
                Some(c) => c,
                None => Arc::new(
                    UpstreamClient::new(name, cfg, &config.limits, consent.as_ref())
                        .map_err(|e| format!("upstreams.{name}: {e}"))?,
                ),
            };
            upstreams.insert(name.clone(), client);
        }
        let loopback_listener = config
            .listen
            .parse::<SocketAddr>()
            .is_ok_and(|a| a.ip().is_loopback());
        let origins = OriginPolicy {
            origins: config
                .allowed_origins
                .iter()
                .map(|o| o.trim_end_matches('/').to_owned())
                .collect(),
            loopback_listener,
        };
        let oauth = match (&config.oauth_server, previous) {
            // Logins in progress and the client caches survive a reload that leaves the block
            // (and the servers it serves) unchanged.
            (Some(c), Some(p))
                if p.config.oauth_server.as_ref() == Some(c)
                    && p.config.public_url == config.public_url
                    && p.oauth.as_ref().is_some_and(|f| {
                        f.resources == crate::oauth::facade::resources_of(&config)
                    }) =>
            {
                p.oauth.clone()
            }
            (Some(_), _) => Some(crate::oauth::facade::Facade::start(
                &config,
                store.ok_or("oauth_server needs the store")?.clone(),
            )?),
            (None, _) => None,
        };
        let mut authenticator =
            Authenticator::new(&config.auth, store.cloned(), previous.map(|p| &*p.auth));
        if let Some(f) = &oauth {
            authenticator.use_local_keys(
                crate::config::oauth_server::FACADE_ISSUER_NAME,
                f.keys.clone(),
            );
        }
        let auth = Arc::new(authenticator);
        let console = crate::admin::console::ConsoleIdp::from_config(&config)?;
        let admin_guard = config
            .admin
            .as_ref()
            .and_then(|a| a.auth.as_ref())
            .map(|a| {
                let resource = a
                    .resource
                    .clone()
                    .unwrap_or_else(|| format!("{}/admin", config.public_base()));
                Arc::new(ServerGuard::for_resource(
                    &config,
                    "Gatehouse admin API",
                    "/admin",
                    a,
                    resource,
                    auth.clone(),
                ))
            });
        let mut routes = HashMap::new();
        for s in &config.servers {
            let policy = match &s.policy {
                Some(p) => CompiledPolicy::compile(p)
                    .map_err(|e| format!("servers {:?}: policy.{e}", s.name))?,
                None => CompiledPolicy::open(),
            };
            let mut server = VirtualServer::new(s, &config.upstreams, &upstreams, catalog.clone());
            if let Some(g) = &s.guardrails {
                let custom = config.catalog.as_ref().map_or(&[][..], |c| &c.rules[..]);
                server.guardrail = Some(
                    crate::guardrail::build(g, custom)
                        .map_err(|e| format!("servers {:?}: guardrails: {e}", s.name))?,
                );
            }
            server.interceptors = crate::intercept::Interceptors::new(
                &s.interceptors,
                &config.audit.redact,
                config.limits.max_upstream_message_bytes,
            )
            .map_err(|e| format!("servers {:?}: {e}", s.name))?
            .map(Arc::new);
            let route = Route {
                server: Arc::new(server),
                guard: ServerGuard::new(&config, s, auth.clone()).map(Arc::new),
                policy: Arc::new(policy),
            };
            routes.insert(config.route_key(s), route);
        }
        // Only with `resolve: host`, where validation gives every tenant hosts: whether there
        // are any is whether routes are looked up by host.
        let tenant_hosts = config
            .tenancy
            .iter()
            .filter(|t| t.resolve == crate::config::tenants::Resolve::Host)
            .flat_map(|t| &t.tenants)
            .flat_map(|(name, t)| {
                let name: Arc<str> = name.as_str().into();
                t.hosts
                    .iter()
                    .map(move |h| (h.to_ascii_lowercase(), name.clone()))
            })
            .collect();
        let quotas = match &config.quotas {
            None => None,
            Some(q) => Some(Arc::new(crate::quota::Quotas::new(
                q,
                previous.and_then(|p| p.quotas.as_deref()),
                previous.and_then(|p| p.config.quotas.as_ref()),
            )?)),
        };
        let owners = Arc::new(config.owners());
        crate::telemetry::metrics::METRICS.set_tenants(owners.clone());
        if let Some(a) = auditor {
            a.set_tenants(owners.clone());
        }
        let trusted_proxies = config
            .log
            .access
            .trusted_proxies
            .iter()
            .filter_map(|p| crate::config::Cidr::parse(p))
            .collect();
        Ok(Runtime {
            trusted_proxies,
            config,
            routes,
            tenant_hosts,
            owners,
            quotas,
            upstreams,
            origins,
            auth,
            consent,
            catalog,
            admin_guard,
            oauth,
            console,
        })
    }
}

/// Builds the session keyring from configured keys, or a random per-process key.
pub fn sealer_from(config: &Config) -> Result<Keyring, String> {
    if config.sessions.keys.is_empty() {
        return Ok(Keyring::random());
    }
    Keyring::from_config(&config.sessions.keys).map_err(|e| format!("sessions.keys: {e}"))
}

/// The gateway shared by every request handler.
pub struct Gateway {
    runtime: ArcSwap<Runtime>,
    sealer: ArcSwap<Keyring>,
    /// Sessions known to this process.
    pub sessions: SessionRegistry,
    /// Calls of stateless clients waiting for their answers (multi round-trip requests).
    pub parked: Arc<crate::downstream::input_required::ParkedCalls>,
    /// Streams open to clients, counted against `limits.streams_per_*`.
    pub streams: Arc<crate::downstream::limits::Streams>,
    /// The file to reload from, if any.
    pub config_path: Option<PathBuf>,
    /// Durable state, opened once at start (a changed `store` takes effect after a restart).
    pub store: Option<Store>,
    /// The base URL used when the configuration sets no `public_url`: the bound address.
    default_public_url: Option<String>,
    /// The audit queue (`None` when auditing is disabled). Its settings apply from start.
    pub auditor: Option<Arc<crate::audit::Auditor>>,
}

impl Gateway {
    /// A gateway serving `config`. `default_public_url` is the base of resource URIs when the
    /// configuration sets no `public_url` (the listener's real address, known once it is bound).
    pub fn new(
        config: Config,
        config_path: Option<PathBuf>,
        store: Option<Store>,
        default_public_url: Option<String>,
    ) -> Result<Arc<Gateway>, String> {
        Self::start(
            config,
            config_path,
            store,
            default_public_url,
            &HashMap::new(),
        )
    }

    /// A gateway whose upstreams named in `bound` are served by the given clients (scripted
    /// ones); the others are built from `config` as usual. No listener: drive
    /// `downstream::router` in-process.
    #[cfg(test)]
    pub fn with_clients(
        config: Config,
        store: Option<Store>,
        bound: &HashMap<String, Arc<UpstreamClient>>,
    ) -> Result<Arc<Gateway>, String> {
        Self::start(
            config,
            None,
            store,
            Some("http://127.0.0.1:9".into()),
            bound,
        )
    }

    fn start(
        mut config: Config,
        config_path: Option<PathBuf>,
        store: Option<Store>,
        default_public_url: Option<String>,
        bound: &HashMap<String, Arc<UpstreamClient>>,
    ) -> Result<Arc<Gateway>, String> {
        if config.public_url.is_none() {
            config.public_url.clone_from(&default_public_url);
        }
        let sealer = sealer_from(&config)?;
        crate::telemetry::metrics::METRICS
            .set_names_per_server(config.limits.metric_names_per_server);
        let sessions = SessionRegistry::new(config.sessions.max_lifetime.0);
        let base_dir = config_path
            .as_deref()
            .and_then(std::path::Path::parent)
            .unwrap_or(std::path::Path::new("."));
        let auditor = crate::audit::Auditor::start(&config.audit, store.clone(), base_dir);
        let runtime = Runtime::build_with(config, None, store.as_ref(), auditor.as_ref(), bound)?;
        let gateway = Arc::new(Gateway {
            runtime: ArcSwap::from_pointee(runtime),
            sealer: ArcSwap::from_pointee(sealer),
            sessions,
            parked: Default::default(),
            streams: Default::default(),
            config_path,
            store,
            default_public_url,
            auditor,
        });
        tokio::spawn(recheck_catalog(Arc::downgrade(&gateway)));
        Ok(gateway)
    }

    /// The runtime requests should use now. Requests keep the one they started with.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// The current session sealer.
    pub fn sealer(&self) -> Arc<Keyring> {
        self.sealer.load_full()
    }

    /// Replaces the configuration. On error the old one stays in force.
    pub fn apply(&self, mut config: Config) -> Result<(), String> {
        if config.public_url.is_none() {
            config.public_url.clone_from(&self.default_public_url);
        }
        let old = self.runtime();
        if config.listen != old.config.listen {
            tracing::warn!("`listen` changed; it takes effect only after a restart");
        }
        let sealer = sealer_from(&config)?;
        let keys_changed = config
            .sessions
            .keys
            .iter()
            .ne(old.config.sessions.keys.iter());
        if config.audit != old.config.audit {
            tracing::warn!("`audit` changed; it takes effect only after a restart");
        }
        if config.store != old.config.store {
            tracing::warn!("`store` changed; it takes effect only after a restart");
        }
        let runtime = Runtime::build(
            config,
            Some(&old),
            self.store.as_ref(),
            self.auditor.as_ref(),
        )?;
        crate::telemetry::metrics::METRICS
            .set_names_per_server(runtime.config.limits.metric_names_per_server);
        self.runtime.store(Arc::new(runtime));
        if keys_changed {
            self.sealer.store(Arc::new(sealer));
        }
        Ok(())
    }

    /// Re-reads the configuration file; returns a description of what happened.
    pub fn reload(&self) -> Result<(), String> {
        let Some(path) = &self.config_path else {
            return Err("no configuration file to reload".into());
        };
        let config = Config::load(path).map_err(|e| e.to_string())?;
        self.apply(config)
    }

    /// Stops every upstream child process.
    pub async fn shutdown(&self) {
        let rt = self.runtime();
        futures_util::future::join_all(rt.upstreams.values().map(|u| u.shutdown())).await;
        if let Some(a) = &self.auditor {
            a.close().await;
        }
    }
}

/// Lists every upstream under review every `catalog.recheck`, so that a definition changed
/// behind the gateway's back is quarantined even if no client lists before calling it.
async fn recheck_catalog(gateway: std::sync::Weak<Gateway>) {
    loop {
        let period = match gateway.upgrade() {
            Some(g) => g
                .runtime()
                .config
                .catalog
                .as_ref()
                .map(|c| c.recheck.0)
                .filter(|p| !p.is_zero()),
            None => return,
        };
        // With no catalog (or rechecks off) look again later: a reload may turn them on.
        tokio::time::sleep(period.unwrap_or(std::time::Duration::from_secs(30))).await;
        if period.is_none() {
            continue;
        }
        let Some(g) = gateway.upgrade() else { return };
        let rt = g.runtime();
        drop(g);
        let Some(catalog) = rt.catalog.clone() else {
            continue;
        };
        for (name, cfg) in &rt.config.upstreams {
            if catalog.is_trusted(name) || cfg.auth.as_ref().is_some_and(|a| a.is_per_user()) {
                continue;
            }
            let Some(client) = rt.upstreams.get(name) else {
                continue;
            };
            match crate::catalog::lister::list_everything(client).await {
                Ok((lists, failures)) => {
                    for (kind, items) in lists {
                        catalog.admit(name, kind, items, true);
                    }
                    for f in failures {
                        tracing::warn!(upstream = %name, error = %f, "catalog: cannot re-check one of the upstream's lists");
                    }
                }
                Err(e) => {
                    tracing::warn!(upstream = %name, error = %e, "catalog: cannot re-check the upstream's definitions");
                }
            }
        }
    }
}
