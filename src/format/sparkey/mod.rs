//! Sparkey logs and hash indexes, and the snappy framing format of `.spi.sz`
//! index files. (Being built.)
