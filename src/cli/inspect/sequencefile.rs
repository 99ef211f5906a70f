//! `inspect` for SequenceFiles: header fields, record count and, with
//! `--records N`, the first records unwrapped as sequins serves them and
//! escaped so that any bytes are safe on a terminal.
//!
//! With `--get KEY` the scan also looks for the key (a SequenceFile has no
//! index): the last record with that key wins, as when the file is loaded.
//!
//! The whole file is read (the record count needs it, and it checks every
//! record), and output is printed only once the file proved readable, so a
//! bad file yields just the one-line error naming the file and offset.

use std::path::Path;

use serde_json::json;

use super::{InspectArgs, escape_bytes};
use crate::format::sequencefile::{Header, Reader};

/// What `inspect` found in one file.
struct Report {
    header: Header,
    records: u64,
    first: Vec<(Vec<u8>, Vec<u8>)>,
    /// The `--get` key and its value, if it was asked for.
    lookup: Option<(Vec<u8>, Option<Vec<u8>>)>,
}

pub fn inspect(path: &Path, args: &InspectArgs) -> anyhow::Result<()> {
    let wanted = args.get.as_deref().map(super::get_key);
    let report = read(path, args.records.unwrap_or(0), wanted)?;
    if args.json {
        println!("{}", to_json(path, &report));
    } else {
        print!("{}", to_text(path, &report));
    }
    Ok(())
}

fn read(path: &Path, show: u64, wanted: Option<Vec<u8>>) -> anyhow::Result<Report> {
    let mut reader = Reader::open(path)?;
    let mut records = 0u64;
    let mut first = Vec::new();
    let mut found = None;
    loop {
        // Records are unwrapped (as sequins serves them) only where they
        // are shown or compared.
        let record = if records < show || wanted.is_some() {
            reader.next_unwrapped()?
        } else {
            reader.next_raw()?
        };
        let Some((key, value)) = record else { break };
        if records < show {
            first.push((key.to_vec(), value.to_vec()));
        }
        if wanted.as_deref() == Some(key) {
            found = Some(value.to_vec());
        }
        records += 1;
    }
    Ok(Report {
        header: reader.header().clone(),
        records,
        first,
        lookup: wanted.map(|key| (key, found)),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn to_text(path: &Path, report: &Report) -> String {
    use std::fmt::Write;
    let h = &report.header;
    let mut out = String::new();
    let _ = writeln!(out, "{}", path.display());
    let _ = writeln!(out, "  format:      SequenceFile version {}", h.version);
    let _ = writeln!(out, "  key class:   {}", h.key_class);
    let _ = writeln!(out, "  value class: {}", h.value_class);
    let _ = writeln!(out, "  compression: {}", h.compression);
    let _ = writeln!(
        out,
        "  codec:       {}",
        h.codec.as_deref().unwrap_or("none")
    );
    let _ = writeln!(out, "  metadata:    {} pairs", h.metadata.len());
    for (k, v) in &h.metadata {
        let _ = writeln!(out, "    {} = {}", escape_bytes(k), escape_bytes(v));
    }
    let _ = writeln!(out, "  sync marker: {}", hex(&h.sync));
    let _ = writeln!(out, "  records:     {}", report.records);
    for (i, (k, v)) in report.first.iter().enumerate() {
        let _ = writeln!(out, "  [{i}] {} => {}", escape_bytes(k), escape_bytes(v));
    }
    match &report.lookup {
        Some((key, Some(value))) => {
            let _ = writeln!(out, "get {}: {}", escape_bytes(key), escape_bytes(value));
        }
        Some((key, None)) => {
            let _ = writeln!(out, "get {}: not found", escape_bytes(key));
        }
        None => {}
    }
    out
}

fn to_json(path: &Path, report: &Report) -> serde_json::Value {
    let h = &report.header;
    let pairs = |items: &[(Vec<u8>, Vec<u8>)]| -> Vec<serde_json::Value> {
        items
            .iter()
            .map(|(k, v)| json!({"key": escape_bytes(k), "value": escape_bytes(v)}))
            .collect()
    };
    let mut doc = json!({
        "file": path.display().to_string(),
        "format": "sequencefile",
        "version": h.version,
        "key_class": h.key_class,
        "value_class": h.value_class,
        "compression": h.compression.to_string(),
        "codec": h.codec,
        "metadata": pairs(&h.metadata),
        "sync": hex(&h.sync),
        "records": report.records,
        "first_records": pairs(&report.first),
    });
    if let Some((key, value)) = &report.lookup {
        doc["get"] = json!({
            "key": escape_bytes(key),
            "found": value.is_some(),
            "value": value.as_deref().map(escape_bytes),
        });
    }
    doc
}
