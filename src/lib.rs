//! elysiactl: apply a change manifest to a search index, crash-safely.
//!
//! Data flows one way: [`manifest`] (bytes → changes) → [`sync`] (the loop) →
//! [`target`] (the index) and [`wal`] (the log of what is done). [`source`]
//! decides what a manifest line means for the files on disk.

pub mod changes;
pub mod cli;
pub mod exit;
pub mod manifest;
pub mod object;
pub mod publish;
pub mod report;
pub mod source;
pub mod sync;
pub mod target;
pub mod util;
pub mod verify;
pub mod wal;
