//! Budgets: `budget: {max_usd_per_run, max_usd_per_day}` refuses a run whose
//! estimate exceeds what is left, and cancels a run whose running cost
//! reaches it.
//!
//! The running cost is what ended attempts cost (compute, storage, egress)
//! plus the compute of the attempts in flight so far; the runner checks it
//! every [`CHECK_EVERY`]. The day is the UTC day, and what the pipeline spent
//! in it is the sum of `cost_usd` in `_system.runs` for its runs that started
//! that day.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{CostModel, usd};

/// How often the runner compares the running cost with the budget.
pub const CHECK_EVERY: Duration = Duration::from_millis(200);

/// `budget:` (top level): dollar limits. Needs a `cost:` block.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetSpec {
    /// The most one run may cost.
    #[serde(default)]
    pub max_usd_per_run: Option<f64>,
    /// The most the pipeline's runs that start in one UTC day may cost.
    #[serde(default)]
    pub max_usd_per_day: Option<f64>,
}

/// The binding limit of a run: dollars left, and which limit it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Limit {
    /// Dollars this run may spend.
    pub usd: f64,
    /// e.g. `max_usd_per_run $5.00`, `max_usd_per_day $20.00 ($18.50 spent today)`.
    pub what: String,
}

impl BudgetSpec {
    /// The tighter of the run limit and what is left of the day's, given
    /// `spent_today`.
    pub fn limit(&self, spent_today: f64) -> Option<Limit> {
        let run = self.max_usd_per_run.map(|m| Limit {
            usd: m,
            what: format!("max_usd_per_run {}", usd(m)),
        });
        let day = self.max_usd_per_day.map(|m| Limit {
            usd: (m - spent_today).max(0.0),
            what: format!(
                "max_usd_per_day {} ({} spent today)",
                usd(m),
                usd(spent_today)
            ),
        });
        match (run, day) {
            (Some(r), Some(d)) => Some(if d.usd < r.usd { d } else { r }),
            (r, d) => r.or(d),
        }
    }
}

/// The running cost of one run, and its cancellation.
pub struct CostMeter {
    model: Option<CostModel>,
    limit: Option<Limit>,
    state: Mutex<MeterState>,
    cancel: CancellationToken,
    reason: OnceLock<String>,
}

#[derive(Default)]
struct MeterState {
    ended_usd: f64,
    next_id: u64,
    in_flight: HashMap<u64, Instant>,
}

impl CostMeter {
    /// A meter that prices attempts with `model` (none: costs are unknown)
    /// and cancels the run past `limit`.
    pub fn new(model: Option<CostModel>, limit: Option<Limit>) -> Self {
        Self {
            model,
            limit,
            state: Mutex::new(MeterState::default()),
            cancel: CancellationToken::new(),
            reason: OnceLock::new(),
        }
    }

    /// The cost model, if any.
    pub fn model(&self) -> Option<&CostModel> {
        self.model.as_ref()
    }

    /// True when there is a limit to watch.
    pub fn watching(&self) -> bool {
        self.limit.is_some() && self.model.is_some()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, MeterState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An attempt starts; pass the id to [`CostMeter::end`].
    pub fn start(&self) -> u64 {
        let mut s = self.state();
        s.next_id += 1;
        let id = s.next_id;
        s.in_flight.insert(id, Instant::now());
        id
    }

    /// An attempt ended, costing `usd` (None when unknown).
    pub fn end(&self, id: u64, usd: Option<f64>) {
        let mut s = self.state();
        s.in_flight.remove(&id);
        s.ended_usd += usd.unwrap_or(0.0);
    }

    /// Ended attempts plus the compute of those in flight, so far.
    pub fn running_usd(&self) -> f64 {
        let s = self.state();
        let live: f64 = self.model.as_ref().map_or(0.0, |m| {
            s.in_flight
                .values()
                .map(|t| m.compute_usd(t.elapsed()))
                .sum()
        });
        s.ended_usd + live
    }

    /// Cancel the run when the running cost reached the limit; true if it is
    /// (now or before) cancelled.
    pub fn check(&self) -> bool {
        if self.cancel.is_cancelled() {
            return true;
        }
        let Some(limit) = self.limit.as_ref().filter(|_| self.model.is_some()) else {
            return false;
        };
        let spent = self.running_usd();
        if spent >= limit.usd {
            let reason = format!(
                "budget {} reached: the run has cost {} so far",
                limit.what,
                usd(spent)
            );
            warn!("{reason}; cancelling the run");
            let _ = self.reason.set(reason);
            self.cancel.cancel();
            return true;
        }
        false
    }

    /// Resolves when the run is cancelled.
    pub fn cancelled(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.cancel.cancelled()
    }

    /// True once the run is cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Why the run was cancelled.
    pub fn reason(&self) -> String {
        self.reason
            .get()
            .cloned()
            .unwrap_or_else(|| "the run was cancelled".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(per_hour: f64) -> CostModel {
        CostModel {
            instance: "x".into(),
            usd_per_hour: per_hour,
            storage_usd_per_gb_month: 0.0,
            egress_usd_per_gb: 0.0,
            storage_months: 1.0,
            assumed_throughput_mbps: 100.0,
        }
    }

    #[test]
    fn the_tighter_limit_binds() {
        let b = BudgetSpec {
            max_usd_per_run: Some(5.0),
            max_usd_per_day: Some(20.0),
        };
        assert_eq!(b.limit(0.0).map(|l| l.usd), Some(5.0));
        let l = b.limit(18.0).expect("a limit");
        assert!((l.usd - 2.0).abs() < 1e-9);
        assert!(l.what.contains("spent today"), "{}", l.what);
        assert_eq!(b.limit(30.0).map(|l| l.usd), Some(0.0));
    }

    #[test]
    fn the_meter_cancels_once_ended_plus_running_cost_reaches_the_limit() {
        let limit = Limit {
            usd: 1.0,
            what: "max_usd_per_run $1.00".into(),
        };
        // $36 000/hour: 10 dollars a second.
        let m = CostMeter::new(Some(model(36_000.0)), Some(limit));
        let a = m.start();
        m.end(a, Some(0.5));
        assert!(!m.check(), "0.5 of 1.0 spent");
        let _b = m.start();
        std::thread::sleep(Duration::from_millis(80));
        assert!(m.check(), "0.5 + ~0.8 of compute in flight");
        assert!(m.is_cancelled());
        assert!(
            m.reason().contains("max_usd_per_run $1.00"),
            "{}",
            m.reason()
        );
    }
}
