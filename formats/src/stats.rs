//! Tensor statistics computed while bytes stream past: min, max, mean, std, L2
//! norm, NaN and Inf counts over float tensors (F16, BF16, F32, F64), and the
//! relative L2 change of a tensor against a base tensor.
//!
//! Bytes may arrive in pieces that split an element; a carry keeps the split
//! bytes. NaN and Inf are counted and left out of the other statistics.

/// Floating-point element layouts that statistics understand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloatKind {
    /// IEEE half.
    F16,
    /// bfloat16.
    BF16,
    /// IEEE single.
    F32,
    /// IEEE double.
    F64,
}

impl FloatKind {
    /// The kind for a dtype name (`F16`, `BF16`, `F32`, `F64`), else `None`.
    pub fn from_dtype(name: &str) -> Option<Self> {
        match name {
            "F16" => Some(Self::F16),
            "BF16" => Some(Self::BF16),
            "F32" => Some(Self::F32),
            "F64" => Some(Self::F64),
            _ => None,
        }
    }

    /// Bytes per element.
    pub fn size(&self) -> usize {
        match self {
            Self::F16 | Self::BF16 => 2,
            Self::F32 => 4,
            Self::F64 => 8,
        }
    }

    #[inline]
    fn value(&self, b: &[u8]) -> f64 {
        match self {
            Self::BF16 => f64::from(f32::from_bits(
                u32::from(u16::from_le_bytes([b[0], b[1]])) << 16,
            )),
            Self::F16 => f64::from(f16_to_f32(u16::from_le_bytes([b[0], b[1]]))),
            Self::F32 => f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            Self::F64 => f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
        }
    }
}

/// IEEE half to single, exactly (subnormals, Inf and NaN included).
#[inline]
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x3ff);
    let bits = match (exp, man) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: normalise.
            let shift = m.leading_zeros() - 21;
            let m = (m << shift) & 0x3ff;
            sign | ((127 - 15 + 1 - shift) << 23) | (m << 13)
        }
        (0x1f, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 127 - 15) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

/// Final statistics of one tensor.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TensorStats {
    /// Smallest finite value.
    pub min: Option<f64>,
    /// Largest finite value.
    pub max: Option<f64>,
    /// Mean of finite values.
    pub mean: Option<f64>,
    /// Population standard deviation of finite values.
    pub std: Option<f64>,
    /// L2 norm of finite values.
    pub l2: Option<f64>,
    /// NaN elements.
    pub nan_count: u64,
    /// ±Inf elements.
    pub inf_count: u64,
}

/// Accumulates [`TensorStats`] over pieces of a tensor's bytes.
#[derive(Debug, Clone)]
pub struct StatsAccumulator {
    kind: FloatKind,
    min: f64,
    max: f64,
    sum: f64,
    sumsq: f64,
    finite: u64,
    nan: u64,
    inf: u64,
    carry: Vec<u8>,
}

impl StatsAccumulator {
    /// Start empty.
    pub fn new(kind: FloatKind) -> Self {
        Self {
            kind,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            sum: 0.0,
            sumsq: 0.0,
            finite: 0,
            nan: 0,
            inf: 0,
            carry: Vec::new(),
        }
    }

    /// Add the next bytes of the tensor.
    pub fn update(&mut self, mut bytes: &[u8]) {
        let size = self.kind.size();
        if !self.carry.is_empty() {
            let need = size - self.carry.len();
            let take = need.min(bytes.len());
            self.carry.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.carry.len() == size {
                let carry = std::mem::take(&mut self.carry);
                self.block(&carry);
            }
        }
        let whole = bytes.len() / size * size;
        self.block(&bytes[..whole]);
        self.carry.extend_from_slice(&bytes[whole..]);
    }

    fn block(&mut self, bytes: &[u8]) {
        let size = self.kind.size();
        if self.kind == FloatKind::F64 {
            return self.block_scalar(bytes);
        }
        // Decode 4096 elements at a time to f32 (exact for BF16, F16 and F32),
        // then accumulate in 8 independent lanes so the loop vectorises. Sums
        // are f64 per lane, so rounding stays as small as the scalar loop's.
        const BLOCK: usize = 4096;
        const LANES: usize = 8;
        let mut vals = [0f32; BLOCK];
        for block in bytes.chunks(size * BLOCK) {
            let n = block.len() / size;
            let vals = &mut vals[..n];
            match self.kind {
                FloatKind::BF16 => {
                    for (v, e) in vals.iter_mut().zip(block.chunks_exact(2)) {
                        *v = f32::from_bits(u32::from(u16::from_le_bytes([e[0], e[1]])) << 16);
                    }
                }
                FloatKind::F16 => {
                    for (v, e) in vals.iter_mut().zip(block.chunks_exact(2)) {
                        *v = f16_to_f32(u16::from_le_bytes([e[0], e[1]]));
                    }
                }
                FloatKind::F32 => {
                    for (v, e) in vals.iter_mut().zip(block.chunks_exact(4)) {
                        *v = f32::from_le_bytes([e[0], e[1], e[2], e[3]]);
                    }
                }
                FloatKind::F64 => unreachable!("handled above"),
            }
            let non_finite = vals
                .iter()
                .fold(0u32, |acc, v| acc | u32::from(!v.is_finite()));
            if non_finite != 0 {
                self.block_scalar(block);
                continue;
            }
            let (mut s, mut q) = ([0f64; LANES], [0f64; LANES]);
            let (mut lo, mut hi) = ([f32::INFINITY; LANES], [f32::NEG_INFINITY; LANES]);
            let lanes = vals.chunks_exact(LANES);
            let rest = lanes.remainder();
            for c in lanes {
                for i in 0..LANES {
                    let v = c[i];
                    let d = f64::from(v);
                    s[i] += d;
                    q[i] += d * d;
                    lo[i] = if v < lo[i] { v } else { lo[i] };
                    hi[i] = if v > hi[i] { v } else { hi[i] };
                }
            }
            for (i, &v) in rest.iter().enumerate() {
                let d = f64::from(v);
                s[i] += d;
                q[i] += d * d;
                lo[i] = lo[i].min(v);
                hi[i] = hi[i].max(v);
            }
            self.sum += s.iter().sum::<f64>();
            self.sumsq += q.iter().sum::<f64>();
            for i in 0..LANES {
                self.min = self.min.min(f64::from(lo[i]));
                self.max = self.max.max(f64::from(hi[i]));
            }
            self.finite += n as u64;
        }
    }

    /// Element by element, for F64 and for blocks holding NaN or Inf.
    fn block_scalar(&mut self, bytes: &[u8]) {
        let size = self.kind.size();
        for block in bytes.chunks(size * 4096) {
            let (mut s, mut sq) = (0.0f64, 0.0f64);
            for e in block.chunks_exact(size) {
                let v = self.kind.value(e);
                if v.is_finite() {
                    s += v;
                    sq += v * v;
                    self.min = self.min.min(v);
                    self.max = self.max.max(v);
                    self.finite += 1;
                } else if v.is_nan() {
                    self.nan += 1;
                } else {
                    self.inf += 1;
                }
            }
            self.sum += s;
            self.sumsq += sq;
        }
    }

    /// The statistics (empty tensors and all-NaN tensors have no min/max/mean).
    pub fn finish(self) -> TensorStats {
        if self.finite == 0 {
            return TensorStats {
                nan_count: self.nan,
                inf_count: self.inf,
                ..Default::default()
            };
        }
        let n = self.finite as f64;
        let mean = self.sum / n;
        let var = (self.sumsq / n - mean * mean).max(0.0);
        TensorStats {
            min: Some(self.min),
            max: Some(self.max),
            mean: Some(mean),
            std: Some(var.sqrt()),
            l2: Some(self.sumsq.sqrt()),
            nan_count: self.nan,
            inf_count: self.inf,
        }
    }
}

/// Relative L2 change of `new` against `base` (same kind and length):
/// ‖new − base‖₂ / ‖base‖₂ over elements finite in both; 0 when equal, and
/// `None` when the base norm is 0 and they differ.
pub fn rel_l2_change(kind: FloatKind, new: &[u8], base: &[u8]) -> Option<f64> {
    let (d, b2) = l2_diff_sums(kind, new, base);
    rel_l2_from_sums(d, b2)
}

/// Σ(new − base)² and Σbase² over elements finite in both, for accumulating
/// [`rel_l2_change`] over parts of a tensor.
pub fn l2_diff_sums(kind: FloatKind, new: &[u8], base: &[u8]) -> (f64, f64) {
    let size = kind.size();
    let (mut d, mut b2) = (0.0f64, 0.0f64);
    for (x, y) in new.chunks_exact(size).zip(base.chunks_exact(size)) {
        let (a, b) = (kind.value(x), kind.value(y));
        if a.is_finite() && b.is_finite() {
            d += (a - b) * (a - b);
            b2 += b * b;
        }
    }
    (d, b2)
}

/// The relative change from the sums of [`l2_diff_sums`].
pub fn rel_l2_from_sums(d: f64, b2: f64) -> Option<f64> {
    if d == 0.0 {
        Some(0.0)
    } else if b2 == 0.0 {
        None
    } else {
        Some((d / b2).sqrt())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn stats_over_split_pieces_match_whole() {
        let bytes = f32s(&[1.0, -2.0, 3.0, f32::NAN, f32::INFINITY, 4.0]);
        let mut whole = StatsAccumulator::new(FloatKind::F32);
        whole.update(&bytes);
        let mut split = StatsAccumulator::new(FloatKind::F32);
        for piece in bytes.chunks(3) {
            split.update(piece);
        }
        let (a, b) = (whole.finish(), split.finish());
        assert_eq!(a, b);
        assert_eq!(a.min, Some(-2.0));
        assert_eq!(a.max, Some(4.0));
        assert_eq!(a.mean, Some(1.5));
        assert_eq!(a.nan_count, 1);
        assert_eq!(a.inf_count, 1);
        assert!((a.l2.unwrap_or(0.0) - 30f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn lane_sums_match_a_plain_f64_loop() {
        // Enough elements for several blocks, the lanes and a remainder.
        let v: Vec<f32> = (0..10_007)
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 1e-3)
            .collect();
        let mut acc = StatsAccumulator::new(FloatKind::F32);
        acc.update(&f32s(&v));
        let st = acc.finish();
        let sum: f64 = v.iter().map(|x| f64::from(*x)).sum();
        let sq: f64 = v.iter().map(|x| f64::from(*x) * f64::from(*x)).sum();
        let mean = sum / v.len() as f64;
        assert!((st.mean.unwrap_or(f64::NAN) - mean).abs() < 1e-12);
        assert!((st.l2.unwrap_or(f64::NAN) - sq.sqrt()).abs() < 1e-9);
        assert_eq!(st.min, Some(-0.5));
        assert_eq!(st.max, Some(f64::from(0.499f32)));
        assert_eq!((st.nan_count, st.inf_count), (0, 0));
    }

    #[test]
    fn half_and_bfloat_decode_exactly() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
        let mut acc = StatsAccumulator::new(FloatKind::BF16);
        acc.update(&[0x80, 0x3f, 0x00, 0x40]); // 1.0, 2.0
        assert_eq!(acc.finish().max, Some(2.0));
    }

    #[test]
    fn relative_change() {
        let base = f32s(&[3.0, 4.0]);
        assert_eq!(rel_l2_change(FloatKind::F32, &base, &base), Some(0.0));
        let new = f32s(&[3.0, 4.5]);
        assert!((rel_l2_change(FloatKind::F32, &new, &base).unwrap_or(0.0) - 0.1).abs() < 1e-12);
        assert_eq!(
            rel_l2_change(FloatKind::F32, &new, &f32s(&[0.0, 0.0])),
            None
        );
    }
}
