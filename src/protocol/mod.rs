//! The MCP wire protocol as the gateway needs it: JSON-RPC envelopes that keep payloads raw,
//! protocol versions and their header rules, and Server-Sent Events framing.

pub mod head;
pub mod headers;
pub mod jsonrpc;
pub mod method;
pub mod param_headers;
pub mod passthrough;
pub mod sse;
pub mod stateless;
pub mod version;

pub use head::CallHead;
pub use jsonrpc::{ErrorCode, Message, MessageKind, RequestId};
pub use method::{FunctionKind, ListKind, Method, TargetParam};
pub use version::ProtocolVersion;
