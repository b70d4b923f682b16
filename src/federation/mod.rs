//! A virtual server: several upstreams behind one MCP endpoint. Merges lists, maps names and
//! URIs, and routes each call to the upstream that owns its target.

mod consent;
mod cursor;
mod items;
mod names;
#[cfg(test)]
mod tests;
mod virtuals;

pub use items::{ListResult, RawItem};
pub use names::{ListKind, Naming};

use crate::config::{self, OnUpstreamError};
use crate::context::CallContext;
use crate::protocol::jsonrpc::to_raw;
use crate::protocol::param_headers::ToolHeaders;
use crate::protocol::stateless::CacheHints;
use crate::protocol::{ErrorCode, FunctionKind, Message, Method, RequestId, TargetParam};
use crate::upstream::{
    CallStream, Delivery, Frame, InitInfo, Known, UpstreamClient, UpstreamError, UpstreamSession,
};
use futures_util::future::BoxFuture;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use tokio::sync::mpsc;

/// One upstream as a member of a virtual server.
pub struct Member {
    /// The upstream's configured name.
    pub upstream: String,
    /// Its client.
    pub client: Arc<UpstreamClient>,
}

/// Gives federation the upstream session to use for a member, per downstream client, and the
/// context of the request it serves.
pub trait SessionSource: Send + Sync {
    /// For whom the request is made (the upstream credentials depend on it).
    fn context(&self) -> &CallContext;
    /// The session for this member, opening it if needed.
    fn session<'a>(
        &'a self,
        member: &'a Member,
    ) -> BoxFuture<'a, Result<UpstreamSession, UpstreamError>>;
    /// Forgets a session the upstream said it no longer knows.
    fn expired(&self, member: &Member, session: &UpstreamSession);
    /// Whether these are the sessions of 2026-07-28 clients (whose refusals travel with the
    /// HTTP statuses that revision gives them).
    fn stateless(&self) -> bool {
        false
    }
    /// The `Mcp-Param-*` headers the client sent with this request, when it speaks
    /// 2026-07-28 (checked against the arguments of a `tools/call`).
    fn mirrored_headers(&self) -> Option<&http::HeaderMap> {
        None
    }
    /// The member's messages outside any request, if it sends any.
    fn listen<'a>(
        &'a self,
        member: &'a Member,
    ) -> BoxFuture<'a, Result<Option<mpsc::Receiver<Frame>>, UpstreamError>>;
}

/// Most pages of one member's tools read to learn their mirrored parameters on a call's behalf.
const MAX_LEARNING_PAGES: usize = 100;

/// Whether a listed item (by member index and outward name) is shown to the caller.
pub type Visibility<'a> = dyn Fn(usize, &str) -> bool + Sync + 'a;

/// Why federation could not serve a request.
#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    /// The named tool, prompt or resource is not offered by any upstream.
    #[error("Unknown {kind}: {name}")]
    Unknown {
        /// "tool", "prompt" or "resource".
        kind: &'static str,
        /// The name the client used.
        name: String,
    },
    /// The params are malformed for this method.
    #[error("invalid params: {0}")]
    InvalidParams(String),
    /// The method is not offered by this virtual server.
    #[error("method not found: {0}")]
    MethodNotFound(String),
    /// An upstream failed.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// An upstream answered a list with a JSON-RPC error.
    #[error("upstream {upstream:?} refused {method}: {message}")]
    Refused {
        /// The upstream.
        upstream: String,
        /// The method.
        method: &'static str,
        /// Its error message.
        message: String,
    },
}

impl FederationError {
    /// Whether the user must connect an upstream first.
    pub fn needs_consent(&self) -> bool {
        matches!(
            self,
            FederationError::Upstream(UpstreamError::ConsentRequired { .. })
        )
    }

    /// The `data` member of the JSON-RPC error reporting this failure.
    pub fn data(&self) -> Option<Value> {
        match self {
            FederationError::Upstream(e) => e.data(),
            FederationError::Unknown {
                kind: "resource",
                name,
            } => Some(serde_json::json!({ "uri": name })),
            _ => None,
        }
    }

    /// The JSON-RPC code for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            FederationError::Unknown {
                kind: "resource", ..
            } => ErrorCode::RESOURCE_NOT_FOUND,
            FederationError::Unknown { .. } | FederationError::InvalidParams(_) => {
                ErrorCode::INVALID_PARAMS
            }
            FederationError::MethodNotFound(_) => ErrorCode::METHOD_NOT_FOUND,
            FederationError::Upstream(e) => e.code(),
            FederationError::Refused { .. } => ErrorCode::UPSTREAM_UNAVAILABLE,
        }
    }
}

/// A merged list and the caching hints its parts allow.
pub struct Listing {
    /// The list result (`tools`, `nextCursor`…), without `resultType` or caching hints; the
    /// items as their upstreams sent them, renamed.
    pub result: ListResult,
    /// The members' hints merged: the shortest `ttlMs`, private if any part is (or if the
    /// list was filtered for this caller), immediately stale if a member was left out.
    pub hints: CacheHints,
}

/// A request routed to one member, with names already mapped back to the upstream's own.
pub struct Routed {
    /// Index of the member.
    pub member: usize,
    /// The rewritten request.
    pub message: Message,
}

/// Where names learned from lists live, for routing without prefixes.
#[derive(Default)]
struct Routes {
    tools: HashMap<String, usize>,
    prompts: HashMap<String, usize>,
    resources: HashMap<String, usize>,
}

/// A virtual server ready to serve.
pub struct VirtualServer {
    /// Configured name.
    pub name: String,
    /// URL path.
    pub path: String,
    /// Members in priority order.
    pub members: Vec<Member>,
    naming: Naming,
    on_error: OnUpstreamError,
    instructions: Option<String>,
    routes: RwLock<Routes>,
    /// Approved definitions, when the configuration has a catalog.
    pub catalog: Option<Arc<crate::catalog::Catalog>>,
    /// The tenant it belongs to (`tenancy`).
    pub tenant: Option<Arc<str>>,
    /// Virtual tools, prompts and resources shown in place of upstream ones.
    virtuals: Option<virtuals::Virtuals>,
    /// The output guardrails results pass on their way to the client.
    pub guardrail: Option<Arc<crate::guardrail::Guard>>,
    /// The hooks asked before requests and after results.
    pub interceptors: Option<Arc<crate::intercept::Interceptors>>,
}

impl VirtualServer {
    /// Builds a virtual server over already-built upstream clients.
    pub fn new(
        cfg: &config::VirtualServer,
        upstreams: &BTreeMap<String, config::Upstream>,
        clients: &HashMap<String, Arc<UpstreamClient>>,
        catalog: Option<Arc<crate::catalog::Catalog>>,
    ) -> Self {
        let members: Vec<Member> = cfg
            .upstreams
            .iter()
            .map(|u| Member {
                upstream: u.clone(),
                client: clients[u].clone(),
            })
            .collect();
        VirtualServer {
            name: cfg.name.clone(),
            path: cfg.path.clone(),
            members,
            naming: Naming::for_server(cfg, upstreams),
            on_error: cfg.on_upstream_error,
            instructions: cfg.instructions.clone(),
            routes: RwLock::new(Routes::default()),
            catalog,
            tenant: cfg.tenant.as_deref().map(Arc::from),
            virtuals: cfg
                .virtuals
                .as_ref()
                .map(|v| virtuals::Virtuals::new(v, &cfg.upstreams)),
            guardrail: None,
            interceptors: None,
        }
    }

    /// The name clients see for tool or prompt `name` of member `i`.
    pub fn outward_name(&self, i: usize, name: &str) -> String {
        self.naming.outward_name(i, name)
    }

    /// The InitializeResult (or discover result body) for this virtual server.
    pub fn server_description(&self, infos: &[Option<Arc<InitInfo>>]) -> Value {
        let mut subscribe = false;
        for info in infos.iter().flatten() {
            subscribe |= info
                .capabilities
                .pointer("/resources/subscribe")
                .and_then(Value::as_bool)
                .unwrap_or(false);
        }
        let instructions = self.instructions.clone().or_else(|| {
            let parts: Vec<String> = self
                .members
                .iter()
                .zip(infos)
                .filter_map(|(m, i)| {
                    let text = i.as_ref()?.instructions.as_ref()?;
                    Some(if self.members.len() == 1 {
                        text.clone()
                    } else {
                        format!("[{}] {text}", m.upstream)
                    })
                })
                .collect();
            (!parts.is_empty()).then(|| parts.join("\n\n"))
        });
        let mut out = serde_json::json!({
            "capabilities": {
                "tools": { "listChanged": true },
                "prompts": { "listChanged": true },
                "resources": { "subscribe": subscribe, "listChanged": true },
                "logging": {},
                "completions": {}
            },
            "serverInfo": { "name": self.name, "version": env!("CARGO_PKG_VERSION") }
        });
        if let Some(text) = instructions {
            out["instructions"] = Value::String(text);
        }
        let extensions = names::relayed_extensions(infos.iter().flatten().map(|i| &i.capabilities));
        if !extensions.is_empty() {
            out["capabilities"]["extensions"] = Value::Object(extensions);
        }
        out
    }

    /// Calls a member, re-opening its session once if the upstream forgot it.
    pub async fn call(
        &self,
        src: &dyn SessionSource,
        member: usize,
        message: Message,
    ) -> Result<CallStream, FederationError> {
        self.call_with(src, member, message, Delivery::Whole).await
    }

    /// Like [`call`](Self::call), choosing how the final response is delivered.
    pub async fn call_with(
        &self,
        src: &dyn SessionSource,
        member: usize,
        message: Message,
        delivery: Delivery,
    ) -> Result<CallStream, FederationError> {
        let m = &self.members[member];
        let session = src.session(m).await?;
        if session.version.is_stateless()
            && !m.client.mirrored().learned()
            && Method::of(&message) == Method::ToolsCall
        {
            // The upstream needs the call's mirrored parameters as headers: make sure they
            // are known (the HTTP client adds them from its table). Once a whole listing was
            // read there is nothing to learn, and the call's params are not read here.
            if let Some(name) = crate::protocol::stateless::name_header_value(&message) {
                Box::pin(self.mirrored_params(src, member, &name)).await;
            }
        }
        let ctx = src.context();
        match m
            .client
            .call(ctx, &session, message.clone(), delivery)
            .await
        {
            Err(UpstreamError::SessionExpired { .. }) => {
                src.expired(m, &session);
                let session = src.session(m).await?;
                Ok(m.client.call(ctx, &session, message, delivery).await?)
            }
            other => Ok(other?),
        }
    }

    /// Sends a notification to a member.
    pub async fn notify(
        &self,
        src: &dyn SessionSource,
        member: usize,
        message: Message,
    ) -> Result<(), FederationError> {
        let m = &self.members[member];
        let session = src.session(m).await?;
        Ok(m.client.notify(src.context(), &session, message).await?)
    }

    /// Sends a notification to every member, ignoring failures (they are logged).
    pub async fn notify_all(&self, src: &dyn SessionSource, message: Message) {
        let sends = (0..self.members.len()).map(|i| self.notify(src, i, message.clone()));
        for (i, r) in futures_util::future::join_all(sends)
            .await
            .into_iter()
            .enumerate()
        {
            if let Err(e) = r {
                tracing::debug!(upstream = %self.members[i].upstream, error = %e, "notification not delivered");
            }
        }
    }

    /// Sends a request to every member and answers `{}` (used for `logging/setLevel`).
    pub async fn request_all(
        &self,
        src: &dyn SessionSource,
        message: &Message,
    ) -> Result<(), FederationError> {
        let calls = (0..self.members.len()).map(|i| async move {
            let mut stream = self.call(src, i, message.clone()).await?;
            while let Some(frame) = stream.next().await {
                if let Frame::Failed(e) = frame {
                    return Err(FederationError::Upstream(e));
                }
            }
            Ok(())
        });
        for (i, r) in futures_util::future::join_all(calls)
            .await
            .into_iter()
            .enumerate()
        {
            if let Err(e) = r {
                tracing::warn!(upstream = %self.members[i].upstream, error = %e, method = message.method(), "upstream failed");
            }
        }
        Ok(())
    }

    /// Answers a list method by merging every member's list.
    pub async fn list(
        &self,
        src: &dyn SessionSource,
        kind: ListKind,
        params: Option<&RawValue>,
        visible: Option<&Visibility<'_>>,
    ) -> Result<Listing, FederationError> {
        self.list_noting(src, kind, params, visible, None).await
    }

    /// [`list`](Self::list), noting in `left_out` the members the user must connect first.
    async fn list_noting(
        &self,
        src: &dyn SessionSource,
        kind: ListKind,
        params: Option<&RawValue>,
        visible: Option<&Visibility<'_>>,
        left_out: Option<&consent::LeftOut>,
    ) -> Result<Listing, FederationError> {
        let cursor_in = params
            .map(|p| serde_json::from_str::<Map<String, Value>>(p.get()))
            .transpose()
            .map_err(|_| FederationError::InvalidParams("params must be an object".into()))?
            .and_then(|mut m| m.remove("cursor"));
        let pending: Vec<(usize, Option<String>)> = match cursor_in {
            None | Some(Value::Null) => (0..self.members.len()).map(|i| (i, None)).collect(),
            Some(Value::String(c)) => {
                let map = cursor::decode(&c)
                    .ok_or_else(|| FederationError::InvalidParams("invalid cursor".into()))?;
                let mut v = Vec::new();
                for (upstream, upstream_cursor) in map {
                    let i = self
                        .members
                        .iter()
                        .position(|m| m.upstream == upstream)
                        .ok_or_else(|| FederationError::InvalidParams("invalid cursor".into()))?;
                    v.push((i, Some(upstream_cursor)));
                }
                v
            }
            Some(_) => {
                return Err(FederationError::InvalidParams(
                    "cursor must be a string".into(),
                ));
            }
        };
        let full_pass = pending.iter().all(|(_, c)| c.is_none());
        let fetches = pending
            .iter()
            .map(|(i, c)| self.list_member_or_catalog(src, *i, kind, c.as_deref(), left_out));
        let results = futures_util::future::join_all(fetches).await;
        let mut items = Vec::new();
        let mut next = BTreeMap::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut learned: HashMap<String, usize> = HashMap::new();
        let mut hints: Option<CacheHints> = None;
        let mut merge = |h: CacheHints| hints = Some(hints.map_or(h, |m| m.merge(h)));
        for ((i, cursor), result) in pending.iter().zip(results) {
            let (page, next_cursor, member_hints) = match result {
                Ok(r) => r,
                Err(e) if self.on_error == OnUpstreamError::Partial => {
                    tracing::warn!(server = %self.name, upstream = %self.members[*i].upstream, error = %e, "{} is partial: an upstream failed", kind.method());
                    // A partial list must not be kept as if it were whole.
                    merge(CacheHints {
                        ttl_ms: 0,
                        public: true,
                    });
                    continue;
                }
                Err(e) => return Err(e),
            };
            merge(member_hints);
            let last_page = next_cursor.is_none();
            if let Some(c) = next_cursor {
                next.insert(self.members[*i].upstream.clone(), c);
            }
            let page = match &self.catalog {
                // A client's listing never records removals: what one user sees (per-user
                // credentials, sessions) is not what the upstream offers. The gateway's own
                // re-check and registration list everything and do.
                Some(catalog) => items::raw(catalog.admit(
                    &self.members[*i].upstream,
                    kind.definition(),
                    items::values(page),
                    false,
                )),
                None => page,
            };
            let mut mirrored = Vec::new();
            for item in &page {
                let Some(fields) = items::Fields::of(item) else {
                    continue;
                };
                let Some(id) = fields.string(kind.id_key()) else {
                    continue;
                };
                if kind == ListKind::Tools {
                    match self.tool_mirrors(*i, &id, fields.raw("inputSchema")) {
                        Ok(Some(h)) => mirrored.push((id.clone(), h)),
                        Ok(None) => {}
                        Err(()) => continue,
                    }
                }
                if let Some(v) = &self.virtuals
                    && v.hides(kind, *i, &id)
                {
                    let meta = (kind == ListKind::Tools)
                        .then(|| self.outward_meta(*i, fields.raw("_meta")))
                        .flatten();
                    for def in v.made_from(kind, *i, &id) {
                        seen.insert(def.name.clone(), *i);
                        if visible.is_some_and(|v| !v(*i, &def.name)) {
                            continue;
                        }
                        match def.item(kind, &fields, meta.clone()) {
                            Ok(item) => items.push(item),
                            Err(reason) => tracing::error!(
                                server = %self.name, upstream = %self.members[*i].upstream,
                                name = %def.name, from = %crate::audit::clipped(&id), %reason,
                                "virtual definition left out of the listing: the upstream's definition cannot carry it"
                            ),
                        }
                    }
                    continue;
                }
                let outward = if kind.is_uri() {
                    self.naming.outward_uri(*i, &id)
                } else {
                    self.naming.outward_name(*i, &id)
                };
                if self.virtual_named(kind, &outward).is_some() {
                    tracing::warn!(server = %self.name, name = %outward, "an upstream's definition has the name of a virtual one, and is hidden");
                    continue;
                }
                if let Some(first) = seen.get(&outward) {
                    tracing::error!(
                        server = %self.name, name = %outward,
                        kept = %self.members[*first].upstream, hidden = %self.members[*i].upstream,
                        "two upstreams offer the same name; set `prefix: always` or `auto` on this server"
                    );
                    continue;
                }
                seen.insert(outward.clone(), *i);
                learned.insert(id.clone(), *i);
                // Hidden items are still learned for routing; policy refuses calls to them.
                if visible.is_some_and(|v| !v(*i, &outward)) {
                    continue;
                }
                let mut replaced = vec![(kind.id_key(), to_raw(&Value::String(outward)))];
                if kind == ListKind::Tools
                    && let Some(meta) = self.outward_meta(*i, fields.raw("_meta"))
                {
                    replaced.push(("_meta", meta));
                }
                items.push(fields.with(&replaced));
            }
            if kind == ListKind::Tools {
                let first_page = cursor.is_none();
                self.members[*i]
                    .client
                    .mirrored()
                    .learn(mirrored, first_page, last_page);
            }
        }
        self.learn(kind, learned, full_pass);
        let mut out = ListResult::new(kind.items_key(), items);
        if !next.is_empty() {
            out.fields_mut()
                .insert("nextCursor".into(), Value::String(cursor::encode(&next)));
        }
        let mut hints = hints.unwrap_or(CacheHints::NONE);
        if visible.is_some() {
            // What the caller sees depends on who it is once policy filters the list.
            hints = hints.private();
        }
        Ok(Listing { result: out, hints })
    }

    /// The parameters a listed tool mirrors into headers; `Err` (logged) when its
    /// annotations break SEP-2243's rules, and the tool must be left out of the listing.
    fn tool_mirrors(
        &self,
        member: usize,
        name: &str,
        input_schema: Option<&RawValue>,
    ) -> Result<Option<Arc<ToolHeaders>>, ()> {
        match ToolHeaders::of_raw(input_schema) {
            Ok(h) => Ok(h.map(Arc::new)),
            Err(reason) => {
                tracing::warn!(
                    server = %self.name, upstream = %self.members[member].upstream,
                    tool = %crate::audit::clipped(name), %reason,
                    "tool left out of the listing: its x-mcp-header annotations are invalid"
                );
                Err(())
            }
        }
    }

    /// A tool's `_meta` with its UI resource links made outward (see
    /// [`Naming::outward_ui_links`]); `None` when nothing changes.
    fn outward_meta(&self, member: usize, meta: Option<&RawValue>) -> Option<RawItem> {
        let meta = meta?;
        let text = meta.get();
        // Both links spell `resourceUri`, unless with an escape.
        if self.naming.prefixes[member].is_none()
            || !(text.contains("resourceUri") || text.contains('\\'))
        {
            return None;
        }
        let meta: Value = serde_json::from_str(meta.get()).ok()?;
        let mut tool = serde_json::json!({ "_meta": meta });
        self.naming.outward_ui_links(member, &mut tool);
        Some(to_raw(&tool["_meta"]))
    }

    /// What tool `name` of `member` (the upstream's own name) mirrors into headers. When no
    /// whole listing of that member was read yet, lists it first (once, and again only after
    /// a while if that failed): a call may come before any listing on this replica.
    pub async fn mirrored_params(
        &self,
        src: &dyn SessionSource,
        member: usize,
        name: &str,
    ) -> Option<Arc<ToolHeaders>> {
        let table = self.members[member].client.mirrored();
        match table.get(name) {
            Known::Mirrors(h) => Some(h),
            Known::Nothing => None,
            Known::Unlearned => {
                if table.may_learn() {
                    self.learn_mirrored(src, member).await;
                }
                table.mirrors(name)
            }
        }
    }

    /// Reads every page of a member's tools for their mirrored parameters.
    async fn learn_mirrored(&self, src: &dyn SessionSource, member: usize) {
        let mut cursor: Option<String> = None;
        for page in 0..MAX_LEARNING_PAGES {
            let listed =
                Box::pin(self.list_member(src, member, ListKind::Tools, cursor.as_deref())).await;
            let (items, next, _) = match listed {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(upstream = %self.members[member].upstream, error = %e, "could not list tools for their mirrored parameters");
                    return;
                }
            };
            let mirrored = items
                .iter()
                .filter_map(|t| {
                    let fields = items::Fields::of(t)?;
                    let name = fields.string("name")?;
                    let h = self
                        .tool_mirrors(member, &name, fields.raw("inputSchema"))
                        .ok()??;
                    Some((name, h))
                })
                .collect();
            let last = next.is_none();
            self.members[member]
                .client
                .mirrored()
                .learn(mirrored, page == 0, last);
            if last {
                return;
            }
            cursor = next;
        }
    }

    fn learn(&self, kind: ListKind, learned: HashMap<String, usize>, full_pass: bool) {
        let mut routes = self.routes.write().expect("lock");
        let table = match kind {
            ListKind::Tools => &mut routes.tools,
            ListKind::Prompts => &mut routes.prompts,
            ListKind::Resources => &mut routes.resources,
            ListKind::Templates => return,
        };
        if full_pass {
            table.clear();
        }
        for (k, v) in learned {
            table.entry(k).or_insert(v);
        }
    }

    async fn list_member(
        &self,
        src: &dyn SessionSource,
        i: usize,
        kind: ListKind,
        cursor: Option<&str>,
    ) -> Result<consent::Page, FederationError> {
        let params = cursor.map(|c| to_raw(&serde_json::json!({ "cursor": c })));
        let request = Message::request(RequestId::Number(0), kind.method(), params);
        let mut stream = self.call(src, i, request).await?;
        let upstream = &self.members[i].upstream;
        while let Some(frame) = stream.next().await {
            match frame {
                Frame::Response(m) => {
                    if let Some(err) = m.error {
                        return Err(FederationError::Refused {
                            upstream: upstream.clone(),
                            method: kind.method(),
                            message: error_message(&err),
                        });
                    }
                    // The result's members are read as text: the items are only split apart
                    // here, each read later for no more than it must be (see `items`).
                    let mut result: BTreeMap<String, &RawValue> = m
                        .result
                        .as_ref()
                        .and_then(|r| serde_json::from_str(r.get()).ok())
                        .ok_or_else(|| UpstreamError::Protocol {
                            upstream: upstream.clone(),
                            reason: format!("{} result is not an object", kind.method()),
                        })?;
                    let items: Vec<RawItem> = result
                        .remove(kind.items_key())
                        .and_then(|r| serde_json::from_str(r.get()).ok())
                        .unwrap_or_default();
                    let next = result
                        .remove("nextCursor")
                        .and_then(|r| serde_json::from_str::<String>(r.get()).ok());
                    let rest: Map<String, Value> = result
                        .into_iter()
                        .filter_map(|(k, v)| Some((k, serde_json::from_str(v.get()).ok()?)))
                        .collect();
                    return Ok((items, next, CacheHints::of(&rest)));
                }
                Frame::Failed(e) => return Err(e.into()),
                _ => {}
            }
        }
        Err(UpstreamError::Crashed {
            upstream: upstream.clone(),
            reason: "no response".into(),
        }
        .into())
    }

    /// Whether requests reach the one member as the client sent them (nothing to rename).
    pub fn passes_through(&self) -> bool {
        self.members.len() == 1 && !self.naming.prefixed() && self.virtuals.is_none()
    }

    fn virtual_named(&self, kind: ListKind, name: &str) -> Option<&virtuals::Def> {
        self.virtuals.as_ref()?.named(kind, name)
    }

    /// Refuses `inner` of `member` when only virtual definitions show it.
    fn not_hidden(
        &self,
        kind: ListKind,
        member: usize,
        inner: &str,
        asked: &str,
    ) -> Result<(), FederationError> {
        if self
            .virtuals
            .as_ref()
            .is_some_and(|v| v.hides(kind, member, inner))
        {
            return Err(FederationError::Unknown {
                kind: kind.singular(),
                name: asked.to_owned(),
            });
        }
        Ok(())
    }

    /// Picks the member for a targeted request and rewrites the target to the upstream's name.
    pub async fn route(
        &self,
        src: &dyn SessionSource,
        message: Message,
    ) -> Result<Routed, FederationError> {
        if self.passes_through() {
            // Nothing to rename: pass the request through untouched (the common hot path).
            return Ok(Routed { member: 0, message });
        }
        let method = message.method().to_owned();
        let mut params: BTreeMap<String, Box<RawValue>> = message.params_as().map_err(|_| {
            FederationError::InvalidParams(format!("{method} needs params as an object"))
        })?;
        let parsed = Method::parse(&method);
        let (member, new_params) = match (parsed.target(), parsed.function_kind()) {
            (Some(TargetParam::Name), Some(function)) => {
                let kind = if function == FunctionKind::Tool {
                    ListKind::Tools
                } else {
                    ListKind::Prompts
                };
                let name = string_param(&params, "name", &method)?;
                if let Some(def) = self.virtual_named(kind, &name) {
                    params.insert("name".into(), to_raw(&def.from));
                    let args = def.arguments(params.get("arguments").map(|a| &**a))?;
                    params.insert("arguments".into(), args);
                    (def.member, params)
                } else {
                    let (i, inner) = self.resolve_name(src, kind, &name).await?;
                    self.not_hidden(kind, i, &inner, &name)?;
                    params.insert("name".into(), to_raw(&inner));
                    (i, params)
                }
            }
            (Some(TargetParam::Uri), _) => {
                let uri = string_param(&params, "uri", &method)?;
                let (i, inner) = match self.virtual_named(ListKind::Resources, &uri) {
                    Some(def) => (def.member, def.from.clone()),
                    None => {
                        let (i, inner) = self.resolve_uri(&uri);
                        self.not_hidden(ListKind::Resources, i, &inner, &uri)?;
                        (i, inner)
                    }
                };
                params.insert("uri".into(), to_raw(&inner));
                (i, params)
            }
            (Some(TargetParam::Ref), _) => {
                let mut reference: Map<String, Value> = params
                    .get("ref")
                    .and_then(|r| serde_json::from_str(r.get()).ok())
                    .ok_or_else(|| {
                        FederationError::InvalidParams("completion/complete needs `ref`".into())
                    })?;
                let i = if let Some(name) = reference
                    .get("name")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                {
                    let (i, inner) = match self.virtual_named(ListKind::Prompts, &name) {
                        Some(def) => (def.member, def.from.clone()),
                        None => {
                            let (i, inner) =
                                self.resolve_name(src, ListKind::Prompts, &name).await?;
                            self.not_hidden(ListKind::Prompts, i, &inner, &name)?;
                            (i, inner)
                        }
                    };
                    reference.insert("name".into(), Value::String(inner));
                    i
                } else if let Some(uri) = reference
                    .get("uri")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                {
                    let (i, inner) = self.resolve_uri(&uri);
                    reference.insert("uri".into(), Value::String(inner));
                    i
                } else {
                    return Err(FederationError::InvalidParams(
                        "`ref` needs `name` or `uri`".into(),
                    ));
                };
                params.insert("ref".into(), to_raw(&reference));
                (i, params)
            }
            _ if self.members.len() == 1 => (0, params),
            _ => return Err(FederationError::MethodNotFound(method)),
        };
        let mut message = message;
        message.params = Some(to_raw(&new_params));
        Ok(Routed { member, message })
    }

    async fn resolve_name(
        &self,
        src: &dyn SessionSource,
        kind: ListKind,
        name: &str,
    ) -> Result<(usize, String), FederationError> {
        let what = if kind == ListKind::Tools {
            "tool"
        } else {
            "prompt"
        };
        if self.naming.prefixed() {
            return self
                .naming
                .inward_name(name)
                .map(|(i, n)| (i, n.to_owned()))
                .ok_or_else(|| FederationError::Unknown {
                    kind: what,
                    name: name.to_owned(),
                });
        }
        if self.members.len() == 1 {
            return Ok((0, name.to_owned()));
        }
        let left_out = consent::LeftOut::default();
        for attempt in 0..2 {
            {
                let routes = self.routes.read().expect("lock");
                let table = if kind == ListKind::Tools {
                    &routes.tools
                } else {
                    &routes.prompts
                };
                if let Some(i) = table.get(name) {
                    return Ok((*i, name.to_owned()));
                }
            }
            if attempt == 0 {
                self.list_noting(src, kind, None, None, Some(&left_out))
                    .await?;
            }
        }
        // The name may be one of a member the user has not connected yet (its definitions are
        // unknown without a catalog): that member asks for consent when called.
        if let Some(i) = left_out.first() {
            return Ok((i, name.to_owned()));
        }
        Err(FederationError::Unknown {
            kind: what,
            name: name.to_owned(),
        })
    }

    fn resolve_uri(&self, uri: &str) -> (usize, String) {
        if let Some((i, inner)) = self.naming.inward_uri(uri) {
            return (i, inner);
        }
        let routes = self.routes.read().expect("lock");
        let i = routes.resources.get(uri).copied().unwrap_or(0);
        (i, uri.to_owned())
    }

    /// Rewrites a message an upstream sends outward (resource URIs in update notifications).
    pub fn outward(&self, member: usize, message: Message) -> Message {
        if Method::of(&message) != Method::NotificationsResourcesUpdated || !self.naming.prefixed()
        {
            return message;
        }
        let Ok(mut params) = message.params_as::<Map<String, Value>>() else {
            return message;
        };
        if let Some(Value::String(uri)) = params.get("uri") {
            let outward = self.naming.outward_uri(member, uri);
            params.insert("uri".into(), Value::String(outward));
        }
        let mut message = message;
        message.params = Some(to_raw(&params));
        message
    }
}

/// A `resources/read` result with the contents the upstream names `from` named `to`, the URI
/// the client read (a prefixed or virtual one): a client must not learn the upstream's own
/// URI, which the gateway would refuse. `None` when nothing is renamed.
pub fn renamed_contents(result: &RawValue, from: &str, to: &str) -> Option<Box<RawValue>> {
    if !result.get().contains("contents") {
        return None;
    }
    let mut v: Value = serde_json::from_str(result.get()).ok()?;
    let mut renamed = false;
    for item in v.get_mut("contents")?.as_array_mut()? {
        if let Some(uri) = item.get_mut("uri")
            && uri.as_str() == Some(from)
        {
            *uri = Value::String(to.to_owned());
            renamed = true;
        }
    }
    renamed.then(|| to_raw(&v))
}

fn string_param(
    params: &BTreeMap<String, Box<RawValue>>,
    key: &str,
    method: &str,
) -> Result<String, FederationError> {
    params
        .get(key)
        .and_then(|v| serde_json::from_str::<String>(v.get()).ok())
        .ok_or_else(|| {
            FederationError::InvalidParams(format!("{method} needs `{key}` as a string"))
        })
}

fn error_message(err: &RawValue) -> String {
    serde_json::from_str::<Value>(err.get())
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| "error".into())
}
