//! Progress callbacks: jobs report, the CLI draws (indicatif) or stays quiet.

/// Receives progress from a running job. Every method has a no-op default.
pub trait Progress: Send + Sync {
    /// The job knows its total work.
    fn begin(&self, _files: usize, _bytes: u64) {}
    /// A file started.
    fn file_started(&self, _path: &str, _bytes: u64) {}
    /// `bytes` more of `path` were processed.
    fn advance(&self, _path: &str, _bytes: u64) {}
    /// A file finished (successfully or not).
    fn file_finished(&self, _path: &str) {}
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {}
