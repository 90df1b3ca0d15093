//! `weightlake`: parse the command line, dispatch to the crates, map errors to
//! exit codes (0 ok, 1 a job failed, 2 bad input).

mod args;
mod commands;
mod gold;
mod malloc;
mod pipelines;
mod progress;
mod runs;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    // Decoding and encoding tensors reuse large heap blocks; ingest keeps
    // glibc's default (see src/malloc.rs).
    malloc::tune(matches!(
        cli.command,
        args::Command::Tensorise(_)
            | args::Command::Export(_)
            | args::Command::Verify(_)
            | args::Command::Serve(_)
    ));
    if !matches!(cli.command, args::Command::Serve(_)) {
        // `weightlake sql … | head` ends like any Unix tool when the reader
        // goes away, instead of panicking in `println!` (exit 101). Sockets
        // are unaffected (Rust writes to them with MSG_NOSIGNAL); the server
        // keeps the ignored default anyway.
        // SAFETY: called before any thread is started.
        #[allow(unsafe_code)]
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    init_logging(cli.quiet);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(commands::dispatch_until_stopped(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_text(&e.error));
            ExitCode::from(e.code)
        }
    }
}

/// The error and its causes, `: `-separated, leaving out a cause whose text
/// is already shown (many errors repeat their source's message).
fn error_text(e: &anyhow::Error) -> String {
    // Compared compacted: an error that already quotes its cause quotes it
    // with the S3 XML body compacted, and the cause would be said twice.
    let compact = |s: String| weightlake_connectors::compact_xml_errors(&s);
    let mut out = compact(e.to_string());
    for cause in e.chain().skip(1) {
        let text = compact(cause.to_string());
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}

fn init_logging(quiet: bool) {
    // deltalake logs lost commit races at ERROR/WARN although they are expected
    // with concurrent writers and handled (retried, or re-read and recomputed:
    // two stages creating the same table at once print "exceeded maximum
    // commit attempts" on every fresh lake); a commit that really fails
    // reaches the user as this command's error.
    // The Delta kernel logs every error its snapshot functions return at
    // ERROR (`#[instrument(err)]`), before we report the same error with
    // context: `--as-of 999` printed "Generic delta kernel error: LogSegment
    // end version …" above "gold.models has versions 0 to 12".
    // Both are silenced unless RUST_LOG names them or asks for debug/trace.
    const SILENCED: [&str; 2] = [
        "deltalake_core::kernel::transaction",
        "buoyant_kernel::snapshot",
    ];
    let asked = std::env::var("RUST_LOG").ok();
    let mut filter = match &asked {
        Some(spec) => tracing_subscriber::EnvFilter::new(spec),
        None => tracing_subscriber::EnvFilter::new(if quiet { "error" } else { "warn" }),
    };
    for target in SILENCED {
        if !asked
            .as_deref()
            .is_some_and(|a| a.contains(target) || a.contains("debug") || a.contains("trace"))
            && let Ok(d) = format!("{target}=off").parse()
        {
            filter = filter.add_directive(d);
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal, not in captured logs (Databricks tasks).
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}
