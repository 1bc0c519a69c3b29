//! Command implementations behind the thin binary.

pub mod inspect;
