//! The entry points: [`run`] (a whole pipeline run, with its budget, alerts,
//! notifications and tracking around the DAG) and [`run_task`] (one task).

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tracing::info;

use super::{RunOptions, RunReport, StageReport, known_stage, no_stage, run_stage, run_with};
use crate::history::History;
use crate::ledger::{Attempt, AttemptSink, AttemptStatus, Ledger};
use crate::{PipelineError, ValidatedPipeline};

/// Run the pipeline (or `opts.only`, or `opts.from` and downstream) as a DAG
/// with the real jobs.
///
/// The run gets one run id (`opts.run_id`, else a new UUID) that every job
/// records; each attempt is recorded in `_system.runs` (a failure to write
/// the ledger is a warning), and the run is tracked in MLflow when
/// configured (see [`crate::tracking`]).
///
/// With `budget:`, a run whose estimate (see [`crate::estimate`]) exceeds
/// what the budget leaves is refused before anything runs
/// ([`PipelineError::OverBudget`], its stages recorded as `cancelled`), and
/// a run whose running cost reaches it is cancelled. With `alerts:`, slow
/// stages and costly runs raise alerts when the run ends.
pub async fn run(p: &ValidatedPipeline, opts: &RunOptions) -> Result<RunReport, PipelineError> {
    let (run_id, mut opts) = with_run_id_and_ledger(p, opts).await;
    let selected = selected_stages(p, &opts)?;
    let spec = p.spec();
    let history = if p.cost().is_some() || spec.alerts.is_some() {
        crate::history::load(p).await
    } else {
        History::default()
    };
    opts.spent_today_usd = history.spent_today();
    let limit = spec
        .budget
        .as_ref()
        .and_then(|b| b.limit(opts.spent_today_usd))
        .filter(|_| p.cost().is_some());
    if let Some(limit) = &limit {
        let estimate = crate::estimate::estimate(p, &selected, &history).await;
        let total = estimate.total_usd().unwrap_or(0.0);
        info!(estimate = %crate::cost::usd(total), budget = %limit.what, "cost estimate before the run");
        if total > limit.usd {
            let e = PipelineError::OverBudget {
                estimate_usd: total,
                left_usd: limit.usd,
                limit: limit.what.clone(),
            };
            if let Some(sink) = &opts.ledger {
                for name in &selected {
                    sink.record(
                        Attempt::not_run(name, AttemptStatus::Cancelled).with_error(e.to_string()),
                    )
                    .await;
                }
            }
            let why = e.to_string();
            let alert = crate::alerts::budget_alert(&spec.name, &run_id, total, limit.usd, &why);
            crate::alerts::raise(spec.alerts.as_ref(), &[alert]).await;
            crate::notifications::refused(spec.notifications.as_ref(), &spec.name, &run_id, &why)
                .await;
            return Err(e);
        }
    }
    let started = SystemTime::now();
    crate::notifications::started(spec.notifications.as_ref(), &spec.name, &run_id).await;
    // What a signal interrupts: stages with an attempt in flight, and stages
    // nothing was recorded for yet (not started).
    let watch = Arc::new(StageWatch::default());
    if let Some(inner) = opts.ledger.take() {
        opts.ledger = Some(Arc::new(WatchedSink {
            inner,
            watch: watch.clone(),
        }));
    }
    let opts = &opts;
    // Markers of the whole run: a run whose process dies shows as incomplete.
    let mark = |status| async move {
        if let Some(sink) = &opts.ledger {
            sink.record(Attempt::run_marker(status, started)).await;
        }
    };
    mark(AttemptStatus::Running).await;
    let dag = run_with(p, opts, |stage, shard| {
        let opts = RunOptions {
            shard,
            ..opts.clone()
        };
        let watch = watch.clone();
        async move {
            watch.started(&stage);
            let r = run_stage(p, &stage, &opts).await;
            watch.ended(&stage);
            r
        }
    });
    let report = if opts.stop_on_signals {
        tokio::select! {
            r = dag => r,
            signal = stop_signal() => {
                // The stages' futures are dropped here, which stops them
                // (jobs are crash-safe); the run is recorded as cancelled.
                if let Some(sink) = &opts.ledger {
                    let why = format!("interrupted by {signal}");
                    for name in &selected {
                        let stopped = if watch.running(name) {
                            format!("stopped while running: {why}")
                        } else if !watch.recorded(name) {
                            format!("not started: {why}")
                        } else {
                            continue;
                        };
                        sink.record(
                            Attempt::not_run(name, AttemptStatus::Cancelled).with_error(stopped),
                        )
                        .await;
                    }
                    sink.record(
                        Attempt::run_marker(AttemptStatus::Cancelled, started).with_error(why),
                    )
                    .await;
                }
                return Err(PipelineError::Interrupted { run_id, signal });
            }
        }
    } else {
        dag.await
    };
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            mark(AttemptStatus::Failed).await;
            return Err(e);
        }
    };
    mark(if report.cancelled.is_some() {
        AttemptStatus::Cancelled
    } else if report.succeeded() {
        AttemptStatus::Succeeded
    } else {
        AttemptStatus::Failed
    })
    .await;
    let mut alerts = Vec::new();
    if let Some(a) = &spec.alerts {
        alerts.extend(crate::alerts::throughput_alerts(
            a, &history, &spec.name, &run_id, &report,
        ));
        alerts.extend(
            report
                .cost_usd
                .and_then(|c| crate::alerts::cost_alert(a, &spec.name, &run_id, c)),
        );
    }
    if let Some(why) = &report.cancelled {
        alerts.push(crate::alerts::budget_alert(
            &spec.name,
            &run_id,
            report.cost_usd.unwrap_or(0.0),
            limit.as_ref().map_or(0.0, |l| l.usd),
            why,
        ));
    }
    crate::alerts::raise(spec.alerts.as_ref(), &alerts).await;
    crate::notifications::ended(spec.notifications.as_ref(), &spec.name, &run_id, &report).await;
    crate::tracking::track(p, &run_id, started, &report).await;
    Ok(report)
}

/// Ctrl-C; never, where signals cannot be received.
async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The first of Ctrl-C (SIGINT) and SIGTERM to arrive, by name.
pub async fn stop_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            return tokio::select! {
                _ = ctrl_c() => "Ctrl-C",
                Some(_) = term.recv() => "SIGTERM",
            };
        }
    }
    ctrl_c().await;
    "Ctrl-C"
}

/// The stages a run with `opts` runs (`--only`, `--from`, else all), in run
/// order.
pub fn selected_stages(
    p: &ValidatedPipeline,
    opts: &RunOptions,
) -> Result<Vec<String>, PipelineError> {
    Ok(match (&opts.only, &opts.from) {
        (Some(o), _) => vec![known_stage(p, o)?.to_string()],
        (None, Some(f)) => p.downstream_of(known_stage(p, f)?),
        (None, None) => p.order().to_vec(),
    })
}

/// `opts` with its run id fixed (`opts.run_id`, else a new UUID) and, unless
/// it has one, the ledger of `p`'s lake (its table created up front, so that
/// parallel tasks do not race to create it).
async fn with_run_id_and_ledger(p: &ValidatedPipeline, opts: &RunOptions) -> (String, RunOptions) {
    let run_id = opts
        .run_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let mut opts = RunOptions {
        run_id: Some(run_id.clone()),
        ..opts.clone()
    };
    if opts.ledger.is_none()
        && let Some(ledger) = Ledger::for_pipeline(p, &run_id)
    {
        ledger.prepare().await;
        opts.ledger = Some(Arc::new(ledger));
    }
    (run_id, opts)
}

/// One attempt of one stage (one shard), recorded in `_system.runs`: the
/// `weightlake task` entry point.
pub async fn run_task(
    p: &ValidatedPipeline,
    name: &str,
    opts: &RunOptions,
) -> Result<StageReport, PipelineError> {
    let (_, opts) = with_run_id_and_ledger(p, opts).await;
    let spec = p.spec();
    if !spec.stages.contains_key(name) {
        return Err(no_stage(p, name));
    }
    super::check_shard(p, name, opts.shard)?;
    // A task cannot see its run's other tasks, but it can see the day.
    if let (Some(_), Some(day)) = (
        p.cost(),
        spec.budget.as_ref().and_then(|b| b.max_usd_per_day),
    ) {
        let spent = crate::history::load(p).await.spent_today();
        if spent >= day {
            let e = PipelineError::DayBudgetSpent {
                spent_usd: spent,
                day_usd: day,
            };
            if let Some(sink) = &opts.ledger {
                sink.record(
                    Attempt::not_run(name, AttemptStatus::Cancelled).with_error(e.to_string()),
                )
                .await;
            }
            return Err(e);
        }
    }
    let (started, t) = (SystemTime::now(), Instant::now());
    let r = run_stage(p, name, &opts).await;
    let elapsed = t.elapsed();
    if let Some(sink) = &opts.ledger {
        let usd = p.cost().map(|m| m.attempt_usd(r.as_ref().ok(), elapsed));
        sink.record(Attempt::ended(name, opts.shard, 1, started, elapsed, &r).with_cost(usd))
            .await;
    }
    r
}

/// Which stages have an attempt in flight, and which have anything recorded.
#[derive(Default)]
struct StageWatch {
    in_flight: std::sync::Mutex<std::collections::HashMap<String, usize>>,
    recorded: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl StageWatch {
    fn started(&self, stage: &str) {
        if let Ok(mut m) = self.in_flight.lock() {
            *m.entry(stage.to_string()).or_default() += 1;
        }
    }

    fn ended(&self, stage: &str) {
        if let Ok(mut m) = self.in_flight.lock()
            && let Some(n) = m.get_mut(stage)
        {
            *n = n.saturating_sub(1);
        }
    }

    fn running(&self, stage: &str) -> bool {
        self.in_flight
            .lock()
            .is_ok_and(|m| m.get(stage).is_some_and(|n| *n > 0))
    }

    fn recorded(&self, stage: &str) -> bool {
        self.recorded.lock().is_ok_and(|r| r.contains(stage))
    }
}

/// A ledger that notes which stages it recorded (see [`StageWatch`]).
struct WatchedSink {
    inner: Arc<dyn AttemptSink>,
    watch: Arc<StageWatch>,
}

impl AttemptSink for WatchedSink {
    fn record(&self, attempt: Attempt) -> futures::future::BoxFuture<'_, ()> {
        if let Ok(mut r) = self.watch.recorded.lock() {
            r.insert(attempt.stage.clone());
        }
        self.inner.record(attempt)
    }
}
