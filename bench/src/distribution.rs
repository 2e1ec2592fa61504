//! Key choice: which record an operation touches. YCSB's three request
//! distributions — uniform, zipfian (a few hot keys, scattered over the key
//! space so they do not cluster in one shard or one range) and latest (the
//! most recently inserted keys are the hottest).

use rand::Rng;
use rand_distr::{Distribution as _, Zipf};
use serde::{Deserialize, Serialize};

/// YCSB's default skew: the hottest key is chosen about 1 time in 15 when
/// there are a million keys.
pub const ZIPFIAN_CONSTANT: f64 = 0.99;

/// The distribution's name, as the command line and the reports spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    Uniform,
    Zipfian,
    Latest,
}

impl std::str::FromStr for Distribution {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "uniform" => Ok(Distribution::Uniform),
            "zipfian" => Ok(Distribution::Zipfian),
            "latest" => Ok(Distribution::Latest),
            other => Err(format!("unknown key distribution {other:?}; use uniform, zipfian or latest")),
        }
    }
}

impl std::fmt::Display for Distribution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Distribution::Uniform => "uniform",
            Distribution::Zipfian => "zipfian",
            Distribution::Latest => "latest",
        })
    }
}

/// Draws record numbers in `0..records` (`latest`: in `0..inserted`).
#[derive(Debug, Clone)]
pub struct KeyChooser {
    kind: Distribution,
    records: u64,
    /// Ranks 1..=records, rank 1 the most popular.
    zipf: Option<Zipf<f64>>,
}

impl KeyChooser {
    /// A chooser over `records` records (at least 1).
    pub fn new(kind: Distribution, records: u64) -> KeyChooser {
        let records = records.max(1);
        let zipf = match kind {
            Distribution::Uniform => None,
            // `new` only fails for n < 1 or a negative exponent.
            Distribution::Zipfian | Distribution::Latest => Zipf::new(records as f64, ZIPFIAN_CONSTANT).ok(),
        };
        KeyChooser { kind, records, zipf }
    }

    /// The next record number. `inserted` is how many records exist now
    /// (inserts during the run add to the initial `records`).
    pub fn next<R: Rng + ?Sized>(&self, rng: &mut R, inserted: u64) -> u64 {
        let inserted = inserted.max(1);
        match (self.kind, &self.zipf) {
            (Distribution::Zipfian, Some(zipf)) => scramble(rank(zipf, rng)) % self.records,
            (Distribution::Latest, Some(zipf)) => {
                // Rank 1 is the newest record; older ones fall off by rank.
                let back = (rank(zipf, rng) - 1) % inserted;
                inserted - 1 - back
            }
            _ => rng.random_range(0..inserted),
        }
    }
}

fn rank<R: Rng + ?Sized>(zipf: &Zipf<f64>, rng: &mut R) -> u64 {
    // Samples are whole numbers in 1..=n held in a float.
    (zipf.sample(rng) as u64).max(1)
}

/// Spreads ranks over the key space: without it the hot keys would be
/// records 0, 1, 2, … — neighbours in one range of the key order.
fn scramble(rank: u64) -> u64 {
    twox_hash::XxHash64::oneshot(0, &rank.to_le_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn counts(kind: Distribution, records: u64, draws: usize, inserted: u64) -> Vec<u64> {
        let chooser = KeyChooser::new(kind, records);
        let mut rng = StdRng::seed_from_u64(7);
        let mut counts = vec![0u64; inserted.max(records) as usize];
        for _ in 0..draws {
            counts[chooser.next(&mut rng, inserted) as usize] += 1;
        }
        counts
    }

    #[test]
    fn test_uniform_covers_every_record_evenly() {
        let counts = counts(Distribution::Uniform, 100, 100_000, 100);
        assert!(counts.iter().all(|&c| (700..1300).contains(&c)), "{counts:?}");
    }

    #[test]
    fn test_zipfian_is_skewed_and_stays_in_range() {
        let mut counts = counts(Distribution::Zipfian, 1000, 200_000, 1000);
        counts.sort_unstable_by(|a, b| b.cmp(a));
        let total: u64 = counts.iter().sum();
        assert_eq!(total, 200_000);
        // With s = 0.99 over 1,000 keys the top 1% of keys take about 40% of draws.
        let top: u64 = counts[..10].iter().sum();
        assert!(top as f64 > 0.3 * total as f64, "top 10 keys got {top} of {total}");
        assert!(counts[0] as f64 > 0.08 * total as f64, "hottest key got {}", counts[0]);
    }

    #[test]
    fn test_zipfian_hot_keys_are_scattered() {
        let counts = counts(Distribution::Zipfian, 1000, 100_000, 1000);
        let hottest = (0..counts.len()).max_by_key(|&i| counts[i]).unwrap();
        let first_ten: u64 = counts[..10].iter().sum();
        assert!(first_ten < 100_000 / 10, "records 0..10 must not be the hot set (hottest is {hottest})");
    }

    #[test]
    fn test_latest_prefers_the_newest_records() {
        let counts = counts(Distribution::Latest, 100, 100_000, 150);
        assert!(counts[149] > counts[100] && counts[149] > 10 * counts[0].max(1), "{:?}", &counts[140..]);
        assert!(counts[149] > 10_000, "the newest record is the hottest: {}", counts[149]);
    }

    #[test]
    fn test_distribution_names_round_trip() {
        for kind in [Distribution::Uniform, Distribution::Zipfian, Distribution::Latest] {
            assert_eq!(kind.to_string().parse::<Distribution>().unwrap(), kind);
        }
        assert!("normal".parse::<Distribution>().unwrap_err().contains("uniform, zipfian or latest"));
    }
}
