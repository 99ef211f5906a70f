//! The FUSE mount. (Being built.)
