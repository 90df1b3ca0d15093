//! Sharded-checkpoint indexes (`model.safetensors.index.json`): a
//! `weight_map` from tensor name to shard file name, plus free-form
//! `metadata`. Shard names are checked to be plain relative paths so a hostile
//! index cannot point a reader outside the model's directory.

use std::collections::{BTreeMap, BTreeSet};

use super::json::{self, RawIndex};
use crate::FormatError;

/// Longest shard file name accepted, in bytes.
pub const MAX_SHARD_NAME_LEN: usize = 1024;

/// A validated shard index.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardIndex {
    /// `metadata` as written (empty if absent).
    pub metadata: BTreeMap<String, serde_json::Value>,
    /// `metadata.total_size`, when present as a non-negative integer.
    pub total_size: Option<u64>,
    /// Tensor name to shard file name.
    pub weight_map: BTreeMap<String, String>,
}

impl ShardIndex {
    /// The distinct shard file names, sorted.
    pub fn shards(&self) -> BTreeSet<&str> {
        self.weight_map.values().map(String::as_str).collect()
    }
}

/// Parses and validates a `model.safetensors.index.json` document.
///
/// Rules: a JSON object with a `weight_map` object of string values; no
/// duplicate keys; `metadata`, if present, an object; every shard name a plain
/// relative path (see [`check_shard_name`]). Other top-level keys are ignored.
pub fn parse_index(json_bytes: &[u8]) -> Result<ShardIndex, FormatError> {
    let raw: RawIndex =
        serde_json::from_slice(json_bytes).map_err(|e| json::json_error("shard index", &e))?;
    if let Some(key) = raw.duplicate {
        return Err(FormatError::DuplicateKey {
            what: "shard index".into(),
            key,
        });
    }
    let metadata = match raw.metadata {
        Some(m) => {
            if let Some(key) = m.duplicate {
                return Err(FormatError::DuplicateKey {
                    what: "shard index metadata".into(),
                    key,
                });
            }
            m.map
        }
        None => BTreeMap::new(),
    };
    let wm = raw.weight_map.ok_or(FormatError::MissingDocField {
        what: "shard index",
        field: "weight_map",
    })?;
    if let Some(key) = wm.duplicate {
        return Err(FormatError::DuplicateKey {
            what: "shard index weight_map".into(),
            key,
        });
    }
    for (tensor, file) in &wm.map {
        check_shard_name(file).map_err(|reason| FormatError::BadShardName {
            tensor: tensor.clone(),
            file: file.clone(),
            reason,
        })?;
    }
    let total_size = metadata
        .get("total_size")
        .and_then(serde_json::Value::as_u64);
    Ok(ShardIndex {
        metadata,
        total_size,
        weight_map: wm.map,
    })
}

/// Checks that `name` is a plain relative path: non-empty, at most
/// [`MAX_SHARD_NAME_LEN`] bytes, `/`-separated components that are neither
/// empty, `.` nor `..`, and no backslash, colon or control character (which
/// rules out absolute paths on every platform). Returns the rule broken.
pub fn check_shard_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("name is empty");
    }
    if name.len() > MAX_SHARD_NAME_LEN {
        return Err("name is longer than 1024 bytes");
    }
    if name.starts_with('/') {
        return Err("absolute path");
    }
    if name.contains('\\') {
        return Err("backslash in name");
    }
    if name.contains(':') {
        return Err("colon in name (drive letter or URL scheme)");
    }
    if name.chars().any(char::is_control) {
        return Err("control character in name");
    }
    for component in name.split('/') {
        match component {
            "" => return Err("empty path component"),
            "." | ".." => return Err("'.' or '..' path component"),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_names() {
        assert!(check_shard_name("model-00001-of-00002.safetensors").is_ok());
        assert!(check_shard_name("sub/model.safetensors").is_ok());
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a//b",
            "./a",
            "C:\\x",
            "c:x",
            "a\\b",
            "a\0b",
            "a/",
        ] {
            assert!(check_shard_name(bad).is_err(), "{bad:?}");
        }
    }
}
