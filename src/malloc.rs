//! Allocator tuning, before any thread starts.
//!
//! glibc gives each thread that allocates an arena of its own (up to 8 per
//! core), and memory freed in one arena is not reused by the others.
//! weightlake hands 16-64 MiB buffers between tokio workers and the blocking
//! pool, so with glibc's default, peak RSS grows with the number of threads
//! that ever touched such a buffer. Measured on 2 cores (docs/BENCHMARKS.md):
//! tensorising a 2 GiB model peaked at 595-649 MiB with the default, 468-559
//! with two arenas and 424-440 with one, at the same CPU time; a rebuild
//! went from 392-454 to 175 MiB. Work here is a few large buffers, not many
//! small allocations, so fewer arenas cost no measurable lock contention.
//! We use one arena per 8 cores (at least one); a `MALLOC_ARENA_MAX` set in
//! the environment wins.

/// Limit glibc's malloc arenas unless `MALLOC_ARENA_MAX` is set.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn limit_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let arenas = libc::c_int::try_from(1 + cores / 8).unwrap_or(libc::c_int::MAX);
    // SAFETY: mallopt only sets an allocator parameter; it is called at the
    // start of main, before the runtime starts any other thread.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, arenas);
    }
}

/// Other platforms keep their allocator's defaults.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn limit_arenas() {}
