//! Pass 1 over one tensor: what it carries from part to part.
//!
//! Each part is hashed, summarised, compared with the same range of the base
//! (whose bytes are hashed too, to check the base still decodes to its
//! sha256), and spilled for pass 2 (see `spill`), in blocks small enough to
//! stay in the core's cache. Against a base nothing is spilled while the
//! tensor still equals it: spilling starts with the part holding the first
//! difference, so a tensor identical to its base costs no spill at all.

use sha2::{Digest, Sha256};
use weightlake_formats::stats::{FloatKind, StatsAccumulator, l2_diff_sums};

use super::spill::{Spill, spill_append};

/// Bytes of a part handled at a time: hashed, summarised, compared with the
/// base and spilled while in the core's cache (a multiple of every element
/// size).
const CACHE_BLOCK: usize = 128 << 10;

/// The state of pass 1 over one tensor. Moved onto the blocking pool for each
/// part and back.
pub(crate) struct FirstPass {
    kind: Option<FloatKind>,
    pub hasher: Sha256,
    /// sha256 of the base's ranges read so far (with a base).
    pub base_hasher: Option<Sha256>,
    pub stats: Option<StatsAccumulator>,
    /// Sums of squared differences from the base and of squared base values.
    pub diff_sq: f64,
    pub base_sq: f64,
    pub spill: Option<Spill>,
    pub base_spill: Option<Spill>,
    /// Equal to the base so far (nothing spilled yet).
    pub same: bool,
}

impl FirstPass {
    /// Pass 1 over a tensor of float kind `kind` (`None`: not a float), with a
    /// base or not; `spill` and `base_spill` receive what pass 2 will need.
    pub fn new(
        kind: Option<FloatKind>,
        has_base: bool,
        spill: Option<Spill>,
        base_spill: Option<Spill>,
    ) -> Self {
        Self {
            kind,
            hasher: Sha256::new(),
            base_hasher: has_base.then(Sha256::new),
            stats: kind.map(StatsAccumulator::new),
            diff_sq: 0.0,
            base_sq: 0.0,
            spill,
            base_spill,
            same: has_base,
        }
    }

    /// Take in the next part, and the same range of the base (with a base).
    pub fn part(&mut self, data: &[u8], base: Option<&[u8]>) {
        for (i, c) in data.chunks(CACHE_BLOCK).enumerate() {
            self.hasher.update(c);
            if let Some(s) = self.stats.as_mut() {
                s.update(c);
            }
            let at = i * CACHE_BLOCK;
            let b = base.and_then(|b| b.get(at..at + c.len()));
            if let (Some(k), Some(b)) = (self.kind, b) {
                let (d, q) = l2_diff_sums(k, c, b);
                self.diff_sq += d;
                self.base_sq += q;
            }
            if let (Some(h), Some(b)) = (self.base_hasher.as_mut(), b) {
                h.update(b);
            }
            if self.same {
                if b == Some(c) {
                    continue;
                }
                // First difference: spill this part from its start.
                self.same = false;
                self.spill = spill_append(self.spill.take(), &data[..at]);
                if let Some(base) = base {
                    self.base_spill = spill_append(self.base_spill.take(), &base[..at]);
                }
            }
            self.spill = spill_append(self.spill.take(), c);
            if let Some(b) = b {
                self.base_spill = spill_append(self.base_spill.take(), b);
            }
        }
    }
}
