//! Test data: source roots of SequenceFiles written with the project's
//! writer, and copies of fixture trees.

use std::path::{Path, PathBuf};

use sequinsfs::format::sequencefile::{Codec, Compression, Reader, Writer, WriterOptions};

/// How test SequenceFiles are written.
#[derive(Clone)]
pub struct SeqfileOptions {
    pub compression: Compression,
    pub codec: Codec,
}

impl SeqfileOptions {
    pub fn none() -> Self {
        SeqfileOptions {
            compression: Compression::None,
            codec: Codec::Default,
        }
    }
    pub fn snappy_block() -> Self {
        SeqfileOptions {
            compression: Compression::Block,
            codec: Codec::Snappy,
        }
    }
}

/// Writes `<root>/<db>/<version>/part-0000N`, one BytesWritable
/// SequenceFile per entry of `files`, replacing what was there.
pub fn write_seqfile_version(
    root: &Path,
    db: &str,
    version: &str,
    files: &[Vec<(Vec<u8>, Vec<u8>)>],
) {
    write_seqfile_version_with(root, db, version, files, &SeqfileOptions::none())
}

pub fn write_seqfile_version_with(
    root: &Path,
    db: &str,
    version: &str,
    files: &[Vec<(Vec<u8>, Vec<u8>)>],
    options: &SeqfileOptions,
) {
    let dir = root.join(db).join(version);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (i, pairs) in files.iter().enumerate() {
        write_seqfile(&dir.join(format!("part-{i:05}")), pairs, options);
    }
}

pub fn write_seqfile(path: &Path, pairs: &[(Vec<u8>, Vec<u8>)], options: &SeqfileOptions) {
    let out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let opts = WriterOptions::bytes_writable().compressed(options.compression, options.codec);
    let mut writer = Writer::new(out, opts).unwrap();
    for (k, v) in pairs {
        writer.append_bytes_writable(k, v).unwrap();
    }
    let mut out = writer.finish().unwrap();
    std::io::Write::flush(&mut out).unwrap();
}

/// Reads a SequenceFile's records unwrapped, as sequins serves them.
pub fn read_seqfile_pairs(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let file = std::io::BufReader::new(std::fs::File::open(path).unwrap());
    let mut reader = Reader::new(file, &path.display().to_string()).unwrap();
    let mut pairs = Vec::new();
    while let Some((k, v)) = reader.next_unwrapped().unwrap() {
        pairs.push((k.to_vec(), v.to_vec()));
    }
    pairs
}

/// Copies a directory tree (fixtures are read-only; copies are writable).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
            let mut perms = std::fs::metadata(&target).unwrap().permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            perms.set_readonly(false);
            std::fs::set_permissions(&target, perms).unwrap();
        }
    }
}

/// The Hadoop-written SequenceFiles of the interop fixtures
/// (`<fixtures>/seqfile/*.seq`), in name order.
pub fn fixture_seqfiles(fixtures: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures.join("seqfile"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seq"))
        .collect();
    files.sort();
    assert!(files.len() >= 30, "{files:?}");
    files
}
