//! The request log, in sequins' one-line format so existing log parsers keep
//! working:
//!
//! ```text
//! 2026/11/21 10:44:18 CANONICAL-SEQUINS-REQUEST-LINE "baby-names/1881/boy" 200
//! ```
//!
//! UTC time, the decoded path without its leading `/` quoted as Go's `%q`
//! does (so binary keys stay on one printable line), and the status. As in
//! sequins, only requests naming a key (`/<db>/...`) without `?proxy=` are
//! logged. Off by default.
//!
//! Each line is written with a single `write` call on a file opened in
//! append mode, so lines from concurrent requests never interleave and a
//! line is on disk before its response is sent.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;

/// Where the request log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestLogTarget {
    Stdout,
    File(PathBuf),
}

/// An open request log.
pub(crate) enum RequestLog {
    Stdout,
    File(File),
}

impl RequestLog {
    pub(crate) fn open(target: &RequestLogTarget) -> io::Result<Self> {
        Ok(match target {
            RequestLogTarget::Stdout => RequestLog::Stdout,
            RequestLogTarget::File(path) => RequestLog::File(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| {
                        io::Error::new(e.kind(), format!("request log {}: {e}", path.display()))
                    })?,
            ),
        })
    }

    /// Writes one line. A failing log never fails the request.
    pub(crate) fn write(&self, path: &[u8], status: u16) {
        let line = format_line(chrono::Utc::now(), path, status);
        let result = match self {
            RequestLog::Stdout => io::stdout().lock().write_all(line.as_bytes()),
            RequestLog::File(file) => (&*file).write_all(line.as_bytes()),
        };
        if let Err(err) = result {
            tracing::warn!("request log: {err}");
        }
    }
}

/// One log line, newline included.
pub fn format_line(now: chrono::DateTime<chrono::Utc>, path: &[u8], status: u16) -> String {
    format!(
        "{} CANONICAL-SEQUINS-REQUEST-LINE {} {status}\n",
        now.format("%Y/%m/%d %H:%M:%S"),
        go_quote(path)
    )
}

/// Quotes bytes as Go's `strconv.Quote` does: printable UTF-8 stays,
/// `"` and `\` are escaped, control characters become `\n`, `\t`... or
/// `\xNN`, other unprintable characters `\uNNNN`, invalid UTF-8 bytes `\xNN`.
pub fn go_quote(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\u{07}' => out.push_str("\\a"),
                '\u{08}' => out.push_str("\\b"),
                '\u{0c}' => out.push_str("\\f"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{0b}' => out.push_str("\\v"),
                c if (c as u32) < 0x80 && c.is_control() => {
                    out.push_str(&format!("\\x{:02x}", c as u32));
                }
                c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn quotes_like_go() {
        assert_eq!(go_quote(b"baby-names/1881/boy"), r#""baby-names/1881/boy""#);
        assert_eq!(go_quote(b"db/\0\0\0*"), r#""db/\x00\x00\x00*""#);
        assert_eq!(go_quote(b"a\"b\\c\n\x7f"), r#""a\"b\\c\n\x7f""#);
        assert_eq!(go_quote(b"\xff\xfe"), r#""\xff\xfe""#);
        assert_eq!(go_quote("é\u{85}".as_bytes()), r#""é\u0085""#);
    }

    #[test]
    fn line_format() {
        let t = chrono::Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        assert_eq!(
            format_line(t, b"db/k", 404),
            "2026/01/02 03:04:05 CANONICAL-SEQUINS-REQUEST-LINE \"db/k\" 404\n"
        );
    }
}
