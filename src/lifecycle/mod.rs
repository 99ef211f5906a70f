//! The producer side and the lifecycle of databases in the source root.
//!
//! | module | owns |
//! |---|---|
//! | [`state`] | `<db>/_state.json`: online flag, pinned version, who changed it; conditional updates |

pub mod state;

pub use state::{DatabaseState, STATE_FILE};
