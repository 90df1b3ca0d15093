//! Measures `codec::encode` / `codec::decode` throughput and compression ratio,
//! and the speed of tensor statistics.
//!
//! Run with `cargo run --release -p weightlake-formats --example codec_speed`.
//! Data: 64 MiB of BF16 drawn from normal(0, 0.02) (tiny LCG + Box-Muller, no
//! `rand`), the same tensor with 1% of its elements changed encoded against
//! the original as base (a sparse fine-tune), and, when present, every tensor
//! of `.cache/models/all-minilm-l6-v2/model.safetensors` as F32 and as BF16
//! (F32 truncated to its high two bytes). Throughput is input bytes per CPU
//! second of this thread (from /proc/thread-self/schedstat; wall time if that
//! is unavailable).

use std::time::Instant;

use weightlake_formats::stats::{FloatKind, StatsAccumulator};
use weightlake_formats::{Encoding, codec, safetensors};

/// CPU nanoseconds of this thread, if Linux exposes them.
fn cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// A tiny deterministic normal(0, sigma) generator.
struct Normal {
    state: u64,
    spare: Option<f64>,
}

impl Normal {
    fn uniform(&mut self) -> f64 {
        self.state = self
            .state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn next(&mut self, sigma: f64) -> f64 {
        if let Some(z) = self.spare.take() {
            return z * sigma;
        }
        let (u1, u2) = (self.uniform(), self.uniform());
        let r = (-2.0 * u1.ln()).sqrt();
        let t = std::f64::consts::TAU * u2;
        self.spare = Some(r * t.sin());
        r * t.cos() * sigma
    }
}

/// f32 to bf16 bits, round to nearest even.
fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// Encodes and decodes `tensors` (each with an optional base), printing ratio and speed.
fn measure(label: &str, tensors: &[(Vec<u8>, Option<Vec<u8>>)], elem_size: usize) {
    let total: usize = tensors.iter().map(|t| t.0.len()).sum();
    let (t0, c0) = (Instant::now(), cpu_ns());
    let mut encoded = Vec::with_capacity(tensors.len());
    for (data, base) in tensors {
        match codec::encode(data, elem_size, base.as_deref()) {
            Ok(e) => encoded.push(e),
            Err(e) => return println!("{label}: encode failed: {e}"),
        }
    }
    let enc_s = secs(t0, c0);
    let (t1, c1) = (Instant::now(), cpu_ns());
    for ((data, base), (enc, bytes)) in tensors.iter().zip(&encoded) {
        match codec::decode(*enc, bytes, elem_size, base.as_deref(), data.len()) {
            Ok(d) if d == *data => {}
            Ok(_) => return println!("{label}: ROUND TRIP MISMATCH"),
            Err(e) => return println!("{label}: decode failed: {e}"),
        }
    }
    let dec_s = secs(t1, c1);
    let out: usize = encoded.iter().map(|e| e.1.len()).sum();
    let mut counts = std::collections::BTreeMap::<Encoding, usize>::new();
    for (e, _) in &encoded {
        *counts.entry(*e).or_default() += 1;
    }
    println!(
        "{label}: {:.1} MiB -> {:.1} MiB, ratio {:.3} (x{:.2} smaller), encode {:.2} GB/s, decode {:.2} GB/s, encodings {counts:?}",
        total as f64 / (1 << 20) as f64,
        out as f64 / (1 << 20) as f64,
        out as f64 / total as f64,
        total as f64 / out as f64,
        total as f64 / enc_s / 1e9,
        total as f64 / dec_s / 1e9,
    );
}

/// Tensor statistics over `data` of `kind` (best of five), printing their speed.
fn measure_stats(label: &str, kind: FloatKind, data: &[u8]) {
    let best = (0..5)
        .map(|_| {
            let (t, c) = (Instant::now(), cpu_ns());
            let mut acc = StatsAccumulator::new(kind);
            acc.update(data);
            std::hint::black_box(acc.finish());
            secs(t, c)
        })
        .fold(f64::INFINITY, f64::min);
    println!(
        "{label}: statistics {:.2} GB/s",
        data.len() as f64 / best / 1e9
    );
}

/// The F16 bits of a BF16 value, mantissa truncated and values below F16's
/// normal range flushed to zero (enough for weights of normal(0, 0.02)).
fn f16_bits_truncated(b: u16) -> u16 {
    let sign = b & 0x8000;
    let exp = i32::from((b >> 7) & 0xff) - 127 + 15;
    match exp {
        e if e <= 0 => sign,
        e if e >= 31 => sign | 0x7c00,
        e => sign | ((e as u16) << 10) | ((b & 0x7f) << 3),
    }
}

/// Seconds since the start marks: CPU time when available, else wall time.
fn secs(t: Instant, c: Option<u64>) -> f64 {
    match (c, cpu_ns()) {
        (Some(a), Some(b)) if b > a => (b - a) as f64 / 1e9,
        _ => t.elapsed().as_secs_f64(),
    }
}

fn main() {
    let n = 32 << 20; // 32 Mi elements = 64 MiB of BF16
    let mut rng = Normal {
        state: 0x2545_f491_4f6c_dd1d,
        spare: None,
    };
    let bf16: Vec<u8> = (0..n)
        .flat_map(|_| bf16_bits(rng.next(0.02) as f32).to_le_bytes())
        .collect();
    measure("bf16 normal(0,0.02) 64MiB", &[(bf16.clone(), None)], 2);
    measure_stats("bf16 normal(0,0.02) 64MiB", FloatKind::BF16, &bf16);
    let f16: Vec<u8> = bf16
        .chunks_exact(2)
        .flat_map(|e| f16_bits_truncated(u16::from_le_bytes([e[0], e[1]])).to_le_bytes())
        .collect();
    measure_stats("the same as f16", FloatKind::F16, &f16);
    let f32s: Vec<u8> = bf16
        .chunks_exact(2)
        .flat_map(|e| [0, 0, e[0], e[1]])
        .collect();
    measure_stats("the same as f32", FloatKind::F32, &f32s);

    let mut tuned = bf16.clone();
    for i in (0..n).step_by(100) {
        let delta = bf16_bits(rng.next(0.001) as f32).to_le_bytes();
        if let Some(e) = tuned.get_mut(2 * i..2 * i + 2) {
            e[0] ^= delta[0];
            e[1] ^= delta[1] & 0x01;
        }
    }
    measure("bf16 1% changed vs base", &[(tuned, Some(bf16))], 2);

    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../.cache/models/all-minilm-l6-v2/model.safetensors"
    );
    let Ok(file) = std::fs::read(path) else {
        return println!("minilm safetensors absent at {path}; skipped");
    };
    let header = match safetensors::parse_header(&file, file.len() as u64) {
        Ok(h) => h,
        Err(e) => return println!("minilm header rejected: {e}"),
    };
    let f32s: Vec<(Vec<u8>, Option<Vec<u8>>)> = header
        .tensors
        .iter()
        .filter(|t| t.dtype == weightlake_formats::Dtype::F32)
        .filter_map(|t| {
            let s = usize::try_from(t.data_offset).ok()?;
            let e = s.checked_add(usize::try_from(t.byte_len).ok()?)?;
            Some((file.get(s..e)?.to_vec(), None))
        })
        .collect();
    measure("minilm F32 (all tensors)", &f32s, 4);
    let bf: Vec<(Vec<u8>, Option<Vec<u8>>)> = f32s
        .iter()
        .map(|(d, _)| (d.chunks_exact(4).flat_map(|c| [c[2], c[3]]).collect(), None))
        .collect();
    measure("minilm BF16 (F32 truncated)", &bf, 2);
}
