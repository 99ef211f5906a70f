//! The naming rules of a source root: which directory names are databases
//! and versions, and which objects in a version are data files.
//!
//! These are sequins' rules (its `^[-_a-zA-Z0-9]+$` filter and its hidden
//! file convention), kept in one place so the listing code, the planner and
//! the tests agree on them.

/// Whether `name` may be a database or version name: one or more ASCII
/// letters, digits, `_` or `-`. Anything else (dots, spaces, braces,
/// non-ASCII, percent-encoded bytes) is skipped by the listings, because such
/// names cannot be used safely in URLs, file names and the local store.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Whether an object directly inside a version directory holds data.
/// Names starting with `_` (`_SUCCESS`, `_logs`, `_SYMLINK`) or `.`
/// (`.crc` side files, editor leftovers) are Hadoop's and sequins'
/// bookkeeping, never data.
pub fn is_data_file_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('_') && !name.starts_with('.')
}

/// The marker a job writes into a version directory once the version is
/// complete; with `require_success_file` a version counts only with it.
pub const SUCCESS_FILE: &str = "_SUCCESS";

/// sequins' version redirect: a version holding this file (its content is
/// another version name of the same database) is served from that
/// version's files. Producers use it to force a fresh load of existing
/// data under a new, greater version name.
pub const SYMLINK_FILE: &str = "_SYMLINK";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names() {
        for name in ["1", "20240101", "baby-names", "a_b", "A-Z_09", "-", "_"] {
            assert!(is_valid_name(name), "{name:?} should be valid");
        }
    }

    #[test]
    fn invalid_names() {
        for name in [
            "",
            "{ invalid_version }",
            "a.b",
            "a b",
            "é",
            "a%20b",
            "a/b",
            "..",
            "tab\t",
        ] {
            assert!(!is_valid_name(name), "{name:?} should be invalid");
        }
    }

    #[test]
    fn data_file_names() {
        assert!(is_data_file_name("part-00000"));
        assert!(is_data_file_name("x_SUCCESS"));
        assert!(!is_data_file_name("_SUCCESS"));
        assert!(!is_data_file_name("_logs"));
        assert!(!is_data_file_name(".part-00000.crc"));
        assert!(!is_data_file_name(""));
    }
}
