//! The inputs of `pack`: which files an argument names, what format each is
//! in, and one reader per format handing out `(key, value)` records.
//!
//! SequenceFiles go through the project's own reader with Writables
//! unwrapped exactly as the loader serves them; TSV and JSON lines are read
//! a line at a time with the line length capped, so that a file without
//! newlines cannot make us allocate without bound. Every error names the
//! file and the line (text) or byte offset (SequenceFile).

use std::borrow::Cow;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use base64::Engine as _;

use crate::format::sequencefile::{Reader, ReaderOptions};

/// Largest line of a TSV or JSON-lines input: 1 GiB, the same cap the
/// SequenceFile reader puts on one record. It only has to stop a file
/// without newlines from being read into memory whole.
pub const MAX_LINE_BYTES: u64 = 1 << 30;

/// Read buffer of text inputs: large reads amortise system calls.
const TEXT_BUFFER: usize = 1 << 20;

/// An input format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    SeqFile,
    Tsv,
    Jsonl,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "seqfile" | "sequencefile" => Ok(Format::SeqFile),
            "tsv" => Ok(Format::Tsv),
            "jsonl" | "json" => Ok(Format::Jsonl),
            _ => Err(format!("unknown input format {s:?} (seqfile, tsv, jsonl)")),
        }
    }
}

/// One input: a file, or `-` for standard input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    Stdin,
}

impl Source {
    pub fn name(&self) -> String {
        match self {
            Source::File(p) => p.display().to_string(),
            Source::Stdin => "<stdin>".into(),
        }
    }
}

/// Expands the command line's inputs: a directory stands for the files in
/// it (sorted by name, skipping names starting with `_` or `.` as Hadoop
/// writes `_SUCCESS` and `.crc` files); `-` is standard input.
pub fn expand(inputs: &[PathBuf]) -> anyhow::Result<Vec<Source>> {
    let mut out = Vec::new();
    for input in inputs {
        if input.as_os_str() == "-" {
            out.push(Source::Stdin);
            continue;
        }
        let meta = std::fs::metadata(input).with_context(|| format!("{}", input.display()))?;
        if !meta.is_dir() {
            out.push(Source::File(input.clone()));
            continue;
        }
        let mut files = Vec::new();
        for entry in std::fs::read_dir(input).with_context(|| format!("{}", input.display()))? {
            let entry = entry.with_context(|| format!("{}", input.display()))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('_') || name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            if std::fs::metadata(&path)
                .with_context(|| format!("{}", path.display()))?
                .is_dir()
            {
                // Not recursed into: silently skipping data would be worse
                // than asking for it to be named.
                bail!(
                    "{}: a directory inside an input directory; name it as an input of its own",
                    path.display()
                );
            }
            files.push(path);
        }
        files.sort();
        out.extend(files.into_iter().map(Source::File));
    }
    Ok(out)
}

/// Guesses the format of an input from its first bytes and its name: the
/// SequenceFile magic `SEQ` + version wins; then the extension; then a
/// first non-blank byte `{` means JSON lines, anything else TSV.
fn detect(head: &[u8], path: Option<&Path>) -> Format {
    if head.len() >= 4 && &head[..3] == b"SEQ" && head[3] <= 6 {
        return Format::SeqFile;
    }
    let ext = path
        .and_then(|p| p.extension())
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    match ext.as_deref() {
        Some("jsonl" | "json" | "ndjson") => return Format::Jsonl,
        Some("tsv" | "txt") => return Format::Tsv,
        _ => {}
    }
    match head.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Format::Jsonl,
        _ => Format::Tsv,
    }
}

/// A reader of records out of one input.
pub enum RecordReader {
    Seq(Box<Reader<Box<dyn BufRead>>>),
    Tsv(Lines),
    Jsonl {
        lines: Lines,
        base64: bool,
        key: Vec<u8>,
        value: Vec<u8>,
    },
}

/// Lines of a text input, with their number and the bytes read.
pub struct Lines {
    reader: Box<dyn BufRead>,
    name: String,
    line: Vec<u8>,
    line_no: u64,
    bytes: u64,
}

impl Lines {
    /// The next line's range in `self.line`, without its `\n` (and `\r`
    /// before it); `None` at the end.
    fn next_line(&mut self) -> anyhow::Result<Option<std::ops::Range<usize>>> {
        self.line.clear();
        let n = (&mut self.reader)
            .take(MAX_LINE_BYTES + 1)
            .read_until(b'\n', &mut self.line)
            .with_context(|| format!("{}: line {}", self.name, self.line_no + 1))?;
        if n == 0 {
            return Ok(None);
        }
        self.line_no += 1;
        self.bytes += n as u64;
        if n as u64 > MAX_LINE_BYTES {
            bail!(
                "{}: line {}: longer than {MAX_LINE_BYTES} bytes",
                self.name,
                self.line_no
            );
        }
        let mut end = n;
        if self.line[end - 1] == b'\n' {
            end -= 1;
            if end > 0 && self.line[end - 1] == b'\r' {
                end -= 1;
            }
        }
        Ok(Some(0..end))
    }
}

#[derive(serde::Deserialize)]
struct JsonRecord<'a> {
    #[serde(borrow)]
    key: Cow<'a, str>,
    #[serde(borrow)]
    value: Cow<'a, str>,
}

impl RecordReader {
    /// Opens `source` in `format`, or the detected format if `None`.
    /// `base64`: JSON-lines keys and values are base64 (standard alphabet,
    /// padded).
    pub fn open(source: &Source, format: Option<Format>, base64: bool) -> anyhow::Result<Self> {
        let name = source.name();
        let (mut reader, len, path): (Box<dyn BufRead>, Option<u64>, Option<&Path>) = match source {
            Source::Stdin => (
                Box::new(BufReader::with_capacity(TEXT_BUFFER, io::stdin())),
                None,
                None,
            ),
            Source::File(path) => {
                let file = File::open(path).with_context(|| name.clone())?;
                let len = file.metadata().with_context(|| name.clone())?.len();
                (
                    Box::new(BufReader::with_capacity(TEXT_BUFFER, file)),
                    Some(len),
                    Some(path.as_path()),
                )
            }
        };
        let format = match format {
            Some(f) => f,
            None => {
                let head = reader.fill_buf().with_context(|| name.clone())?;
                detect(head, path)
            }
        };
        let lines = |reader| Lines {
            reader,
            name: name.clone(),
            line: Vec::new(),
            line_no: 0,
            bytes: 0,
        };
        Ok(match format {
            Format::SeqFile => {
                let options = ReaderOptions {
                    input_len: len,
                    ..ReaderOptions::default()
                };
                RecordReader::Seq(Box::new(Reader::with_options(reader, &name, options)?))
            }
            Format::Tsv => RecordReader::Tsv(lines(reader)),
            Format::Jsonl => RecordReader::Jsonl {
                lines: lines(reader),
                base64,
                key: Vec::new(),
                value: Vec::new(),
            },
        })
    }

    /// Bytes of the input consumed so far.
    pub fn bytes_read(&self) -> u64 {
        match self {
            RecordReader::Seq(r) => r.position(),
            RecordReader::Tsv(l) | RecordReader::Jsonl { lines: l, .. } => l.bytes,
        }
    }

    /// The next record, borrowed until the following call; `None` at the end.
    pub fn next_record(&mut self) -> anyhow::Result<Option<(&[u8], &[u8])>> {
        match self {
            // The same call the loader makes, so values are what it serves.
            RecordReader::Seq(r) => Ok(r.next_unwrapped()?),
            RecordReader::Tsv(lines) => {
                let Some(range) = lines.next_line()? else {
                    return Ok(None);
                };
                let line = &lines.line[range];
                match line.iter().position(|&b| b == b'\t') {
                    Some(tab) => Ok(Some((&line[..tab], &line[tab + 1..]))),
                    None => bail!(
                        "{}: line {}: no tab between key and value",
                        lines.name,
                        lines.line_no
                    ),
                }
            }
            RecordReader::Jsonl {
                lines,
                base64,
                key,
                value,
            } => loop {
                let Some(range) = lines.next_line()? else {
                    return Ok(None);
                };
                let line = &lines.line[range];
                let (name, line_no) = (&lines.name, lines.line_no);
                // Blank lines (a trailing one is common) carry no record.
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let record: JsonRecord = serde_json::from_slice(line)
                    .map_err(|e| anyhow::anyhow!("{name}: line {line_no}: bad JSON record: {e}"))?;
                key.clear();
                value.clear();
                if *base64 {
                    let engine = base64::engine::general_purpose::STANDARD;
                    engine.decode_vec(record.key.as_bytes(), key).map_err(|e| {
                        anyhow::anyhow!("{name}: line {line_no}: key is not base64: {e}")
                    })?;
                    engine
                        .decode_vec(record.value.as_bytes(), value)
                        .map_err(|e| {
                            anyhow::anyhow!("{name}: line {line_no}: value is not base64: {e}")
                        })?;
                } else {
                    key.extend_from_slice(record.key.as_bytes());
                    value.extend_from_slice(record.value.as_bytes());
                }
                return Ok(Some((key, value)));
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_prefers_magic_then_extension_then_content() {
        assert_eq!(
            detect(b"SEQ\x06rest", Some(Path::new("a.tsv"))),
            Format::SeqFile
        );
        assert_eq!(detect(b"k\tv\n", Some(Path::new("a.jsonl"))), Format::Jsonl);
        assert_eq!(detect(b"{\"k", Some(Path::new("a.tsv"))), Format::Tsv);
        assert_eq!(
            detect(b"  {\"key\"", Some(Path::new("part-0"))),
            Format::Jsonl
        );
        assert_eq!(detect(b"k\tv\n", None), Format::Tsv);
    }

    fn text(format: Format, data: &str, base64: bool) -> RecordReader {
        let reader: Box<dyn BufRead> = Box::new(io::Cursor::new(data.as_bytes().to_vec()));
        let lines = Lines {
            reader,
            name: "in".into(),
            line: Vec::new(),
            line_no: 0,
            bytes: 0,
        };
        match format {
            Format::Tsv => RecordReader::Tsv(lines),
            _ => RecordReader::Jsonl {
                lines,
                base64,
                key: Vec::new(),
                value: Vec::new(),
            },
        }
    }

    fn all(mut r: RecordReader) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        while let Some((k, v)) = r.next_record()? {
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    #[test]
    fn tsv_splits_at_the_first_tab_and_tolerates_crlf() {
        let got = all(text(Format::Tsv, "a\tb\tc\r\nk\t\nlast\tv", false)).unwrap();
        assert_eq!(
            got,
            vec![
                (b"a".to_vec(), b"b\tc".to_vec()),
                (b"k".to_vec(), b"".to_vec()),
                (b"last".to_vec(), b"v".to_vec())
            ]
        );
        let err = all(text(Format::Tsv, "a\tb\nno tab\n", false)).unwrap_err();
        assert_eq!(err.to_string(), "in: line 2: no tab between key and value");
    }

    #[test]
    fn jsonl_reads_plain_and_base64_records() {
        let got = all(text(
            Format::Jsonl,
            "{\"key\":\"k\",\"value\":\"\u{e9}\"}\n\n",
            false,
        ))
        .unwrap();
        assert_eq!(got, vec![(b"k".to_vec(), "\u{e9}".as_bytes().to_vec())]);
        let got = all(text(
            Format::Jsonl,
            "{\"key\":\"AP8=\",\"value\":\"\"}",
            true,
        ))
        .unwrap();
        assert_eq!(got, vec![(vec![0, 255], vec![])]);
        let err = all(text(Format::Jsonl, "{\"key\":\"!\",\"value\":\"\"}", true)).unwrap_err();
        assert!(
            err.to_string().starts_with("in: line 1: key is not base64"),
            "{err}"
        );
        let err = all(text(Format::Jsonl, "{\"key\":1}", false)).unwrap_err();
        assert!(
            err.to_string().starts_with("in: line 1: bad JSON record"),
            "{err}"
        );
    }
}
