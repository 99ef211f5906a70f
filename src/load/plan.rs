//! Input classification: what the data files of one version are, by
//! sequins' rules (reference section 4.1) with their gaps closed.
//!
//! - `.spi.sz` files are Sparkey indexes, never data;
//! - a `.spl` file whose name has a run of digits is a Sparkey log, and that
//!   first run of digits is its partition;
//! - anything else is a SequenceFile (names are irrelevant), one partition
//!   per file;
//! - Sparkey and SequenceFiles are never mixed in one version, every log
//!   needs its index beside it, and the partitions of Sparkey tables must be
//!   exactly `0..N` (sequins took N to be the number of distinct partitions
//!   and silently misrouted keys when one was missing).

use crate::source::SourceFile;

use super::LoadErrorKind;

/// What a version's files are.
pub(crate) enum Plan {
    /// No data files: served, with no keys.
    Empty,
    SequenceFiles(Vec<SourceFile>),
    /// Tables sorted by partition then log name, and the partition count.
    Sparkey(Vec<SparkeyTable>, u32),
}

/// A Sparkey table of the source: a log and its framed index.
pub(crate) struct SparkeyTable {
    pub partition: u32,
    pub log: SourceFile,
    pub index: SourceFile,
}

/// Classifies a version's files; see the module docs.
pub(crate) fn classify(files: &[SourceFile]) -> Result<Plan, LoadErrorKind> {
    let layout = |message: String| LoadErrorKind::Layout(message);
    let data: Vec<&SourceFile> = files
        .iter()
        .filter(|f| !f.name.ends_with(".spi.sz"))
        .collect();
    if data.is_empty() {
        return Ok(Plan::Empty);
    }
    let is_sparkey =
        |f: &SourceFile| f.name.ends_with(".spl") && first_digit_run(&f.name).is_some();
    let sparkey_count = data.iter().filter(|f| is_sparkey(f)).count();
    if sparkey_count == 0 {
        return Ok(Plan::SequenceFiles(data.into_iter().cloned().collect()));
    }
    if sparkey_count != data.len() {
        return Err(layout(
            "mixed Sparkey and SequenceFile files in one version".into(),
        ));
    }
    let mut tables = Vec::new();
    for log in data {
        let partition = first_digit_run(&log.name).unwrap_or(0);
        let stem = log.name.trim_end_matches(".spl");
        let index_name = format!("{stem}.spi.sz");
        let index = files
            .iter()
            .find(|f| f.name == index_name)
            .ok_or_else(|| layout(format!("{}: no index {index_name} beside it", log.name)))?;
        tables.push(SparkeyTable {
            partition,
            log: log.clone(),
            index: index.clone(),
        });
    }
    tables.sort_by(|a, b| (a.partition, &a.log.name).cmp(&(b.partition, &b.log.name)));
    let mut distinct: Vec<u32> = tables.iter().map(|t| t.partition).collect();
    distinct.dedup();
    let n = distinct.len() as u32;
    if distinct.iter().enumerate().any(|(i, &p)| p != i as u32) {
        return Err(layout(format!(
            "Sparkey partitions {distinct:?} are not 0..{n}: every partition from 0 to N-1 needs a file"
        )));
    }
    Ok(Plan::Sparkey(tables, n))
}

/// The first run of ASCII digits in a name, as a partition number.
fn first_digit_run(name: &str) -> Option<u32> {
    let start = name.find(|c: char| c.is_ascii_digit())?;
    let digits: String = name[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str) -> SourceFile {
        SourceFile::for_tests("db", "1", name, 10)
    }

    fn message(result: Result<Plan, LoadErrorKind>) -> String {
        match result {
            Err(e) => e.to_string(),
            Ok(_) => panic!("expected an error"),
        }
    }

    #[test]
    fn classification_follows_sequins_with_its_gaps_closed() {
        assert!(matches!(classify(&[]), Ok(Plan::Empty)));
        assert!(matches!(
            classify(&[file("part-00000"), file("part-00001")]),
            Ok(Plan::SequenceFiles(f)) if f.len() == 2
        ));
        // A .spl without digits is a SequenceFile (sequins' rule).
        assert!(matches!(
            classify(&[file("data.spl")]),
            Ok(Plan::SequenceFiles(_))
        ));
        let sparkey = classify(&[
            file("part0-file0.spl"),
            file("part0-file0.spi.sz"),
            file("part0-file1.spl"),
            file("part0-file1.spi.sz"),
            file("part1.spl"),
            file("part1.spi.sz"),
        ]);
        match sparkey {
            Ok(Plan::Sparkey(tables, n)) => {
                assert_eq!(n, 2);
                let parts: Vec<u32> = tables.iter().map(|t| t.partition).collect();
                assert_eq!(parts, vec![0, 0, 1]);
            }
            _ => panic!("expected Sparkey"),
        }
        let mixed = classify(&[file("part0.spl"), file("part0.spi.sz"), file("part-00001")]);
        assert!(message(mixed).contains("mixed"));
        let gap = classify(&[
            file("p0.spl"),
            file("p0.spi.sz"),
            file("p2.spl"),
            file("p2.spi.sz"),
        ]);
        assert!(message(gap).contains("not 0..2"));
        let lonely = classify(&[file("p0.spl")]);
        assert!(message(lonely).contains("no index"));
    }

    #[test]
    fn digit_runs() {
        assert_eq!(first_digit_run("part-00012-00034.spl"), Some(12));
        assert_eq!(first_digit_run("2017-part3.spl"), Some(2017));
        assert_eq!(first_digit_run("none.spl"), None);
    }
}
