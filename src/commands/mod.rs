//! Administrative commands that work on the store rather than on live traffic.

pub mod audit;
pub mod catalog;
pub mod clients;
pub mod keys;
pub mod policy;
pub mod probe;
