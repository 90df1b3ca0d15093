//! indicatif progress for jobs: one bar of bytes with rate and ETA, the current
//! file as its message. Hidden when stderr is not a terminal or with `--quiet`.

use std::io::IsTerminal;
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use weightlake_jobs::progress::{NoProgress, Progress};

struct Bar(ProgressBar);

impl Progress for Bar {
    fn begin(&self, files: usize, bytes: u64) {
        self.0.set_length(bytes);
        self.0.set_prefix(format!("{files} files"));
    }
    fn file_started(&self, path: &str, _bytes: u64) {
        self.0.set_message(path.to_string());
    }
    fn advance(&self, path: &str, bytes: u64) {
        self.0.set_message(path.to_string());
        self.0.inc(bytes);
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// A progress reporter for the terminal, or none.
pub fn reporter(quiet: bool) -> Arc<dyn Progress> {
    if quiet || !std::io::stderr().is_terminal() {
        return Arc::new(NoProgress);
    }
    let style = ProgressStyle::with_template(
        "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {wide_msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    let bar =
        ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr()).with_style(style);
    Arc::new(Bar(bar))
}

/// A bytes callback for the plain downloader.
pub fn byte_counter(quiet: bool, total: Option<u64>) -> Option<Arc<dyn Fn(u64) + Send + Sync>> {
    if quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    // Without a total (known only once the server answers), no bar that
    // claims one: bytes so far and the rate.
    let (bar, template) = match total {
        Some(t) => (
            ProgressBar::new(t),
            "[{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        ),
        None => (
            ProgressBar::new_spinner(),
            "{spinner} {bytes} {bytes_per_sec}",
        ),
    };
    if let Ok(s) = ProgressStyle::with_template(template) {
        bar.set_style(s.progress_chars("=> "));
    }
    Some(Arc::new(move |n| bar.inc(n)))
}

/// A byte count as people read it: `27.70 kB`, `45.44 MB`, `2.15 GB`.
pub(crate) fn size(bytes: u64) -> String {
    indicatif::DecimalBytes(bytes).to_string()
}
