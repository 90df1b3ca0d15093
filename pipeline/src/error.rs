//! Pipeline errors: spec problems (exit 2), each with file:line:column, and
//! failures while running (exit 1).

use std::fmt;

/// One problem found in a pipeline file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// The file.
    pub file: String,
    /// 1-based line (0 when unknown).
    pub line: usize,
    /// 1-based column (0 when unknown).
    pub column: usize,
    /// What is wrong, and how to fix it where we can tell.
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (0, _) => write!(f, "{}: {}", self.file, self.message),
            (line, 0) => write!(f, "{}:{line}: {}", self.file, self.message),
            (line, column) => write!(f, "{}:{line}:{column}: {}", self.file, self.message),
        }
    }
}

/// Errors from loading or running a pipeline.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The spec is invalid; every problem found is listed.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Spec(Vec<SpecError>),
    /// A stage failed.
    #[error("stage `{stage}` failed: {source}")]
    Stage {
        /// The stage name.
        stage: String,
        /// The job's error.
        #[source]
        source: Box<weightlake_jobs::JobError>,
    },
    /// An attempt of a stage ran past its `timeout` and was cancelled.
    #[error("stage `{stage}` timed out after {after:?}")]
    Timeout {
        /// The stage name.
        stage: String,
        /// The stage's timeout.
        after: std::time::Duration,
    },
    /// An attempt was cancelled, or a stage not started, because the run
    /// reached its budget.
    #[error("stage `{stage}` cancelled: {reason}")]
    Cancelled {
        /// The stage name.
        stage: String,
        /// Which budget, and what the run had cost.
        reason: String,
    },
    /// The run was refused before it started: its estimate exceeds the budget.
    #[error("run refused: its estimated cost {} exceeds the budget {limit} (left: {}); raise the budget or run fewer stages (--only/--from)", crate::cost::usd(*estimate_usd), crate::cost::usd(*left_usd))]
    OverBudget {
        /// The plan's estimate.
        estimate_usd: f64,
        /// Dollars the budget leaves for this run.
        left_usd: f64,
        /// Which limit, e.g. `max_usd_per_run $5.00`.
        limit: String,
    },
    /// A task was refused: the pipeline already spent its day's budget.
    #[error("task refused: the pipeline spent {} today (UTC), its max_usd_per_day is {}; it runs again tomorrow, or with a higher budget", crate::cost::usd(*spent_usd), crate::cost::usd(*day_usd))]
    DayBudgetSpent {
        /// Dollars spent today.
        spent_usd: f64,
        /// `budget.max_usd_per_day`.
        day_usd: f64,
    },
    /// The Databricks export failed.
    #[error(transparent)]
    Export(#[from] crate::databricks::ExportError),
    /// The run was stopped by a signal (Ctrl-C, SIGTERM) and recorded as
    /// cancelled.
    #[error(
        "run {run_id} interrupted by {signal}; rerun it (jobs resume) or continue with --from STAGE"
    )]
    Interrupted {
        /// The run id.
        run_id: String,
        /// Which signal.
        signal: &'static str,
    },
}

impl PipelineError {
    /// True when the error is the user's input (exit code 2).
    pub fn is_bad_input(&self) -> bool {
        match self {
            Self::Io { .. } | Self::Spec(_) => true,
            Self::Stage { source, .. } => source.is_bad_input(),
            Self::Timeout { .. }
            | Self::Cancelled { .. }
            | Self::OverBudget { .. }
            | Self::DayBudgetSpent { .. }
            | Self::Interrupted { .. } => false,
            Self::Export(e) => e.is_bad_input(),
        }
    }
}
