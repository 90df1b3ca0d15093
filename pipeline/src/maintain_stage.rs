//! `maintain` stages: their validation (pure, part of [`crate::validate`]),
//! how the runner builds their job, and their line in `plan`.
//!
//! A maintain stage runs [`MaintainJob`] on the pipeline's lake: bronze
//! retention (when `bronze_retention` is set), then optimize, vacuum and a
//! checkpoint of each table in `tables` (default every table). It is one task
//! (no shards): its steps are Delta operations on whole tables.

use weightlake_jobs::JobError;
use weightlake_jobs::lake::Lake;
use weightlake_jobs::maintain::{
    DEFAULT_TARGET_FILE_SIZE, MAX_TARGET_FILE_SIZE, MIN_TARGET_FILE_SIZE, MaintainJob,
    MaintainReport, human_duration as human,
};
use weightlake_schemas::TableName;

use crate::spec::{JobKind, StageSpec};
use crate::validate::{Errors, locate_path};

/// The fields only a maintain stage may set, and whether `stage` sets each.
fn own_fields(stage: &StageSpec) -> [(&'static str, bool); 9] {
    [
        ("tables", !stage.tables.is_empty()),
        ("optimize", stage.optimize.is_some()),
        ("target_file_size", stage.target_file_size.is_some()),
        ("vacuum", stage.vacuum.is_some()),
        ("vacuum_retention", stage.vacuum_retention.is_some()),
        (
            "allow_short_retention",
            stage.allow_short_retention.is_some(),
        ),
        ("bronze_retention", stage.bronze_retention.is_some()),
        ("drop_replaced", stage.drop_replaced.is_some()),
        ("checkpoint", stage.checkpoint.is_some()),
    ]
}

/// Check the maintain fields of `stage`: only on maintain stages, and valid
/// there; and that a maintain stage sets no field of the ingest and tensorise
/// jobs (those of promote and export are checked with them).
pub(crate) fn check(name: &str, stage: &StageSpec, errs: &mut Errors<'_>) {
    let raw = errs.raw;
    let at = |key: &str| locate_path(raw, &["stages", name, key]);
    let job = stage.job.as_str();
    if stage.job != JobKind::Maintain {
        for (key, set) in own_fields(stage) {
            if set {
                errs.at(
                    at(key),
                    format!("stage `{name}`: `{key}` applies to maintain stages, not {job}"),
                );
            }
        }
        return;
    }
    for (key, set) in [
        ("sources", !stage.sources.is_empty()),
        ("base_model", stage.base_model.is_some()),
        ("model_id", stage.model_id.is_some()),
        ("revision", stage.revision.is_some()),
        ("parallelism", stage.parallelism.is_some()),
        ("chunk_size", stage.chunk_size.is_some()),
        ("memory_budget", stage.memory_budget.is_some()),
        ("retries", stage.retries.is_some()),
        ("stall_timeout_secs", stage.stall_timeout_secs.is_some()),
    ] {
        if set {
            errs.at(
                at(key),
                format!("stage `{name}`: `{key}` does not apply to maintain stages"),
            );
        }
    }
    if stage.shards.is_some_and(|n| n > 1) {
        errs.at(
            at("shards"),
            format!("stage `{name}`: a maintain stage runs as one task; remove `shards`"),
        );
    }
    for t in &stage.tables {
        if let Err(e) = t.parse::<TableName>() {
            errs.at(at("tables"), format!("stage `{name}`: {e}"));
        }
    }
    if stage
        .target_file_size
        .is_some_and(|s| !(MIN_TARGET_FILE_SIZE..=MAX_TARGET_FILE_SIZE).contains(&s))
    {
        errs.at(
            at("target_file_size"),
            format!("stage `{name}`: target_file_size must be between 1MiB and 1GiB"),
        );
    }
    if stage.vacuum == Some(false) {
        for (key, set) in [
            ("vacuum_retention", stage.vacuum_retention.is_some()),
            (
                "allow_short_retention",
                stage.allow_short_retention.is_some(),
            ),
        ] {
            if set {
                errs.at(
                    at(key),
                    format!("stage `{name}`: `{key}` has no effect with `vacuum: false`"),
                );
            }
        }
    }
    if stage.drop_replaced.is_some() && stage.bronze_retention.is_none() {
        errs.at(
            locate_path(raw, &["stages", name, "drop_replaced"]),
            format!("stage `{name}`: `drop_replaced` needs `bronze_retention`"),
        );
    }
    if stage.optimize == Some(false)
        && stage.vacuum == Some(false)
        && stage.checkpoint == Some(false)
        && stage.bronze_retention.is_none()
    {
        errs.at(
            locate_path(raw, &["stages", name]),
            format!(
                "maintain stage `{name}` does nothing: optimize, vacuum and checkpoint are off \
                 and bronze_retention is not set"
            ),
        );
    }
}

/// Run a maintain stage: the [`MaintainJob`] its fields describe.
pub(crate) async fn run(
    stage: &StageSpec,
    lake: Lake,
    run_id: Option<&str>,
) -> Result<MaintainReport, JobError> {
    let mut job = MaintainJob::new(lake)
        .with_optimize(stage.optimize.unwrap_or(true))
        .with_target_file_size(stage.target_file_size.unwrap_or(DEFAULT_TARGET_FILE_SIZE))
        .with_vacuum(stage.vacuum.unwrap_or(true))
        .allow_short_retention(stage.allow_short_retention.unwrap_or(false))
        .with_checkpoint(stage.checkpoint.unwrap_or(true));
    if !stage.tables.is_empty() {
        let tables = stage
            .tables
            .iter()
            .map(|t| t.parse::<TableName>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| JobError::Invalid(e.to_string()))?;
        job = job.with_tables(tables);
    }
    if let Some(r) = stage.vacuum_retention {
        job = job.with_vacuum_retention(r);
    }
    if let Some(r) = stage.bronze_retention {
        job = job
            .with_bronze_retention(r)
            .drop_replaced(stage.drop_replaced.unwrap_or(false));
    }
    if let Some(id) = run_id {
        job = job.with_run_id(id);
    }
    job.await
}

/// What a maintain stage does, for `plan`: e.g.
/// `  tables=all optimize vacuum checkpoint bronze_retention=30d`.
pub(crate) fn detail(st: &StageSpec) -> String {
    let tables = if st.tables.is_empty() {
        "all".to_string()
    } else {
        st.tables.join(",")
    };
    let mut out = format!("  tables={tables}");
    if st.optimize.unwrap_or(true) {
        out.push_str(" optimize");
    }
    if st.vacuum.unwrap_or(true) {
        out.push_str(" vacuum");
        if let Some(r) = st.vacuum_retention {
            out.push_str(&format!("={}", human(r)));
        }
    }
    if st.checkpoint.unwrap_or(true) {
        out.push_str(" checkpoint");
    }
    if let Some(r) = st.bronze_retention {
        out.push_str(&format!(" bronze_retention={}", human(r)));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::load_str;

    const BASE: &str = "name: t\nlake: ./lake\nsources:\n  m: { local: { path: ./m } }\nstages:\n  ingest: { job: ingest, sources: [m], model_id: m }\n";

    fn err(stages: &str) -> String {
        load_str(&format!("{BASE}{stages}"), "t.yaml")
            .expect_err("invalid")
            .to_string()
    }

    #[test]
    fn a_maintain_stage_parses_its_fields_and_plans_them() {
        let p = load_str(
            &format!(
                "{BASE}  maintain:\n    job: maintain\n    depends_on: [ingest]\n    tables: [bronze.model_files, silver.tensor_blobs]\n    target_file_size: 64MiB\n    vacuum_retention: 14d\n    bronze_retention: 30d\n    checkpoint: false\n"
            ),
            "t.yaml",
        )
        .expect("valid");
        let st = &p.spec().stages["maintain"];
        assert_eq!(st.target_file_size, Some(64 << 20));
        assert_eq!(st.vacuum_retention, Some(Duration::from_secs(14 * 86_400)));
        assert_eq!(st.bronze_retention, Some(Duration::from_secs(30 * 86_400)));
        let plan = crate::plan::render(&p);
        assert!(
            plan.contains(
                "job=maintain  depends_on=ingest  run_if=ALL_SUCCESS  shards=1  retries=0  timeout=-  tables=bronze.model_files,silver.tensor_blobs optimize vacuum=14d bronze_retention=30d"
            ),
            "{plan}"
        );
    }

    #[test]
    fn maintain_fields_are_checked_and_belong_to_maintain_stages() {
        let e = err(
            "  tensorise: { job: tensorise, depends_on: [ingest], vacuum_retention: 7d }\n  tidy:\n    job: maintain\n    shards: 2\n    model_id: m\n    tables: [silver.tensor, gold.models]\n    target_file_size: 2GiB\n    vacuum: false\n    allow_short_retention: true\n",
        );
        let line = |needle: &str| {
            e.lines()
                .find(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("no `{needle}` in {e}"))
                .to_string()
        };
        assert!(
            line("`vacuum_retention` applies to maintain stages, not tensorise")
                .starts_with("t.yaml:7:"),
            "{e}"
        );
        assert!(line("runs as one task").starts_with("t.yaml:10:"), "{e}");
        assert!(
            line("`model_id` does not apply to maintain stages").starts_with("t.yaml:11:"),
            "{e}"
        );
        assert!(
            line("unknown table `silver.tensor`").contains("silver.tensors"),
            "names the known tables: {e}"
        );
        assert!(
            line("between 1MiB and 1GiB").starts_with("t.yaml:13:"),
            "{e}"
        );
        assert!(
            line("`allow_short_retention` has no effect with `vacuum: false`")
                .starts_with("t.yaml:15:"),
            "{e}"
        );
        let nothing =
            err("  tidy: { job: maintain, optimize: false, vacuum: false, checkpoint: false }\n");
        assert!(nothing.contains("does nothing"), "{nothing}");
    }
}
