//! One function per subcommand: build the typed request, call the crate, print.

use std::time::Duration;

use anyhow::Context;
use weightlake_connectors::http::{DownloadConfig, HttpClient, HttpTarget, download_to_file};
use weightlake_connectors::source::SourceSpec;
use weightlake_connectors::storage::StorageConfig;
use weightlake_jobs::export::ExportJob;
use weightlake_jobs::ingest::{IngestJob, IngestReport};
use weightlake_jobs::lake::Lake;
use weightlake_jobs::maintain::{MaintainJob, MaintainReport};
use weightlake_jobs::shard::Shard;
use weightlake_jobs::sql::{LakeSession, OutputFormat, format_batches};
use weightlake_jobs::tensorise::{TensoriseJob, TensoriseReport, parse_model_ref};
use weightlake_pipeline::duration::parse_duration;
use weightlake_pipeline::runner::StageReport;
use weightlake_pipeline::size::parse_size;

use crate::args::{Cli, Command, DatabricksCommand, Format, LakeArgs, MaintainArgs, TransferArgs};
use crate::progress::{byte_counter, reporter};

/// An error with the exit code it maps to.
pub(crate) struct CliError {
    pub error: anyhow::Error,
    pub code: u8,
}

pub(crate) fn bad_input(e: impl Into<anyhow::Error>) -> CliError {
    CliError {
        error: e.into(),
        code: 2,
    }
}

fn job_failed(e: impl Into<anyhow::Error>) -> CliError {
    CliError {
        error: e.into(),
        code: 1,
    }
}

pub(crate) fn classify_job(e: weightlake_jobs::JobError) -> CliError {
    if e.is_bad_input() {
        bad_input(e)
    } else {
        job_failed(e)
    }
}

/// [`dispatch`], stopped by Ctrl-C or SIGTERM (exit 130): dropping the
/// command's future drops what it holds, so a lake lock is deleted and the
/// next run does not wait for it to go stale. `run` records the stop in its
/// ledger itself; `serve` shuts down on its own terms.
pub async fn dispatch_until_stopped(cli: Cli) -> Result<(), CliError> {
    if matches!(cli.command, Command::Run(_) | Command::Serve(_)) {
        return dispatch(cli).await;
    }
    // A download commits nothing: stopped, it keeps nothing.
    let what_stays = if matches!(cli.command, Command::Download(_)) {
        "the partial file was removed, and running the command again starts over"
    } else {
        "what was committed stays, and running the command again goes on from there"
    };
    let signal = tokio::select! {
        r = dispatch(cli) => return r,
        signal = weightlake_pipeline::runner::stop_signal() => signal,
    };
    // The command's future is dropped: locks are released and unfinished
    // uploads aborted; uploads already completing are let finish.
    let left = weightlake_jobs::export::settle_uploads(Duration::from_secs(30)).await;
    if left > 0 {
        tracing::warn!(uploads = left, "stopped with uploads still completing");
    }
    Err(CliError {
        error: anyhow::anyhow!("interrupted by {signal}: work in flight was stopped; {what_stays}"),
        code: 130,
    })
}

pub async fn dispatch(cli: Cli) -> Result<(), CliError> {
    let quiet = cli.quiet;
    match cli.command {
        Command::Ingest(a) => {
            let lake = create_lake(&a.lake)?;
            let sources = a
                .sources
                .iter()
                .map(|s| {
                    s.parse::<SourceSpec>()
                        .with_context(|| format!("source `{s}`"))
                })
                .collect::<anyhow::Result<Vec<_>>>()
                .map_err(bad_input)?;
            let download = download_config(&a.transfer)?;
            let budget = parse_size(&a.memory_budget).map_err(|e| bad_input(anyhow::anyhow!(e)))?;
            if budget < download.chunk_size {
                return Err(bad_input(anyhow::anyhow!(
                    "--memory-budget {} must hold at least one chunk (--chunk-size {})",
                    a.memory_budget,
                    a.transfer.chunk_size
                )));
            }
            let mut job = IngestJob::new(lake, sources)
                .with_download_config(download)
                .with_memory_budget(budget)
                .with_progress(reporter(quiet));
            if let Some(m) = a.model_id {
                job = job.with_model_id(m);
            }
            if let Some(r) = a.revision {
                job = job.with_revision(r);
            }
            if let Some(s) = a.shard {
                job = job.with_shard(s.parse::<Shard>().map_err(bad_input)?);
            }
            let report = job.await.map_err(classify_job)?;
            print_ingest("ingest", &report);
            Ok(())
        }
        Command::Tensorise(a) => {
            let lake = open_lake(&a.lake)?;
            let mut job = TensoriseJob::new(lake).with_progress(reporter(quiet));
            if let Some(m) = a.model_id {
                job = job.with_model_id(m);
            }
            if let Some(b) = a.base_model {
                let (m, r) = parse_model_ref(&b).map_err(bad_input)?;
                job = job.with_base_model(m, r);
            }
            if let Some(s) = a.shard {
                job = job.with_shard(s.parse::<Shard>().map_err(bad_input)?);
            }
            let report = job.await.map_err(classify_job)?;
            print_tensorise("tensorise", &report);
            Ok(())
        }
        Command::Export(a) => {
            let lake = open_lake(&a.lake)?;
            let (job, label) = ExportJob::for_reference(lake, &a.model)
                .await
                .map_err(classify_job)?;
            if !quiet {
                eprintln!("exporting {label}");
            }
            let report = job
                .to(a.to.clone())
                .with_concurrency(a.parallelism)
                .delete_others(a.delete_others)
                .await
                .map_err(classify_job)?;
            println!(
                "export: {} files, {} rebuilt and verified in {:.2}s to {}",
                report.files,
                crate::progress::size(report.bytes),
                report.elapsed.as_secs_f64(),
                a.to
            );
            crate::pipelines::note_marker(&report);
            crate::pipelines::warn_other_files(&a.to, &report);
            crate::pipelines::note_missing(&report);
            Ok(())
        }
        Command::Verify(a) => {
            let lake = open_lake(&a.lake)?;
            let (job, label) = ExportJob::for_reference(lake, &a.model)
                .await
                .map_err(classify_job)?;
            if !quiet {
                eprintln!("verifying {label}");
            }
            let report = job.await.map_err(classify_job)?;
            for (path, sha) in &report.checked {
                println!("ok  {sha}  {path}");
            }
            println!(
                "verify: {} files, {} rebuild bit for bit",
                report.files,
                crate::progress::size(report.bytes)
            );
            crate::pipelines::note_missing(&report);
            Ok(())
        }
        Command::Maintain(a) => {
            let report = maintain_job(a)?.await.map_err(classify_job)?;
            print_maintain("maintain", &report);
            Ok(())
        }
        Command::Run(a) => crate::pipelines::run_pipeline(a, quiet).await,
        Command::Task(a) => crate::pipelines::task(a, quiet).await,
        Command::Plan(a) => crate::pipelines::plan(a).await,
        Command::Databricks(DatabricksCommand::Export(a)) => crate::pipelines::databricks_export(a),
        Command::Validate(a) => {
            let p = crate::pipelines::load(&a.pipeline, &a.params)?;
            // Stages of one wave may run at once: `a, b -> c`.
            let waves = weightlake_pipeline::plan::waves(&p);
            let mut by_wave: Vec<Vec<&str>> = Vec::new();
            for name in p.order() {
                let w = waves.get(name).copied().unwrap_or(1);
                by_wave.resize(by_wave.len().max(w), Vec::new());
                by_wave[w - 1].push(name);
            }
            let dag: Vec<String> = by_wave.iter().map(|w| w.join(", ")).collect();
            println!(
                "{}: ok ({} stages: {})",
                a.pipeline.display(),
                p.order().len(),
                dag.join(" -> ")
            );
            Ok(())
        }
        Command::Sql(a) => {
            let lake = open_lake(&a.lake)?;
            let session = LakeSession::new(&lake).await.map_err(classify_job)?;
            let batches = session
                .query_with_columns(&a.query)
                .await
                .map_err(classify_job)?;
            let format = match a.format {
                Format::Table => OutputFormat::Table,
                Format::Csv => OutputFormat::Csv,
                Format::Json => OutputFormat::Json,
            };
            let out = format_batches(&batches, format).map_err(classify_job)?;
            println!("{}", out.trim_end());
            Ok(())
        }
        Command::Promote(a) => crate::gold::promote(a).await,
        Command::Models(a) => crate::gold::models(a).await,
        Command::Runs(a) => crate::runs::runs(a).await,
        Command::Serve(a) => {
            let lake = open_lake(&a.lake)?;
            let recheck = parse_duration(&a.recheck_after)
                .map_err(|e| bad_input(anyhow::anyhow!("--recheck-after: {e}")))?;
            let server = weightlake_serve::Server::bind(&a.addr, lake)
                .await
                .map_err(bad_input)?
                .with_recheck_after(recheck)
                .gold_only(a.gold_only);
            let addr = server.local_addr().map_err(job_failed)?;
            // The first line of stdout: scripts and tests read the port from it.
            println!("serving http://{addr}");
            server.run().await;
            Ok(())
        }
        Command::Download(a) => {
            let url = url::Url::parse(&a.url)
                .with_context(|| format!("URL `{}`", a.url))
                .map_err(bad_input)?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(bad_input(anyhow::anyhow!(
                    "URL `{}`: download takes http(s) URLs (`ingest` also reads s3://, gs://, \
                     file:// and hf:// sources)",
                    a.url
                )));
            }
            // `URL#sha256=HEX`, as `ingest` reads it.
            let mut url = url;
            let from_fragment = weightlake_connectors::source::checksum_fragment(&url)
                .map_err(|e| bad_input(anyhow::anyhow!("URL `{}`: {e}", a.url)))?;
            url.set_fragment(None);
            let expected = match (a.sha256.clone(), from_fragment) {
                (Some(flag), Some(frag)) if !flag.eq_ignore_ascii_case(&frag) => {
                    return Err(bad_input(anyhow::anyhow!(
                        "--sha256 {flag} and the URL's #sha256={frag} differ"
                    )));
                }
                (flag, frag) => flag.or(frag),
            };
            let client = HttpClient::new(download_config(&a.transfer)?).map_err(job_failed)?;
            let target = HttpTarget {
                url,
                bearer: std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty()),
                version: None,
            };
            let on_bytes = byte_counter(quiet, None);
            let r = download_to_file(
                &client,
                &target,
                &a.output,
                expected.as_deref(),
                a.verify,
                on_bytes,
            )
            .await
            .map_err(|e| {
                if e.is_bad_input() {
                    bad_input(e)
                } else {
                    job_failed(e)
                }
            })?;
            let secs = r.elapsed.as_secs_f64().max(1e-9);
            println!(
                "downloaded {} bytes in {:.2}s ({:.1} MB/s){}{}",
                r.bytes,
                secs,
                r.bytes as f64 / secs / 1e6,
                r.sha256.map(|s| format!(" sha256={s}")).unwrap_or_default(),
                if r.single_stream {
                    " (single stream: server ignored Range)"
                } else {
                    ""
                }
            );
            Ok(())
        }
    }
}

/// The lake a command reads or changes: a local lake must exist (a typo in
/// `--lake` should not look like an empty lake, nor pass `maintain` as done).
pub(crate) fn open_lake(a: &LakeArgs) -> Result<Lake, CliError> {
    let lake = create_lake(a)?;
    if let Ok(path) = lake.root().to_file_path()
        && !path.exists()
    {
        return Err(bad_input(anyhow::anyhow!(
            "lake {} does not exist (ingest creates one)",
            a.lake
        )));
    }
    Ok(lake)
}

/// The lake `ingest` writes into, created on first use.
fn create_lake(a: &LakeArgs) -> Result<Lake, CliError> {
    let storage = StorageConfig {
        endpoint: a.endpoint.clone(),
        ..Default::default()
    };
    Lake::new(&a.lake, storage).map_err(bad_input)
}

fn download_config(t: &TransferArgs) -> Result<DownloadConfig, CliError> {
    let chunk_size = parse_size(&t.chunk_size).map_err(|e| bad_input(anyhow::anyhow!(e)))?;
    if !weightlake_connectors::http::CHUNK_SIZES.contains(&chunk_size) {
        return Err(bad_input(anyhow::anyhow!(
            "--chunk-size must be between 1KiB and 1GiB, got {}",
            t.chunk_size
        )));
    }
    if t.parallelism == 0 {
        return Err(bad_input(anyhow::anyhow!(
            "--parallelism must be at least 1"
        )));
    }
    Ok(DownloadConfig {
        concurrency: t.parallelism,
        chunk_size,
        max_retries: t.retries,
        stall_timeout: Duration::from_secs(t.stall_timeout.max(1)),
        ..DownloadConfig::default()
    })
}

fn print_ingest(stage: &str, r: &IngestReport) {
    let secs = r.elapsed.as_secs_f64().max(1e-9);
    println!(
        "{stage}: {} files ingested, {} already present, {} chunks written ({} reused), {} in {:.2}s ({:.1} MB/s), {} commits, run {}",
        r.files_ingested,
        r.files_skipped,
        r.chunks_written,
        r.chunks_reused,
        crate::progress::size(r.bytes_downloaded),
        secs,
        r.bytes_downloaded as f64 / secs / 1e6,
        r.commits,
        r.run_id
    );
    print_paths(
        &r.removed,
        "its source no longer lists: removed from the revision (earlier gold versions keep them)",
    );
    print_paths(
        &r.not_listed,
        "that no source of this run lists, added by another source: kept",
    );
    print_paths(
        &r.replaced_from_elsewhere,
        "replace the copy another source gave the revision (two sources feeding one path \
         replace each other on every run)",
    );
}

/// `  N file(s) WHY: m@rev/path, …` for up to five paths.
fn print_paths(paths: &[(String, String, String)], why: &str) {
    if paths.is_empty() {
        return;
    }
    let shown: Vec<String> = paths
        .iter()
        .take(5)
        .map(|(m, rev, p)| format!("{m}@{rev}/{p}"))
        .collect();
    println!(
        "  {} file(s) {why}: {}{}",
        paths.len(),
        shown.join(", "),
        if paths.len() > 5 { ", …" } else { "" }
    );
}

fn print_tensorise(stage: &str, r: &TensoriseReport) {
    // The ratio of bytes read to bytes newly stored says how well the codec
    // did only when every tensor was stored on its own: deduplicated and
    // base-relative contents make it meaningless (45 MB -> 0 MB, 19278x).
    let ratio = match (r.dedup_hits, r.base_matches, r.bytes_stored) {
        (0, None, stored) if stored > 0 => {
            format!(" ({:.2}x)", r.bytes_in as f64 / stored as f64)
        }
        _ => String::new(),
    };
    println!(
        "{stage}: {} files tensorised, {} already present, {} quarantined, {} tensors, {} contents already stored (tensors and whole files), {} read, {} newly stored{ratio} in {:.2}s, run {}",
        r.files_tensorised,
        r.files_skipped,
        r.files_quarantined.len(),
        r.tensors,
        r.dedup_hits,
        crate::progress::size(r.bytes_in),
        crate::progress::size(r.bytes_stored),
        r.elapsed.as_secs_f64(),
        r.run_id
    );
    if let Some((matched, of)) = r.base_matches {
        println!(
            "  {matched} of {of} tensors matched the base (same name, dtype and shape) and were compared with it"
        );
    }
    for (path, err) in &r.files_quarantined {
        println!("  quarantined {path}: {err}");
    }
    if r.files_restored > 0 {
        println!(
            "  {} file(s) changed back to a version silver already had: its rows are current again",
            r.files_restored
        );
    }
    if r.files_removed > 0 {
        println!(
            "  {} file(s) removed from their revision, as bronze records",
            r.files_removed
        );
    }
}

pub(crate) fn print_stage(stage: &str, r: &StageReport) {
    match r {
        StageReport::Ingest(i) => print_ingest(stage, i),
        StageReport::Tensorise(t) => print_tensorise(stage, t),
        StageReport::Promote(r) => crate::pipelines::print_promote(stage, r),
        StageReport::Export(r) => crate::pipelines::print_export(stage, r),
        StageReport::Maintain(r) => print_maintain(stage, r),
    }
}

/// The job `weightlake maintain` asks for.
fn maintain_job(a: MaintainArgs) -> Result<MaintainJob, CliError> {
    let text = |e: String| bad_input(anyhow::anyhow!(e));
    let lake = open_lake(&a.lake)?;
    let mut job = MaintainJob::new(lake)
        .with_optimize(!a.no_optimize)
        .with_target_file_size(parse_size(&a.target_file_size).map_err(text)?)
        .with_vacuum(!a.no_vacuum)
        .allow_short_retention(a.allow_short_retention)
        .with_checkpoint(!a.no_checkpoint);
    if !a.tables.is_empty() {
        let tables = a
            .tables
            .iter()
            .map(|t| t.parse())
            .collect::<Result<Vec<_>, _>>()
            .map_err(bad_input)?;
        job = job.with_tables(tables);
    }
    if let Some(r) = &a.vacuum_retention {
        job = job.with_vacuum_retention(parse_duration(r).map_err(text)?);
    }
    if let Some(r) = &a.bronze_retention {
        job = job
            .with_bronze_retention(parse_duration(r).map_err(text)?)
            .drop_replaced(a.drop_replaced);
    }
    Ok(job)
}

fn print_maintain(stage: &str, r: &MaintainReport) {
    let before: usize = r.tables.iter().map(|t| t.files_before).sum();
    let after: usize = r.tables.iter().map(|t| t.files_after).sum();
    println!(
        "{stage}: {} tables, {before} -> {after} files, {} compacted, {} files vacuumed ({}) in {:.2}s, run {}",
        r.tables.len(),
        crate::progress::size(r.bytes_compacted()),
        r.files_vacuumed(),
        crate::progress::size(r.bytes_vacuumed()),
        r.elapsed.as_secs_f64(),
        r.run_id
    );
    for t in &r.tables {
        println!(
            "  {:<20} files {} -> {}, compacted {} ({}) into {}, vacuumed {} ({}), {}",
            t.table.to_string(),
            t.files_before,
            t.files_after,
            t.files_compacted,
            crate::progress::size(t.bytes_compacted),
            t.files_written,
            t.files_vacuumed,
            crate::progress::size(t.bytes_vacuumed),
            t.checkpoint_version.map_or_else(
                || format!("version {}", t.version),
                |v| format!("checkpoint at version {v}")
            )
        );
    }
    for t in &r.missing {
        println!("  {t}: does not exist yet, skipped");
    }
    if let Some(why) = &r.bronze_skipped {
        println!("  bronze retention skipped: {why}");
    }
    if let Some(b) = &r.bronze {
        println!(
            "  bronze retention (completed before {}): {} files dropped ({} chunks, {}; vacuum frees the storage), {} kept, {} more recent",
            b.cutoff.format("%Y-%m-%d %H:%M:%S UTC"),
            b.dropped.len(),
            b.chunks_dropped,
            crate::progress::size(b.bytes_freed),
            b.kept.len(),
            b.recent
        );
        // A few of each, not one line per file of a large lake.
        const SHOWN: usize = 10;
        let more = |n: usize, what: &str| {
            if n > SHOWN {
                println!("    … and {} more {what}", n - SHOWN);
            }
        };
        for d in b.dropped.iter().take(SHOWN) {
            println!(
                "    dropped {}@{}/{} (upload {}, {} chunks, sha256 {})",
                d.model_id, d.revision, d.file_path, d.upload_id, d.chunks, d.file_sha256
            );
        }
        more(b.dropped.len(), "dropped");
        for k in b.kept.iter().take(SHOWN) {
            println!(
                "    kept    {}@{}/{} (upload {}): {}",
                k.model_id, k.revision, k.file_path, k.upload_id, k.reason
            );
        }
        more(b.kept.len(), "kept");
    }
}
