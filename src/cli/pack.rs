//! `sequinsfs pack INPUT... --out DIR --partitions N`: write a version
//! directory of Sparkey tables from SequenceFiles, TSV or JSON lines. The
//! work is in [`crate::pack`]; this file only maps arguments onto it.

use std::path::PathBuf;

use clap::Args;

use crate::pack::{self, DEFAULT_MEMORY_LIMIT, Format, PackOptions};

#[derive(Debug, Args)]
pub struct PackArgs {
    /// Input files or directories (a directory means its files, skipping
    /// names starting with `_` or `.`); `-` reads TSV or JSON lines from
    /// standard input.
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,
    /// The version directory to write (`<root>/<db>/<version>`). Must be
    /// absent or empty unless --force.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Number of partitions: one `part-NNNNN.spl` + `.spi.sz` pair each.
    #[arg(long, value_name = "N")]
    pub partitions: u32,
    /// Force the input format instead of detecting it (SequenceFile magic,
    /// then the extension .tsv/.jsonl, then a leading `{`).
    #[arg(long, value_name = "FORMAT", value_parser = ["seqfile", "tsv", "jsonl"])]
    pub input_format: Option<String>,
    /// JSON lines: keys and values are base64 (standard alphabet), for
    /// binary data.
    #[arg(long)]
    pub base64: bool,
    /// Keep the last record of a duplicated key (inputs in the order given,
    /// records in file order) instead of failing.
    #[arg(long)]
    pub last_wins: bool,
    /// Memory for buffered records before they are sorted and spilled to
    /// disk, e.g. 512MiB, 2G, 100000 (bytes). Default 1 GiB.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub memory_limit: Option<usize>,
    /// Directory for spill files. Default: the output's parent.
    #[arg(long, value_name = "DIR")]
    pub tmp_dir: Option<PathBuf>,
    /// Replace a non-empty --out.
    #[arg(long)]
    pub force: bool,
    /// Threads for sorting and writing partitions. Default: the CPUs.
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// No progress or summary on stderr.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Parses `123`, `64K`, `64KiB`, `512MB`, `2G`, `1GiB` (binary multiples
/// either way: memory is counted in them).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let n: usize = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a size such as 512MiB"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(format!("{s:?}: unknown unit (K, M, G, T)")),
    };
    n.checked_mul(1usize << shift)
        .filter(|&v| v > 0)
        .ok_or_else(|| format!("{s:?}: out of range"))
}

pub fn run(args: PackArgs) -> anyhow::Result<()> {
    let opts = PackOptions {
        inputs: args.inputs,
        out: args.out,
        partitions: args.partitions,
        format: args
            .input_format
            .as_deref()
            .map(str::parse::<Format>)
            .transpose()
            .map_err(anyhow::Error::msg)?,
        base64: args.base64,
        last_wins: args.last_wins,
        memory_limit: args.memory_limit.unwrap_or(DEFAULT_MEMORY_LIMIT),
        tmp_dir: args.tmp_dir,
        force: args.force,
        threads: args.threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        }),
        progress: !args.quiet,
    };
    pack::pack(&opts)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("100"), Ok(100));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("512 mb"), Ok(512 << 20));
        assert!(parse_size("0").is_err());
        assert!(parse_size("1X").is_err());
        assert!(parse_size("").is_err());
    }
}
