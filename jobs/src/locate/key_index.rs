//! Which rows of a table hold which keys, learnt once per session.
//!
//! Row groups of blob tables hold many small parts whose keys (content
//! sha256s) are random, so their Parquet statistics admit almost any key: a
//! lookup had to read the key column of every such row group, each time. On
//! an object store that is one round trip per row group per lookup (985
//! requests to rebuild one 45 MB model). A [`KeyIndex`] reads the key columns
//! of a row group the first time a lookup needs it and remembers every row's
//! key, so later lookups go straight to the rows' pages.

use std::collections::{HashMap, HashSet};

use deltalake::arrow::array::RecordBatch;

use super::Key;
use crate::sql::{int_value, string_value};

/// A row of one row group of one data file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct RowAt {
    /// Index of the data file in the locator.
    pub file: usize,
    /// Row group in that file.
    pub row_group: usize,
    /// Row in that row group.
    pub row: usize,
}

/// The rows of the row groups read so far, by their values of one set of key
/// columns.
#[derive(Debug, Default)]
pub(crate) struct KeyIndex {
    indexed: HashSet<(usize, usize)>,
    rows: HashMap<String, Vec<RowAt>>,
}

impl KeyIndex {
    /// Whether row group `row_group` of file `file` is in the index.
    pub fn has(&self, file: usize, row_group: usize) -> bool {
        self.indexed.contains(&(file, row_group))
    }

    /// Add the rows of one row group: `batches` of its key columns `names`,
    /// in row order. A row group added twice (two lookups raced to read it)
    /// is kept once.
    pub fn add(&mut self, file: usize, row_group: usize, names: &[&str], batches: &[RecordBatch]) {
        if !self.indexed.insert((file, row_group)) {
            return;
        }
        let mut row = 0;
        for b in batches {
            let columns: Vec<_> = names.iter().map(|n| b.column_by_name(n)).collect();
            for r in 0..b.num_rows() {
                let values = columns.iter().map(|c| {
                    c.and_then(|c| {
                        string_value(c.as_ref(), r)
                            .map(str::to_string)
                            .or_else(|| int_value(c.as_ref(), r).map(|v| v.to_string()))
                    })
                });
                let key = join(values);
                self.rows.entry(key).or_default().push(RowAt {
                    file,
                    row_group,
                    row,
                });
                row += 1;
            }
        }
    }

    /// The rows whose key columns equal `keys`, in file, row group and row
    /// order (complete only once every row group that may hold them is in).
    pub fn rows(&self, keys: &[(&str, Key<'_>)]) -> Vec<RowAt> {
        let wanted = join(keys.iter().map(|(_, k)| {
            Some(match k {
                Key::Str(s) => (*s).to_string(),
                Key::Int(i) => i.to_string(),
            })
        }));
        let mut rows = self.rows.get(&wanted).cloned().unwrap_or_default();
        rows.sort_unstable();
        rows
    }
}

/// The name of the index of key columns `keys` (one index per set).
pub(crate) fn index_name(keys: &[(&str, Key<'_>)]) -> String {
    keys.iter().map(|(c, _)| *c).collect::<Vec<_>>().join(",")
}

/// One string for a row's key values (`None`: NULL, never equal to a key).
fn join(values: impl Iterator<Item = Option<String>>) -> String {
    let mut out = String::new();
    for (i, v) in values.enumerate() {
        if i > 0 {
            out.push('\u{1f}');
        }
        match v {
            Some(v) => out.push_str(&v),
            None => out.push('\u{0}'),
        }
    }
    out
}
