//! kill -9 at arbitrary moments, then restart: the file completes with every
//! chunk present exactly once, and committed chunks are not downloaded again.

use std::time::{Duration, Instant};

use weightlake_testkit::{HttpFixture, Throttle};

use crate::support::*;

fn log_entries(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("_delta_log"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_then_restart_finishes_with_every_chunk_once() {
    let fx = HttpFixture::start().await.expect("server");
    let data = random_bytes(8 << 20, 12);
    fx.add_file("ckpt/model.safetensors", data.clone());
    // ~3 MB/s per range so that the run takes a few seconds and can be killed mid-way.
    fx.set_throttle(Throttle {
        bytes_per_sec: 3_000_000,
        latency: Duration::from_millis(5),
    });
    let tmp = tempfile::tempdir().expect("tmp");
    let lake_dir = tmp.path().join("lake");
    let chunks_dir = lake_dir.join("bronze/model_files");
    let url = fx.url("ckpt/model.safetensors");
    let args = [
        "ingest",
        url.as_str(),
        "--lake",
        lake_dir.to_str().expect("utf8"),
        "--chunk-size",
        "256KiB",
        "--memory-budget",
        "1MiB",
        "-q",
    ];
    // Kill after the chunk table has reached these numbers of log entries
    // (entry 0 creates the table).
    for kill_at in [3usize, 9, 17] {
        let mut child = bin().args(args).spawn().expect("spawn");
        let deadline = Instant::now() + Duration::from_secs(60);
        while log_entries(&chunks_dir) < kill_at {
            assert!(
                Instant::now() < deadline,
                "no progress to {kill_at} commits"
            );
            if let Some(status) = child.try_wait().expect("try_wait") {
                panic!("ingest ended before the kill at {kill_at}: {status}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
    }
    let sent_before = fx.bytes_sent();
    let out = run(&args);
    assert!(out.status.success(), "{}", text(&out));
    let resumed_bytes = fx.bytes_sent() - sent_before;
    assert!(
        !text(&out).contains("(0 reused)"),
        "nothing reused: {}",
        text(&out)
    );
    assert!(
        resumed_bytes < data.len() / 2 + (1 << 20),
        "resume downloaded {resumed_bytes} of {} bytes: committed chunks were fetched again",
        data.len()
    );
    let lake = local_lake(tmp.path());
    assert_eq!(read_back(&lake, "ckpt", "model.safetensors").await, data);
    let n = data.len().div_ceil(256 << 10) as i64;
    assert_eq!(
        query_i64(&lake, "SELECT COUNT(*) FROM bronze.model_files").await,
        [n],
        "duplicate or missing chunks"
    );
    assert_eq!(
        query_i64(
            &lake,
            "SELECT COUNT(DISTINCT chunk_index) FROM bronze.model_files"
        )
        .await,
        [n]
    );
    assert_eq!(
        query_i64(&lake, "SELECT COUNT(*) FROM bronze.files").await,
        [1]
    );
}
