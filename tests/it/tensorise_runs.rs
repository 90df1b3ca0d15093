//! tensorise runs as a scheduler runs them: many files committed as they go,
//! overlapping, stopped or killed runs, and different shard counts.

use std::path::Path;

use crate::support::*;
use crate::tensorise::{csv, ingest_dir};

#[tokio::test(flavor = "multi_thread")]
async fn a_model_of_many_small_files_is_committed_as_it_goes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let model = tmp.path().join("m");
    let files: Vec<(String, Vec<u8>)> = (0..1200)
        .map(|i| {
            (
                format!("d{:02}/f{i:04}.txt", i % 12),
                format!("file {i}\n").into_bytes(),
            )
        })
        .collect();
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(p, d)| (p.as_str(), d.as_slice()))
        .collect();
    write_tree(&model, &refs);
    let lake_dir = tmp.path().join("lake");
    ingest_dir(&lake_dir, &model, "m").await;
    let lake = lake_dir.to_str().expect("utf8");
    run_ok(&["tensorise", "--lake", lake, "-q"]);
    // Rows are committed in groups while the run goes on, not all at its
    // end: a killed run keeps what it did, and memory does not grow with
    // the number of files.
    let commits = std::fs::read_dir(lake_dir.join("silver/files/_delta_log"))
        .expect("log")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .count();
    assert!(commits >= 4, "{commits} commits of silver.files");
    let verified = run_ok(&["verify", "m@main", "--lake", lake, "-q"]);
    assert!(verified.contains("verify: 1200 files"), "{verified}");
}

#[tokio::test(flavor = "multi_thread")]
async fn overlapping_tensorise_runs_store_each_file_once() {
    let tmp = tempfile::tempdir().expect("tmp");
    let lake_dir = tmp.path().join("lake");
    ingest_dir(&lake_dir, &model_dir("all-minilm-l6-v2"), "minilm").await;
    let lake = lake_dir.to_str().expect("utf8");
    let start = || {
        bin()
            .args(["tensorise", "--lake", lake, "-q"])
            .spawn()
            .expect("spawn")
    };
    let (mut a, mut b) = (start(), start());
    assert!(a.wait().expect("wait").success());
    assert!(b.wait().expect("wait").success());
    let counts = csv(
        &local_lake(tmp.path()),
        "SELECT (SELECT count(*) FROM silver.files) AS files, \
                (SELECT count(DISTINCT file_path) FROM silver.files) AS distinct_files, \
                (SELECT count(*) FROM silver.tensors) AS tensors, \
                (SELECT count(DISTINCT tensor_name) FROM silver.tensors) AS distinct_tensors",
    )
    .await;
    let row: Vec<&str> = counts.lines().nth(1).expect("row").split(',').collect();
    assert_eq!((row[0], row[2]), (row[1], row[3]), "{counts}");
}

#[test]
fn a_fine_tune_is_compared_with_what_its_base_revision_has_now() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (base, ft) = (tmp.path().join("base"), tmp.path().join("ft"));
    let lake = tmp.path().join("lake");
    let (base_s, ft_s, lake_s) = (
        base.to_str().expect("utf8"),
        ft.to_str().expect("utf8"),
        lake.to_str().expect("utf8"),
    );
    // The base's weights change upstream after a first tensorise.
    for seed in [1, 2] {
        write_tree(
            &base,
            &[("model.safetensors", &safetensors_f32(5000, seed))],
        );
        run_ok(&[
            "ingest",
            base_s,
            "--lake",
            lake_s,
            "--model-id",
            "base",
            "-q",
        ]);
        run_ok(&["tensorise", "--lake", lake_s, "-q"]);
    }
    // A fine-tune that left the current base weights untouched.
    write_tree(&ft, &[("model.safetensors", &safetensors_f32(5000, 2))]);
    run_ok(&["ingest", ft_s, "--lake", lake_s, "--model-id", "ft", "-q"]);
    run_ok(&[
        "tensorise",
        "--lake",
        lake_s,
        "--model-id",
        "ft",
        "--base-model",
        "base@main",
        "-q",
    ]);
    let out = run_ok(&[
        "sql",
        "--lake",
        lake_s,
        "--format",
        "csv",
        "SELECT identical_to_base, rel_l2_change FROM silver.tensors WHERE model_id = 'ft'",
    ]);
    assert_eq!(out.lines().nth(1), Some("true,0.0"), "{out}");
}

/// A `tensorise` of MiniLM into a fresh lake, started; returns once it
/// holds its lock.
fn tensorise_holding_its_lock(lake: &Path) -> std::process::Child {
    run_ok(&[
        "ingest",
        model_dir("all-minilm-l6-v2").to_str().expect("utf8"),
        "--lake",
        lake.to_str().expect("utf8"),
        "--model-id",
        "minilm",
        "-q",
    ]);
    let child = bin()
        .args(["tensorise", "--lake", lake.to_str().expect("utf8"), "-q"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let lock = lake.join("_system/locks/tensorise.0-of-1");
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !lock.exists() && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(lock.exists(), "tensorise never took its lock");
    child
}

#[test]
fn a_stopped_or_killed_tensorise_does_not_hold_up_the_next_one() {
    let tmp = tempfile::tempdir().expect("tmp");
    // SIGTERM: stopped with exit 130, and the lock is gone.
    let lake = tmp.path().join("term");
    let child = tensorise_holding_its_lock(&lake);
    let out = terminate(child);
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    assert!(
        text(&out).contains("interrupted by SIGTERM"),
        "{}",
        text(&out)
    );
    assert!(!lake.join("_system/locks/tensorise.0-of-1").exists());
    // SIGKILL leaves the lock; the next run on this machine sees its
    // holder's process is gone and takes it over at once.
    let lake = tmp.path().join("kill");
    let mut child = tensorise_holding_its_lock(&lake);
    child.kill().expect("kill -9");
    child.wait().expect("wait");
    assert!(lake.join("_system/locks/tensorise.0-of-1").exists());
    let again = bin()
        .args(["tensorise", "--lake", lake.to_str().expect("utf8"), "-q"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("run");
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        text(&again).contains("its process on this machine is gone")
            && !text(&again).contains("waiting for another run"),
        "{}",
        text(&again)
    );
}

#[test]
fn tensorise_runs_with_different_shard_counts_do_not_both_store_a_file() {
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = tmp.path().join("lake");
    let lake_s = lake.to_str().expect("utf8");
    let whole = tensorise_holding_its_lock(&lake);
    let shards: Vec<_> = ["0/2", "1/2"]
        .iter()
        .map(|s| {
            bin()
                .args(["tensorise", "--lake", lake_s, "--shard", s])
                .env("RUST_LOG", "warn")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    let first = whole.wait_with_output().expect("wait");
    assert!(first.status.success(), "{}", text(&first));
    for shard in shards {
        let out = shard.wait_with_output().expect("wait");
        assert!(out.status.success(), "{}", text(&out));
        assert!(
            text(&out).contains("waiting for another run holding tensorise.0-of-1")
                && text(&out).contains("0 files tensorised"),
            "{}",
            text(&out)
        );
    }
    let twice = run_ok(&[
        "sql",
        "--lake",
        lake_s,
        "--format",
        "csv",
        "SELECT count(*) AS n FROM (SELECT file_path FROM silver.files GROUP BY file_path HAVING count(*) > 1)",
    ]);
    assert_eq!(twice.lines().nth(1), Some("0"), "{twice}");
}
