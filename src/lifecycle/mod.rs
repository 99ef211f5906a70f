//! The producer side and the lifecycle of databases in the source root.
//!
//! | module | owns |
//! |---|---|
//! | [`state`] | `<db>/_state.json`: online flag, pinned version, who changed it |
//! | [`update`] | conditional read-modify-write of the state (ETag on object stores, flock + rename locally) |
//! | [`publish`] | `sequinsfs publish`: uploading a version with conditional creates, `_SUCCESS` last, resume |
//! | [`commands`] | `sequinsfs db ...`: list, status, offline/online, pin/unpin, delete |

pub mod commands;
pub mod publish;
pub mod state;
pub mod update;

pub use state::{DatabaseState, STATE_FILE};
