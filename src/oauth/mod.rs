//! An optional OAuth authorization-server façade for enterprise IdPs without DCR/CIMD/RFC 8707.

pub mod grants;
pub mod id_jag;
pub mod idp;
pub mod keys;
pub mod tokens;

mod common;
mod jwks;
#[cfg(test)]
mod testing;
