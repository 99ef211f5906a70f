//! Helpers shared by the crate's unit tests.

/// Number of cases for a proptest: `PROPTEST_CASES` if set, else `default`
/// (small, so CI stays fast).
pub fn proptest_cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
