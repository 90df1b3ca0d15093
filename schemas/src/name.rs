//! Table names of the form `layer.table` and where they live under a lake root.

use std::fmt;
use std::str::FromStr;

/// A lake table name: a layer (`bronze`, `silver`, `gold`, `_system`) and a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TableName {
    /// The medallion layer, e.g. `bronze`.
    pub layer: &'static str,
    /// The table within the layer, e.g. `model_files`.
    pub table: &'static str,
}

/// A string that does not name a known table.
#[derive(Debug, thiserror::Error)]
#[error("unknown table `{0}`; known tables: {known}", known = TableName::ALL.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", "))]
pub struct TableNameError(pub String);

impl TableName {
    /// Every table weightlake knows, in the order `sql` registers them.
    pub const ALL: &'static [TableName] = &[
        crate::bronze::MODEL_FILES,
        crate::bronze::FILES,
        crate::silver::FILES,
        crate::silver::TENSORS,
        crate::silver::TENSOR_BLOBS,
        crate::gold::MODELS,
        crate::system::RUNS,
    ];

    /// The table's path relative to the lake root, e.g. `bronze/model_files`.
    pub fn relative_path(&self) -> String {
        format!("{}/{}", self.layer, self.table)
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.layer, self.table)
    }
}

impl FromStr for TableName {
    type Err = TableNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TableName::ALL
            .iter()
            .find(|t| t.to_string() == s)
            .copied()
            .ok_or_else(|| TableNameError(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_and_rejects_unknown_names() {
        let t: TableName = "bronze.files".parse().expect("known table");
        assert_eq!(t.relative_path(), "bronze/files");
        let err = "bronze.nope"
            .parse::<TableName>()
            .expect_err("unknown table");
        assert!(err.to_string().contains("bronze.model_files"), "{err}");
    }
}
