//! Running the gateway: listener, readiness, reload on SIGHUP or file change, graceful shutdown.

use crate::config::Config;
use crate::downstream::{AppState, router};
use crate::gateway::Gateway;
use axum::serve::ListenerExt;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};

/// How long in-flight requests and streams get to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How often the configuration file is checked for changes.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Serves until SIGINT/SIGTERM.
pub async fn run(config: Config, path: PathBuf) -> anyhow::Result<()> {
    let listen = config.listen.clone();
    let watch = config.watch_config;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    let store = open_store(&config, &path).await?;
    let gateway = Gateway::new(
        config,
        Some(path.clone()),
        Some(store),
        Some(format!("http://{addr}")),
    )
    .map_err(anyhow::Error::msg)?;
    let ready = Arc::new(AtomicBool::new(true));
    let state = AppState {
        gateway: gateway.clone(),
        ready: ready.clone(),
    };
    let app = router(state.clone())
        .merge(crate::admin::router(state.clone()))
        .merge(crate::oauth::endpoints::router(state));
    tracing::info!(%addr, "gatehouse listening");
    // One machine-readable line on stdout, so that scripts and tests can find the port.
    println!("gatehouse listening on http://{addr}");
    let _ = std::io::stdout().flush();

    if watch {
        tokio::spawn(watch_config(gateway.clone(), path));
    }
    tokio::spawn(reload_on_sighup(gateway.clone()));
    tokio::spawn(sweep_sessions(gateway.clone()));

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut server = tokio::spawn(async move {
        let mut stop_rx = stop_rx;
        // Small SSE events and JSON answers must leave at once, not wait for Nagle's algorithm.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        // The peer address feeds per-IP limits (dynamic client registration).
        let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            })
            .await
    });
    tokio::select! {
        r = &mut server => { r??; }
        _ = shutdown_signal() => {
            tracing::info!("shutting down; waiting for in-flight requests");
            ready.store(false, Ordering::Release);
            let _ = stop_tx.send(true);
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await.is_err() {
                tracing::warn!("in-flight requests did not finish within {}s; closing them", SHUTDOWN_GRACE.as_secs());
                server.abort();
            }
        }
    }
    gateway.shutdown().await;
    if let Some(store) = &gateway.store {
        store.close().await;
    }
    tracing::info!("stopped");
    Ok(())
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

async fn shutdown_signal() {
    let mut term = signal(SignalKind::terminate()).expect("signal handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn reload(gateway: &Gateway, why: &str) {
    match gateway.reload() {
        Ok(()) => tracing::info!(trigger = why, "configuration reloaded"),
        Err(e) => tracing::error!(
            trigger = why,
            "configuration NOT reloaded, keeping the previous one: {e}"
        ),
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
    use crate::downstream::session::{close_ended, sweep_period};
    loop {
        let idle = gateway.runtime().config.sessions.idle_timeout.0;
        tokio::time::sleep(sweep_period(idle)).await;
        let ended = gateway.sessions.sweep(idle);
        close_ended(&gateway, ended).await;
    }
}
