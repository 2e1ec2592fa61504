//! The YCSB core workloads A–F: which operations a client issues, in what
//! mix, on which records. Every driver is handed the same operations.

use std::sync::atomic::{AtomicU64, Ordering};

use rand::Rng;
use serde::Serialize;

use crate::distribution::{Distribution, KeyChooser};

/// One operation on the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    Read(u64),
    /// Several records read in one call (a `BatchGet`, `MGET`, `multi_get`).
    BatchRead(Vec<u64>),
    Update(u64),
    Insert(u64),
    /// Up to `len` records in key order, from the record's key on.
    Scan {
        start: u64,
        len: usize,
    },
    /// Read the record, then write it back changed.
    ReadModifyWrite(u64),
}

impl Operation {
    /// The name reports use for the operation's latency row.
    pub fn kind(&self) -> OpKind {
        match self {
            Operation::Read(_) => OpKind::Read,
            Operation::BatchRead(_) => OpKind::BatchRead,
            Operation::Update(_) => OpKind::Update,
            Operation::Insert(_) => OpKind::Insert,
            Operation::Scan { .. } => OpKind::Scan,
            Operation::ReadModifyWrite(_) => OpKind::ReadModifyWrite,
        }
    }
}

/// Operation kinds, for per-kind latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    Read,
    #[serde(rename = "batch-read")]
    BatchRead,
    Update,
    Insert,
    Scan,
    #[serde(rename = "rmw")]
    ReadModifyWrite,
}

impl OpKind {
    pub fn name(&self) -> &'static str {
        match self {
            OpKind::Read => "read",
            OpKind::BatchRead => "batch-read",
            OpKind::Update => "update",
            OpKind::Insert => "insert",
            OpKind::Scan => "scan",
            OpKind::ReadModifyWrite => "rmw",
        }
    }
}

/// A YCSB core workload: operation proportions (summing to 1) and key choice.
#[derive(Debug, Clone, Serialize)]
pub struct Workload {
    /// `A` … `F`.
    pub name: char,
    pub read: f64,
    pub update: f64,
    pub insert: f64,
    pub scan: f64,
    pub read_modify_write: f64,
    pub distribution: Distribution,
    /// Scans read 1..=max_scan_len records (uniformly).
    pub max_scan_len: usize,
    /// Records per read call; above 1 every read is a batched read.
    pub batch: usize,
}

impl Workload {
    /// YCSB's core workload `letter` (case-insensitive), with its own key distribution.
    pub fn core(letter: char) -> Result<Workload, String> {
        let base = Workload {
            name: letter.to_ascii_uppercase(),
            read: 0.0,
            update: 0.0,
            insert: 0.0,
            scan: 0.0,
            read_modify_write: 0.0,
            distribution: Distribution::Zipfian,
            max_scan_len: 100,
            batch: 1,
        };
        Ok(match letter.to_ascii_uppercase() {
            'A' => Workload { read: 0.5, update: 0.5, ..base },
            'B' => Workload { read: 0.95, update: 0.05, ..base },
            'C' => Workload { read: 1.0, ..base },
            'D' => Workload { read: 0.95, insert: 0.05, distribution: Distribution::Latest, ..base },
            'E' => Workload { scan: 0.95, insert: 0.05, ..base },
            'F' => Workload { read: 0.5, read_modify_write: 0.5, ..base },
            other => return Err(format!("unknown YCSB workload {other:?}; use A, B, C, D, E or F")),
        })
    }

    /// Workload C with every read fetching `batch` records in one call.
    pub fn batched_reads(batch: usize) -> Workload {
        // 'C' always exists.
        let c = Workload::core('C').unwrap_or_else(|_| unreachable!());
        Workload { batch: batch.max(1), ..c }
    }

    /// `A` … `F`, or `C-batch100` for batched reads.
    pub fn label(&self) -> String {
        if self.batch > 1 {
            format!("{}-batch{}", self.name, self.batch)
        } else {
            self.name.to_string()
        }
    }

    /// What the workload does, in one line for reports; starts with [`Workload::label`].
    pub fn describe(&self) -> String {
        if self.batch > 1 {
            return format!("{} (reads of {} records per call, {})", self.label(), self.batch, self.distribution);
        }
        let parts: Vec<String> = [
            (self.read, "read"),
            (self.update, "update"),
            (self.insert, "insert"),
            (self.scan, "scan"),
            (self.read_modify_write, "read-modify-write"),
        ]
        .iter()
        .filter(|(p, _)| *p > 0.0)
        .map(|(p, name)| format!("{:.0}% {name}", p * 100.0))
        .collect();
        format!("{} ({}, {})", self.label(), parts.join(" / "), self.distribution)
    }
}

/// Draws operations of one workload over a shared, growing record count.
#[derive(Debug)]
pub struct OpGenerator {
    workload: Workload,
    chooser: KeyChooser,
    /// Records that exist: the loaded ones plus inserts so far.
    inserted: AtomicU64,
}

impl OpGenerator {
    /// Operations of `workload` over `records` loaded records.
    pub fn new(workload: Workload, records: u64) -> OpGenerator {
        let chooser = KeyChooser::new(workload.distribution, records);
        OpGenerator { workload, chooser, inserted: AtomicU64::new(records.max(1)) }
    }

    pub fn workload(&self) -> &Workload {
        &self.workload
    }

    /// The next operation; inserts take the next free record number.
    pub fn next<R: Rng + ?Sized>(&self, rng: &mut R) -> Operation {
        let w = &self.workload;
        let mut roll: f64 = rng.random();
        let existing = self.inserted.load(Ordering::Relaxed);
        let mut pick = |p: f64| {
            let hit = roll < p;
            roll -= p;
            hit
        };
        let kind = if pick(w.read) {
            OpKind::Read
        } else if pick(w.update) {
            OpKind::Update
        } else if pick(w.insert) {
            OpKind::Insert
        } else if pick(w.scan) {
            OpKind::Scan
        } else {
            OpKind::ReadModifyWrite
        };
        match kind {
            OpKind::Read | OpKind::BatchRead if w.batch > 1 => {
                Operation::BatchRead((0..w.batch).map(|_| self.chooser.next(rng, existing)).collect())
            }
            OpKind::Read | OpKind::BatchRead => Operation::Read(self.chooser.next(rng, existing)),
            OpKind::Update => Operation::Update(self.chooser.next(rng, existing)),
            OpKind::Insert => Operation::Insert(self.inserted.fetch_add(1, Ordering::Relaxed)),
            OpKind::Scan => {
                let len = rng.random_range(1..=w.max_scan_len.max(1));
                Operation::Scan { start: self.chooser.next(rng, existing), len }
            }
            OpKind::ReadModifyWrite => Operation::ReadModifyWrite(self.chooser.next(rng, existing)),
        }
    }
}

/// The key of record `n`: zero-padded so key order is record order (scans).
pub fn key(n: u64) -> String {
    format!("user{n:012}")
}

/// A value of `size` bytes that differs per record and per version, so no
/// layer can deduplicate or compress it away.
pub fn value(record: u64, version: u64, size: usize) -> Vec<u8> {
    let mut state = record.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ version.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    (0..size)
        .map(|_| {
            // xorshift64: cheap bytes with no pattern a compressor could use.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use std::collections::HashMap;

    fn mix(letter: char, draws: usize) -> HashMap<OpKind, usize> {
        let generator = OpGenerator::new(Workload::core(letter).unwrap(), 10_000);
        let mut rng = StdRng::seed_from_u64(1);
        let mut mix = HashMap::new();
        for _ in 0..draws {
            *mix.entry(generator.next(&mut rng).kind()).or_default() += 1;
        }
        mix
    }

    #[test]
    fn test_core_workloads_issue_their_mix() {
        let a = mix('a', 100_000);
        assert!((48_000..52_000).contains(&a[&OpKind::Read]), "{a:?}");
        assert!((48_000..52_000).contains(&a[&OpKind::Update]), "{a:?}");
        let c = mix('C', 10_000);
        assert_eq!(c.get(&OpKind::Read), Some(&10_000));
        let e = mix('E', 100_000);
        assert!((94_000..96_000).contains(&e[&OpKind::Scan]), "{e:?}");
        assert!((4_000..6_000).contains(&e[&OpKind::Insert]), "{e:?}");
        let f = mix('F', 100_000);
        assert!((48_000..52_000).contains(&f[&OpKind::ReadModifyWrite]), "{f:?}");
        assert_eq!(Workload::core('D').unwrap().distribution, Distribution::Latest);
        assert!(Workload::core('G').unwrap_err().contains("A, B, C, D, E or F"));
    }

    #[test]
    fn test_inserts_take_new_record_numbers_and_reads_stay_in_range() {
        let generator = OpGenerator::new(Workload::core('D').unwrap(), 100);
        let mut rng = StdRng::seed_from_u64(3);
        let mut next_insert = 100;
        for _ in 0..10_000 {
            match generator.next(&mut rng) {
                Operation::Insert(n) => {
                    assert_eq!(n, next_insert);
                    next_insert += 1;
                }
                Operation::Read(n) => assert!(n < next_insert, "read {n} before it was inserted"),
                other => panic!("workload D issued {other:?}"),
            }
        }
        assert!(next_insert > 400, "about 5% inserts: {next_insert}");
    }

    #[test]
    fn test_batched_reads_draw_a_batch_of_records_per_call() {
        let workload = Workload::batched_reads(100);
        assert_eq!(workload.label(), "C-batch100");
        assert_eq!(workload.describe(), "C-batch100 (reads of 100 records per call, zipfian)");
        let generator = OpGenerator::new(workload, 1_000);
        let mut rng = StdRng::seed_from_u64(9);
        match generator.next(&mut rng) {
            Operation::BatchRead(records) => {
                assert_eq!(records.len(), 100);
                assert!(records.iter().all(|&n| n < 1_000));
            }
            other => panic!("batched reads issued {other:?}"),
        }
    }

    #[test]
    fn test_scan_lengths_are_bounded() {
        let generator = OpGenerator::new(Workload::core('E').unwrap(), 1_000);
        let mut rng = StdRng::seed_from_u64(5);
        for _ in 0..5_000 {
            if let Operation::Scan { start, len } = generator.next(&mut rng) {
                assert!((1..=100).contains(&len) && start < 1_000);
            }
        }
    }

    #[test]
    fn test_keys_sort_in_record_order_and_values_differ() {
        assert!(key(9) < key(10) && key(10) < key(100_000));
        assert_eq!(value(1, 0, 100).len(), 100);
        assert_ne!(value(1, 0, 64), value(2, 0, 64));
        assert_ne!(value(1, 0, 64), value(1, 1, 64));
        assert_eq!(value(3, 4, 64), value(3, 4, 64));
        assert_eq!(Workload::core('b').unwrap().describe(), "B (95% read / 5% update, zipfian)");
    }
}
