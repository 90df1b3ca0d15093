//! What a run would do now and what it would cost: `weightlake plan` and the
//! budget check before a run.
//!
//! Ingest lists its sources and compares them with bronze ("3 files to
//! ingest, 2 already present"); tensorise compares bronze with silver and
//! adds what the ingest stages upstream of it will bring. A stage's time is
//! its bytes over the median throughput of its last runs (or
//! `cost.assumed_throughput_mbps` without history); a stage whose work is not
//! measured in bytes (promote, export, maintain) takes the median time of its
//! last runs. Dollars follow [`crate::cost`]. Sources and the lake are only
//! read.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::time::Duration;

use weightlake_jobs::lake::Lake;

use crate::ValidatedPipeline;
use crate::cost::{CostModel, Usage, usd};
use crate::history::History;
use crate::runner::RunOptions;
use crate::spec::JobKind;
use crate::stages::{ingest_job, tensorise_job};

/// Runs of history an estimate looks at.
const HISTORY_RUNS: usize = 5;

/// One stage's estimate.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StageEstimate {
    /// The stage.
    pub stage: String,
    /// What it would do, e.g. `3 files to ingest (1.2 GB), 2 already present`.
    pub work: Option<String>,
    /// Bytes it would move (None when unknown).
    pub bytes: Option<u64>,
    /// How long it would take (None when unknown).
    pub duration: Option<Duration>,
    /// What it would cost (None without prices or a duration).
    pub usd: Option<f64>,
    /// Why the stage could not be inspected.
    pub error: Option<String>,
}

/// The estimate of a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Estimate {
    /// The stages, in run order.
    pub stages: Vec<StageEstimate>,
    /// True when prices are configured.
    pub priced: bool,
}

impl Estimate {
    /// Total dollars of the stages with an estimate; None without prices.
    pub fn total_usd(&self) -> Option<f64> {
        self.priced
            .then(|| self.stages.iter().filter_map(|s| s.usd).sum())
    }

    /// The estimate as text, one line per stage and a total.
    pub fn render(&self) -> String {
        let mut out = String::from("now:\n");
        for s in &self.stages {
            let mut parts = Vec::new();
            if let Some(w) = &s.work {
                parts.push(w.clone());
            }
            if let Some(e) = &s.error {
                parts.push(format!("cannot inspect: {e}"));
            }
            if let Some(d) = s.duration {
                parts.push(format!("~{}", seconds(d)));
            }
            if let Some(u) = s.usd {
                parts.push(usd(u));
            }
            if parts.is_empty() {
                parts.push("no history to estimate from".into());
            }
            let _ = writeln!(out, "  {}: {}", s.stage, parts.join("; "));
        }
        if let Some(t) = self.total_usd() {
            let _ = writeln!(out, "estimated cost: {}", usd(t));
        }
        out
    }
}

fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.0}s")
    } else if s < 3600.0 {
        format!("{:.1}m", s / 60.0)
    } else {
        format!("{:.1}h", s / 3600.0)
    }
}

fn gb(bytes: u64) -> String {
    match bytes {
        0 => "0 bytes".into(),
        1..1_000 => format!("{bytes} bytes"),
        1_000..1_000_000 => format!("{:.0} KB", bytes as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", bytes as f64 / 1e6),
        _ => format!("{:.2} GB", bytes as f64 / 1e9),
    }
}

/// Inspect `stages` of `p` (in run order) and estimate them.
pub async fn estimate(p: &ValidatedPipeline, stages: &[String], history: &History) -> Estimate {
    let spec = p.spec();
    let model = p.cost();
    let lake = Lake::new(&spec.lake, spec.storage.clone());
    let opts = RunOptions::default();
    // Bytes each ingest stage will bring, for the tensorise stages after it.
    let mut ingested: BTreeMap<String, u64> = BTreeMap::new();
    let mut out = Estimate {
        stages: Vec::new(),
        priced: model.is_some(),
    };
    for name in stages {
        let stage = &spec.stages[name];
        let mut e = StageEstimate {
            stage: name.clone(),
            ..Default::default()
        };
        let lake = match &lake {
            Ok(l) => l.clone(),
            Err(err) => {
                e.error = Some(err.to_string());
                out.stages.push(e);
                continue;
            }
        };
        match stage.job {
            JobKind::Ingest => match ingest_job(spec, stage, lake, &opts).plan().await {
                Ok(plan) => {
                    let mut work = format!(
                        "{} file{} to ingest ({}), {} already present",
                        plan.files_to_ingest(),
                        if plan.files_to_ingest() == 1 { "" } else { "s" },
                        gb(plan.bytes_to_ingest),
                        plan.files_present
                    );
                    if plan.files_of_unknown_size > 0 {
                        let _ = write!(work, ", {} of unknown size", plan.files_of_unknown_size);
                    }
                    if !plan.files_to_remove.is_empty() {
                        let shown = &plan.files_to_remove[..plan.files_to_remove.len().min(3)];
                        let _ = write!(
                            work,
                            ", {} to remove ({}{})",
                            plan.files_to_remove.len(),
                            shown.join(", "),
                            if plan.files_to_remove.len() > shown.len() {
                                ", …"
                            } else {
                                ""
                            }
                        );
                    }
                    if let Some(first) = plan.unreadable.first() {
                        let _ = write!(
                            work,
                            ", {} that cannot be read (first: {first})",
                            plan.unreadable.len()
                        );
                    }
                    e.work = Some(work);
                    e.bytes = Some(plan.bytes_to_ingest);
                    ingested.insert(name.clone(), plan.bytes_to_ingest);
                }
                Err(err) => e.error = Some(err.to_string()),
            },
            JobKind::Tensorise => {
                let upstream: u64 = upstream_of(p, name)
                    .iter()
                    .filter_map(|u| ingested.get(u))
                    .sum();
                let plan = match tensorise_job(spec, name, stage, lake, &opts) {
                    Ok(job) => job.plan().await.map_err(|e| e.to_string()),
                    Err(err) => Err(err.to_string()),
                };
                match plan {
                    Ok(plan) => {
                        let mut work = format!(
                            "{} file{} to tensorise ({}), {} already in silver",
                            plan.files_to_tensorise,
                            if plan.files_to_tensorise == 1 {
                                ""
                            } else {
                                "s"
                            },
                            gb(plan.bytes_to_tensorise),
                            plan.files_present
                        );
                        if plan.files_to_remove > 0 {
                            let _ = write!(work, ", {} to remove", plan.files_to_remove);
                        }
                        if upstream > 0 {
                            let _ = write!(work, ", + {} from ingest upstream", gb(upstream));
                        }
                        e.work = Some(work);
                        e.bytes = Some(plan.bytes_to_tensorise + upstream);
                    }
                    Err(err) => e.error = Some(err),
                }
            }
            _ => {}
        }
        e.duration = match e.bytes {
            Some(0) => Some(Duration::ZERO),
            Some(b) => {
                let mbps = history
                    .median_throughput(name, HISTORY_RUNS)
                    .map(|(m, _)| m)
                    .or(model.map(|m| m.assumed_throughput_mbps));
                mbps.filter(|m| *m > 0.0)
                    .map(|m| Duration::from_secs_f64(b as f64 / 1e6 / m))
            }
            None => history.median_duration(name, HISTORY_RUNS),
        };
        if let (Some(m), Some(d)) = (model, e.duration) {
            e.usd = Some(stage_usd(m, stage.job, e.bytes, d, history, name));
        }
        out.stages.push(e);
    }
    out
}

/// Dollars of one stage taking `d` and moving `bytes`.
fn stage_usd(
    m: &CostModel,
    job: JobKind,
    bytes: Option<u64>,
    d: Duration,
    history: &History,
    name: &str,
) -> f64 {
    let moved = bytes.unwrap_or(0);
    let usage = match job {
        JobKind::Ingest | JobKind::Tensorise => Usage {
            elapsed: d,
            stored_bytes: moved,
            egress_bytes: 0,
        },
        JobKind::Export => {
            let mut past: Vec<u64> = history
                .stage_runs(name, HISTORY_RUNS)
                .iter()
                .map(|r| r.bytes)
                .collect();
            past.sort_unstable();
            Usage {
                elapsed: d,
                stored_bytes: 0,
                egress_bytes: past.get(past.len() / 2).copied().unwrap_or(0),
            }
        }
        _ => Usage {
            elapsed: d,
            ..Default::default()
        },
    };
    m.usd(&usage)
}

/// Every stage `name` depends on, directly or not.
fn upstream_of(p: &ValidatedPipeline, name: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![name.to_string()];
    while let Some(n) = todo.pop() {
        for d in &p.spec().stages[&n].depends_on {
            if seen.insert(d.clone()) {
                todo.push(d.clone());
            }
        }
    }
    seen
}
