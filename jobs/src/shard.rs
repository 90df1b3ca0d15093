//! Deterministic sharding of work by file: shard `i/N` takes the files whose
//! stable hash falls in bucket `i`, so N processes (or Databricks `for_each`
//! iterations) share one job without coordination.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

use crate::JobError;

/// Shard `index` of `count` (`--shard 0/4`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// 0-based shard number.
    pub index: u32,
    /// Number of shards, at least 1.
    pub count: u32,
}

impl Shard {
    /// The single shard that takes everything.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Does this shard own the item identified by `key` parts?
    pub fn owns(&self, key: &[&str]) -> bool {
        if self.count <= 1 {
            return true;
        }
        let mut h = Sha256::new();
        for k in key {
            h.update(k.as_bytes());
            h.update([0u8]);
        }
        let d = h.finalize();
        let v = u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
        (v % u64::from(self.count)) as u32 == self.index
    }
}

impl FromStr for Shard {
    type Err = JobError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            JobError::Invalid(format!(
                "invalid shard `{s}`: expected I/N with 0 <= I < N, e.g. 0/4"
            ))
        };
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: u32 = i.trim().parse().map_err(|_| bad())?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_keys_exactly_once() {
        let shards: Vec<Shard> = (0..4)
            .map(|i| format!("{i}/4").parse().expect("shard"))
            .collect();
        for k in 0..200 {
            let key = format!("file-{k}");
            let owners = shards
                .iter()
                .filter(|s| s.owns(&["m", "main", &key]))
                .count();
            assert_eq!(owners, 1, "{key}");
        }
        assert!("4/4".parse::<Shard>().is_err());
        assert!("1/0".parse::<Shard>().is_err());
        assert!("x".parse::<Shard>().is_err());
    }
}
