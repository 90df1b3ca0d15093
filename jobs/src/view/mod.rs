//! A model's files as silver stores them: what each file is made of, in order,
//! so it can be rebuilt whole (export, verify) or in ranges (serve).
//!
//! A tensorised file is its header, then per tensor its padding and content,
//! then its suffix; any other file is one content. [`ModelView::latest`] takes
//! the newest silver rows of a model revision; [`ModelView::pinned`] takes
//! exactly the rows a gold manifest names.

use std::collections::BTreeMap;

use deltalake::datafusion::prelude::{col, lit};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use weightlake_schemas::silver;

use crate::sql::{LakeSession, binary_value, int_value, micros_value, string_value};
use crate::{JobError, Result};

mod file;

pub use file::{FileReader, Segment, ViewFile, content_intact};

/// One tensor of a file, as a manifest records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorEntry {
    /// Name in the file.
    pub name: String,
    /// Data type, e.g. `BF16`.
    pub dtype: String,
    /// Shape.
    pub shape: Vec<i64>,
    /// Offset of the tensor's bytes in the file.
    pub offset: u64,
    /// Length of the tensor's bytes.
    pub len: u64,
    /// sha256 of the tensor's bytes (its key in `silver.tensor_blobs`).
    pub content_sha256: String,
}

/// One file of a model, as a manifest records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path within the model.
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// sha256 of the whole file.
    pub sha256: String,
    /// `safetensors`, `gguf`, `passthrough` or `quarantined`.
    pub format: String,
    /// The silver run whose rows rebuild it (pins header, padding and suffix).
    pub silver_run_id: String,
    /// Tensors in file order (empty for files stored whole).
    pub tensors: Vec<TensorEntry>,
}

/// Tensors in a shard that does not hold them named per index, at most.
const MISPLACED_SHOWN: usize = 5;

/// Largest `*.index.json` [`ModelView::missing_shards`] reads.
const MAX_INDEX_BYTES: u64 = 64 << 20;

/// What rebuilds every file of one model revision, bit for bit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Source model id.
    pub model_id: String,
    /// Source revision.
    pub revision: String,
    /// Files, sorted by path.
    pub files: Vec<FileEntry>,
}

impl Manifest {
    /// Canonical JSON and its sha256 (the identity of these weights).
    pub fn to_json(&self) -> Result<(String, String)> {
        let json =
            serde_json::to_string(self).map_err(|e| JobError::Invalid(format!("manifest: {e}")))?;
        let sha = hex::encode(sha2::Sha256::digest(json.as_bytes()));
        Ok((json, sha))
    }

    /// Parse a manifest stored in `gold.models`.
    pub fn from_json(json: &str) -> Result<Self> {
        serde_json::from_str(json).map_err(|e| JobError::Invalid(format!("bad manifest: {e}")))
    }

    /// Whether `other` holds the same files, byte for byte (paths, sizes and
    /// sha256s), whatever silver runs stored them: the same weights
    /// tensorised twice (two overlapping runs) are one gold version.
    pub fn same_files(&self, other: &Manifest) -> bool {
        self.model_id == other.model_id
            && self.revision == other.revision
            && self.files.len() == other.files.len()
            && self
                .files
                .iter()
                .zip(&other.files)
                .all(|(a, b)| a.path == b.path && a.size == b.size && a.sha256 == b.sha256)
    }

    /// The files `model_id@revision` has now (each path's newest silver
    /// row), without their tensors: enough for [`Self::pinned_rows`]. No
    /// files when the lake has no silver tables or silver has no such
    /// revision.
    pub async fn newest(session: &LakeSession, model_id: &str, revision: &str) -> Result<Self> {
        let files = if session.has_table(silver::FILES) {
            file_rows(session, model_id, revision, None)
                .await?
                .into_iter()
                .map(|r| r.entry)
                .collect()
        } else {
            Vec::new()
        };
        Ok(Self {
            model_id: model_id.to_string(),
            revision: revision.to_string(),
            files,
        })
    }

    /// A filter for the manifest's exact silver rows (of `silver.files` or
    /// `silver.tensors`): its model and revision, and one (file, silver run)
    /// pair per file.
    pub fn pinned_rows(&self) -> deltalake::datafusion::prelude::Expr {
        let pins = self
            .files
            .iter()
            .map(|f| {
                col("file_path")
                    .eq(lit(f.path.clone()))
                    .and(col("run_id").eq(lit(f.silver_run_id.clone())))
            })
            .reduce(|a, b| a.or(b))
            .unwrap_or(lit(false));
        col("model_id")
            .eq(lit(self.model_id.clone()))
            .and(col("revision").eq(lit(self.revision.clone())))
            .and(pins)
    }

    /// Total bytes of all files.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// The files of one model revision in silver.
#[derive(Debug, Clone)]
pub struct ModelView {
    /// Model id.
    pub model_id: String,
    /// Revision.
    pub revision: String,
    /// Files by path.
    pub files: BTreeMap<String, ViewFile>,
    /// When the newest of its `silver.files` rows was written (microseconds
    /// since the epoch).
    pub modified_at: Option<i64>,
}

struct FileRow {
    entry: FileEntry,
    header: Vec<u8>,
    suffix: Vec<u8>,
    tensorised_at: Option<i64>,
}

impl ModelView {
    /// The newest silver rows of `model_id@revision`.
    pub async fn latest(session: &LakeSession, model_id: &str, revision: &str) -> Result<Self> {
        let rows = file_rows(session, model_id, revision, None).await?;
        if rows.is_empty() {
            let others = revisions_of(session, model_id).await.unwrap_or_default();
            return Err(JobError::Invalid(if others.is_empty() {
                format!("no files of {model_id}@{revision} in silver")
            } else {
                format!(
                    "no files of {model_id}@{revision} in silver ({model_id} has: {})",
                    others.join(", ")
                )
            }));
        }
        Self::assemble(session, model_id, revision, rows).await
    }

    /// Exactly the silver rows `manifest` names.
    pub async fn pinned(session: &LakeSession, manifest: &Manifest) -> Result<Self> {
        let pins: BTreeMap<&str, &str> = manifest
            .files
            .iter()
            .map(|f| (f.path.as_str(), f.silver_run_id.as_str()))
            .collect();
        let rows = file_rows(session, &manifest.model_id, &manifest.revision, Some(&pins)).await?;
        for f in &manifest.files {
            if !rows.iter().any(|r| r.entry.path == f.path) {
                return Err(JobError::Invalid(format!(
                    "{}@{}: silver no longer has {} (run {})",
                    manifest.model_id, manifest.revision, f.path, f.silver_run_id
                )));
            }
        }
        let view = Self::assemble(session, &manifest.model_id, &manifest.revision, rows).await?;
        for f in &manifest.files {
            let got = view.files.get(&f.path).map(|v| &v.entry);
            if got != Some(f) {
                return Err(JobError::Invalid(format!(
                    "{}@{}: silver rows of {} differ from the manifest",
                    manifest.model_id, manifest.revision, f.path
                )));
            }
        }
        Ok(view)
    }

    /// The silver rows of `model_id@revision` that the given runs wrote, one
    /// file per entry of `pins` (path -> silver run id); paths not pinned are
    /// left out. Bronze retention checks a bronze upload against the exact
    /// silver rows made from it with this.
    pub async fn runs(
        session: &LakeSession,
        model_id: &str,
        revision: &str,
        pins: &BTreeMap<&str, &str>,
    ) -> Result<Self> {
        let rows = file_rows(session, model_id, revision, Some(pins)).await?;
        Self::assemble(session, model_id, revision, rows).await
    }

    /// What a `*.index.json` of the view names that the view does not hold:
    /// shards (`"model-00003-of-00003.safetensors (in model.safetensors.index.json)"`,
    /// what an ingest that failed for some files, or a sharded ingest whose
    /// shards are not all done, leaves), tensors its weight map puts in a
    /// stored shard that does not hold them (a loader fails on either), and
    /// tensors two of its shards hold with different contents (a loader
    /// takes one of them). An index that is not JSON names nothing that can
    /// be checked: it is listed too.
    pub async fn missing_shards(&self, session: &LakeSession) -> Result<Vec<String>> {
        let mut missing = Vec::new();
        for (path, f) in &self.files {
            if !path.ends_with(".index.json") || f.entry.size > MAX_INDEX_BYTES {
                continue;
            }
            let mut reader = f.reader(session, 0..f.entry.size);
            let mut bytes = Vec::new();
            while let Some(b) = reader.next().await? {
                bytes.extend_from_slice(&b);
            }
            let index = match serde_json::from_slice::<serde_json::Value>(&bytes) {
                Ok(index) => index,
                Err(e) => {
                    missing.push(format!("{path} (not valid JSON: {e})"));
                    continue;
                }
            };
            let Some(map) = index.get("weight_map").and_then(|m| m.as_object()) else {
                continue;
            };
            let dir = path
                .rsplit_once('/')
                .map(|(d, _)| format!("{d}/"))
                .unwrap_or_default();
            // The shards it names; which stored shards were parsed (a tensor
            // list to check against), and which of them hold each tensor.
            let named: std::collections::BTreeSet<&str> =
                map.values().filter_map(|v| v.as_str()).collect();
            let mut parsed = std::collections::BTreeSet::new();
            let mut held: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
            for shard in &named {
                let Some(file) = self.files.get(&format!("{dir}{shard}")) else {
                    continue;
                };
                if !file.entry.tensors.is_empty() {
                    parsed.insert(*shard);
                }
                for t in &file.entry.tensors {
                    held.entry(t.name.as_str())
                        .or_default()
                        .push((shard, t.content_sha256.as_str()));
                }
            }
            // Tensors mapped to a parsed shard that does not hold them, and
            // tensors two shards hold with different contents; at most a few
            // named per index.
            let mut misplaced = Vec::new();
            for (tensor, shard) in map {
                let Some(shard) = shard.as_str() else {
                    continue;
                };
                if parsed.contains(shard)
                    && !held
                        .get(tensor.as_str())
                        .is_some_and(|s| s.iter().any(|(h, _)| *h == shard))
                {
                    misplaced.push(format!(
                        "{tensor} (mapped to {shard} in {path}, which does not hold it)"
                    ));
                }
            }
            // Copies that are the same bytes are harmless: whichever a
            // loader takes, it gets the same tensor.
            for (tensor, copies) in &held {
                if copies.iter().any(|(_, sha)| *sha != copies[0].1) {
                    let shards: Vec<&str> = copies.iter().map(|(s, _)| *s).collect();
                    misplaced.push(format!(
                        "{tensor} (held by {} shards of {path} with different contents: {})",
                        shards.len(),
                        shards.join(", ")
                    ));
                }
            }
            let shown = misplaced.len().min(MISPLACED_SHOWN);
            let more = misplaced.len() - shown;
            missing.extend(misplaced.into_iter().take(shown));
            if more > 0 {
                missing.push(format!(
                    "{more} more tensors mapped to shards that do not hold them, or held twice (in {path})"
                ));
            }
            missing.extend(
                named
                    .iter()
                    .map(|s| format!("{dir}{s}"))
                    .filter(|s| !self.files.contains_key(s))
                    .map(|s| format!("{s} (in {path})")),
            );
        }
        Ok(missing)
    }

    /// The manifest of this view.
    pub fn manifest(&self) -> Manifest {
        Manifest {
            model_id: self.model_id.clone(),
            revision: self.revision.clone(),
            files: self.files.values().map(|f| f.entry.clone()).collect(),
        }
    }

    async fn assemble(
        session: &LakeSession,
        model_id: &str,
        revision: &str,
        rows: Vec<FileRow>,
    ) -> Result<Self> {
        let mut files = BTreeMap::new();
        let modified_at = rows.iter().filter_map(|r| r.tensorised_at).max();
        for mut row in rows {
            let tensorised = row.entry.format == "safetensors" || row.entry.format == "gguf";
            let mut segments = Vec::new();
            if tensorised {
                segments.push(Segment::Inline(std::mem::take(&mut row.header)));
                for (t, pad) in tensor_rows(session, model_id, revision, &row.entry).await? {
                    segments.push(Segment::Inline(pad));
                    segments.push(Segment::Content {
                        sha256: t.content_sha256.clone(),
                        range: 0..t.len,
                    });
                    row.entry.tensors.push(t);
                }
                segments.push(Segment::Inline(std::mem::take(&mut row.suffix)));
            } else {
                segments.push(Segment::Content {
                    sha256: row.entry.sha256.clone(),
                    range: 0..row.entry.size,
                });
            }
            let total: u64 = segments.iter().map(Segment::len).sum();
            if total != row.entry.size {
                return Err(JobError::Invalid(format!(
                    "{model_id}@{revision}: {} rebuilds to {total} bytes, expected {}",
                    row.entry.path, row.entry.size
                )));
            }
            segments.retain(|s| s.len() > 0);
            files.insert(
                row.entry.path.clone(),
                ViewFile {
                    entry: row.entry,
                    segments,
                },
            );
        }
        Ok(Self {
            model_id: model_id.to_string(),
            revision: revision.to_string(),
            modified_at,
            files,
        })
    }
}

/// Silver file rows of a model revision: the newest per path, or the pinned runs.
/// The revisions of `model_id` in `silver.files`, sorted (none when the
/// lake has no silver tables).
pub async fn revisions_of(session: &LakeSession, model_id: &str) -> Result<Vec<String>> {
    if !session.has_table(silver::FILES) {
        return Ok(Vec::new());
    }
    let batches = session
        .context()
        .table(silver::FILES.to_string())
        .await?
        .filter(
            col("model_id")
                .eq(lit(model_id.to_string()))
                .and(col("format").not_eq(lit(silver::REMOVED_FORMAT))),
        )?
        .select_columns(&["revision"])?
        .distinct()?
        .sort(vec![col("revision").sort(true, true)])?
        .collect()
        .await?;
    Ok(batches
        .iter()
        .flat_map(|b| (0..b.num_rows()).filter_map(move |r| string_value(b.column(0).as_ref(), r)))
        .map(str::to_string)
        .collect())
}

async fn file_rows(
    session: &LakeSession,
    model_id: &str,
    revision: &str,
    pins: Option<&BTreeMap<&str, &str>>,
) -> Result<Vec<FileRow>> {
    if !session.has_table(silver::FILES) {
        return Err(JobError::Invalid(
            "the lake has no silver tables: run tensorise first".into(),
        ));
    }
    let batches = session
        .context()
        .table(silver::FILES.to_string())
        .await?
        .filter(
            col("model_id")
                .eq(lit(model_id.to_string()))
                .and(col("revision").eq(lit(revision.to_string()))),
        )?
        .select_columns(&[
            "file_path",
            "file_size",
            "file_sha256",
            "format",
            "run_id",
            "header",
            "suffix",
            "tensorised_at",
        ])?
        .sort(vec![col("tensorised_at").sort(true, true)])?
        .collect()
        .await?;
    let mut latest: BTreeMap<String, FileRow> = BTreeMap::new();
    for b in &batches {
        for r in 0..b.num_rows() {
            let s = |c: usize| {
                string_value(b.column(c).as_ref(), r)
                    .unwrap_or_default()
                    .to_string()
            };
            let bin = |c: usize| {
                binary_value(b.column(c).as_ref(), r)
                    .unwrap_or_default()
                    .to_vec()
            };
            let path = s(0);
            let run_id = s(4);
            if let Some(pins) = pins
                && pins.get(path.as_str()) != Some(&run_id.as_str())
            {
                continue;
            }
            let row = FileRow {
                entry: FileEntry {
                    path: path.clone(),
                    size: int_value(b.column(1).as_ref(), r).unwrap_or(0).max(0) as u64,
                    sha256: s(2),
                    format: s(3),
                    silver_run_id: run_id,
                    tensors: Vec::new(),
                },
                header: bin(5),
                suffix: bin(6),
                tensorised_at: micros_value(b.column(7).as_ref(), r),
            };
            latest.insert(path, row);
        }
    }
    // A path whose newest row records its removal is not part of the
    // revision (pinned runs never name such a row).
    Ok(latest
        .into_values()
        .filter(|r| r.entry.format != silver::REMOVED_FORMAT)
        .collect())
}

/// Tensors of one silver file row, in file order, with their padding.
async fn tensor_rows(
    session: &LakeSession,
    model_id: &str,
    revision: &str,
    f: &FileEntry,
) -> Result<Vec<(TensorEntry, Vec<u8>)>> {
    let batches = session
        .context()
        .table(silver::TENSORS.to_string())
        .await?
        .filter(
            col("model_id")
                .eq(lit(model_id.to_string()))
                .and(col("revision").eq(lit(revision.to_string())))
                .and(col("file_path").eq(lit(f.path.clone())))
                .and(col("run_id").eq(lit(f.silver_run_id.clone()))),
        )?
        .select_columns(&[
            "tensor_index",
            "tensor_name",
            "dtype",
            "shape",
            "file_offset",
            "byte_len",
            "content_sha256",
            "pad_before",
        ])?
        .sort(vec![col("tensor_index").sort(true, true)])?
        .collect()
        .await?;
    let mut out = Vec::new();
    let mut last_index = -1;
    for b in &batches {
        for r in 0..b.num_rows() {
            let index = int_value(b.column(0).as_ref(), r).unwrap_or(-1);
            if index == last_index {
                continue; // the same row written twice by an interrupted run
            }
            last_index = index;
            let s = |c: usize| {
                string_value(b.column(c).as_ref(), r)
                    .unwrap_or_default()
                    .to_string()
            };
            let shape = list_i64(b.column(3).as_ref(), r);
            out.push((
                TensorEntry {
                    name: s(1),
                    dtype: s(2),
                    shape,
                    offset: int_value(b.column(4).as_ref(), r).unwrap_or(0).max(0) as u64,
                    len: int_value(b.column(5).as_ref(), r).unwrap_or(0).max(0) as u64,
                    content_sha256: s(6),
                },
                binary_value(b.column(7).as_ref(), r)
                    .unwrap_or_default()
                    .to_vec(),
            ));
        }
    }
    Ok(out)
}

fn list_i64(col: &dyn deltalake::arrow::array::Array, row: usize) -> Vec<i64> {
    use deltalake::arrow::array::AsArray;
    use deltalake::arrow::datatypes::{DataType, Int64Type};
    let values = match col.data_type() {
        DataType::List(_) => col.as_list::<i32>().value(row),
        DataType::LargeList(_) => col.as_list::<i64>().value(row),
        _ => return Vec::new(),
    };
    values
        .as_primitive_opt::<Int64Type>()
        .map(|a| a.values().to_vec())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(run: &str, sha: &str) -> Manifest {
        Manifest {
            model_id: "m".into(),
            revision: "main".into(),
            files: vec![FileEntry {
                path: "model.safetensors".into(),
                size: 10,
                sha256: sha.into(),
                format: "safetensors".into(),
                silver_run_id: run.into(),
                tensors: Vec::new(),
            }],
        }
    }

    #[test]
    fn the_same_files_from_another_silver_run_are_the_same_weights() {
        let (a, b) = (manifest("run-1", "aa"), manifest("run-2", "aa"));
        assert_ne!(a.to_json().expect("json").1, b.to_json().expect("json").1);
        assert!(a.same_files(&b));
        assert!(!a.same_files(&manifest("run-1", "bb")));
    }
}
