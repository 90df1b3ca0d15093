//! What a tensorise would do now, without doing it: complete bronze files
//! compared with `silver.files` (for `weightlake plan` and cost estimates).

use weightlake_schemas::bronze;

use super::TensoriseJob;
use super::work::{SilverNewest, bronze_files};
use crate::Result;
use crate::sql::LakeSession;

/// What a tensorise would do now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TensorisePlan {
    /// Complete bronze files (newest upload per path) of the selected models.
    pub files_total: usize,
    /// Of those, files already in silver.
    pub files_present: usize,
    /// Files still to tensorise in this shard.
    pub files_to_tensorise: usize,
    /// Their bytes.
    pub bytes_to_tensorise: u64,
    /// Removals from a revision that bronze records and silver does not yet.
    pub files_to_remove: usize,
}

impl TensoriseJob {
    /// Compare bronze with silver: what `.await` would tensorise now. Reads
    /// only; creates no table.
    pub async fn plan(self) -> Result<TensorisePlan> {
        let mut plan = TensorisePlan::default();
        if self.lake.open(bronze::FILES).await?.is_none() {
            return Ok(plan);
        }
        let session = LakeSession::new(&self.lake).await?;
        let candidates = bronze_files(&session, self.model_id.as_deref()).await?;
        let done = SilverNewest::load(&session).await?;
        plan.files_total = candidates.iter().filter(|f| !f.removed).count();
        for f in candidates {
            if done.has(&f) {
                plan.files_present += usize::from(!f.removed);
            } else if self.shard.owns(&[&f.model_id, &f.revision, &f.file_path]) {
                if f.removed {
                    plan.files_to_remove += 1;
                } else {
                    plan.files_to_tensorise += 1;
                    // A change back to a version silver has reads nothing.
                    if !done.had(&f) {
                        plan.bytes_to_tensorise += f.file_size;
                    }
                }
            }
        }
        Ok(plan)
    }
}
