//! The MCP methods the gateway knows, across every protocol generation it speaks, and every
//! question the gateway asks about a method (which list, which parameter names the target, which
//! policy kind, whether a 2026-07-28 client may send it, whether its results are cacheable, the
//! metrics label…). Adding a method is a change to this file only.

use super::Message;

/// Declares the known methods once: the enum variants, their wire names and the table of all.
macro_rules! methods {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        /// A JSON-RPC method of MCP 2025-03-26 … 2026-07-28 (requests and notifications, either
        /// direction, plus the tasks extension), or any other method as it was sent.
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum Method {
            $($(#[$doc])* $variant,)*
            /// A method MCP does not define (vendor extensions, typos): relayed, never labelled.
            Other(String),
        }

        impl Method {
            /// Every known method, in a fixed order.
            pub const ALL: &'static [Method] = &[$(Method::$variant,)*];

            /// The known method spelled `name`, if any (exact and case-sensitive, as on the wire).
            pub fn known(name: &str) -> Option<Method> {
                Some(match name {
                    $($name => Method::$variant,)*
                    _ => return None,
                })
            }

            /// The method's name on the wire.
            pub fn as_str(&self) -> &str {
                match self {
                    Method::Other(name) => name,
                    known => known.metric_label(),
                }
            }

            /// The label a method is counted under: itself when it is an MCP method, else
            /// `other`, so that callers cannot mint label values.
            pub fn metric_label(&self) -> &'static str {
                match self {
                    $(Method::$variant => $name,)*
                    Method::Other(_) => "other",
                }
            }
        }
    };
}

methods! {
    /// Opens a session (removed in 2026-07-28).
    Initialize => "initialize",
    /// Liveness (removed in 2026-07-28).
    Ping => "ping",
    /// What a 2026-07-28 server offers.
    ServerDiscover => "server/discover",
    /// Lists tools.
    ToolsList => "tools/list",
    /// Calls a tool.
    ToolsCall => "tools/call",
    /// Lists prompts.
    PromptsList => "prompts/list",
    /// Gets a prompt.
    PromptsGet => "prompts/get",
    /// Lists resources.
    ResourcesList => "resources/list",
    /// Lists resource templates.
    ResourcesTemplatesList => "resources/templates/list",
    /// Reads a resource.
    ResourcesRead => "resources/read",
    /// Subscribes to a resource (removed in 2026-07-28).
    ResourcesSubscribe => "resources/subscribe",
    /// Ends a resource subscription (removed in 2026-07-28).
    ResourcesUnsubscribe => "resources/unsubscribe",
    /// The 2026-07-28 change-notification stream.
    SubscriptionsListen => "subscriptions/listen",
    /// Completes a prompt's or resource template's argument.
    CompletionComplete => "completion/complete",
    /// Sets the session's log level (removed in 2026-07-28).
    LoggingSetLevel => "logging/setLevel",
    /// Server→client: sampling.
    SamplingCreateMessage => "sampling/createMessage",
    /// Server→client: elicitation.
    ElicitationCreate => "elicitation/create",
    /// Server→client: roots.
    RootsList => "roots/list",
    /// Tasks extension: a task's state.
    TasksGet => "tasks/get",
    /// Tasks extension: input for a task.
    TasksUpdate => "tasks/update",
    /// Tasks extension: lists tasks (removed from the extension).
    TasksList => "tasks/list",
    /// Tasks extension: a task's result (removed from the extension).
    TasksResult => "tasks/result",
    /// Tasks extension: cancels a task.
    TasksCancel => "tasks/cancel",
    /// The client finished `initialize` (removed with it in 2026-07-28).
    NotificationsInitialized => "notifications/initialized",
    /// A request was cancelled.
    NotificationsCancelled => "notifications/cancelled",
    /// Progress of a request.
    NotificationsProgress => "notifications/progress",
    /// A log message.
    NotificationsMessage => "notifications/message",
    /// The tool list changed.
    NotificationsToolsListChanged => "notifications/tools/list_changed",
    /// The prompt list changed.
    NotificationsPromptsListChanged => "notifications/prompts/list_changed",
    /// The resource list changed.
    NotificationsResourcesListChanged => "notifications/resources/list_changed",
    /// A subscribed resource changed.
    NotificationsResourcesUpdated => "notifications/resources/updated",
    /// The client's roots changed.
    NotificationsRootsListChanged => "notifications/roots/list_changed",
    /// A URL-mode elicitation completed.
    NotificationsElicitationComplete => "notifications/elicitation/complete",
    /// Tasks extension: a task's status changed.
    NotificationsTasksStatus => "notifications/tasks/status",
    /// 2026-07-28: a `subscriptions/listen` stream is open.
    NotificationsSubscriptionsAcknowledged => "notifications/subscriptions/acknowledged",
}

/// What kind of function a request targets (what policy rules and scope rules are written for).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FunctionKind {
    /// A tool.
    Tool,
    /// A prompt.
    Prompt,
    /// A resource or resource template.
    Resource,
}

impl FunctionKind {
    /// The method that uses a function of this kind (what `policy explain` evaluates).
    pub fn call_method(self) -> Method {
        match self {
            FunctionKind::Tool => Method::ToolsCall,
            FunctionKind::Prompt => Method::PromptsGet,
            FunctionKind::Resource => Method::ResourcesRead,
        }
    }
}

/// What a list returns and which member of each item identifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    /// `tools/list` → `tools[].name`.
    Tools,
    /// `prompts/list` → `prompts[].name`.
    Prompts,
    /// `resources/list` → `resources[].uri`.
    Resources,
    /// `resources/templates/list` → `resourceTemplates[].uriTemplate`.
    Templates,
}

impl ListKind {
    /// Every list, in the order the catalog reads them.
    pub const ALL: [ListKind; 4] = [
        ListKind::Tools,
        ListKind::Prompts,
        ListKind::Resources,
        ListKind::Templates,
    ];

    /// The list method.
    pub fn method(self) -> &'static str {
        self.list_method().metric_label()
    }

    /// The list method, as a `Method`.
    pub fn list_method(self) -> Method {
        match self {
            ListKind::Tools => Method::ToolsList,
            ListKind::Prompts => Method::PromptsList,
            ListKind::Resources => Method::ResourcesList,
            ListKind::Templates => Method::ResourcesTemplatesList,
        }
    }

    /// The result member holding the items.
    pub fn items_key(self) -> &'static str {
        match self {
            ListKind::Tools => "tools",
            ListKind::Prompts => "prompts",
            ListKind::Resources => "resources",
            ListKind::Templates => "resourceTemplates",
        }
    }

    /// The item member that identifies (and is renamed).
    pub fn id_key(self) -> &'static str {
        match self {
            ListKind::Tools | ListKind::Prompts => "name",
            ListKind::Resources => "uri",
            ListKind::Templates => "uriTemplate",
        }
    }

    /// Whether the identifier is a URI (prefixed as `prefix+uri`) rather than a name.
    pub fn is_uri(self) -> bool {
        matches!(self, ListKind::Resources | ListKind::Templates)
    }

    /// The server capability that announces this list.
    pub fn capability(self) -> &'static str {
        match self {
            ListKind::Tools => "tools",
            ListKind::Prompts => "prompts",
            ListKind::Resources | ListKind::Templates => "resources",
        }
    }
}

/// The member of `params` that names what a request targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetParam {
    /// `params.name` (tools, prompts).
    Name,
    /// `params.uri` (resources).
    Uri,
    /// `params.taskId` (the tasks extension).
    TaskId,
    /// `params.ref`, an object naming a prompt or resource template (completions).
    Ref,
}

impl TargetParam {
    /// The member's name in `params`.
    pub fn key(self) -> &'static str {
        match self {
            TargetParam::Name => "name",
            TargetParam::Uri => "uri",
            TargetParam::TaskId => "taskId",
            TargetParam::Ref => "ref",
        }
    }
}

impl Method {
    /// The method spelled `name`; `Other` when MCP does not define it.
    pub fn parse(name: &str) -> Method {
        Method::known(name).unwrap_or_else(|| Method::Other(name.to_owned()))
    }

    /// The method of a message (requests and notifications; empty `Other` for responses).
    pub fn of(message: &Message) -> Method {
        Method::parse(message.method())
    }

    /// Whether this is a request or notification MCP defines.
    pub fn is_known(&self) -> bool {
        !matches!(self, Method::Other(_))
    }

    /// The list this method asks for, if it is one of the four lists.
    pub fn list(&self) -> Option<ListKind> {
        Some(match self {
            Method::ToolsList => ListKind::Tools,
            Method::PromptsList => ListKind::Prompts,
            Method::ResourcesList => ListKind::Resources,
            Method::ResourcesTemplatesList => ListKind::Templates,
            _ => return None,
        })
    }

    /// The kind of function this method acts on (policy and scope rules apply by it).
    pub fn function_kind(&self) -> Option<FunctionKind> {
        match self {
            Method::ToolsCall => Some(FunctionKind::Tool),
            Method::PromptsGet => Some(FunctionKind::Prompt),
            Method::ResourcesRead | Method::ResourcesSubscribe | Method::ResourcesUnsubscribe => {
                Some(FunctionKind::Resource)
            }
            _ => None,
        }
    }

    /// The member of `params` that names the request's target, if it has one.
    pub fn target(&self) -> Option<TargetParam> {
        match self {
            Method::ToolsCall | Method::PromptsGet => Some(TargetParam::Name),
            Method::ResourcesRead | Method::ResourcesSubscribe | Method::ResourcesUnsubscribe => {
                Some(TargetParam::Uri)
            }
            // The tasks extension routes by task (SEP-2663).
            Method::TasksGet | Method::TasksUpdate | Method::TasksCancel => {
                Some(TargetParam::TaskId)
            }
            Method::CompletionComplete => Some(TargetParam::Ref),
            _ => None,
        }
    }

    /// Whether the gate decides this request by the function it names (catalog and policy):
    /// calls, reads, subscriptions and completions.
    pub fn names_function(&self) -> bool {
        self.function_kind().is_some() || *self == Method::CompletionComplete
    }

    /// Whether this request names a task (the tasks extension).
    pub fn names_task(&self) -> bool {
        self.target() == Some(TargetParam::TaskId)
    }

    /// The `params` member whose value a 2026-07-28 request echoes in `Mcp-Name`, if any: the
    /// string targets of methods such a client may send.
    pub fn name_header_param(&self) -> Option<&'static str> {
        match self.target()? {
            TargetParam::Ref => None,
            _ if !self.allowed_stateless() => None,
            param => Some(param.key()),
        }
    }

    /// Whether a 2026-07-28 client may send this request; everything else (removed methods,
    /// unknown ones) answers 404 with -32601 on the stateless path.
    pub fn allowed_stateless(&self) -> bool {
        matches!(
            self,
            Method::TasksGet
                | Method::TasksUpdate
                | Method::TasksCancel
                | Method::ServerDiscover
                | Method::SubscriptionsListen
                | Method::ToolsList
                | Method::ToolsCall
                | Method::PromptsList
                | Method::PromptsGet
                | Method::ResourcesList
                | Method::ResourcesRead
                | Method::ResourcesTemplatesList
                | Method::CompletionComplete
        )
    }

    /// Whether 2026-07-28 removed this method (or the tasks extension dropped it).
    pub fn removed_in_2026(&self) -> bool {
        matches!(
            self,
            Method::Initialize
                | Method::NotificationsInitialized
                | Method::Ping
                | Method::LoggingSetLevel
                | Method::ResourcesSubscribe
                | Method::ResourcesUnsubscribe
                | Method::TasksList
                | Method::TasksResult
        )
    }

    /// Whether its 2026-07-28 results are cacheable and must carry `ttlMs` and `cacheScope`.
    pub fn cacheable(&self) -> bool {
        self.list().is_some() || *self == Method::ResourcesRead
    }

    /// The client capability a server→client request needs to be answered.
    pub fn client_capability(&self) -> Option<&'static str> {
        match self {
            Method::SamplingCreateMessage => Some("sampling"),
            Method::ElicitationCreate => Some("elicitation"),
            Method::RootsList => Some("roots"),
            _ => None,
        }
    }

    /// Whether its audit and metrics records label the target by name (tools and prompts;
    /// resource URIs never label).
    pub fn labels_target(&self) -> bool {
        matches!(
            self.function_kind(),
            Some(FunctionKind::Tool | FunctionKind::Prompt)
        )
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for Method {
    fn from(name: &str) -> Method {
        Method::parse(name)
    }
}

impl PartialEq<str> for Method {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Method {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// The label a method is counted under (see [`Method::metric_label`]).
pub fn metric_label(method: &str) -> &'static str {
    Method::parse(method).metric_label()
}

#[cfg(test)]
#[path = "method_tests.rs"]
mod tests;

/// What a response's method reads as (see [`Method::of`]).
impl Default for Method {
    fn default() -> Self {
        Method::Other(String::new())
    }
}
