//! The catalog of approved upstream definitions: pins over canonical forms, the poisoning
//! scanner, and the decisions enforced on listings and calls.

pub mod lister;
pub mod pin;
pub mod registry;
pub mod review;
pub mod scan;
pub mod template;

pub use registry::Catalog;
