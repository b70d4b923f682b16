//! Gatehouse: an enterprise gateway for the Model Context Protocol.
//!
//! The request path, one module per stage: [`downstream`] (client transport) →
//! [`federation`] (virtual servers) → [`upstream`] (MCP servers). [`protocol`] holds the wire
//! format, [`config`] the YAML model, [`gateway`] ties a configuration to a running state.

pub mod admin;
pub mod audit;
pub mod auth;
pub mod catalog;
pub mod commands;
pub mod config;
pub mod context;
pub mod credentials;
pub mod downstream;
pub mod federation;
#[doc(hidden)]
pub mod fuzzing;
pub mod gateway;
pub mod guardrail;
pub mod hex;
pub mod intercept;
pub mod keyring;
pub mod oauth;
pub mod policy;
pub mod protocol;
pub mod quota;
pub mod serve;
pub mod store;
pub mod telemetry;
#[cfg(test)]
pub(crate) mod testing;
pub mod upstream;
pub mod web;
