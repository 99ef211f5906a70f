//! `sequinsfs inspect FILE...`: a look inside data files for people
//! debugging their datasets. The file kind is recognised by its content
//! (SequenceFiles start with `SEQ`) or, for Sparkey, by its name (`.spl`,
//! `.spi`, `.spi.sz`); each kind has its own submodule.

mod sequencefile;
mod sparkey;

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Files to inspect: SequenceFiles, or Sparkey logs (.spl) / indexes
    /// (.spi, .spi.sz); for Sparkey either file of a pair names the table.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Also print the first N records (keys and values unwrapped as sequins
    /// serves them). Default: print no records, only the header and counts.
    #[arg(long, value_name = "N")]
    pub records: Option<u64>,
    /// Print JSON (one document per file) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Look this key up and print its value: through the hash index in a
    /// Sparkey table, by reading every record of a SequenceFile (the last
    /// record with the key wins, as when loading). The key is taken as its
    /// UTF-8 bytes, with `%XY` escapes for other bytes, as in mount names.
    #[arg(long, value_name = "KEY")]
    pub get: Option<String>,
}

pub fn run(args: InspectArgs) -> anyhow::Result<()> {
    for file in &args.files {
        match kind_of(file)? {
            FileKind::SequenceFile => sequencefile::inspect(file, &args)?,
            FileKind::Sparkey => sparkey::inspect(file, &args)?,
        }
    }
    Ok(())
}

enum FileKind {
    SequenceFile,
    Sparkey,
}

fn kind_of(path: &Path) -> anyhow::Result<FileKind> {
    let name = path.to_string_lossy();
    if name.ends_with(".spl") || name.ends_with(".spi") || name.ends_with(".spi.sz") {
        return Ok(FileKind::Sparkey);
    }
    // Anything else is read as a SequenceFile, whose reader reports a clear
    // "not a SequenceFile" error naming the file when the magic is wrong.
    std::fs::metadata(path).with_context(|| format!("{}", path.display()))?;
    Ok(FileKind::SequenceFile)
}

/// The key bytes of a `--get` argument: UTF-8, with `%XY` for any byte
/// (the same decoding as names in the mount).
fn get_key(text: &str) -> Vec<u8> {
    crate::naming::decode(text.as_bytes())
}

/// Shows bytes safely on a terminal: printable ASCII and valid non-control
/// UTF-8 as is, everything else (and `\`) as `\xNN` escapes.
pub fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                out.push_str("\\\\");
            } else if c.is_control() {
                for b in c.to_string().bytes() {
                    out.push_str(&format!("\\x{b:02x}"));
                }
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{escape_bytes, get_key};

    #[test]
    fn get_keys_are_percent_decoded() {
        assert_eq!(get_key("1881/boy"), b"1881/boy");
        assert_eq!(get_key("%00%ff%2F"), [0, 0xff, b'/']);
        assert_eq!(get_key("100%"), b"100%");
        assert_eq!(get_key("%zz%4"), b"%zz%4");
    }

    #[test]
    fn escapes_control_invalid_and_backslash() {
        assert_eq!(escape_bytes(b"1881/boy"), "1881/boy");
        assert_eq!(escape_bytes("caf\u{e9}".as_bytes()), "caf\u{e9}");
        assert_eq!(escape_bytes(b"a\nb\\\x00\xff"), "a\\x0ab\\\\\\x00\\xff");
    }
}
