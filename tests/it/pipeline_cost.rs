//! Cost and monitoring through the CLI: cost estimates in `_system.runs`,
//! `plan` showing what a run would do, budgets that refuse or cancel runs,
//! and alerts POSTed to a webhook.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use weightlake_jobs::ledger::{RunRecord, append, read};
use weightlake_testkit::{HttpFixture, Throttle, WebhookReceiver};

use crate::support::*;

fn tiny() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/models/tiny")
}

/// A pipeline file `p.yaml` under `dir`: `name`, a lake in `dir/lake`, the
/// tiny model as source `tiny`, then `rest` (top-level blocks and stages).
fn pipeline(dir: &Path, name: &str, rest: &str) -> (String, String) {
    let lake = dir.join("lake").to_string_lossy().into_owned();
    let yaml = format!(
        "name: {name}\nlake: {lake}\nsources:\n  tiny: {{ local: {{ path: {} }} }}\n{rest}",
        tiny().display()
    );
    let path = dir.join("p.yaml");
    std::fs::write(&path, yaml).expect("write");
    (path.to_string_lossy().into_owned(), lake)
}

const STAGES: &str = "stages:\n  ingest: { job: ingest, sources: [tiny], model_id: tiny }\n  tensorise: { job: tensorise, depends_on: [ingest] }\n";

#[tokio::test(flavor = "multi_thread")]
async fn every_attempt_is_priced_and_plan_shows_what_a_run_would_do() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (p, lake) = pipeline(
        tmp.path(),
        "priced",
        &format!("cost: {{ instance: c4a-standard-4 }}\n{STAGES}"),
    );
    let plan = run_ok(&["plan", &p]);
    assert!(
        plan.contains("ingest: 3 files to ingest (")
            && plan.contains(", 0 already present")
            && plan.contains("tensorise: 0 files to tensorise (0 bytes), 0 already in silver, + ")
            && plan.contains("estimated cost: $0.0"),
        "{plan}"
    );
    assert!(!Path::new(&lake).exists(), "plan writes nothing");

    let out = run_ok(&["run", &p, "-q"]);
    assert!(out.contains("cost estimate: $0.0"), "{out}");
    let all = read(&local_lake(tmp.path())).await.expect("ledger");
    // One row per attempt, besides the run's start and end markers.
    let rows: Vec<_> = all.iter().filter(|r| r.stage != "(run)").collect();
    assert_eq!((rows.len(), all.len()), (2, 4), "{all:?}");
    // c4a-standard-4: $0.1796 an hour; Cloud Storage $0.020 per GB-month.
    let ingest = rows.iter().find(|r| r.stage == "ingest").expect("ingest");
    let want = ingest.duration_ms as f64 / 3.6e6 * 0.1796 + ingest.bytes as f64 / 1e9 * 0.020;
    let got = ingest.cost_usd.expect("priced");
    assert!(
        (got - want).abs() < 0.1796 / 3.6e6 + 1e-12,
        "{got} vs {want}"
    );
    let tensorise = rows.iter().find(|r| r.stage == "tensorise").expect("row");
    assert!(tensorise.cost_usd.expect("priced") >= tensorise.duration_ms as f64 / 3.6e6 * 0.1796);

    let plan = run_ok(&["plan", &p]);
    assert!(
        plan.contains("ingest: 0 files to ingest (0 bytes), 3 already present")
            && plan.contains("tensorise: 0 files to tensorise (0 bytes), 3 already in silver"),
        "{plan}"
    );
    let list = run_ok(&["runs", "list", "--lake", &lake]);
    assert!(
        list.contains("succeeded") && list.contains("  $0.0"),
        "{list}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_whose_estimate_exceeds_the_budget_is_refused_before_it_starts() {
    let tmp = tempfile::tempdir().expect("tmp");
    // At a million dollars per GB-month, storing the tiny model costs ~$30.
    let (p, lake) = pipeline(
        tmp.path(),
        "refused",
        &format!(
            "cost: {{ instance: c4a-standard-4, prices: {{ storage_gb_month: 1000000 }} }}\nbudget: {{ max_usd_per_run: 1 }}\n{STAGES}"
        ),
    );
    let plan = run_ok(&["plan", &p]);
    assert!(
        plan.contains("budget: max_usd_per_run $1.00 -> the run would be refused"),
        "{plan}"
    );
    let out = run(&["run", &p, "-q"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("run refused: its estimated cost $")
            && text(&out).contains("exceeds the budget max_usd_per_run $1.00"),
        "{}",
        text(&out)
    );
    assert!(
        !Path::new(&lake).join("bronze").exists(),
        "nothing was ingested"
    );
    let rows = read(&local_lake(tmp.path())).await.expect("ledger");
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter()
            .all(|r| r.status == "cancelled" && r.attempt == 0),
        "{rows:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_that_reaches_its_budget_is_cancelled_while_it_runs() {
    // 2 MB at 200 KB/s takes 10 s; at $36 000 an hour ($10 a second) a $5
    // budget lasts half a second. The estimate assumes a fast link, so the
    // run starts and the budget stops it.
    let server = HttpFixture::start().await.expect("server");
    server.add_file("big.bin", random_bytes(2_000_000, 7));
    server.set_throttle(Throttle {
        bytes_per_sec: 200_000,
        latency: Duration::ZERO,
    });
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = tmp.path().join("lake").to_string_lossy().into_owned();
    let yaml = format!(
        "name: cancelled\nlake: {lake}\nsources:\n  big: {{ url: {{ url: {} }} }}\n\
         cost: {{ instance: box, prices: {{ instances: {{ box: 36000 }} }}, assumed_throughput_mbps: 1000000 }}\n\
         budget: {{ max_usd_per_run: 5 }}\n\
         stages:\n  ingest: {{ job: ingest, sources: [big], model_id: big, parallelism: 1, max_retries: 2 }}\n  tensorise: {{ job: tensorise, depends_on: [ingest], run_if: ALL_DONE }}\n",
        server.url("big.bin")
    );
    let p = tmp.path().join("p.yaml");
    std::fs::write(&p, yaml).expect("write");
    let t = Instant::now();
    let out = run(&["run", p.to_str().expect("utf8"), "-q"]);
    assert!(t.elapsed() < Duration::from_secs(8), "stopped early");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(
            "ingest: cancelled: stage `ingest` cancelled: budget max_usd_per_run $5.00 reached"
        ),
        "{}",
        text(&out)
    );
    let rows = read(&local_lake(tmp.path())).await.expect("ledger");
    let status = |stage: &str| {
        rows.iter()
            .filter(|r| r.stage == stage)
            .map(|r| (r.attempt, r.status.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        status("ingest"),
        [(1, "cancelled".to_string())],
        "not retried"
    );
    assert_eq!(status("tensorise"), [(0, "cancelled".to_string())]);
    let spent = rows.iter().filter_map(|r| r.cost_usd).sum::<f64>();
    assert!((5.0..8.0).contains(&spent), "recorded cost {spent}");
    let list = run_ok(&["runs", "list", "--lake", &lake]);
    assert!(list.contains("cancelled  stages 0 ok, 2 failed"), "{list}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_run_is_recorded_as_cancelled_and_a_killed_one_as_incomplete() {
    let server = HttpFixture::start().await.expect("server");
    server.add_file("slow.bin", random_bytes(2_000_000, 9));
    server.set_throttle(Throttle {
        bytes_per_sec: 100_000,
        latency: Duration::ZERO,
    });
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = tmp.path().join("lake").to_string_lossy().into_owned();
    let yaml = format!(
        "name: stopped\nlake: {lake}\nsources:\n  slow: {{ url: {{ url: {} }} }}\n\
         stages:\n  ingest: {{ job: ingest, sources: [slow], model_id: slow, parallelism: 1 }}\n  tensorise: {{ job: tensorise, depends_on: [ingest] }}\n",
        server.url("slow.bin")
    );
    let p = tmp.path().join("p.yaml");
    std::fs::write(&p, yaml).expect("write");
    // Start a run, let it get going, then stop it with `signal`.
    let stop = |signal: &str| {
        let child = bin()
            .args(["run", p.to_str().expect("utf8"), "-q", "--run-id"])
            .arg(format!("run-{signal}"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        std::thread::sleep(Duration::from_millis(2500));
        let killed = std::process::Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(killed.success());
        child.wait_with_output().expect("wait")
    };
    let interrupted = stop("-INT");
    assert_eq!(
        interrupted.status.code(),
        Some(130),
        "{}",
        text(&interrupted)
    );
    assert!(
        text(&interrupted).contains("interrupted by Ctrl-C"),
        "{}",
        text(&interrupted)
    );
    let killed = stop("-KILL");
    assert_eq!(killed.status.code(), None, "killed by the signal");
    let list = run_ok(&["runs", "list", "--lake", &lake]);
    let line = |id: &str| {
        list.lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_default()
            .to_string()
    };
    assert!(line("run--INT").contains("cancelled"), "{list}");
    assert!(line("run--KILL").contains("incomplete"), "{list}");
    let killed = run_ok(&["runs", "show", "run--KILL", "--lake", &lake]);
    assert!(
        killed
            .lines()
            .next()
            .is_some_and(|l| l.ends_with(": incomplete"))
            && killed.contains("never recorded its end")
            && killed
                .lines()
                .any(|l| l.trim_start().starts_with("(run)") && l.contains("incomplete")),
        "{killed}"
    );
    let show = run_ok(&["runs", "show", "run--INT", "--lake", &lake]);
    assert!(
        show.lines()
            .next()
            .is_some_and(|l| l.ends_with(": cancelled")),
        "{show}"
    );
    assert!(show.contains("interrupted by Ctrl-C"), "{show}");
    // The stage it stopped and the one that never started say so.
    let stage = |name: &str| {
        show.lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        stage("ingest").contains("cancelled") && stage("ingest").contains("stopped while running"),
        "{show}"
    );
    assert!(
        stage("tensorise").contains("cancelled") && stage("tensorise").contains("not started"),
        "{show}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_stages_and_costly_runs_raise_alerts_to_the_webhook() {
    let hook = WebhookReceiver::start().await.expect("receiver");
    hook.fail_first(1);
    let tmp = tempfile::tempdir().expect("tmp");
    let (p, _) = pipeline(
        tmp.path(),
        "alerting",
        &format!(
            "cost: {{ instance: c4a-standard-4 }}\nalerts: {{ webhook: '{}', max_usd_per_run: 0.0000001 }}\n{STAGES}",
            hook.url()
        ),
    );
    // Three earlier runs (yesterday) in which ingest ran at 1 TB/s.
    let yesterday = chrono::Utc::now().timestamp_micros() - 86_400_000_000;
    let history: Vec<RunRecord> = (0..3)
        .map(|i| RunRecord {
            run_id: format!("past-{i}"),
            pipeline: "alerting".into(),
            stage: "ingest".into(),
            shard: None,
            attempt: 1,
            status: "succeeded".into(),
            started_at: yesterday + i * 10_000_000,
            ended_at: yesterday + i * 10_000_000 + 1_000_000,
            duration_ms: 1000,
            bytes: 1_000_000_000_000,
            rows: 1,
            throughput_mbps: 1e6,
            error: None,
            cost_usd: Some(1.0),
        })
        .collect();
    append(&local_lake(tmp.path()), &history)
        .await
        .expect("seed history");

    let out = run_ok(&["run", &p, "-q"]);
    assert!(out.contains("ingest: 3 files ingested"), "{out}");
    let got = hook.wait_for(2, Duration::from_secs(10)).await;
    assert!(hook.requests() >= 3, "the failed delivery was retried");
    let kind = |k: &str| {
        got.iter()
            .find(|a| a["kind"] == k)
            .unwrap_or_else(|| panic!("no {k} alert in {got:?}"))
    };
    let slow = kind("throughput_drop");
    assert_eq!(slow["pipeline"], "alerting");
    assert_eq!(slow["stage"], "ingest");
    assert_eq!(slow["unit"], "MB/s");
    assert!((slow["expected"].as_f64().expect("median") - 1e6).abs() < 1.0);
    assert!(slow["observed"].as_f64() < slow["threshold"].as_f64());
    assert!(
        slow["message"]
            .as_str()
            .is_some_and(|m| m.contains("over the last 3 runs")),
        "{slow}"
    );
    let costly = kind("cost_over_threshold");
    assert_eq!(costly["unit"], "USD");
    assert!(costly["observed"].as_f64() > Some(0.0000001));
    assert_eq!(got.len(), 2, "{got:?}");

    // Re-run: nothing to ingest, so no throughput to judge; still over cost.
    run_ok(&["run", &p, "-q"]);
    let got = hook.wait_for(3, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[2]["kind"], "cost_over_threshold");
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_tell_the_notification_webhook_when_they_start_and_end() {
    let hook = WebhookReceiver::start().await.expect("receiver");
    let tmp = tempfile::tempdir().expect("tmp");
    let (p, _) = pipeline(
        tmp.path(),
        "notified",
        &format!(
            "notifications: {{ on: [start, success, failure], webhook: '{}' }}\n{STAGES}  \
             broken: {{ job: export, depends_on: [tensorise], model: nosuch@main, to: {} }}\n",
            hook.url(),
            tmp.path().join("out").display()
        ),
    );
    let out = run(&["run", &p, "-q", "--run-id", "notify-1"]);
    // Exit 2: the only failure is the input's (a model that does not exist).
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let got = hook.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0]["event"], "run_started");
    assert_eq!(got[0]["run_id"], "notify-1");
    let end = &got[1];
    assert_eq!(end["event"], "run_failed");
    assert_eq!(end["succeeded"], false);
    assert_eq!(end["stages"]["ingest"], "succeeded");
    assert_eq!(end["stages"]["broken"], "failed");
    assert!(
        end["errors"]["broken"]
            .as_str()
            .is_some_and(|e| e.contains("nosuch")),
        "{end}"
    );

    // Only the events asked for: a passing run with `on: [failure]` is quiet.
    let (p, _) = pipeline(
        tmp.path(),
        "notified",
        &format!("notifications: {{ webhook: '{}' }}\n{STAGES}", hook.url()),
    );
    run_ok(&["run", &p, "-q"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(hook.received().len(), 2);
}

#[test]
fn a_task_is_refused_once_the_day_budget_is_spent() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (p, _) = pipeline(
        tmp.path(),
        "daily",
        &format!(
            "cost: {{ instance: c4a-standard-4 }}\nbudget: {{ max_usd_per_day: 0.0000001 }}\n{STAGES}"
        ),
    );
    // The first task spends more than the day allows (it could not know).
    run_ok(&["task", "ingest", "--pipeline", &p]);
    let refused = run(&["task", "tensorise", "--pipeline", &p]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        text(&refused).contains("task refused: the pipeline spent $")
            && text(&refused).contains("max_usd_per_day is $0.0000001")
            && !text(&refused).contains("--only"),
        "{}",
        text(&refused)
    );
}

#[test]
fn a_run_stopped_during_tensorise_leaves_no_lock_behind() {
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = tmp.path().join("lake");
    let model = model_dir("all-minilm-l6-v2");
    run_ok(&[
        "ingest",
        model.to_str().expect("utf8"),
        "--lake",
        lake.to_str().expect("utf8"),
        "--model-id",
        "minilm",
        "-q",
    ]);
    let p = tmp.path().join("t.yaml");
    let yaml = format!(
        "name: locked\nlake: {}\nstages:\n  tensorise: {{ job: tensorise }}\n",
        lake.display()
    );
    std::fs::write(&p, yaml).expect("write");
    let child = bin()
        .args(["run", p.to_str().expect("utf8"), "-q"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(1500));
    let out = terminate(child);
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    let locks = lake.join("_system/locks");
    let left: Vec<_> = std::fs::read_dir(&locks)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "locks left: {left:?}");
    // The rerun starts at once and finishes.
    let started = std::time::Instant::now();
    run_ok(&["run", p.to_str().expect("utf8"), "-q"]);
    assert!(started.elapsed() < Duration::from_secs(60));
}
