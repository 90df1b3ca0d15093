//! What bronze already holds: complete files (skipped) and committed chunks of
//! interrupted uploads (reused on resume).

use std::collections::HashMap;

use sha2::Digest;

use deltalake::datafusion::logical_expr::Expr;
use deltalake::datafusion::prelude::{col, lit};
use weightlake_connectors::source::RemoteFile;
use weightlake_schemas::bronze;

use crate::sql::{
    LakeSession, binary_value, int_value, keep_newest, string_value, timestamp_micros,
};
use crate::{JobError, Result};

/// Identity of one upload of one source file (see [`bronze::FILE_IDENTITY`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(crate) struct UploadKey {
    pub model_id: String,
    pub revision: String,
    pub file_path: String,
    pub file_size: i64,
    pub etag: String,
}

impl UploadKey {
    /// The `upload_id` column: hex sha256 of the identity columns, 32 digits.
    pub fn id(&self) -> String {
        let mut h = sha2::Sha256::new();
        for part in [
            &self.model_id,
            &self.revision,
            &self.file_path,
            &self.file_size.to_string(),
            &self.etag,
        ] {
            h.update(part.as_bytes());
            h.update([0u8]);
        }
        hex::encode(h.finalize())[..32].to_string()
    }
}

/// A chunk already committed to `bronze.model_files`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CommittedChunk {
    pub offset: i64,
    pub len: i64,
}

/// The newest `bronze.files` row of a path.
#[derive(Debug, Clone)]
struct NewestRow {
    size: i64,
    sha256: String,
    etag: String,
    source_uri: String,
}

impl NewestRow {
    /// A removal row ([`bronze::REMOVED_SIZE`]), not a file.
    fn is_removal(&self) -> bool {
        self.size == bronze::REMOVED_SIZE
    }
}

/// Bronze state for a set of models.
pub(crate) struct BronzeState {
    /// The newest `bronze.files` row of each (model, revision, path), with
    /// its `ingested_at`.
    newest: HashMap<(String, String, String), (i64, NewestRow)>,
    chunks: HashMap<String, HashMap<i32, CommittedChunk>>,
}

impl BronzeState {
    /// `(path, source_uri)` of the files `model_id@revision` has now: paths
    /// whose newest row is a file, not a removal.
    pub fn files_of<'a>(
        &'a self,
        model_id: &'a str,
        revision: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.newest
            .iter()
            .filter(move |((m, r, _), (_, row))| {
                m == model_id && r == revision && !row.is_removal()
            })
            .map(|((_, _, p), (_, row))| (p.as_str(), row.source_uri.as_str()))
    }

    /// The `source_uri` of the file `model_id@revision` has now at `path`
    /// (none for a path it does not have).
    pub fn source_of(&self, model_id: &str, revision: &str, path: &str) -> Option<&str> {
        let key = (model_id.to_string(), revision.to_string(), path.to_string());
        self.newest
            .get(&key)
            .map(|(_, r)| r)
            .filter(|r| !r.is_removal())
            .map(|r| r.source_uri.as_str())
    }

    /// Load the state of `model_ids` from both bronze tables.
    pub async fn load(session: &LakeSession, model_ids: &[String]) -> Result<Self> {
        let ids: Vec<Expr> = model_ids.iter().map(|m| lit(m.clone())).collect();
        let ctx = session.context();
        let files = ctx
            .table(bronze::FILES.to_string())
            .await?
            .filter(col("model_id").in_list(ids.clone(), false))?
            .select_columns(&[
                "model_id",
                "revision",
                "file_path",
                "file_size",
                "file_sha256",
                "etag",
                "source_uri",
                "ingested_at",
            ])?
            .collect()
            .await?;
        let mut newest = HashMap::new();
        for b in &files {
            for r in 0..b.num_rows() {
                let s = |c: usize| {
                    string_value(b.column(c).as_ref(), r)
                        .unwrap_or_default()
                        .to_string()
                };
                let row = NewestRow {
                    size: int_value(b.column(3).as_ref(), r).unwrap_or(-1),
                    sha256: s(4),
                    etag: s(5),
                    source_uri: s(6),
                };
                let at = timestamp_micros(b.column(7).as_ref(), r).unwrap_or(0);
                keep_newest(&mut newest, (s(0), s(1), s(2)), at, row);
            }
        }
        let chunk_batches = ctx
            .table(bronze::MODEL_FILES.to_string())
            .await?
            .filter(col("model_id").in_list(ids, false))?
            .select_columns(&["upload_id", "chunk_index", "chunk_offset", "chunk_len"])?
            .collect()
            .await?;
        let mut chunks: HashMap<String, HashMap<i32, CommittedChunk>> = HashMap::new();
        for b in &chunk_batches {
            for r in 0..b.num_rows() {
                let id = string_value(b.column(0).as_ref(), r)
                    .unwrap_or_default()
                    .to_string();
                let i = |c: usize| int_value(b.column(c).as_ref(), r).unwrap_or(-1);
                chunks.entry(id).or_default().insert(
                    i(1) as i32,
                    CommittedChunk {
                        offset: i(2),
                        len: i(3),
                    },
                );
            }
        }
        Ok(Self { newest, chunks })
    }

    /// Is `file` what bronze has now for its path in `model_id@revision`?
    ///
    /// Only the path's newest row counts: after a change and a change back
    /// (a reverted commit), the older row of the same content is history, and
    /// the file is recorded again (its chunks are reused while bronze keeps
    /// them). With a published sha256 the content must match; otherwise size
    /// and ETag must match.
    pub fn is_complete(&self, model_id: &str, revision: &str, file: &RemoteFile) -> bool {
        let key = (
            model_id.to_string(),
            revision.to_string(),
            file.file_path.clone(),
        );
        let Some((_, c)) = self.newest.get(&key).filter(|(_, c)| !c.is_removal()) else {
            return false;
        };
        match (&file.sha256, file.size) {
            (Some(sha), _) => c.sha256.eq_ignore_ascii_case(sha),
            (None, Some(size)) => c.size == size as i64 && c.etag == file.etag,
            (None, None) => false,
        }
    }

    /// Chunks already committed for `key`.
    pub fn committed(&self, key: &UploadKey) -> Option<&HashMap<i32, CommittedChunk>> {
        self.chunks.get(&key.id())
    }
}

/// Read back the bytes of a committed chunk (to hash a resumed file).
pub(crate) async fn read_chunk(
    session: &LakeSession,
    key: &UploadKey,
    index: i32,
) -> Result<Vec<u8>> {
    let batches = session
        .context()
        .table(bronze::MODEL_FILES.to_string())
        .await?
        .filter(
            col("model_id")
                .eq(lit(key.model_id.clone()))
                .and(col("upload_id").eq(lit(key.id())))
                .and(col("chunk_index").eq(lit(index))),
        )?
        .select_columns(&[bronze::DATA_COLUMN])?
        .limit(0, Some(1))?
        .collect()
        .await?;
    batches
        .iter()
        .find(|b| b.num_rows() > 0)
        .and_then(|b| binary_value(b.column(0).as_ref(), 0))
        .map(<[u8]>::to_vec)
        .ok_or_else(|| {
            JobError::Invalid(format!(
                "chunk {index} of {} vanished from bronze",
                key.file_path
            ))
        })
}
