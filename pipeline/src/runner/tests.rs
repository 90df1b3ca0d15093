//! The runner's DAG semantics with fake jobs: each stage's behaviour is scripted.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use super::*;
use crate::load_str;

/// What a fake stage does on each attempt.
#[derive(Clone, Copy)]
enum Act {
    Ok,
    Fail,
    BadInput,
    /// Fail this many attempts, then succeed.
    FailTimes(u32),
    /// Sleep this long, then succeed.
    Sleep(Duration),
}

#[derive(Default)]
struct Log {
    calls: Vec<(String, Shard)>,
    in_flight: usize,
    max_in_flight: usize,
}

fn pipeline(stages: &str) -> ValidatedPipeline {
    load_str(
        &format!(
            "name: t\nlake: ./l\nsources: {{ s: {{ local: {{ path: ./m }} }} }}\nstages:\n{stages}"
        ),
        "t.yaml",
    )
    .expect("valid")
}

async fn go(
    p: &ValidatedPipeline,
    opts: &RunOptions,
    acts: &[(&str, Act)],
) -> (BTreeMap<String, (Outcome, u32)>, Log) {
    let acts: BTreeMap<String, Act> = acts.iter().map(|(k, a)| (k.to_string(), *a)).collect();
    let log = Mutex::new(Log::default());
    let report = run_with(p, opts, |stage, shard| {
        let act = acts.get(&stage).copied().unwrap_or(Act::Ok);
        let log = &log;
        async move {
            let attempt = {
                let mut l = log.lock().expect("lock");
                l.calls.push((stage.clone(), shard));
                l.in_flight += 1;
                l.max_in_flight = l.max_in_flight.max(l.in_flight);
                l.calls
                    .iter()
                    .filter(|(s, sh)| *s == stage && *sh == shard)
                    .count() as u32
            };
            struct Done<'a>(&'a Mutex<Log>);
            impl Drop for Done<'_> {
                fn drop(&mut self) {
                    if let Ok(mut l) = self.0.lock() {
                        l.in_flight -= 1;
                    }
                }
            }
            let _done = Done(log);
            let fail = || {
                Err(PipelineError::Stage {
                    stage: stage.clone(),
                    source: Box::new(weightlake_jobs::JobError::Partial {
                        failed: 1,
                        total: 1,
                        first: "boom".into(),
                    }),
                })
            };
            match act {
                Act::Ok => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Ok(StageReport::Ingest(IngestReport::default()))
                }
                Act::Fail => fail(),
                Act::BadInput => Err(PipelineError::Stage {
                    stage: stage.clone(),
                    source: Box::new(weightlake_jobs::JobError::Invalid("bad".into())),
                }),
                Act::FailTimes(n) if attempt <= n => fail(),
                Act::FailTimes(_) => Ok(StageReport::Ingest(IngestReport::default())),
                Act::Sleep(d) => {
                    tokio::time::sleep(d).await;
                    Ok(StageReport::Ingest(IngestReport::default()))
                }
            }
        }
    })
    .await
    .expect("run");
    let outcomes = report
        .stages
        .iter()
        .map(|s| (s.stage.clone(), (s.outcome, s.attempts)))
        .collect();
    (outcomes, log.into_inner().expect("lock"))
}

#[tokio::test]
async fn independent_stages_run_at_the_same_time() {
    let p = pipeline(
        "  a: { job: ingest, sources: [s] }\n  b: { job: ingest, sources: [s] }\n  c: { job: ingest, sources: [s], depends_on: [a, b] }\n",
    );
    let (out, log) = go(
        &p,
        &RunOptions::default(),
        &[
            ("a", Act::Sleep(Duration::from_millis(200))),
            ("b", Act::Sleep(Duration::from_millis(200))),
        ],
    )
    .await;
    assert_eq!(log.max_in_flight, 2);
    assert!(
        out.values().all(|(o, _)| *o == Outcome::Succeeded),
        "{out:?}"
    );
    assert_eq!(log.calls.last().map(|c| c.0.as_str()), Some("c"));
}

#[tokio::test]
async fn run_if_rules_after_a_failed_upstream() {
    let p = pipeline(
        "  a: { job: ingest, sources: [s] }\n  ok: { job: ingest, sources: [s] }\n\
         \x20 all_success: { job: ingest, sources: [s], depends_on: [a] }\n\
         \x20 after_that: { job: ingest, sources: [s], depends_on: [all_success] }\n\
         \x20 all_done: { job: ingest, sources: [s], depends_on: [a], run_if: ALL_DONE }\n\
         \x20 none_failed: { job: ingest, sources: [s], depends_on: [ok], run_if: NONE_FAILED }\n\
         \x20 one_ok: { job: ingest, sources: [s], depends_on: [a, ok], run_if: AT_LEAST_ONE_SUCCESS }\n\
         \x20 all_failed: { job: ingest, sources: [s], depends_on: [a, ok], run_if: ALL_FAILED }\n\
         \x20 only_failed: { job: ingest, sources: [s], depends_on: [a], run_if: ALL_FAILED }\n\
         \x20 one_failed: { job: ingest, sources: [s], depends_on: [a, ok], run_if: AT_LEAST_ONE_FAILED }\n\
         \x20 on_success_failure: { job: ingest, sources: [s], depends_on: [ok], run_if: AT_LEAST_ONE_FAILED }\n",
    );
    let (out, _) = go(&p, &RunOptions::default(), &[("a", Act::Fail)]).await;
    let o = |s: &str| out[s].0;
    assert_eq!(o("a"), Outcome::Failed);
    assert_eq!(o("all_success"), Outcome::UpstreamFailed);
    assert_eq!(o("after_that"), Outcome::UpstreamFailed);
    assert_eq!(o("all_done"), Outcome::Succeeded);
    assert_eq!(o("none_failed"), Outcome::Succeeded);
    assert_eq!(o("one_ok"), Outcome::Succeeded);
    assert_eq!(o("all_failed"), Outcome::UpstreamFailed);
    assert_eq!(o("only_failed"), Outcome::Succeeded);
    assert_eq!(o("one_failed"), Outcome::Succeeded);
    assert_eq!(o("on_success_failure"), Outcome::Skipped);
    assert_eq!(out["all_success"].1, 0, "a stage not run has no attempt");
}

#[test]
fn run_if_truth_table_for_skipped_and_excluded_upstreams() {
    use Outcome::*;
    assert!(run_if_holds(RunIf::AllSuccess, &[Succeeded, Excluded]));
    assert!(!run_if_holds(RunIf::AllSuccess, &[Succeeded, Skipped]));
    assert!(!run_if_holds(RunIf::NoneFailed, &[Skipped]));
    assert!(run_if_holds(RunIf::NoneFailed, &[Skipped, Succeeded]));
    assert!(run_if_holds(RunIf::AllFailed, &[Failed, UpstreamFailed]));
    assert!(!run_if_holds(RunIf::AllFailed, &[Failed, Skipped]));
    assert!(run_if_holds(RunIf::AllDone, &[Failed, Skipped, Succeeded]));
}

#[tokio::test]
async fn a_flaky_stage_succeeds_on_retry_after_the_interval() {
    let p =
        pipeline("  a: { job: ingest, sources: [s], max_retries: 3, min_retry_interval: 100ms }\n");
    let t = Instant::now();
    let (out, _) = go(&p, &RunOptions::default(), &[("a", Act::FailTimes(2))]).await;
    assert_eq!(out["a"], (Outcome::Succeeded, 3));
    assert!(
        t.elapsed() >= Duration::from_millis(200),
        "{:?}",
        t.elapsed()
    );
    let (out, _) = go(&p, &RunOptions::default(), &[("a", Act::Fail)]).await;
    assert_eq!(out["a"], (Outcome::Failed, 4));
    // Bad input is not retried: the next attempt would fail the same way.
    let (out, _) = go(&p, &RunOptions::default(), &[("a", Act::BadInput)]).await;
    assert_eq!(out["a"], (Outcome::Failed, 1));
}

#[tokio::test]
async fn a_timed_out_stage_is_cancelled_and_retried_only_with_retry_on_timeout() {
    let slow = [("a", Act::Sleep(Duration::from_secs(30)))];
    let p = pipeline("  a: { job: ingest, sources: [s], timeout: 100ms, max_retries: 2 }\n");
    let t = Instant::now();
    let (out, log) = go(&p, &RunOptions::default(), &slow).await;
    assert_eq!(out["a"], (Outcome::Failed, 1));
    assert_eq!(log.in_flight, 0, "the timed-out attempt was dropped");
    let p = pipeline(
        "  a: { job: ingest, sources: [s], timeout: 100ms, max_retries: 2, retry_on_timeout: true }\n",
    );
    let (out, _) = go(&p, &RunOptions::default(), &slow).await;
    assert_eq!(out["a"], (Outcome::Failed, 3));
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
}

#[tokio::test]
async fn shards_run_concurrently_and_a_failing_shard_fails_the_stage() {
    let p = pipeline(
        "  a: { job: ingest, sources: [s], shards: 4 }\n  b: { job: ingest, sources: [s], depends_on: [a] }\n",
    );
    let (out, log) = go(
        &p,
        &RunOptions::default(),
        &[("a", Act::Sleep(Duration::from_millis(200)))],
    )
    .await;
    assert_eq!(out["a"].0, Outcome::Succeeded);
    let mut shards: Vec<String> = log
        .calls
        .iter()
        .filter(|c| c.0 == "a")
        .map(|c| c.1.to_string())
        .collect();
    shards.sort();
    assert_eq!(shards, ["0/4", "1/4", "2/4", "3/4"]);
    assert_eq!(log.max_in_flight, 4);
    let (out, _) = go(&p, &RunOptions::default(), &[("a", Act::Fail)]).await;
    assert_eq!(out["a"].0, Outcome::Failed);
    assert_eq!(out["b"].0, Outcome::UpstreamFailed);
}

#[tokio::test]
async fn from_runs_a_stage_and_its_downstream_only() {
    let p = pipeline(
        "  a: { job: ingest, sources: [s] }\n  b: { job: ingest, sources: [s], depends_on: [a] }\n  c: { job: ingest, sources: [s], depends_on: [b] }\n  d: { job: ingest, sources: [s] }\n",
    );
    let opts = RunOptions {
        from: Some("b".into()),
        ..Default::default()
    };
    let (out, log) = go(&p, &opts, &[]).await;
    let ran: Vec<&str> = log.calls.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(ran, ["b", "c"]);
    assert_eq!(out["a"].0, Outcome::Excluded);
    assert_eq!(out["d"].0, Outcome::Excluded);
    let opts = RunOptions {
        from: Some("bb".into()),
        ..Default::default()
    };
    let err = run_with(&p, &opts, |_, _| async {
        Ok(StageReport::Ingest(IngestReport::default()))
    })
    .await
    .expect_err("unknown stage");
    assert!(err.to_string().contains("did you mean `b`"), "{err}");
}

/// Stage, shard, attempt, status.
type Row = (String, Option<String>, u32, &'static str);

/// Collects attempts in memory.
#[derive(Default)]
struct Collect(Mutex<Vec<Row>>);

impl AttemptSink for Collect {
    fn record(&self, a: Attempt) -> futures::future::BoxFuture<'_, ()> {
        if let Ok(mut v) = self.0.lock() {
            v.push((
                a.stage,
                a.shard.map(|s| s.to_string()),
                a.attempt,
                a.status.as_str(),
            ));
        }
        Box::pin(async {})
    }
}

#[tokio::test]
async fn every_attempt_and_every_stage_not_run_reaches_the_ledger() {
    let p = pipeline(
        "  a: { job: ingest, sources: [s], max_retries: 2 }\n  b: { job: ingest, sources: [s], shards: 2 }\n  c: { job: ingest, sources: [s], timeout: 50ms }\n  d: { job: ingest, sources: [s], depends_on: [c] }\n",
    );
    let sink = Arc::new(Collect::default());
    let opts = RunOptions {
        ledger: Some(sink.clone()),
        ..Default::default()
    };
    go(
        &p,
        &opts,
        &[
            ("a", Act::FailTimes(1)),
            ("c", Act::Sleep(Duration::from_secs(30))),
        ],
    )
    .await;
    let mut rows = sink.0.lock().expect("lock").clone();
    rows.sort();
    let rows: Vec<(&str, Option<&str>, u32, &str)> = rows
        .iter()
        .map(|(s, sh, a, st)| (s.as_str(), sh.as_deref(), *a, *st))
        .collect();
    assert_eq!(
        rows,
        [
            ("a", None, 1, "failed"),
            ("a", None, 2, "succeeded"),
            ("b", Some("0/2"), 1, "succeeded"),
            ("b", Some("1/2"), 1, "succeeded"),
            ("c", None, 1, "timed_out"),
            ("d", None, 0, "upstream_failed"),
        ]
    );
}

#[tokio::test]
async fn the_budget_cancels_a_running_stage_and_starts_nothing_after_it() {
    // $36 000 an hour is $10 a second: a $2 run budget lasts ~0.2 s.
    let p = load_str(
        "name: t\nlake: ./l\nsources: { s: { local: { path: ./m } } }\n\
         cost: { instance: box, prices: { instances: { box: 36000 } } }\n\
         budget: { max_usd_per_run: 2 }\n\
         stages:\n  a: { job: ingest, sources: [s] }\n  slow: { job: ingest, sources: [s], depends_on: [a], max_retries: 3 }\n  \
         after: { job: ingest, sources: [s], depends_on: [slow], run_if: ALL_DONE }\n",
        "t.yaml",
    )
    .expect("valid");
    let sink = Arc::new(Collect::default());
    let opts = RunOptions {
        ledger: Some(sink.clone()),
        ..Default::default()
    };
    let t = Instant::now();
    let (out, _) = go(&p, &opts, &[("slow", Act::Sleep(Duration::from_secs(30)))]).await;
    assert!(t.elapsed() < Duration::from_secs(5), "cancelled promptly");
    assert_eq!(out["a"].0, Outcome::Succeeded);
    assert_eq!(out["slow"], (Outcome::Cancelled, 1), "not retried");
    assert_eq!(
        out["after"].0,
        Outcome::Cancelled,
        "not started, even ALL_DONE"
    );
    let rows = sink.0.lock().expect("lock").clone();
    let status = |st: &str| rows.iter().find(|r| r.0 == st).map(|r| (r.2, r.3));
    assert_eq!(status("slow"), Some((1, "cancelled")));
    assert_eq!(status("after"), Some((0, "cancelled")));

    // What the day has already spent counts against max_usd_per_day.
    let p = load_str(
        "name: t\nlake: ./l\nsources: { s: { local: { path: ./m } } }\n\
         cost: { instance: box, prices: { instances: { box: 36000 } } }\n\
         budget: { max_usd_per_day: 100 }\n\
         stages:\n  slow: { job: ingest, sources: [s] }\n",
        "t.yaml",
    )
    .expect("valid");
    let opts = RunOptions {
        spent_today_usd: 99.0,
        ..Default::default()
    };
    let t = Instant::now();
    let (out, _) = go(&p, &opts, &[("slow", Act::Sleep(Duration::from_secs(30)))]).await;
    assert_eq!(out["slow"].0, Outcome::Cancelled);
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn every_attempt_is_priced_and_the_run_sums_them() {
    // $3600 an hour: a dollar a second.
    let p = load_str(
        "name: t\nlake: ./l\nsources: { s: { local: { path: ./m } } }\n\
         cost: { instance: box, prices: { instances: { box: 3600 }, storage_gb_month: 0 } }\n\
         stages:\n  a: { job: ingest, sources: [s], max_retries: 1 }\n  b: { job: ingest, sources: [s] }\n",
        "t.yaml",
    )
    .expect("valid");
    let report = run_with(&p, &RunOptions::default(), |stage, _| async move {
        tokio::time::sleep(Duration::from_millis(if stage == "a" { 300 } else { 100 })).await;
        Ok(StageReport::Ingest(IngestReport::default()))
    })
    .await
    .expect("run");
    let cost = |s: &str| {
        report
            .stages
            .iter()
            .find(|r| r.stage == s)
            .and_then(|r| r.cost_usd)
            .expect("priced")
    };
    assert!((0.29..0.6).contains(&cost("a")), "{}", cost("a"));
    assert!((0.09..0.4).contains(&cost("b")), "{}", cost("b"));
    let total = report.cost_usd.expect("total");
    assert!((total - cost("a") - cost("b")).abs() < 1e-9);
}
