//! Administrative commands that work on the store rather than on live traffic.

pub mod keys;
