//! Strict serde visitors for safetensors JSON: they keep every key in order to
//! notice duplicates, record unknown fields instead of silently dropping them,
//! and bound the arrays they collect so hostile headers cannot blow up memory.
//!
//! The visitors only *record* rule violations; `super` turns them into
//! structured [`crate::FormatError`]s after parsing.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// At most this many values of a JSON integer array are kept; the rest are
/// counted and skipped.
pub(crate) const MAX_KEPT_INTS: usize = 64;

/// Inserts `k -> v` unless `k` is present, in which case the first such key
/// is recorded in `duplicate` and the first value kept.
fn insert_unique<V>(
    map: &mut BTreeMap<String, V>,
    duplicate: &mut Option<String>,
    k: String,
    v: V,
) {
    match map.entry(k) {
        Entry::Vacant(e) => {
            e.insert(v);
        }
        Entry::Occupied(e) => {
            duplicate.get_or_insert_with(|| e.key().clone());
        }
    }
}

/// A JSON array of `u64`, keeping at most [`MAX_KEPT_INTS`] values.
#[derive(Debug, Default)]
pub(crate) struct BoundedU64s {
    /// The first values.
    pub values: Vec<u64>,
    /// How many values the array held in total.
    pub total: u64,
}

impl<'de> Deserialize<'de> for BoundedU64s {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = BoundedU64s;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of non-negative integers")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = BoundedU64s::default();
                while let Some(v) = seq.next_element::<u64>()? {
                    if out.values.len() < MAX_KEPT_INTS {
                        out.values.push(v);
                    }
                    out.total = out.total.saturating_add(1);
                }
                Ok(out)
            }
        }
        d.deserialize_seq(V)
    }
}

/// A JSON object of string values, remembering the first repeated key.
#[derive(Debug, Default)]
pub(crate) struct StringMap {
    /// The entries (the first occurrence wins on duplicates).
    pub map: BTreeMap<String, String>,
    /// The first key seen twice.
    pub duplicate: Option<String>,
}

impl<'de> Deserialize<'de> for StringMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StringMap;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of string values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = StringMap::default();
                while let Some(k) = map.next_key::<String>()? {
                    let v = map.next_value::<String>()?;
                    insert_unique(&mut out.map, &mut out.duplicate, k, v);
                }
                Ok(out)
            }
        }
        d.deserialize_map(V)
    }
}

/// One tensor entry as written, before validation.
#[derive(Debug, Default)]
pub(crate) struct RawTensor {
    /// `dtype`.
    pub dtype: Option<String>,
    /// `shape`.
    pub shape: Option<BoundedU64s>,
    /// `data_offsets`.
    pub data_offsets: Option<BoundedU64s>,
    /// The first field not in the format.
    pub unknown: Option<String>,
    /// The first field seen twice.
    pub duplicate: Option<String>,
}

impl<'de> Deserialize<'de> for RawTensor {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawTensor;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a tensor object with dtype, shape and data_offsets")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut t = RawTensor::default();
                while let Some(k) = map.next_key::<String>()? {
                    let dup = match k.as_str() {
                        "dtype" => t.dtype.replace(map.next_value()?).is_some(),
                        "shape" => t.shape.replace(map.next_value()?).is_some(),
                        "data_offsets" => t.data_offsets.replace(map.next_value()?).is_some(),
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            t.unknown.get_or_insert(k);
                            continue;
                        }
                    };
                    if dup {
                        t.duplicate.get_or_insert(k);
                    }
                }
                Ok(t)
            }
        }
        d.deserialize_map(V)
    }
}

/// The whole header as written, before validation.
#[derive(Debug, Default)]
pub(crate) struct RawHeader {
    /// `__metadata__`, if present and not null.
    pub metadata: Option<StringMap>,
    /// Tensor entries by name (first occurrence wins on duplicates).
    pub tensors: BTreeMap<String, RawTensor>,
    /// The first top-level key seen twice.
    pub duplicate: Option<String>,
}

/// The reserved top-level key holding free-form string metadata.
pub(crate) const METADATA_KEY: &str = "__metadata__";

impl<'de> Deserialize<'de> for RawHeader {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawHeader;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a safetensors header object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut h = RawHeader::default();
                let mut seen_metadata = false;
                while let Some(k) = map.next_key::<String>()? {
                    if k == METADATA_KEY {
                        let m = map.next_value::<Option<StringMap>>()?;
                        if seen_metadata {
                            h.duplicate.get_or_insert(k);
                        } else {
                            h.metadata = m;
                            seen_metadata = true;
                        }
                    } else {
                        let t = map.next_value::<RawTensor>()?;
                        insert_unique(&mut h.tensors, &mut h.duplicate, k, t);
                    }
                }
                Ok(h)
            }
        }
        d.deserialize_map(V)
    }
}

/// A JSON object whose values are kept as [`serde_json::Value`], remembering
/// the first repeated key.
#[derive(Debug, Default)]
pub(crate) struct ValueMap {
    /// The entries (the first occurrence wins on duplicates).
    pub map: BTreeMap<String, serde_json::Value>,
    /// The first key seen twice.
    pub duplicate: Option<String>,
}

impl<'de> Deserialize<'de> for ValueMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ValueMap;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = ValueMap::default();
                while let Some(k) = map.next_key::<String>()? {
                    let v = map.next_value::<serde_json::Value>()?;
                    insert_unique(&mut out.map, &mut out.duplicate, k, v);
                }
                Ok(out)
            }
        }
        d.deserialize_map(V)
    }
}

/// A shard index document as written, before validation.
#[derive(Debug, Default)]
pub(crate) struct RawIndex {
    /// `metadata`, if present and not null.
    pub metadata: Option<ValueMap>,
    /// `weight_map`.
    pub weight_map: Option<StringMap>,
    /// The first top-level key seen twice.
    pub duplicate: Option<String>,
}

impl<'de> Deserialize<'de> for RawIndex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawIndex;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a shard index object with a weight_map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut ix = RawIndex::default();
                let (mut seen_meta, mut seen_map) = (false, false);
                while let Some(k) = map.next_key::<String>()? {
                    let dup = match k.as_str() {
                        "metadata" => {
                            ix.metadata = map.next_value()?;
                            std::mem::replace(&mut seen_meta, true)
                        }
                        "weight_map" => {
                            ix.weight_map = Some(map.next_value()?);
                            std::mem::replace(&mut seen_map, true)
                        }
                        _ => {
                            // Tolerated: writers add free-form top-level keys.
                            map.next_value::<IgnoredAny>()?;
                            false
                        }
                    };
                    if dup {
                        ix.duplicate.get_or_insert(k);
                    }
                }
                Ok(ix)
            }
        }
        d.deserialize_map(V)
    }
}

/// Maps a serde_json error on document `what` to [`crate::FormatError::InvalidJson`].
pub(crate) fn json_error(what: &'static str, e: &serde_json::Error) -> crate::FormatError {
    crate::FormatError::InvalidJson {
        what,
        reason: e.to_string(),
    }
}
