//! `inspect` for Sparkey tables: the header fields of the log and the
//! index, entry counts, and with `--get KEY` / `--records N` a quick look at
//! the data. Either file of a pair names the table; an index that exists
//! only as `.spi.sz` is decoded in memory.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::{Value, json};

use super::{InspectArgs, escape_bytes};
use crate::format::sparkey::{IndexHeader, LogHeader, Reader, framed};

pub fn inspect(path: &Path, args: &InspectArgs) -> anyhow::Result<()> {
    let (log, index) = table_files(path)?;
    let reader = open(&log, &index)?;
    let lookup = match &args.get {
        Some(key) => {
            let key_bytes = super::get_key(key);
            let value = reader
                .get(&key_bytes)
                .with_context(|| format!("looking up {key:?}"))?;
            Some((key_bytes, value.map(|v| v.into_owned())))
        }
        None => None,
    };
    let mut records = Vec::new();
    for entry in reader.iter_live().take(args.records.unwrap_or(0) as usize) {
        let (key, value) = entry?;
        records.push((key.into_owned(), value.into_owned()));
    }

    if args.json {
        let mut doc = json!({
            "log": { "file": log.display().to_string(), "header": log_json(reader.log_header()) },
            "index": { "file": index.display().to_string(), "header": index_json(reader.index_header()) },
            "num_entries": reader.num_entries(),
        });
        if let Some((key, value)) = &lookup {
            doc["get"] = json!({
                "key": escape_bytes(key),
                "found": value.is_some(),
                "value": value.as_deref().map(escape_bytes),
            });
        }
        if args.records.is_some() {
            doc["records"] = records
                .iter()
                .map(|(k, v)| json!([escape_bytes(k), escape_bytes(v)]))
                .collect();
        }
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }

    let l = reader.log_header();
    println!(
        "{} (sparkey log {}.{})",
        log.display(),
        l.major_version,
        l.minor_version
    );
    println!("  file identifier:       {:#010x}", l.file_identifier);
    println!("  compression:           {}", l.compression.name());
    if l.compression_block_size != 0 {
        println!("  block size:            {}", l.compression_block_size);
        println!("  max entries per block: {}", l.max_entries_per_block);
    }
    println!("  puts:                  {}", l.num_puts);
    println!("  deletes:               {}", l.num_deletes);
    println!("  data end:              {}", l.data_end);
    println!("  max key length:        {}", l.max_key_len);
    println!("  max value length:      {}", l.max_value_len);
    println!("  put size:              {}", l.put_size);
    println!("  delete size:           {}", l.delete_size);
    let i = reader.index_header();
    println!(
        "{} (sparkey index {}.{})",
        index.display(),
        i.major_version,
        i.minor_version
    );
    println!("  live entries:          {}", i.num_entries);
    println!(
        "  hash:                  {}-bit murmur3, seed {:#010x}",
        i.hash_size.bytes() * 8,
        i.hash_seed
    );
    println!("  hash size:             {}", i.hash_size.bytes());
    println!("  address size:          {}", i.address_size);
    println!("  capacity:              {}", i.hash_capacity);
    println!("  max displacement:      {}", i.max_displacement);
    println!("  total displacement:    {}", i.total_displacement);
    println!("  hash collisions:       {}", i.hash_collisions);
    println!("  entry block bits:      {}", i.entry_block_bits);
    println!("  garbage size:          {}", i.garbage_size);
    println!("  indexed data end:      {}", i.data_end);
    if let Some((key, value)) = &lookup {
        match value {
            Some(value) => println!("get {}: {}", escape_bytes(key), escape_bytes(value)),
            None => println!("get {}: not found", escape_bytes(key)),
        }
    }
    if args.records.is_some() {
        println!("records (live, in iteration order):");
        for (key, value) in &records {
            println!("  {}\t{}", escape_bytes(key), escape_bytes(value));
        }
    }
    Ok(())
}

/// The log and index of the table `path` belongs to: `X.spl` with `X.spi`,
/// or `X.spi.sz` when there is no `X.spi` (or it was named).
fn table_files(path: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let name = path.to_string_lossy();
    let stem = ["spi.sz", "spl", "spi"]
        .iter()
        .find_map(|ext| name.strip_suffix(&format!(".{ext}")))
        .with_context(|| format!("{name}: not a sparkey file name (.spl, .spi, .spi.sz)"))?;
    let log = PathBuf::from(format!("{stem}.spl"));
    let plain = PathBuf::from(format!("{stem}.spi"));
    let framed = PathBuf::from(format!("{stem}.spi.sz"));
    let index = if name.ends_with(".spi.sz") || !plain.exists() && framed.exists() {
        framed
    } else {
        plain
    };
    Ok((log, index))
}

fn open(log: &Path, index: &Path) -> anyhow::Result<Reader> {
    if index.to_string_lossy().ends_with(".sz") {
        let file = std::fs::File::open(index).with_context(|| index.display().to_string())?;
        let mut decoded = Vec::new();
        let name = index.display().to_string();
        framed::decode(std::io::BufReader::new(file), &mut decoded, &name)?;
        Ok(Reader::open_with_index_bytes(log, &name, decoded)?)
    } else {
        Ok(Reader::open(log, index)?)
    }
}

fn log_json(h: &LogHeader) -> Value {
    json!({
        "major_version": h.major_version,
        "minor_version": h.minor_version,
        "file_identifier": h.file_identifier,
        "num_puts": h.num_puts,
        "num_deletes": h.num_deletes,
        "data_end": h.data_end,
        "max_key_len": h.max_key_len,
        "max_value_len": h.max_value_len,
        "delete_size": h.delete_size,
        "compression": h.compression.name(),
        "compression_block_size": h.compression_block_size,
        "put_size": h.put_size,
        "max_entries_per_block": h.max_entries_per_block,
    })
}

fn index_json(h: &IndexHeader) -> Value {
    json!({
        "major_version": h.major_version,
        "minor_version": h.minor_version,
        "file_identifier": h.file_identifier,
        "hash_seed": h.hash_seed,
        "data_end": h.data_end,
        "max_key_len": h.max_key_len,
        "max_value_len": h.max_value_len,
        "num_puts": h.num_puts,
        "garbage_size": h.garbage_size,
        "num_entries": h.num_entries,
        "address_size": h.address_size,
        "hash_size": h.hash_size.bytes(),
        "hash_capacity": h.hash_capacity,
        "max_displacement": h.max_displacement,
        "entry_block_bits": h.entry_block_bits,
        "hash_collisions": h.hash_collisions,
        "total_displacement": h.total_displacement,
    })
}
