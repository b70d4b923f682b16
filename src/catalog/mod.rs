//! The catalog of approved upstream definitions: pins over canonical forms, the poisoning
//! scanner, and the decisions enforced on listings and calls.

pub mod pin;
pub mod registry;
pub mod scan;

pub use registry::Catalog;
