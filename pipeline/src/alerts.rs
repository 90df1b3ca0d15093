//! Alerts: a stage that ran much slower than it usually does, a run that
//! cost more than its threshold, a run stopped by its budget. Each alert is
//! logged as a warning and, with `alerts.webhook`, POSTed as JSON (retried;
//! a delivery that fails is a warning, never a failed run).
//!
//! ```yaml
//! alerts:
//!   throughput_drop_pct: 15     # a stage > 15 % below its median MB/s (default 15)
//!   history: 5                  # the median of its last 5 runs that moved ≥ 16 MB (default 5)
//!   min_history: 3              # and only once it has 3 of them (default 3)
//!   max_usd_per_run: 2.50       # a run that cost more (needs `cost:`)
//!   webhook: https://hooks.example/weightlake
//! ```
//!
//! The JSON body: `{"kind", "pipeline", "run_id", "stage", "message",
//! "observed", "expected", "threshold", "unit", "at"}`, where `kind` is
//! `throughput_drop` (MB/s: observed, the median, the lowest acceptable),
//! `cost_over_threshold` or `budget_exceeded` (USD).

use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use weightlake_connectors::webhook::Webhook;

use crate::cost::usd;
use crate::history::History;
use crate::ledger::throughput_mbps;
use crate::runner::{Outcome, RunReport};

/// `alerts:` (top level).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsSpec {
    /// Alert when a stage's throughput is more than this many percent below
    /// the median of its last runs. Default 15.
    #[serde(default)]
    pub throughput_drop_pct: Option<f64>,
    /// How many past runs the median is taken over. Default 5.
    #[serde(default)]
    pub history: Option<usize>,
    /// Past runs needed before a stage's throughput is judged. Default 3.
    #[serde(default)]
    pub min_history: Option<usize>,
    /// Alert when a run's cost estimate exceeds this (needs `cost:`).
    #[serde(default)]
    pub max_usd_per_run: Option<f64>,
    /// POST each alert as JSON to this URL.
    #[serde(default)]
    pub webhook: Option<String>,
}

impl AlertsSpec {
    fn drop_pct(&self) -> f64 {
        self.throughput_drop_pct.unwrap_or(15.0)
    }
    fn history(&self) -> usize {
        self.history.unwrap_or(5)
    }
    fn min_history(&self) -> usize {
        self.min_history.unwrap_or(3)
    }
}

/// Problems with `alerts:`: (key, message).
pub(crate) fn check(a: &AlertsSpec) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if !(a.drop_pct() > 0.0 && a.drop_pct() < 100.0) {
        out.push((
            "throughput_drop_pct",
            "alerts.throughput_drop_pct must be between 0 and 100 (percent)".into(),
        ));
    }
    if a.history() == 0 || a.min_history() == 0 || a.min_history() > a.history() {
        out.push((
            "min_history",
            format!(
                "alerts: need 1 <= min_history ({}) <= history ({})",
                a.min_history(),
                a.history()
            ),
        ));
    }
    if a.max_usd_per_run
        .is_some_and(|v| !(v.is_finite() && v > 0.0))
    {
        out.push((
            "max_usd_per_run",
            "alerts.max_usd_per_run must be a positive number of dollars".into(),
        ));
    }
    if let Some(Err(e)) = a.webhook.as_deref().map(Webhook::new) {
        out.push(("webhook", e.to_string()));
    }
    out
}

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A stage ran slower than its usual throughput allows.
    ThroughputDrop,
    /// A run cost more than `alerts.max_usd_per_run`.
    CostOverThreshold,
    /// A run was refused or cancelled by its budget.
    BudgetExceeded,
}

/// One alert, as logged and POSTed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// What it is about.
    pub kind: AlertKind,
    /// The pipeline.
    pub pipeline: String,
    /// The run.
    pub run_id: String,
    /// The stage, for a stage's alert.
    pub stage: Option<String>,
    /// One line for people.
    pub message: String,
    /// What was measured (MB/s or USD).
    pub observed: f64,
    /// What was expected (the median MB/s; the threshold or budget in USD).
    pub expected: f64,
    /// The line that was crossed (the lowest acceptable MB/s; the USD limit).
    pub threshold: f64,
    /// `MB/s` or `USD`.
    pub unit: &'static str,
    /// When it was raised (RFC 3339).
    pub at: String,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339()
}

/// A stage of `report` whose throughput fell more than the threshold below
/// the median of its last runs in `history` (taken before this run).
pub fn throughput_alerts(
    spec: &AlertsSpec,
    history: &History,
    pipeline: &str,
    run_id: &str,
    report: &RunReport,
) -> Vec<Alert> {
    let mut out = Vec::new();
    for s in report
        .stages
        .iter()
        .filter(|s| s.outcome == Outcome::Succeeded)
    {
        let bytes: u64 = s.reports.iter().map(|(_, r)| r.bytes()).sum();
        if bytes == 0 {
            continue;
        }
        let Some((median, n)) = history.median_throughput(&s.stage, spec.history()) else {
            continue;
        };
        if n < spec.min_history() {
            continue;
        }
        let observed = throughput_mbps(bytes, s.elapsed);
        let floor = median * (1.0 - spec.drop_pct() / 100.0);
        if observed < floor {
            out.push(Alert {
                kind: AlertKind::ThroughputDrop,
                pipeline: pipeline.to_string(),
                run_id: run_id.to_string(),
                stage: Some(s.stage.clone()),
                message: format!(
                    "stage `{}` ran at {observed:.1} MB/s, {:.0} % below its median of {median:.1} MB/s over the last {n} runs (alert below {floor:.1} MB/s)",
                    s.stage,
                    (1.0 - observed / median) * 100.0
                ),
                observed,
                expected: median,
                threshold: floor,
                unit: "MB/s",
                at: now(),
            });
        }
    }
    out
}

/// An alert when the run's cost exceeded `alerts.max_usd_per_run`.
pub fn cost_alert(spec: &AlertsSpec, pipeline: &str, run_id: &str, cost: f64) -> Option<Alert> {
    let limit = spec.max_usd_per_run?;
    (cost > limit).then(|| Alert {
        kind: AlertKind::CostOverThreshold,
        pipeline: pipeline.to_string(),
        run_id: run_id.to_string(),
        stage: None,
        message: format!(
            "run cost {} (estimate), over its alert threshold of {}",
            usd(cost),
            usd(limit)
        ),
        observed: cost,
        expected: limit,
        threshold: limit,
        unit: "USD",
        at: now(),
    })
}

/// An alert for a run the budget refused or cancelled.
pub fn budget_alert(pipeline: &str, run_id: &str, cost: f64, limit: f64, why: &str) -> Alert {
    Alert {
        kind: AlertKind::BudgetExceeded,
        pipeline: pipeline.to_string(),
        run_id: run_id.to_string(),
        stage: None,
        message: why.to_string(),
        observed: cost,
        expected: limit,
        threshold: limit,
        unit: "USD",
        at: now(),
    }
}

/// Log each alert and POST it to the webhook, if any.
pub async fn raise(spec: Option<&AlertsSpec>, alerts: &[Alert]) {
    if alerts.is_empty() {
        return;
    }
    for a in alerts {
        warn!(kind = ?a.kind, stage = a.stage.as_deref().unwrap_or("-"), "ALERT: {}", a.message);
    }
    let Some(url) = spec.and_then(|s| s.webhook.as_deref()) else {
        return;
    };
    let hook = match Webhook::new(url) {
        Ok(h) => h,
        Err(e) => {
            warn!(error = %e, "alerts not delivered");
            return;
        }
    };
    for a in alerts {
        let body = match serde_json::to_value(a) {
            Ok(v) => v,
            Err(e) => {
                warn!(error = %e, "alert not serialisable");
                continue;
            }
        };
        match hook.post(&body).await {
            Ok(()) => info!(webhook = %hook.redacted(), kind = ?a.kind, "alert delivered"),
            Err(e) => warn!(error = %e, "alert not delivered"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use weightlake_jobs::ingest::IngestReport;
    use weightlake_jobs::shard::Shard;

    use super::*;
    use crate::history::tests::attempt;
    use crate::runner::{StageReport, StageResult};

    fn stage(name: &str, mb: u64, secs: u64) -> StageResult {
        StageResult {
            stage: name.into(),
            outcome: Outcome::Succeeded,
            attempts: 1,
            reports: vec![(
                Shard::ALL,
                StageReport::Ingest(IngestReport {
                    bytes_downloaded: mb * 1_000_000,
                    ..Default::default()
                }),
            )],
            error: None,
            elapsed: Duration::from_secs(secs),
            cost_usd: None,
        }
    }

    #[test]
    fn a_stage_more_than_the_threshold_below_its_median_alerts() {
        // Medians: ingest 100 MB/s over 3 runs; tensorise 2 runs only.
        let h = History::of(
            "p",
            vec![
                attempt("a", "ingest", 1, 100, 1),
                attempt("b", "ingest", 2, 200, 2),
                attempt("c", "ingest", 3, 300, 3),
                attempt("a", "tensorise", 1, 100, 1),
                attempt("b", "tensorise", 2, 100, 1),
            ],
        );
        let spec = AlertsSpec::default();
        let run = |ingest_secs: u64| RunReport {
            stages: vec![
                stage("ingest", 100, ingest_secs),
                stage("tensorise", 100, 100),
            ],
            ..Default::default()
        };
        // 100 MB in 1.1 s: 91 MB/s, within 15 %.
        let ok = RunReport {
            stages: vec![StageResult {
                elapsed: Duration::from_millis(1100),
                ..stage("ingest", 100, 0)
            }],
            ..Default::default()
        };
        assert!(throughput_alerts(&spec, &h, "p", "r", &ok).is_empty());
        // 100 MB in 2 s: 50 MB/s. Tensorise is far slower but has too little history.
        let a = throughput_alerts(&spec, &h, "p", "r", &run(2));
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(a[0].stage.as_deref(), Some("ingest"));
        assert_eq!(a[0].kind, AlertKind::ThroughputDrop);
        assert!((a[0].expected - 100.0).abs() < 1e-9 && (a[0].threshold - 85.0).abs() < 1e-9);
        assert!(a[0].message.contains("50 % below"), "{}", a[0].message);
        let lenient = AlertsSpec {
            throughput_drop_pct: Some(60.0),
            ..Default::default()
        };
        assert!(throughput_alerts(&lenient, &h, "p", "r", &run(2)).is_empty());
    }

    #[test]
    fn cost_threshold_and_bad_settings() {
        let spec = AlertsSpec {
            max_usd_per_run: Some(1.0),
            ..Default::default()
        };
        assert!(cost_alert(&spec, "p", "r", 0.9).is_none());
        let a = cost_alert(&spec, "p", "r", 1.5).expect("alert");
        let json = serde_json::to_value(&a).expect("json");
        assert_eq!(json["kind"], "cost_over_threshold");
        assert_eq!(json["unit"], "USD");
        let bad = AlertsSpec {
            throughput_drop_pct: Some(150.0),
            min_history: Some(9),
            webhook: Some("ftp://x".into()),
            ..Default::default()
        };
        let keys: Vec<&str> = check(&bad).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["throughput_drop_pct", "min_history", "webhook"]);
    }
}
