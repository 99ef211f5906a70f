//! sequins' key -> partition function. (Being built.)
