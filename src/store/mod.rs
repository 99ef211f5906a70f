//! The local store. (Being built.)
