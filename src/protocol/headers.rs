//! The HTTP header names of MCP's Streamable HTTP transport, defined once (lower case, as
//! `http::HeaderMap` stores them).

/// `MCP-Protocol-Version`: the revision a request speaks.
pub const PROTOCOL_VERSION: &str = "mcp-protocol-version";
/// `Mcp-Session-Id`: the session of a 2025 client.
pub const SESSION_ID: &str = "mcp-session-id";
/// `Mcp-Method` (2026-07-28): the body's method.
pub const MCP_METHOD: &str = "mcp-method";
/// `Mcp-Name` (2026-07-28): the body's target (see `Method::name_header_param`).
pub const MCP_NAME: &str = "mcp-name";
/// `Mcp-Param-*` (SEP-2243): a tool parameter mirrored into a header.
pub const PARAM_PREFIX: &str = "mcp-param-";
/// `Last-Event-ID`: where a resumed SSE stream starts.
pub const LAST_EVENT_ID: &str = "last-event-id";
