//! stdio upstreams: one child process per upstream, shared by every downstream session, with
//! request ids and progress tokens rewritten so that answers find their way back.

use super::restart::Backoff;
use super::stdio_child::{inherited, log_stderr};
use super::{
    CallStream, ClientIdentity, Frame, InitInfo, ReplyRoute, UpstreamClient, UpstreamError,
    UpstreamSession,
};
use crate::config::{self, Secret};
use crate::protocol::jsonrpc::to_raw;
use crate::protocol::{ErrorCode, Message, MessageKind, Method, ProtocolVersion, RequestId};
use futures_util::StreamExt;
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tokio_util::codec::{FramedRead, LinesCodec};
use tokio_util::sync::CancellationToken;

/// A stdio upstream.
pub struct StdioUpstream {
    name: String,
    command: String,
    args: Vec<String>,
    env: Vec<(String, Secret)>,
    inherit_env: Vec<String>,
    cwd: Option<PathBuf>,
    connect_timeout: Duration,
    request_timeout: Duration,
    max_message: usize,
    state: tokio::sync::Mutex<Supervised>,
    /// Copy of `Backoff::attempts`, readable without the lock: a caller that queued behind a
    /// start which failed meanwhile gets that failure instead of starting the process again.
    attempts: AtomicU64,
    /// Cancelled by `shutdown`, so that no caller keeps waiting out a backoff.
    stopping: CancellationToken,
    /// What its tools mirror into `Mcp-Param-*` headers (checked on 2026-07-28 clients' calls).
    pub(super) mirrored: super::MirroredParams,
    next_id: AtomicI64,
    unsolicited: broadcast::Sender<Message>,
}

/// The child, and how restarts are paced.
struct Supervised {
    state: State,
    backoff: Backoff,
}

enum State {
    Idle,
    Running(Arc<Child>),
    Stopped,
}

struct Pending {
    downstream_id: Option<RequestId>,
    tx: mpsc::Sender<Frame>,
    seq: u64,
    progress_key: Option<String>,
}

struct Progress {
    original: Value,
    tx: mpsc::Sender<Frame>,
}

/// One running child process.
struct Child {
    stdin: mpsc::Sender<Vec<u8>>,
    calls: Mutex<HashMap<i64, Pending>>,
    progress: Mutex<HashMap<String, Progress>>,
    alive: AtomicBool,
    died_at: Mutex<Option<Instant>>,
    started_at: Instant,
    info: OnceLock<Arc<InitInfo>>,
    seq: AtomicU64,
    pid: Option<u32>,
    exited: tokio::sync::Notify,
    close_stdin: CancellationToken,
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.alive.load(Ordering::Acquire) {
            kill_group(self.pid, libc::SIGKILL);
        }
    }
}

fn kill_group(pid: Option<u32>, signal: i32) {
    if let Some(pid) = pid {
        // SAFETY: kill(2) with a negative pid signals the process group we created for the child.
        unsafe {
            libc::kill(-(pid as i32), signal);
        }
    }
}

impl StdioUpstream {
    /// Builds the upstream; the process starts on first use.
    pub fn new(
        name: &str,
        cfg: &config::Upstream,
        limits: &config::Limits,
    ) -> Result<Self, String> {
        let mut env = Vec::new();
        for (k, v) in &cfg.env {
            env.push((k.clone(), v.resolve()?));
        }
        if let Some(var_and_secret) = crate::credentials::stdio_env(cfg)? {
            env.push(var_and_secret);
        }
        Ok(StdioUpstream {
            name: name.to_owned(),
            command: cfg.command.clone().ok_or("command missing")?,
            args: cfg.args.clone(),
            env,
            inherit_env: cfg.inherit_env.clone(),
            cwd: cfg.cwd.clone(),
            connect_timeout: cfg.timeouts.connect.0,
            request_timeout: cfg.timeouts.request.0,
            max_message: limits.max_upstream_message_bytes,
            state: tokio::sync::Mutex::new(Supervised {
                state: State::Idle,
                backoff: Backoff::new(cfg.restart.initial_backoff.0, cfg.restart.max_backoff.0),
            }),
            attempts: AtomicU64::new(0),
            stopping: CancellationToken::new(),
            next_id: AtomicI64::new(1),
            unsolicited: broadcast::channel(256).0,
            mirrored: Default::default(),
        })
    }

    /// The upstream's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn crashed(&self, reason: impl Into<String>) -> UpstreamError {
        UpstreamError::Crashed {
            upstream: self.name.clone(),
            reason: reason.into(),
        }
    }

    /// Makes sure the child runs and is initialized.
    pub async fn open(&self) -> Result<(UpstreamSession, Arc<InitInfo>), UpstreamError> {
        let child = self.running().await?;
        let info = child
            .info
            .get()
            .cloned()
            .expect("running children are initialized");
        Ok((
            UpstreamSession {
                id: None,
                version: info.version,
                bridge: None,
            },
            info,
        ))
    }

    /// The running child, started (or restarted, at the pace of the backoff) when needed.
    async fn running(&self) -> Result<Arc<Child>, UpstreamError> {
        let seen = self.attempts.load(Ordering::Acquire);
        let mut sup = self.state.lock().await;
        match &sup.state {
            State::Running(c) if c.alive.load(Ordering::Acquire) => return Ok(c.clone()),
            State::Running(c) => {
                let died = c.died_at.lock().expect("lock").unwrap_or_else(Instant::now);
                let uptime = died.saturating_duration_since(c.started_at);
                sup.backoff.exited(died, uptime);
                sup.state = State::Idle;
            }
            State::Idle => {}
            State::Stopped => return Err(self.shutting_down()),
        }
        // A start failed while this caller queued: that answer is this caller's too.
        if sup.backoff.attempts() != seen
            && let Some(e) = sup.backoff.last_error()
        {
            return Err(e.clone());
        }
        let wait = sup.backoff.wait(Instant::now());
        if wait > self.connect_timeout {
            return Err(UpstreamError::Unavailable {
                upstream: self.name.clone(),
                reason: format!(
                    "restarting after {} consecutive failures; next attempt in {}ms",
                    sup.backoff.failures(),
                    wait.as_millis()
                ),
            });
        }
        if !wait.is_zero() {
            tracing::info!(upstream = %self.name, wait_ms = wait.as_millis() as u64, failures = sup.backoff.failures(), "waiting before restarting the process");
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.stopping.cancelled() => return Err(self.shutting_down()),
            }
        }
        if sup.backoff.starting() {
            crate::telemetry::metrics::METRICS.upstream_restart(&self.name);
        }
        let result = match tokio::time::timeout(self.connect_timeout, self.spawn()).await {
            Ok(r) => r,
            Err(_) => Err(UpstreamError::Timeout {
                upstream: self.name.clone(),
                after: self.connect_timeout,
            }),
        };
        self.attempts
            .store(sup.backoff.attempts(), Ordering::Release);
        match result {
            Ok(child) => {
                sup.backoff.started();
                sup.state = State::Running(child.clone());
                Ok(child)
            }
            Err(e) => {
                tracing::warn!(upstream = %self.name, error = %e, "the process did not start");
                sup.backoff.start_failed(Instant::now(), e.clone());
                sup.state = State::Idle;
                Err(e)
            }
        }
    }

    fn shutting_down(&self) -> UpstreamError {
        UpstreamError::Unavailable {
            upstream: self.name.clone(),
            reason: "the gateway is shutting down".into(),
        }
    }

    async fn spawn(&self) -> Result<Arc<Child>, UpstreamError> {
        let mut cmd = Command::new(&self.command);
        // A cleared environment: the gateway's own holds session and sealing keys, client
        // secrets and other upstreams' credentials, none of which this child may read.
        cmd.env_clear()
            .envs(inherited(&self.inherit_env, std::env::vars_os()))
            .envs(self.env.iter().map(|(k, v)| (k, v.expose())))
            .args(&self.args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(cwd) = &self.cwd {
            cmd.current_dir(cwd);
        }
        let mut process = cmd.spawn().map_err(|e| UpstreamError::Unavailable {
            upstream: self.name.clone(),
            reason: format!("cannot start {:?}: {e}", self.command),
        })?;
        let pid = process.id();
        tracing::info!(upstream = %self.name, pid, "started upstream process");
        let stdin = process.stdin.take().expect("piped");
        let stdout = process.stdout.take().expect("piped");
        let stderr = process.stderr.take().expect("piped");
        let (stdin_tx, stdin_rx) = mpsc::channel::<Vec<u8>>(256);
        let child = Arc::new(Child {
            stdin: stdin_tx,
            calls: Mutex::new(HashMap::new()),
            progress: Mutex::new(HashMap::new()),
            alive: AtomicBool::new(true),
            died_at: Mutex::new(None),
            started_at: Instant::now(),
            info: OnceLock::new(),
            seq: AtomicU64::new(0),
            pid,
            exited: tokio::sync::Notify::new(),
            close_stdin: CancellationToken::new(),
        });
        tokio::spawn(write_lines(stdin, stdin_rx, child.close_stdin.clone()));
        tokio::spawn(log_stderr(self.name.clone(), stderr));
        let reader = Reader {
            upstream: self.name.clone(),
            child: Arc::downgrade(&child),
            unsolicited: self.unsolicited.clone(),
        };
        tokio::spawn(reader.run(
            FramedRead::new(stdout, LinesCodec::new_with_max_length(self.max_message)),
            process,
        ));

        let who = ClientIdentity::gateway();
        let params = serde_json::json!({
            "protocolVersion": who.version.as_str(),
            "capabilities": who.capabilities,
            "clientInfo": who.client_info,
        });
        let init = Message::request(
            self.fresh_id(),
            Method::Initialize.as_str(),
            Some(to_raw(&params)),
        );
        let (tx, mut rx) = mpsc::channel(4);
        self.register(&child, &init, None, tx);
        self.write(&child, &init).await?;
        let answer = loop {
            match rx.recv().await {
                Some(Frame::Response(m)) => break m,
                Some(Frame::Failed(e)) => return Err(e),
                Some(_) => continue,
                None => return Err(self.crashed("the process exited during initialize")),
            }
        };
        let result = answer.result.ok_or_else(|| UpstreamError::Protocol {
            upstream: self.name.clone(),
            reason: "initialize was refused".into(),
        })?;
        let info =
            InitInfo::from_result(result, ProtocolVersion::LATEST_SESSION).map_err(|reason| {
                UpstreamError::Protocol {
                    upstream: self.name.clone(),
                    reason,
                }
            })?;
        let _ = child.info.set(Arc::new(info));
        self.write(
            &child,
            &Message::notification(Method::NotificationsInitialized.as_str(), None),
        )
        .await?;
        Ok(child)
    }

    fn fresh_id(&self) -> RequestId {
        RequestId::Number(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    fn register(
        &self,
        child: &Child,
        msg: &Message,
        downstream_id: Option<RequestId>,
        tx: mpsc::Sender<Frame>,
    ) {
        let Some(RequestId::Number(n)) = msg.id else {
            return;
        };
        let pending = Pending {
            downstream_id,
            tx,
            seq: child.seq.fetch_add(1, Ordering::Relaxed),
            progress_key: None,
        };
        child.calls.lock().expect("lock").insert(n, pending);
    }

    async fn write(&self, child: &Child, msg: &Message) -> Result<(), UpstreamError> {
        child
            .stdin
            .send(msg.to_bytes())
            .await
            .map_err(|_| self.crashed("the process's stdin is closed"))
    }

    /// Sends a request and returns its frames.
    pub async fn call(
        &self,
        me: &Arc<UpstreamClient>,
        ctx: &crate::context::CallContext,
        request: Message,
    ) -> Result<CallStream, UpstreamError> {
        let child = self.running().await?;
        let downstream_id = request.id.clone();
        let upstream_id = self.fresh_id();
        let mut outgoing = request;
        outgoing.id = Some(upstream_id.clone());
        let (tx, rx) = mpsc::channel(16);
        let progress_key =
            rewrite_progress_token(&mut outgoing, &upstream_id).map(|(key, original)| {
                child.progress.lock().expect("lock").insert(
                    key.clone(),
                    Progress {
                        original,
                        tx: tx.clone(),
                    },
                );
                key
            });
        self.register(&child, &outgoing, downstream_id, tx);
        if let (Some(key), RequestId::Number(n)) = (progress_key, &upstream_id)
            && let Some(p) = child.calls.lock().expect("lock").get_mut(n)
        {
            p.progress_key = Some(key);
        }
        self.write(&child, &outgoing).await?;
        let session = UpstreamSession {
            id: None,
            version: child
                .info
                .get()
                .map(|i| i.version)
                .unwrap_or(ProtocolVersion::LATEST_SESSION),
            bridge: None,
        };
        Ok(CallStream::new(
            rx,
            self.request_timeout,
            me.clone(),
            ctx.clone(),
            session,
            upstream_id,
        ))
    }

    /// Writes a notification or response to the running child.
    pub async fn send(&self, message: Message) -> Result<(), UpstreamError> {
        if Method::of(&message) == Method::NotificationsCancelled {
            self.forget_cancelled(&message).await;
        }
        let child = self.running().await?;
        self.write(&child, &message).await
    }

    async fn forget_cancelled(&self, message: &Message) {
        #[derive(serde::Deserialize)]
        struct P {
            #[serde(rename = "requestId")]
            request_id: RequestId,
        }
        let Ok(P {
            request_id: RequestId::Number(n),
        }) = message.params_as::<P>()
        else {
            return;
        };
        if let State::Running(child) = &self.state.lock().await.state {
            let removed = child.calls.lock().expect("lock").remove(&n);
            if let Some(key) = removed.and_then(|p| p.progress_key) {
                child.progress.lock().expect("lock").remove(&key);
            }
        }
    }

    /// Notifications the child sends outside any request.
    pub fn listen(&self) -> mpsc::Receiver<Frame> {
        super::frames_from(self.unsolicited.subscribe(), self.name.clone())
    }

    /// Closes stdin, waits briefly, then terminates the process group.
    pub async fn shutdown(&self) {
        self.stopping.cancel();
        let mut sup = self.state.lock().await;
        if let State::Running(child) = std::mem::replace(&mut sup.state, State::Stopped) {
            if !child.alive.load(Ordering::Acquire) {
                return;
            }
            // Closing stdin is the polite request to exit (MCP stdio shutdown sequence).
            child.close_stdin.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(2), child.exited.notified()).await;
            if child.alive.load(Ordering::Acquire) {
                kill_group(child.pid, libc::SIGTERM);
                let _ = tokio::time::timeout(Duration::from_secs(2), child.exited.notified()).await;
            }
            if child.alive.load(Ordering::Acquire) {
                kill_group(child.pid, libc::SIGKILL);
            }
            tracing::info!(upstream = %self.name, "stopped upstream process");
        }
    }
}

/// Replaces a request's progress token with a gateway-unique one; returns (new, original).
fn rewrite_progress_token(msg: &mut Message, upstream_id: &RequestId) -> Option<(String, Value)> {
    let raw = msg.params.as_ref()?;
    if !raw.get().contains("progressToken") {
        return None;
    }
    let mut params: Value = serde_json::from_str(raw.get()).ok()?;
    let slot = params.get_mut("_meta")?.get_mut("progressToken")?;
    let key = format!("gatehouse-{upstream_id}");
    let original = std::mem::replace(slot, Value::String(key.clone()));
    msg.params = Some(to_raw(&params));
    Some((key, original))
}

async fn write_lines(
    mut stdin: tokio::process::ChildStdin,
    mut rx: mpsc::Receiver<Vec<u8>>,
    close: CancellationToken,
) {
    loop {
        let line = tokio::select! {
            l = rx.recv() => l,
            _ = close.cancelled() => None,
        };
        let Some(mut line) = line else { break };
        line.push(b'\n');
        if stdin.write_all(&line).await.is_err() || stdin.flush().await.is_err() {
            break;
        }
    }
    let _ = stdin.shutdown().await;
}

/// Reads the child's stdout and dispatches each message.
struct Reader {
    upstream: String,
    child: std::sync::Weak<Child>,
    unsolicited: broadcast::Sender<Message>,
}

impl Reader {
    async fn run(
        self,
        mut lines: FramedRead<tokio::process::ChildStdout, LinesCodec>,
        mut process: tokio::process::Child,
    ) {
        loop {
            match lines.next().await {
                Some(Ok(line)) => {
                    if line.trim().is_empty() {
                        continue;
                    }
                    match Message::parse(line.as_bytes()) {
                        Ok(msg) => self.dispatch(msg).await,
                        Err(e) => {
                            tracing::warn!(upstream = %self.upstream, error = %e, "ignoring a line that is not JSON-RPC")
                        }
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(upstream = %self.upstream, error = %e, "ignoring an unreadable or oversized line");
                }
                None => break,
            }
        }
        let status = tokio::time::timeout(Duration::from_secs(5), process.wait()).await;
        tracing::warn!(upstream = %self.upstream, status = ?status.ok().and_then(Result::ok), "upstream process exited");
        if let Some(child) = self.child.upgrade() {
            child.alive.store(false, Ordering::Release);
            *child.died_at.lock().expect("lock") = Some(Instant::now());
            let calls: Vec<Pending> = child
                .calls
                .lock()
                .expect("lock")
                .drain()
                .map(|(_, p)| p)
                .collect();
            child.progress.lock().expect("lock").clear();
            for p in calls {
                let _ =
                    p.tx.send(Frame::Failed(UpstreamError::Crashed {
                        upstream: self.upstream.clone(),
                        reason: "the process exited".into(),
                    }))
                    .await;
            }
            child.exited.notify_waiters();
        }
    }

    async fn dispatch(&self, mut msg: Message) {
        let Some(child) = self.child.upgrade() else {
            return;
        };
        match msg.kind {
            MessageKind::Response | MessageKind::Error => {
                let Some(RequestId::Number(n)) = msg.id else {
                    return;
                };
                let pending = child.calls.lock().expect("lock").remove(&n);
                if let Some(p) = pending {
                    if let Some(key) = &p.progress_key {
                        child.progress.lock().expect("lock").remove(key);
                    }
                    msg.id = p.downstream_id;
                    let _ = p.tx.send(Frame::Response(msg)).await;
                }
            }
            MessageKind::Notification => {
                if Method::of(&msg) == Method::NotificationsProgress
                    && let Some((tx, m)) = restore_progress(&child, &msg)
                {
                    let _ = tx.send(Frame::Notification(m)).await;
                    return;
                }
                let _ = self.unsolicited.send(msg);
            }
            MessageKind::Request => self.server_request(&child, msg).await,
        }
    }

    /// Routes a server→client request to the most recent call in flight, or answers it here.
    async fn server_request(&self, child: &Child, msg: Message) {
        let target = {
            let calls = child.calls.lock().expect("lock");
            calls
                .values()
                .filter(|p| p.downstream_id.is_some())
                .max_by_key(|p| p.seq)
                .map(|p| p.tx.clone())
        };
        let id = msg.id.clone().expect("requests have ids");
        if let Some(tx) = target {
            let route = ReplyRoute {
                upstream: self.upstream.clone(),
                session: UpstreamSession {
                    id: None,
                    version: child
                        .info
                        .get()
                        .map(|i| i.version)
                        .unwrap_or(ProtocolVersion::LATEST_SESSION),
                    bridge: None,
                },
                id,
            };
            if tx
                .send(Frame::Request {
                    message: msg,
                    route,
                })
                .await
                .is_ok()
            {
                return;
            }
            return;
        }
        let answer = match Method::of(&msg) {
            Method::Ping => Message::response(id, to_raw(&serde_json::json!({}))),
            Method::RootsList => Message::response(id, to_raw(&serde_json::json!({ "roots": [] }))),
            other => Message::error_response(
                Some(id),
                ErrorCode::METHOD_NOT_FOUND,
                &format!("no client is waiting that could answer {other}"),
                None,
            ),
        };
        let _ = child.stdin.send(answer.to_bytes()).await;
    }
}

fn restore_progress(child: &Child, msg: &Message) -> Option<(mpsc::Sender<Frame>, Message)> {
    let mut params: Value = serde_json::from_str(msg.params.as_ref()?.get()).ok()?;
    let key = params.get("progressToken")?.as_str()?.to_owned();
    let progress = child.progress.lock().expect("lock");
    let route = progress.get(&key)?;
    params["progressToken"] = route.original.clone();
    let mut out = msg.clone();
    out.params = Some(to_raw(&params));
    Some((route.tx.clone(), out))
}
