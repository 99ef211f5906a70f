//! Loading Sparkey tables (`X.spl` + `X.spi.sz`): logs are downloaded
//! verbatim and indexes unframed, then every table is checked as sequins
//! never did: every key belongs to the table's partition, and no key is in
//! two tables of one partition (which value would win?).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::format::sparkey;
use crate::partition;
use crate::store::keyindex::SortedRun;
use crate::store::manifest::BlockInfo;

use super::error::key_text;
use super::jobs::{LoadContext, blocking, join_all};
use super::plan::SparkeyTable;
use super::{Built, LoadErrorKind, block_name};

/// Downloads and validates the tables of a version with `n` partitions.
pub(crate) async fn load(
    ctx: &LoadContext,
    tables: Vec<SparkeyTable>,
    n: u32,
) -> Result<Built, LoadErrorKind> {
    let mut tasks = tokio::task::JoinSet::new();
    let mut next_block = vec![0u32; n as usize];
    for table in tables {
        if !ctx.builds(table.partition) {
            // Another node's partition (cluster mode): not downloaded.
            continue;
        }
        let block = next_block[table.partition as usize];
        next_block[table.partition as usize] += 1;
        let name = block_name(table.partition, block);
        let permit = ctx.worker().await?;
        let ctx = ctx.clone();
        tasks.spawn(async move {
            let _permit = permit;
            load_table(&ctx, &name, n, table).await
        });
    }
    let mut loaded: Vec<(BlockInfo, SortedRun)> = join_all(tasks).await?;
    loaded.sort_by(|a, b| a.0.name.cmp(&b.0.name));

    // One run per partition over all its tables: a key in two tables of
    // one partition is ambiguous and refused.
    let mut runs: Vec<SortedRun> = (0..n).map(|_| SortedRun::new()).collect();
    let mut blocks = Vec::with_capacity(loaded.len());
    let mut records = 0;
    let mut origins: Vec<String> = Vec::new();
    for (block, run) in loaded {
        records += block.entries;
        let origin = origins.len() as u32;
        origins.push(block.source_file.clone().unwrap_or_default());
        runs[block.partition as usize].absorb(run, origin);
        blocks.push(block);
    }
    let origins = Arc::new(origins);
    let mut sorts = tokio::task::JoinSet::new();
    for (p, mut run) in runs.into_iter().enumerate() {
        let origins = Arc::clone(&origins);
        sorts.spawn(ctx.cpu_job(move || {
            run.finish().map_err(|d| LoadErrorKind::KeyInTwoFiles {
                key: key_text(&d.key),
                first: origins[d.first_origin as usize].clone(),
                second: origins[d.second_origin as usize].clone(),
            })?;
            Ok((p, run))
        }));
    }
    let mut runs: Vec<(usize, SortedRun)> = join_all(sorts).await?;
    runs.sort_by_key(|(p, _)| *p);
    // A run's origin is its table's position in `blocks`, and its position
    // the entry's index address: that is the value's location as it is.
    let locate = |table: u32, address: u64, _: u32| (table, address);
    let num_keys = super::write_key_index(
        ctx,
        runs.into_iter().map(|(_, r)| r).collect(),
        Some(Arc::new(locate)),
        super::Duplicates::Error,
    )
    .await?;
    Ok(Built {
        num_partitions: n,
        blocks,
        num_keys,
        num_records: records,
    })
}

/// Downloads one table into the staging directory as block `name`, unframes
/// its index, and collects its keys.
async fn load_table(
    ctx: &LoadContext,
    name: &str,
    n: u32,
    table: SparkeyTable,
) -> Result<(BlockInfo, SortedRun), LoadErrorKind> {
    let log_path = ctx.staging.join(format!("{name}.spl"));
    let framed_path = ctx.staging.join(format!("{name}.spi.sz"));
    let index_path = ctx.staging.join(format!("{name}.spi"));
    let progress = Arc::clone(&ctx.progress);
    let count = move |bytes: u64| {
        progress.bytes_done.fetch_add(bytes, Ordering::Relaxed);
    };
    for (file, dest) in [(&table.log, &log_path), (&table.index, &framed_path)] {
        ctx.unless_cancelled(async { Ok(ctx.source.download(file, dest, &count).await?) })
            .await?;
    }
    let partition = table.partition;
    let log_name = table.log.name.clone();
    let index_name = table.index.name.clone();
    let cancel = ctx.cancel.clone();
    let run = blocking(move || {
        let framed = std::fs::File::open(&framed_path).map_err(LoadErrorKind::io(&framed_path))?;
        let out = std::fs::File::create(&index_path).map_err(LoadErrorKind::io(&index_path))?;
        sparkey::framed::decode(std::io::BufReader::new(framed), out, &index_name)?;
        let _ = std::fs::remove_file(&framed_path);
        crate::store::start_writeback(&log_path);
        crate::store::start_writeback(&index_path);
        let reader = sparkey::Reader::open(&log_path, &index_path).map_err(|source| {
            LoadErrorKind::Table {
                file: log_name.clone(),
                source,
            }
        })?;
        // Every entry, in log order, so the run sees deletes and overwrites
        // exactly as the index resolved them (later writes win).
        let mut run = SortedRun::new();
        for (i, entry) in reader.iter_log().enumerate() {
            if i % (1 << 16) == 0 && cancel.is_cancelled() {
                return Err(LoadErrorKind::Cancelled);
            }
            let entry = entry.map_err(|source| LoadErrorKind::Table {
                file: log_name.clone(),
                source,
            })?;
            let key: &[u8] = &entry.key;
            let (normal, alternate) = partition::partitions(key, n);
            if normal != partition && alternate != partition {
                return Err(LoadErrorKind::WrongPartition {
                    file: log_name.clone(),
                    key: key_text(key),
                    normal,
                    partitions: n,
                    partition,
                });
            }
            match entry.kind {
                // The table is set when the runs of a partition are
                // merged (`absorb`); the address is where the value is.
                sparkey::EntryKind::Put => {
                    run.put(key, entry.value.len() as u64, 0, entry.address, 0)
                }
                sparkey::EntryKind::Delete => run.delete(key, 0),
            }
        }
        // Unmap the log before sorting: its pages need not stay mapped.
        drop(reader);
        run.finish()
            .map_err(|d| LoadErrorKind::Internal(format!("duplicate origin for {:?}", d.key)))?;
        Ok(run)
    })
    .await?;
    let entries = run.len() as u64;
    ctx.progress.files_done.fetch_add(2, Ordering::Relaxed);
    ctx.progress
        .records_done
        .fetch_add(entries, Ordering::Relaxed);
    Ok((
        BlockInfo {
            kind: crate::store::manifest::BlockKind::Sparkey,
            partition,
            name: name.to_string(),
            entries,
            source_file: Some(table.log.name.clone()),
        },
        run,
    ))
}
