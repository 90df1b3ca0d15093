//! A local scratch copy of one tensor's raw bytes, between the two passes over
//! a tensor bigger than one part.
//!
//! Parts are keyed by the tensor's sha256, known only after the whole tensor
//! has been read, so a tensor of several parts is read twice: once to hash it,
//! once to encode it. Reading bronze again decompresses every chunk again
//! (zstd on weights runs at ~0.7 GB/s here); the first pass therefore appends
//! each part to an unnamed temporary file (in the job's scratch directory,
//! `TMPDIR` by default), and the second reads
//! it back from the page cache. Memory stays at one part whatever the tensor's
//! size. The file disappears when dropped. Any I/O error turns the spill off
//! and the second pass reads bronze instead: nothing is lost, only time. The same
//! goes for the base tensor's range that a part is compared and XORed with.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use tracing::{debug, warn};

use crate::file_ranges::read_exact_at;
use crate::{JobError, Result};

/// The spilled bytes of one tensor, written in part order.
#[derive(Debug)]
pub(crate) struct Spill {
    file: File,
    written: u64,
}

impl Spill {
    /// A new, empty spill in `dir` (the system's temporary directory when
    /// `None`); `None` (logged) when no temporary file can be made there.
    pub fn create(dir: Option<&Path>) -> Option<Self> {
        let file = match dir {
            Some(d) => tempfile::tempfile_in(d),
            None => tempfile::tempfile(),
        };
        match file {
            Ok(file) => Some(Self { file, written: 0 }),
            Err(e) => {
                debug!(error = %e, "no spill file; tensors of several parts are read from bronze twice");
                None
            }
        }
    }

    /// Append the next part's bytes.
    pub fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all(data)?;
        self.written += data.len() as u64;
        Ok(())
    }

    /// Read `len` bytes at `offset` (a part appended earlier).
    pub fn read(&mut self, offset: u64, len: u64) -> io::Result<Vec<u8>> {
        if offset.saturating_add(len) > self.written {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the spilled bytes",
            ));
        }
        read_exact_at(&mut self.file, offset, len)
    }
}

/// Append `data` to the spill, if there is one; a failed write turns it off.
/// Runs on the blocking pool (a write of up to one part).
pub(crate) fn spill_append(spill: Option<Spill>, data: &[u8]) -> Option<Spill> {
    let mut spill = spill?;
    match spill.append(data) {
        Ok(()) => Some(spill),
        Err(e) => {
            warn!(error = %e, "spill write failed; reading the tensor again instead");
            None
        }
    }
}

/// The part at `offset..offset + len` from the spill in `slot`, read on the
/// blocking pool; `None` when there is no spill or it failed (then `slot` is
/// emptied, and the caller reads the part from where it came).
pub(crate) async fn take_spilled(
    slot: &mut Option<Spill>,
    offset: u64,
    len: u64,
) -> Result<Option<Vec<u8>>> {
    let Some(mut spill) = slot.take() else {
        return Ok(None);
    };
    let (spill, read) = tokio::task::spawn_blocking(move || {
        let read = spill.read(offset, len);
        (spill, read)
    })
    .await
    .map_err(|e| JobError::Invalid(format!("spill read task failed: {e}")))?;
    match read {
        Ok(bytes) => {
            *slot = Some(spill);
            Ok(Some(bytes))
        }
        Err(e) => {
            warn!(error = %e, "spill read failed; reading the tensor again instead");
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_read_back_as_written() {
        let mut s = Spill::create(None).expect("temp file");
        let a: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let b = vec![7u8; 300];
        s.append(&a).expect("append");
        s.append(&b).expect("append");
        assert_eq!(s.read(1000, 300).expect("read"), b);
        assert_eq!(s.read(0, 1000).expect("read"), a);
        assert!(s.read(1200, 200).is_err());
    }
}
