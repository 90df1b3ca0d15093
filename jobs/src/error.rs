//! The jobs' error type, classified by blame: bad input (exit 2) or a failed job
//! (exit 1).

use weightlake_connectors::ConnectorError;

/// Result with [`JobError`].
pub type Result<T, E = JobError> = std::result::Result<T, E>;

/// Errors raised by jobs.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// A source or storage location failed.
    #[error(transparent)]
    Connector(#[from] ConnectorError),
    /// A Delta table operation failed.
    #[error("table {table}: {}", weightlake_connectors::compact_xml_errors(&source.to_string()))]
    Delta {
        /// The table's name or URL.
        table: String,
        /// The underlying error.
        #[source]
        source: deltalake::DeltaTableError,
    },
    /// A query failed.
    #[error("query failed: {0}")]
    Query(#[from] deltalake::datafusion::error::DataFusionError),
    /// Building Arrow data failed (our bug, or a value out of range).
    #[error("arrow: {0}")]
    Arrow(#[from] deltalake::arrow::error::ArrowError),
    /// The user's input is wrong.
    #[error("{0}")]
    Invalid(String),
    /// A promotion was stopped by a `fail` gate (recorded in gold as rejected).
    #[error("promotion of {name} rejected by gates: {}", failed.join("; "))]
    Rejected {
        /// The gold model name.
        name: String,
        /// The blocking gates, with what they saw.
        failed: Vec<String>,
    },
    /// Gold changed but the MLflow registry could not follow (after retries).
    #[error(
        "gold and the MLflow registry differ for {name}: {detail}; run `weightlake models sync {name}` once MLflow is reachable"
    )]
    RegistryOutOfSync {
        /// The gold model name.
        name: String,
        /// What was committed and what failed.
        detail: String,
    },
    /// Stored data does not rebuild (a blob part missing or undecodable, a
    /// rebuilt file whose sha256 differs): the lake is damaged, not the
    /// request (exit 1).
    #[error("{0}")]
    Corrupt(String),
    /// Writing or reading outside the lake failed (a destination's disk).
    #[error("{0}")]
    Failed(String),
    /// Something another task is expected to provide is not there yet (a
    /// base model another shard is tensorising): the job failed, and a retry
    /// may succeed.
    #[error("{0}")]
    NotReady(String),
    /// Some files of a job failed; the others were committed.
    #[error("{failed} of {total} files failed: {first}")]
    Partial {
        /// Files that failed.
        failed: usize,
        /// Files attempted.
        total: usize,
        /// The first failures (a few), each with its file.
        first: String,
    },
}

impl JobError {
    /// Wrap a deltalake error with the table it concerns.
    pub fn delta(table: impl std::fmt::Display, source: deltalake::DeltaTableError) -> Self {
        Self::Delta {
            table: table.to_string(),
            source,
        }
    }

    /// True when the error is the user's input (exit code 2) rather than a failed job.
    pub fn is_bad_input(&self) -> bool {
        match self {
            Self::Invalid(_) => true,
            Self::Connector(c) => c.is_bad_input(),
            Self::Query(e) => {
                use deltalake::arrow::error::ArrowError as A;
                use deltalake::datafusion::error::DataFusionError as E;
                match e.find_root() {
                    E::Plan(_) | E::SQL(..) | E::SchemaError(..) | E::NotImplemented(_) => true,
                    // Values the query itself got wrong (1/0, a bad cast).
                    E::ArrowError(a, _) => {
                        matches!(**a, A::DivideByZero | A::CastError(_) | A::ParseError(_))
                    }
                    _ => false,
                }
            }
            _ => false,
        }
    }
}
