//! Running the gateway: the MCP and operations listeners, reload on SIGHUP or file change, and
//! the shutdown sequence (drain, then grace).

mod access;
mod listener;
pub mod ops;
pub mod tls;

pub use access::{TraceId, record_subject};

use crate::config::Config;
use crate::downstream::router;
use crate::gateway::Gateway;
use crate::web::AppState;
use listener::{Listener, Tracker};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};

/// How often the configuration file is checked for changes.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Serves until SIGINT (stop now) or SIGTERM (drain first).
pub async fn run(config: Config, path: PathBuf) -> anyhow::Result<()> {
    let listen = config.listen.clone();
    let watch = config.watch_config;
    let tcp = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let ops_listen = config.ops.listen.clone();
    let ops_tcp = tokio::net::TcpListener::bind(&ops_listen)
        .await
        .map_err(|e| anyhow::anyhow!("ops.listen: cannot listen on {ops_listen}: {e}"))?;
    let addr = tcp.local_addr()?;
    let ops_addr = ops_tcp.local_addr()?;
    let connections = config.limits.connections.clone();
    raise_fd_limit(connections.max);
    let tls = match config.tls.clone() {
        Some(t) => Some(tls::TlsSource::new("mcp", "tls", t)?),
        None => None,
    };
    let ops_tls = match config.ops.tls.clone() {
        Some(t) => Some(tls::TlsSource::new("ops", "ops.tls", t)?),
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let ops_scheme = if ops_tls.is_some() { "https" } else { "http" };
    let store = open_store(&config, &path).await?;
    let gateway = Gateway::new(
        config,
        Some(path.clone()),
        Some(store),
        Some(format!("{scheme}://{addr}")),
    )
    .map_err(anyhow::Error::msg)?;
    let ready = Arc::new(AtomicBool::new(true));
    let state = AppState {
        gateway: gateway.clone(),
    };
    let app = router(state.clone())
        .merge(crate::admin::router(state.clone()))
        .merge(crate::oauth::endpoints::router(state));
    let mut ops_app = ops::router(ops::OpsState::new(gateway.clone(), ready.clone()));
    if crate::admin::console::on_ops(&gateway.runtime().config) {
        ops_app = ops_app.merge(crate::admin::console::router().with_state(AppState {
            gateway: gateway.clone(),
        }));
    }
    tracing::info!(%addr, %ops_addr, "gatehouse listening");
    // Machine-readable lines on stdout, so that scripts and tests can find the ports; the ops
    // line comes first, so that whoever waits for the main line knows both.
    println!("gatehouse ops listening on {ops_scheme}://{ops_addr}");
    println!("gatehouse listening on {scheme}://{addr}");
    let _ = std::io::stdout().flush();

    if watch {
        tokio::spawn(watch_config(gateway.clone(), path));
    }
    tokio::spawn(reload_on_sighup(gateway.clone()));
    for source in tls.iter().chain(ops_tls.iter()) {
        tokio::spawn(source.clone().watch());
    }
    tokio::spawn(sweep_sessions(gateway.clone()));

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (ops_stop_tx, ops_stop_rx) = tokio::sync::watch::channel(false);
    let mut server = tokio::spawn(listener::serve(
        Listener {
            name: "mcp",
            tcp,
            app,
            tracker: Tracker::new(connections),
            tls,
            access_log: Some(gateway.clone()),
        },
        stop_rx,
    ));
    let ops_server = tokio::spawn(listener::serve(
        Listener {
            name: "ops",
            tcp: ops_tcp,
            app: ops_app,
            tracker: Tracker::new(crate::config::Connections::for_ops()),
            tls: ops_tls,
            access_log: None,
        },
        ops_stop_rx,
    ));
    let signal = shutdown_signal().await;
    let ops_cfg = gateway.runtime().config.ops.clone();
    ready.store(false, Ordering::Release);
    if signal == Stop::Drain && !ops_cfg.drain.0.is_zero() {
        // Still serving: load balancers see /readyz fail and stop sending new requests first.
        tracing::info!(
            "SIGTERM: not ready; draining for {}ms before closing the listener",
            ops_cfg.drain.0.as_millis()
        );
        tokio::select! {
            _ = tokio::time::sleep(ops_cfg.drain.0) => {}
            _ = shutdown_signal() => tracing::info!("second signal: closing now"),
        }
    }
    tracing::info!("shutting down; waiting for in-flight requests");
    let _ = stop_tx.send(true);
    if tokio::time::timeout(ops_cfg.grace.0, &mut server)
        .await
        .is_err()
    {
        tracing::warn!(
            "in-flight requests did not finish within {}ms; closing them",
            ops_cfg.grace.0.as_millis()
        );
        server.abort();
    }
    let _ = ops_stop_tx.send(true);
    ops_server.abort();
    gateway.shutdown().await;
    if let Some(store) = &gateway.store {
        store.close().await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Raises the soft limit on open files to the hard limit, so that `limits.connections.max` is
/// what caps connections rather than the descriptor table; warns when even that is too small.
fn raise_fd_limit(max_connections: usize) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed in.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    // Upstream connections, stdio pipes, the store and the ops listener need descriptors too.
    let needed = max_connections as u64 * 2 + 256;
    if lim.rlim_cur < needed {
        tracing::warn!(
            open_files = lim.rlim_cur,
            "limits.connections.max ({max_connections}) may exceed what the open-file limit allows; raise `ulimit -n` or lower the cap"
        );
    }
}

/// Opens the configured store; a relative SQLite path is relative to the configuration file.
pub async fn open_store(
    config: &Config,
    config_path: &Path,
) -> anyhow::Result<crate::store::Store> {
    let url = config
        .store
        .url
        .resolve()
        .map_err(|e| anyhow::anyhow!("store.url: {e}"))?;
    let base = config_path.parent().unwrap_or(Path::new("."));
    let store = crate::store::Store::open(url.expose(), base, config.store.max_connections).await?;
    tracing::info!(kind = store.kind(), "store opened");
    Ok(store)
}

/// How the gateway was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// SIGINT (Ctrl-C): no drain, in-flight requests still get their grace.
    Now,
    /// SIGTERM (an orchestrator): report not-ready for `ops.drain` first.
    Drain,
}

async fn shutdown_signal() -> Stop {
    let mut term = signal(SignalKind::terminate()).expect("signal handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => Stop::Now,
        _ = term.recv() => Stop::Drain,
    }
}

fn reload(gateway: &Gateway, why: &str) {
    let before = gateway.runtime().config.clone();
    let result = gateway.reload();
    if result.is_ok() {
        let after = &gateway.runtime().config;
        apply_log_level(&before, after);
        report_restart_needed(&before, after);
    }
    crate::telemetry::metrics::METRICS
        .ops
        .config_reload(result.is_ok());
    match result {
        Ok(()) => tracing::info!(trigger = why, "configuration reloaded"),
        Err(e) => tracing::error!(
            trigger = why,
            "configuration NOT reloaded, keeping the previous one: {e}"
        ),
    }
}

/// Applies a changed `log.level` to the running subscriber.
fn apply_log_level(before: &Config, after: &Config) {
    if before.log.level == after.log.level {
        return;
    }
    match crate::telemetry::set_level(&after.log.level) {
        Ok(true) => tracing::info!(level = %after.log.level, "log.level applied"),
        Ok(false) => tracing::info!("log.level changed; RUST_LOG takes precedence over it"),
        Err(e) => tracing::error!("log.level NOT applied: {e}"),
    }
}

/// The settings read once at start-up that a reload changed: listed in one warning, since they
/// keep their old values until the process restarts.
fn restart_needed(before: &Config, after: &Config) -> Vec<&'static str> {
    let mut fields = Vec::new();
    let mut differs = |changed: bool, field: &'static str| {
        if changed {
            fields.push(field);
        }
    };
    differs(before.listen != after.listen, "listen");
    differs(before.ops.listen != after.ops.listen, "ops.listen");
    differs(before.watch_config != after.watch_config, "watch_config");
    differs(before.store != after.store, "store");
    differs(before.log.format != after.log.format, "log.format");
    differs(before.tls != after.tls, "tls");
    differs(before.ops.tls != after.ops.tls, "ops.tls");
    differs(
        before.limits.connections != after.limits.connections,
        "limits.connections",
    );
    differs(before.traces != after.traces, "traces");
    differs(
        crate::admin::console::on_ops(before) != crate::admin::console::on_ops(after),
        "admin.console.listener",
    );
    fields
}

fn report_restart_needed(before: &Config, after: &Config) {
    let fields = restart_needed(before, after);
    if !fields.is_empty() {
        tracing::warn!(
            "configuration reloaded, but these settings take effect only after a restart: {}",
            fields.join(", ")
        );
    }
}

async fn reload_on_sighup(gateway: Arc<Gateway>) {
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        reload(&gateway, "SIGHUP");
    }
}

fn fingerprint(path: &Path) -> Option<[u8; 32]> {
    std::fs::read(path).ok().map(|b| Sha256::digest(&b).into())
}

/// Polls the file's content: robust across editors that replace files and across bind mounts
/// (e.g. Kubernetes ConfigMaps) where change events are unreliable.
async fn watch_config(gateway: Arc<Gateway>, path: PathBuf) {
    let mut last = fingerprint(&path);
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    loop {
        tick.tick().await;
        let now = fingerprint(&path);
        if now.is_some() && now != last {
            last = now;
            reload(&gateway, "file change");
        }
    }
}

/// Ends sessions idle for `sessions.idle_timeout` (read at each round, so a reload applies)
/// or past their lifetime, and closes their upstream sessions.
async fn sweep_sessions(gateway: Arc<Gateway>) {
    use crate::downstream::session_registry::{close_ended, sweep_period};
    loop {
        let idle = gateway.runtime().config.sessions.idle_timeout.0;
        tokio::time::sleep(sweep_period(idle)).await;
        let ended = gateway.sessions.sweep(idle);
        close_ended(&gateway, ended).await;
    }
}
