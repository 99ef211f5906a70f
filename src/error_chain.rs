//! One line for an error and everything that caused it, for log lines,
//! `.status` and command-line messages.
//!
//! Errors keep their causes as typed [`Error::source`] links until they are
//! shown; this is where they are shown. Some errors of the crates we use
//! already print their cause inside their own message, so a cause whose text
//! is already part of the line is not repeated.

use std::error::Error;
use std::fmt;

/// `err` and its causes, outermost first, joined by `": "`.
pub fn error_chain(err: &(dyn Error + 'static)) -> String {
    ErrorChain(err).to_string()
}

/// Displays an error with its causes (see [`error_chain`]) without building
/// a string first, for `tracing` fields.
pub struct ErrorChain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut line = self.0.to_string();
        let mut cause = self.0.source();
        while let Some(err) = cause {
            let text = err.to_string();
            if !text.is_empty() && !line.contains(&text) {
                if !line.is_empty() {
                    line.push_str(": ");
                }
                line.push_str(&text);
            }
            cause = err.source();
        }
        f.write_str(&line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("loading db version 1")]
    struct Outer(#[source] Middle);

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read part-0: {0}")]
    struct Middle(#[source] std::io::Error);

    #[test]
    fn joins_causes_and_skips_those_already_printed() {
        let err = Outer(Middle(std::io::Error::other("disk on fire")));
        assert_eq!(
            error_chain(&err),
            "loading db version 1: cannot read part-0: disk on fire"
        );
    }
}
