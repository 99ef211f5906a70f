//! `sequinsfs demo-data DIR`: writes a small source root to try sequinsfs
//! without any data of one's own (the quick start uses it). Everything is
//! generated locally: no network.
//!
//! ```text
//! DIR/baby-names/1/part-0000{0..2}   popular US baby names by year ("1881/boy" -> "John")
//! DIR/colors/1/part-00000            color names -> hex codes, keys without "/"
//! ```

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

use crate::format::sequencefile::{Codec, Compression, Writer, WriterOptions};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Directory to create the source root in (created if missing).
    pub dir: PathBuf,
}

/// (year, boy, girl): the most popular names of some years.
const NAMES: &[(u32, &str, &str)] = &[
    (1881, "John", "Mary"),
    (1900, "John", "Mary"),
    (1925, "Robert", "Mary"),
    (1950, "James", "Linda"),
    (1975, "Michael", "Jennifer"),
    (2000, "Jacob", "Emily"),
    (2010, "Jacob", "Isabella"),
    (2020, "Liam", "Olivia"),
];

const COLORS: &[(&str, &str)] = &[
    ("black", "#000000"),
    ("blue", "#0000ff"),
    ("green", "#008000"),
    ("orange", "#ffa500"),
    ("red", "#ff0000"),
    ("white", "#ffffff"),
];

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for (year, boy, girl) in NAMES {
        pairs.push((format!("{year}/boy"), (*boy).to_string()));
        pairs.push((format!("{year}/girl"), (*girl).to_string()));
    }
    // Three files, records spread round-robin: any distribution works.
    let dir = args.dir.join("baby-names/1");
    for part in 0..3 {
        let records: Vec<_> = pairs.iter().skip(part).step_by(3).cloned().collect();
        write(&dir.join(format!("part-{part:05}")), &records)?;
    }
    let colors: Vec<_> = COLORS
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect();
    write(&args.dir.join("colors/1/part-00000"), &colors)?;
    println!("demo source root written to {}", args.dir.display());
    Ok(())
}

fn write(path: &Path, records: &[(String, String)]) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| parent.display().to_string())?;
    }
    let file = std::fs::File::create(path).with_context(|| path.display().to_string())?;
    let options = WriterOptions::bytes_writable().compressed(Compression::Block, Codec::Snappy);
    let mut writer = Writer::new(std::io::BufWriter::new(file), options)?;
    for (k, v) in records {
        writer.append_bytes_writable(k.as_bytes(), v.as_bytes())?;
    }
    let mut out = writer.finish()?;
    std::io::Write::flush(&mut out)?;
    Ok(())
}
