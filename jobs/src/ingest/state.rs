//! What bronze already holds: complete files (skipped) and committed chunks of
//! interrupted uploads (reused on resume).

use std::collections::HashMap;

use sha2::Digest;

use deltalake::datafusion::logical_expr::Expr;
use deltalake::datafusion::prelude::{col, lit};
use weightlake_connectors::source::RemoteFile;
use weightlake_schemas::bronze;

use crate::sql::{LakeSession, binary_value, int_value, string_value};
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

#[derive(Debug, Clone)]
struct CompleteFile {
    size: i64,
    sha256: String,
    etag: String,
}

/// Bronze state for a set of models.
pub(crate) struct BronzeState {
    complete: HashMap<(String, String, String), Vec<CompleteFile>>,
    chunks: HashMap<String, HashMap<i32, CommittedChunk>>,
}

impl BronzeState {
    /// Paths of the complete files of `model_id@revision`.
    pub fn paths<'a>(
        &'a self,
        model_id: &'a str,
        revision: &'a str,
    ) -> impl Iterator<Item = &'a str> {
        self.complete
            .keys()
            .filter(move |(m, r, _)| m == model_id && r == revision)
            .map(|(_, _, p)| p.as_str())
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
            ])?
            .collect()
            .await?;
        let mut complete: HashMap<_, Vec<CompleteFile>> = HashMap::new();
        for b in &files {
            for r in 0..b.num_rows() {
                let s = |c: usize| {
                    string_value(b.column(c).as_ref(), r)
                        .unwrap_or_default()
                        .to_string()
                };
                complete
                    .entry((s(0), s(1), s(2)))
                    .or_default()
                    .push(CompleteFile {
                        size: int_value(b.column(3).as_ref(), r).unwrap_or(-1),
                        sha256: s(4),
                        etag: s(5),
                    });
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
        Ok(Self { complete, chunks })
    }

    /// Is `file` already complete in bronze for `model_id@revision`?
    ///
    /// With a published sha256 the content must match; otherwise size and a
    /// non-empty ETag must match (or the size alone, when the source has no ETag).
    pub fn is_complete(&self, model_id: &str, revision: &str, file: &RemoteFile) -> bool {
        let key = (
            model_id.to_string(),
            revision.to_string(),
            file.file_path.clone(),
        );
        let Some(done) = self.complete.get(&key) else {
            return false;
        };
        done.iter().any(|c| match (&file.sha256, file.size) {
            (Some(sha), _) => c.sha256.eq_ignore_ascii_case(sha),
            (None, Some(size)) => c.size == size as i64 && c.etag == file.etag,
            (None, None) => false,
        })
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
