//! `weightlake-testserver`: serve files from a directory over HTTP with Range
//! support and optional WAN emulation, for the download benchmark.

use std::time::Duration;

use clap::Parser;
use weightlake_testkit::{HttpFixture, Throttle};

/// Serve every file of DIR at /NAME on 127.0.0.1.
#[derive(Parser)]
struct Args {
    /// Directory of files to serve (loaded into memory).
    dir: std::path::PathBuf,
    /// Port on 127.0.0.1.
    #[arg(long, default_value_t = 8765)]
    port: u16,
    /// Per-response bandwidth cap in MB/s (0 = none).
    #[arg(long, default_value_t = 0.0)]
    rate_mbps: f64,
    /// Added latency per response, milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
}

fn main() -> std::io::Result<()> {
    let a = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // Load every file and set the throttle before listening, so that the first
    // request the benchmark sees already gets the final files and pacing.
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&a.dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            let name = entry.file_name().to_string_lossy().to_string();
            files.push((name, std::fs::read(entry.path())?));
        }
    }
    rt.block_on(async {
        let fx = HttpFixture::start_on(&format!("127.0.0.1:{}", a.port)).await?;
        fx.set_throttle(Throttle {
            bytes_per_sec: (a.rate_mbps * 1e6) as u64,
            latency: Duration::from_millis(a.latency_ms),
        });
        for (name, data) in files {
            fx.add_file(&name, data);
        }
        println!("serving {} on {}", a.dir.display(), fx.base_url());
        futures::future::pending::<()>().await;
        Ok(())
    })
}
