//! The authorization-server façade (optional): MCP clients register with and get tokens from
//! Gatehouse while users sign in at the enterprise IdP, for IdPs without dynamic registration,
//! client metadata documents or RFC 8707 resource indicators.

pub mod authorize;
pub mod cimd;
mod client_auth;
pub mod clients;
mod cors;
pub mod endpoints;
pub mod facade;
pub mod grants;
pub mod id_jag;
pub mod idp;
pub mod keys;
pub mod metadata;
pub mod pkce;
pub mod registration;
pub mod tokens;

pub(crate) mod common;
pub(crate) mod cookies;
mod idp_jwt;
#[cfg(test)]
pub(crate) mod testing;
