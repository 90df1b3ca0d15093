//! `weightlake run` / `plan` with Workflows semantics through the CLI: run_if
//! after a failed stage, timeouts with and without `retry_on_timeout`,
//! shards, `--from`, `--param`. (Retry and concurrency rules in detail are
//! unit tests of `weightlake_pipeline::runner`.)

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::*;

fn tiny() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/models/tiny")
}

fn write(dir: &Path, yaml: &str) -> String {
    let p = dir.join("p.yaml");
    std::fs::write(&p, yaml).expect("write");
    p.to_str().expect("utf8").to_string()
}

/// A server that accepts connections and never answers.
fn silent_server() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/model.safetensors", l.local_addr().expect("addr"));
    (l, url)
}

/// A port nothing listens on.
fn refused_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    drop(l);
    format!("http://127.0.0.1:{port}/model.safetensors")
}

#[test]
fn all_done_stage_runs_after_a_failed_upstream_and_the_run_exits_1() {
    let tmp = tempfile::tempdir().expect("tmp");
    let yaml = format!(
        "name: t\nlake: {lake}\nsources:\n  gone: {{ url: {{ url: '{url}' }} }}\n  tiny: {{ local: {{ path: {tiny} }} }}\nstages:\n  broken: {{ job: ingest, sources: [gone], retries: 0 }}\n  cleanup: {{ job: ingest, sources: [tiny], model_id: tiny, depends_on: [broken], run_if: ALL_DONE }}\n  after: {{ job: tensorise, depends_on: [broken] }}\n  on_failure: {{ job: tensorise, depends_on: [cleanup], run_if: AT_LEAST_ONE_FAILED }}\n",
        lake = tmp.path().join("lake").display(),
        url = refused_url(),
        tiny = tiny().display()
    );
    let p = write(tmp.path(), &yaml);
    let out = run(&["run", &p, "-q"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("broken: failed after 1 attempt:"), "{t}");
    assert!(t.contains("cleanup: 3 files ingested"), "{t}");
    assert!(
        t.contains("after: upstream_failed (run_if ALL_SUCCESS not met)"),
        "{t}"
    );
    assert!(
        t.contains("on_failure: skipped (run_if AT_LEAST_ONE_FAILED not met)"),
        "{t}"
    );

    // Continue from the stage after the broken one: the stages before it are
    // left out and count as succeeded; the re-run does no new work.
    let out = run(&["run", &p, "-q", "--from", "cleanup"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(
        t.contains("cleanup: 0 files ingested, 3 already present"),
        "{t}"
    );
    assert!(!t.contains("broken"), "{t}");
    let out = run(&["run", &p, "--from", "cleanpu"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("did you mean `cleanup`"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_timed_out_stage_is_retried_only_with_retry_on_timeout() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (_server, url) = silent_server();
    for (retry, attempts) in [(false, "1 attempt:"), (true, "2 attempts:")] {
        let yaml = format!(
            "name: t\nlake: {lake}\nsources:\n  slow: {{ url: {{ url: '{url}' }} }}\nstages:\n  slow: {{ job: ingest, sources: [slow], stall_timeout_secs: 600, timeout: 1s, max_retries: 1, retry_on_timeout: {retry} }}\n",
            lake = tmp.path().join("lake").display(),
        );
        let p = write(tmp.path(), &yaml);
        let start = Instant::now();
        let out = run(&["run", &p, "-q"]);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(1), "{t}");
        assert!(
            t.contains(&format!(
                "slow: failed after {attempts} stage `slow` timed out after 1s"
            )),
            "{t}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{:?}",
            start.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn shards_split_a_stage_and_parameters_override_defaults() {
    let tmp = tempfile::tempdir().expect("tmp");
    let yaml = format!(
        "name: t\nlake: {lake}\nparameters: {{ model: tiny, chunk: 16KiB }}\nsources:\n  tiny: {{ local: {{ path: {tiny} }} }}\nstages:\n  ingest: {{ job: ingest, sources: [tiny], model_id: '${{model}}', chunk_size: '${{chunk}}', shards: 3 }}\n",
        lake = tmp.path().join("lake").display(),
        tiny = tiny().display()
    );
    let p = write(tmp.path(), &yaml);
    let plan = run(&["plan", &p, "--param", "model=tiny2"]);
    let t = text(&plan);
    assert!(plan.status.success(), "{t}");
    assert!(t.contains("parameters: chunk=16KiB, model=tiny2"), "{t}");
    assert!(
        t.contains("wave 1  ingest  job=ingest") && t.contains("shards=3"),
        "{t}"
    );
    let bad = run(&["plan", &p, "--param", "modle=x"]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    assert!(
        text(&bad).contains("did you mean `model`"),
        "{}",
        text(&bad)
    );

    let out = run(&["run", &p, "-q", "--param", "model=tiny2"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let shard_lines: Vec<&str> = t.lines().filter(|l| l.starts_with("ingest[")).collect();
    assert_eq!(shard_lines.len(), 3, "{t}");
    let ingested: usize = shard_lines
        .iter()
        .filter_map(|l| {
            l.split(": ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .sum();
    assert_eq!(ingested, 3, "each file once across the shards: {t}");
    // A task must split the stage as its `shards:` says.
    let odd = run(&["task", "ingest", "--pipeline", &p, "--shard", "0/2"]);
    assert_eq!(odd.status.code(), Some(2), "{}", text(&odd));
    assert!(text(&odd).contains("shards: 3"), "{}", text(&odd));
    let original = std::fs::read(tiny().join("model.safetensors")).expect("model");
    assert_eq!(
        read_back(&local_lake(tmp.path()), "tiny2", "model.safetensors").await,
        original
    );
}
