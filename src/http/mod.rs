//! The HTTP sidecar. (Being built.)
