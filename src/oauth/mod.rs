//! The authorization-server façade: MCP clients register and get tokens from Gatehouse while users log in at the enterprise IdP.

pub mod cimd;
pub mod clients;
pub mod metadata;
pub mod pkce;
pub mod registration;
