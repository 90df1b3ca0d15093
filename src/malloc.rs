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
//!
//! glibc also serves every allocation of 32 MiB or more with a fresh `mmap`
//! and returns it with `munmap` when freed, so each 32 MiB tensor, decoded
//! plane and frame paid for 8 192 page faults and the kernel zeroing its
//! pages, on every use. For the commands that decode and encode tensors
//! (`tensorise`, `export`, `verify`, `serve`), blocks below 64 MiB come from
//! the heap, which is trimmed only when 256 MiB lie free at its top, so their
//! pages are reused; larger blocks (growing Parquet buffers) keep their own
//! mappings, which grow without copying. Tensorise and rebuild of a 2 GiB
//! model used 7-10 % less CPU with a peak RSS within the 512 MiB budget
//! (docs/BENCHMARKS.md; a 64 MiB trim threshold made rebuilds give pages
//! back and fault them in again: 25 % more CPU). Ingest keeps glibc's
//! default: there the same policy raised the peak RSS of a 2 GiB ingest
//! from 462-494 to 479-529 MiB for 3 % less CPU. `MALLOC_MMAP_THRESHOLD_` or
//! `MALLOC_TRIM_THRESHOLD_` in the environment wins.

/// Blocks of this size or more get their own `mmap`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 64 << 20;
/// Free space at the heap's top that makes glibc give memory back.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 256 << 20;

/// Tune glibc's malloc unless the environment sets the parameter: the
/// arena count always, the mmap and trim thresholds when `reuse_large_blocks`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn tune(reuse_large_blocks: bool) {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let arenas = libc::c_int::try_from(1 + cores / 8).unwrap_or(libc::c_int::MAX);
    let settings = [
        ("MALLOC_ARENA_MAX", libc::M_ARENA_MAX, arenas),
        (
            "MALLOC_MMAP_THRESHOLD_",
            libc::M_MMAP_THRESHOLD,
            MMAP_THRESHOLD,
        ),
        (
            "MALLOC_TRIM_THRESHOLD_",
            libc::M_TRIM_THRESHOLD,
            TRIM_THRESHOLD,
        ),
    ];
    let count = if reuse_large_blocks {
        settings.len()
    } else {
        1
    };
    for (env, param, value) in settings.into_iter().take(count) {
        if std::env::var_os(env).is_some() {
            continue;
        }
        // SAFETY: mallopt only sets an allocator parameter; it is called at the
        // start of main, before the runtime starts any other thread.
        #[allow(unsafe_code)]
        unsafe {
            libc::mallopt(param, value);
        }
    }
}

/// Other platforms keep their allocator's defaults.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune(_reuse_large_blocks: bool) {}
